"""File I/O shared by every stage: atomic writes and JSONL reading with precise errors.

Two promises, both tested:
1. Nothing half-written ever sits at a final path. Every writer writes a temp file in the
   same directory, fsyncs it, then `os.replace`s it over the target (atomic on POSIX).
2. Bad input fails with `DataError("file:line: field: what is wrong")`, never a traceback
   from deep inside a parser.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A JSONL line longer than this is rejected rather than parsed (guards against a binary or
# runaway file being read into memory as one "line").
MAX_LINE_BYTES = 16 * 1024 * 1024


class DataError(ValueError):
    """Bad input data. The message always names the file, the 1-based line and the field."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, field: str | None, msg: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': {msg}" if field else msg
        super().__init__(f"{where}: {what}")


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success rename it over `path`, on error delete it.

    Works for files and for directories (e.g. a `save_pretrained` target): an existing
    directory at `path` is replaced only after the new one is complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name  # write inside the temp dir so file and dir cases look alike
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            os.replace(final, old)
            os.replace(target, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_text_atomic(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def dumps_line(row: Any) -> str:
    """One canonical JSON line: sorted keys, no NaN (raises), unicode kept as is."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write rows as canonical JSONL atomically. Returns the number of rows written.

    Canonical means byte-identical output for equal rows, which DVC hashes rely on.
    """
    n = 0

    def write(f: Any) -> None:
        nonlocal n
        for row in rows:
            f.write(dumps_line(row))
            f.write("\n")
            n += 1

    _write_text_atomic(path, write)
    return n


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write one JSON document (indented, sorted keys, no NaN) atomically."""
    _write_text_atomic(
        path,
        lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"),
    )


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file (UTF-8, \n line ends) atomically."""
    _write_text_atomic(path, lambda f: f.write(text))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Line:
    """A parsed JSONL row with where it came from, for error messages further down."""

    path: str
    lineno: int
    row: dict[str, Any]

    def error(self, field: str | None, msg: str) -> DataError:
        return DataError(self.path, self.lineno, field, msg)

    def get(self, field: str, types: type | tuple[type, ...], *, required: bool = True, default: Any = None) -> Any:
        """Return `row[field]` checked against `types`, or raise a DataError naming it."""
        if field not in self.row or self.row[field] is None:
            if required:
                raise self.error(field, "missing")
            return default
        value = self.row[field]
        # bool is an int subclass; never accept it where a number is asked for
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.error(field, f"expected {_names(types)}, got bool")
        if not isinstance(value, types):
            raise self.error(field, f"expected {_names(types)}, got {type(value).__name__}")
        return value


def _names(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


def iter_jsonl(path: str | os.PathLike[str], *, allow_empty: bool = False) -> Iterator[Line]:
    """Yield each non-blank line of a JSONL file as a `Line` holding a dict.

    Raises DataError for: a missing file, an empty file (unless allow_empty), invalid JSON,
    a line that is not an object, a line over MAX_LINE_BYTES, or bytes that are not UTF-8.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, None, None, "no such file")
    n = 0
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(p, lineno, None, f"line is {len(raw)} bytes, over the {MAX_LINE_BYTES} byte limit")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(p, lineno, None, f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(p, lineno, None, f"invalid JSON: {e.msg} at column {e.colno}") from None
            except RecursionError:
                raise DataError(p, lineno, None, "invalid JSON: nested too deeply") from None
            if not isinstance(row, dict):
                raise DataError(p, lineno, None, f"expected a JSON object, got {type(row).__name__}")
            n += 1
            yield Line(str(p), lineno, row)
    if n == 0 and not allow_empty:
        raise DataError(p, None, None, "file has no rows")


def read_json(path: str | os.PathLike[str]) -> Any:
    """One JSON document; a missing or malformed file raises DataError naming it (and the line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), None, None, "file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(str(p), e.lineno, None, f"invalid JSON: {e.msg}") from None


def read_jsonl(path: str | os.PathLike[str], *, allow_empty: bool = False) -> list[dict[str, Any]]:
    """All rows of a JSONL file (see `iter_jsonl` for the errors)."""
    return [line.row for line in iter_jsonl(path, allow_empty=allow_empty)]


def check_unique_ids(lines: Iterable[Line], field: str = "id") -> None:
    """Raise a DataError at the second occurrence of any id."""
    seen: dict[Any, int] = {}
    for line in lines:
        key = line.row.get(field)
        if key in seen:
            raise line.error(field, f"duplicate id {key!r} (first seen on line {seen[key]})")
        seen[key] = line.lineno


# --------------------------------------------------------------------------- disk space


def ensure_free_space(path: str | os.PathLike[str], need_bytes: int, what: str) -> None:
    """Fail before a long computation if the disk holding `path` cannot take its output.

    Asks for twice the estimate (the temp file and the old artifact coexist until the rename).
    """
    p = Path(path)
    probe = p if p.exists() else next((q for q in p.parents if q.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if free < 2 * need_bytes:
        raise OSError(
            f"not enough disk space for {what} at {p}: need about {_human(2 * need_bytes)} free "
            f"(estimated output {_human(need_bytes)}, written atomically), have {_human(free)}"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
