import json
import os

import pytest

from prmflow import io


def test_write_jsonl_is_canonical_and_roundtrips(tmp_path):
    p = tmp_path / "a.jsonl"
    rows = [{"b": 1, "a": "é"}, {"a": [1, 2]}]
    assert io.write_jsonl(p, rows) == 2
    # sorted keys, compact separators, unicode kept: byte-stable output for DVC hashes
    assert p.read_text(encoding="utf-8") == '{"a":"é","b":1}\n{"a":[1,2]}\n'
    assert io.read_jsonl(p) == rows


def test_write_rejects_nan_and_leaves_no_file(tmp_path):
    p = tmp_path / "a.jsonl"
    with pytest.raises(ValueError):
        io.write_jsonl(p, [{"x": 1.0}, {"x": float("nan")}])
    assert not p.exists()
    assert os.listdir(tmp_path) == []  # no temp debris either


def test_failed_write_keeps_previous_content(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"v": 1})

    def rows():
        yield {"v": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io.write_jsonl(p, rows())
    assert json.loads(p.read_text()) == {"v": 1}


def test_atomic_path_replaces_directory_only_when_complete(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("half")
            raise RuntimeError
    assert sorted(os.listdir(d)) == ["old.txt"]
    with io.atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(os.listdir(d)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.parametrize(
    "content, line, needle",
    [
        ('{"a": 1}\n{"a": \n', 2, "invalid JSON"),
        ('{"a": 1}\n[1, 2]\n', 2, "expected a JSON object"),
        ("", None, "no rows"),
        ("\n\n  \n", None, "no rows"),
    ],
)
def test_read_errors_name_file_and_line(tmp_path, content, line, needle):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(io.DataError) as e:
        io.read_jsonl(p)
    assert str(p) in str(e.value) and needle in str(e.value)
    assert e.value.line == line


def test_invalid_utf8_and_missing_file(tmp_path):
    p = tmp_path / "bin.jsonl"
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(io.DataError, match=r"bin.jsonl:1: not valid UTF-8"):
        io.read_jsonl(p)
    with pytest.raises(io.DataError, match="no such file"):
        io.read_jsonl(tmp_path / "nope.jsonl")


def test_line_get_checks_types_by_field(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"id": "x", "n": true, "s": 3}\n')
    line = next(io.iter_jsonl(p))
    assert line.get("id", str) == "x"
    with pytest.raises(io.DataError, match=r"r.jsonl:1: field 'n': expected int, got bool"):
        line.get("n", int)
    with pytest.raises(io.DataError, match=r"field 's': expected str, got int"):
        line.get("s", str)
    with pytest.raises(io.DataError, match=r"field 'missing': missing"):
        line.get("missing", str)
    assert line.get("missing", str, required=False, default="d") == "d"


def test_duplicate_ids(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    with pytest.raises(io.DataError, match=r"d.jsonl:3: field 'id': duplicate id 'a' \(first seen on line 1\)"):
        io.check_unique_ids(io.iter_jsonl(p))


def test_ensure_free_space_fails_early_with_the_amount(tmp_path):
    io.ensure_free_space(tmp_path / "small.jsonl", 10, "a small file")  # fine
    with pytest.raises(OSError, match=r"not enough disk space for labels at .*huge.jsonl: need about .* free"):
        io.ensure_free_space(tmp_path / "sub" / "huge.jsonl", 10**18, "labels")
