r"""The policy's prompt for a problem: the synthetic format, a few-shot text prompt, or a chat template.

`build_prompt(problem, cfg, tokenizer, examples)` returns a `Prompt`: the text fed to the
tokenizer and the stop strings that end a completion. Templates (`PromptConfig.template`):

    synthetic  `prmflow.synth.format_prompt(problem)`, byte for byte (the default; no stops)
    plain      a base model's few-shot text prompt, k = few_shot solved examples first:

                   Question: {example problem}
                   Answer: {example solution lines}
                   The answer is {example answer}
                   <blank line, repeated per example>
                   Question: {problem}
                   Answer:

               stops: ("\n\nQuestion:", "\nQuestion:"), where a base model starts a next example
    chat       the tokenizer's chat template: [system], (user, assistant) per example, user;
               the user turn is user_template.format(problem=...), with the generation prompt
    auto       chat if the tokenizer has a chat_template, else plain

Examples are solved rows {"problem", "solution", "answer"} (GSM8K's calculator annotations
`<<48/2=24>>` are removed), each ending with the answer line `answer_line.format(answer=...)`
("The answer is 72"), the convention `prmflow.answers.extract_final_answer` reads. They must not
include the evaluated problem (ValueError): take them from a split the problems never come from.

BOS, exactly once. The backends encode prompt text with `add_special_tokens=True`. Some
tokenizers add BOS then (Llama), some do not (Gemma-3's converted tokenizer, which needs one);
chat templates usually write the BOS text themselves ("<bos>..."). `build_prompt` therefore
returns text that `tokenizer(text, add_special_tokens=True)` turns into ids with exactly one
leading BOS: it strips a template's BOS text when the tokenizer adds BOS itself, and prepends
the BOS text when the tokenizer has a BOS token (distinct from EOS) that it does not add.
`encode_prompt(tokenizer, text)` gives those ids. The synthetic template is never changed.

    >>> build_prompt("Ben has 2 cards.", PromptConfig()).text
    'Question: Ben has 2 cards.\nAnswer:\n'
    >>> ex = [{"problem": "Tom has 2 cats and gets 3 more. How many?", "solution": "2 + 3 = <<2+3=5>>5",
    ...        "answer": "5"}]
    >>> cfg = PromptConfig(template="plain", few_shot=1)
    >>> p = build_prompt("Ann has 4 pens and loses 1. How many?", cfg, examples=ex)
    >>> print(p.text)
    Question: Tom has 2 cats and gets 3 more. How many?
    Answer: 2 + 3 = 5
    The answer is 5
    <BLANKLINE>
    Question: Ann has 4 pens and loses 1. How many?
    Answer:
    >>> p.stop
    ('\n\nQuestion:', '\nQuestion:')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prmflow import io
from prmflow.synth import format_prompt

TEMPLATES = ("synthetic", "plain", "chat", "auto")
_CALC = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class PromptConfig:
    """How a problem becomes the policy's prompt."""

    template: str = "synthetic"
    """`synthetic` (prmflow.synth.format_prompt, unchanged), `plain` (few-shot text for a base
    model), `chat` (the tokenizer's chat template) or `auto` (chat if it has one, else plain)"""
    system_prompt: str = ""
    """chat: the system turn ("" = none); plain: a first paragraph before the examples"""
    user_template: str = "{problem}\nPlease reason step by step, and put your final answer after 'The answer is'."
    """chat: the user turn; `{problem}` is replaced by the problem text"""
    few_shot: int = 0
    """solved examples put before the problem (plain and chat), from `examples`"""
    answer_line: str = "The answer is {answer}"
    """how an example states its final answer (what prmflow.answers reads back)"""
    question_prefix: str = "Question: "
    """plain: opens each problem; its first line, stripped, also makes the stop strings"""
    answer_prefix: str = "Answer:"
    """plain: ends the prompt; the completion follows it"""

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        if self.few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {self.few_shot}")
        if "{problem}" not in self.user_template:
            raise ValueError(f"user_template must contain '{{problem}}', got {self.user_template!r}")
        if "{answer}" not in self.answer_line:
            raise ValueError(f"answer_line must contain '{{answer}}', got {self.answer_line!r}")
        if not self.question_prefix.strip():
            raise ValueError("question_prefix must not be blank (it makes the stop strings)")


@dataclass(frozen=True)
class Prompt:
    """A prompt ready for a backend."""

    text: str
    """what the backend encodes (with add_special_tokens=True: exactly one BOS, see above)"""
    stop: tuple[str, ...]
    """strings that end a completion (for SamplingConfig.stop); () = EOS only"""
    template: str
    """the template used (`auto` resolved to `chat` or `plain`)"""


def build_prompt(
    problem: str, cfg: PromptConfig, tokenizer: Any = None, examples: Sequence[Mapping[str, Any]] = ()
) -> Prompt:
    """The prompt for `problem` (see the module docstring). `tokenizer` is needed for chat and
    auto, and for BOS handling; `examples` must hold at least cfg.few_shot solved rows."""
    if cfg.template == "synthetic":
        return Prompt(format_prompt(problem), (), "synthetic")
    template = cfg.template
    if template == "auto":
        if tokenizer is None:
            raise ValueError("template 'auto' needs the tokenizer (to look for a chat_template)")
        template = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    shots = _shots(problem, cfg.few_shot, examples)
    if template == "plain":
        text, stop = _plain(problem, cfg, shots), plain_stops(cfg)
    else:
        text, stop = _chat(problem, cfg, shots, tokenizer), ()
    return Prompt(bos_once(tokenizer, text) if tokenizer is not None else text, stop, template)


def read_examples(path: str | os.PathLike[str], cfg: PromptConfig) -> list[dict[str, Any]]:
    """The first `cfg.few_shot` solved rows of a problems file (none read when few_shot is 0)."""
    return io.read_jsonl(path)[: cfg.few_shot] if cfg.few_shot else []


def plain_stops(cfg: PromptConfig) -> tuple[str, ...]:
    """Where a base model starts the next few-shot example: ("\\n\\nQuestion:", "\\nQuestion:")."""
    q = cfg.question_prefix.strip()
    return (f"\n\n{q}", f"\n{q}")


def example_solution(row: Mapping[str, Any], cfg: PromptConfig) -> str:
    """An example's worked solution: its lines without GSM8K calculator annotations, then the answer line.

    >>> example_solution({"solution": "48/2 = <<48/2=24>>24 in May.\\n", "answer": "72"}, PromptConfig())
    '48/2 = 24 in May.\\nThe answer is 72'
    """
    lines = [ln.rstrip() for ln in _CALC.sub("", str(row.get("solution") or "")).strip().splitlines()]
    return "\n".join([*(ln for ln in lines if ln.strip()), cfg.answer_line.format(answer=row["answer"])])


def _shots(problem: str, k: int, examples: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if k > len(examples):
        raise ValueError(f"few_shot={k} but only {len(examples)} examples were given")
    shots = list(examples[:k])
    for j, ex in enumerate(shots):
        for field in ("problem", "answer"):
            if field not in ex:
                raise ValueError(f"few-shot example {j} ({ex.get('id', '?')!r}): missing field '{field}'")
        if ex["problem"].strip() == problem.strip():
            raise ValueError(f"few-shot example {j} ({ex.get('id', '?')!r}) is the evaluated problem itself")
    return shots


def _plain(problem: str, cfg: PromptConfig, shots: Sequence[Mapping[str, Any]]) -> str:
    parts = [cfg.system_prompt.strip() + "\n\n"] if cfg.system_prompt.strip() else []
    for ex in shots:
        q, a = ex["problem"].strip(), example_solution(ex, cfg)
        parts.append(f"{cfg.question_prefix}{q}\n{cfg.answer_prefix} {a}\n\n")
    parts.append(f"{cfg.question_prefix}{problem.strip()}\n{cfg.answer_prefix}")
    return "".join(parts)


def _chat(problem: str, cfg: PromptConfig, shots: Sequence[Mapping[str, Any]], tokenizer: Any) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat' needs a tokenizer with a chat_template (use 'plain' or 'auto')")
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    for ex in shots:
        messages += [
            {"role": "user", "content": cfg.user_template.format(problem=ex["problem"].strip())},
            {"role": "assistant", "content": example_solution(ex, cfg)},
        ]
    messages.append({"role": "user", "content": cfg.user_template.format(problem=problem.strip())})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------- BOS


def adds_bos(tokenizer: Any) -> bool:
    """Does `tokenizer(text, add_special_tokens=True)` put a BOS first by itself?"""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def wants_bos(tokenizer: Any) -> bool:
    """Has the tokenizer a BOS token of its own (not EOS reused as BOS, as GPT-2's)?"""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and bos != getattr(tokenizer, "eos_token_id", None)


def bos_once(tokenizer: Any, text: str) -> str:
    """`text` such that encoding it with add_special_tokens=True starts with exactly one BOS
    (none for tokenizers without a BOS of their own). See the module docstring."""
    bos_text = getattr(tokenizer, "bos_token", None)
    if not wants_bos(tokenizer) or not bos_text:
        return text
    stripped = text
    while stripped.startswith(bos_text):
        stripped = stripped[len(bos_text) :]
    return stripped if adds_bos(tokenizer) else bos_text + stripped


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt with exactly one leading BOS (when the tokenizer has its own BOS),
    as the backends' `tokenizer(bos_once(...), add_special_tokens=True)` gives them."""
    return list(tokenizer(bos_once(tokenizer, text), add_special_tokens=True)["input_ids"])
