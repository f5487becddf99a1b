"""Reading prompts and writing JSONL records (append, resume, never a half-written line)."""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dglm_cli.errors import InputError


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def open_text(path: str | Path) -> IO[str]:
    """A text stream for a path, or stdin for '-'."""
    return _open_input(path, binary=False)


def open_binary(path: str | Path) -> IO[bytes]:
    """A binary stream for a path, or stdin's for '-' (for readers that decode line by line)."""
    return _open_input(path, binary=True)


def _open_input(path: str | Path, binary: bool):
    if str(path) == "-":
        return sys.stdin.buffer if binary else sys.stdin
    try:
        return open(path, "rb") if binary else open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a file") from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file, or of stdin for '-'."""
    stream = open_text(path)
    try:
        return stream.read().splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def read_prompts(path: str | Path, start: int = 0) -> list[Prompt]:
    """Plain lines (one prompt each) or JSONL with a `prompt` (or `text`) field and an optional `id`.

    The format is chosen by the first non-blank line: JSONL when it starts with '{'. Prompts without an
    id are numbered start, start + 1, ... in file order.
    """
    lines = read_lines(path)
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise InputError(f"{path}: no prompts found")
    if numbered[0][1].lstrip().startswith("{"):
        return [_jsonl_prompt(path, n, line, str(start + i)) for i, (n, line) in enumerate(numbered)]
    return [Prompt(str(start + i), line) for i, (_, line) in enumerate(numbered)]


def json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; anything else is an InputError that starts with `where` (file and line)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _jsonl_prompt(path, number: int, line: str, default_id: str) -> Prompt:
    data = json_object(line, f"{path}:{number}")
    text = data.get("prompt", data.get("text"))
    if isinstance(text, dict):  # RealToxicityPrompts style: {"prompt": {"text": ...}}
        text = text.get("text")
    if not isinstance(text, str):
        raise InputError(f"{path}:{number}: no string field 'prompt' (or 'text')")
    return Prompt(str(data.get("id", data.get("prompt_id", default_id))), text)


def existing_ids(path: Path) -> set[str]:
    """Ids of the complete records already in an output file; a torn last line is cut off first."""
    if not path.exists():
        return set()
    if not path.is_file():
        raise InputError(f"--output {path} is not a file")
    repair_torn_tail(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"--output {path} is not UTF-8 text; refusing to append to it") from None
    ids = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: not a dglm record; refusing to append to it") from None
    return ids


def repair_torn_tail(path: Path) -> None:
    """Drop a last line that has no newline (a write interrupted mid-record)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class JsonlAppender:
    """Appends one JSON object per line, flushed and synced per record, so a crash loses at most one line."""

    def __init__(self, stream: IO[str], sync: bool):
        self.stream = stream
        self.sync = sync

    @classmethod
    def open(cls, path: Path) -> "JsonlAppender":
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(open(path, "a", encoding="utf-8"), sync=True)

    def write(self, record: dict) -> None:
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()
        if self.sync:
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.stream not in (sys.stdout, sys.stderr):
            self.stream.close()
