"""Loaders for GSM8K, MATH and own rows: the row shape, and errors that name file:line and field."""

import json
import re
from pathlib import Path

import pytest

from prmflow.io import DataError
from prmflow.synth import generate_problems, load_gsm8k, load_math, load_problems

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/train.jsonl"


def write(tmp_path, rows, name="data.jsonl"):
    """Rows as JSONL; a str row is written verbatim (for broken JSON)."""
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def raises_at(path, line, field):
    """Expect a DataError naming `path:line` and the field."""
    return pytest.raises(DataError, match=re.escape(f"{path}:{line}: field '{field}'"))


# --------------------------------------------------------------------------- GSM8K


def test_gsm8k_rows(tmp_path):
    path = write(tmp_path, [
        {"question": "Natalia sold 48 clips and half as many in May. How many?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72\n#### 72"},
        {"question": "How much?", "answer": "It costs 1,000 + 200.\n#### 1,200 ", "id": "q-7"},
        {"question": "Temperature?", "answer": "It drops.\n####-3"},
    ])  # fmt: skip
    assert load_gsm8k(path) == [
        {"id": "gsm8k-1", "problem": "Natalia sold 48 clips and half as many in May. How many?", "answer": "72",
         "solution": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72", "source": "gsm8k"},
        {"id": "q-7", "problem": "How much?", "answer": "1200", "solution": "It costs 1,000 + 200.",  # commas gone
         "source": "gsm8k"},
        {"id": "gsm8k-3", "problem": "Temperature?", "answer": "-3", "solution": "It drops.", "source": "gsm8k"},
    ]  # fmt: skip
    # shuffle_seed: a seeded order of the same rows
    assert load_gsm8k(path, shuffle_seed=1) == load_gsm8k(path, shuffle_seed=1)
    assert sorted(r["id"] for r in load_gsm8k(path, shuffle_seed=1)) == sorted(r["id"] for r in load_gsm8k(path))
    orders = {tuple(r["id"] for r in load_gsm8k(path, shuffle_seed=seed)) for seed in range(20)}
    assert len(orders) > 1  # 3 rows have 6 orders; 20 seeds do not all give the file's


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"question": "Q?", "answer": "no final answer"}, "answer"),  # no '####'
        ({"question": "Q?", "answer": "x\n#### "}, "answer"),  # nothing after it
        ({"question": "Q?", "answer": "x\n#### seven"}, "answer"),  # not a number
        ({"question": "Q?"}, "answer"),
        ({"question": 5, "answer": "#### 5"}, "question"),
        ({"question": "  ", "answer": "#### 5"}, "question"),
        ({"question": "Q?", "answer": ["#### 5"]}, "answer"),
        ({"question": "Q?", "answer": "#### 5", "id": 1.5}, "id"),
    ],
)
def test_gsm8k_errors_name_file_line_field(tmp_path, bad, field):
    path = write(tmp_path, [{"question": "Q?", "answer": "#### 1"}, bad])
    with raises_at(path, 2, field):
        load_gsm8k(path)


def test_gsm8k_duplicate_ids_including_generated_ones(tmp_path):
    # line 3 claims the id that line 1 got by default
    path = write(tmp_path, [{"question": "Q?", "answer": "#### 1"}, {"question": "Q?", "answer": "#### 2"},
                            {"question": "Q?", "answer": "#### 3", "id": "gsm8k-1"}])  # fmt: skip
    with raises_at(path, 3, "id"):
        load_gsm8k(path)


# --------------------------------------------------------------------------- MATH


def test_math_rows(tmp_path):
    path = write(tmp_path, [
        {"problem": "Half of 1?", "solution": r"It is $\boxed{1}$, no: $\boxed{\frac{1}{2}}$."},
        {"problem": "Set?", "solution": r"$\boxed{\{1, 2\}}$", "unique_id": "test/algebra/1.json"},
        {"problem": "Sum?", "answer": "3", "id": "m-3"},
        {"problem": "Product?", "solution": r"$\boxed{6}$", "answer": 6},  # answer field wins, as a string
    ])  # fmt: skip
    assert load_math(path) == [
        {"id": "math-1", "problem": "Half of 1?", "answer": r"\frac{1}{2}",
         "solution": r"It is $\boxed{1}$, no: $\boxed{\frac{1}{2}}$.", "source": "math"},
        {"id": "test/algebra/1.json", "problem": "Set?", "answer": r"\{1, 2\}", "solution": r"$\boxed{\{1, 2\}}$",
         "source": "math"},
        {"id": "m-3", "problem": "Sum?", "answer": "3", "solution": "", "source": "math"},
        {"id": "math-4", "problem": "Product?", "answer": "6", "solution": r"$\boxed{6}$", "source": "math"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"problem": "P?"}, "answer"),  # neither answer nor solution
        ({"problem": "P?", "solution": "no box here"}, "answer"),
        ({"problem": "P?", "solution": r"$\boxed{\frac{1}{2}$"}, "answer"),  # never closes
        ({"problem": "P?", "answer": " "}, "answer"),
        ({"problem": "P?", "solution": 3, "answer": "3"}, "solution"),
        ({"solution": r"\boxed{1}"}, "problem"),
        ({"problem": "P?", "answer": "1", "unique_id": ["x"]}, "unique_id"),
    ],
)
def test_math_errors_name_file_line_field(tmp_path, bad, field):
    path = write(tmp_path, [{"problem": "P?", "answer": "1"}, bad])
    with raises_at(path, 2, field):
        load_math(path)


def test_math_duplicate_ids(tmp_path):
    path = write(tmp_path, [{"problem": "P?", "answer": "1", "unique_id": "a"}] * 2)
    with raises_at(path, 2, "id"):
        load_math(path)


# --------------------------------------------------------------------------- own rows


def test_own_rows_round_trip(tmp_path):
    rows = [p.to_row() for p in generate_problems(3, seed=0)]
    path = write(tmp_path, [*rows, {"id": "x", "problem": "P?", "answer": "4"}])
    assert load_problems(path) == [*rows, {"id": "x", "problem": "P?", "answer": "4", "solution": ""}]


def test_own_rows_keep_a_valid_source(tmp_path):
    path = write(
        tmp_path,
        [
            {"id": "a", "problem": "P?", "answer": "1", "source": "gsm8k"},
            {"id": "b", "problem": "P?", "answer": "1", "source": "synthetic"},
        ],
    )
    assert [r["source"] for r in load_problems(path)] == ["gsm8k", "synthetic"]
    bad = write(tmp_path, [{"id": "a", "problem": "P?", "answer": "1", "source": "GSM8K"}], name="bad.jsonl")
    with raises_at(bad, 1, "source"):
        load_problems(bad)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"problem": "P?", "answer": "1"}, "id"),
        ({"id": "b", "answer": "1"}, "problem"),
        ({"id": "b", "problem": "P?"}, "answer"),
        ({"id": "b", "problem": "P?", "answer": 1}, "answer"),  # answers are strings in rows
        ({"id": "b", "problem": "P?", "answer": ""}, "answer"),
        ({"id": "b", "problem": "P?", "answer": "1", "solution": ["1 + 1 = 2"]}, "solution"),
        ({"id": "a", "problem": "P?", "answer": "1"}, "id"),  # duplicate of line 1
    ],
)
def test_own_errors_name_file_line_field(tmp_path, bad, field):
    path = write(tmp_path, [{"id": "a", "problem": "P?", "answer": "1"}, bad])
    with raises_at(path, 2, field):
        load_problems(path)


# --------------------------------------------------------------------------- file-level errors


@pytest.mark.parametrize("load", [load_gsm8k, load_math, load_problems])
def test_invalid_json_names_the_line(tmp_path, load):
    path = write(tmp_path, ['{"id": "a", "problem": "P?"', "{}"])
    with pytest.raises(DataError, match=re.escape(f"{path}:1: invalid JSON")):
        load(path)


@pytest.mark.parametrize("load", [load_gsm8k, load_math, load_problems])
@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file(tmp_path, load, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*no rows"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_gsm8k(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- the real GSM8K


@pytest.mark.skipif(not GSM8K_TRAIN.is_file(), reason=f"GSM8K train split not found at {GSM8K_TRAIN}")
def test_real_gsm8k_train_loads():
    rows = load_gsm8k(GSM8K_TRAIN)
    assert len(rows) > 1000
    assert all(re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", r["answer"]) for r in rows)
    assert all(r["problem"].strip() and r["solution"].strip() for r in rows)
    assert rows[0]["answer"] == "72" and rows[0]["id"] == "gsm8k-1"
