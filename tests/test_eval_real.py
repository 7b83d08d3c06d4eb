"""The evaluate stage on real data: named ProcessBench files, real-problem detection, verified Best-of-N."""

import json

import pytest
import yaml
from conftest import REPO

from prmflow.evaluate.bon import bon_accuracy
from prmflow.evaluate.verdict import answer_correct, problem_kind, verified_candidates
from prmflow.io import DataError
from prmflow.summaries import DegenerateRun

GSM = {
    "id": "gsm8k-1",
    "source": "gsm8k",
    "problem": "Tom has 3 bags of 6 apples. How many apples?",
    "answer": "18",
    "solution": "3 * 6 = 18",
}


# --------------------------------------------------------------------------- verdict


def test_problem_kind():
    assert problem_kind([]) == "synthetic"  # no rows: today's behaviour
    assert problem_kind([{"id": "a"}, {"id": "b", "source": "synthetic"}]) == "synthetic"
    assert problem_kind([GSM, {**GSM, "source": "math"}]) == "real"
    with pytest.raises(DataError, match=r"eval.jsonl:2: field 'source': eval problems mix synthetic and real"):
        problem_kind([{"id": "a"}, GSM], "eval.jsonl")


@pytest.mark.parametrize(
    "text",
    [
        "so 3 * 6 = 18\n#### 18",
        "Thus \\boxed{18}.",
        "The answer is $18$.",
        "The answer is 18 apples.",
        "The answer is 18",
        "The answer is 18.0",
        "#### 18.00",
    ],
)
def test_answer_correct_on_real_formats(text):
    assert answer_correct(GSM, text)


@pytest.mark.parametrize(
    "text", ["The answer is 17", "\\boxed{20}", "no final answer here", "#### ", "The answer is 18\n#### 19"]
)  # '####' wins over an earlier line
def test_answer_wrong_on_real_formats(text):
    assert not answer_correct(GSM, text)


def test_synthetic_rows_keep_the_exact_checker():
    row = {
        "id": "s",
        "problem": "Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?",
        "answer": "37",
        "solution": "23 + 14 = 37\nThe answer is 37",
    }
    assert answer_correct(row, "23 + 14 = 37\nThe answer is 37")
    assert not answer_correct(row, "#### 37")  # the synthetic world's only answer format is "The answer is N"


# --------------------------------------------------------------------------- verified Best-of-N


def test_best_of_n_on_real_text_votes_by_verified_answer():
    texts = [
        "3 * 6 = 20\nThe answer is 20",
        "\\boxed{18}",
        "3 * 6 = 20\n#### 20",
        "So $18$ apples.\nThe answer is $18$.",
        "The answer is 18.0",
        "I don't know",
    ]
    # PRM step scores (lines as steps): min 0.9 / 0.3 / 0.8 / 0.4 / 0.2 / 0.95; last 0.9 / 0.3 / 0.8 / 0.6 / 0.2 / 0.95
    scores = [[0.9, 0.9], [0.3], [0.9, 0.8], [0.4, 0.6], [0.2], [0.95]]
    cands = verified_candidates(GSM, texts, scores)
    assert [c["answer"] for c in cands] == ["20", "18", "20", "18", "18.0", None]
    assert [c["correct"] for c in cands] == [False, True, False, True, True, False]
    assert [c["answer_class"] for c in cands] == [0, 1, 0, 1, 1, None]  # "18.0" joins "18" by math-verify
    acc = bon_accuracy(
        [{"id": GSM["id"], "candidates": cands}],
        ns=[2, 4, 6],
        methods=["first", "majority_vote", "weighted_vote", "prm_min", "prm_last", "oracle"],
    )["accuracy"]
    assert acc["first"] == [0.0, 0.0, 0.0]
    assert acc["oracle"] == [1.0, 1.0, 1.0]
    # N=2: 20 x1 vs 18 x1, tie -> 20 (first seen); N=4: 2-2 tie -> 20; N=6: 18 x3 (18, $18$, 18.0) vs 20 x2
    assert acc["majority_vote"] == [0.0, 0.0, 1.0]
    # weighted (min): N=2 20:.9 vs 18:.3; N=4 20:1.7 vs 18:.7; N=6 20:1.7 vs 18:.9 -> always 20
    assert acc["weighted_vote"] == [0.0, 0.0, 0.0]
    # prm_min picks c0 (.9) then c0, then c5 (.95, no answer); prm_last likewise
    assert acc["prm_min"] == [0.0, 0.0, 0.0] and acc["prm_last"] == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- the stage (Prefect flow)


PB_ROWS = {
    "gsm8k": [
        {
            "id": "g0",
            "generator": "x",
            "problem": "What is 1+1?",
            "steps": ["1 + 1 = 2.", "The answer is 2."],
            "final_answer_correct": True,
            "label": -1,
        },
        {
            "id": "g1",
            "generator": "x",
            "problem": "What is 2*3?",
            "steps": ["2 * 3 = 5.", "The answer is 5."],
            "final_answer_correct": False,
            "label": 0,
        },
        {
            "id": "g2",
            "generator": "x",
            "problem": "What is 2+2?",
            "steps": ["2 + 2 = 4.", "The answer is 4."],
            "final_answer_correct": True,
            "label": -1,
        },
        {
            "id": "g3",
            "generator": "x",
            "problem": "What is 3*3?",
            "steps": ["3 * 3 = 9.", "9 + 1 = 11.", "So 11."],
            "final_answer_correct": False,
            "label": 1,
        },
    ],
    "math": [
        {
            "id": "m0",
            "generator": "y",
            "problem": "Solve x+1=3.",
            "steps": ["x = 3 - 1 = 1", "x = 1"],
            "final_answer_correct": False,
            "label": 0,
        },
        # too long for processbench_max_len below: skipped and counted, not an abort
        {
            "id": "m1",
            "generator": "y",
            "problem": "Compute 2^10.",
            "steps": ["2 * 2 * 2 * 2 * 2 = 32 " * 12, "1024"],
            "final_answer_correct": True,
            "label": -1,
        },
        {
            "id": "m2",
            "generator": "y",
            "problem": "Compute 1/2+1/2.",
            "steps": ["1/2 + 1/2 = 1", "1"],
            "final_answer_correct": True,
            "label": -1,
        },
    ],
}


@pytest.fixture(scope="module")
def stage(tiny_model_dir, tmp_path_factory):
    """A PRM dir, ProcessBench files, real (GSM8K-style) eval problems and a params builder."""
    from prmflow import io
    from prmflow.prm import PRM, PRMConfig

    root = tmp_path_factory.mktemp("eval_real")
    PRM.from_backbone(str(tiny_model_dir), PRMConfig(num_heads=2)).save_pretrained(root / "prm")
    files = {}
    for name, rows in PB_ROWS.items():
        files[name] = str(root / f"{name}.jsonl")
        io.write_jsonl(files[name], rows)
    io.write_jsonl(root / "eval.jsonl", [{**GSM, "id": f"gsm8k-{i}", "answer": str(18 + i)} for i in range(3)])

    def params(name, **evaluate):
        p = yaml.safe_load((REPO / "params.yaml").read_text())
        p["evaluate"].update(
            {
                "prm": str(root / "prm"),
                "policy": str(tiny_model_dir),
                "bon_problems": 2,
                "bon_max_n": 2,
                "pedu_problems": 0,
                "max_new_tokens": 8,
                "batch_size": 8,
                "processbench_files": files,
                "processbench_max_len": 48,
                **evaluate,
            }
        )
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(p))
        return str(path)

    return root, params


@pytest.mark.slow
def test_stage_on_real_problems(stage, mlflow_tmp, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    from flows.evaluate import evaluate_flow

    root, params = stage
    monkeypatch.chdir(root)
    kw = {"problems_path": str(root / "eval.jsonl")}
    with prefect_test_harness(server_startup_timeout=120):  # the shared machine can be slow to start it
        # a random tiny policy solves nothing: the Best-of-N oracle is 0 -> the stage fails loudly
        with pytest.raises(
            DegenerateRun, match=r"evaluate: degenerate real-data run: Best-of-N oracle \(pass@2\) is 0 on 2 problems"
        ):
            evaluate_flow(params=params("strict"), data_dir=str(root / "d0"), reports_dir=str(root / "r0"), **kw)
        # 0 evaluation rows overall (no files, no Best-of-N problems): fails instead of reporting None
        with pytest.raises(DataError, match="the evaluate stage has 0 evaluation rows"):
            evaluate_flow(
                params=params("empty", processbench_files={}, bon_problems=0),
                data_dir=str(root / "d1"),
                reports_dir=str(root / "r1"),
                **kw,
            )
        out = evaluate_flow(
            params=params("allowed", allow_zero_oracle=True, pedu_problems=1, pedu_n=2, pedu_seeds=1),
            data_dir=str(root / "d2"),
            reports_dir=str(root / "r2"),
            **kw,
        )

    rep = root / "r2" / "eval"
    # no synthetic ProcessBench on real problems; its parts are listed as skipped with a reason
    assert not (rep / "synthetic_processbench.json").exists()
    assert not (root / "d2" / "synthetic_processbench.jsonl").exists()
    skipped = json.loads((rep / "skipped.json").read_text())["skipped"]
    assert (
        set(skipped) == {"synthetic_processbench", "entropy", "likelihood"}
        and "checker" in skipped["synthetic_processbench"]
    )
    assert out["skipped"] == skipped

    files = json.loads((rep / "processbench_files.json").read_text())
    assert files["data"]["counts"]["math"] == {"rows": 3, "scored": 2, "skipped_too_long": 1, "truncated": 0}
    assert files["data"]["counts"]["all"]["skipped_too_long"] == 1 and [s["id"] for s in files["data"]["skipped"]] == [
        "m1"
    ]
    # prm_fixed and all_ones see every scored row of both files; all_ones never flags an error
    assert set(files["prm_fixed"]["subsets"]) == {"gsm8k", "math"}
    gsm = files["all_ones"]["subsets"]["gsm8k"]
    assert (gsm["n_err"], gsm["n_correct"], gsm["error_acc"], gsm["correct_acc"], gsm["f1"]) == (2, 2, 0.0, 1.0, 0.0)
    # the split threshold: fitted on round(0.3 * class size) rows of each file, reported on the others
    assert files["prm"]["calib_rows"] > 0 or files["prm"]["threshold_mode"].startswith("fixed")
    preds = [json.loads(x) for x in (rep / "processbench_files_predictions.jsonl").read_text().splitlines()]
    assert {p["subset"] for p in preds} <= {"gsm8k", "math"} and "m1" not in {p["id"] for p in preds}

    bon = json.loads((rep / "bon.json").read_text())
    assert bon["ns"] == [1, 2] and bon["accuracy"]["oracle"] == [0.0, 0.0] and "oracle" in bon["warnings"][0]
    assert bon["candidate_solve_rate"] == 0.0 and "math-verify" in bon["verdict"]
    assert (rep / "bon.png").read_bytes()[:4] == b"\x89PNG"
    # P-EDU ran on the problem after the Best-of-N ones, with the verified verdict
    pedu = json.loads((rep / "edu_sampling.json").read_text())
    assert (
        pedu["problems"] == 1 and "math-verify" in pedu["verdict"] and pedu["standard"]["acc_prm"]["per_seed"] == [0.0]
    )
    cands = [json.loads(x) for x in (root / "d2" / "bon_candidates.jsonl").read_text().splitlines()]
    assert len(cands) == 2 and all(len(p["candidates"]) == 2 for p in cands)
    assert all(
        {"text", "answer", "correct", "answer_class", "step_scores"} <= set(c) for p in cands for c in p["candidates"]
    )


def test_bad_named_file_is_a_clear_error(stage, tmp_path):
    from prmflow.config import EvaluateConfig
    from tasks.evaluate import load_named_processbench

    bad = tmp_path / "omnimath.jsonl"
    bad.write_text(
        json.dumps(
            {"id": "o", "generator": "z", "problem": "p", "steps": ["s"], "final_answer_correct": True, "label": 1}
        )
        + "\n"
    )
    with pytest.raises(DataError, match=r"omnimath.jsonl:1: field 'label': 1 is out of range"):
        load_named_processbench(EvaluateConfig(processbench_files={"omnimath": str(bad)}))
    root, _ = stage
    dup = {"gsm8k": str(root / "gsm8k.jsonl"), "again": str(root / "gsm8k.jsonl")}
    with pytest.raises(ValueError, match="id 'g0' is in both"):
        load_named_processbench(EvaluateConfig(processbench_files=dup))


def test_named_file_with_no_usable_row_fails(stage, tmp_path, monkeypatch):
    import tasks.evaluate as fe
    from prmflow.config import EvaluateConfig

    root, _ = stage
    long_only = tmp_path / "olympiadbench.jsonl"
    long_only.write_text(json.dumps(PB_ROWS["math"][1]) + "\n")
    monkeypatch.setattr(fe, "prm_scores_by_length", fe.prm_scores_by_length.fn)  # the task body, no Prefect run
    cfg = EvaluateConfig(
        prm=str(root / "prm"),
        processbench_files={"gsm8k": str(root / "gsm8k.jsonl"), "olympiadbench": str(long_only)},
        processbench_max_len=48,
        processbench_calibrate="fixed",
    )
    with pytest.raises(DataError, match=r"olympiadbench.jsonl: field 'steps': 0 usable rows: all 1 have a first step"):
        fe.named_processbench(cfg, tmp_path / "out")


def test_named_files_calibrate_on_one_subset(stage, tmp_path, monkeypatch):
    import tasks.evaluate as fe
    from prmflow.config import EvaluateConfig
    from prmflow.evaluate.processbench import calibrate_threshold

    root, _ = stage
    monkeypatch.setattr(fe, "prm_scores_by_length", fe.prm_scores_by_length.fn)
    files = {"gsm8k": str(root / "gsm8k.jsonl"), "math": str(root / "math.jsonl")}
    cfg = EvaluateConfig(
        prm=str(root / "prm"), processbench_files=files, processbench_max_len=48, processbench_calibrate="gsm8k"
    )
    report = fe.named_processbench(cfg, tmp_path / "out")
    assert set(report["prm"]["subsets"]) == {"math"} and report["prm"]["threshold_mode"] == "calibrated on gsm8k"
    preds = {
        p["id"]: p
        for p in map(json.loads, (tmp_path / "out" / "processbench_files_predictions.jsonl").read_text().splitlines())
    }
    assert set(preds) == {"m0", "m2"}  # m1 skipped; gsm8k rows only fit the threshold
    # the threshold is the F1-best one on gsm8k's own scores
    scores, _ = fe.prm_scores_by_length(cfg, [{**r, "subset": "gsm8k"} for r in PB_ROWS["gsm8k"]])
    thr, _ = calibrate_threshold([r["label"] for r in PB_ROWS["gsm8k"]], [scores[r["id"]] for r in PB_ROWS["gsm8k"]])
    assert report["prm"]["threshold"] == thr


def test_config_checks_the_new_fields():
    from prmflow.config import EvaluateConfig

    assert EvaluateConfig().processbench_files == {} and EvaluateConfig().processbench_calibrate == "split"
    with pytest.raises(ValueError, match="processbench_calibrate must be one of split, fixed, gsm8k"):
        EvaluateConfig(processbench_files={"gsm8k": "a.jsonl"}, processbench_calibrate="math")
    with pytest.raises(ValueError, match="leaves no other file"):
        EvaluateConfig(processbench_files={"gsm8k": "a.jsonl"}, processbench_calibrate="gsm8k")
    with pytest.raises(ValueError, match="processbench_max_len must be >= 0"):
        EvaluateConfig(processbench_max_len=-1)
