"""Policy prompts: the synthetic format unchanged, few-shot text prompts on real GSM8K rows, chat
templates on tiny tokenizers built here, and exactly one BOS whatever the tokenizer does."""

import doctest
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import prmflow.prompts
from prmflow.answers import verify_answer
from prmflow.prompts import PromptConfig, bos_once, build_prompt, encode_prompt, example_solution
from prmflow.synth import format_prompt, generate_problems, load_gsm8k

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/train.jsonl"
NO_GSM8K = pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason=f"GSM8K not found at {GSM8K_TRAIN}")
REPO = Path(__file__).resolve().parents[1]
# the converted Gemma-3-270M base (the real profile's policy), or a developer's copy of it
GEMMA_DIR = next(
    (
        d
        for d in (REPO / "models/real-policy", REPO.parent / "main/models/real-policy-tmp")
        if (d / "tokenizer.json").is_file()
    ),
    REPO / "models/real-policy",
)

CHAT = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def tiny_tokenizer(adds_bos, chat_template=None, bos=True):
    """A word-level tokenizer over a few words; `adds_bos`: its post-processor puts <bos> first
    (Llama-like) or not (Gemma-3's converted tokenizer)."""
    words = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "[UNK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.add_special_tokens(words[:5])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", **({"bos_token": "<bos>"} if bos else {})
    )
    if chat_template:
        out.chat_template = chat_template
    return out


def test_docstring_examples():
    failed, attempted = doctest.testmod(prmflow.prompts)
    assert attempted > 0 and failed == 0


def test_synthetic_template_is_format_prompt_byte_for_byte():
    tok = tiny_tokenizer(adds_bos=False, chat_template=CHAT)  # ignored by the synthetic template
    for p in generate_problems(20, seed=1):
        for t in (None, tok):
            prompt = build_prompt(p.problem, PromptConfig(), t)
            assert prompt.text == format_prompt(p.problem) and prompt.stop == () and prompt.template == "synthetic"


def test_config_validation():
    for kw, field in [
        ({"template": "jinja"}, "template"),
        ({"few_shot": -1}, "few_shot"),
        ({"user_template": "no slot"}, "user_template"),
        ({"answer_line": "x"}, "answer_line"),
    ]:
        with pytest.raises(ValueError, match=field):
            PromptConfig(**kw)


EXAMPLES = [
    {
        "id": f"e{i}",
        "problem": f"Tom has {i} cats and gets 2 more. How many?",
        "solution": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}",
        "answer": str(i + 2),
    }
    for i in range(3)
]


def test_few_shot_examples_are_checked():
    cfg = PromptConfig(template="plain", few_shot=3)
    with pytest.raises(ValueError, match="few_shot=3 but only 2 examples"):
        build_prompt("Q?", cfg, examples=EXAMPLES[:2])
    with pytest.raises(ValueError, match="example 1 .*'e1'.* is the evaluated problem"):
        build_prompt(EXAMPLES[1]["problem"], cfg, examples=EXAMPLES)
    with pytest.raises(ValueError, match="chat_template"):
        build_prompt("Q?", PromptConfig(template="chat"), tiny_tokenizer(adds_bos=False))
    with pytest.raises(ValueError, match="needs the tokenizer"):
        build_prompt("Q?", PromptConfig(template="auto"))


@pytest.mark.parametrize("adds_bos", [False, True])
def test_chat_path(adds_bos):
    tok = tiny_tokenizer(adds_bos, chat_template=CHAT)
    cfg = PromptConfig(template="auto", system_prompt="Be brief.", few_shot=1)
    p = build_prompt("Ann has 4 pens. How many?", cfg, tok, examples=EXAMPLES)
    assert p.template == "chat" and p.stop == ()
    body = (
        "<start_of_turn>system\nBe brief.<end_of_turn>\n"
        f"<start_of_turn>user\n{EXAMPLES[0]['problem']}\nPlease reason step by step, and put your final answer "
        "after 'The answer is'.<end_of_turn>\n"
        "<start_of_turn>assistant\n0 + 2 = 2\nThe answer is 2<end_of_turn>\n"
        "<start_of_turn>user\nAnn has 4 pens. How many?\nPlease reason step by step, and put your final answer "
        "after 'The answer is'.<end_of_turn>\n<start_of_turn>model\n"
    )
    # the template wrote "<bos>"; a tokenizer that adds BOS itself gets the text without it
    assert p.text == (body if adds_bos else "<bos>" + body)
    ids = tok(p.text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert encode_prompt(tok, p.text) == ids


@pytest.mark.parametrize("adds_bos", [False, True])
def test_plain_path_one_bos(adds_bos):
    tok = tiny_tokenizer(adds_bos)  # no chat template: auto is plain
    p = build_prompt("Ann has 4 pens. How many?", PromptConfig(template="auto", few_shot=2), tok, examples=EXAMPLES)
    assert p.template == "plain" and p.stop == ("\n\nQuestion:", "\nQuestion:")
    assert p.text.startswith("<bos>Question: ") != adds_bos
    for text in (p.text, "<bos>" + p.text, "<bos><bos>" + p.text):
        ids = encode_prompt(tok, text)
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_no_bos_for_tokenizers_without_one():
    tok = tiny_tokenizer(adds_bos=False, bos=False)
    assert bos_once(tok, "Question: x") == "Question: x"
    assert tok.bos_token_id not in encode_prompt(tok, "Question: x")


# --------------------------------------------------------------------------- real GSM8K rows


def strip_calc(solution):
    return re.sub(r"<<[^>]*>>", "", solution)


@NO_GSM8K
def test_plain_prompt_on_real_gsm8k_rows():
    rows = load_gsm8k(GSM8K_TRAIN)[:40]
    shots, evaluated = rows[:3], rows[3:]
    cfg = PromptConfig(template="plain", few_shot=3)
    for r in evaluated:
        p = build_prompt(r["problem"], cfg, examples=shots)
        assert p.text.endswith(f"Question: {r['problem'].strip()}\nAnswer:")
        assert "<<" not in p.text and p.text.count("Question: ") == 4 and p.text.count("\n\nQuestion: ") == 3
        # each example is its gold solution with the answer line, which grades as its own answer
        blocks = p.text.split("\n\n")
        for ex, block in zip(shots, blocks[:3], strict=True):
            sol = block.split("\nAnswer: ", 1)[1]
            assert sol == example_solution(ex, cfg) and sol.endswith(f"The answer is {ex['answer']}")
            assert verify_answer(ex["answer"], sol) and not verify_answer(ex["answer"], sol + "1")
        # a completion that runs on into the next example stops at a stop string
        completion = " She has 5.\nThe answer is 5\n\nQuestion: Next?\nAnswer: 7"
        cut = min(completion.find(s) for s in p.stop if s in completion)
        assert completion[:cut] == " She has 5.\nThe answer is 5"


@NO_GSM8K
@pytest.mark.skipif(not (GEMMA_DIR / "tokenizer.json").is_file(), reason=f"no Gemma-3 tokenizer at {GEMMA_DIR}")
def test_gemma_tokenizer_gets_exactly_one_bos():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(GEMMA_DIR)
    rows = load_gsm8k(GSM8K_TRAIN)[:4]
    p = build_prompt(rows[3]["problem"], PromptConfig(template="auto", few_shot=3), tok, examples=rows[:3])
    assert p.template == "plain"  # the base model has no chat template
    ids = tok(p.text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
