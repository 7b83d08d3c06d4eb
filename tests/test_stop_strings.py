"""Stop strings: the cut rule (`cut_at_stop`, `apply_stop`) and every backend applying it.

A sample stopped on a stop string must equal the same sample generated without stop strings and
then cut by `apply_stop`: same tokens, text, offsets (entropies up to float noise: rows that
stop early leave the batch, which changes the shape of later matrix products).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from dataclasses import replace

import pytest
from conftest import REPO, VLLM_PY, vllm_missing

from prmflow.policy.base import Completion, SamplingConfig, apply_stop, cut_at_stop
from prmflow.policy.hf_backend import TransformersBackend

PROMPTS = ["Question: Mia has 23 marbles.\nAnswer:\n", "Question: Leo\nAnswer:\n", "Question: x", "Q"]


# ---------------------------------------------------------------------------- the rule


def test_cut_keeps_tokens_starting_before_the_stop_string():
    # "ab|cd|e\nQ|uestion" : tokens 0..3 with spans (0,2) (2,4) (4,7) (7,15)
    text, spans = "abcde\nQuestion", [(0, 2), (2, 4), (4, 7), (7, 14)]
    assert cut_at_stop(text, spans, ["\nQuestion"]) == (3, 5)  # token 2 "e\nQ" starts at 4 < 5: kept
    assert cut_at_stop(text, spans, ["cd"]) == (1, 2)  # "cd" is token 1, starting at the cut: dropped
    assert cut_at_stop(text, spans, ["zz", "de", "bc"]) == (1, 1)  # earliest occurrence wins, any order
    assert cut_at_stop(text, spans, ["ab"]) == (0, 0)  # stop at the very start: nothing kept
    assert cut_at_stop(text, spans, ["zz"]) is None


def test_apply_stop_clips_the_straddling_token_and_sets_finish_reason():
    c = Completion(
        "abcde\nQuestion",
        [1, 2, 3, 4],
        [(0, 2), (2, 4), (4, 7), (7, 14)],
        [0.1, 0.2, 0.3, 0.4],
        [[(1, -0.1)], [(2, -0.2)], [(3, -0.3)], [(4, -0.4)]],
        "length",
    )
    cut = apply_stop(c, ["\nQuestion"])
    assert cut.text == "abcde" and cut.token_ids == [1, 2, 3] and cut.entropy == [0.1, 0.2, 0.3]
    assert cut.offsets == [(0, 2), (2, 4), (4, 5)]  # spans still tile the kept text
    assert cut.top_logprobs == c.top_logprobs[:3] and cut.finish_reason == "stop"
    assert apply_stop(c, ["zz"]) is c and apply_stop(c, ()) is c


def test_sampling_config_stop_validation():
    assert SamplingConfig(stop=["a", "b"]).stop == ("a", "b")  # lists (from YAML) become tuples
    with pytest.raises(ValueError, match="tuple of strings"):
        SamplingConfig(stop="Question:")
    with pytest.raises(ValueError, match="non-empty"):
        SamplingConfig(stop=("",))


# ---------------------------------------------------------------------------- transformers


def pick_stops(rows) -> tuple[str, ...]:
    """Two stop strings that occur in the middle of some sampled texts (several tokens long)."""
    texts = [c.text for row in rows for c in row if len(c.text) > 12]
    assert len(texts) >= 2
    return texts[0][4:9], texts[1][6:8]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend.from_pretrained(str(tiny_model_dir), batch_size=64)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_transformers_stop_equals_cut_of_unstopped_sample(backend, temperature):
    s = SamplingConfig(temperature=temperature, max_new_tokens=24, seed=3, top_logprobs=2)
    full = backend.generate(PROMPTS, 3, s)
    stops = pick_stops(full)
    before = backend.generated_tokens
    stopped = backend.generate(PROMPTS, 3, replace(s, stop=stops))
    n_stopped = backend.generated_tokens - before
    n_cut = 0
    for row_f, row_s in zip(full, stopped, strict=True):
        for f, c in zip(row_f, row_s, strict=True):
            want = apply_stop(f, stops)
            n_cut += want is not f
            assert (c.token_ids, c.text, c.offsets, c.finish_reason) == (
                want.token_ids,
                want.text,
                want.offsets,
                want.finish_reason,
            )
            assert c.entropy == pytest.approx(want.entropy, abs=1e-5)
            assert [[t for t, _ in tops] for tops in c.top_logprobs] == [
                [t for t, _ in tops] for tops in want.top_logprobs
            ]
            assert not any(x in c.text for x in stops)
    assert n_cut >= 2
    # stopped rows really stopped decoding (fewer tokens drawn), they were not merely cut afterwards
    assert n_stopped < sum(len(f.token_ids) + (f.finish_reason == "stop") for row in full for f in row)


def test_transformers_empty_stop_is_the_default(backend):
    s = SamplingConfig(max_new_tokens=16, seed=1, top_logprobs=2)
    a = backend.generate(PROMPTS, 2, s)
    b = backend.generate(PROMPTS, 2, SamplingConfig(max_new_tokens=16, seed=1, top_logprobs=2, stop=()))
    assert [[c.to_row() for c in r] for r in a] == [[c.to_row() for c in r] for r in b]


# ---------------------------------------------------------------------------- openai (fake server)


def test_openai_sends_stop_and_cuts_the_returned_tokens(tiny_model_dir, monkeypatch):
    from test_openai_backend import FakeServer

    from prmflow.policy.openai_backend import OpenAIBackend

    server = FakeServer()
    tok_be = TransformersBackend.from_pretrained(str(tiny_model_dir))
    text = "23 + 14 = 37\nThe answer is 37\nQuestion: Leo"
    ids = tok_be.tokenizer(text, add_special_tokens=False)["input_ids"]

    def vllm_like(body, n):  # a server that stopped on the token completing "Question:"
        tops = [{f"token_id:{t}": -0.5, "token_id:7": -1.5} for t in ids]
        choice = {
            "index": 0,
            "text": "23 + 14 = 37\nThe answer is 37\n",
            "token_ids": ids,
            "finish_reason": "stop" if body.get("stop") else "length",
            "logprobs": {
                "tokens": [f"token_id:{t}" for t in ids],
                "top_logprobs": tops,
                "token_logprobs": [-0.5] * len(ids),
            },
        }
        return 200, {"choices": [choice], "usage": {"prompt_tokens": 3}}, {}

    server.behaviour = vllm_like
    try:
        be = OpenAIBackend(server.url, "tiny", tokenizer=str(tiny_model_dir), top_logprobs=2, backoff=0.01)
        [[plain]] = be.generate(["Q"], 1, SamplingConfig(max_new_tokens=64, seed=0))
        [[cut]] = be.generate(["Q"], 1, SamplingConfig(max_new_tokens=64, seed=0, stop=("Question:",)))
        be.close()
    finally:
        server.close()
    assert "stop" not in server.bodies[0] and server.bodies[1]["stop"] == ["Question:"]
    assert plain.text == text and plain.finish_reason == "length"
    want = apply_stop(plain, ("Question:",))
    assert cut == want and cut.text == "23 + 14 = 37\nThe answer is 37\n" and cut.finish_reason == "stop"


# ---------------------------------------------------------------------------- vLLM (.venv-vllm)

VLLM_SCRIPT = textwrap.dedent("""
    import json, sys
    from prmflow.policy.base import SamplingConfig
    from prmflow.policy.vllm_backend import VLLMBackend
    spec = json.load(open(sys.argv[1]))
    be = VLLMBackend(spec["model"], dtype="float32", seed=0, kv_cache_space_gb=1)
    out = {}
    for name, stop in spec["stops"].items():
        s = SamplingConfig(temperature=0, max_new_tokens=spec["max_new"], stop=tuple(stop))
        out[name] = [[c.to_row() for c in row] for row in be.generate(spec["prompts"], 1, s)]
    json.dump(out, open(sys.argv[2], "w"))
""")


@pytest.mark.skipif(vllm_missing() is not None, reason=str(vllm_missing()))
def test_vllm_stop_agrees_with_transformers(vllm_tiny_model, tmp_path):
    hf = TransformersBackend.from_pretrained(str(vllm_tiny_model), batch_size=8)
    greedy = SamplingConfig(temperature=0, max_new_tokens=24)
    stops = {"none": [], "picked": list(pick_stops(hf.generate(PROMPTS, 1, greedy))), "common": ["\nThe", " = "]}
    (tmp_path / "spec.json").write_text(
        json.dumps({"model": str(vllm_tiny_model), "prompts": PROMPTS, "max_new": 24, "stops": stops})
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(VLLM_PY), "-c", VLLM_SCRIPT, str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    if proc.returncode != 0:
        pytest.fail(f"vLLM stop script failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    got = json.loads((tmp_path / "out.json").read_text())
    full = hf.generate(PROMPTS, 1, greedy)
    n_cut = 0
    for name, stop in stops.items():
        ref = hf.generate(PROMPTS, 1, replace(greedy, stop=tuple(stop)))
        for [v], [r], [f] in zip(got[name], ref, full, strict=True):
            assert (v["token_ids"], v["text"], [tuple(o) for o in v["offsets"]], v["finish_reason"]) == (
                r.token_ids,
                r.text,
                r.offsets,
                r.finish_reason,
            ), name
            n_cut += apply_stop(f, stop) is not f
    assert n_cut >= 2  # some rows really ended on a stop string
