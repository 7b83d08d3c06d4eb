"""OpenAIBackend: against a fake OpenAI-compatible server (always), and against a real
`vllm serve` on a tiny model (only where `.venv-vllm` exists; `make vllm-env`).

The fake server (stdlib http.server on 127.0.0.1, random port, one thread per request) answers
`/v1/completions` with canned, deterministic completions whose top-k logprobs are known, and can
be told to fail, stall or echo headers, so parsing, entropy, retries, timeouts, the concurrency
limit and secret handling are all checked without a model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from prmflow.edu.entropy import topk_entropy
from prmflow.policy.base import SamplingConfig, sample_seed
from prmflow.policy.openai_backend import OpenAIBackend, OpenAIBackendError

EOS = 1  # the conftest tokenizer's </s>
SECRET = "sk-test-9f8e7d6c5b4a-do-not-leak"
KEY_ENV = "PRMFLOW_TEST_OPENAI_KEY"
TOP_P = [0.5 ** (i + 1) for i in range(24)]  # canned next-token probabilities of ids 10, 11, ...


# ---------------------------------------------------------------------- fake server


def canned_completion(body: dict[str, Any], *, with_token_ids: bool = True) -> dict[str, Any]:
    """A deterministic completion of body["prompt"]: up to 5 tokens (ids 20..69, derived from the
    prompt and seed), then EOS if max_tokens allows. Each position's top_logprobs lists the sampled
    token first (as vLLM does) and then the top k: ids 10.. with probabilities 1/2, 1/4, ..."""
    prompt, k = body["prompt"], body["logprobs"]
    base = sum(prompt) + (body.get("seed") or 0)
    gen = [20 + (base + 7 * t) % 50 for t in range(min(5, body["max_tokens"]))]
    finish = "length"
    if body["max_tokens"] > 5:
        gen.append(EOS)
        finish = "stop"
    tops = []
    for tid in gen:
        d = {f"token_id:{tid}": math.log(1e-3)}
        d.update({f"token_id:{10 + i}": math.log(TOP_P[i]) for i in range(k)})
        tops.append(d)
    choice: dict[str, Any] = {
        "index": 0,
        "text": "",
        "finish_reason": finish,
        "logprobs": {
            "tokens": [f"token_id:{t}" for t in gen],
            "top_logprobs": tops,
            "token_logprobs": [math.log(1e-3)] * len(gen),
            "text_offset": list(range(len(gen))),
        },
    }
    if with_token_ids:
        choice["token_ids"] = gen
    return {
        "id": "cmpl-x",
        "object": "text_completion",
        "model": body["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(gen), "total_tokens": len(prompt) + len(gen)},
    }


def canned_echo(body: dict[str, Any]) -> dict[str, Any]:
    """echo=True, max_tokens=0: logprob of prompt token t is -t/10 (None for the first)."""
    p = body["prompt"]
    lps = {
        "tokens": [f"token_id:{t}" for t in p],
        "token_logprobs": [None] + [-t / 10 for t in range(1, len(p))],
        "top_logprobs": [None] + [{f"token_id:{p[t]}": -t / 10} for t in range(1, len(p))],
    }
    return {
        "choices": [{"index": 0, "text": "", "finish_reason": "length", "logprobs": lps}],
        "usage": {"prompt_tokens": len(p), "completion_tokens": 1, "total_tokens": len(p) + 1},
    }


Reply = tuple[int, Any, dict[str, str]]  # status, JSON body (or str), headers


class FakeServer:
    """`behaviour(body, request_number) -> Reply | None` (None: the canned answer); `delay(n)`
    seconds before answering request n. Records bodies, Authorization headers and the peak
    number of requests in flight."""

    def __init__(self) -> None:
        self.behaviour: Callable[[dict[str, Any], int], Reply | None] = lambda body, n: None
        self.delay: Callable[[int], float] = lambda n: 0.0
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    n = len(fake.bodies)
                    fake.bodies.append(body)
                    fake.auth.append(self.headers.get("Authorization"))
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    time.sleep(fake.delay(n))
                    reply = fake.behaviour(body, n)
                    if reply is None:
                        reply = (200, canned_echo(body) if body.get("echo") else canned_completion(body), {})
                    status, payload, headers = reply
                    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass
                finally:
                    with fake.lock:
                        fake.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture()
def make_backend(fake, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    made = []

    def make(**kw: Any) -> OpenAIBackend:
        kw = {
            "api_key_env": KEY_ENV,
            "tokenizer": str(tiny_model_dir),
            "backoff": 0.01,
            "timeout": 5.0,
            "top_logprobs": 3,
            **kw,
        }
        be = OpenAIBackend(kw.pop("base_url", fake.url), "tiny", **kw)
        made.append(be)
        return be

    yield make
    for be in made:
        be.close()


SAMPLE = SamplingConfig(temperature=1.0, max_new_tokens=8, top_logprobs=3)


# ---------------------------------------------------------------------- fake-server tests


def test_parses_tokens_entropy_eos_seeds_and_counters(fake, make_backend):
    be = make_backend()
    prompts, seeds = [[5, 6, 7], [8, 9]], [11, 12]
    out = be.generate_ids(prompts, 3, SAMPLE, seeds=seeds)
    want_H = topk_entropy([math.log(p) for p in TOP_P[:3]])
    assert [len(row) for row in out] == [3, 3]
    for i, row in enumerate(out):
        for j, c in enumerate(row):
            body = canned_completion(
                {
                    "model": "tiny",
                    "prompt": prompts[i],
                    "max_tokens": 8,
                    "logprobs": 3,
                    "seed": sample_seed(seeds[i], j),
                }
            )
            assert c.token_ids == body["choices"][0]["token_ids"][:-1]  # EOS dropped
            assert c.finish_reason == "stop"
            assert c.entropy == pytest.approx([want_H] * 5)
            # the sampled token (logprob log 1e-3, outside the top 3) is not among the top logprobs
            assert c.top_logprobs == [[(10 + r, pytest.approx(math.log(TOP_P[r]))) for r in range(3)]] * 5
            text = be.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            assert c.text == text and len(c.offsets) == 5
    sent = {(tuple(b["prompt"]), b["seed"]) for b in fake.bodies}
    assert sent == {(tuple(p), sample_seed(s, j)) for p, s in zip(prompts, seeds) for j in range(3)}
    b = fake.bodies[0]
    assert b["model"] == "tiny" and b["n"] == 1 and b["logprobs"] == 3 and b["temperature"] == 1.0
    assert b["return_token_ids"] and b["return_tokens_as_token_ids"] and b["top_k"] == 0
    assert be.forward_passes == 6 and be.generated_tokens == 30 and be.prompt_tokens_encoded == 3 * 3 + 3 * 2

    short = be.generate_ids([[5, 6]], 1, SamplingConfig(temperature=0, max_new_tokens=4))
    assert short[0][0].finish_reason == "length" and len(short[0][0].token_ids) == 4
    assert short[0][0].top_logprobs == []  # none asked for
    assert "seed" not in fake.bodies[-1] and fake.bodies[-1]["temperature"] == 0.0  # greedy: no seed


def test_entropy_uses_top_logprobs_k_even_when_more_are_asked(fake, make_backend):
    be = make_backend(top_logprobs=2)
    [[c]] = be.generate_ids([[5]], 1, SamplingConfig(max_new_tokens=3, top_logprobs=4))
    assert fake.bodies[0]["logprobs"] == 4
    assert c.entropy == pytest.approx([topk_entropy([math.log(p) for p in TOP_P[:2]])] * 3)
    assert [t for t, _ in c.top_logprobs[0]] == [10, 11, 12, 13]


def test_token_ids_recovered_from_token_id_strings(fake, make_backend):
    be = make_backend()
    fake.behaviour = lambda body, n: (200, canned_completion(body, with_token_ids=False), {})
    [[c]] = be.generate_ids([[5, 6, 7]], 1, SAMPLE, seeds=[3])
    ref = canned_completion({**fake.bodies[0]})["choices"][0]["token_ids"]
    assert c.token_ids == ref[:-1]

    def disagree(body, n):
        r = canned_completion(body)
        r["choices"][0]["token_ids"][0] += 1
        return 200, r, {}

    fake.behaviour = disagree
    with pytest.raises(OpenAIBackendError, match="disagree"):
        be.generate_ids([[5, 6, 7]], 1, SAMPLE)


def test_plain_openai_server_falls_back_to_retokenising(fake, make_backend):
    be = make_backend(vllm_extensions=False)
    ids = be.encode("23 + 14 = 37")

    def plain(body, n):
        tops = [{"x": math.log(0.5), "y": math.log(0.25)}] * (len(ids) + 1)
        lp = {"tokens": ["?"] * (len(ids) + 1), "top_logprobs": tops, "token_logprobs": [-1.0] * (len(ids) + 1)}
        return 200, {"choices": [{"text": "23 + 14 = 37", "finish_reason": "stop", "logprobs": lp}]}, {}

    fake.behaviour = plain
    [[c]] = be.generate_ids([[5]], 1, SamplingConfig(max_new_tokens=30))
    assert c.token_ids == ids and c.text == "23 + 14 = 37" and len(c.entropy) == len(ids)
    assert not {"return_token_ids", "return_tokens_as_token_ids", "top_k"} & set(fake.bodies[0])


def test_retries_after_two_500s(fake, make_backend, caplog):
    be = make_backend(max_retries=3)
    fake.behaviour = lambda body, n: (500, {"error": {"message": "engine hiccup"}}, {}) if n < 2 else None
    with caplog.at_level(logging.WARNING, logger="prmflow.policy.openai_backend"):
        [[c]] = be.generate_ids([[5, 6]], 1, SAMPLE)
    assert len(fake.bodies) == 3 and be.retries == 2 and c.token_ids
    assert caplog.text.count("HTTP 500: engine hiccup") == 2 and fake.url in caplog.text

    fake.bodies.clear()
    fake.behaviour = lambda body, n: (429, "slow down", {"Retry-After": "0"}) if n == 0 else None
    be.generate_ids([[5, 6]], 1, SAMPLE)
    assert len(fake.bodies) == 2


def test_gives_up_with_an_error_naming_url_and_status(fake, make_backend):
    be = make_backend(max_retries=2)
    fake.behaviour = lambda body, n: (503, {"error": {"message": "overloaded"}}, {})
    with pytest.raises(OpenAIBackendError) as e:
        be.generate_ids([[5]], 1, SAMPLE)
    msg = str(e.value)
    assert f"{fake.url}/completions" in msg and "HTTP 503: overloaded" in msg and "3 attempt(s)" in msg
    assert len(fake.bodies) == 3

    fake.bodies.clear()  # a client error is not retried
    fake.behaviour = lambda body, n: (400, {"error": {"message": "logprobs 25 > max 20"}}, {})
    with pytest.raises(OpenAIBackendError, match=r"HTTP 400: logprobs 25 > max 20"):
        be.generate_ids([[5]], 1, SAMPLE)
    assert len(fake.bodies) == 1


def test_timeouts_are_retried_then_reported(fake, make_backend):
    be = make_backend(timeout=0.3, max_retries=1)
    fake.delay = lambda n: 1.5 if n == 0 else 0.0  # the first request stalls, the retry answers
    t0 = time.perf_counter()
    [[c]] = be.generate_ids([[5]], 1, SAMPLE)
    assert c.token_ids and be.retries == 1 and time.perf_counter() - t0 < 1.4

    fake.delay = lambda n: 1.5  # always stalls
    t0 = time.perf_counter()
    with pytest.raises(OpenAIBackendError, match=r"failed after 2 attempt\(s\): timed out after 0.3s") as e:
        be.generate_ids([[5]], 1, SAMPLE)
    assert fake.url in str(e.value) and time.perf_counter() - t0 < 1.4


def test_connection_refused_names_the_url(make_backend):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    be = make_backend(base_url=f"http://127.0.0.1:{port}", max_retries=1)
    assert be.base_url == f"http://127.0.0.1:{port}/v1"
    with pytest.raises(
        OpenAIBackendError,
        match=rf"POST http://127.0.0.1:{port}/v1/completions failed after 2 "
        r"attempt\(s\): connection error",
    ):
        be.generate_ids([[5]], 1, SAMPLE)


def test_concurrency_limit_is_respected_and_order_kept(fake, make_backend):
    be = make_backend(concurrency=3)
    rng = random.Random(0)
    delays = [0.05 + 0.1 * rng.random() for _ in range(12)]
    fake.delay = lambda n: delays[n]
    prompts = [[5 + i, 6] for i in range(4)]
    out = be.generate_ids(prompts, 3, SAMPLE, seeds=[0, 1, 2, 3])
    assert len(fake.bodies) == 12
    assert fake.max_inflight == 3  # parallel, but never more than the limit
    for i, row in enumerate(out):  # answers land with their prompt and sample despite the shuffle
        for j, c in enumerate(row):
            body = {"model": "tiny", "prompt": prompts[i], "max_tokens": 8, "logprobs": 3, "seed": sample_seed(i, j)}
            assert c.token_ids == canned_completion(body)["choices"][0]["token_ids"][:-1]


def test_api_key_is_sent_but_never_shown(fake, make_backend, caplog):
    be = make_backend(max_retries=1)
    assert SECRET not in repr(be) and KEY_ENV in repr(be)
    assert SECRET not in repr(vars(be))  # not stored on the object either
    with caplog.at_level(logging.DEBUG):  # includes httpx / httpcore debug logging
        be.generate_ids([[5]], 1, SAMPLE)
        assert fake.auth[-1] == f"Bearer {SECRET}"
        # a server that echoes the header back in its errors, retried then given up
        fake.behaviour = lambda body, n: (500, {"error": {"message": f"bad auth {fake.auth[n]}"}}, {})
        with pytest.raises(OpenAIBackendError) as e1:
            be.generate_ids([[5]], 1, SAMPLE)
        fake.behaviour = lambda body, n: (401, {"error": {"message": f"rejected {fake.auth[n]}"}}, {})
        with pytest.raises(OpenAIBackendError) as e2:
            be.generate_ids([[5]], 1, SAMPLE)
    for e in (e1, e2):
        shown = str(e.value) + repr(e.value) + "".join(traceback.format_exception(e.value))
        assert SECRET not in shown and "***" in shown
    assert KEY_ENV in str(e2.value)  # the 401 says where the key comes from
    assert SECRET not in caplog.text and "bad auth Bearer ***" in caplog.text


def test_no_key_variable_means_no_header(fake, make_backend, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    make_backend().generate_ids([[5]], 1, SAMPLE)
    assert fake.auth == [None]


def test_token_logprobs_from_echo(fake, make_backend):
    be = make_backend()
    got = be.token_logprobs([[5, 6, 7], [8]], [[9, 10], []])
    assert got == [pytest.approx([-0.3, -0.4]), []]
    assert len(fake.bodies) == 1 and fake.bodies[0]["echo"] and fake.bodies[0]["max_tokens"] == 0


def test_load_backend_and_argument_checks(fake, tiny_model_dir, monkeypatch):
    from prmflow.policy import BACKENDS, load_backend

    assert "openai" in BACKENDS
    be = load_backend(
        "openai",
        "tiny",
        base_url=fake.url,
        tokenizer=str(tiny_model_dir),
        batch_size=64,
        api_key_env=None,
        backoff=0.01,
    )
    assert be.generate_ids([[5]], 1, SAMPLE)[0][0].token_ids
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    assert load_backend("openai", "tiny", tokenizer=str(tiny_model_dir)).base_url == fake.url
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        load_backend("openai", "tiny", tokenizer=str(tiny_model_dir))
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("localhost:8000", "tiny", tokenizer=str(tiny_model_dir))
    with pytest.raises(ValueError, match="top_logprobs"):
        OpenAIBackend(fake.url, "tiny", tokenizer=str(tiny_model_dir), top_logprobs=0)


# ---------------------------------------------------------------------- real vLLM server

from conftest import VLLM_K as K  # noqa: E402
from conftest import VLLM_MAX_NEW as MAX_NEW  # noqa: E402
from conftest import VLLM_PROMPTS as PROMPTS  # noqa: E402
from conftest import VLLM_PY  # noqa: E402
from conftest import VLLM_SEEDS as SEEDS  # noqa: E402

ATOL_HF = 1e-3  # float32 vLLM vs float32 transformers (logprobs agree to ~1e-5; slack for sums)
ATOL_VLLM = 1e-5  # the same engine behind the HTTP server and the offline VLLMBackend

OFFLINE_SCRIPT = """
import json, sys
from prmflow.policy.base import SamplingConfig
from prmflow.policy.vllm_backend import VLLMBackend
spec = json.load(open(sys.argv[1]))
be = VLLMBackend(spec["model"], dtype="float32", seed=0, entropy_top_k=spec["k"], kv_cache_space_gb=1, max_model_len=256)
greedy = be.generate(spec["prompts"], 1, SamplingConfig(temperature=0, max_new_tokens=spec["max_new"]))
sampled = be.generate(spec["prompts"], 3, SamplingConfig(temperature=1.0, max_new_tokens=spec["max_new"]),
                      seeds=spec["seeds"])
rows = lambda out: [[c.to_row() for c in row] for row in out]
json.dump({"greedy": rows(greedy), "sampled": rows(sampled)}, open(sys.argv[2], "w"))
"""


def _vllm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from prmflow.policy.vllm_backend import engine_env_defaults

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        **engine_env_defaults(),
        **(extra or {}),
    }
    env.pop(KEY_ENV, None)
    return env


@pytest.fixture(scope="module")
def trained_model(vllm_tiny_model) -> Path:
    """conftest's trained head_dim-32 tiny Llama (shared with tests/test_vllm_backend.py)."""
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(vllm_tiny_model).eos_token_id == EOS
    return vllm_tiny_model


@pytest.fixture(scope="module")
def vllm_server(trained_model, tmp_path_factory):
    """A `vllm serve`-equivalent server on a free port, with an API key; killed at module end."""
    from conftest import vllm_server_process

    key = "vllm-test-key-" + os.urandom(6).hex()
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    with vllm_server_process(
        trained_model, "tiny", key, log_path, _vllm_env(), max_model_len=256, max_logprobs=K
    ) as base:
        yield base, key


@pytest.fixture(scope="module")
def remote(vllm_server, trained_model):
    base, key = vllm_server
    os.environ[KEY_ENV] = key
    be = OpenAIBackend(
        base, "tiny", api_key_env=KEY_ENV, tokenizer=str(trained_model), top_logprobs=K, concurrency=32, timeout=60
    )
    yield be
    be.close()
    os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def remote_runs(remote):
    greedy = remote.generate(PROMPTS, 1, SamplingConfig(temperature=0, max_new_tokens=MAX_NEW))
    sampled = remote.generate(PROMPTS, 3, SamplingConfig(temperature=1.0, max_new_tokens=MAX_NEW), seeds=SEEDS)
    return greedy, sampled


@pytest.fixture(scope="module")
def hf(trained_model):
    from prmflow.policy.hf_backend import TransformersBackend

    return TransformersBackend.from_pretrained(str(trained_model), batch_size=8)


def _topk_and_full_entropy(hf, prompt_ids, token_ids):
    """(top-K estimate eq. 2, exact entropy) before each token, from transformers' full logits."""
    import torch

    from prmflow.edu.entropy import token_entropy

    if not token_ids:
        return [], []
    with torch.no_grad():
        logits = hf.model(torch.tensor([prompt_ids + token_ids])).logits[0]
    logits = logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(token_ids)]
    top = logits.float().log_softmax(-1).topk(K, dim=-1).values.tolist()
    return [topk_entropy(row) for row in top], token_entropy(logits).tolist()


def test_real_server_greedy_matches_transformers_token_for_token(remote_runs, hf):
    greedy, _ = remote_runs
    ref = hf.generate(PROMPTS, 1, SamplingConfig(temperature=0, max_new_tokens=MAX_NEW))
    for [got], [want] in zip(greedy, ref, strict=True):
        assert got.token_ids == want.token_ids
        assert got.finish_reason == want.finish_reason
        assert got.text == want.text and got.offsets == want.offsets
    assert sum(len(c.token_ids) for [c] in greedy) > 20


def test_real_server_matches_offline_vllm_backend_and_topk_entropy(remote_runs, remote, hf, trained_model, tmp_path):
    """Same seeds -> the same samples as the offline VLLMBackend (same engine, same seed formula),
    entropies equal to its top-K estimate within ATOL_VLLM, and to the top-K estimate from
    transformers' full logits within ATOL_HF (a lower bound on the exact entropy)."""
    greedy, sampled = remote_runs
    spec = {"model": str(trained_model), "prompts": PROMPTS, "max_new": MAX_NEW, "seeds": SEEDS, "k": K}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [str(VLLM_PY), "-c", OFFLINE_SCRIPT, str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=_vllm_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    offline = json.loads((tmp_path / "out.json").read_text())
    n_tok = 0
    for name, run in (("greedy", greedy), ("sampled", sampled)):
        for row, off_row in zip(run, offline[name], strict=True):
            for c, o in zip(row, off_row, strict=True):
                assert c.token_ids == o["token_ids"] and c.finish_reason == o["finish_reason"], name
                assert c.entropy == pytest.approx(o["entropy"], abs=ATOL_VLLM)
                n_tok += len(c.token_ids)
    assert len({tuple(c.token_ids) for row in sampled for c in row}) > len(PROMPTS)  # samples differ
    gaps = []
    for run in (greedy, sampled):
        for row, prompt in zip(run, PROMPTS, strict=True):
            for c in row:
                est, full = _topk_and_full_entropy(hf, remote.encode(prompt), c.token_ids)
                assert c.entropy == pytest.approx(est, abs=ATOL_HF)
                assert all(h_k <= h + ATOL_HF for h_k, h in zip(c.entropy, full))
                gaps += [h - h_k for h_k, h in zip(c.entropy, full)]
    assert n_tok > 50
    print(
        f"H - H_{K}: mean {sum(gaps) / len(gaps):.4f}, max {max(gaps):.4f} nats over {len(gaps)} tokens",
        file=sys.stderr,
    )


def test_real_server_token_logprobs_and_auth(remote, remote_runs, hf, vllm_server, trained_model, monkeypatch):
    greedy, _ = remote_runs
    prompt_ids = [remote.encode(p) for p in PROMPTS]
    got = remote.token_logprobs(prompt_ids, [c.token_ids for [c] in greedy])
    want = hf.token_logprobs(prompt_ids, [c.token_ids for [c] in greedy])
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=ATOL_HF)
    base, key = vllm_server
    monkeypatch.setenv("PRMFLOW_TEST_WRONG_KEY", "wrong-" + key)
    with OpenAIBackend(base, "tiny", api_key_env="PRMFLOW_TEST_WRONG_KEY", tokenizer=str(trained_model)) as bad:
        with pytest.raises(OpenAIBackendError, match="HTTP 401") as e:
            bad.generate(["Question:"], 1, SamplingConfig(max_new_tokens=2))
    assert key not in str(e.value) and "PRMFLOW_TEST_WRONG_KEY" in str(e.value)


def test_real_server_survives_a_big_seeded_batch(remote):
    """Regression: with chunked prefill (vLLM's default), vllm-cpu 0.32 dies on seeded requests whose
    prefill is split across engine steps ("CPU Generator does not use offset"); `vllm_server_argv`
    turns chunked prefill off. 32 distinct 120-token prompts in flight exceed the 2048-token step budget."""
    rng = random.Random(0)
    prompts = [[rng.randrange(2, 300) for _ in range(120)] for _ in range(48)]
    out = remote.generate_ids(prompts, 2, SamplingConfig(temperature=1.0, max_new_tokens=4), seeds=list(range(48)))
    assert all(len(c.token_ids) == 4 or c.finish_reason == "stop" for row in out for c in row)
