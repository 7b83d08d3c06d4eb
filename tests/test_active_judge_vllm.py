"""The judge labeler against a real vLLM OpenAI-compatible server (only where `.venv-vllm` exists).

tests/test_active_judge.py checks the protocol against a fake server with canned replies. Here
the replies are generated: a tiny Llama is trained for a few seconds to answer the judge prompt
of two solutions, one right and one wrong at its first step, with a critique in ActPRM's format.
It is served by vLLM (`vllm.entrypoints`, float32, greedy as the judge asks), with an API key,
and with a chat template that renders the user message followed by a fixed cue. So the request,
the chat template, the server's reply and usage schema, `finish_reason`, the key and the parser
all run for real; only the judge's wisdom is memorized.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, vllm_missing, vllm_server_process

from prmflow.active import JudgeError, JudgeLabeler, run_active_learning
from prmflow.active.judge import judge_prompt

PROBLEM = "Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?"
RIGHT = ["23 + 14 = 37\n", "The answer is 37"]
WRONG = ["23 + 14 = 38\n", "The answer is 38"]
REPLIES = {  # what the judge model learns to write for each solution
    "right": "Paragraph 0: 23 + 14 = 37 is right. correct\nParagraph 1: 37 follows. correct\n\\boxed{-1}",
    "wrong": "Paragraph 0: 23 + 14 is 37, not 38. incorrect\n\\boxed{0}",
}
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ '\\nReview:\\n' }}"
KEY_ENV = "PRMFLOW_TEST_JUDGE_KEY"


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = vllm_missing()
    if reason:
        pytest.skip(reason)
    import torch

    from prmflow.policy.tiny import build_model, build_tokenizer, make_examples, train_lm

    out = tmp_path_factory.mktemp("judge_model") / "model"
    prompts = [judge_prompt(PROBLEM, s) for s in (RIGHT, WRONG)]
    tok = build_tokenizer(prompts + list(REPLIES.values()), 400)
    tok.chat_template = CHAT_TEMPLATE
    # train on exactly what the server will render from the chat request
    rendered = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    assert all(r.endswith("\nReview:\n") for r in rendered)
    model = build_model("llama", len(tok), 64, 2, 2, 1024, tok.pad_token_id, tok.eos_token_id, seed=0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_lm(
            model,
            make_examples(tok, rendered, [REPLIES["right"], REPLIES["wrong"]], 1024),
            steps=150,
            batch_size=2,
            lr=3e-3,
            warmup_steps=5,
            weight_decay=0.0,
            pad_id=tok.pad_token_id,
            seed=0,
        )
    finally:
        torch.set_num_threads(n)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def judge_server(judge_model: Path, tmp_path_factory: pytest.TempPathFactory):
    from prmflow.policy.vllm_backend import engine_env_defaults

    key = "judge-test-key-" + os.urandom(6).hex()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        **engine_env_defaults(),
    }
    env.pop(KEY_ENV, None)
    log = tmp_path_factory.mktemp("judge_server") / "server.log"
    with vllm_server_process(judge_model, "tiny-judge", key, log, env, max_model_len=1024) as base:
        yield base, key


@pytest.fixture()
def keyed(judge_server, monkeypatch: pytest.MonkeyPatch):
    base, key = judge_server
    monkeypatch.setenv(KEY_ENV, key)
    return base, key


def test_the_judge_labels_through_a_real_vllm_server(keyed):
    base, key = keyed
    judge = JudgeLabeler(base, "tiny-judge", api_key_env=KEY_ENV, max_retries=1, max_tokens=200, timeout=60)
    try:
        right, wrong = judge.label({"problem": PROBLEM}, RIGHT), judge.label({"problem": PROBLEM}, WRONG)
    finally:
        judge.close()
    assert (right.first_error, right.labels) == (-1, [True, True])
    assert (wrong.first_error, wrong.labels) == (0, [False, False])
    c = judge.cost
    assert (c.calls, c.requests, c.retries, c.unparseable) == (2, 2, 0, 0)
    # the server's usage block is read: the prompt is the rendered judge prompt, the reply the critique
    assert c.prompt_tokens > 2 * 300 and c.completion_tokens > 20
    assert key not in repr(judge)


def test_a_reply_cut_by_max_tokens_is_retried_then_unlabeled(keyed):
    base, _ = keyed
    judge = JudgeLabeler(base, "tiny-judge", api_key_env=KEY_ENV, max_retries=1, max_tokens=5, timeout=60)
    try:
        res = judge.label({"problem": PROBLEM}, WRONG)
    finally:
        judge.close()
    # vLLM reports finish_reason "length": never parsed, however it starts; asked twice, then given up
    assert (res.first_error, res.labels) == (None, None)
    assert (judge.cost.requests, judge.cost.retries, judge.cost.unparseable) == (2, 1, 2)
    assert judge.cost.completion_tokens == 2 * 5


def test_a_wrong_key_is_refused_without_leaking_it(judge_server, monkeypatch: pytest.MonkeyPatch):
    base, key = judge_server
    monkeypatch.setenv(KEY_ENV, "not-the-key-" + key[::-1])
    judge = JudgeLabeler(base, "tiny-judge", api_key_env=KEY_ENV, max_retries=0, timeout=60)
    with pytest.raises(JudgeError, match=rf"HTTP 401 \(is \${KEY_ENV} set right\?\)") as e:
        judge.label({"problem": PROBLEM}, RIGHT)
    judge.close()
    assert key not in str(e.value) and key[::-1] not in str(e.value)


def test_the_active_loop_buys_judge_labels_from_vllm(keyed, tiny_model_dir, tmp_path):
    """The stage's labeler path: tasks.active.build_labeler from the active config, then the loop."""
    from dataclasses import replace

    from prmflow.active import LoopConfig
    from prmflow.config import ActiveConfig
    from prmflow.prm import PRM, PRMConfig
    from tasks.active import build_labeler

    base, _ = keyed
    cfg = replace(
        ActiveConfig(),
        labeler="judge",
        judge_base_url=base,
        judge_model="tiny-judge",
        judge_api_key_env=KEY_ENV,
        judge_max_retries=1,
        judge_max_tokens=200,
        judge_timeout=60.0,
    )
    labeler = build_labeler(cfg)
    pool = [
        {"id": name, "problem_id": "mia", "prompt": f"Question: {PROBLEM}\nAnswer:\n", "steps": steps}
        for name, steps in (("right", RIGHT), ("wrong", WRONG))
    ]
    prm = PRM.from_backbone(str(tiny_model_dir), PRMConfig(num_heads=2, max_len=128, seed=0))
    try:
        out = run_active_learning(
            prm,
            pool,
            {"mia": {"id": "mia", "problem": PROBLEM}},
            labeler,
            LoopConfig(strategy="full", batch_size=2, eval_every=0),
            tmp_path,
        )
    finally:
        labeler.close()
    assert out["labels_spent"] == out["labeled"] == 2 and out["cost"]["requests"] == 2
    saved = json.loads((tmp_path / "labels" / "round-00001.json").read_text())
    assert {rid: r["first_error"] for rid, r in saved["results"].items()} == {"right": -1, "wrong": 0}
