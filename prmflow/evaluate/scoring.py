"""Scoring ProcessBench-style rows with a PRM: the glue between `prmflow.prm` and the metrics.

ProcessBench steps are paragraphs or lines without their separators, while prmflow PRMs are
trained on steps that carry their own whitespace (a step ends with its "\\n"). `prm_steps`
restores the separator on every step but the last, so the PRM reads the text as it was written.

    >>> prm_steps(["1 + 1 = 2", "The answer is 2"])
    ['1 + 1 = 2\\n', 'The answer is 2']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from prmflow.synth import format_prompt


class StepScorer(Protocol):
    def score_batch(
        self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]], batch_size: int = 16
    ) -> list[Any]: ...


def prm_steps(steps: Sequence[str], sep: str = "\n") -> list[str]:
    return [s + sep for s in steps[:-1]] + list(steps[-1:])


def score_rows(
    prm: StepScorer, rows: Sequence[Mapping[str, Any]], batch_size: int = 16, sep: str = "\n"
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """PRM scores per row id (one per step), plus truncation counts.

    Steps cut for context (from the end) repeat the last kept score, so every step has a score;
    `truncated_rows` / `truncated_steps` say how often that happened.
    """
    prompts = [format_prompt(r["problem"]) for r in rows]
    out = prm.score_batch(prompts, [prm_steps(r["steps"], sep) for r in rows], batch_size=batch_size)
    scores = {r["id"]: s.head_mean_padded() for r, s in zip(rows, out, strict=True)}
    stds = {r["id"]: list(s.head_std) for r, s in zip(rows, out, strict=True)}
    info = {
        "truncated_rows": sum(s.n_truncated_steps > 0 for s in out),
        "truncated_steps": sum(s.n_truncated_steps for s in out),
        "head_std": stds,
    }
    return scores, info


def score_rows_by_length(
    prm: Any,
    rows: Sequence[Mapping[str, Any]],
    batch_size: int = 16,
    sep: str = "\n",
    max_len: int | None = None,
    progress: bool = False,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """`score_rows` for long real rows: length-sorted batches, a max_len of your choice, and rows
    that cannot be scored skipped and reported instead of aborting the run.

    `prm` is a `prmflow.prm.PRM`; each row is tokenized exactly as the PRM trains and scores
    (`prm.tokenize`, steps with `sep` restored by `prm_steps`) at `max_len` (None = the PRM's own
    `cfg.max_len`). Rows are batched in order of token length (less padding); the scores do not
    depend on the order beyond float rounding.

    - A row whose first step alone (with its separator) exceeds max_len is skipped: it gets no
      scores, and `info["skipped"]` lists `{"id", "subset", "reason"}` for it.
    - A row that loses later steps to max_len is scored on the steps it kept, and each lost step
      repeats the last kept score (`StepScores.head_mean_padded`). The prediction "first step
      below the threshold" is then exactly the prediction on the steps the PRM saw (a repeated
      score can never be the first one below the threshold), so a truncated row whose first error
      lies in the lost steps is predicted correct (-1): counted in `truncated_rows`, not hidden.

    Returns (scores per kept row id, info with `truncated_rows`, `truncated_steps`,
    `truncated_ids`, `skipped` and `head_std` per id).
    """
    import torch

    from prmflow.prm import StepScores

    limit = max_len or prm.cfg.max_len
    kept, skipped = [], []
    for r in rows:
        try:
            kept.append((r, prm.tokenize(format_prompt(r["problem"]), prm_steps(r["steps"], sep), limit)))
        except ValueError as e:  # tokenize_steps: the first step alone does not fit
            skipped.append({"id": r["id"], "subset": r.get("subset", ""), "reason": str(e)})
    kept.sort(key=lambda rx: len(rx[1].input_ids))  # stable: equal lengths keep the input order
    out: dict[str, StepScores] = {}
    was_training = prm.training
    prm.eval()
    bar = tqdm(total=len(kept), desc="PRM scoring", unit="row", disable=not progress)
    try:
        with torch.no_grad():
            for i in range(0, len(kept), batch_size):
                chunk = kept[i : i + batch_size]
                batch = [x for _, x in chunk]
                ids, attn, steps, _ = prm.inputs(batch)
                probs = torch.sigmoid(prm(ids, attn, steps).float()).cpu()  # (E, B, T)
                for b, (r, x) in enumerate(chunk):
                    per_head = probs[:, b, x.label_positions]  # (E, kept steps)
                    out[r["id"]] = StepScores(
                        per_head.mean(0).tolist(),
                        per_head.std(0, correction=0).tolist(),
                        per_head.tolist(),
                        x.n_truncated_steps,
                    )
                bar.update(len(chunk))
    finally:
        bar.close()
        prm.train(was_training)
    order = [r["id"] for r in rows if r["id"] in out]  # input order in the returned mappings
    info = {
        "truncated_rows": sum(out[i].n_truncated_steps > 0 for i in order),
        "truncated_steps": sum(out[i].n_truncated_steps for i in order),
        "truncated_ids": [i for i in order if out[i].n_truncated_steps > 0],
        "skipped": skipped,
        "max_len": limit,
        "head_std": {i: list(out[i].head_std) for i in order},
    }
    return {i: out[i].head_mean_padded() for i in order}, info


def usable_counts(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per subset (and `all`): `rows` read, `scored`, `skipped_too_long`, `truncated`.

    >>> rows = [{"id": "a", "subset": "gsm8k"}, {"id": "b", "subset": "gsm8k"}, {"id": "c", "subset": "math"}]
    >>> info = {"skipped": [{"id": "b", "subset": "gsm8k", "reason": "..."}], "truncated_ids": ["c"]}
    >>> usable_counts(rows, info)["gsm8k"], usable_counts(rows, info)["all"]
    ({'rows': 2, 'scored': 1, 'skipped_too_long': 1, 'truncated': 0}, {'rows': 3, 'scored': 2, 'skipped_too_long': 1, 'truncated': 1})
    """
    skipped = {s["id"] for s in info["skipped"]}
    truncated = set(info["truncated_ids"])
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        for name in (r["subset"], "all"):
            c = out.setdefault(name, {"rows": 0, "scored": 0, "skipped_too_long": 0, "truncated": 0})
            c["rows"] += 1
            c["skipped_too_long"] += r["id"] in skipped
            c["scored"] += r["id"] not in skipped
            c["truncated"] += r["id"] in truncated
    out["all"] = out.pop("all", {"rows": 0, "scored": 0, "skipped_too_long": 0, "truncated": 0})  # last
    return out


def assess(
    rows: Sequence[Mapping[str, Any]],
    scores: Mapping[str, Sequence[float]],
    *,
    threshold: float | None = None,
    calibrate_on: str | None = None,
) -> dict[str, Any]:
    """ProcessBench metrics at a fixed `threshold`, or at the F1-maximising threshold fitted on
    the rows of subset `calibrate_on` and then applied to the OTHER subsets (exactly one of the two).

    Returns `evaluate_subsets`' result plus `threshold_mode` ("fixed" or "calibrated on <subset>")
    and, when calibrated, `calibration_f1`.
    """
    from prmflow.evaluate.processbench import calibrate_threshold, evaluate_subsets

    if (threshold is None) == (calibrate_on is None):
        raise ValueError("give exactly one of threshold and calibrate_on")
    if calibrate_on is None:
        assert threshold is not None  # exactly one of the two, checked above
        return {**evaluate_subsets(rows, scores, threshold), "threshold_mode": "fixed"}
    calib = [r for r in rows if r["subset"] == calibrate_on]
    rest = [r for r in rows if r["subset"] != calibrate_on]
    if not calib:
        raise ValueError(
            f"no rows in calibration subset '{calibrate_on}' (subsets: {sorted({r['subset'] for r in rows})})"
        )
    if not rest:
        raise ValueError(f"every row is in the calibration subset '{calibrate_on}': nothing left to evaluate")
    thr, f1 = calibrate_threshold([r["label"] for r in calib], [scores[r["id"]] for r in calib])
    return {
        **evaluate_subsets(rest, scores, thr),
        "threshold_mode": f"calibrated on {calibrate_on}",
        "calibration_f1": f1,
    }
