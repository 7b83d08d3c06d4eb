"""Integration: every DVC stage on a tiny config, in a temp copy of the repo, offline (dead proxies).

Runs real subprocesses (`dvc repro`, Prefect flows, MLflow sqlite store), so it is the slowest
test (about a minute: most of it is Prefect's ephemeral API starting once per stage).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools.smoke import build, copy_repo, env_for, run

pytestmark = pytest.mark.slow

STAGES = (
    "problems",
    "policy",
    "generate",
    "segment",
    "label",
    "label_quality",
    "train",
    "evaluate",
    "active",
    "results",
)
# The tiny profile is params-smoke.yaml (`make smoke` runs the same DAG); these helpers build it.
_copy_repo, _env, _run = copy_repo, env_for, run


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    tmp = tmp_path_factory.mktemp("repo")
    out = build(tmp)
    return tmp, _env(tmp), out


def test_stages_produce_their_artifacts(repo):
    tmp, _, out = repo
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    for split in ("train", "eval", "pool"):
        assert (tmp / f"data/problems/{split}.jsonl").is_file()
    rows = [json.loads(x) for x in (tmp / "data/problems/pool.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) == {"id", "problem", "answer", "solution"}

    # the policy is a transformers model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp / "models/policy")
    tok = AutoTokenizer.from_pretrained(tmp / "models/policy")
    assert model.config.num_hidden_layers == 1 and tok.eos_token_id is not None

    report = json.loads((tmp / "reports/policy.json").read_text())
    assert report["n_eval"] == 16 and 0.0 <= report["solve_rate"] <= 1.0
    assert sum(report["first_error_hist"].values()) == 16
    assert (tmp / "reports/policy/loss.png").stat().st_size > 1000

    gens = [json.loads(x) for x in (tmp / "data/generations/generations.jsonl").read_text().splitlines()]
    assert len(gens) == 6 * 2
    for g in gens:
        assert len(g["entropy"]) == len(g["token_ids"]) == len(g["offsets"]) == len(g["top_logprobs"])
        assert all(h >= 0 for h in g["entropy"])
        assert g["first_error"] >= -1 and isinstance(g["final_correct"], bool)

    # segments: steps tile each completion's text; gold labels are monotone (right..., wrong...)
    segs = [json.loads(x) for x in (tmp / "data/segments/segments.jsonl").read_text().splitlines()]
    tree = (tmp / "data/generations/tree.jsonl").read_text().splitlines()
    assert len(segs) == sum(1 for g in gens if g["token_ids"]) + len(tree)
    for r in segs:
        assert "".join(r["steps"]) == r["text"]
        assert all(e - s <= 8 + 3 for s, e in zip(r["starts"], r["ends"]))  # max_len (+ UTF-8 snap slack)
        g = r["gold_labels"]
        assert g == sorted(g, reverse=True)

    # labels: TRL stepwise rows that load and validate, with costs
    from prmflow.label import load_stepwise

    labels = load_stepwise(tmp / "data/labels/labels.jsonl")
    assert len(labels) == len(segs)
    assert all(len(r["labels"]) == len(r["completions"]) == len(r["soft_labels"]) for r in labels)
    assert sum(r["cost"]["rollouts"] for r in labels) > 0
    report = json.loads((tmp / "reports/labeling/label.json").read_text())
    assert 0 <= report["quality_step_acc"] <= 1 and report["cost_rollouts"] == sum(
        r["cost"]["rollouts"] for r in labels
    )

    # label quality: every scheme scored on the same solutions, plus the Pareto plot
    quality = json.loads((tmp / "reports/labeling/quality.json").read_text())
    assert set(quality) == {"newline_mc1", "newline_mc2", "chunk_mc2", "edu_mc2", "edu_tree_mc2", "omega_newline2"}
    for name, q in quality.items():
        assert q["n_steps"] > 0 and (q["step_acc"] is None or 0 <= q["step_acc"] <= 1), name
    # more rollouts per prefix cost more tokens
    assert quality["newline_mc2"]["generated_tokens"] >= quality["newline_mc1"]["generated_tokens"]
    assert (tmp / "reports/labeling/pareto.png").stat().st_size > 1000

    # PRM: its heads + a pointer to the frozen backbone (models/policy), no copy; loads and scores every step
    from prmflow.prm import PRM

    assert json.loads((tmp / "models/prm/prm_backbone.json").read_text())["path"] == "models/policy"
    assert not (tmp / "models/prm/model.safetensors").exists()
    prm = PRM.from_pretrained(tmp / "models/prm")
    scores = prm.score("Question: Mia has 2 cats.\nAnswer:\n", ["2 + 1 = 3\n", "The answer is 3"])
    assert len(scores) == 2 and all(0 <= x <= 1 for x in scores)
    assert json.loads((tmp / "reports/train.json").read_text())["steps"] == 4

    # evaluation: the three scorers side by side, and Best-of-N at N = 1, 2, 4
    ev = json.loads((tmp / "reports/eval/synthetic_processbench.json").read_text())
    for name in ("prm", "all_ones", "entropy", "likelihood"):
        assert {"err_acc", "correct_acc", "f1", "threshold", "threshold_mode"} <= set(ev[name])
    bon = json.loads((tmp / "reports/eval/bon.json").read_text())
    assert bon["ns"] == [1, 2, 4] and len(bon["accuracy"]["prm_min"]) == 3
    pedu = json.loads((tmp / "reports/eval/edu_sampling.json").read_text())
    assert len(pedu["standard"]["tokens"]["per_seed"]) == 2 and pedu["standard"]["tokens"]["mean"] > 0
    assert {"acc_prm_delta", "acc_majority_delta", "token_change"} <= set(pedu)

    # active learning: every strategy ran, the curve plot and summary exist
    summary = json.loads((tmp / "reports/active/summary.json").read_text())
    assert {"full", "active"} <= set(summary)
    assert (tmp / "reports/active/curve.png").is_file()

    # the metrics files DVC shows are the stages' MLflow metrics; RESULTS.md is rendered from them
    ev = json.loads((tmp / "reports/eval.json").read_text())
    assert ev["bon/oracle"] == bon["accuracy"]["oracle"][-1]  # the value at the largest N
    active = json.loads((tmp / "reports/active.json").read_text())
    assert active["full/labels_spent_mean"] == summary["full"]["labels_spent"]["mean"]
    results = (tmp / "reports/RESULTS.md").read_text()
    assert "## active" in results and "`eval.json`: `prm/f1`" in results
    assert (tmp / "reports/labeling/labels.png").stat().st_size > 1000


def test_second_repro_runs_nothing(repo):
    tmp, env, _ = repo
    out = _run(["dvc", "repro"], tmp, env)
    assert "Running stage" not in out
    # the default pipeline (./dvc.yaml); experiments/dvc.yaml is deliberately not part of it
    status = _run(["dvc", "status", "dvc.yaml"], tmp, env)
    assert "up to date" in status


def test_mlflow_runs_nest_under_one_parent(repo):
    tmp, env, _ = repo
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("prmflow")
    runs = client.search_runs([exp.experiment_id])
    by_stage = {r.data.tags.get("stage"): r for r in runs}
    parent = by_stage["pipeline (dvc repro)"]
    for stage in STAGES:
        run = by_stage[stage]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "policy/solve_rate" in by_stage["policy"].data.metrics
    # the PRM is in the model registry, pointing at the train run's model artifact
    versions = client.search_model_versions("name='prmflow-prm'")
    assert versions and versions[0].run_id == by_stage["train"].info.run_id
    assert by_stage["policy"].data.params["steps"] == "20"
    assert "generate/mean_entropy" in by_stage["generate"].data.metrics
    # MLflow's metric names are the metrics files' keys under the stage's prefix
    ev = json.loads((tmp / "reports/eval.json").read_text())
    logged = client.get_run(by_stage["evaluate"].info.run_id).data.metrics
    assert {f"eval/{k}" for k in ev} == set(logged) and all(logged[f"eval/{k}"] == v for k, v in ev.items())


def test_changing_one_param_reruns_only_dependent_stages(repo):
    tmp, env, _ = repo
    params = yaml.safe_load((tmp / "params.yaml").read_text())
    params["generate"]["temperature"] = 0.7
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], tmp, env)
    for stage in ("generate", "segment", "label", "label_quality", "train"):
        assert f"Running stage '{stage}'" in out
    assert "Running stage 'policy'" not in out and "Running stage 'problems'" not in out


def test_bad_param_fails_with_file_line_and_key(repo):
    tmp, env, _ = repo
    bad = tmp / "bad_params.yaml"
    bad.write_text((tmp / "params.yaml").read_text().replace("n_eval:", "n_evals:"))
    p = subprocess.run(
        [sys.executable, "-m", "flows.problems", "--params", str(bad)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    assert "bad_params.yaml:" in p.stderr and "problems.n_evals" in p.stderr and "unknown param" in p.stderr
    assert "Traceback" not in p.stderr


def test_label_stage_killed_and_resumed_gives_the_uninterrupted_artifact(repo, tmp_path):
    """SIGKILL the label stage after some chunks were paid for; the rerun finishes, pays only
    for the rest, and writes the same bytes as an uninterrupted run."""
    import re
    import signal
    import time

    src, env, _ = repo
    copies = {}
    for name in ("straight", "killed"):
        dst = tmp_path / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("mlflow.db", "checkpoints"))
        params = yaml.safe_load((dst / "params.yaml").read_text())
        params["label"].update(
            {"num_rollouts": 3, "chunk_size": 1, "max_new_tokens": 64}
        )  # many slow chunks: room to kill
        (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        copies[name] = dst
    cmd = [sys.executable, "-m", "flows.label"]
    straight = _run(cmd, copies["straight"], {**env, "PYTHONPATH": str(copies["straight"])})
    total = int(re.search(r"label: (\d+) rollouts run now, 0 prefixes resumed", straight).group(1))

    killed = copies["killed"]
    kenv = {**env, "PYTHONPATH": str(killed)}
    # its own process group: the kill takes the stage and its ephemeral Prefect API down together,
    # as a scheduler killing the job would (no orphaned server left running)
    p = subprocess.Popen(
        cmd, cwd=killed, env=kenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpt_dir = killed / "checkpoints/label"
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        files = list(ckpt_dir.rglob("*.partial.jsonl")) if ckpt_dir.exists() else []
        if files and len(files[0].read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert p.poll() is None, "label stage finished before it could be killed; make the job bigger"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert (
        not (killed / "data/labels/labels.jsonl").exists()
        or (killed / "data/labels/labels.jsonl").read_bytes() == (src / "data/labels/labels.jsonl").read_bytes()
    )

    out = _run(cmd, killed, kenv)
    m = re.search(r"label: (\d+) rollouts run now, (\d+) prefixes resumed", out)
    rerun, resumed = int(m.group(1)), int(m.group(2))
    assert resumed >= 4
    assert rerun == total - 3 * resumed  # nothing paid before the kill was paid again
    assert (killed / "data/labels/labels.jsonl").read_bytes() == (
        copies["straight"] / "data/labels/labels.jsonl"
    ).read_bytes()


def test_same_params_and_seed_give_byte_identical_data(repo, tmp_path_factory):
    """A second, fresh copy (no DVC cache, so nothing can be checked out instead of recomputed)
    regenerates problems, policy, generations, segments and labels: the data must be identical."""
    import hashlib

    src, env, _ = repo
    fresh = tmp_path_factory.mktemp("fresh")
    _copy_repo(fresh)
    shutil.copy2(src / "params.yaml", fresh / "params.yaml")
    fenv = {**_env(fresh)}
    _run(["dvc", "init", "--no-scm", "-q"], fresh, fenv)
    out = _run(["dvc", "repro", "label"], fresh, fenv)
    assert "Running stage 'label'" in out

    def digest(root: Path) -> dict[str, str]:
        files = [
            p
            for d in ("data/problems", "data/generations", "data/segments", "data/labels")
            for p in sorted((root / d).glob("*.jsonl"))
        ]
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    a, b = digest(src), digest(fresh)
    assert len(a) >= 6 and a == b


def _copy_with_gold(src: Path, tmp: Path) -> None:
    """A copy of the built tiny repo (no MLflow store or checkpoints) with gold ProcessBench rows."""
    shutil.copytree(src, tmp, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "checkpoints"))
    _gold_processbench(tmp)


def _gold_processbench(tmp: Path) -> None:
    """Replace the tiny world's synthetic ProcessBench (its 20-step policy never solves a problem,
    so balancing leaves no rows) with graded gold and one-number-off gold solutions."""
    from prmflow.evaluate.synthetic import balance, processbench_rows, split_subsets

    problems = [json.loads(x) for x in (tmp / "data/problems/eval.jsonl").read_text().splitlines()]
    texts = []
    for p in problems:
        lines = p["solution"].split("\n")
        k = len(p["problem"]) % (len(lines) - 1)  # a deterministic step to break
        bad = (
            lines[:k] + [lines[k].rsplit("=", 1)[0] + "= " + str(int(lines[k].rsplit("=", 1)[1]) + 1)] + lines[k + 1 :]
        )
        texts.append([p["solution"], "\n".join(bad)])
    rows, _ = processbench_rows(problems, texts, "gold")
    rows = split_subsets(balance(rows, 0.5, 0), 0.3, 0)
    assert {r["label"] == -1 for r in rows} == {True, False} and {r["subset"] for r in rows} == {"calib", "test"}
    (tmp / "data/eval/synthetic_processbench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_experiment_suite_smoke_writes_every_section(repo, tmp_path):
    """CI's reduced experiment suite: the report exists with all five sections, every reported
    number has its CI over the smoke seeds, each arm x seed is an MLflow run, and the DVC stage
    (kept out of the default `dvc repro`) is well-formed. Runs in a copy of the tiny repo."""
    tmp = tmp_path / "repo"
    _copy_with_gold(repo[0], tmp)
    env = _env(tmp)
    out = _run([sys.executable, "-m", "flows.experiments", "--smoke"], tmp, env)
    report = (tmp / "reports/REPORT.md").read_text()
    titles = [
        "1. Label efficiency",
        "2. Data efficiency",
        "3. Entropy-threshold ablation",
        "4. Active learning",
        "5. EDU-guided sampling",
    ]
    for t in titles:
        assert f"## {t}" in report and t in out
    assert report.count("**Verdict.**") == 5
    data = json.loads((tmp / "reports/experiments.json").read_text())
    assert [s["title"] for s in data["sections"]] == titles and data["smoke"] is True
    assert set(data["seconds"]) == {
        "label_efficiency",
        "data_efficiency",
        "threshold_ablation",
        "active_learning",
        "edu_sampling",
    } and all(v >= 0 for v in data["seconds"].values())
    assert "Wall time: " in report
    f1 = data["sections"][1]["numbers"]["edu@1"]["f1"]
    assert f1["n"] == 2 and f1["lo"] <= f1["mean"] <= f1["hi"]
    for png in ("label_efficiency", "data_efficiency", "threshold_f1", "threshold_cost"):
        assert (tmp / f"reports/experiments/{png}.png").stat().st_size > 1000
    import mlflow

    runs = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(
        [mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name("prmflow").experiment_id],
        "tags.experiment = 'data_efficiency'",
    )
    assert {(r.data.tags["arm"], r.data.tags["seed"]) for r in runs} >= {("edu@0.25", "0"), ("static@1", "1")}
    status = _run(["dvc", "status", "experiments/dvc.yaml"], tmp, env)
    assert "experiments" in status  # the stage parses, and has not been run by the default repro


def test_dvc_exp_run_reproduces_one_experiment_arm(repo, tmp_path):
    """`dvc exp run -S ...` on experiments/dvc.yaml runs a single arm (one threshold, one seed),
    records it as a DVC experiment with its params and metrics, and logs that arm x seed to MLflow
    tagged with the DVC experiment's name. Runs in a git-enabled copy of the tiny repo."""
    tmp = tmp_path / "repo"
    _copy_with_gold(repo[0], tmp)
    env = {
        **_env(tmp),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    (tmp / ".gitignore").write_text("mlflow.db\nmlartifacts/\ncheckpoints/\n__pycache__/\n")
    _run(["git", "init", "-q"], tmp, env)
    _run(["dvc", "config", "core.no_scm", "false"], tmp, env)
    _run(
        ["dvc", "commit", "-f", "-q", "dvc.yaml"], tmp, env
    )  # the gold ProcessBench rows become evaluate's recorded output
    _run(["git", "add", "-A"], tmp, env)
    _run(["git", "commit", "-qm", "tiny world"], tmp, env)
    _run(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "one-arm",
            "-s",
            "experiments/dvc.yaml:experiments",
            "-S",
            "experiments.only=[threshold_ablation]",
            "-S",
            "experiments.seeds=[3]",
            "-S",
            "experiments.thresholds=[1.0]",
            "-S",
            "experiments.ablation_problems=2",
        ],
        tmp,
        env,
    )
    data = json.loads((tmp / "reports/experiments.json").read_text())
    [section] = data["sections"]
    assert section["title"] == "3. Entropy-threshold ablation" and data["config"]["seeds"] == [3]
    assert set(section["numbers"]) >= {"fixed@1", "calibrated"} and set(data["seconds"]) == {"threshold_ablation"}
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=tmp, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "one-arm" in shown and json.loads(shown)  # the experiment, with its params and metrics
    assert "threshold_ablation" in shown  # its params override
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp_id = client.get_experiment_by_name("prmflow").experiment_id
    runs = client.search_runs([exp_id], "tags.experiment = 'threshold_ablation'")
    assert {(r.data.tags["arm"], r.data.tags["seed"]) for r in runs} == {("fixed@1", "3"), ("calibrated", "3")}
    [stage_run] = [
        r for r in client.search_runs([exp_id], "tags.stage = 'experiments'") if "experiment" not in r.data.tags
    ]
    assert stage_run.data.tags.get("dvc_exp_name") == "one-arm"
