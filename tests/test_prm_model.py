import dataclasses
import doctest
import json
import math

import pytest
import torch
from conftest import CORPUS
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

import prmflow.prm.backbone
import prmflow.prm.model
import prmflow.prm.tokenization
from prmflow.policy.tiny import build_model
from prmflow.prm import PRM, PRMConfig, collate, head_data_mask, step_bce, step_loss, tokenize_steps

PROMPT = "Question: Mia has 23 <step> marbles. She finds 14 more.\nAnswer:\n"
ADVERSARIAL = [
    "23 + 14 = 37\n",
    "<step>",  # the separator as text must stay text
    "a<step>b <step>\n",
    "\n\n",
    " ",  # whitespace-only step
    "",  # empty step
    "</s><pad>[UNK][SEP]",  # other special tokens as text
    "∑ é 漢字 🙂 ½\n",  # unicode outside every training corpus
    "$\\frac{1}{2} + \\sqrt{x^2}$\n",  # LaTeX
    "The answer is \\boxed{37}",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


class Chars:
    """Stand-in tokenizer: one token per character, id = ord(char)."""

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def _fast(tok: Tokenizer, step: bool, **special) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    if step:  # what add_step_token does, without a model to resize
        fast.add_tokens([AddedToken("<step>", special=True, normalized=False)], special_tokens=True)
    return fast


def bpe_no_digit_split(step: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE with a prefix space and digits merged freely (GPT-2 style)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<pad>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return _fast(tok, step, pad_token="<pad>", eos_token="</s>")


def wordpiece(step: bool = True) -> PreTrainedTokenizerFast:
    """BERT-style: lowercasing, whitespace/punctuation split, [UNK] for unseen characters."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        CORPUS,
        trainers.WordPieceTrainer(vocab_size=200, show_progress=False, special_tokens=["[PAD]", "[UNK]", "[SEP]"]),
    )
    return _fast(tok, step, pad_token="[PAD]", unk_token="[UNK]", sep_token="[SEP]")


def metaspace_bpe(step: bool = True) -> PreTrainedTokenizerFast:
    """SentencePiece-like: spaces become '▁', prepended to every piece."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<unk>", "</s>"], show_progress=False)
    )
    return _fast(tok, step, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    fixture_tok = AutoTokenizer.from_pretrained(tiny_model_dir)  # byte-level BPE, digits split
    fixture_tok.add_tokens([AddedToken("<step>", special=True, normalized=False)], special_tokens=True)
    return {
        "bytelevel_digits": fixture_tok,
        "bytelevel": bpe_no_digit_split(),
        "wordpiece": wordpiece(),
        "metaspace": metaspace_bpe(),
    }


@pytest.fixture()
def prm(tiny_model_dir):
    return PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=3, max_len=128))


@pytest.mark.parametrize("module", [prmflow.prm.tokenization, prmflow.prm.model, prmflow.prm.backbone])
def test_doctests(module):
    failed, attempted = doctest.testmod(module)
    assert attempted >= 1 and failed == 0


# --------------------------------------------------------------------------- tokenization


@pytest.mark.parametrize("name", ["bytelevel_digits", "bytelevel", "wordpiece", "metaspace"])
def test_one_separator_per_step_for_adversarial_steps(tokenizers, name):
    tok = tokenizers[name]
    sep = tok.convert_tokens_to_ids("<step>")
    x = tokenize_steps(tok, PROMPT, ADVERSARIAL, sep, max_len=10_000)
    assert x.n_truncated_steps == 0 and x.n_truncated_prompt_tokens == 0
    assert [i for i, t in enumerate(x.input_ids) if t == sep] == x.label_positions
    assert len(x.label_positions) == len(ADVERSARIAL)
    # between separators sit exactly each step's own tokens
    pieces = tok([PROMPT, *ADVERSARIAL], add_special_tokens=False, split_special_tokens=True)["input_ids"]
    bounds = [len(pieces[0]) - 1, *x.label_positions]
    for k, piece in enumerate(pieces[1:]):
        assert x.input_ids[bounds[k] + 1 : bounds[k + 1]] == piece


def test_bytelevel_layout_is_lossless(tokenizers):
    """Dropping the separators and decoding gives back prompt + steps, character for character."""
    tok = tokenizers["bytelevel_digits"]
    sep = tok.convert_tokens_to_ids("<step>")
    x = tokenize_steps(tok, PROMPT, ADVERSARIAL, sep, max_len=10_000)
    assert tok.decode([t for t in x.input_ids if t != sep]) == PROMPT + "".join(ADVERSARIAL)


def test_separator_in_context_is_caught():
    """A tokenizer that turns the text "<step>" into the separator id trips the in-code check."""

    class Leaky(Chars):
        def __call__(self, texts, **kwargs):
            honest = super().__call__(texts)["input_ids"]
            return {"input_ids": [[0] if t == "<step>" else ids for t, ids in zip(texts, honest)]}

    with pytest.raises(AssertionError, match="separator id 0"):
        tokenize_steps(Leaky(), "Q\n", ["<step>", "ok"], step_token_id=0, max_len=64)


def test_truncation_drops_whole_steps_from_the_end():
    # prompt 3 tokens, steps of 2, 3, 4, 5 chars (+1 separator each): 3 + 3 + 4 = 10 fits, + 5 = 15 does not
    x = tokenize_steps(Chars(), "Q:\n", ["ab", "cde", "fghi", "jklmn"], step_token_id=0, max_len=14)
    assert x.label_positions == [5, 9] and x.n_truncated_steps == 2 and len(x.input_ids) == 10


def test_truncation_keeps_the_end_of_the_prompt_and_one_step():
    x = tokenize_steps(Chars(), "abcdef", ["xyz", "w"], step_token_id=0, max_len=6)
    # the step needs 4 tokens, so 2 of the 6 prompt tokens remain: "ef"
    assert x.input_ids == [ord("e"), ord("f"), ord("x"), ord("y"), ord("z"), 0]
    assert (x.label_positions, x.n_truncated_steps, x.n_truncated_prompt_tokens) == ([5], 1, 4)
    with pytest.raises(ValueError, match="first step"):
        tokenize_steps(Chars(), "abc", ["xyzuvw"], step_token_id=0, max_len=6)


def test_truncation_with_a_real_tokenizer(tokenizers):
    tok = tokenizers["bytelevel_digits"]
    sep = tok.convert_tokens_to_ids("<step>")
    steps = ["23 + 14 = 37\n"] * 10
    full = tokenize_steps(tok, PROMPT, steps, sep, max_len=10_000)
    cut = tokenize_steps(tok, PROMPT, steps, sep, max_len=full.label_positions[3] + 1)  # room for 4 steps exactly
    assert cut.n_truncated_steps == 6 and cut.input_ids == full.input_ids[: full.label_positions[3] + 1]


# --------------------------------------------------------------------------- model


def test_step_token_embedding_starts_at_newline(prm, tiny_model_dir):
    emb = prm.backbone.get_input_embeddings().weight
    (newline,) = prm.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert prm.step_token_id == len(prm.tokenizer) - 1 == emb.shape[0] - 1
    assert torch.equal(emb[prm.step_token_id], emb[newline])
    original = AutoModel.from_pretrained(tiny_model_dir).get_input_embeddings().weight
    assert torch.equal(emb[:-1], original)  # the backbone's own weights were loaded, not re-initialised


def test_step_token_that_is_an_ordinary_token_is_refused():
    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<step>": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")
    with pytest.raises(ValueError, match="ordinary token"):
        prmflow.prm.tokenization.add_step_token(fast, None, "<step>")


def test_forward_shapes_and_score_batch(prm):
    batch = [prm.tokenize(PROMPT, ["23 + 14 = 37\n", "The answer is 37"]), prm.tokenize("Q\n", ["1"])]
    ids, attn, pos = collate(batch, prm.pad_id)
    assert prm(ids, attn).shape == (3, 2, ids.shape[1])  # (E, B, T)
    assert pos.tolist()[1] == [batch[1].label_positions[0], -1]
    out = prm.score_batch([PROMPT, "Q\n"], [["23 + 14 = 37\n", "The answer is 37"], ["1"]])
    assert [len(s.head_mean) for s in out] == [2, 1]
    s = out[0]
    per_head = torch.tensor(s.per_head)  # (num_heads, num_steps)
    assert per_head.shape == (3, 2)
    assert torch.allclose(torch.tensor(s.head_mean), per_head.mean(0))
    assert torch.allclose(torch.tensor(s.head_std), per_head.std(0, correction=0))
    assert prm.score(PROMPT, ["23 + 14 = 37\n", "The answer is 37"]) == s.head_mean


def test_scores_do_not_depend_on_batching(prm):
    prompts = [PROMPT, "Q\n", PROMPT + "more context here\n"]
    steps = [ADVERSARIAL, ["1"], ["23 + 14 = 37\n", "The answer is 37"]]
    one = prm.score_batch(prompts, steps, batch_size=1)
    three = prm.score_batch(prompts, steps, batch_size=3)
    for a, b in zip(one, three):
        assert torch.allclose(torch.tensor(a.per_head), torch.tensor(b.per_head), atol=1e-5)


def test_truncated_steps_get_no_score(tiny_model_dir):
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=2, max_len=40))
    steps = ["23 + 14 = 37\n"] * 8
    x = prm.tokenize(PROMPT, steps)
    (s,) = prm.score_batch([PROMPT], [steps])
    kept = len(steps) - x.n_truncated_steps
    assert 0 < kept < len(steps) and s.n_truncated_steps == x.n_truncated_steps
    assert len(s.head_mean) == len(s.head_std) == len(s.per_head[0]) == kept
    assert s.head_mean_padded() == s.head_mean + [s.head_mean[-1]] * x.n_truncated_steps


def test_save_load_round_trip(prm, tmp_path):
    """An untouched (frozen) backbone is saved as a pointer, and the reloaded PRM is the same
    model bit for bit: every tensor, and so every score."""
    prm.cfg = dataclasses.replace(prm.cfg, label_type="soft")
    with torch.no_grad():  # make the heads differ from their init so the round trip is not trivial
        prm.heads[1].net.weight.add_(0.1)
    out = tmp_path / "prm"
    prm.save_pretrained(out)
    prm.save_pretrained(out)  # overwriting an existing save works (atomic replace)
    assert sorted(p.name for p in out.iterdir()) == ["prm_backbone.json", "prm_heads.safetensors", "prmflow_prm.json"]
    loaded = PRM.from_pretrained(out)
    steps = [["23 + 14 = 37\n", "The answer is 37"], ADVERSARIAL]
    assert prm.score_batch([PROMPT, PROMPT], steps) == loaded.score_batch([PROMPT, PROMPT], steps)
    assert loaded.cfg == prm.cfg and json.loads((out / "prmflow_prm.json").read_text())["label_type"] == "soft"
    assert loaded.step_token_id == prm.step_token_id
    assert prm.state_dict().keys() == loaded.state_dict().keys()
    for (k, a), b in zip(prm.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k  # the backbone rebuilt from its pointer, and each head's initial weights
    assert not list(tmp_path.glob(".*"))  # no temp dirs left behind


def test_trained_backbone_is_saved_whole(prm, tmp_path):
    with torch.no_grad():  # what full fine-tuning does to the backbone
        prm.backbone.norm.weight.add_(0.5)
    prm.save_pretrained(tmp_path / "prm")
    assert not (tmp_path / "prm" / "prm_backbone.json").exists()
    loaded = PRM.from_pretrained(tmp_path / "prm")
    assert loaded.score_batch([PROMPT], [ADVERSARIAL]) == prm.score_batch([PROMPT], [ADVERSARIAL])
    plain = AutoModel.from_pretrained(tmp_path / "prm")  # the backbone is a standard HF checkpoint
    for a, b in zip(prm.backbone.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


def test_changed_backbone_is_detected_on_load(tmp_path):
    from conftest import CORPUS

    from prmflow.policy.tiny import build_tokenizer

    tok = build_tokenizer(CORPUS, 300)
    backbone = tmp_path / "lm"
    build_model("llama", len(tok), 32, 1, 2, 128, tok.pad_token_id, tok.eos_token_id, seed=0).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    PRM.from_backbone(backbone, PRMConfig()).save_pretrained(tmp_path / "prm")
    # another model written to the same path (e.g. the policy retrained): refused, with the reason
    build_model("llama", len(tok), 32, 1, 2, 128, tok.pad_token_id, tok.eos_token_id, seed=1).save_pretrained(backbone)
    with pytest.raises(ValueError, match=r"backbone .*lm.* has changed since this PRM was trained: its weights sha256"):
        PRM.from_pretrained(tmp_path / "prm")
    # ... unless pointed at the original weights
    original = tmp_path / "original"
    build_model("llama", len(tok), 32, 1, 2, 128, tok.pad_token_id, tok.eos_token_id, seed=0).save_pretrained(original)
    tok.save_pretrained(original)
    assert PRM.from_pretrained(tmp_path / "prm", backbone=original).score(PROMPT, ["1\n"])
    # a tokenizer with another vocabulary is a change too
    build_model("llama", len(tok), 32, 1, 2, 128, tok.pad_token_id, tok.eos_token_id, seed=0).save_pretrained(backbone)
    build_tokenizer(CORPUS[:1], 290).save_pretrained(backbone)
    with pytest.raises(ValueError, match="its tokenizer sha256"):
        PRM.from_pretrained(tmp_path / "prm")
    import shutil

    shutil.rmtree(backbone)
    with pytest.raises(FileNotFoundError, match="could not be loaded|does not exist"):
        PRM.from_pretrained(tmp_path / "prm")


def test_relative_backbone_resolves_against_the_repo_of_the_prm(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    repo, copy = tmp_path / "repo", tmp_path / "copy"
    shutil.copytree(tiny_model_dir, repo / "models" / "policy")
    monkeypatch.chdir(repo)  # as DVC runs the train stage
    prm = PRM.from_backbone("models/policy", PRMConfig())
    prm.save_pretrained("models/prm")
    assert json.loads((repo / "models/prm/prm_backbone.json").read_text())["path"] == "models/policy"
    shutil.copytree(repo / "models", copy / "models")  # a copy of the repo (dvc exp run --temp)
    monkeypatch.chdir(copy)
    assert PRM.from_pretrained("models/prm").score(PROMPT, ADVERSARIAL) == prm.score(PROMPT, ADVERSARIAL)
    monkeypatch.chdir(tmp_path)  # another working directory: the repo the PRM dir sits in is searched
    assert PRM.from_pretrained(repo / "models/prm").score(PROMPT, ADVERSARIAL) == prm.score(PROMPT, ADVERSARIAL)
    shutil.rmtree(copy / "models" / "policy")
    with pytest.raises(FileNotFoundError, match="'models/policy'"):
        PRM.from_pretrained(copy / "models/prm")


def test_load_leaves_the_global_rng_alone(prm, tmp_path):
    prm.save_pretrained(tmp_path / "prm")
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    PRM.from_pretrained(tmp_path / "prm")
    assert torch.equal(torch.rand(3), expect)


def test_prm_saved_before_the_pointer_format_still_loads(prm, tmp_path):
    """The old layout: full backbone + tokenizer, and a prmflow_prm.json without add_bos (so it
    loads with add_bos False, the layout it was trained with)."""
    out = tmp_path / "old"
    out.mkdir()
    prm.backbone.save_pretrained(out)
    prm.tokenizer.save_pretrained(out)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in prm.heads.state_dict().items()}, out / "prm_heads.safetensors")
    old_cfg = {
        k: v
        for k, v in json.loads(json.dumps(prmflow.prm.model.asdict(prm.cfg))).items()
        if k not in ("add_bos", "step_tokenization")
    }
    (out / "prmflow_prm.json").write_text(json.dumps(old_cfg))
    loaded = PRM.from_pretrained(out)
    assert loaded.cfg.add_bos is False and loaded.cfg.step_tokenization == "pieces"
    assert loaded.score_batch([PROMPT], [ADVERSARIAL]) == prm.score_batch([PROMPT], [ADVERSARIAL])


def test_lm_features_need_the_policy_as_backbone(tiny_model_dir, tmp_path):
    import shutil

    from prmflow.prm.backbone import require_policy_backbone

    require_policy_backbone(tiny_model_dir, tiny_model_dir)
    shutil.copytree(tiny_model_dir, tmp_path / "copy")
    require_policy_backbone(tmp_path / "copy", tiny_model_dir)  # a copy of the same files is the same model
    with pytest.raises(ValueError, match="only when the backbone IS that policy.*Set lm_features: false"):
        require_policy_backbone("models/real-policy", tiny_model_dir)


def test_other_families_qwen2_mlp_heads_and_bert(tmp_path):
    """A tiny Qwen2 with a GPT-2-style tokenizer, and a BERT encoder with WordPiece."""
    tok = bpe_no_digit_split(step=False)
    qwen = build_model("qwen2", len(tok), 32, 1, 2, 128, tok.pad_token_id, tok.eos_token_id, seed=1)
    qwen.save_pretrained(tmp_path / "qwen")
    tok.save_pretrained(tmp_path / "qwen")
    prm = PRM.from_backbone(tmp_path / "qwen", PRMConfig(num_heads=2, head_hidden=8))
    assert type(prm.backbone).__name__ == "Qwen2Model"
    (s,) = prm.score_batch([PROMPT], [ADVERSARIAL])
    assert torch.tensor(s.per_head).shape == (2, len(ADVERSARIAL))

    wp = wordpiece(step=False)
    bert = BertModel(
        BertConfig(vocab_size=len(wp), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    bert.save_pretrained(tmp_path / "bert")
    wp.save_pretrained(tmp_path / "bert")
    prm = PRM.from_backbone(tmp_path / "bert", PRMConfig())
    emb = prm.backbone.get_input_embeddings().weight
    assert prm.tokenizer("\n", add_special_tokens=False)["input_ids"] == []  # WordPiece drops "\n"
    assert torch.allclose(emb[prm.step_token_id], emb[: prm.step_token_id].mean(0))  # so: mean of all rows
    assert len(prm.score(PROMPT, ADVERSARIAL)) == len(ADVERSARIAL)


# --------------------------------------------------------------------------- loss


def test_step_loss_by_hand():
    # E=2 heads, B=1, T=3; steps end at positions 0 and 2 with labels 1 and 0
    logits = torch.tensor([[[0.0, 5.0, 0.0]], [[9.0, 9.0, 9.0]]])
    pos, y = torch.tensor([[0, 2]]), torch.tensor([[1.0, 0.0]])
    # head 1 masked out: both of head 0's pairs have logit 0 -> BCE = log 2 each
    mask = torch.tensor([[True], [False]])
    assert step_loss(logits, pos, y, mask).item() == pytest.approx(math.log(2))
    total, n = step_bce(logits, pos, y, torch.ones(2, 1, dtype=torch.bool))
    # head 1: BCE(9, 1) = log(1 + e^-9), BCE(9, 0) = log(1 + e^9)
    assert n.item() == 4
    assert total.item() == pytest.approx(2 * math.log(2) + math.log1p(math.exp(-9)) + math.log1p(math.exp(9)), rel=1e-6)
    assert step_loss(logits, pos, y, mask, torch.tensor(2.0), 0.5).item() == pytest.approx(math.log(2) + 1.0)


def _loss(prm, labels, mask):
    x = prm.tokenize(PROMPT, ["23 + 14 = 37\n", "23 + 14 = 38\n"])
    ids, attn, pos = collate([x], prm.pad_id)
    return step_loss(prm(ids, attn), pos, torch.tensor([labels]), mask, prm.sq_dist_to_init(), prm.cfg.l2_to_init)


@pytest.mark.parametrize("label", [1.0, 0.0])
def test_loss_direction(tiny_model_dir, label):
    """One gradient step raises the score of a step labeled 1 and lowers that of a step labeled 0."""
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig())
    steps = ["23 + 14 = 37\n"]
    before = prm.score(PROMPT, steps)[0]
    ids, attn, pos = collate([prm.tokenize(PROMPT, steps)], prm.pad_id)
    step_loss(prm(ids, attn), pos, torch.tensor([[label]]), torch.ones(1, 1, dtype=torch.bool)).backward()
    with torch.no_grad():
        for p in prm.parameters():
            p -= 0.01 * p.grad
    after = prm.score(PROMPT, steps)[0]
    assert after > before if label == 1.0 else after < before


def test_masked_head_gets_no_gradient_from_that_example(tiny_model_dir):
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=2))
    mask = torch.tensor([[True], [False]])  # head 1 does not train on this example
    _loss(prm, [1.0, 0.0], mask).backward()
    assert all(p.grad is None or not p.grad.any() for p in prm.heads[1].parameters())
    assert prm.heads[0].net.weight.grad.abs().sum() > 0


def test_head_data_mask_is_reproducible_and_keeps_about_keep():
    ids = [f"ex-{i}" for i in range(2000)]
    m = head_data_mask(ids, num_heads=3, keep=0.7, seed=0)  # (E, B)
    assert m.shape == (3, 2000) and torch.equal(m, head_data_mask(ids, 3, 0.7, 0))
    assert 0.65 < m.float().mean() < 0.75
    assert not torch.equal(m[0], m[1]) and not torch.equal(m, head_data_mask(ids, 3, 0.7, seed=1))
    assert head_data_mask(ids, 1, 1.0, 0).all()


def test_l2_to_init_pulls_heads_back(tiny_model_dir):
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=2, l2_to_init=1.0))
    with torch.no_grad():
        for p in prm.heads.parameters():
            p += 0.5
    # 64 weights + 1 bias per linear head, each 0.5 away: 2 * 65 * 0.25
    assert prm.sq_dist_to_init().item() == pytest.approx(32.5)
    no_pairs = torch.zeros(2, 1, dtype=torch.bool)  # BCE term empty: only the pull remains
    _loss(prm, [1.0, 0.0], no_pairs).backward()
    with torch.no_grad():
        for p in prm.heads.parameters():
            p -= 0.1 * p.grad
    assert prm.sq_dist_to_init().item() < 32.5


# --------------------------------------------------------------------------- likelihood features


def test_lm_step_features_by_hand():
    """Three tokens, vocabulary 3: step 0 = tokens 1..2, step 1 = token 3; token 0 is prompt."""
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.2, 0.2, 0.6]]]))
    ids = torch.tensor([[2, 0, 1, 2]])
    steps = torch.tensor([[-1, 0, 0, 1]])
    f = prmflow.prm.model.lm_step_features(logits, ids, steps)  # (1, 2, 3)
    # token 1 (=0) from position 0: p=0.5; token 2 (=1) from position 1: p=0.8; token 3 (=2) from position 2: p=1/3
    h = lambda ps: -sum(p * math.log(p) for p in ps)  # noqa: E731
    expect = [
        [math.log(0.5), (math.log(0.5) + math.log(0.8)) / 2, max(h([0.5, 0.25, 0.25]), h([0.1, 0.8, 0.1]))],
        [math.log(1 / 3), math.log(1 / 3), h([1 / 3] * 3)],
    ]
    assert torch.allclose(f[0], torch.tensor(expect), atol=1e-5)
    # the excluded id leaves the softmax: token 2 (=1) from position 1 now has p = 0.8 / 0.9
    g = prmflow.prm.model.lm_step_features(logits, ids, steps, exclude_id=2)
    assert g[0, 0, 1].item() == pytest.approx((math.log(0.5 / 0.75) + math.log(0.8 / 0.9)) / 2, abs=1e-5)


def test_step_features_are_the_policy_view_without_separators(tiny_model_dir):
    """The features equal min/mean log p of each step's tokens under the plain LM on the
    separator-free text, whatever the separator's embedding, and do not depend on batching."""
    from transformers import AutoModelForCausalLM

    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(lm_features=True, max_len=128))
    with torch.no_grad():  # a separator embedding unlike anything: must not matter
        prm.backbone.get_input_embeddings().weight[prm.step_token_id].normal_(0, 5.0)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    steps_text = ["23 + 14 = 37\n", "37 - 5 = 32\n", "The answer is 32"]
    x = prm.tokenize(PROMPT, steps_text)
    other = prm.tokenize("Q\n", ["1"])
    ids, attn, steps, _ = prm.inputs([x, other])
    with torch.no_grad():
        f = prm.step_features(ids, attn, steps)[0]  # (T, 3)
        plain = [t for t in x.input_ids if t != prm.step_token_id]
        logp = lm(input_ids=torch.tensor([plain])).logits[0].log_softmax(-1)
    start = x.n_prompt_tokens
    for k, (pos, text) in enumerate(zip(x.label_positions, steps_text, strict=True)):
        n = len(prm.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        lps = [logp[t - 1, plain[t]].item() for t in range(start, start + n)]
        assert f[pos, 0].item() == pytest.approx(min(lps), abs=1e-4), k
        assert f[pos, 1].item() == pytest.approx(sum(lps) / n, abs=1e-4), k
        start += n
    alone = prm.step_features(*prm.inputs([x])[:3])[0]
    assert torch.allclose(alone, f[: alone.shape[0]], atol=1e-5)
    assert (f[: x.n_prompt_tokens] == 0).all()  # the prompt is no step


def test_lm_features_prm_trains_saves_and_loads(tiny_model_dir, tmp_path):
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(num_heads=2, lm_features=True, max_len=128))
    assert prm.heads[0].net.in_features == prm.backbone.config.hidden_size + prmflow.prm.model.N_LM_FEATURES
    x = prm.tokenize(PROMPT, ["23 + 14 = 37\n", "The answer is 37"])
    ids, attn, steps, pos = prm.inputs([x])
    with pytest.raises(ValueError, match="lm_features"):
        prm(ids, attn)  # the features need the step layout
    loss = step_loss(prm(ids, attn, steps), pos, torch.tensor([[1.0, 0.0]]), torch.ones(2, 1, dtype=torch.bool))
    loss.backward()
    assert prm.backbone.get_output_embeddings().weight.grad is not None  # the features are trainable
    prm.save_pretrained(tmp_path / "prm")
    loaded = PRM.from_pretrained(tmp_path / "prm")
    assert loaded.cfg.lm_features and loaded.backbone.get_output_embeddings() is not None
    steps_list = [["23 + 14 = 37\n", "The answer is 37"], ADVERSARIAL]
    assert prm.score_batch([PROMPT, PROMPT], steps_list) == loaded.score_batch([PROMPT, PROMPT], steps_list)


def test_lm_features_need_an_lm_head(tiny_model_dir):
    base = AutoModel.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prmflow.prm.tokenization.add_step_token(tok, base, "<step>")
    with pytest.raises(ValueError, match="output head"):
        PRM(base, tok, PRMConfig(lm_features=True))


def test_lm_step_features_in_chunks_equal_one_pass(monkeypatch):
    """A large vocabulary is processed a few positions at a time; the features are the same bits."""
    torch.manual_seed(0)
    logits, ids, steps = torch.randn(3, 40, 1000), torch.randint(0, 1000, (3, 40)), torch.randint(-1, 5, (3, 40))
    one = prmflow.prm.model.lm_step_features(logits, ids, steps, exclude_id=7)
    monkeypatch.setattr(prmflow.prm.model, "CHUNK_ELEMENTS", 3 * 1000 * 5)  # 5 positions per pass: 8 passes
    assert torch.equal(prmflow.prm.model.lm_step_features(logits, ids, steps, exclude_id=7), one)


def test_lm_features_of_a_large_vocabulary_never_hold_all_logits(tiny_model_dir, monkeypatch):
    """Above ONE_PASS_LOGITS the LM head runs a few positions at a time (LogitsAt): the same
    features up to float rounding, and a model whose logits it cannot reproduce is refused."""
    prm = PRM.from_backbone(tiny_model_dir, PRMConfig(lm_features=True, max_len=128))
    batch = [prm.tokenize(PROMPT, ["23 + 14 = 37\n", "The answer is 37"]), prm.tokenize("Q\n", ADVERSARIAL)]
    ids, attn, steps, _ = prm.inputs(batch)
    with torch.no_grad():
        one = prm.step_features(ids, attn, steps)
        monkeypatch.setattr(prmflow.prm.model, "ONE_PASS_LOGITS", 0)
        monkeypatch.setattr(prmflow.prm.model, "CHUNK_ELEMENTS", 2 * 301 * 7)  # 7 positions per pass
        chunked = prm.step_features(ids, attn, steps)
        assert prm._logits_checked and torch.allclose(chunked, one, atol=1e-5)
        prm._logits_checked = False
        prm.backbone.config.final_logit_softcapping = 0.5  # a post-processing the model itself does not do
        with pytest.raises(RuntimeError, match="post-processes its logits"):
            prm.step_features(ids, attn, steps)
