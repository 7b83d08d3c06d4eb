"""Tasks of stage `evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prmflow import io, plots
from prmflow.config import EvaluateConfig
from prmflow.evaluate import report
from prmflow.evaluate.baselines import entropy_step_scores, likelihood_step_scores
from prmflow.evaluate.bon import answer_classes, bon_accuracy
from prmflow.evaluate.processbench import f1_curve, load_processbench
from prmflow.evaluate.scoring import score_rows, score_rows_by_length, usable_counts
from prmflow.evaluate.synthetic import balance, processbench_rows, split_subsets
from prmflow.evaluate.verdict import answer_correct, answers_equal, final_answer, verified_candidates
from prmflow.io import DataError
from prmflow.policy import load_backend
from prmflow.policy.base import Completion, SamplingConfig
from prmflow.prm import PRM
from prmflow.prompts import Prompt, PromptConfig, build_prompt
from prmflow.synth import extract_answer, format_prompt, split_steps, step_spans
from tasks.generate import common_stop, problem_seed


def policy_prompt(
    problem: dict[str, Any],
    prompt_cfg: PromptConfig = PromptConfig(),
    tokenizer: Any = None,
    examples: Sequence[dict[str, Any]] = (),
) -> Prompt:
    """The prompt the policy completes for one problem row (the one place the stage builds it;
    the PRM always reads `format_prompt(problem)`, as in training)."""
    return build_prompt(problem["problem"], prompt_cfg, tokenizer, examples)


@task(cache_policy=NO_CACHE, tags=["policy"])
def sample(
    cfg: EvaluateConfig,
    problems: list[dict[str, Any]],
    n: int,
    salt: str,
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: Sequence[dict[str, Any]] = (),
) -> list[list[Completion]]:
    """n policy solutions per problem (seeded per problem id and `salt`), prompted as the generate
    stage prompts (the `prompt` section) and cut at its stop strings. Not cached (DVC decides)."""
    backend = load_backend("transformers", cfg.policy, batch_size=cfg.batch_size, show_progress=True)
    prompts = [policy_prompt(p, prompt_cfg, backend.tokenizer, examples) for p in problems]
    sampling = SamplingConfig(
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, stop=common_stop(prompts)
    )
    seeds = [problem_seed(cfg.seed, f"{salt}:{p['id']}") for p in problems]
    return backend.generate([pr.text for pr in prompts], n, sampling, seeds=seeds)


def load_named_processbench(cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """The rows of every file in `cfg.processbench_files`, subset = its name (DataError on a bad row)."""
    rows = [r for name, path in cfg.processbench_files.items() for r in load_processbench(path, subset=name)]
    seen: dict[str, str] = {}
    for r in rows:
        if r["id"] in seen:
            raise ValueError(
                f"id {r['id']!r} is in both {cfg.processbench_files[seen[r['id']]]} and "
                f"{cfg.processbench_files[r['subset']]} (ids must be unique over all files)"
            )
        seen[r["id"]] = r["subset"]
    return rows


@task(cache_policy=NO_CACHE, tags=["prm"])
def prm_scores_by_length(
    cfg: EvaluateConfig, rows: list[dict[str, Any]]
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """PRM step scores for named ProcessBench rows: length-sorted batches, over-long rows skipped
    and counted (prmflow.evaluate.scoring.score_rows_by_length)."""
    return score_rows_by_length(
        PRM.from_pretrained(cfg.prm),
        rows,
        batch_size=cfg.score_batch_size,
        sep=cfg.processbench_step_sep,
        max_len=cfg.processbench_max_len or None,
        progress=True,
    )


def entropy_scores(rows: list[dict[str, Any]], completions: dict[str, Completion]) -> dict[str, list[float]]:
    """The policy's own uncertainty as a step score: exp(-max token entropy) per line."""
    out = {}
    for r in rows:
        c = completions[r["id"]]
        spans = step_spans(c.text)
        if len(spans) != len(r["steps"]):
            raise ValueError(f"row {r['id']}: {len(spans)} line spans but {len(r['steps'])} steps")
        out[r["id"]] = entropy_step_scores(c.entropy, c.offsets, spans)
    return out


@task(cache_policy=NO_CACHE, tags=["policy"])
def likelihood_scores(
    cfg: EvaluateConfig, rows: list[dict[str, Any]], completions: dict[str, Completion]
) -> dict[str, list[float]]:
    """The policy's own surprise as a step score: exp(min token log-prob) per line, teacher-forced."""
    backend = load_backend("transformers", cfg.policy, batch_size=cfg.batch_size)
    comps = [completions[r["id"]] for r in rows]
    logprobs = backend.token_logprobs(
        [backend.encode(format_prompt(r["problem"])) for r in rows], [c.token_ids for c in comps]
    )
    return {
        r["id"]: likelihood_step_scores(lp, c.offsets, step_spans(c.text))
        for r, c, lp in zip(rows, comps, logprobs, strict=True)
    }


@task(cache_policy=NO_CACHE, tags=["prm"])
def prm_scores(cfg: EvaluateConfig, rows: list[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """PRM step scores for ProcessBench rows (see prmflow.evaluate.scoring)."""
    return score_rows(PRM.from_pretrained(cfg.prm), rows, batch_size=cfg.score_batch_size)


@task(cache_policy=NO_CACHE, tags=["prm"])
def bon_candidates(
    cfg: EvaluateConfig, problems: list[dict[str, Any]], completions: list[list[Completion]]
) -> list[dict[str, Any]]:
    """Best-of-N inputs: every candidate's final answer and PRM step scores (lines as steps)."""
    from prmflow.synth import split_steps

    prm = PRM.from_pretrained(cfg.prm)
    flat = [(i, c) for i, cs in enumerate(completions) for c in cs]
    rows = [
        {"id": f"{i}/{k}", "problem": problems[i]["problem"], "steps": split_steps(c.text) or [""]}
        for k, (i, c) in enumerate(flat)
    ]
    scores, _ = score_rows(prm, rows, batch_size=cfg.score_batch_size)
    out = [{"answer": p["answer"], "candidates": []} for p in problems]
    for (i, c), r in zip(flat, rows, strict=True):
        out[i]["candidates"].append(
            {"answer": extract_answer(c.text), "step_scores": scores[r["id"]], "tokens": len(c.token_ids)}
        )
    return out


@task(cache_policy=NO_CACHE, tags=["prm"])
def bon_candidates_verified(
    cfg: EvaluateConfig, problems: list[dict[str, Any]], completions: list[list[Completion]]
) -> list[dict[str, Any]]:
    """Best-of-N inputs on real problems: each candidate's text, final answer, verdict
    (`answer_correct`), verified-equivalence class (`answer_classes` over `answers_equal`) and PRM
    step scores, steps = the solution's non-empty lines (`split_steps`, joined back with "\n" as
    the PRM reads them). A candidate whose first line alone exceeds the PRM's max_len cannot be
    scored: it gets the step score 0.0 (never picked while another can be) and is counted."""
    prm = PRM.from_pretrained(cfg.prm)
    flat = [(i, c) for i, cs in enumerate(completions) for c in cs]
    rows = [
        {"id": f"{i}/{k}", "subset": "bon", "problem": problems[i]["problem"], "steps": split_steps(c.text) or [""]}
        for k, (i, c) in enumerate(flat)
    ]
    scores, _ = score_rows_by_length(prm, rows, batch_size=cfg.score_batch_size, progress=True)
    ids = iter(rows)
    out = []
    for p, cs in zip(problems, completions, strict=True):
        rids = [next(ids)["id"] for _ in cs]
        cands = verified_candidates(p, [c.text for c in cs], [scores.get(r, [0.0]) for r in rids])
        for cand, c, r in zip(cands, cs, rids, strict=True):
            cand.update(scored=r in scores, tokens=len(c.token_ids))
        out.append({"id": p["id"], "answer": p["answer"], "candidates": cands})
    return out


@task(cache_policy=NO_CACHE, tags=["policy", "prm"])
def pedu_compare(
    cfg: EvaluateConfig,
    problems: list[dict[str, Any]],
    prompt_cfg: PromptConfig = PromptConfig(),
    examples: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """EDU-guided sampling with PRM pruning (P-EDU) vs standard sampling at equal N, per seed.

    Both arms pick an answer from their N candidates by majority vote and by the best PRM
    min-step score; tokens count everything sampled (trunks, branches, pruned ones, EOS).
    Synthetic problems compare answers as strings with the reference; real problems use the
    verified verdict (`answer_correct`) and vote over verified-equivalence classes, as the
    verified Best-of-N does. A solution whose first line exceeds the PRM's max_len scores 0.0.
    """
    import statistics

    from prmflow.edu.sampling import edu_guided_sample
    from prmflow.edu.tree import TreeConfig
    from prmflow.evaluate.bon import majority_vote, normalize_answer, select_prm
    from prmflow.evaluate.scoring import prm_steps
    from prmflow.evaluate.verdict import problem_kind
    from prmflow.synth import split_steps

    backend = load_backend("transformers", cfg.policy, batch_size=cfg.batch_size)
    prm = PRM.from_pretrained(cfg.prm)
    tree_cfg = TreeConfig(entropy_threshold=cfg.pedu_threshold, top_k=2, max_branches=cfg.pedu_n - 1, max_depth=3)
    decode = lambda ids: backend.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731

    real = problem_kind(problems) == "real"

    def step_scores(prompt: str, text: str) -> list[float]:
        steps = split_steps(text)
        try:
            return prm.score(prompt, prm_steps(steps)) if steps else [0.0]
        except ValueError:  # the first step alone exceeds the PRM's max_len: cannot be scored
            return [0.0]

    per_seed: dict[str, dict[str, list[float]]] = {
        arm: {"acc_majority": [], "acc_prm": [], "tokens": []} for arm in ("standard", "p_edu")
    }
    for s in range(cfg.pedu_seeds):
        hits = {arm: {"acc_majority": 0, "acc_prm": 0, "tokens": 0} for arm in per_seed}
        for p in problems:
            policy = policy_prompt(p, prompt_cfg, backend.tokenizer, examples)
            prompt = format_prompt(p["problem"])  # what the PRM reads
            ids = backend.encode(policy.text)
            seed = problem_seed(cfg.seed + 1000 * s, f"pedu:{p['id']}")
            sampling = SamplingConfig(
                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=seed, stop=policy.stop
            )
            std = backend.generate_ids([ids], cfg.pedu_n, sampling, seeds=[seed])[0]
            arms = {
                "standard": ([c.text for c in std], sum(len(c.token_ids) + (c.finish_reason == "stop") for c in std))
            }

            def keep(tree: Any, i: int, prompt: str = prompt) -> bool:
                return min(step_scores(prompt, decode(tree.full_tokens(i)))) >= cfg.pedu_prune

            edu = edu_guided_sample(backend, ids, cfg.pedu_n, tree_cfg, sampling, seed, keep=keep)
            arms["p_edu"] = ([decode(t) for t in edu.trajectories], edu.generated_tokens)
            gold = normalize_answer(p["answer"])
            for arm, (texts, tokens) in arms.items():
                if real:
                    right = [answer_correct(p, t) for t in texts]
                    classes = answer_classes([final_answer(p, t) for t in texts], answers_equal)
                    voted = majority_vote([None if k is None else str(k) for k in classes])
                    hits[arm]["acc_majority"] += voted is not None and right[int(voted)]
                    hits[arm]["acc_prm"] += right[select_prm([step_scores(prompt, t) for t in texts], "min")]
                    hits[arm]["tokens"] += tokens
                    continue
                answers = [extract_answer(t) for t in texts]
                voted = majority_vote(answers)
                best = answers[select_prm([step_scores(prompt, t) for t in texts], "min")]
                hits[arm]["acc_majority"] += voted is not None and normalize_answer(voted) == gold
                hits[arm]["acc_prm"] += best is not None and normalize_answer(best) == gold
                hits[arm]["tokens"] += tokens
        for arm in per_seed:
            per_seed[arm]["acc_majority"].append(hits[arm]["acc_majority"] / len(problems))
            per_seed[arm]["acc_prm"].append(hits[arm]["acc_prm"] / len(problems))
            per_seed[arm]["tokens"].append(hits[arm]["tokens"])

    def mean_std(xs: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}

    out: dict[str, Any] = {
        "n": cfg.pedu_n,
        "problems": len(problems),
        "seeds": cfg.pedu_seeds,
        "prune_below": cfg.pedu_prune,
        "entropy_threshold": cfg.pedu_threshold,
    }
    if real:  # (synthetic runs keep their exact old keys)
        out["verdict"] = "answer_correct (math-verify); majority vote over verified-equivalence classes"
    for arm, vals in per_seed.items():
        out[arm] = {k: {"per_seed": v, **mean_std(v)} for k, v in vals.items()}
    tok_change = [e / s - 1 for e, s in zip(per_seed["p_edu"]["tokens"], per_seed["standard"]["tokens"], strict=True)]
    out["token_change"] = {"per_seed": tok_change, **mean_std(tok_change)}
    for k in ("acc_majority", "acc_prm"):
        d = [e - s for e, s in zip(per_seed["p_edu"][k], per_seed["standard"][k], strict=True)]
        out[f"{k}_delta"] = {"per_seed": d, **mean_std(d)}
    return out


# --------------------------------------------------------------------------- the stage's steps


def named_processbench(cfg: EvaluateConfig, out: Path) -> dict:
    """Score the named ProcessBench files; write processbench_files.json and its predictions.
    A file left with no scored row (every first step over max_len) fails."""
    rows = load_named_processbench(cfg)
    scores, info = prm_scores_by_length(cfg, rows)
    counts = usable_counts(rows, info)
    for s in info["skipped"]:
        print(f"  skipped {s['id']} ({s['subset']}): {s['reason']}")
    for name, path in cfg.processbench_files.items():
        if counts[name]["scored"] == 0:
            raise DataError(
                path,
                None,
                "steps",
                f"0 usable rows: all {counts[name]['rows']} have a first step over "
                f"max_len={info['max_len']} tokens (raise evaluate.processbench_max_len)",
            )
    scored = [r for r in rows if r["id"] in scores]
    results = report.named_results(
        scored, scores, cfg.processbench_calibrate, cfg.threshold, cfg.calib_fraction, cfg.seed
    )
    named = report.named_report(results, cfg.processbench_files, counts, info, cfg.processbench_step_sep)
    io.write_json(out / "processbench_files.json", named)
    io.write_jsonl(out / "processbench_files_predictions.jsonl", report.prediction_rows(results["prm"]))
    for line in report.named_lines(results["prm"], counts):
        print(line)
    return named


def synthetic_processbench(cfg: EvaluateConfig, pb_problems: list, data_dir: str, out: Path) -> dict:
    """The synthetic ProcessBench and its scorers (module docstring, 1-2); returns the summary."""
    comps = sample(cfg, pb_problems, cfg.samples_per_problem, "processbench")
    all_rows, left_out = processbench_rows(pb_problems, [[c.text for c in cs] for cs in comps], "prmflow-policy")
    by_id = {f"{p['id']}/{j}": c for p, cs in zip(pb_problems, comps, strict=True) for j, c in enumerate(cs)}
    rows = split_subsets(balance(all_rows, cfg.correct_fraction, cfg.seed), cfg.calib_fraction, cfg.seed)
    io.write_jsonl(Path(data_dir) / "synthetic_processbench.jsonl", rows)

    scores_prm, info = prm_scores(cfg, rows)
    scorers = {
        "prm": (scores_prm, {"calibrate_on": "calib"}),
        "prm_fixed": (scores_prm, {"threshold": cfg.threshold}),
        "all_ones": (report.ones_scores(rows), {"threshold": cfg.threshold}),
        "entropy": (entropy_scores(rows, by_id), {"calibrate_on": "calib"}),
        "likelihood": (likelihood_scores(cfg, rows, by_id), {"calibrate_on": "calib"}),
    }
    results = {
        name: report.assess_or_fixed(rows, scores, how, cfg.threshold) for name, (scores, how) in scorers.items()
    }
    summary = report.synthetic_summary(results, rows, len(all_rows), left_out, info)
    io.write_json(out / "synthetic_processbench.json", summary)
    io.write_jsonl(out / "predictions.jsonl", report.prediction_rows(results["prm"]))
    test = [r for r in rows if r["subset"] == "test"]
    if test:
        curves = {
            name: f1_curve(
                [r["label"] for r in test], [scorers[name][0][r["id"]] for r in test], [i / 50 for i in range(51)]
            )
            for name in ("prm", "entropy", "likelihood")
        }
        plots.f1_vs_threshold(curves, {n: summary[n]["threshold"] for n in curves}, out / "f1_threshold.png")
    else:
        print(
            f"WARNING: the synthetic ProcessBench has no test rows ({len(rows)} rows from {len(all_rows)} solutions "
            "after balancing correct and erroneous ones): its metrics are None"
        )
    return summary


def best_of_n(
    cfg: EvaluateConfig,
    problems: list[dict[str, Any]],
    real: bool,
    prompt_cfg: PromptConfig,
    examples: list[dict[str, Any]],
    data_dir: str,
    out: Path,
) -> tuple[dict[str, Any], str | None]:
    """Best-of-N on `problems` (real ones: verified answers, votes over verified-equivalence
    classes); writes bon.json and bon.png. Returns the report and why it is meaningless (a zero
    oracle), or None."""
    completions = sample(cfg, problems, cfg.bon_max_n, "bon", prompt_cfg, examples)
    cands = (bon_candidates_verified if real else bon_candidates)(cfg, problems, completions)
    if real:
        io.write_jsonl(Path(data_dir) / "bon_candidates.jsonl", cands)
    bon, meaningless = report.bon_report(
        bon_accuracy(cands, ns=report.bon_ns(cfg.bon_max_n)), cands, real, cfg.allow_zero_oracle
    )
    if meaningless and cfg.allow_zero_oracle:
        print(f"WARNING: {meaningless}")
    io.write_json(out / "bon.json", bon)
    plots.bon_curves(bon, out / "bon.png")
    for line in report.bon_lines(bon):
        print(line)
    return bon, meaningless


def edu_sampling(
    cfg: EvaluateConfig,
    problems: list[dict[str, Any]],
    prompt_cfg: PromptConfig,
    examples: list[dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    """EDU-guided sampling (P-EDU) vs standard sampling at equal N; writes edu_sampling.json and .png."""
    pedu = pedu_compare(cfg, problems, prompt_cfg, examples)
    io.write_json(out / "edu_sampling.json", pedu)
    plots.accuracy_vs_tokens(pedu, out / "edu_sampling.png")
    print(report.pedu_line(pedu, cfg.pedu_n, cfg.pedu_seeds))
    return pedu
