"""`prmflow processbench` on a real (tiny, untrained) PRM directory and ProcessBench-format files."""

import json

import pytest

from prmflow.cli import main

ROWS = {
    "gsm8k": [
        {
            "id": "g0",
            "generator": "x",
            "problem": "What is $1+1$?",
            "steps": ["We add:\n\n$1 + 1 = 2$.", "So the answer is $\\boxed{2}$."],
            "final_answer_correct": True,
            "label": -1,
        },
        {
            "id": "g1",
            "generator": "x",
            "problem": "What is 2·3?",
            "steps": ["2·3 = 5 — multiplication ✓", "Answer: 5"],
            "final_answer_correct": False,
            "label": 0,
        },
    ],
    "math": [
        {
            "id": "m0",
            "generator": "y",
            "problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.",
            "steps": ["Common denominator: $\\frac{1+1}{2}$.\n\nThis is $\\frac{2}{2} = 1$.", "Answer $1$."],
            "final_answer_correct": True,
            "label": -1,
        },
        {
            "id": "m1",
            "generator": "y",
            "problem": "Solve x+1=3.",
            "steps": ["x = 3 - 1 = 1", "x = 1"],
            "final_answer_correct": False,
            "label": 0,
        },
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
    assert (
        main(
            [
                "processbench",
                "--prm",
                str(prm_dir),
                "--data",
                *_write(tmp_path),
                "--threshold",
                "0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
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
    assert (
        main(
            [
                "processbench",
                "--prm",
                str(prm_dir),
                "--data",
                *_write(tmp_path),
                "--calibrate",
                "gsm8k",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["subsets"]) == {"math"}
    assert metrics["threshold_mode"] == "calibrated on gsm8k"


def test_bad_file_is_a_clear_error(prm_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "generator": "x", "problem": "p", "steps": ["s"], "final_answer_correct": false, "label": 3}\n'
    )
    assert main(["processbench", "--prm", str(prm_dir), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "label" in err and "Traceback" not in err


LONG = "12 + 34 = 46 and then 46 * 2 = 92 so we have 92 marbles in total. " * 4  # many tokens on any tokenizer


def test_over_long_first_step_is_skipped_and_counted(prm_dir, tmp_path, capsys):
    from prmflow.prm import PRM

    tok = PRM.from_pretrained(prm_dir).tokenizer
    n_long = len(tok(LONG, add_special_tokens=False)["input_ids"])
    max_len = 40
    assert n_long + 1 > max_len  # the long step alone does not fit
    rows = [
        # first step alone exceeds max_len: skipped, not an abort
        {
            "id": "s0",
            "generator": "x",
            "problem": "p",
            "steps": [LONG, "The answer is 92"],
            "final_answer_correct": True,
            "label": -1,
        },
        # first step fits, the long second step does not: truncated to one step
        {
            "id": "t0",
            "generator": "x",
            "problem": "p",
            "steps": ["1 + 1 = 2", LONG],
            "final_answer_correct": False,
            "label": 1,
        },
        {
            "id": "k0",
            "generator": "x",
            "problem": "p",
            "steps": ["1 + 1 = 2", "The answer is 2"],
            "final_answer_correct": True,
            "label": -1,
        },
    ]
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert (
        main(
            [
                "processbench",
                "--prm",
                str(prm_dir),
                "--data",
                str(data),
                "--threshold",
                "0.5",
                "--max-len",
                str(max_len),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "skipped s0 (gsm8k)" in err and f"over max_len={max_len}" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["gsm8k"] == {"rows": 3, "scored": 2, "skipped_too_long": 1, "truncated": 1}
    assert metrics["counts"]["all"] == metrics["counts"]["gsm8k"]
    assert (metrics["skipped_too_long"], metrics["truncated"], metrics["max_len"]) == (1, 1, max_len)
    assert [s["id"] for s in metrics["skipped"]] == ["s0"]
    assert metrics["truncated_rows"] == 1 and metrics["truncated_steps"] == 1
    # the two scored rows: one erroneous (t0), one correct (k0); the skipped one is in no denominator
    assert (metrics["subsets"]["gsm8k"]["n_err"], metrics["subsets"]["gsm8k"]["n_correct"]) == (1, 1)
    preds = {p["id"]: p for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert set(preds) == {"t0", "k0"}
    # the truncated row predicts on the step it saw: its lost step repeats the kept score
    t0 = preds["t0"]["scores"]
    assert len(t0) == 2 and t0[1] == t0[0]
    assert preds["t0"]["pred"] in (0, -1)

    # without --max-len the PRM's own limit (512) fits every row: nothing skipped
    out2 = tmp_path / "out2"
    assert main(["processbench", "--prm", str(prm_dir), "--data", str(data), "--out", str(out2)]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert (m2["skipped_too_long"], m2["truncated"], m2["max_len"]) == (0, 0, 512)


def test_every_row_too_long_is_a_clear_error(prm_dir, tmp_path, capsys):
    data = tmp_path / "math.jsonl"
    data.write_text(
        json.dumps(
            {"id": "a", "generator": "x", "problem": "p", "steps": [LONG], "final_answer_correct": True, "label": -1}
        )
        + "\n"
    )
    assert (
        main(
            ["processbench", "--prm", str(prm_dir), "--data", str(data), "--max-len", "8", "--out", str(tmp_path / "o")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "every one of the 1 rows was skipped" in err and "Traceback" not in err


def test_length_sorted_scores_equal_the_prm_scores(prm_dir):
    """score_rows_by_length (sorted batches) == PRM.score_batch row by row (input-order batches)."""
    import pytest

    from prmflow.evaluate.scoring import prm_steps, score_rows_by_length
    from prmflow.prm import PRM
    from prmflow.synth import format_prompt

    prm = PRM.from_pretrained(prm_dir)
    rows = [{**r, "subset": name} for name, rs in ROWS.items() for r in rs]
    rows.append({"id": "long", "subset": "x", "problem": "p", "steps": ["a", LONG, "b"], "label": -1})
    scores, info = score_rows_by_length(prm, rows, batch_size=2, sep="\n\n")
    assert list(scores) == [r["id"] for r in rows] and info["skipped"] == [] and info["truncated_rows"] == 0
    for r in rows:
        ref = prm.score_batch([format_prompt(r["problem"])], [prm_steps(r["steps"], "\n\n")])[0].head_mean
        assert scores[r["id"]] == pytest.approx(ref, abs=1e-5)
