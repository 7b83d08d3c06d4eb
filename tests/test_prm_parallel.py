"""Data-parallel PRM training (prmflow.prm.parallel): W processes take the same optimizer steps
as one process, for real under `accelerate launch --cpu` (gloo), and LoRA training."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file
from test_prm_train import _rows

from flows.launch import LaunchConfig, launch_env, stage_command
from prmflow.prm import PRM, PRMConfig, TrainConfig, accumulate_grads, prepare_examples, train_prm
from prmflow.prm.parallel import Processes

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def _grads(prm: PRM) -> dict[str, torch.Tensor]:
    return {
        k: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for k, p in prm.named_parameters()
    }


def test_micro_batches_go_round_robin():
    a, b = Processes(rank=0, world=2), Processes(rank=1, world=2)
    assert [m for m in range(5) if a.owns(m)] == [0, 2, 4] and [m for m in range(5) if b.owns(m)] == [1, 3]
    assert all(Processes().owns(m) for m in range(5)) and Processes().is_main and not b.is_main


@pytest.mark.parametrize("world", [2, 3])
def test_per_process_shares_sum_to_the_single_process_gradient(tiny_model_dir, world):
    """5 micro-batches over W processes (uneven): the shares of loss and gradient add up to the
    one-process loss_s and its gradient, l2-to-init term included."""
    cfg = PRMConfig(num_heads=2, head_data_keep=0.7, l2_to_init=1e-2, max_len=128)
    prm = PRM.from_backbone(tiny_model_dir, cfg)
    with torch.no_grad():  # move the heads off their init so the l2 term has a gradient
        for p in prm.heads.parameters():
            p.add_(0.1)
    examples = prepare_examples(prm, _rows() + _rows()[:2], "hard", 128)  # 10 rows
    loss = accumulate_grads(prm, examples, 2)
    full = _grads(prm)
    total, summed = 0.0, {k: torch.zeros_like(v) for k, v in full.items()}
    for rank in range(world):
        prm.zero_grad(set_to_none=True)
        total += accumulate_grads(prm, examples, 2, Processes(rank=rank, world=world))
        for k, g in _grads(prm).items():
            summed[k] += g
    assert total == pytest.approx(loss, rel=1e-6)
    for k in full:
        torch.testing.assert_close(summed[k], full[k], rtol=1e-5, atol=1e-7, msg=k)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_train_like_one(tiny_model_dir, tmp_path):
    """`accelerate launch --num_processes 2` on the CPU (gloo): both replicas end equal to each other
    and to a one-process run of the same config, with an uneven split (3 micro-batches per step)."""
    rows = _rows()
    spec = {
        "prm": {"num_heads": 2, "head_data_keep": 0.8, "l2_to_init": 1e-3, "max_len": 128},
        "train": {
            "lr": 1e-3,
            "steps": 4,
            "batch_size": 2,
            "grad_accum": 3,
            "checkpoint_every": 2,
            "progress_bar": False,
            "seed": 3,
        },
    }
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "cfg.json").write_text(json.dumps(spec))
    cfg = LaunchConfig("accelerate", num_processes=2, cpu=True)
    env = {
        **os.environ,
        **launch_env(cfg),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    launch = stage_command("train", "unused", cfg)[:-4]  # the launcher, without `-m flows.train --params ..`
    cmd = [
        *launch,
        "--main_process_port",
        str(_free_port()),
        str(REPO / "tests" / "parallel_check.py"),
        str(tiny_model_dir),
        str(tmp_path / "rows.json"),
        str(tmp_path / "cfg.json"),
        str(tmp_path),
    ]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["summary"]["processes"] == 2
    assert r0["on_step"] == [1, 2, 3, 4] and r1["on_step"] == []  # logging on the main process only
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"replicas diverged at {k}"

    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(**spec["prm"]))
    before = {k: v.clone() for k, v in prm.state_dict().items()}
    one = train_prm(prm, rows, TrainConfig(**spec["train"]), tmp_path / "single")
    assert one["losses"] == pytest.approx(r0["summary"]["losses"], rel=1e-5)
    moved = 0
    for k, v in prm.state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=1e-4, atol=1e-6, msg=k)
        moved += not torch.equal(before[k], v)
    assert moved > 0
    # only the main process wrote checkpoints, and it wrote the last step's
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2", "step-4"]


def test_lora_trains_adapters_and_saves_a_plain_backbone(tiny_model_dir, tmp_path):
    pytest.importorskip("peft", reason="peft (LoRA) is in the dev extras; install .[dev]")
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=1, max_len=128))
    before = {k: v.clone() for k, v in prm.backbone.state_dict().items()}
    out = train_prm(prm, _rows(), TrainConfig(lr=1e-2, steps=4, batch_size=4, lora_r=4, progress_bar=False), tmp_path)
    assert out["steps"] == 4
    after = prm.backbone.state_dict()
    assert set(after) == set(before), "the merged backbone has the original parameter names"
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA on the linear layers, merged in
    prm.save_pretrained(tmp_path / "prm")
    again = PRM.from_pretrained(tmp_path / "prm")
    steps = ["23 + 14 = 37\n", "The answer is 37"]
    prompt = "Question: Mia has 23 marbles. She finds 14 more. How many now?\nAnswer:\n"
    assert again.score(prompt, steps) == pytest.approx(prm.score(prompt, steps), abs=1e-6)
