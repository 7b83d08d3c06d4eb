"""flows.pipeline: the in-process pipeline runs every default stage of dvc.yaml, in DAG order."""

from __future__ import annotations

import contextlib

import pytest
import yaml
from conftest import REPO

import flows.pipeline as fp

STAGE_FLOWS = {
    "problems": "problems",
    "policy": "policy",
    "generate": "generate",
    "segment": "segment_flow",
    "label": "label_flow",
    "label_quality": "label_quality_flow",
    "train": "train_flow",
    "evaluate": "evaluate_flow",
    "active": "active_flow",
    "results": "results_flow",
}


@pytest.fixture()
def calls(monkeypatch):
    """Every stage flow replaced by a recorder; no MLflow parent run."""
    seen: list[tuple[str, dict]] = []
    for stage, attr in STAGE_FLOWS.items():
        monkeypatch.setattr(fp, attr, lambda _s=stage, **kw: seen.append((_s, kw)) or {"stage": _s})
    monkeypatch.setattr(fp.tracking, "pipeline_run", lambda name: contextlib.nullcontext())
    return seen


def test_every_default_dvc_stage_runs_in_dag_order(calls):
    out = fp.pipeline.fn(params=str(REPO / "params.yaml"))
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert [s for s, _ in calls] == stages == list(STAGE_FLOWS)
    assert all(kw["params"] == str(REPO / "params.yaml") for _, kw in calls)
    assert dict(calls)["policy"]["model_dir"] == fp.TOY_POLICY
    assert out == {s: {"stage": s} for s in stages}


def test_a_pretrained_policy_skips_the_policy_stage(calls, tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("generate:\n  model: models/real-policy\n")
    out = fp.pipeline.fn(params=[str(REPO / "params.yaml"), str(overlay)])
    assert "policy" not in [s for s, _ in calls] and len(calls) == len(STAGE_FLOWS) - 1
    assert "not the toy policy" in out["policy"]["skipped"]
