"""Cached head inputs of a frozen-backbone PRM (prmflow.active.features): the same scores, the same
gradients and the same active-learning run as the uncached PRM, with one backbone pass per solution."""

import pytest
import torch
from test_active_loop import PROBLEMS, _evals, _pool

from prmflow.active import CachedHeads, FeatureCache, LoopConfig, OracleLabeler, run_active_learning
from prmflow.evaluate.scoring import prm_steps
from prmflow.prm import PRM, PRMConfig, accumulate_grads, prepare_examples
from prmflow.synth import format_prompt

pytestmark = pytest.mark.usefixtures("one_thread")


def _prm(model_dir, lm_features=True, seed=0) -> PRM:
    prm = PRM.from_backbone(
        model_dir,
        PRMConfig(num_heads=3, max_len=128, head_data_keep=0.5, l2_to_init=1e-3, seed=seed, lm_features=lm_features),
    )
    prm.backbone.requires_grad_(False)
    return prm


def _rows():
    return [
        {"id": r["id"], "prompt": r["prompt"], "completions": r["steps"], "labels": r["gold_labels"]} for r in _pool()
    ]


@pytest.mark.parametrize("lm_features", [False, True])
def test_scores_and_gradients_match_the_uncached_prm(tiny_model_dir, lm_features):
    prm = _prm(tiny_model_dir, lm_features)
    cached = CachedHeads(prm)
    pool = _pool()
    prompts, steps = [r["prompt"] for r in pool], [r["steps"] for r in pool]
    ref, got = prm.score_batch(prompts, steps, batch_size=5), cached.score_batch(prompts, steps, batch_size=5)
    for a, b in zip(ref, got, strict=True):
        assert a.n_truncated_steps == b.n_truncated_steps
        assert torch.allclose(torch.tensor(a.per_head), torch.tensor(b.per_head), atol=1e-5)
        assert torch.allclose(torch.tensor(a.head_std), torch.tensor(b.head_std), atol=1e-5)
    assert cached.cache.backbone_passes == len(pool)
    cached.score_batch(prompts, steps)  # all cached: no backbone pass
    assert cached.cache.backbone_passes == len(pool)

    examples = prepare_examples(prm, _rows(), "hard", 128)
    prm.zero_grad()
    loss_ref = accumulate_grads(prm, examples, 5)
    grads_ref = [h.grad.clone() for h in prm.heads.parameters()]
    prm.zero_grad()
    loss = cached.accumulate_grads(examples, 5)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for g_ref, p in zip(grads_ref, prm.heads.parameters(), strict=True):
        assert torch.allclose(g_ref, p.grad, atol=1e-6)
    assert all(p.grad is None for p in prm.backbone.parameters())


def test_truncated_steps_get_no_score(tiny_model_dir):
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=2, max_len=24, lm_features=True))
    prm.backbone.requires_grad_(False)
    row = _pool()[0]
    ref, got = (
        prm.score_batch([row["prompt"]], [row["steps"]])[0],
        CachedHeads(prm).score_batch([row["prompt"]], [row["steps"]])[0],
    )
    assert got.n_truncated_steps == ref.n_truncated_steps > 0
    assert len(got.head_mean) == len(ref.head_mean) and torch.allclose(
        torch.tensor(got.head_mean), torch.tensor(ref.head_mean), atol=1e-5
    )


def test_needs_a_frozen_backbone_and_one_backbone_per_cache(tiny_model_dir):
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=2, max_len=128))
    with pytest.raises(ValueError, match="frozen backbone"):
        CachedHeads(prm)
    cache = FeatureCache()
    CachedHeads(_prm(tiny_model_dir, seed=0), cache)
    CachedHeads(_prm(tiny_model_dir, seed=1), cache)  # other heads, same backbone: shared
    other = _prm(tiny_model_dir, seed=0)
    with torch.no_grad():
        next(other.backbone.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="another backbone"):
        CachedHeads(other, cache)


def test_a_cached_active_run_matches_the_uncached_one(tiny_model_dir, tmp_path):
    cfg = dict(
        strategy="active",
        p=0.55,
        std_threshold=0.02,
        batch_size=4,
        lr=1e-2,
        grad_steps=2,
        micro_batch_size=4,
        eval_every=1,
        score_batch_size=16,
    )
    ref = run_active_learning(
        _prm(tiny_model_dir),
        _pool(),
        PROBLEMS,
        OracleLabeler(),
        LoopConfig(**cfg),
        tmp_path / "ref",
        eval_rows=_evals(),
    )
    cache = FeatureCache()
    got = run_active_learning(
        _prm(tiny_model_dir),
        _pool(),
        PROBLEMS,
        OracleLabeler(),
        LoopConfig(**cfg, cache_features=True),
        tmp_path / "cached",
        eval_rows=_evals(),
        feature_cache=cache,
    )
    assert got["counts"] == ref["counts"] and got["labels_spent"] == ref["labels_spent"]
    for a, b in zip(ref["history"], got["history"], strict=True):
        assert a.keys() == b.keys()
        for k in ("f1", "loss", "confident_fraction"):
            if a.get(k) is not None:
                assert b[k] == pytest.approx(a[k], abs=1e-4), (a["round"], k)
    # each distinct solution through the backbone once for the whole run; the eval rows here are
    # the pool's own solutions (as the PRM reads them), so they cost nothing more
    texts = {(r["prompt"], "".join(r["steps"])) for r in _pool()}
    assert {(format_prompt(r["problem"]), "".join(prm_steps(r["steps"]))) for r in _evals()} == texts
    assert cache.backbone_passes == len(texts) == 12


def test_budget_sweep_cells_parse():
    import doctest

    import experiments.active_budget

    assert doctest.testmod(experiments.active_budget).failed == 0
    with pytest.raises(SystemExit, match="not key=value"):
        experiments.active_budget.parse_cell("grad_steps")


def test_pool_sweep_extends_the_stage_pool_with_the_next_problems_of_the_stream(tmp_path):
    from experiments.active_pool import extra_problems
    from prmflow import io
    from prmflow.config import ProblemsConfig
    from tasks.problems import sample_problems

    params = tmp_path / "params.yaml"
    params.write_text("problems:\n  n_train: 30\n  n_eval: 5\n  n_pool: 4\n")
    stage = sample_problems.fn(ProblemsConfig(n_train=30, n_eval=5, n_pool=4))
    io.write_jsonl(tmp_path / "pool.jsonl", stage["pool"])
    extra = extra_problems(str(params), str(tmp_path / "pool.jsonl"), 3)
    assert len(extra) == 8
    ids = {r["id"] for r in stage["pool"]} | {r["id"] for r in stage["eval"]} | {r["id"] for r in stage["train"]}
    assert not ids & {r["id"] for r in extra}  # new problems, none from train, eval or the stage's pool
    assert extra == sample_problems.fn(ProblemsConfig(n_train=30, n_eval=5, n_pool=12))["pool"][4:]
    io.write_jsonl(tmp_path / "pool.jsonl", stage["pool"][1:])  # not the stream's prefix: stale problems stage
    with pytest.raises(SystemExit, match="not the prefix"):
        extra_problems(str(params), str(tmp_path / "pool.jsonl"), 2)
