"""Stage `train`: train a step-token PRM on the labeled steps, then register it in MLflow.

    python -m flows.train [--params params.yaml]

The PRM is a backbone (`train.backbone`, by default the policy) plus reward head(s) read at a
dedicated step token appended to each step (prmflow.prm), trained with BCE on hard or soft MC
labels. Outputs models/prm/ (`PRM.from_pretrained(dir).score(prompt, steps)`),
reports/train.json and reports/train/loss.png. A frozen backbone is not copied: models/prm/
holds the heads, prmflow_prm.json and prm_backbone.json (the backbone's path as given, relative
to the repo root, and sha256s of its weights and tokenizer, checked on load), and so does the
MLflow model artifact. A trained backbone (full fine-tuning, merged LoRA) is saved whole.

Several GPUs: `python -m flows.launch train` with `launcher: accelerate` and `num_processes: N`
in the train section runs `accelerate launch -m flows.train`; rank 0 runs this flow, the other
ranks only their share of every optimizer step (prmflow.prm.parallel).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from prmflow import io, plots, tracking
from prmflow.config import TrainConfig, load_section
from tasks.train import fit_prm


@flow(name="train", log_prints=True)
def train_flow(
    params: str | list[str] = "params.yaml",
    labels_path: str = "data/labels/labels.jsonl",
    out_dir: str = "models/prm",
    reports_dir: str = "reports",
) -> dict:
    cfg = load_section(params, "train", TrainConfig)
    reports = Path(reports_dir)
    with tracking.stage_run("train", cfg) as run:
        rows = io.read_jsonl(labels_path)
        summary = fit_prm(cfg, rows, labels_path, out_dir, run.run_id)
        losses = summary.pop("losses")
        io.write_json(reports / "train.json", summary)
        plots.loss_curve(losses, reports / "train" / "loss.png", "PRM training loss (BCE at step tokens)")
        run.metrics({f"train/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
        run.artifact(reports / "train", "plots")
        ref = Path(out_dir) / "prm_backbone.json"
        if ref.is_file():  # a frozen backbone: the artifact is the heads + this pointer, no backbone copy
            pointer = io.read_json(ref)
            run.tags({"prm.backbone": pointer["path"], "prm.backbone_sha256": pointer["weights_sha256"]})
            print(f"train: saved the heads and a pointer to the backbone {pointer['path']} (not a copy)")
        run.artifact(out_dir, "model")
        if cfg.register_name:
            version = tracking.register_model(run.run_id, "model", cfg.register_name)
            print(f"train: registered {cfg.register_name} version {version}")
        print(f"train: {summary}")
    return summary


if __name__ == "__main__":
    from flows._cli import main, params_arg
    from prmflow.prm.parallel import worker_rank

    if worker_rank() > 0:  # `accelerate launch --num_processes N`: ranks 1.. train beside the flow of rank 0
        from tasks.train import train_worker

        train_worker(params_arg(__doc__))
    else:
        main(train_flow, __doc__)
