"""The transformers backend on a tiny random model built in conftest (offline)."""

import pytest
import torch

from prmflow.edu.entropy import token_entropy
from prmflow.policy import load_backend
from prmflow.policy.base import SamplingConfig
from prmflow.policy.hf_backend import TransformersBackend, load_model_and_tokenizer, token_offsets

PROMPTS = ["Question: Mia has 23 marbles.\nAnswer:\n", "Question: Leo\nAnswer:\n", "Question: x"]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend.from_pretrained(str(tiny_model_dir), batch_size=8)


def test_load_from_local_dir_and_clear_error_for_missing_hub_id(tiny_model_dir):
    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    assert model.config.num_hidden_layers == 2 and tok.eos_token_id is not None
    with pytest.raises(OSError, match="not a local model directory"):
        load_model_and_tokenizer("no-such-org/no-such-model-prmflow")


def test_shapes_offsets_and_seed_determinism(backend):
    s = SamplingConfig(max_new_tokens=12, seed=3, top_logprobs=2)
    a = backend.generate(PROMPTS, 3, s)
    b = backend.generate(PROMPTS, 3, s)
    assert [len(r) for r in a] == [3, 3, 3]
    for ra, rb in zip(a, b):
        for ca, cb in zip(ra, rb):
            assert ca.token_ids == cb.token_ids and ca.entropy == cb.entropy
            assert len(ca.entropy) == len(ca.token_ids) == len(ca.offsets) == len(ca.top_logprobs)
            assert all(len(t) == 2 for t in ca.top_logprobs)
            # spans tile the text: contiguous, and ending at len(text)
            if ca.offsets:
                assert ca.offsets[0][0] == 0 and ca.offsets[-1][1] == len(ca.text)
                assert all(x[1] == y[0] for x, y in zip(ca.offsets, ca.offsets[1:]))
    # a different seed gives a different sample somewhere
    c = backend.generate(PROMPTS, 3, SamplingConfig(max_new_tokens=12, seed=4))
    assert any(x.token_ids != y.token_ids for rx, ry in zip(a, c) for x, y in zip(rx, ry))


def test_samples_do_not_depend_on_batch_neighbours(backend):
    s = SamplingConfig(max_new_tokens=12, seed=0)
    together = backend.generate(PROMPTS, 2, s, seeds=[10, 11, 12])
    alone = backend.generate(PROMPTS[1:2], 2, s, seeds=[11])
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in together[1]]


def test_entropy_equals_recomputation_from_full_logits(backend):
    # the cached, batched, left-padded decode must give the same H_t as one uncached forward
    s = SamplingConfig(max_new_tokens=16, seed=1)
    comps = backend.generate(PROMPTS, 2, s)
    for prompt, row in zip(PROMPTS, comps):
        p = backend.encode(prompt)
        for c in row:
            if not c.token_ids:
                continue
            with torch.no_grad():
                logits = backend.model(torch.tensor([p + c.token_ids])).logits[0]
            H = token_entropy(logits[len(p) - 1 : len(p) - 1 + len(c.token_ids)])
            assert torch.allclose(H, torch.tensor(c.entropy), atol=1e-4)


def test_greedy_matches_hf_generate(backend):
    p = backend.encode(PROMPTS[0])
    ours = backend.generate([PROMPTS[0]], 1, SamplingConfig(temperature=0, max_new_tokens=20))[0][0]
    ref = backend.model.generate(
        torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=backend.eos_id, pad_token_id=backend.pad_id
    )[0, len(p) :].tolist()
    if backend.eos_id in ref:
        ref = ref[: ref.index(backend.eos_id)]
    assert ours.token_ids == ref


def test_prompt_encoded_once_for_n_samples(backend):
    before = backend.prompt_tokens_encoded
    backend.generate([PROMPTS[0]], 4, SamplingConfig(max_new_tokens=4))
    assert backend.prompt_tokens_encoded - before == len(backend.encode(PROMPTS[0]))


def test_offsets_never_split_a_multibyte_character(backend):
    tok = backend.tokenizer
    ids = tok("é€😀 ok", add_special_tokens=False)["input_ids"]
    text, spans = token_offsets(tok, ids)
    assert text == "é€😀 ok"
    assert spans[-1][1] == len(text)
    for a, b in spans:  # every non-empty span decodes to whole characters
        assert "\ufffd" not in text[a:b]


def test_bad_arguments(backend):
    with pytest.raises(ValueError, match="n must be"):
        backend.generate(PROMPTS, 0, SamplingConfig())
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend("nope", "x")


@pytest.fixture()
def eos_biased(tiny_model_dir):
    """A backend whose model emits EOS often (+3 on its logit), so rows stop at different
    steps: exercises stopping, padding of finished rows and batch compaction."""
    be = TransformersBackend.from_pretrained(str(tiny_model_dir), batch_size=64)

    def bias(module, args, output):
        output.logits[..., be.eos_id] += 3.0
        return output

    handle = be.model.register_forward_hook(bias)
    yield be
    handle.remove()


def test_stops_at_first_eos_with_varied_lengths(eos_biased):
    be = eos_biased
    prompts = [f"Question: {'x' * k}\nAnswer:\n" for k in range(1, 7)]
    comps = be.generate(prompts, 4, SamplingConfig(max_new_tokens=24, seed=5))
    lengths = [len(c.token_ids) for row in comps for c in row]
    assert len(set(lengths)) > 3  # rows really finished at different steps
    for prompt, row in zip(prompts, comps):
        p = be.encode(prompt)
        for c in row:
            assert be.eos_id not in c.token_ids
            assert c.finish_reason == ("stop" if len(c.token_ids) < 24 else c.finish_reason)
            if c.token_ids:  # what was fed back is exactly what is returned: entropies recompute
                with torch.no_grad():
                    logits = be.model(torch.tensor([p + c.token_ids])).logits[0]
                H = token_entropy(logits[len(p) - 1 : len(p) - 1 + len(c.token_ids)])
                assert torch.allclose(H, torch.tensor(c.entropy), atol=1e-4)


def test_greedy_matches_hf_generate_when_rows_stop_early(eos_biased):
    be = eos_biased
    prompts = [f"Question: {'y' * k} Mia\nAnswer:\n" for k in range(1, 9)]
    ours = be.generate(prompts, 1, SamplingConfig(temperature=0, max_new_tokens=20))
    for prompt, [c] in zip(prompts, ours):
        p = be.encode(prompt)
        ref = be.model.generate(
            torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=be.eos_id, pad_token_id=be.pad_id
        )[0, len(p) :].tolist()
        if be.eos_id in ref:
            ref = ref[: ref.index(be.eos_id)]
        assert c.token_ids == ref


def test_token_logprobs_match_the_sampled_tokens_top_logprobs(backend):
    """Teacher-forced log p of each sampled token equals the log-prob recorded while sampling
    (whenever the token is among the recorded top-k), in batches of mixed lengths."""
    s = SamplingConfig(max_new_tokens=12, seed=3, top_logprobs=5)
    comps = [c for row in backend.generate(PROMPTS, 2, s) for c in row]
    prompts = [backend.encode(p) for p in PROMPTS for _ in range(2)]
    lps = backend.token_logprobs(prompts, [c.token_ids for c in comps])
    checked = 0
    for c, lp in zip(comps, lps, strict=True):
        assert len(lp) == len(c.token_ids) and all(x <= 0 for x in lp)
        for t, tops, x in zip(c.token_ids, c.top_logprobs, lp, strict=True):
            recorded = dict(tops).get(t)
            if recorded is not None:
                assert x == pytest.approx(recorded, abs=1e-4)
                checked += 1
    assert checked > 0
    with pytest.raises(ValueError, match="continuations"):
        backend.token_logprobs(prompts, [])
