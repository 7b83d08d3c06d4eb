import doctest
import importlib.util
import math

import pytest
import torch

import prmflow.prm.train
from prmflow.prm import PRM, PRMConfig, TrainConfig, accumulate_grads, prepare_examples, train_prm

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def _rows() -> list[dict]:
    """8 hand-made stepwise rows: a right sum is labeled 1, a wrong one 0 and so is all after it."""
    rows = []
    for i, (a, b) in enumerate([(23, 14), (6, 3), (12, 5), (40, 2)]):
        prompt = f"Question: Mia has {a} marbles. She finds {b} more. How many now?\nAnswer:\n"
        good, bad = a + b, a + b + 1
        rows.append(
            {
                "id": f"p{i}-good",
                "prompt": prompt,
                "completions": [f"{a} + {b} = {good}\n", f"The answer is {good}"],
                "labels": [True, True],
                "soft_labels": [0.75, 1.0],
            }
        )
        rows.append(
            {
                "id": f"p{i}-bad",
                "prompt": prompt,
                "completions": [f"{a} + {b} = {bad}\n", f"The answer is {bad}"],
                "labels": [False, False],
                "soft_labels": [0.25, 0.0],
            }
        )
    return rows


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"lr": 1e-3, "steps": 6, "batch_size": 4, "checkpoint_every": 2, "progress_bar": False, **kw})


@pytest.fixture()
def fresh_prm(tiny_model_dir):
    return lambda **kw: PRM.from_backbone(tiny_model_dir, PRMConfig(**{"num_heads": 2, "max_len": 128, **kw}))


def _params(prm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in prm.named_parameters()}


def test_doctests():
    failed, attempted = doctest.testmod(prmflow.prm.train)
    assert attempted >= 1 and failed == 0


def test_training_changes_params_and_lowers_the_loss(fresh_prm, tmp_path):
    prm = fresh_prm(head_data_keep=0.8, l2_to_init=1e-3)
    before = _params(prm)
    seen = []
    out = train_prm(prm, _rows(), _cfg(steps=10), tmp_path, on_step=lambda s, m: seen.append((s, m)))
    after = _params(prm)
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert [s for s, _ in seen] == list(range(1, 11))
    assert set(seen[0][1]) == {"train/loss", "train/lr", "train/grad_norm"}
    assert out["steps"] == 10 and len(out["losses"]) == 10 and out["final_loss"] == out["losses"][-1]
    assert sum(out["losses"][-3:]) / 3 < sum(out["losses"][:3]) / 3
    assert not prm.training


def test_soft_labels(fresh_prm, tmp_path):
    prm = fresh_prm()
    out = train_prm(prm, _rows(), _cfg(label_type="soft", steps=8), tmp_path)
    assert prm.cfg.label_type == "soft"  # recorded, so save_pretrained says what the PRM learned
    assert sum(out["losses"][-3:]) / 3 < sum(out["losses"][:3]) / 3
    # soft targets: a BCE loss floor above 0 (entropy of 0.75 / 0.25), unlike hard labels
    ex = prepare_examples(prm, _rows(), "soft", 128)
    assert ex[0].targets == [0.75, 1.0] and ex[1].targets == [0.25, 0.0]
    rows = _rows()
    rows[3]["soft_labels"] = None
    with pytest.raises(ValueError, match="p1-bad"):
        prepare_examples(prm, rows, "soft", 128)
    rows[3]["labels"] = [0.5, 0.0]
    with pytest.raises(ValueError, match="p1-bad.*out of range"):
        prepare_examples(prm, rows, "hard", 128)


def test_grad_accumulation_matches_one_big_batch(fresh_prm, tmp_path):
    """batch 4 x accum 1 and batch 2 x accum 2 compute the same gradient: the loss is divided by
    the (head, step) pairs of the whole group, not per micro-batch. They differ only in float
    rounding (different padding lengths T change the reduction order), hence allclose, not equal.
    """
    prm = fresh_prm(num_heads=2, head_data_keep=0.7, l2_to_init=0.1)
    with torch.no_grad():
        prm.heads[0].net.weight.add_(0.05)  # a non-zero L2-to-init gradient
    group = prepare_examples(prm, _rows()[:4], "hard", 128)
    grads = []
    for batch_size in (4, 2):
        prm.zero_grad()
        loss = accumulate_grads(prm, group, batch_size)
        grads.append((loss, {k: p.grad.clone() for k, p in prm.named_parameters() if p.grad is not None}))
    (loss4, g4), (loss2, g2) = grads
    assert loss4 == pytest.approx(loss2, rel=1e-6) and g4.keys() == g2.keys()
    for k in g4:
        assert torch.allclose(g4[k], g2[k], rtol=1e-4, atol=1e-7), k

    a, b = fresh_prm(), fresh_prm()
    train_prm(a, _rows(), _cfg(steps=2, batch_size=4, grad_accum=1), tmp_path / "a")
    train_prm(b, _rows(), _cfg(steps=2, batch_size=2, grad_accum=2), tmp_path / "b")
    for (k, pa), pb in zip(a.named_parameters(), b.parameters()):
        # Adam divides by sqrt(v): a tiny gradient difference can move a parameter by up to ~lr
        # where its gradient is ~0, so parameters are compared at a fraction of lr (1e-3)
        assert torch.allclose(pa, pb, atol=2e-4), k


def test_kill_and_resume_reaches_the_same_params(fresh_prm, tmp_path):
    full = fresh_prm(head_data_keep=0.8)
    train_prm(full, _rows(), _cfg(), tmp_path / "full")

    def kill_at_4(step, metrics):
        if step == 4:
            raise KeyboardInterrupt

    killed = fresh_prm(head_data_keep=0.8)
    with pytest.raises(KeyboardInterrupt):
        train_prm(killed, _rows(), _cfg(), tmp_path / "resumed", on_step=kill_at_4)
    ckpts = tmp_path / "resumed" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-2", "step-4"]

    resumed = fresh_prm(head_data_keep=0.8)  # a new process would start from scratch like this
    out = train_prm(resumed, _rows(), _cfg(), tmp_path / "resumed")
    assert out["resumed_from"] == 4 and out["steps"] == 6 and len(out["losses"]) == 6
    for (k, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), k
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-4", "step-6"]  # keep_checkpoints=2

    # a finished run resumes as a no-op; other data cannot resume from these checkpoints
    assert train_prm(fresh_prm(head_data_keep=0.8), _rows(), _cfg(), tmp_path / "resumed")["resumed_from"] == 6
    with pytest.raises(ValueError, match="another config or other data"):
        train_prm(fresh_prm(head_data_keep=0.8), _rows()[:6], _cfg(), tmp_path / "resumed")
    assert train_prm(fresh_prm(), _rows()[:6], _cfg(steps=1), tmp_path / "resumed", resume=False)["resumed_from"] == 0


def test_nan_loss_names_step_and_rows(fresh_prm, tmp_path):
    prm = fresh_prm()
    with torch.no_grad():
        prm.heads[1].net.bias.fill_(math.nan)
    with pytest.raises(FloatingPointError, match=r"optimizer step 1: non-finite loss nan on the batch of rows \['p"):
        train_prm(prm, _rows(), _cfg(), tmp_path)


def test_truncation_counts_and_frozen_backbone(fresh_prm, tmp_path):
    prm = fresh_prm()
    backbone, heads = _params(prm.backbone), _params(prm.heads)
    rows = _rows()
    rows[0]["completions"] = ["23 + 14 = 37\n"] * 12
    rows[0]["labels"] = [True] * 12
    out = train_prm(prm, rows, _cfg(steps=2, max_len=60, freeze_backbone=True), tmp_path)
    assert out["truncated_rows"] == 1 and out["truncated_steps"] > 0 and out["prompt_truncated_rows"] == 0
    assert all(torch.equal(v, prm.backbone.state_dict()[k]) for k, v in backbone.items())
    assert all(not torch.equal(v, dict(prm.heads.named_parameters())[k]) for k, v in heads.items())


def test_lora_without_peft_is_a_clear_error(fresh_prm, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else find_spec(name, *a))
    with pytest.raises(ImportError, match="needs the `peft` package"):
        train_prm(fresh_prm(), _rows(), _cfg(lora_r=4), tmp_path)


# --------------------------------------------------------------------------- frozen backbone, LoRA, saving


def test_cached_features_train_the_same_heads(fresh_prm, tmp_path):
    """cache_features runs the backbone once per row (8 rows, 6 steps x 4 rows = 3 epochs) and
    trains the same heads as the uncached loop, up to float rounding."""
    plain, cached = fresh_prm(lm_features=True), fresh_prm(lm_features=True)
    a = train_prm(plain, _rows(), _cfg(freeze_backbone=True), tmp_path / "plain")
    b = train_prm(cached, _rows(), _cfg(freeze_backbone=True, cache_features=True), tmp_path / "cached")
    assert b["backbone_passes"] == 8 and "backbone_passes" not in a
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-4)
    for (k, pa), pb in zip(plain.heads.named_parameters(), cached.heads.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), k
    with pytest.raises(ValueError, match="needs freeze_backbone"):
        _cfg(cache_features=True)


def test_frozen_checkpoints_hold_the_heads_and_resume_exactly(fresh_prm, tmp_path):
    full = fresh_prm()
    train_prm(full, _rows(), _cfg(freeze_backbone=True, cache_features=True), tmp_path / "full")

    def kill_at_4(step, metrics):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_prm(
            fresh_prm(), _rows(), _cfg(freeze_backbone=True, cache_features=True), tmp_path / "r", on_step=kill_at_4
        )
    from safetensors import safe_open

    with safe_open(str(tmp_path / "r" / "checkpoints" / "step-4" / "model.safetensors"), "pt") as f:
        assert all(k.split(".")[1] in ("net", "init_weight", "init_bias") for k in f.keys())  # no backbone tensor
    resumed = fresh_prm()
    assert (
        train_prm(resumed, _rows(), _cfg(freeze_backbone=True, cache_features=True), tmp_path / "r")["resumed_from"]
        == 4
    )
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_rows_over_max_len_are_counted_and_skipped(fresh_prm, tmp_path):
    rows = _rows()
    rows[0]["completions"] = ["23 + 14 = 37\n"] * 12  # loses steps from the end
    rows[0]["labels"] = [True] * 12
    rows[1]["completions"] = ["1 + 1 = 2 " * 20, "The answer is 2"]  # its first step alone is too long
    out = train_prm(fresh_prm(), rows, _cfg(steps=1, max_len=60), tmp_path)
    assert out["examples"] == 7 and out["skipped_rows"] == 1
    assert out["truncated_rows"] == 1 and out["truncated_fraction"] == pytest.approx(1 / 8)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")
def test_lora_prm_saves_a_full_model_that_loads(fresh_prm, tmp_path):
    prm = fresh_prm()
    train_prm(prm, _rows(), _cfg(steps=3, lora_r=2), tmp_path / "ck")
    assert type(prm.backbone).__name__ == "LlamaModel"  # merged back into a plain backbone
    prm.save_pretrained(tmp_path / "prm")
    assert (tmp_path / "prm" / "model.safetensors").is_file() and not (tmp_path / "prm" / "prm_backbone.json").exists()
    loaded = PRM.from_pretrained(tmp_path / "prm")
    steps = [["23 + 14 = 37\n", "The answer is 37"]]
    assert loaded.score_batch(["Q\n"], steps) == prm.score_batch(["Q\n"], steps)


def test_frozen_prm_saved_after_training_scores_bit_identically(fresh_prm, tmp_path):
    prm = fresh_prm(lm_features=True)
    train_prm(prm, _rows(), _cfg(freeze_backbone=True), tmp_path / "ck")
    prm.save_pretrained(tmp_path / "prm")
    assert (tmp_path / "prm" / "prm_backbone.json").is_file() and not (tmp_path / "prm" / "model.safetensors").exists()
    rows = _rows()
    args = ([r["prompt"] for r in rows], [r["completions"] for r in rows])
    assert PRM.from_pretrained(tmp_path / "prm").score_batch(*args) == prm.score_batch(*args)


def test_train_stage_refuses_lm_features_on_a_foreign_backbone(tiny_model_dir, tmp_path):
    from prmflow.config import TrainConfig as StageConfig
    from tasks.train import train_on_this_process

    cfg = StageConfig(backbone=str(tiny_model_dir), policy="models/policy", lm_features=True)
    with pytest.raises(ValueError, match="is not the policy 'models/policy'"):
        train_on_this_process(cfg, _rows(), str(tmp_path / "labels.jsonl"))
