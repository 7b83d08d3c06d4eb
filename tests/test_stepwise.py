"""TRL stepwise rows: round trip through write_jsonl, every validation error, datasets loading."""

import doctest
import json

import pytest

import prmflow.label.stepwise
from prmflow.io import DataError, write_jsonl
from prmflow.label import LabelCost, load_stepwise, stepwise_row

PROMPT = "Question: Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?\nAnswer:\n"
STEPS = ["23 + 14 = 38", "The answer is 38"]


def rows():
    cost = LabelCost(rollouts=8, generated_tokens=40, forward_passes=12, prefill_tokens=30).to_dict()
    return [
        stepwise_row("a", PROMPT, STEPS, [False, False], [0.0, 0.0], cost, "omega", problem_id="synth-0"),
        stepwise_row(
            "b",
            PROMPT,
            ["23 + 14 = 37", "The answer is 37"],
            [True, True],
            None,
            LabelCost().to_dict(),
            "omega",
            problem_id="synth-0",
        ),
        stepwise_row("c", PROMPT, STEPS, [True, False], [1, 0], cost, "mc", problem_id="synth-1"),
    ]


def write_lines(path, lines):
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def good(**changes):
    row = {"id": "a", "prompt": "Q", "completions": ["s1", "s2", "s3"], "labels": [True, True, False]}
    row.update(changes)
    return row


def test_docstring_examples():
    failed, attempted = doctest.testmod(prmflow.label.stepwise)
    assert attempted > 0 and failed == 0


def test_round_trip(tmp_path):
    path = tmp_path / "labels.jsonl"
    assert write_jsonl(path, rows()) == 3
    loaded = load_stepwise(path)
    assert loaded == rows()
    assert loaded[2]["soft_labels"] == [1.0, 0.0] and all(type(x) is float for x in loaded[2]["soft_labels"])
    assert set(loaded[0]) == {"id", "prompt", "completions", "labels", "soft_labels", "cost", "source", "problem_id"}


def test_stepwise_row_rejects_inconsistent_rows():
    with pytest.raises(ValueError, match="1 labels != 2 completions"):
        stepwise_row("x", PROMPT, STEPS, [True], None, {}, "mc")
    with pytest.raises(ValueError, match="3 soft_labels != 2 completions"):
        stepwise_row("x", PROMPT, STEPS, [True, True], [1.0, 1.0, 1.0], {}, "mc")
    with pytest.raises(ValueError, match="completions is empty"):
        stepwise_row("x", PROMPT, [], [], None, {}, "mc")


def test_soft_labels_accepted_in_labels_and_soft_labels(tmp_path):
    # TRL also takes numbers in [0, 1] as labels; ints 0 and 1 are numbers too
    path = write_lines(
        tmp_path / "soft.jsonl", [good(labels=[1.0, 0.5, 0], soft_labels=[1, 0.5, 0.0]), good(id="b", soft_labels=None)]
    )
    loaded = load_stepwise(path)
    assert loaded[0]["labels"] == [1.0, 0.5, 0] and loaded[1]["soft_labels"] is None


def test_rows_without_id_are_fine(tmp_path):
    row = good()
    del row["id"]
    assert len(load_stepwise(write_lines(tmp_path / "noid.jsonl", [row, row]))) == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (good(labels=[True, False]), "field 'labels': length 2 != 3 completions"),
        (good(labels=[True, "yes", False]), "field 'labels': item 1 is str, expected bool or number in [0, 1]"),
        (good(labels=[True, 1.5, False]), "field 'labels': item 1 is 1.5, outside [0, 1]"),
        (good(labels=[True, -0.1, False]), "field 'labels': item 1 is -0.1, outside [0, 1]"),
        (good(labels="TTF"), "field 'labels': expected list, got str"),
        (good(labels=None), "field 'labels': missing"),
        (good(soft_labels=[1.0, 0.5]), "field 'soft_labels': length 2 != 3 completions"),
        (good(soft_labels=[1.0, True, 0.0]), "field 'soft_labels': item 1 is bool, expected a number in [0, 1]"),
        (good(soft_labels=[1.0, 2, 0.0]), "field 'soft_labels': item 1 is 2, outside [0, 1]"),
        (good(prompt=3), "field 'prompt': expected str, got int"),
        (good(completions=[]), "field 'completions': empty list"),
        (good(completions=["s1", 2, "s3"]), "field 'completions': item 1 is int, expected str"),
        (good(completions="s1 s2 s3"), "field 'completions': expected list, got str"),
        (good(id=7), "field 'id': expected str, got int"),
        (good(cost=[1, 2]), "field 'cost': expected dict, got list"),
        (good(source=1), "field 'source': expected str, got int"),
    ],
)
def test_validation_errors_name_file_line_and_field(tmp_path, bad, message):
    # two good rows, then the bad one on line 3
    path = write_lines(tmp_path / "labels.jsonl", [good(id="r1"), good(id="r2"), bad])
    with pytest.raises(DataError) as e:
        load_stepwise(path)
    assert str(e.value) == f"{path}:3: {message}"
    assert (e.value.line, e.value.field) == (3, message.split("'")[1])


def test_nan_label_rejected(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_text('{"prompt": "Q", "completions": ["s"], "labels": [NaN]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"nan.jsonl:1: field 'labels': item 0 is nan, outside \[0, 1\]"):
        load_stepwise(path)


def test_duplicate_id_rejected_at_second_line(tmp_path):
    path = write_lines(tmp_path / "labels.jsonl", [good(id="x"), good(id="y"), good(id="x")])
    with pytest.raises(DataError, match=r"labels.jsonl:3: field 'id': duplicate id 'x' \(first seen on line 1\)"):
        load_stepwise(path)


def test_not_json_and_empty_file(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"prompt": "Q", "completions": ["s"], "labels": [true]}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match="labels.jsonl:2: invalid JSON"):
        load_stepwise(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="file has no rows"):
        load_stepwise(path)


def test_arrow_reads_written_rows_with_one_type_per_column(tmp_path):
    # `datasets` reads JSON with pyarrow; bool labels and float soft_labels in every row keep
    # one type per column (a [1, 0] row next to a [0.5] row would not)
    paj = pytest.importorskip("pyarrow.json", reason="pyarrow not installed")
    path = tmp_path / "labels.jsonl"
    write_jsonl(path, rows())
    table = paj.read_json(path)
    assert table.num_rows == 3
    assert str(table.schema.field("labels").type) == "list<item: bool>"
    assert str(table.schema.field("soft_labels").type) == "list<item: double>"
    assert table.column("soft_labels").to_pylist() == [[0.0, 0.0], None, [1.0, 0.0]]


def test_datasets_load_dataset_json(tmp_path):
    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed (optional; TRL brings it)")
    path = tmp_path / "labels.jsonl"
    write_jsonl(path, rows())
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 3
    assert ds[0]["labels"] == [False, False] and ds[1]["soft_labels"] is None
    assert ds[2]["completions"] == STEPS and ds[2]["cost"]["rollouts"] == 8


def test_select_solutions_balanced_fills_from_the_other_class():
    from prmflow.label.stepwise import select_solutions

    rows = [{"id": i, "final_correct": i != 2} for i in range(6)]  # 5 right, 1 wrong
    picked = select_solutions(rows, 4, "balanced")
    assert [r["id"] for r in picked] == [0, 1, 2, 3]  # the one wrong row, 3 right ones, in order
    assert select_solutions(rows, 0, "balanced") == rows and len(select_solutions(rows, 10, "first")) == 6
    with pytest.raises(ValueError, match="select"):
        select_solutions(rows, 2, "best")
