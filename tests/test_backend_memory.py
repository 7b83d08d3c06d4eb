"""Memory bounded by design (transformers backend): no autograd graph, last-position prefill
logits, chunked teacher forcing, and a peak-memory bound on a 131k-vocabulary model.

The fast paths must not change a single bit: the reference is the same backend with the
bounds switched off (HEAD_MIN_ROWS and LOGPROB_CHUNK_ROWS huge: full-prompt prefill logits,
log_softmax over (B, T, V)), i.e. the formulation before the bounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import CORPUS, REPO

from prmflow.policy import hf_backend
from prmflow.policy.base import SamplingConfig
from prmflow.policy.hf_backend import TransformersBackend
from prmflow.policy.tiny import build_model, build_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = "Question: " + " ".join(f"Mia has {k} marbles." for k in range(12)) + "\nAnswer:\n"  # > 64 tokens
PROMPTS = ["Question: Mia has 23 marbles.\nAnswer:\n", LONG, "Question: Leo\nAnswer:\n", "Q"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS, 300)


@pytest.fixture(scope="module")
def llama(tok):
    return build_model("llama", len(tok), 96, 3, 4, 256, tok.pad_token_id, tok.eos_token_id, seed=0).eval()


@pytest.fixture(scope="module")
def gemma3(tok):
    """A tiny Gemma3 with final-logit soft-capping and a sliding window shorter than prompt +
    generation, so both the soft-capped head and the sliding-window mask are exercised."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        final_logit_softcapping=3.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(cfg).eval()


def rows(comps):
    return [[c.to_row() for c in row] for row in comps]


def run_all(be: TransformersBackend) -> dict:
    """Every output the backend produces, on prompts of mixed length (one > 64 tokens)."""
    out = {}
    for name, s, n in [
        ("t1", SamplingConfig(max_new_tokens=30, seed=0, top_logprobs=3), 4),
        ("top_p", SamplingConfig(temperature=0.8, top_p=0.9, max_new_tokens=20, seed=5, top_logprobs=2), 2),
        ("greedy", SamplingConfig(temperature=0, max_new_tokens=20), 1),
    ]:
        out[name] = rows(be.generate(PROMPTS, n, s))
    comps = [c for row in be.generate(PROMPTS, 3, SamplingConfig(max_new_tokens=40, seed=2)) for c in row]
    out["token_logprobs"] = be.token_logprobs(
        [be.encode(p) for p in PROMPTS for _ in range(3)], [c.token_ids for c in comps]
    )
    return out


@pytest.mark.parametrize("model_name", ["llama", "gemma3"])
@pytest.mark.parametrize("batch_size", [64, 3, 1])
def test_bounded_paths_equal_full_logits_reference_bitwise(request, tok, model_name, batch_size, monkeypatch):
    # batch 64: 4 prompts per call (prefill keeps 16 positions; teacher forcing in padded chunks);
    # batch 3 and 1: one prompt per call (keep 64 positions of the long prompt, all of a short one)
    model = request.getfixturevalue(model_name)
    fast = run_all(TransformersBackend(model, tok, batch_size=batch_size))
    monkeypatch.setattr(hf_backend, "HEAD_MIN_ROWS", 10**9)  # prefill: logits of every prompt position
    monkeypatch.setattr(hf_backend, "LOGPROB_CHUNK_ROWS", 10**9)  # teacher forcing: one (B, T, V) log_softmax
    ref = run_all(TransformersBackend(model, tok, batch_size=batch_size))
    assert fast == ref  # floats compared exactly (==), not approximately
    assert any(len(c["token_ids"]) for row in fast["t1"] for c in row)


def test_chunked_token_logprobs_equal_plain_forward(gemma3, tok, monkeypatch):
    """Against the model's own forward (soft-capped logits), in chunks smaller than a sequence."""
    monkeypatch.setattr(hf_backend, "LOGPROB_CHUNK_ROWS", 7)  # many chunks, each padded to HEAD_MIN_ROWS
    be = TransformersBackend(gemma3, tok, batch_size=4)
    prompts = [be.encode(p) for p in PROMPTS]
    conts = [c.token_ids for row in be.generate(PROMPTS, 1, SamplingConfig(max_new_tokens=25, seed=1)) for c in row]
    got = be.token_logprobs(prompts, conts)
    for p, c, lp in zip(prompts, conts, got, strict=True):
        with torch.no_grad():
            logp = gemma3(torch.tensor([p + c])).logits[0].log_softmax(-1)
        want = logp[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c, dtype=torch.long)]
        assert torch.allclose(torch.tensor(lp), want, atol=1e-5)


def test_gemma3_sliding_window_greedy_matches_hf_generate(gemma3, tok):
    be = TransformersBackend(gemma3, tok, batch_size=8)
    for prompt in PROMPTS[:2]:
        p = be.encode(prompt)
        ours = be.generate([prompt], 1, SamplingConfig(temperature=0, max_new_tokens=20))[0][0]
        ref = gemma3.generate(
            torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=be.eos_id, pad_token_id=be.pad_id
        )[0, len(p) :].tolist()
        if be.eos_id in ref:
            ref = ref[: ref.index(be.eos_id)]
        assert ours.token_ids == ref


def test_head_check_rejects_unknown_logit_transform(llama, tok):
    be = TransformersBackend(llama, tok, batch_size=4)
    handle = llama.register_forward_hook(lambda m, a, out: (setattr(out, "logits", out.logits * 2.0), out)[1])
    try:
        with pytest.raises(NotImplementedError, match="not output_embeddings"):
            be.token_logprobs([be.encode("Q")], [[5, 6]])
    finally:
        handle.remove()


def test_no_autograd_graph_in_generate_or_token_logprobs(llama, tok):
    """Every module's forward runs with grad disabled and returns tensors that require no grad,
    even when the caller has grad enabled (as a training loop does)."""
    seen = []

    def record(module, args, output):
        tensors = (
            [output]
            if torch.is_tensor(output)
            else [v for v in getattr(output, "values", lambda: [])() if torch.is_tensor(v)]
        )
        seen.append((type(module).__name__, torch.is_grad_enabled(), any(t.requires_grad for t in tensors)))

    handles = [m.register_forward_hook(record) for m in llama.modules()]
    try:
        be = TransformersBackend(llama, tok, batch_size=8)
        with torch.enable_grad():
            comps = be.generate(PROMPTS, 2, SamplingConfig(max_new_tokens=8, seed=0, top_logprobs=2))
            n_gen = len(seen)
            be.token_logprobs(
                [be.encode(p) for p in PROMPTS for _ in range(2)], [c.token_ids for row in comps for c in row]
            )
    finally:
        for h in handles:
            h.remove()
    assert 0 < n_gen < len(seen)  # both entry points ran the model
    assert any(name == "LlamaForCausalLM" for name, _, _ in seen[:n_gen])
    assert not [s for s in seen if s[1] or s[2]], "a forward ran with autograd on"


# ---------------------------------------------------------------------------- large vocabulary

MEMORY_SCRIPT = textwrap.dedent(r"""
    import json, re, sys
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from prmflow.policy.base import SamplingConfig
    from prmflow.policy.hf_backend import TransformersBackend

    MODE = sys.argv[1]
    V, ROWS, PROMPT, NEW = (int(x) for x in sys.argv[2:6])
    torch.set_num_threads(1)
    words = {f"w{i}": i for i in range(V - 2)}
    words.update({"<pad>": V - 2, "</s>": V - 1})
    t = Tokenizer(models.WordLevel(vocab=words, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=PROMPT + NEW + 8, tie_word_embeddings=True,
                      pad_token_id=V - 2, eos_token_id=V - 1, bos_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    be = TransformersBackend(model, tok, batch_size=ROWS)
    prompts = [[(97 * r + 13 * i) % (V - 2) for i in range(PROMPT)] for r in range(ROWS)]
    conts = [[(31 * r + 7 * i) % (V - 2) for i in range(NEW)] for r in range(ROWS)]
    # burn-in (threads, allocator, kernels)
    be.generate_ids(prompts[:1], 1, SamplingConfig(max_new_tokens=2))
    be.token_logprobs(prompts[:1], [conts[0][:2]])

    def kib(field):
        return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1))

    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM, the peak resident set, to now
    before = kib("VmRSS")
    if MODE == "generate":
        n = sum(len(c.token_ids) for [c] in be.generate_ids(prompts, 1, SamplingConfig(max_new_tokens=NEW, seed=0,
                                                                                        top_logprobs=5)))
    else:
        n = sum(map(len, be.token_logprobs(prompts, conts)))
    print(json.dumps({"peak_mib": (kib("VmHWM") - before) / 1024, "tokens": n}))
""")


def measure_peak(mode: str, vocab: int, rows: int, prompt: int, new: int, repo=REPO) -> dict:
    """Peak resident set growth (MiB) of one `generate_ids` or `token_logprobs` call, in a fresh
    process running the backend of `repo`."""
    env = {**os.environ, "PYTHONPATH": str(repo), "TOKENIZERS_PARALLELISM": "false"}
    argv = [sys.executable, "-c", MEMORY_SCRIPT, mode, str(vocab), str(rows), str(prompt), str(new)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    if proc.returncode != 0:
        pytest.fail(f"memory probe failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# V = 131072, 4 rows, 96-token prompts, 128 new tokens; one (4, V) float32 tensor is 2 MiB.
LARGE = (131072, 4, 96, 128)
needs_proc = pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK),
    reason="needs Linux /proc/self/clear_refs to reset the peak-RSS counter",
)


@needs_proc
def test_large_vocab_generation_peak_memory_is_bounded():
    # bounded: per-step (4, V) temporaries + 16 prefill positions: measured 32-61 MiB.
    # Before (an autograd graph over every step, logits of all 96 prompt positions) it kept
    # ~10 (4, V) tensors per step: measured 1541 MiB on this shape.
    got = measure_peak("generate", *LARGE)
    assert got["tokens"] == 4 * 128  # no EOS drawn: every row decoded all 128 steps
    assert got["peak_mib"] < 150, got


@needs_proc
def test_large_vocab_teacher_forcing_peak_memory_is_bounded():
    # bounded: two (64, V) chunks at a time (32 MiB each): measured ~100 MiB. Before: logits and
    # log_softmax over (4, 224, V), 448 MiB each.
    got = measure_peak("token_logprobs", *LARGE)
    assert got["tokens"] == 4 * 128
    assert got["peak_mib"] < 200, got
