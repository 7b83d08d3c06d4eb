"""`prmflow processbench` on a real (tiny, untrained) PRM directory and ProcessBench-format files."""

import json

import pytest

from prmflow.cli import main

ROWS = {
    "gsm8k": [
        {"id": "g0", "generator": "x", "problem": "What is $1+1$?", "steps": ["We add:\n\n$1 + 1 = 2$.", "So the answer is $\\boxed{2}$."],
         "final_answer_correct": True, "label": -1},
        {"id": "g1", "generator": "x", "problem": "What is 2·3?", "steps": ["2·3 = 5 — multiplication ✓", "Answer: 5"],
         "final_answer_correct": False, "label": 0},
    ],
    "math": [
        {"id": "m0", "generator": "y", "problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.",
         "steps": ["Common denominator: $\\frac{1+1}{2}$.\n\nThis is $\\frac{2}{2} = 1$.", "Answer $1$."],
         "final_answer_correct": True, "label": -1},
        {"id": "m1", "generator": "y", "problem": "Solve x+1=3.", "steps": ["x = 3 - 1 = 1", "x = 1"],
         "final_answer_correct": False, "label": 0},
    ],
}


@pytest.fixture(scope="module")
def prm_dir(tiny_model_dir, tmp_path_factory):
    from prmflow.prm import PRM, PRMConfig

    out = tmp_path_factory.mktemp("prm")
    PRM.from_backbone(str(tiny_model_dir), PRMConfig(num_heads=2)).save_pretrained(out)
    return out


def _write(tmp_path):
    paths = []
    for name, rows in ROWS.items():
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        paths.append(str(p))
    return paths


def test_fixed_threshold(prm_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["processbench", "--prm", str(prm_dir), "--data", *_write(tmp_path), "--threshold", "0.5",
                 "--out", str(out)]) == 0
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert {p["id"] for p in preds} == {"g0", "g1", "m0", "m1"}
    assert all(len(p["scores"]) == 2 and all(0 <= s <= 1 for s in p["scores"]) for p in preds)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["subsets"]) == {"gsm8k", "math"} and metrics["threshold"] == 0.5
    # the metrics can be recomputed from the written predictions
    from prmflow.evaluate.processbench import processbench_metrics

    gsm = [p for p in preds if p["subset"] == "gsm8k"]
    assert processbench_metrics([p["label"] for p in gsm], [p["pred"] for p in gsm]) == metrics["subsets"]["gsm8k"]
    assert "mean_f1" in capsys.readouterr().out


def test_calibrate_on_one_subset_applies_to_the_others(prm_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["processbench", "--prm", str(prm_dir), "--data", *_write(tmp_path), "--calibrate", "gsm8k",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["subsets"]) == {"math"}
    assert metrics["threshold_mode"] == "calibrated on gsm8k"


def test_bad_file_is_a_clear_error(prm_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "generator": "x", "problem": "p", "steps": ["s"], "final_answer_correct": false, "label": 3}\n')
    assert main(["processbench", "--prm", str(prm_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "label" in err and "Traceback" not in err
