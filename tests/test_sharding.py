"""Sharded, resumable `generate` and `label`: shard assignment, byte-identical merges, resume."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from prmflow import io
from prmflow.config import GenerateConfig, LabelConfig, SegmentConfig
from prmflow.resume import job_key
from prmflow.shard import balance, shard_of, split_by_shard
from prmflow.synth.world import generate_problems


@pytest.fixture(autouse=True, scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with prefect_test_harness():
        yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def fresh_backends():
    from tasks import backends

    backends.clear()
    yield
    backends.clear()


# --------------------------------------------------------------------------- shard assignment


def test_shard_of_is_stable_in_range_and_balanced():
    # pinned: a change of the hash would silently orphan every checkpoint
    assert [shard_of(f"synth-{i:06d}", 4) for i in range(8)] == [0, 1, 0, 3, 3, 0, 1, 3]
    assert shard_of("abc", 7) == 2 and shard_of("abc", 1) == 0
    ids = [f"synth-{i:06d}" for i in range(4000)]
    for n in (1, 2, 3, 4, 7):
        counts = Counter(shard_of(i, n) for i in ids)
        assert set(counts) == set(range(n))
        assert balance([counts[s] for s in range(n)]) < 1.1
    with pytest.raises(ValueError, match="num_shards"):
        shard_of("x", 0)


def test_split_by_shard_partitions_and_keeps_input_order():
    rows = [{"id": f"p{i}"} for i in range(50)]
    parts = split_by_shard(rows, 3, key=lambda r: r["id"])
    assert sorted((r["id"] for p in parts for r in p), key=lambda x: int(x[1:])) == [r["id"] for r in rows]
    for s, part in enumerate(parts):
        assert all(shard_of(r["id"], 3) == s for r in part)
        assert part == [r for r in rows if r in part]  # input order within a shard
    # independent of the input order
    back = split_by_shard(list(reversed(rows)), 3, key=lambda r: r["id"])
    assert [sorted(r["id"] for r in p) for p in back] == [sorted(r["id"] for r in p) for p in parts]
    assert job_key({"a": 1, "b": [2]}) == job_key({"b": [2], "a": 1})


# --------------------------------------------------------------------------- generate

PROBLEMS = [p.to_row() for p in generate_problems(7, seed=3)]


def _gen_cfg(model, **kw) -> GenerateConfig:
    base = dict(
        model=str(model),
        n=2,
        max_new_tokens=20,
        batch_size=8,
        top_logprobs=2,
        tree_problems=3,
        tree_max_branches=2,
        tree_threshold=0.5,
        num_shards=1,
        task_retries=0,
    )
    return GenerateConfig(**{**base, **kw})


def _generate(cfg, root, tmp_path, name):
    from tasks.generate import sample_solutions

    out = sample_solutions(cfg, PROBLEMS, str(root))
    io.write_jsonl(tmp_path / f"{name}.jsonl", out["samples"])
    io.write_jsonl(tmp_path / f"{name}.tree.jsonl", out["tree"])
    return (tmp_path / f"{name}.jsonl").read_bytes() + b"--\n" + (tmp_path / f"{name}.tree.jsonl").read_bytes(), out


@pytest.fixture(scope="module")
def straight_generation(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen1")
    data, out = _generate(_gen_cfg(tiny_model_dir), tmp / "ckpt", tmp, "one")
    assert len(out["samples"]) == 2 * len(PROBLEMS) and out["tree"]
    assert [r["id"] for r in out["samples"][:2]] == [f"{PROBLEMS[0]['id']}/0", f"{PROBLEMS[0]['id']}/1"]
    return data, out


def test_generate_is_byte_identical_for_any_shard_count(tiny_model_dir, tmp_path, straight_generation):
    one, _ = straight_generation
    three, out = _generate(_gen_cfg(tiny_model_dir, num_shards=3), tmp_path / "ckpt", tmp_path, "three")
    assert three == one
    assert out["info"] == {"shards_run": 3, "shards_skipped": 0}
    # more shards than batches: some shards are empty
    seven, _ = _generate(_gen_cfg(tiny_model_dir, num_shards=7), tmp_path / "ckpt", tmp_path, "seven")
    assert seven == one


def test_generate_crash_then_resume_redoes_only_missing_shards(
    tiny_model_dir, tmp_path, monkeypatch, straight_generation
):
    import tasks.generate as tg

    real = tg.sample_problems
    calls = []

    def crash_on_second(*a, **kw):
        calls.append(len(a[2]))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    monkeypatch.setattr(tg, "sample_problems", crash_on_second)
    cfg = _gen_cfg(tiny_model_dir, num_shards=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _generate(cfg, tmp_path / "ckpt", tmp_path, "crashed")

    def finished():
        return [p for p in (tmp_path / "ckpt").rglob("shard-*.jsonl") if p.stat().st_size]

    assert len(finished()) == 1  # the shard that ran before the crash; the crashed one left nothing

    calls.clear()
    monkeypatch.setattr(tg, "sample_problems", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    data, out = _generate(cfg, tmp_path / "ckpt", tmp_path, "resumed")
    assert len(calls) == len(finished()) - 1  # the shard finished before the crash is not redone
    assert out["info"]["shards_skipped"] >= 1
    assert data == straight_generation[0]

    calls.clear()  # a third run finds everything done and loads no model
    data, out = _generate(cfg, tmp_path / "ckpt", tmp_path, "again")
    assert calls == [] and out["info"] == {"shards_run": 0, "shards_skipped": 4} and data == straight_generation[0]


def test_generate_shard_task_is_retried(tiny_model_dir, tmp_path, monkeypatch, straight_generation):
    import tasks.generate as tg

    real = tg.sample_problems
    calls = []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return real(*a, **kw)

    monkeypatch.setattr(tg, "sample_problems", flaky)
    data, _ = _generate(_gen_cfg(tiny_model_dir, num_shards=2, task_retries=1), tmp_path / "ckpt", tmp_path, "r")
    assert data == straight_generation[0]


# --------------------------------------------------------------------------- label


@pytest.fixture(scope="module")
def segments(straight_generation):
    from tasks.segment import segment

    _, out = straight_generation
    seg = segment.fn(SegmentConfig(strategy="fixed", entropy_threshold=0.5, max_len=6), out["samples"] + out["tree"])
    return seg["rows"]


ANSWERS = {p["id"]: p["answer"] for p in PROBLEMS}


def _label_cfg(model, **kw) -> LabelConfig:
    base = dict(
        model=str(model), num_rollouts=2, max_new_tokens=12, batch_size=16, chunk_size=3, num_shards=1, task_retries=0
    )
    return LabelConfig(**{**base, **kw})


def _label(cfg, rows, root, tmp_path, name):
    from tasks.label import label_sharded

    out, info = label_sharded(cfg, rows, ANSWERS, str(root))
    io.write_jsonl(tmp_path / f"{name}.jsonl", out)
    return (tmp_path / f"{name}.jsonl").read_bytes(), info


@pytest.fixture(scope="module")
def straight_labels(tiny_model_dir, segments, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab1")
    data, info = _label(_label_cfg(tiny_model_dir), segments, tmp / "ckpt", tmp, "one")
    assert info["rollouts_run"] > 0 and info["resumed_prefixes"] == 0
    return data, info


def test_label_is_byte_identical_for_any_shard_count(tiny_model_dir, segments, tmp_path, straight_labels):
    for n in (3, 5):
        data, info = _label(_label_cfg(tiny_model_dir, num_shards=n), segments, tmp_path / "ckpt", tmp_path, f"s{n}")
        assert data == straight_labels[0]
        assert info["rollouts_run"] == straight_labels[1]["rollouts_run"]


def test_label_crash_then_resume_redoes_nothing_paid_for(
    tiny_model_dir, segments, tmp_path, monkeypatch, straight_labels
):
    import tasks.label as tl

    real = tl.roll_out_chunk
    calls = []

    def crash_after_k(*a, **kw):
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        calls.append(len(a[1]))
        return real(*a, **kw)

    monkeypatch.setattr(tl, "roll_out_chunk", crash_after_k)
    cfg = _label_cfg(tiny_model_dir, num_shards=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _label(cfg, segments, tmp_path / "ckpt", tmp_path, "crashed")
    paid = sum(calls)  # prefixes rolled out before the crash
    total_chunks = -(-straight_labels[1]["rollouts_run"] // 2 // 3)  # upper bound on chunks (2 rollouts, 3/chunk)
    assert total_chunks > 4

    calls.clear()
    monkeypatch.setattr(tl, "roll_out_chunk", lambda *a, **kw: (calls.append(len(a[1])), real(*a, **kw))[1])
    data, info = _label(cfg, segments, tmp_path / "ckpt", tmp_path, "resumed")
    assert info["resumed_prefixes"] == paid
    assert info["rollouts_run"] == straight_labels[1]["rollouts_run"] - 2 * paid  # nothing paid twice
    assert sum(calls) * 2 == info["rollouts_run"]
    assert data == straight_labels[0]
    assert not list((tmp_path / "ckpt").rglob("*.partial.jsonl"))  # finished shards keep only their final file


def test_omega_is_byte_identical_for_any_shard_count(tiny_model_dir, segments, tmp_path):
    rows = segments[:6]
    one, _ = _label(_label_cfg(tiny_model_dir, method="omega"), rows, tmp_path / "ckpt", tmp_path, "o1")
    three, info = _label(
        _label_cfg(tiny_model_dir, method="omega", num_shards=3), rows, tmp_path / "ckpt", tmp_path, "o3"
    )
    assert three == one and info["shards_run"] == 3


def test_config_rejects_bad_shard_counts():
    with pytest.raises(ValueError, match="num_shards"):
        GenerateConfig(num_shards=0)
    with pytest.raises(ValueError, match="task_retries"):
        LabelConfig(task_retries=-1)
    assert dataclasses.asdict(GenerateConfig())["num_shards"] >= 1
