"""The LLM judge labeler: reply parser, retries over real HTTP to a local fake endpoint, and the API key
never leaking into files, logs, reprs or MLflow."""

import doctest
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prmflow.active.judge
from prmflow.active import UNLABELED, JudgeError, JudgeLabeler, JudgeUnavailable, LabelResult, parse_judge_reply

SENTINEL = "sk-SENTINEL-7c1e0d9a-do-not-leak"
KEY_ENV = "PRMFLOW_TEST_JUDGE_KEY"
ROW = {
    "id": "p0",
    "problem": "Mia has 23 marbles. She finds 14 more marbles. How many marbles does Mia have now?",
    "answer": "37",
    "solution": "23 + 14 = 37\nThe answer is 37",
}
STEPS = ["23 + 14 = 38\n", "38 + 0 = 38\n", "The answer is 38"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


# --------------------------------------------------------------------------- parser


def test_doctests():
    failed, attempted = doctest.testmod(prmflow.active.judge)
    assert attempted >= 5 and failed == 0


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Paragraph 0: 23 + 14 is 37, not 38. incorrect.\n\\boxed{0}", 0),
        ("Paragraph 0: correct.\nParagraph 1: correct.\nParagraph 2: correct.\n\\boxed{-1}", -1),
        ("the index is $\\boxed{ 2 }$.", 2),  # whitespace inside the box
        ("\\boxed{1}\n\nSo the earliest error: \\boxed{1}", 1),  # repeated, consistent
        ("the answer 38 is \\boxed{x + 1}; earliest error \\boxed{1}", 1),  # non-integer boxes are ignored
        ("Conclusion: correct", -1),
        ("Paragraph 0: fine\n\nCONCLUSION: Incorrect at paragraph 2.\n", 2),
    ],
)
def test_parser_accepts(reply, expected):
    assert parse_judge_reply(reply, 3) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",  # empty
        "Paragraph 0: correct. Paragraph 1: 14 + 9 is",  # truncated, no conclusion
        "so \\boxed{1",  # truncated box
        "\\boxed{1} and later \\boxed{2",  # last box never closes
        "\\boxed{0} no wait \\boxed{2}",  # conflicting boxes
        "\\boxed{3}",
        "\\boxed{99999999999999}",  # out of range (3 steps)
        "\\boxed{-2}",
        "\\boxed{-0}",
        "\\boxed{+1}",
        "\\boxed{01}",  # negative other than -1, sign, leading zero
        "\\boxed{}",
        "\\boxed{ }",  # empty
        "\\boxed{{1}}",
        "\\boxed{1{}}",
        "\\boxed{\\text{1}}",  # nested braces
        "\\boxed{１}",
        "\\boxed{١}",  # non-ASCII digits
        "\\boxed{1.0}",
        "\\boxed{one}",
        "\\boxed{1, 2}",
        "the earliest error is paragraph 1",  # no box, no conclusion line
        "Conclusion: correct\nbut actually paragraph 1 is wrong",  # conclusion not on the last line
        "Conclusion: incorrect at paragraph 7",  # out of range
        "\\boxed{1}}}}\\boxed{2}",  # conflict despite stray braces
    ],
)
def test_parser_rejects(reply):
    assert parse_judge_reply(reply, 3) is None


def test_parser_edge_cases():
    assert parse_judge_reply("\\boxed{0}", 0) is None  # no steps: nothing to point at
    assert parse_judge_reply(None, 3) is None  # type: ignore[arg-type]
    assert parse_judge_reply("}}}{{{\\boxed{2}", 3) == 2  # unbalanced plain braces around a closed box do not matter
    assert parse_judge_reply("\\{ \\boxed{2} \\}", 3) == 2  # escaped braces do not nest
    t0 = time.perf_counter()
    huge = "Paragraph 0: correct. " * 50_000 + "{" * 10_000 + "\\boxed{" * 10_000 + "}" * 20_000 + "\\boxed{1}"
    assert parse_judge_reply(huge, 3) == 1  # 10k nested boxes hold no integer (empty or long), the last holds 1
    assert parse_judge_reply("\\boxed{" * 100_000, 3) is None  # none closes
    assert parse_judge_reply("x" * 2_000_000 + "\\boxed{2}", 3) == 2
    assert time.perf_counter() - t0 < 5


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=-2, max_value=12))
def test_parser_never_raises(text, n_steps):
    k = parse_judge_reply(text, n_steps)
    assert k is None or -1 <= k < n_steps


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="\\boxed{}-0123 \n", max_size=60))
def test_parser_never_raises_on_box_soup(text):
    k = parse_judge_reply(text, 3)
    assert k is None or -1 <= k < 3


# --------------------------------------------------------------------------- fake endpoint


class FakeJudge:
    """An OpenAI-compatible /chat/completions on 127.0.0.1 (port 0) that plays canned replies."""

    def __init__(self):
        self.queue: list[tuple[int, object]] = []  # (status, reply text | raw body | ("sleep", s))
        self.requests: list[dict] = []
        self.bad_auth = 0
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != f"Bearer {SENTINEL}":
                    judge.bad_auth += 1
                    return self._send(401, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})
                status, reply = judge.queue.pop(0) if judge.queue else (200, "\\boxed{-1}")
                if isinstance(reply, tuple) and reply[0] == "sleep":
                    time.sleep(reply[1])
                    status, reply = 200, "\\boxed{0}"
                if status != 200:
                    return self._send(status, {"error": "server error"})
                finish = "stop"
                if isinstance(reply, dict):
                    finish, reply = reply["finish_reason"], reply["text"]
                self._send(
                    200,
                    {
                        "choices": [{"message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 20},
                    },
                )

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake():
    server = FakeJudge()
    yield server
    server.close()


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SENTINEL)


def _judge(fake, sleeps=None, **kw):
    return JudgeLabeler(
        fake.base_url,
        "judge-model",
        api_key_env=KEY_ENV,
        sleep=sleeps.append if sleeps is not None else (lambda s: None),
        **{"max_retries": 2, "backoff": 0.5, **kw},
    )


def test_good_reply(fake, key):
    fake.queue = [(200, "Paragraph 0: 23 + 14 = 37, not 38. incorrect.\n\\boxed{0}")]
    judge = _judge(fake)
    assert judge.label(ROW, STEPS) == LabelResult(0, [False, False, False])
    req = fake.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {SENTINEL}" and fake.bad_auth == 0
    assert req["body"]["model"] == "judge-model" and req["body"]["temperature"] == 0
    prompt = req["body"]["messages"][0]["content"]
    assert "<paragraph_2>\nThe answer is 38\n</paragraph_2>" in prompt and ROW["problem"] in prompt
    c = judge.cost
    assert (c.calls, c.requests, c.retries, c.unparseable, c.prompt_tokens, c.completion_tokens) == (
        1,
        1,
        0,
        0,
        100,
        20,
    )


def test_unparseable_then_good_is_retried(fake, key):
    fake.queue = [(200, "Paragraph 0: hmm, let me think"), (200, "\\boxed{1}")]
    judge = _judge(fake)
    assert judge.label(ROW, STEPS) == LabelResult(1, [True, False, False])
    assert (judge.cost.requests, judge.cost.unparseable, judge.cost.retries) == (2, 1, 1)


def test_truncated_reply_is_unparseable_even_with_a_box(fake, key):
    fake.queue = [(200, {"text": "\\boxed{1} and then", "finish_reason": "length"}), (200, "\\boxed{2}")]
    assert _judge(fake).label(ROW, STEPS).first_error == 2


def test_server_error_then_success_backs_off(fake, key):
    fake.queue = [(500, None), (503, None), (200, "\\boxed{-1}")]
    sleeps: list[float] = []
    judge = _judge(fake, sleeps)
    assert judge.label(ROW, STEPS) == LabelResult(-1, [True, True, True])
    assert sleeps == [0.5, 1.0]  # backoff * 2**i
    assert (judge.cost.requests, judge.cost.retries) == (3, 2)


def test_permanently_unparseable_is_unlabeled(fake, key):
    fake.queue = [(200, "I cannot decide.")] * 3
    judge = _judge(fake)
    assert judge.label(ROW, STEPS) == UNLABELED
    assert (judge.cost.requests, judge.cost.unparseable) == (3, 3)  # max_retries = 2: 3 attempts


def test_endpoint_down_raises_unavailable(fake, key):
    fake.queue = [(500, None)] * 3
    sleeps: list[float] = []
    with pytest.raises(JudgeUnavailable, match="failed 3 times"):
        _judge(fake, sleeps).label(ROW, STEPS)
    assert sleeps == [0.5, 1.0]
    closed = JudgeLabeler("http://127.0.0.1:9/v1", "m", api_key_env=KEY_ENV, max_retries=1, sleep=lambda s: None)
    with pytest.raises(JudgeUnavailable, match="ConnectError"):
        closed.label(ROW, STEPS)


def test_timeout_is_retried(fake, key):
    fake.queue = [(200, ("sleep", 0.6))]
    judge = _judge(fake, timeout=0.2)
    assert judge.label(ROW, STEPS).first_error == -1  # the retry gets the default good reply
    assert judge.cost.retries == 1


def test_wrong_key_fails_fast_without_leaking(fake, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-123")
    judge = _judge(fake)
    with pytest.raises(JudgeError) as e:
        judge.label(ROW, STEPS)
    assert "401" in str(e.value) and KEY_ENV in str(e.value) and "sk-wrong-key-123" not in str(e.value)
    assert judge.cost.requests == 1  # a 401 is not retried


# --------------------------------------------------------------------------- the key never leaks


def test_api_key_never_leaks(fake, key, tmp_path, mlflow_tmp, tiny_model_dir, caplog, capsys, monkeypatch):
    from dataclasses import asdict

    from prmflow import tracking
    from prmflow.config import ActiveConfig
    from tasks.active import build_labeler, run_strategy

    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    cfg = ActiveConfig(
        labeler="judge",
        judge_base_url=fake.base_url,
        judge_model="judge-model",
        judge_api_key_env=KEY_ENV,
        judge_max_retries=1,
        judge_backoff=0.0,
        backbone=str(tiny_model_dir),
        num_heads=2,
        max_len=128,
        batch_size=3,
        eval_every=1,
        std_threshold=-1.0,
        head_data_keep=0.5,
        l2_to_init=0.001,
        grad_steps=3,
        micro_batch_size=32,
    )
    labeler = build_labeler(cfg)
    fake.queue = [(500, None), (200, "\\boxed{0}")]
    assert labeler.label(ROW, STEPS).first_error == 0

    # one round of the loop, labels bought from the judge, logged to MLflow in tmp
    prompt = "Question: " + ROW["problem"] + "\nAnswer:\n"
    pool = [{"id": f"s{i}", "problem_id": "p0", "prompt": prompt, "steps": STEPS} for i in range(3)]
    evals = [
        {
            "id": f"e{i}",
            "problem": ROW["problem"],
            "steps": ["23 + 14 = 37", "The answer is 37"] if i % 2 else ["23 + 14 = 38", "The answer is 38"],
            "label": -1 if i % 2 else 0,
            "subset": "calib" if i < 4 else "test",
        }
        for i in range(8)
    ]
    with tracking.stage_run("active", cfg) as stage:
        with tracking.stage_run("active/active/seed0", parent_run_id=stage.run_id) as run:
            run.params(asdict(cfg), prefix="cfg.")
            out = run_strategy.fn(cfg, "active", 0, pool, {"p0": ROW}, evals, str(tmp_path / "state"), run.run_id)
    assert out["labels_spent"] == 3 and out["labeled"] == 3
    assert all(r["auth"] == f"Bearer {SENTINEL}" for r in fake.requests) and fake.bad_auth == 0

    # ... and a failure message
    fake.queue = [(500, None)] * 2
    with pytest.raises(JudgeUnavailable) as err:
        labeler.label(ROW, STEPS)

    texts = {
        "repr": repr(labeler),
        "str": str(labeler),
        "cfg": repr(cfg),
        "vars": repr(vars(labeler)),
        "error": repr(err.value) + str(err.value),
        "logs": caplog.text,
        "out": "".join(capsys.readouterr()),
    }
    for name, text in texts.items():
        assert SENTINEL not in text, name
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("round-" in p.name for p in files)
    for p in files:
        assert SENTINEL.encode() not in p.read_bytes(), p
    assert isinstance(labeler._client, httpx.Client)


@pytest.mark.slow
def test_api_key_never_reaches_prefect_results_or_its_database(fake, tmp_path, tiny_model_dir):
    """The `active` stage as a subprocess with the judge labeler, Prefect task results persisted
    (PREFECT_RESULTS_PERSIST_BY_DEFAULT) and Prefect's own database in tmp: the key is in no
    file there (prefect.db, result files, MLflow, labels, checkpoints) and in no output."""
    import os
    import subprocess
    import sys

    import yaml
    from conftest import REPO

    prompt = "Question: " + ROW["problem"] + "\nAnswer:\n"
    (tmp_path / "data/segments").mkdir(parents=True)
    (tmp_path / "data/problems").mkdir(parents=True)
    (tmp_path / "data/eval").mkdir(parents=True)
    (tmp_path / "data/segments/segments.jsonl").write_text(
        "".join(
            json.dumps({"id": f"s{i}", "problem_id": "p0", "prompt": prompt, "steps": STEPS}) + "\n" for i in range(3)
        )
    )
    (tmp_path / "data/problems/pool.jsonl").write_text(json.dumps(ROW) + "\n")
    (tmp_path / "data/eval/synthetic_processbench.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "id": f"e{i}",
                    "generator": "t",
                    "problem": ROW["problem"],
                    "final_answer_correct": bool(i % 2),
                    "steps": ["23 + 14 = 37", "The answer is 37"] if i % 2 else ["23 + 14 = 38", "The answer is 38"],
                    "label": -1 if i % 2 else 0,
                    "subset": "calib" if i < 4 else "test",
                }
            )
            + "\n"
            for i in range(8)
        )
    )
    active = {
        "strategies": ["active"],
        "seeds": [0],
        "match_fractions": [1.0],
        "backbone": str(tiny_model_dir),
        "num_heads": 2,
        "max_len": 128,
        "std_threshold": -1.0,
        "pool_size": 3,
        "batch_size": 3,
        "grad_steps": 1,
        "micro_batch_size": 3,
        "eval_every": 1,
        "labeler": "judge",
        "judge_base_url": fake.base_url,
        "judge_model": "judge-model",
        "judge_api_key_env": KEY_ENV,
        "judge_max_retries": 1,
        "judge_backoff": 0.0,
        "task_retries": 0,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"active": active}))
    env = {
        **os.environ,
        KEY_ENV: SENTINEL,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect-results"),
        "PREFECT_LOGGING_LEVEL": "DEBUG",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    env.pop("PREFECT_API_URL", None)  # the flow's own ephemeral API, whose database is in tmp
    p = subprocess.run(
        [sys.executable, "-m", "flows.active"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert len(fake.requests) == 3 and all(r["auth"] == f"Bearer {SENTINEL}" for r in fake.requests)
    assert SENTINEL not in p.stdout and SENTINEL not in p.stderr
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert (tmp_path / "prefect-home" / "prefect.db").is_file()
    assert any(f.is_relative_to(tmp_path / "prefect-results") for f in files), "no Prefect result was persisted"
    assert (tmp_path / "reports/active/summary.json").is_file()
    for f in files:
        assert SENTINEL.encode() not in f.read_bytes(), f
