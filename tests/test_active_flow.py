"""Stage `active` end to end on a tiny world: Prefect flow, nested MLflow runs, summary and plot."""

import json

import pytest
import yaml
from conftest import REPO
from test_active_loop import PROBLEMS, _evals, _pool

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


TINY_ACTIVE = {
    "seeds": [0, 1],
    "num_heads": 2,
    "max_len": 128,
    "pool_size": 0,
    "batch_size": 4,
    "micro_batch_size": 4,
    "eval_every": 1,
    "grad_steps": 1,
    "p": 0.6,
    "std_threshold": 0.05,
}
"""the active section on the tiny pool: 2 seeds, 2 heads, rounds of 4 (tests/test_ray.py runs it too)"""


def test_active_flow(tmp_path, mlflow_tmp, tiny_model_dir, monkeypatch):
    from mlflow.tracking import MlflowClient
    from prefect.testing.utilities import prefect_test_harness

    from flows.active import active_flow
    from prmflow import io
    from prmflow.active import final_f1

    monkeypatch.chdir(tmp_path)
    io.write_jsonl(tmp_path / "segments.jsonl", _pool())
    io.write_jsonl(tmp_path / "pool.jsonl", PROBLEMS.values())
    io.write_jsonl(tmp_path / "eval.jsonl", _evals())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["active"].update({"backbone": str(tiny_model_dir), **TINY_ACTIVE})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    paths = {
        "segments_path": str(tmp_path / "segments.jsonl"),
        "problems_path": str(tmp_path / "pool.jsonl"),
        "state_root": str(tmp_path / "ckpt"),
    }
    with prefect_test_harness():
        summary = active_flow(
            params=str(tmp_path / "params.yaml"),
            eval_path=str(tmp_path / "eval.jsonl"),
            reports_dir=str(tmp_path / "reports"),
            **paths,
        )
        # an empty eval file (a tiny policy can leave stage evaluate nothing): runs, no F1 anywhere
        (tmp_path / "empty.jsonl").write_text("")
        params["active"].update({"seeds": [0], "strategies": ["full", "active"]})
        (tmp_path / "params2.yaml").write_text(yaml.safe_dump(params))
        empty = active_flow(
            params=str(tmp_path / "params2.yaml"),
            eval_path=str(tmp_path / "empty.jsonl"),
            reports_dir=str(tmp_path / "reports2"),
            **paths,
        )
    assert empty["full"]["final_f1"]["mean"] is None and empty["active"]["labels_spent"]["mean"] > 0
    assert (tmp_path / "reports2" / "active" / "curve.png").is_file()

    out = tmp_path / "reports" / "active"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["full"]["labels_spent"] == {"mean": 12.0, "std": 0.0}
    assert set(summary["active"]["match"]) == {"0.95", "1.0"} and summary["data"]["rounds"] == 3
    # params.yaml caches the frozen backbone's head inputs: its 12 distinct solutions (the eval rows
    # are the pool's) pass through the backbone once for all 6 runs, not once per run and round
    assert summary["data"]["backbone_passes"] == 12
    curves = json.loads((out / "curves.json").read_text())
    for seed in ("0", "1"):  # random spends exactly what active spent, round by round
        sel = {s: [h["selected"] for h in curves[s][seed] if h["round"] > 0] for s in ("active", "random")}
        assert sel["active"] == sel["random"]
        assert [h["round"] for h in curves["full"][seed] if "f1" in h] == [0, 1, 2, 3]
        # the paired block: per seed, differences of the final (trailing-mean) F1s at active's budget
        final = {
            s: final_f1([h for h in curves[s][seed] if "f1" in h], params["active"]["final_window"])
            for s in ("active", "random", "full")
        }
        assert summary["paired"]["active_minus_random"]["per_seed"][seed] == pytest.approx(
            final["active"] - final["random"]
        )
        assert summary["paired"]["active_minus_full"]["per_seed"][seed] == pytest.approx(
            final["active"] - final["full"]
        )
        # the plateau block: the raw F1 differences over the evaluations after half the rounds (2 and 3 of 3)
        f1 = {
            s: {h["round"]: h["f1"] for h in curves[s][seed] if h.get("f1") is not None} for s in ("active", "random")
        }
        late = [t for t in (2, 3) if t in f1["active"] and t in f1["random"]]
        if late:
            assert summary["plateau"]["active_minus_random"]["per_seed"][seed] == pytest.approx(
                sum(f1["active"][t] - f1["random"][t] for t in late) / len(late)
            )
        labels = curves["active"][seed][-1]["labels_spent"]
        assert summary["paired"]["label_fraction"]["per_seed"][seed] == pytest.approx(labels / 12)
    assert summary["paired"]["label_fraction"]["n"] == 2 and empty["paired"]["active_minus_random"] is None

    client = MlflowClient(mlflow_tmp)
    runs = client.search_runs([client.get_experiment_by_name("prmflow").experiment_id], order_by=["start_time ASC"])
    stage = [r for r in runs if r.data.tags.get("stage") == "active"][:1]  # the first flow's
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage[0].info.run_id]
    assert len(nested) == 6
    assert {(r.data.tags["strategy"], r.data.tags["seed"]) for r in nested} == {
        (s, str(k)) for s in ("full", "active", "random") for k in (0, 1)
    }
    assert all(r.data.tags["mlflow.parentRunId"] == stage[0].info.run_id for r in nested)
    full0 = next(r for r in nested if r.data.tags["strategy"] == "full" and r.data.tags["seed"] == "0")
    history = client.get_metric_history(full0.info.run_id, "active/labels_spent")
    assert sorted((m.step, m.value) for m in history)[-1] == (3, 12.0)
    assert "active/f1_at_labels" in full0.data.metrics and "active/full/final_f1_mean" in stage[0].data.metrics
    assert stage[0].data.metrics["active/paired/label_fraction"] == pytest.approx(
        summary["paired"]["label_fraction"]["mean"]
    )
    assert stage[0].data.metrics["active/plateau/active_minus_random"] == pytest.approx(
        summary["plateau"]["active_minus_random"]["mean"]
    )
