"""Labeled text tables: CSV, TSV or JSONL (or '-' for stdin) -> (text, label) rows.

The format comes from the file extension, else from the content (a first line starting with '{' is
JSONL; a header with more tabs than commas is TSV; anything else is CSV). The text and label columns
are found by common names unless given. Every malformed input is an InputError whose one-line
message names the line or the columns involved.
"""

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path

from dglm_cli.errors import InputError
from dglm_cli.records import json_object

FORMATS = ("csv", "tsv", "jsonl")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEXT_NAMES = ("text", "sentence", "review", "content", "comment", "body", "document", "tweet", "utterance")
LABEL_NAMES = ("label", "labels", "class", "sentiment", "target", "category", "y")


@dataclass
class LabeledRows:
    texts: list[str]
    labels: list[str]
    lines: list[int]  # the 1-based line where each row starts (for messages)
    text_col: str
    label_col: str
    format: str
    source: str


def read_labeled(
    source: str | Path,
    format: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
) -> LabeledRows:
    """Read a labeled table from a path or '-' (stdin)."""
    if format is not None and format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    name = str(source)
    text = _decode(_read_bytes(name), name)
    if not text.strip():
        raise InputError(f"{name} is empty: expected a header and labeled rows")
    format = format or detect_format(name, text)
    columns, records = _parse_jsonl(text, name) if format == "jsonl" else _parse_delimited(text, name, format)
    if not records:
        raise InputError(f"{name} has a header ({', '.join(columns)}) but no data rows")
    text_col, label_col = choose_columns(columns, text_col, label_col, name)
    texts, labels, lines = [], [], []
    for line, record in records:
        label = _label_text(record.get(label_col))
        if not label:
            raise InputError(f"{name} line {line}: the label column {label_col!r} is empty")
        texts.append(_text(record.get(text_col)))
        labels.append(label)
        lines.append(line)
    return LabeledRows(texts, labels, lines, text_col, label_col, format, name)


def detect_format(name: str, text: str) -> str:
    by_extension = EXTENSIONS.get(Path(name).suffix.lower())
    if by_extension:
        return by_extension
    first = next(line for line in text.splitlines() if line.strip())
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "tsv" if first.count("\t") > first.count(",") else "csv"


def choose_columns(columns: list[str], text_col: str | None, label_col: str | None, name: str) -> tuple[str, str]:
    """The (text, label) column names: the given ones (checked), else found by common names."""
    for given, flag in ((text_col, "--text-col"), (label_col, "--label-col")):
        if given is not None and given not in columns:
            close = difflib.get_close_matches(given, columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{flag} {given!r} is not a column of {name}{hint}; columns: {', '.join(columns)}")
    text_col = text_col or _by_name(columns, TEXT_NAMES, exclude=label_col)
    label_col = label_col or _by_name(columns, LABEL_NAMES, exclude=text_col)
    if len(columns) == 2:  # one known name is enough: the other column is the other role
        text_col = text_col or next((c for c in columns if c != label_col), None)
        label_col = label_col or next((c for c in columns if c != text_col), None)
    for found, role, flag in ((text_col, "text", "--text-col"), (label_col, "label", "--label-col")):
        if found is None:
            raise InputError(f"cannot tell which column of {name} holds the {role}; columns: {', '.join(columns)}; pass {flag}")
    if text_col == label_col:
        raise InputError(f"the text and label columns are both {text_col!r}; pass --text-col and --label-col")
    return text_col, label_col


def _by_name(columns: list[str], names: tuple[str, ...], exclude: str | None) -> str | None:
    lowered = {c.strip().lower(): c for c in columns if c != exclude}
    return next((lowered[n] for n in names if n in lowered), None)


def _read_bytes(name: str) -> bytes:
    if name == "-":
        from dglm_cli.records import open_binary

        return open_binary("-").read()
    path = Path(name)
    if path.is_dir():
        raise InputError(f"{name} is a directory, not a data file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"data file not found: {name}") from None
    except OSError as error:
        raise InputError(f"cannot read {name}: {error.strerror}") from None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        byte = data[error.start : error.start + 1].hex()
        raise InputError(f"{name} line {line}: not UTF-8 text (byte 0x{byte}); save the file as UTF-8") from None


def _parse_delimited(text: str, name: str, format: str) -> tuple[list[str], list[tuple[int, dict]]]:
    reader = csv.reader(text.splitlines(keepends=True), delimiter="\t" if format == "tsv" else ",", strict=True)
    try:
        header = next(reader)
        columns = [c.strip() for c in header]
        _check_header(columns, name)
        records, start = [], reader.line_num + 1
        for row in reader:
            if row and any(cell.strip() for cell in row):
                if len(row) != len(columns):
                    raise InputError(f"{name} line {start}: {len(row)} fields, but the header has {len(columns)} ({', '.join(columns)})")
                records.append((start, dict(zip(columns, row))))
            start = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"{name} line {reader.line_num}: malformed {format.upper()}: {error}") from None
    return columns, records


def _check_header(columns: list[str], name: str) -> None:
    if len(columns) < 2:
        raise InputError(f"{name}: the header has {len(columns)} column ({', '.join(columns)}); expected a text and a label column")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates or not all(columns):
        raise InputError(f"{name}: the header has empty or repeated column names: {', '.join(map(repr, columns))}")


def _parse_jsonl(text: str, name: str) -> tuple[list[str], list[tuple[int, dict]]]:
    columns: dict[str, None] = {}  # ordered set, in order of first appearance
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = json_object(line, f"{name} line {number}")
        columns.update(dict.fromkeys(record))
        records.append((number, record))
    if records and len(columns) < 2:
        raise InputError(f"{name}: the records have {len(columns)} field ({', '.join(columns)}); expected a text and a label field")
    return list(columns), records


def _label_text(value) -> str:
    """Labels as strings: 1 -> '1', True -> 'true', None -> ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _text(value) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)
