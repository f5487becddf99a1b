"""Reading prompts and writing JSONL records (append, resume, never a half-written line)."""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dglm_cli import strict_json
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
        if sys.stdin is None or sys.stdin.closed:
            raise InputError("standard input is closed; give a file instead of '-'")
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
    except OSError as error:  # e.g. a closed or unreadable standard input
        raise InputError(f"cannot read {'standard input' if str(path) == '-' else path}: {error.strerror or error}") from None
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
    except ValueError as error:  # an integer past Python's digit limit for int/str conversion
        raise InputError(f"{where}: not usable JSON ({str(error).split(';')[0]})") from None
    except RecursionError:
        raise InputError(f"{where}: not usable JSON (nested too deeply)") from None
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


def scan_records(data: bytes, where: str | Path) -> tuple[set[str], int | None, bool]:
    """Check that `data` (an --output file's bytes) is a dglm records file, without changing anything.

    Returns (ids of its records, the length to cut it to or None, whether a newline must be added).
    Every complete line must be a record (a JSON object with a string `id`); a last line without a
    newline is kept when it is a whole record (only the newline is missing), cut when it is the torn
    start of one (it begins with '{' and does not parse), and anything else refuses the file.
    """
    *complete, tail = data.split(b"\n")
    ids = set()
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        record_id = _record_id(line)
        if record_id is None:
            raise _not_records(where, number, line)
        ids.add(record_id)
    if not tail.strip():
        return ids, (len(data) - len(tail) if tail else None), False
    if (record_id := _record_id(tail)) is not None:
        ids.add(record_id)
        return ids, None, True
    if tail.lstrip().startswith(b"{"):
        return ids, len(data) - len(tail), False  # a record cut short by a crash
    raise _not_records(where, len(complete) + 1, tail)


def _not_records(where, number: int, line: bytes) -> InputError:
    try:
        line.decode("utf-8")
        what = "not a dglm record"
    except UnicodeDecodeError:
        what = "not UTF-8 text"
    return InputError(f"--output {where}:{number}: {what}; refusing to append to it (the file is unchanged)")


def _record_id(line: bytes) -> str | None:
    """The `id` of one JSONL line if it is a dglm record, else None (never raises)."""
    try:
        record_id = json_object(line.decode("utf-8"), "--output").get("id")
    except (UnicodeDecodeError, InputError):
        return None
    return record_id if isinstance(record_id, str) else None


class OutputBusy(InputError):
    """Another process holds the lock on an --output file."""


class RecordsOutput:
    """An --output records file held for appending: opened (and so checked writable) before any work,
    locked against other writers, checked to hold only dglm records, and its torn tail cut.

    The lock is an exclusive `flock` on the file itself, taken without waiting: a second writer gets a
    one-line error instead of duplicating or interleaving records. It lasts until close(). A file that
    did not exist and got no record is removed again on close().
    """

    def __init__(self, path: Path, stream: IO[str], ids: set[str], created: bool):
        self.path, self.ids, self.created = path, ids, created
        self.appender = JsonlAppender(stream, sync=True)
        self.written = 0

    @classmethod
    def open(cls, path: str | Path) -> "RecordsOutput":
        path = Path(path)
        if path.exists() and not path.is_file():
            raise InputError(f"--output {path} is not a file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as error:
            raise InputError(f"cannot write --output {path}: {error.strerror or error}") from None
        try:
            _lock(fd, path)
            ids, keep, newline = scan_records(_read_all(fd), path)
            if keep is not None:
                os.ftruncate(fd, keep)
            if newline:
                os.write(fd, b"\n")
            if keep is not None or newline:
                os.fsync(fd)
            stream = os.fdopen(fd, "a", encoding="utf-8")
        except BaseException:
            if not existed:
                path.unlink(missing_ok=True)
            os.close(fd)
            raise
        return cls(path, stream, ids, created=not existed)

    def write(self, record: dict) -> None:
        self.appender.write(record)
        self.written += 1

    def close(self) -> None:
        if self.created and not self.written and self.path.is_file() and self.path.stat().st_size == 0:
            self.path.unlink(missing_ok=True)  # still under our lock: nobody else appended
        self.appender.close()


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputBusy(f"--output {path} is being written by another dglm process; wait for it to finish or choose another file") from None


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class JsonlAppender:
    """Appends one JSON object per line, flushed and synced per record, so a crash loses at most one line."""

    def __init__(self, stream: IO[str], sync: bool):
        self.stream = stream
        self.sync = sync

    def write(self, record: dict) -> None:
        self.stream.write(strict_json.dumps(record) + "\n")
        self.stream.flush()
        if self.sync:
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        if self.stream not in (sys.stdout, sys.stderr):
            self.stream.close()
