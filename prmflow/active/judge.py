r"""An LLM judge as labeler: critique each step, stop at the first error, conclude with its index.

ActPRM (arXiv 2504.10559) labels the solutions it selects with a strong reasoning model that
reads the solution as numbered paragraphs and returns the index of the earliest wrong one, the
protocol of ProcessBench's critique prompt (QwenLM/ProcessBench, arXiv 2412.06559). Our prompt
(`JUDGE_TEMPLATE`, written for prmflow in that spirit) wraps step k as `<paragraph_k>...</paragraph_k>`,
asks for an analysis per paragraph that stops at the first incorrect one, and a conclusion
`\boxed{k}` (k = -1 when every paragraph is correct). The request is an OpenAI-compatible
`POST {base_url}/chat/completions` with one user message, `temperature` 0 and `max_tokens`.

What `parse_judge_reply(text, n_steps)` accepts (anything else -> None, i.e. unparseable):

1. Boxes. Every `\boxed{...}` is found with balanced braces (`\{`, `\}` do not nest). If any
   `\boxed{` is never closed (a truncated reply), None. The conclusion is the box that opens
   last; its content, stripped of whitespace, must be an ASCII integer k written without a
   plus sign or leading zeros with -1 <= k < n_steps. Every other box whose content is such an
   integer must hold the same k (conflicting boxes -> None); boxes holding anything else
   (`\boxed{x + 1}`, `\boxed{}`, `\boxed{{2}}`) are ignored unless they are the last one.
2. Only when the reply has no `\boxed{` at all: its last non-blank line, stripped, equal
   (ignoring case, optional final period) to `Conclusion: correct` (-> -1) or
   `Conclusion: incorrect at paragraph k` (-> k, same range rule).

    >>> parse_judge_reply("Paragraph 0: ... correct.\nParagraph 1: 7 - 2 is 5, not 4. incorrect.\n\\boxed{1}", 3)
    1
    >>> parse_judge_reply("All good. \\boxed{-1}", 3), parse_judge_reply("\\boxed{3}", 3)   # 3 is out of range
    (-1, None)
    >>> parse_judge_reply("\\boxed{0} ... wait, \\boxed{2}", 3), parse_judge_reply("so \\boxed{1", 3)
    (None, None)
    >>> parse_judge_reply("Paragraph 0: fine.\nConclusion: incorrect at paragraph 1.", 3)
    1

A reply cut by the token budget (`finish_reason == "length"`) is unparseable whatever it says.
Unparseable replies are asked again up to `max_retries` times, then the solution is unlabeled.
Transport errors, timeouts, HTTP 429 and 5xx are retried up to `max_retries` times after
`backoff * 2**i` seconds (i = 0, 1, ...), then `JudgeUnavailable` is raised (the caller keeps
what it already paid for); other HTTP errors raise `JudgeError` at once.

The API key is read from the environment variable *named* by `api_key_env` at every request
and sent as `Authorization: Bearer ...` (no header when the variable is unset or empty, for
local servers). It is never stored on the labeler, never in its repr, and redacted from every
error message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from prmflow.active.labelers import UNLABELED, LabelerCost, LabelResult, prefix_labels

JUDGE_TEMPLATE = """\
The following is a math problem and a proposed solution. The solution is split into paragraphs, \
each enclosed in tags and indexed from 0 (<paragraph_0>...</paragraph_0>, <paragraph_1>...</paragraph_1>, ...).

[Math Problem]

{problem}

[Solution]

{paragraphs}

Find the earliest paragraph that contains an error: a wrong calculation, a number that is neither \
in the problem nor in an earlier paragraph, a step that does not follow from the problem, or a \
wrong final answer.

Review the paragraphs in order. For each one write "Paragraph i:" and a short analysis ending in \
"correct" or "incorrect". Stop at the first incorrect paragraph; do not review the ones after it.

Then conclude with the index of the earliest incorrect paragraph, or -1 if every paragraph is \
correct, in \\boxed{{}} (for example \\boxed{{2}} or \\boxed{{-1}}). Write no other \\boxed{{}} in your reply."""

_TOKENS = re.compile(r"\\boxed\{|\\[{}]|[{}]")
_INDEX = re.compile(r"-1|0|[1-9][0-9]{0,8}")
_CONCLUSION = re.compile(
    r"conclusion:[ \t]*(?:(correct)|incorrect at paragraph[ \t]+(0|[1-9][0-9]{0,8}))\.?", re.IGNORECASE
)
_MAX_BOX = 64  # longer box contents are never an index (and are not copied)


def judge_prompt(problem: str, steps: Sequence[str]) -> str:
    """The user message: the problem and the steps as numbered paragraphs.

    >>> print(judge_prompt("Q?", ["1 + 1 = 2\\n", "The answer is 2"]).split("[Solution]")[1].split("Find")[0].strip())
    <paragraph_0>
    1 + 1 = 2
    </paragraph_0>
    <BLANKLINE>
    <paragraph_1>
    The answer is 2
    </paragraph_1>
    """
    paragraphs = "\n\n".join(f"<paragraph_{i}>\n{s.strip()}\n</paragraph_{i}>" for i, s in enumerate(steps))
    return JUDGE_TEMPLATE.format(problem=problem.strip(), paragraphs=paragraphs)


def _boxes(text: str) -> list[str | None] | None:
    """Contents of every complete `\\boxed{...}` by opening position (None = too long to be an
    index); None if a `\\boxed{` never closes. One pass, O(len(text))."""
    stack: list[int] = []  # per open brace: content start of a \boxed{, or -1 for a plain "{"
    found: list[tuple[int, str | None]] = []
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok.startswith("\\boxed"):
            stack.append(m.end())
        elif tok == "{":
            stack.append(-1)
        elif tok == "}" and stack:  # an unmatched "}" is ignored
            start = stack.pop()
            if start >= 0:
                found.append((start, text[start : m.start()] if m.start() - start <= _MAX_BOX else None))
    if any(s >= 0 for s in stack):
        return None
    return [content for _, content in sorted(found)]


def _index(s: str | None, n_steps: int) -> int | None:
    if s is None or not _INDEX.fullmatch(s.strip()):
        return None
    k = int(s.strip())
    return k if -1 <= k < n_steps else None


def parse_judge_reply(text: str, n_steps: int) -> int | None:
    """The first-error index a judge reply concludes with, or None (module docstring). Never raises."""
    if not isinstance(text, str) or n_steps < 1:
        return None
    if "\\boxed{" in text:
        boxes = _boxes(text)
        if not boxes:
            return None
        k = _index(boxes[-1], n_steps)
        if k is None:
            return None
        others = [b for b in boxes[:-1] if b is not None and _INDEX.fullmatch(b.strip())]
        return k if all(int(b.strip()) == k for b in others) else None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    m = _CONCLUSION.fullmatch(lines[-1]) if lines else None
    if m is None:
        return None
    return -1 if m.group(1) else _index(m.group(2), n_steps)


class JudgeError(RuntimeError):
    """The judge endpoint refused the request (a 4xx other than 429): fix the config."""


class JudgeUnavailable(RuntimeError):
    """The judge endpoint kept failing (network, timeout, 429, 5xx) after every retry."""


class JudgeLabeler:
    """Label by an LLM critic behind an OpenAI-compatible `/chat/completions` endpoint.

    `sleep` is injectable for tests; `client` defaults to an `httpx.Client`.
    """

    name = "judge"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "PRMFLOW_JUDGE_API_KEY",
        max_retries: int = 3,
        timeout: float = 60.0,
        max_tokens: int = 2048,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ):
        if max_retries < 0 or timeout <= 0 or max_tokens < 1 or backoff < 0:
            raise ValueError("need max_retries >= 0, timeout > 0, max_tokens >= 1, backoff >= 0")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.max_retries, self.timeout, self.max_tokens, self.backoff = max_retries, timeout, max_tokens, backoff
        self._sleep = sleep
        self._client = client or httpx.Client()
        self.cost = LabelerCost()

    def __repr__(self) -> str:
        return f"JudgeLabeler(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    __str__ = __repr__

    def close(self) -> None:
        self._client.close()

    def label(self, row: Mapping[str, Any], steps: Sequence[str]) -> LabelResult:
        """Ask the judge; retry unparseable replies; unlabeled after max_retries + 1 of them."""
        self.cost.calls += 1
        if not steps:
            return UNLABELED
        payload = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": judge_prompt(str(row["problem"]), steps)}],
        }
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.cost.retries += 1
            text, finish_reason = self._complete(payload)
            k = None if finish_reason == "length" else parse_judge_reply(text, len(steps))
            if k is not None:
                return LabelResult(k, prefix_labels(k, len(steps)))
            self.cost.unparseable += 1
        return UNLABELED

    # ----------------------------------------------------------------------- HTTP

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "")

    def _redact(self, s: str) -> str:
        key = self._key()
        return s.replace(key, "***") if key else s

    def _complete(self, payload: dict[str, Any]) -> tuple[str, str | None]:
        """(reply text, finish_reason), retrying transient failures with exponential backoff."""
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.cost.retries += 1
                self._sleep(self.backoff * 2 ** (attempt - 1))
            self.cost.requests += 1
            key = self._key()
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            try:
                resp = self._client.post(self.url, json=payload, headers=headers, timeout=self.timeout)
            except httpx.TransportError as e:  # connect/read errors and timeouts
                last = type(e).__name__
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                hint = f" (is ${self.api_key_env} set right?)" if resp.status_code in (401, 403) else ""
                raise JudgeError(
                    self._redact(f"judge {self.url} returned HTTP {resp.status_code}{hint}: {resp.text[:300]!r}")
                )
            return self._read(resp)
        raise JudgeUnavailable(self._redact(f"judge {self.url} failed {self.max_retries + 1} times (last: {last})"))

    def _read(self, resp: httpx.Response) -> tuple[str, str | None]:
        """Reply text and finish_reason of a 200 response; a malformed body reads as an empty reply."""
        try:
            body = resp.json()
            choice = body["choices"][0]
            text, finish = choice["message"]["content"], choice.get("finish_reason")
            usage = body.get("usage") or {}
            self.cost.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.cost.completion_tokens += int(usage.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return "", None
        return (text if isinstance(text, str) else ""), (finish if isinstance(finish, str) else None)
