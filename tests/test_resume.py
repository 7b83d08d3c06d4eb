"""prmflow.resume: job keys, atomic checkpoints, shard files and progress logs."""

import hashlib
import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from prmflow.io import DataError, write_jsonl
from prmflow.resume import (
    StaleCheckpoint,
    append_rows,
    job_dir,
    job_key,
    load_checkpoint,
    load_rows,
    load_state,
    read_log,
    save_checkpoint,
    save_state,
)


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    seed: int = 0
    num_shards: int = 4  # speed only


def test_same_job_same_key_and_speed_knobs_do_not_count(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a"}\n')
    rows = [{"id": "a", "x": 1}]
    key = job_key(Cfg(), [data, rows], exclude=["num_shards"])
    assert key == job_key(Cfg(), [data, [{"x": 1, "id": "a"}]], exclude=["num_shards"])  # key order is canonical
    assert key == job_key(Cfg(num_shards=1), [data, rows], exclude=["num_shards"])
    assert len(key) == 64 and job_dir("r", key) == Path("r") / key[:16]


def test_an_output_knob_or_an_input_byte_changes_the_key(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a"}\n')
    key = job_key(Cfg(), [data], exclude=["num_shards"])
    assert job_key(Cfg(seed=1), [data], exclude=["num_shards"]) != key
    assert job_key(Cfg(num_shards=1), [data]) != job_key(Cfg(), [data])  # only what is excluded leaves the key
    data.write_text('{"id": "b"}\n')
    assert job_key(Cfg(), [data], exclude=["num_shards"]) != key
    assert job_key(Cfg(), [[{"id": "a"}]]) != job_key(Cfg(), [[{"id": "b"}]])


def test_a_directory_input_counts_every_file(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "w.bin").write_bytes(b"\x00\x01")
    key = job_key({}, [tmp_path / "m"])
    (tmp_path / "m" / "sub" / "t.json").write_text("{}")
    assert job_key({}, [tmp_path / "m"]) != key
    with pytest.raises(FileNotFoundError, match="nope"):
        job_key({}, [tmp_path / "nope"])


def test_the_key_bytes_are_those_activeprm_saved_runs_were_keyed_by(tmp_path):
    # loop version 2 keyed run dirs by sha256(json.dumps({...}, sort_keys=True) + name + bytes per
    # file) and fingerprinted runs by sha256(json.dumps([...], sort_keys=True)): same bytes, same keys
    (tmp_path / "d.jsonl").write_text("é\n")
    h = hashlib.sha256(json.dumps({"loop_version": 2, "lr": 0.001}, sort_keys=True).encode())
    h.update(b"d.jsonl" + "é\n".encode())
    assert (
        job_key({"loop_version": 2, "lr": 0.001, "seeds": [0]}, [tmp_path / "d.jsonl"], exclude=["seeds"])
        == h.hexdigest()
    )
    parts = [2, {"b": 1, "a": "é"}, "oracle", ["x"], None]
    assert job_key(parts) == hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def test_excluding_a_field_the_config_lacks_is_an_error():
    with pytest.raises(ValueError, match=r"\['num_shard'\]"):
        job_key(Cfg(), exclude=["num_shard"])


def _write_files(d: Path) -> None:
    (d / "model.bin").write_bytes(b"weights")


def test_checkpoint_round_trip_and_a_stale_one_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert load_checkpoint(ckpt, "k1") is None  # nothing saved yet
    save_checkpoint(ckpt, "k1", {"step": 2, "losses": [0.5, 0.25]}, _write_files)
    assert load_checkpoint(ckpt, "k1") == {"step": 2, "losses": [0.5, 0.25]}
    assert (ckpt / "model.bin").read_bytes() == b"weights"
    save_checkpoint(ckpt, "k1", {"step": 4, "losses": []})  # replaces the older one whole
    assert load_checkpoint(ckpt, "k1") == {"step": 4, "losses": []} and not (ckpt / "model.bin").exists()
    with pytest.raises(StaleCheckpoint, match="another config or other data.*use a fresh out_dir"):
        load_checkpoint(ckpt, "k2", hint="use a fresh out_dir")
    save_state(tmp_path / "round.json", "k1", {"round": 1})
    assert load_state(tmp_path / "round.json", "k1") == {"round": 1}
    with pytest.raises(StaleCheckpoint):
        load_state(tmp_path / "round.json", "k2")


def _die_mid_write(path: str) -> None:
    def write_files(d: Path) -> None:
        (d / "model.bin").write_bytes(b"half")
        os._exit(9)  # killed before the state and the rename

    save_checkpoint(path, "k", {"step": 1}, write_files)


def test_a_killed_write_leaves_no_half_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, "k", {"step": 1}, _write_files)
    proc = multiprocessing.get_context("fork").Process(target=_die_mid_write, args=(str(ckpt),))
    proc.start()
    proc.join()
    assert proc.exitcode == 9
    assert load_checkpoint(ckpt, "k") == {"step": 1} and (ckpt / "model.bin").read_bytes() == b"weights"
    fresh = tmp_path / "fresh"
    proc = multiprocessing.get_context("fork").Process(target=_die_mid_write, args=(str(fresh),))
    proc.start()
    proc.join()
    assert not fresh.exists() and load_checkpoint(fresh, "k") is None

    def fail(d: Path) -> None:
        (d / "model.bin").write_bytes(b"half")
        raise OSError("disk full")

    failed = tmp_path / "failed"
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(failed, "k", {"step": 1}, fail)
    assert not [p for p in tmp_path.iterdir() if "failed" in p.name]  # an error also cleans up the temp dir


def test_load_rows_takes_a_shard_only_when_it_holds_exactly_its_ids(tmp_path):
    p = tmp_path / "shard-0000.jsonl"
    assert load_rows(p, ["a"]) is None
    write_jsonl(p, [{"id": "a"}, {"id": "b"}])
    assert load_rows(p, ["a", "b"]) == [{"id": "a"}, {"id": "b"}]
    assert load_rows(p, ["b", "a"]) is None and load_rows(p, ["a"]) is None  # another split
    p.write_text('{"id": "a"}\n{"id": ')  # damaged
    assert load_rows(p, ["a"]) is None


def test_progress_log_keeps_every_appended_row_and_drops_a_torn_tail(tmp_path):
    p = tmp_path / "log.jsonl"
    assert read_log(p) == []
    append_rows(p, [{"k": 1}])
    append_rows(p, [{"k": 2}, {"k": 3}])
    with open(p, "a") as f:  # a kill in the middle of an append leaves half a line
        f.write('{"k": 4, "v')
    assert read_log(p, lambda r: r["k"]) == [1, 2, 3]
    p.write_text('garbage\n{"k": 1}\n')
    with pytest.raises(DataError, match="log.jsonl:1"):
        read_log(p)
