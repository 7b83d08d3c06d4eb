"""Step tokens, separators and BOS for SentencePiece-like and byte-level tokenizers (the
ProcessBench pitfall: joining steps as a string or as tokens changes what the PRM reads)."""

import pytest
from conftest import CORPUS, REPO
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from prmflow.prm import PRM, PRMConfig, prepare_examples, tokenize_steps

PROMPT = "Question: Mia has 23 marbles. She finds 14 more.\nAnswer:\n"
MORE = ["Mia has 23 + 14 = 37 marbles.\n\n", "\n", "The answer is 37", " marbles"]


def _fast(tok: Tokenizer, **special) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.add_tokens([AddedToken("<step>", special=True, normalized=False)], special_tokens=True)
    return fast


def gemma_like(auto_bos: bool = False) -> PreTrainedTokenizerFast:
    """Gemma-3 style: spaces -> '▁' by a normalizer, no pre-tokenizer (merges run across
    whitespace and newlines), byte fallback, <bos> that is (Gemma) or is not added by itself."""
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    special = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(
        [c + "\n\n" for c in CORPUS] + MORE * 5,
        trainers.BpeTrainer(vocab_size=600, special_tokens=special, show_progress=False),
    )
    if auto_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return _fast(tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")


def sentencepiece_prepend() -> PreTrainedTokenizerFast:
    """Llama-2 style SentencePiece: '▁' prepended to every text it is given."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    tok.train_from_iterator(
        CORPUS + MORE * 5,
        trainers.BpeTrainer(vocab_size=300, show_progress=False, special_tokens=["<pad>", "<unk>", "<s>"]),
    )
    return _fast(tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>")


def byte_level() -> PreTrainedTokenizerFast:
    """GPT-2 style byte-level BPE, digits merged freely, no BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS + MORE * 5,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return _fast(tok, pad_token="<pad>")


TOKENIZERS = {"gemma_like": gemma_like, "byte_level": byte_level}  # the ones that do not prepend '▁' to a text


def _steps_text(tok, x, sep) -> list[str]:
    """The text between consecutive separators (step k's own tokens, decoded)."""
    bounds = [x.n_prompt_tokens - 1, *x.label_positions]
    return [tok.decode(x.input_ids[a + 1 : b]) for a, b in zip(bounds, bounds[1:])]


def _straddles(tok, text: str, boundaries: list[int]) -> bool:
    offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return any(s < b < e for s, e in offsets for b in boundaries)


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_joined_reads_the_text_and_puts_each_separator_after_its_step(name):
    tok = TOKENIZERS[name]()
    sep = tok.convert_tokens_to_ids("<step>")
    steps = ["Mia has 23 + 1", "4 = 37 marbles.\n", "\n", "", "The answer is 37", " marbles"]
    text = PROMPT + "".join(steps)
    x = tokenize_steps(tok, PROMPT, steps, sep, 10_000, mode="joined")
    assert [i for i, t in enumerate(x.input_ids) if t == sep] == x.label_positions and len(x.label_positions) == 6
    # lossless: without the separators the ids decode to exactly the text, and step k's tokens to step k
    assert tok.decode([t for t in x.input_ids if t != sep]) == text
    assert _steps_text(tok, x, sep) == steps
    # away from the boundaries the ids are the joined text's own tokenization
    joined = tok(text, add_special_tokens=False)["input_ids"]
    if not _straddles(tok, text, [len(PROMPT) + len("".join(steps[:k])) for k in range(len(steps))]):
        assert [t for t in x.input_ids if t != sep] == joined


def test_a_merge_across_a_boundary_is_split_there():
    """'1' + '4' and '\\n' + '\\n' merge in the joined text; per-step tokenization cannot see
    that, and joined keeps step k's tokens before its separator, never a character of k + 1."""
    tok = gemma_like()
    sep = tok.convert_tokens_to_ids("<step>")
    steps = ["Mia has 23 + 1", "4 = 37 marbles.\n", "\n", "The answer is 37"]
    cuts = [len(PROMPT) + len("".join(steps[:k])) for k in range(1, len(steps))]
    assert _straddles(tok, PROMPT + "".join(steps), cuts)  # the case this test is about does occur
    x = tokenize_steps(tok, PROMPT, steps, sep, 10_000, mode="joined")
    assert _steps_text(tok, x, sep) == steps
    pieces = tokenize_steps(tok, PROMPT, steps, sep, 10_000, mode="pieces")
    assert _steps_text(tok, pieces, sep) == steps  # this tokenizer adds no '▁': pieces is lossless too


def test_pieces_mode_reads_a_space_before_every_step_with_a_prepending_sentencepiece():
    """The pitfall that `joined` exists for: per-step tokenization of a '▁'-prepending
    tokenizer makes the PRM read a space the policy never wrote; joined reads the text."""
    tok = sentencepiece_prepend()
    sep = tok.convert_tokens_to_ids("<step>")
    steps = ["23 + 14 = 37.", " The answer is 37"]  # "Answer:\n" + "23": no '▁' in the text
    pieces = tokenize_steps(tok, PROMPT, steps, sep, 10_000, mode="pieces")
    joined = tokenize_steps(tok, PROMPT, steps, sep, 10_000, mode="joined")
    first = lambda x: tok.convert_ids_to_tokens(x.input_ids[x.n_prompt_tokens])  # noqa: E731
    assert first(pieces).startswith("▁") and not first(joined).startswith("▁")
    assert [t for t in joined.input_ids if t != sep] == tok(PROMPT + "".join(steps), add_special_tokens=False)[
        "input_ids"
    ]
    assert [t for t in pieces.input_ids if t != sep] != tok(PROMPT + "".join(steps), add_special_tokens=False)[
        "input_ids"
    ]
    # the documented limit: a boundary INSIDE a merged token ('▁37\nThe') is split there, and this
    # tokenizer then prepends '▁' to the right half, as it does to every text
    x = tokenize_steps(tok, PROMPT, ["23 + 14 = 37\n", "The answer is 37"], sep, 10_000, mode="joined")
    assert tok.convert_ids_to_tokens(x.input_ids[x.label_positions[0] + 1]) == "▁The"
    assert tok.convert_ids_to_tokens(x.input_ids[x.label_positions[0] - 1]).endswith("\n")


@pytest.mark.parametrize("auto_bos", [False, True])
def test_bos_exactly_once(auto_bos):
    """Gemma's tokenizer does not add <bos> by itself, Llama's does: either way the PRM puts it
    first exactly once, also when the prompt already starts with the text '<bos>' (a chat template)."""
    tok = gemma_like(auto_bos)
    sep, bos = tok.convert_tokens_to_ids("<step>"), tok.bos_token_id
    assert (tok("x")["input_ids"][0] == bos) is auto_bos
    for prompt in (PROMPT, "<bos>" + PROMPT):
        for mode in ("pieces", "joined"):
            x = tokenize_steps(tok, prompt, ["23 + 14 = 37\n"], sep, 10_000, bos_id=bos, mode=mode)
            assert x.input_ids[0] == bos and x.input_ids.count(bos) == 1, (prompt, mode)
            assert tok.decode(x.input_ids[1 : x.n_prompt_tokens]) == PROMPT
    # truncation cuts the prompt after BOS, never BOS itself
    full = tokenize_steps(tok, PROMPT, ["23 + 14 = 37\n"], sep, 10_000, bos_id=bos, mode="joined")
    x = tokenize_steps(tok, PROMPT, ["23 + 14 = 37\n"], sep, len(full.input_ids) - 2, bos_id=bos, mode="joined")
    assert x.input_ids == [bos] + full.input_ids[3:] and x.input_ids[0] == bos and x.n_truncated_prompt_tokens > 0
    with pytest.raises(ValueError, match="first step .* with its separator and BOS, over max_len=3"):
        tokenize_steps(tok, PROMPT, ["23 + 14 = 37\n"], sep, 3, bos_id=bos)


def test_train_and_score_see_the_same_ids(tmp_path):
    """One tokenizer, one function: the ids a row is trained on are the ids it is scored on."""
    from prmflow.policy.tiny import build_model

    tok = gemma_like()
    tok.save_pretrained(tmp_path / "lm")  # saved with the step token: PRM.from_backbone keeps its id
    build_model("llama", len(tok), 32, 1, 2, 256, tok.pad_token_id, tok.eos_token_id, seed=0).save_pretrained(
        tmp_path / "lm"
    )
    prm = PRM.from_backbone(tmp_path / "lm", PRMConfig(step_tokenization="joined"))
    assert prm.bos_id == tok.bos_token_id
    row = {"id": "r", "prompt": PROMPT, "completions": ["Mia has 23 + 1", "4 = 37\n", "\n"], "labels": [1, 1, 0]}
    (ex,) = prepare_examples(prm, [row], "hard", 512)
    assert ex.tokens == prm.tokenize(PROMPT, row["completions"])
    assert ex.tokens.input_ids[0] == tok.bos_token_id and ex.tokens.input_ids.count(tok.bos_token_id) == 1
    prm.save_pretrained(tmp_path / "prm")
    loaded = PRM.from_pretrained(tmp_path / "prm")
    assert loaded.tokenize(PROMPT, row["completions"]) == ex.tokens
    assert loaded.score(PROMPT, row["completions"]) == prm.score(PROMPT, row["completions"])


def test_pieces_needs_no_fast_tokenizer_but_joined_does():
    class Chars:
        def __call__(self, texts, **kwargs):
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    assert tokenize_steps(Chars(), "Q", ["a"], 0, 10).input_ids == [81, 97, 0]
    with pytest.raises(ValueError, match="needs a fast tokenizer"):
        tokenize_steps(Chars(), "Q", ["a"], 0, 10, mode="joined")


REAL = REPO / "models" / "real-policy"


@pytest.mark.skipif(not (REAL / "tokenizer.json").exists(), reason=f"{REAL} not built (make run-real converts it)")
def test_the_real_gemma_tokenizer():
    tok = AutoTokenizer.from_pretrained(REAL)
    tok.add_tokens([AddedToken("<step>", special=True, normalized=False)], special_tokens=True)
    sep = tok.convert_tokens_to_ids("<step>")
    steps = [
        "Natalia sold 48/2 = 24 clips in May.\n",
        "\n",
        "Natalia sold 48+24 = 72 clips altogether.",
        " The answer is 72",
    ]
    x = tokenize_steps(tok, PROMPT, steps, sep, 512, bos_id=tok.bos_token_id, mode="joined")
    assert x.input_ids[0] == tok.bos_token_id and x.input_ids.count(tok.bos_token_id) == 1
    assert _steps_text(tok, x, sep) == steps
