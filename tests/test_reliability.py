"""Reliability: atomic outputs under SIGKILL, hostile input never escapes as a raw traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prmflow.io import DataError

WRITER = """
import sys, time
from prmflow import io
def rows():
    for i in range(10**6):
        if i == 50:
            print("writing", flush=True)
        time.sleep(0.001)
        yield {"i": i, "pad": "x" * 100}
io.write_jsonl(sys.argv[1], rows())
"""


@pytest.mark.parametrize("existing", [False, True])
def test_sigkill_during_write_leaves_no_partial_file(tmp_path, existing):
    target = tmp_path / "out" / "rows.jsonl"
    if existing:  # a previous complete artifact must survive a killed rewrite untouched
        target.parent.mkdir()
        target.write_text('{"old":true}\n')
    p = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert p.stdout.readline().strip() == "writing"  # the writer is mid-stream
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    if existing:
        assert target.read_text() == '{"old":true}\n'
    else:
        assert not target.exists()
    # the only debris allowed is the writer's own temp dir, which never has the final name
    assert all(x.name.startswith(".rows.jsonl.") for x in target.parent.iterdir() if x.name != "rows.jsonl")


# --------------------------------------------------------------------------- hostile input


def _loaders():
    from prmflow.evaluate.processbench import load_processbench
    from prmflow.label.stepwise import load_stepwise
    from prmflow.synth.sources import load_gsm8k, load_math, load_problems

    return {
        "gsm8k": load_gsm8k,
        "math": load_math,
        "problems": load_problems,
        "processbench": load_processbench,
        "stepwise": load_stepwise,
    }


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "id",
    "question",
    "answer",
    "problem",
    "solution",
    "steps",
    "label",
    "final_answer_correct",
    "generator",
    "prompt",
    "completions",
    "labels",
    "soft_labels",
    "unique_id",
]
ROWS = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8)
LINES = st.lists(
    st.one_of(
        ROWS.map(lambda r: json.dumps(r)),
        st.text(max_size=60),
        st.just(""),
        st.just("{"),
        st.just('"just a string"'),
        st.just("[1, 2]"),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=LINES, name=st.sampled_from(sorted(_loaders())))
def test_loaders_fail_only_with_data_errors(tmp_path_factory, lines, name):
    """Any file content: either rows come back, or a DataError naming the file (never another exception)."""
    path = tmp_path_factory.mktemp("fuzz") / f"{name}.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8", errors="surrogatepass")
    try:
        rows = _loaders()[name](path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert isinstance(rows, list)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), name=st.sampled_from(sorted(_loaders())))
def test_loaders_on_arbitrary_bytes(tmp_path_factory, raw, name):
    path = tmp_path_factory.mktemp("fuzzb") / f"{name}.jsonl"
    path.write_bytes(raw)
    try:
        _loaders()[name](path)
    except DataError as e:
        assert str(path) in str(e)


def test_huge_line_is_rejected_by_size_not_parsed(tmp_path, monkeypatch):
    from prmflow import io

    monkeypatch.setattr(io, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "huge.jsonl"
    p.write_text('{"id": "a", "problem": "' + "x" * 5000 + '", "answer": "1"}\n')
    with pytest.raises(DataError, match=r"huge.jsonl:1: line is \d+ bytes, over the 1000 byte limit"):
        io.read_jsonl(p)
