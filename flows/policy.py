"""Stage `policy`: train the tiny policy LM from scratch, then measure its held-out solve rate.

    python -m flows.policy [--params params.yaml]

Outputs models/policy/ (HF format: `AutoModelForCausalLM.from_pretrained`), reports/policy.json
(`solve_rate`, `n_eval`, `first_error_hist`, ...) and PNG plots of the loss and first errors.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import PolicyConfig, load_section
from tasks.policy import evaluate_policy, train_policy


@flow(name="policy", log_prints=True)
def policy(
    params: str | list[str] = "params.yaml",
    problems_dir: str = "data/problems",
    model_dir: str = "models/policy",
    reports_dir: str = "reports",
) -> dict:
    cfg = load_section(params, "policy", PolicyConfig)
    reports = Path(reports_dir)
    with tracking.stage_run("policy", cfg) as run:
        # ---- train (the checkpoint is float32 weights: about 4 bytes x 12 d^2 per layer + embeddings)
        io.ensure_free_space(
            model_dir,
            4 * (12 * cfg.hidden_size**2 * cfg.num_layers + cfg.vocab_size * cfg.hidden_size),
            "the policy model",
        )
        losses = train_policy(cfg, str(Path(problems_dir) / "train.jsonl"), model_dir, run.run_id)
        # ---- evaluate on held-out problems
        stats = evaluate_policy(cfg, model_dir, str(Path(problems_dir) / "eval.jsonl"))
        stats["final_loss"] = sum(losses[-50:]) / len(losses[-50:])
        # ---- report
        io.write_json(reports / "policy.json", stats)
        plots.loss_curve(losses, reports / "policy" / "loss.png", "policy training loss")
        plots.first_error_hist(
            stats["first_error_hist"],
            reports / "policy" / "first_error.png",
            f"policy on {stats['n_eval']} held-out problems: solve rate {stats['solve_rate']:.1%}",
        )
        run.metrics({f"policy/{k}": v for k, v in stats.items() if isinstance(v, (int, float))})
        run.artifact(reports / "policy.json")
        run.artifact(reports / "policy", "plots")
        run.artifact(model_dir, "model")
        print(
            f"policy: solve rate {stats['solve_rate']:.3f} on {stats['n_eval']} held-out problems, "
            f"first errors {stats['first_error_hist']}"
        )
    return stats


if __name__ == "__main__":
    from flows._cli import main

    main(policy, __doc__)
