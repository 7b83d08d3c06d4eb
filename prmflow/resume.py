"""Resume a killed job: key its work by what decides its output, and save its progress atomically.

    key = job_key(cfg, [Path("data/labels/labels.jsonl")], exclude=SPEED_ONLY["train"])  # 64 hex
    job_dir("checkpoints/train", key)                      -> checkpoints/train/<key[:16]>/
    save_checkpoint(dir, key, state, write_files)          a directory: files + state.json, atomic
    load_checkpoint(dir, key)                              -> state | None (absent); raises if stale
    load_rows(shard_path, ids, "problem_id")               -> a finished shard's rows | None
    append_rows(log, rows); read_log(log)                  an fsynced progress log (torn tail dropped)

The key is sha256 over the canonical JSON (sorted keys) of `cfg`'s fields minus `exclude`,
then over each input in order: a `Path` by the name and bytes of every file in it (a directory's
in sorted order), anything else by its canonical JSON. Leave out exactly the knobs that change
speed but no output byte (`prmflow.config.SPEED_ONLY`): a rerun with another shard count then
finds its work, and any knob or input byte that changes the output gives a fresh directory.

A checkpoint directory is written under a temp name, each file fsynced, then renamed into place
(`prmflow.io.atomic_path`), so a kill leaves the old checkpoint or the new one, never half of
one. Its state.json holds the key (under "fingerprint", the name ActPRM's loop version 2 saved it
under, so those runs still resume); loading a checkpoint of another job raises `StaleCheckpoint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prmflow import io

T = TypeVar("T")

KEY_FIELD = "fingerprint"
"""where a saved state keeps the key of the job that saved it"""
STATE_FILE = "state.json"
"""a checkpoint directory's state (JSON), written last"""


class StaleCheckpoint(ValueError):
    """A checkpoint saved by another job (another config or other inputs)."""


# --------------------------------------------------------------------------- keys


def key_fields(cfg: Any, exclude: Iterable[str] = ()) -> Any:
    """`cfg` as hashed by `job_key`: a dataclass's or mapping's fields minus `exclude`; any other
    JSON value as is. Excluding a field `cfg` does not have is an error (a renamed knob would
    otherwise silently enter the key).

    >>> key_fields({"lr": 0.1, "num_shards": 4}, exclude=["num_shards"])
    {'lr': 0.1}
    """
    exclude = set(exclude)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        d = dataclasses.asdict(cfg)
    elif isinstance(cfg, Mapping):
        d = dict(cfg)
    elif exclude:
        raise TypeError(f"exclude needs a dataclass or mapping, got {type(cfg).__name__}")
    else:
        return cfg
    if unknown := exclude - set(d):
        raise ValueError(f"exclude names fields the config does not have: {sorted(unknown)}")
    return {k: v for k, v in d.items() if k not in exclude}


def job_key(cfg: Any, inputs: Sequence[Any] = (), exclude: Iterable[str] = ()) -> str:
    """sha256 (64 hex) of `key_fields(cfg, exclude)` and then of each input (module docstring).

    >>> job_key({"lr": 0.1, "num_shards": 4}, exclude=["num_shards"]) == job_key({"lr": 0.1})
    True
    >>> job_key({"lr": 0.1}) == job_key({"lr": 0.2})
    False
    """
    h = hashlib.sha256(_canonical(key_fields(cfg, exclude)))
    for x in inputs:
        if isinstance(x, Path):
            _update_with_files(h, x)
        else:
            h.update(_canonical(x))
    return h.hexdigest()


def job_dir(root: str | os.PathLike[str], key: str) -> Path:
    """`root/<first 16 hex of key>`: where the work of one exact job lives."""
    return Path(root) / key[:16]


def _canonical(x: Any) -> bytes:
    # json.dumps' default separators and ASCII escapes: the bytes ActPRM's keys were made of
    return json.dumps(x, sort_keys=True).encode()


def _update_with_files(h: Any, path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"job input {path} does not exist")
    for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)


# --------------------------------------------------------------------------- checkpoints


def save_state(path: str | os.PathLike[str], key: str, state: Mapping[str, Any]) -> None:
    """Write `state` and `key` as one JSON file, atomically (temp file, fsync, rename)."""
    io.write_json(path, {**state, KEY_FIELD: key})


def load_state(path: str | os.PathLike[str], key: str, hint: str = "use a fresh directory") -> dict[str, Any] | None:
    """The state saved at `path` by the job `key` (without the key); None if there is none.
    A state saved by another job raises StaleCheckpoint, ending with `hint`."""
    p = Path(path)
    if not p.is_file():
        return None
    state = io.read_json(p)
    saved = state.pop(KEY_FIELD, None) if isinstance(state, dict) else None
    if saved != key:
        raise StaleCheckpoint(
            f"checkpoint {p} was made with another config or other data "
            f"(key {str(saved)[:16]}, this job's {key[:16]}); {hint}"
        )
    return state


def save_checkpoint(
    path: str | os.PathLike[str], key: str, state: Mapping[str, Any], write_files: Callable[[Path], None] | None = None
) -> None:
    """Write the checkpoint directory `path` atomically: `write_files(tmp_dir)` writes the
    tensors (model, optimizer, RNG), then STATE_FILE holds `state` and `key`; every file is
    fsynced before the directory is renamed into place, replacing an older one."""
    with io.atomic_path(path) as tmp:
        tmp.mkdir()
        if write_files is not None:
            write_files(tmp)
        save_state(tmp / STATE_FILE, key, state)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f, os.O_RDONLY)
        _fsync(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def load_checkpoint(
    path: str | os.PathLike[str], key: str, hint: str = "use a fresh directory"
) -> dict[str, Any] | None:
    """The state of the checkpoint directory `path` (None if there is none); the caller then reads
    its files. One saved by another job raises StaleCheckpoint."""
    return load_state(Path(path) / STATE_FILE, key, hint)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- shard files and logs


def load_rows(path: str | os.PathLike[str], ids: Sequence[Any], field: str = "id") -> list[dict[str, Any]] | None:
    """A finished shard file's rows if it holds exactly `ids` (by `field`, in order), else None:
    absent, damaged, or cut for another split, so its shard is (re)done. Shard files are
    written with `prmflow.io.write_jsonl` (atomic), under a `job_dir` of their job's key."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        rows = io.read_jsonl(p, allow_empty=True)
    except io.DataError:
        return None
    return rows if [r.get(field) for r in rows] == list(ids) else None


def append_rows(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Append canonical JSONL rows to a progress log and fsync: they survive a kill once this returns."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.writelines(io.dumps_line(row) + "\n" for row in rows)
        f.flush()
        os.fsync(f.fileno())


def read_log(path: str | os.PathLike[str], decode: Callable[[Any], T] = lambda row: row) -> list[T]:
    """`decode(row)` of every row of a progress log (empty if absent). A kill can only tear the
    last line, so a last line that fails to parse or decode is dropped (it will be redone);
    damage anywhere else means the file is not ours and raises DataError."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_bytes().split(b"\n")
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            out.append(decode(json.loads(raw)))
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines) - 1:  # torn by a kill mid-append
                break
            raise io.DataError(p, i + 1, None, f"corrupt checkpoint line ({e})") from None
    return out
