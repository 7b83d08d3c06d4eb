"""`prmflow` command line.

    prmflow processbench --prm DIR --data FILE.jsonl [FILE2.jsonl ...]
                         [--threshold X | --calibrate SUBSET] [--max-len N] --out DIR

Scores ProcessBench-format rows (QwenLM/ProcessBench: `id`, `generator`, `problem`, `steps`,
`final_answer_correct`, `label`; one subset per file, named by its stem) with a prmflow PRM and
writes `predictions.jsonl` (`id`, `subset`, `pred`, `label`, `scores`) and `metrics.json`
(per subset `error_acc`, `correct_acc`, `f1`, plus `mean_f1` and the threshold used). With
`--calibrate SUBSET` the F1-maximising threshold is fitted on that subset and applied to the
others; otherwise the fixed `--threshold` (default 0.5) is used on every subset.

Long rows (`--max-len`, default the PRM's own max_len): a row whose first step alone exceeds it
cannot be scored; it is reported, skipped (left out of that subset's metrics) and counted in
metrics.json under `counts` (`skipped_too_long` per subset and `all`) and `skipped` (id, subset,
reason). A row that loses later steps is scored on the steps the PRM saw (ProcessBench's
reference scripts do the same by truncating): it predicts the first of those steps below the
threshold, or -1, and is counted as `truncated`. Rows are scored in length-sorted batches.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def processbench(args: argparse.Namespace) -> int:
    from prmflow import io
    from prmflow.evaluate.processbench import load_processbench
    from prmflow.evaluate.scoring import assess, score_rows_by_length, usable_counts
    from prmflow.prm import PRM

    rows = [r for path in args.data for r in load_processbench(path)]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"ids repeat across data files: {dup} (ids must be unique over all files)")
    if not Path(args.prm).is_dir():
        raise FileNotFoundError(f"--prm {args.prm}: no such directory")
    if args.max_len is not None and args.max_len < 2:
        raise ValueError(f"--max-len must be >= 2 tokens, got {args.max_len}")
    prm = PRM.from_pretrained(args.prm)
    scores, info = score_rows_by_length(
        prm, rows, batch_size=args.batch_size, sep=args.step_sep, max_len=args.max_len, progress=True
    )
    for s in info["skipped"]:
        print(f"skipped {s['id']} ({s['subset']}): {s['reason']}", file=sys.stderr)
    counts = usable_counts(rows, info)
    scored = [r for r in rows if r["id"] in scores]
    if not scored:
        raise ValueError(
            f"every one of the {len(rows)} rows was skipped: its first step exceeds max_len="
            f"{info['max_len']} (raise --max-len)"
        )
    if args.calibrate:
        result = assess(scored, scores, calibrate_on=args.calibrate)
    else:
        result = assess(scored, scores, threshold=args.threshold if args.threshold is not None else 0.5)
    out = Path(args.out)
    io.write_jsonl(
        out / "predictions.jsonl",
        [
            {"id": p["id"], "subset": p["subset"], "pred": p["pred"], "label": p["label"], "scores": p["scores"]}
            for p in result["predictions"]
        ],
    )
    metrics = {k: v for k, v in result.items() if k != "predictions"}
    metrics["truncated_rows"], metrics["truncated_steps"] = info["truncated_rows"], info["truncated_steps"]
    metrics.update(
        max_len=info["max_len"],
        counts=counts,
        skipped=info["skipped"],
        skipped_too_long=counts["all"]["skipped_too_long"],
        truncated=counts["all"]["truncated"],
    )
    io.write_json(out / "metrics.json", metrics)
    for name, m in result["subsets"].items():
        c = counts[name]
        print(
            f"{name}: error_acc {m['error_acc']}  correct_acc {m['correct_acc']}  f1 {m['f1']}  "
            f"({c['scored']} rows scored, {c['skipped_too_long']} skipped as too long, {c['truncated']} truncated)"
        )
    print(
        f"mean_f1 {result['mean_f1']}  threshold {result['threshold']:.4f} ({result['threshold_mode']})  "
        f"skipped_too_long {counts['all']['skipped_too_long']}  truncated {counts['all']['truncated']}  "
        f"(max_len {info['max_len']}) -> {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prmflow", description="prmflow command line")
    sub = parser.add_subparsers(dest="command", required=True)
    pb = sub.add_parser("processbench", help="score ProcessBench-format files with a PRM")
    pb.add_argument("--prm", required=True, help="PRM directory (written by the train stage)")
    pb.add_argument("--data", required=True, nargs="+", help="ProcessBench JSONL file(s); subset = file stem")
    group = pb.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="fixed threshold (default 0.5)")
    group.add_argument("--calibrate", metavar="SUBSET", help="fit the threshold on SUBSET, apply it to the others")
    pb.add_argument("--out", required=True, help="output directory")
    pb.add_argument("--batch-size", type=int, default=16)
    pb.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="token limit per row (default: the PRM's max_len); "
        "rows whose first step alone exceeds it are skipped and counted, later steps past it are cut",
    )
    pb.add_argument(
        "--step-sep",
        default="\n\n",
        help="separator restored after each step but the last (ProcessBench steps are paragraphs; default: blank line)",
    )
    args = parser.parse_args(argv)
    try:
        return processbench(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
