r"""Step-separator tokenization for PRMs: where each step's label sits, for any tokenizer.

A solution is `prompt` + `steps` (TRL stepwise format). Our PRM (for EDU-PRM arXiv 2503.22233
and ActPRM arXiv 2504.10559) reads one logit per step, at a dedicated separator token `<step>`
appended after the step:

    input_ids = [bos] + tokens(prompt) + sum_k [ tokens(step_k) + [sep] ]     label of step k at its sep

The separator id is inserted by hand, never tokenized from text, so it is the same id at train
and at score time whatever the tokenizer does with "<step>" (or a step boundary) in context, and
a literal "<step>" or "</s>" inside the text stays text (split_special_tokens). Training and
scoring both call `tokenize_steps`, so they see identical ids. `[bos]` is the tokenizer's BOS
id, put first exactly once when the PRM asks for it (`bos_id`; Gemma and Llama need it, Qwen2
and GPT-2 tokenizers have none); pieces are always tokenized without special tokens, so the
tokenizer adds no second one, and a prompt that starts with the BOS text (a rendered chat
template) has that text taken off. BOS is never cut by truncation.

How text becomes tokens(prompt), tokens(step_k) is the known ProcessBench pitfall (steps joined
as a string vs as tokens moved published F1 by points), so it is a named choice, `mode`:

- `pieces` (the default, and the layout of every PRM saved before `mode` existed): the prompt
  and each step are tokenized on their own. A BPE merge never crosses a step boundary, which is
  harmless because training and scoring agree, but a SentencePiece tokenizer that prepends "▁"
  to every text it is given reads a space before every step that the text does not have.
- `joined`: the whole text prompt + "".join(steps) is tokenized once, so every token is the one
  the tokenizer gives the text in context (what the policy's tokenizer reads, and what the LM
  features of `prmflow.prm.model` assume). Where one token would straddle a step boundary (a
  merge across it, e.g. "\n" + "\n" -> "\n\n"), it is split at the boundary and the two halves
  are tokenized on their own, so step k's label never sees a character of step k + 1, and the
  separator always sits right after the token that ends step k. Needs a fast tokenizer
  (character offsets). Limit: a tokenizer that prepends "▁" to every text (Llama-2-style
  SentencePiece; not Gemma-3) prepends it to such a right half too, as it would in `pieces`.

Steps carry their own whitespace ("23 + 14 = 37\n"); in both modes the ids decode to the text
(up to the tokenizer's own normalisation) plus the separators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch
from tokenizers import AddedToken
from transformers import PreTrainedModel

from prmflow.options import STEP_TOKENIZATIONS as MODES


class TokenizedSteps(NamedTuple):
    """One solution as model input: ids, where each kept step's separator sits, what was cut."""

    input_ids: list[int]
    label_positions: list[int]
    n_truncated_steps: int
    """steps dropped from the end to fit max_len (they get no label and no score)"""
    n_truncated_prompt_tokens: int = 0
    """prompt tokens dropped from the left, only when the prompt + first step do not fit"""
    n_prompt_tokens: int = 0
    """prompt tokens (BOS included) kept at the start of input_ids (the steps begin right after them)"""


def tokenize_steps(
    tokenizer: Any,
    prompt: str,
    steps: Sequence[str],
    step_token_id: int,
    max_len: int,
    *,
    bos_id: int | None = None,
    mode: str = "pieces",
) -> TokenizedSteps:
    """input_ids = [bos_id] + tokens(prompt) + sum_k [tokens(step_k) + [step_token_id]]; the label
    of step k sits on its separator (module docstring for `mode`).

    Pieces are tokenized without special tokens and with split_special_tokens, so a literal
    "<step>" or "</s>" in the text stays plain text. A stand-in tokenizer with one token per
    character (id = ord) shows the exact layout:

    >>> class Chars:
    ...     def __call__(self, texts, **kwargs):
    ...         return {"input_ids": [[ord(c) for c in t] for t in texts]}
    >>> tokenize_steps(Chars(), "Q?\\n", ["2\\n", "ok"], step_token_id=0, max_len=64)  # doctest: +NORMALIZE_WHITESPACE
    TokenizedSteps(input_ids=[81, 63, 10, 50, 10, 0, 111, 107, 0], label_positions=[5, 8],
                   n_truncated_steps=0, n_truncated_prompt_tokens=0, n_prompt_tokens=3)

    A BOS id goes first, once, and counts as a prompt token:

    >>> tokenize_steps(Chars(), "Q?\\n", ["2\\n"], step_token_id=0, max_len=64, bos_id=1).input_ids
    [1, 81, 63, 10, 50, 10, 0]

    Too long: whole steps go from the end. If not even the prompt + first step fit, the prompt
    loses tokens from the left (its end, next to the steps, is kept; BOS stays) and one step remains:

    >>> tokenize_steps(Chars(), "Q?\\n", ["2\\n", "ok"], step_token_id=0, max_len=7)  # doctest: +NORMALIZE_WHITESPACE
    TokenizedSteps(input_ids=[81, 63, 10, 50, 10, 0], label_positions=[5],
                   n_truncated_steps=1, n_truncated_prompt_tokens=0, n_prompt_tokens=3)
    >>> tokenize_steps(Chars(), "Q?\\n", ["2\\n", "ok"], step_token_id=0, max_len=4)  # doctest: +NORMALIZE_WHITESPACE
    TokenizedSteps(input_ids=[10, 50, 10, 0], label_positions=[3],
                   n_truncated_steps=1, n_truncated_prompt_tokens=2, n_prompt_tokens=1)

    A first step that alone (with its separator and BOS) exceeds max_len cannot be scored: ValueError.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bos = [] if bos_id is None else [bos_id]
    if bos and getattr(tokenizer, "bos_token", None) and prompt.startswith(tokenizer.bos_token):
        prompt = prompt[len(tokenizer.bos_token) :]  # a rendered chat template's BOS text: the id is added once, below
    if mode == "pieces":
        pieces = tokenizer([prompt, *steps], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        prompt_ids, step_ids = list(pieces[0]), [list(s) for s in pieces[1:]]
    else:
        prompt_ids, step_ids = _joined_pieces(tokenizer, prompt, steps)
    budget = max_len - len(bos)
    n_keep, length = 0, len(prompt_ids)
    for s in step_ids:  # the longest run of leading steps that fits after the full prompt
        if length + len(s) + 1 > budget:
            break
        length += len(s) + 1
        n_keep += 1
    if step_ids and n_keep == 0:
        first = len(step_ids[0]) + 1
        if first > budget:
            raise ValueError(
                f"the first step is {first + len(bos)} tokens with its separator"
                f"{' and BOS' if bos else ''}, over max_len={max_len}"
            )
        n_keep = 1
        n_cut = len(prompt_ids) - (budget - first)
    else:
        n_cut = max(0, len(prompt_ids) - budget)  # only possible when there are no steps
    ids, positions = bos + prompt_ids[n_cut:], []
    for s in step_ids[:n_keep]:
        ids += s
        ids.append(step_token_id)
        positions.append(len(ids) - 1)
    # The separator must appear exactly once per kept step and nowhere else (separators that
    # tokenize differently in context are the most reported bug in public PRM code).
    found = [i for i, t in enumerate(ids) if t == step_token_id]
    if found != positions:
        raise AssertionError(f"separator id {step_token_id} found at {found}, expected exactly at {positions}")
    if bos_id is not None and bos_id in ids[1:]:
        raise AssertionError(f"BOS id {bos_id} appears again inside the text at {ids.index(bos_id, 1)}")
    return TokenizedSteps(ids, positions, len(step_ids) - n_keep, n_cut, len(bos) + len(prompt_ids) - n_cut)


def _joined_pieces(tokenizer: Any, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """tokens(prompt), [tokens(step_k)] cut out of ONE tokenization of prompt + "".join(steps):
    a token straddling a boundary is split there and its halves tokenized on their own."""
    texts = [prompt, *steps]
    ends, pos = [], 0
    for t in texts:
        pos += len(t)
        ends.append(pos)  # segment j = text[ends[j-1]:ends[j]]
    text = "".join(texts)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"step_tokenization 'joined' needs a fast tokenizer (character offsets); "
            f"{type(tokenizer).__name__} is not one, use 'pieces'"
        )
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
    out: list[list[int]] = [[] for _ in texts]

    def segment(char: int) -> int:  # the segment holding character `char` (empty segments hold none)
        return next((j for j, e in enumerate(ends) if char < e), len(texts) - 1)

    for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        cuts = [b for b in ends[:-1] if s < b < e]
        if not cuts:
            out[segment(s)].append(tid)
            continue
        bounds = [s, *cuts, e]  # the token crosses a step boundary: tokenize its parts on their own
        for a, b in zip(bounds, bounds[1:]):
            if a < b:
                out[segment(a)] += tokenizer(text[a:b], add_special_tokens=False, split_special_tokens=True)[
                    "input_ids"
                ]
    return out[0], out[1:]


def collate(batch: Sequence[TokenizedSteps], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch: input_ids (B, T), attention_mask (B, T), label_positions (B, S) padded with -1."""
    T = max(len(x.input_ids) for x in batch)
    S = max(1, max(len(x.label_positions) for x in batch))
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    pos = torch.full((len(batch), S), -1, dtype=torch.long)
    for b, x in enumerate(batch):
        ids[b, : len(x.input_ids)] = torch.tensor(x.input_ids, dtype=torch.long)
        attn[b, : len(x.input_ids)] = 1
        pos[b, : len(x.label_positions)] = torch.tensor(x.label_positions, dtype=torch.long)
    return ids, attn, pos


def step_index(batch: Sequence[TokenizedSteps], length: int) -> torch.Tensor:
    """(B, length) long: k at the tokens of step k and at its separator, -1 at prompt and padding.

    >>> x = TokenizedSteps([81, 63, 10, 50, 10, 0, 111, 107, 0], [5, 8], 0, 0, 3)
    >>> step_index([x], 10).tolist()
    [[-1, -1, -1, 0, 0, 0, 1, 1, 1, -1]]
    """
    out = torch.full((len(batch), length), -1, dtype=torch.long)
    for b, x in enumerate(batch):
        start = x.n_prompt_tokens
        for k, end in enumerate(x.label_positions):
            out[b, start : end + 1] = k
            start = end + 1
    return out


def add_step_token(tokenizer: Any, model: PreTrainedModel, step_token: str) -> int:
    """Add `step_token` as a special token, grow the embeddings, and start its row at the
    embedding of "\\n" (the mean over the pieces if "\\n" is several tokens, the mean of all rows
    if it is none, as in WordPiece); an untied LM head's row likewise. Returns its id. A no-op if
    the tokenizer already has it.
    """
    if step_token in tokenizer.get_added_vocab():
        return tokenizer.convert_tokens_to_ids(step_token)
    if step_token in tokenizer.get_vocab():
        raise ValueError(f"{step_token!r} is already an ordinary token of this tokenizer; pick another step_token")
    tokenizer.add_tokens([AddedToken(step_token, special=True, normalized=False)], special_tokens=True)
    step_id = tokenizer.convert_tokens_to_ids(step_token)
    if len(tokenizer) > cast(torch.Tensor, model.get_input_embeddings().weight).shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight  # (V, H)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    out = model.get_output_embeddings()
    rows = [emb] + ([out.weight] if out is not None and out.weight is not emb else [])  # an untied LM head too
    with torch.no_grad():
        for w in rows:  # so the whole model is a function of the checkpoint (no randomly drawn row)
            w[step_id] = w[newline].mean(0) if newline else w[:step_id].mean(0)
    return step_id
