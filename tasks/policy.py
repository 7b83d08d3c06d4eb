"""Tasks of stage `policy`: train the tiny policy, then measure how often it is right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from prmflow import io
from prmflow.config import PolicyConfig
from prmflow.policy.base import SamplingConfig
from prmflow.policy.evaluate import grade, solve_stats
from prmflow.policy.hf_backend import TransformersBackend
from prmflow.policy.tiny import build_model, build_tokenizer, make_examples, train_lm
from prmflow.synth import format_prompt
from prmflow.tracking import RunLogger


@task(cache_policy=NO_CACHE, tags=["cpu", "train"])
def train_policy(cfg: PolicyConfig, train_path: str, out_dir: str, run_id: str | None = None) -> list[float]:
    """Train tokenizer + tiny LM on canonical solutions and save both to `out_dir` (atomically).

    Not cached: it writes a DVC output, and DVC already skips it when inputs are unchanged.
    """
    torch.manual_seed(cfg.seed)
    rows = io.read_jsonl(train_path)
    prompts = [format_prompt(r["problem"]) for r in rows]
    solutions = [r["solution"] for r in rows]
    tokenizer = build_tokenizer([p + s for p, s in zip(prompts, solutions, strict=True)], cfg.vocab_size)
    examples = make_examples(tokenizer, prompts, solutions, cfg.max_len)
    model = build_model(
        cfg.arch,
        len(tokenizer),
        cfg.hidden_size,
        cfg.num_layers,
        cfg.num_heads,
        cfg.max_len,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        cfg.seed,
    )
    log = RunLogger(run_id) if run_id else None
    bar = tqdm(total=cfg.steps, desc="train policy", unit="step")
    window: list[float] = []

    def on_step(step: int, loss: float, lr: float) -> None:
        window.append(loss)
        bar.update(1)
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps:
            mean = sum(window) / len(window)
            bar.set_postfix(loss=f"{mean:.3f}")
            if log:
                log.metrics({"train/loss": mean, "train/lr": lr}, step=step + 1)
            window.clear()

    losses = train_lm(
        model,
        examples,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        pad_id=tokenizer.pad_token_id,
        seed=cfg.seed,
        on_step=on_step,
    )
    bar.close()
    with io.atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return losses


@task(cache_policy=NO_CACHE, tags=["cpu"])
def evaluate_policy(cfg: PolicyConfig, model_dir: str, eval_path: str) -> dict[str, Any]:
    """Sample one solution per held-out problem and grade it with the exact checker."""
    rows = io.read_jsonl(eval_path)
    backend = TransformersBackend.from_pretrained(model_dir, batch_size=cfg.eval_batch_size, show_progress=True)
    sampling = SamplingConfig(temperature=cfg.eval_temperature, max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed)
    completions = backend.generate([format_prompt(r["problem"]) for r in rows], 1, sampling)
    graded = [grade(r, c[0].text) for r, c in zip(rows, completions, strict=True)]
    stats = solve_stats(graded)
    stats["generated_tokens"] = backend.generated_tokens
    stats["truncated"] = sum(c[0].finish_reason == "length" for c in completions)
    return stats


def model_size(model_dir: str) -> int:
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
