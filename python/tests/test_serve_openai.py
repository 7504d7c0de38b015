"""`triage serve` through the `openai` Python client: chat and completions, streamed and
not, with vLLM's `priority` in `extra_body`, against a server this module starts from the
built `triage` binary ($TRIAGE_BIN, else target/release/triage, else target/debug/triage).

Skipped only when the `openai` package is not installed. The server runs the engine 20
times faster than real time; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
from pathlib import Path

import pytest

openai = pytest.importorskip(
    "openai", reason="the `openai` package is not installed (pip install openai)"
)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def triage_binary() -> Path:
    env = os.environ.get("TRIAGE_BIN")
    if env:
        return Path(env)
    for p in (ROOT / "target" / "release" / "triage", ROOT / "target" / "debug" / "triage"):
        if p.exists():
            return p
    pytest.fail(
        "no triage binary: set TRIAGE_BIN or build one "
        "(cargo build --release -p triage-cli)"
    )


@pytest.fixture(scope="module")
def server():
    """A server on a free loopback port; yields its /v1 base URL, then checks that SIGTERM
    stops it with exit code 0."""
    proc = subprocess.Popen(
        [str(triage_binary()), "serve", "--port", "0", "--speed", "20", "--shutdown-grace", "2s"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        if not sel.select(timeout=START_TIMEOUT_S):
            pytest.fail(f"triage serve printed nothing in {START_TIMEOUT_S} s")
        line = proc.stderr.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, f"unexpected first line from triage serve: {line!r}"
        yield m.group(1) + "/v1"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert rc == 0, f"triage serve exited with {rc} after SIGTERM"


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=30)


def test_models(client):
    assert [m.id for m in client.models.list()] == ["llama2-7b-a100"]


def test_chat_not_streamed(client):
    r = client.chat.completions.create(
        model="llama2-7b-a100",
        messages=[{"role": "user", "content": "Say three words."}],
        max_tokens=3,
        extra_body={"priority": 5},
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "tok1 tok2 tok3 "
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert r.usage.prompt_tokens > 0


def test_chat_streamed_with_usage(client):
    stream = client.chat.completions.create(
        model="llama2-7b-a100",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"priority": 0},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "tok1 tok2 tok3 tok4 "
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 4


def test_completions_not_streamed_and_streamed(client):
    r = client.completions.create(
        model="llama2-7b-a100",
        prompt="Once upon a time",
        max_tokens=2,
        extra_body={"priority": 20},
    )
    assert r.choices[0].text == "tok1 tok2 "
    assert r.usage.prompt_tokens == 4
    chunks = list(
        client.completions.create(
            model="llama2-7b-a100",
            prompt=[1, 2, 3],
            max_tokens=3,
            stream=True,
            extra_body={"priority": 10},
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == "tok1 tok2 tok3 "
    assert chunks[-1].choices[0].finish_reason == "length"


def test_errors_keep_vllm_shape(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(
            model="llama2-7b-a100", prompt="x", max_tokens=1, extra_body={"priority": 1000}
        )
    assert "`priority`" in str(e.value)
