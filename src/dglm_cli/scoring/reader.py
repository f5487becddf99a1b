"""Reading records to score: JSONL one line at a time, the prompt and continuation fields, bad lines skipped and named."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from dglm_cli.errors import InputError
from dglm_cli.records import json_object

TEXT_FIELD = "continuation"
PROMPT_FIELD = "prompt"
_MISSING = object()


@dataclass
class Item:
    """One input record with the fields scoring needs; `line` is its 1-based line number."""

    line: int
    record: dict
    prompt: str
    text: str


def get_field(record: dict, name: str):
    """A field by dotted name (`guidance.scale`), or _MISSING."""
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


class RecordReader:
    """Streams Items from JSONL bytes; a bad line raises InputError naming it, or is counted with skip_bad."""

    def __init__(self, stream: IO[bytes], source: str, text_field: str = TEXT_FIELD,
                 prompt_field: str | None = PROMPT_FIELD, skip_bad: bool = False):
        self.stream = stream
        self.source = source
        self.text_field = text_field
        self.prompt_field = prompt_field or None
        self.skip_bad = skip_bad
        self.skipped: list[str] = []  # one message per skipped line

    def __iter__(self) -> Iterator[Item]:
        for number, raw in enumerate(self.stream, 1):
            if not raw.strip():
                continue
            try:
                yield self.parse(number, raw)
            except InputError as error:
                if not self.skip_bad:
                    raise
                self.skipped.append(str(error))

    def parse(self, number: int, raw: bytes) -> Item:
        where = f"{self.source}:{number}"
        try:
            record = json_object(raw.decode("utf-8"), where)
        except UnicodeDecodeError as error:
            raise InputError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        text = get_field(record, self.text_field)
        if not isinstance(text, str):
            raise InputError(f"{where}: no string field {self.text_field!r} (choose another with --text-field)")
        prompt = ""
        if self.prompt_field:
            prompt = get_field(record, self.prompt_field)
            if not isinstance(prompt, str):
                raise InputError(
                    f"{where}: no string field {self.prompt_field!r} (choose another with --prompt-field, "
                    "or --prompt-field '' to score without prompts)"
                )
        return Item(number, record, prompt, text)
