"""Split a stage's work into shards that are deterministic by id.

    shard_of("synth-000042", 4)                         -> 0..3, the same on every machine and run
    split_by_shard(rows, 4, key=lambda r: r["id"])       -> 4 lists, each in input order
    shard_path(dir, 3)                                   -> <dir>/shard-0003.jsonl
    path_fingerprint("models/policy")                    -> a content hash of the model dir

Shard assignment hashes the id (sha256, not Python's salted `hash`), so it depends on nothing
but (id, num_shards): not on input order, batch size or process. Stages write one file per
shard under a work dir keyed by everything that determines the output (config, inputs, model
fingerprint; `prmflow.resume.job_key`), so a rerun of the same job finds the shards already
done and a changed job never reuses stale ones. Merging puts rows back in input order, which is
why the merged artifact does not depend on the shard count.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# files bigger than this are fingerprinted by size and mtime instead of content
_CONTENT_HASH_MAX_BYTES = 256 * 1024 * 1024


def shard_of(key: str, num_shards: int) -> int:
    """The shard (0 <= s < num_shards) that `key` belongs to, by a stable hash.

    >>> shard_of("synth-000001", 1)
    0
    >>> shard_of("synth-000001", 4) == shard_of("synth-000001", 4)
    True
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if num_shards == 1:
        return 0
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def split_by_shard(items: Iterable[T], num_shards: int, key: Callable[[T], str]) -> list[list[T]]:
    """`num_shards` lists: item x goes to list `shard_of(key(x), num_shards)`; each keeps input order.

    >>> split_by_shard(["a", "b", "c"], 1, key=str)
    [['a', 'b', 'c']]
    """
    out: list[list[T]] = [[] for _ in range(num_shards)]
    for x in items:
        out[shard_of(key(x), num_shards)].append(x)
    return out


def path_fingerprint(path: str | os.PathLike[str]) -> str:
    """A content hash of a local file or directory (e.g. a model dir), or the string itself
    when nothing exists at `path` (a hub id). Huge files count by size and mtime only."""
    p = Path(path)
    if not p.exists():
        return f"name:{path}"
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode() + b"\0")
        st = f.stat()
        if st.st_size > _CONTENT_HASH_MAX_BYTES:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def shard_path(directory: str | os.PathLike[str], shard: int, suffix: str = ".jsonl") -> Path:
    return Path(directory) / f"shard-{shard:04d}{suffix}"


def balance(sizes: Sequence[int]) -> float:
    """max / mean shard size (1.0 = perfectly even); for logs and tests."""
    mean = sum(sizes) / max(1, len(sizes))
    return max(sizes, default=0) / mean if mean else 1.0
