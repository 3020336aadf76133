"""End-to-end tests: the official `openai` Python SDK talking to a running slmgate.

Run (after `cargo build`):

    python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt
    .venv/bin/pytest tests/sdk -v

The cloud backend is a local mock (see conftest.py); the local-model tests use
the real SmolLM2-135M and are skipped when its GGUF has not been fetched.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from openai import OpenAI

from conftest import MOCK_FAIL_401, MOCK_USAGE, Gateway, MockUpstream, mock_reply_for, models_dir

UPSTREAM_KEY = "upstream-secret-key"
CLIENT_KEY = "client-key"
LOCAL_GGUF = "smollm2/SmolLM2-135M-Instruct.Q8_0.gguf"
DEFAULT_POLICY_MODELS = {"auto", "gpt-4o-mini", "gpt-4o", "local", "smollm2-135m-instruct"}


def make_client(gw: Gateway, timeout: float = 120.0) -> OpenAI:
    # No retries: a retry would hide gateway errors and double upstream requests.
    return OpenAI(base_url=gw.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=timeout)


def header_float(headers: Any, name: str) -> float:
    value = headers.get(name)
    assert value is not None, f"missing response header {name}; got {dict(headers)}"
    try:
        return float(value)
    except ValueError:
        pytest.fail(f"header {name}={value!r} is not a number")


def assert_routing_headers(headers: Any, backend: str) -> None:
    assert headers.get("x-slmgate-backend") == backend, dict(headers)
    assert headers.get("x-slmgate-model"), dict(headers)
    assert headers.get("x-slmgate-route"), dict(headers)
    assert 0.0 <= header_float(headers, "x-slmgate-triage-score") <= 1.0
    assert headers.get("x-slmgate-overhead-ms") is not None, dict(headers)


# --------------------------------------------------------------------------
# Cloud backend (mock upstream), default policy
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud_gateway(gateway_factory, mock_upstream: MockUpstream) -> Gateway:
    return gateway_factory(env={"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": mock_upstream.v1})


@pytest.fixture()
def cloud(cloud_gateway: Gateway, mock_upstream: MockUpstream) -> OpenAI:
    mock_upstream.clear()
    return make_client(cloud_gateway)


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three primary colours."},
]
EXPECTED = mock_reply_for(MESSAGES)


def test_cloud_non_streamed(cloud: OpenAI, mock_upstream: MockUpstream) -> None:
    raw = cloud.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    completion = raw.parse()

    assert completion.choices[0].message.content == EXPECTED
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == MOCK_USAGE["prompt_tokens"]
    assert completion.usage.completion_tokens == MOCK_USAGE["completion_tokens"]
    assert completion.usage.total_tokens == MOCK_USAGE["total_tokens"]

    h = raw.headers
    assert_routing_headers(h, "openai")
    assert h.get("x-slmgate-model") == "gpt-4o-mini"
    assert h.get("x-slmgate-route", "").startswith("direct"), dict(h)
    assert header_float(h, "x-slmgate-cost-usd") > 0
    assert "x-slmgate-fallback" not in h

    # The upstream got the gateway's key, never the client's.
    req = mock_upstream.last_chat()
    assert req.path.endswith("/v1/chat/completions")
    assert req.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert not any(CLIENT_KEY in v for v in req.headers.values()), req.headers
    assert req.body["model"] == "gpt-4o-mini"
    assert req.body["messages"] == MESSAGES


def test_cloud_passes_unknown_to_it_fields_through(cloud: OpenAI, mock_upstream: MockUpstream) -> None:
    raw = cloud.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        seed=7,
        user="u1",
        response_format={"type": "json_object"},
    )
    assert raw.parse().choices[0].message.content == EXPECTED
    body = mock_upstream.last_chat().body
    assert body["seed"] == 7
    assert body["user"] == "u1"
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"] == MESSAGES


def test_cloud_streamed_strips_usage_chunk(cloud: OpenAI, mock_upstream: MockUpstream) -> None:
    raw = cloud.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert_routing_headers(raw.headers, "openai")
    assert raw.headers.get("x-slmgate-model") == "gpt-4o-mini"

    chunks = list(raw.parse())
    assert chunks, "no chunks received"
    for c in chunks:
        # The client did not ask for usage: the usage-only chunk must be gone.
        assert c.choices, f"chunk with empty choices reached the client: {c}"
        assert c.usage is None, f"usage leaked into a chunk: {c}"
        assert c.model == "gpt-4o-mini"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == EXPECTED
    assert chunks[-1].choices[0].finish_reason == "stop"

    # ...but the gateway asked the upstream for usage (for cost accounting).
    body = mock_upstream.last_chat().body
    assert body["stream"] is True
    assert (body.get("stream_options") or {}).get("include_usage") is True
    assert body["messages"] == MESSAGES


def test_cloud_streamed_with_usage(cloud: OpenAI, mock_upstream: MockUpstream) -> None:
    raw = cloud.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers.get("x-slmgate-backend") == "openai"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED

    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1, chunks
    assert usage_chunks[0] is chunks[-1], "the usage chunk must be the last one"
    usage = usage_chunks[0].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        MOCK_USAGE["prompt_tokens"],
        MOCK_USAGE["completion_tokens"],
        MOCK_USAGE["total_tokens"],
    )
    assert (mock_upstream.last_chat().body.get("stream_options") or {}).get("include_usage") is True


def test_unknown_model_is_an_openai_error(cloud: OpenAI, mock_upstream: MockUpstream) -> None:
    with pytest.raises((openai.NotFoundError, openai.BadRequestError)) as ei:
        cloud.chat.completions.create(model="no-such-model-xyz", messages=MESSAGES)
    err = ei.value
    assert err.status_code in (400, 404)
    assert isinstance(err.body, dict), f"error body is not the OpenAI shape: {err.response.text}"
    assert "no-such-model-xyz" in (err.body.get("message") or ""), err.body
    assert err.body.get("type"), err.body
    assert UPSTREAM_KEY not in str(err) and UPSTREAM_KEY not in err.response.text
    # Unknown models are rejected by the gateway, not forwarded.
    assert not mock_upstream.chat_requests()


def test_invalid_json_is_a_4xx_openai_error(cloud_gateway: Gateway) -> None:
    # Plain urllib: the SDK cannot send a malformed body.
    req = urllib.request.Request(
        cloud_gateway.base_url + "/v1/chat/completions",
        data=b"{not json",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=30)
    status, text = ei.value.code, ei.value.read().decode("utf-8", "replace")
    assert 400 <= status < 500, (status, text)
    err = json.loads(text)["error"]
    assert err.get("message") and err.get("type"), err
    assert UPSTREAM_KEY not in text


def test_upstream_error_never_leaks_key(cloud: OpenAI, mock_upstream: MockUpstream) -> None:
    """The mock answers 401; whether the gateway reports it or falls back to the
    local model, nothing the client sees may contain the upstream key."""
    msgs = [{"role": "user", "content": f"{MOCK_FAIL_401} please"}]
    try:
        raw = cloud.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs, max_tokens=8)
    except openai.APIStatusError as err:
        assert 400 <= err.status_code < 600
        assert UPSTREAM_KEY not in str(err)
        assert UPSTREAM_KEY not in err.response.text
        assert not any(UPSTREAM_KEY in v for v in err.response.headers.values())
    else:
        # Fell back (e.g. to the local model): must be flagged as such.
        assert raw.headers.get("x-slmgate-fallback"), dict(raw.headers)
        assert UPSTREAM_KEY not in raw.http_response.text
        assert not any(UPSTREAM_KEY in v for v in raw.headers.values())
    assert mock_upstream.chat_requests(), "the request never reached the upstream"


def test_models_list(cloud: OpenAI) -> None:
    ids = {m.id for m in cloud.models.list()}
    assert "auto" in ids
    assert DEFAULT_POLICY_MODELS <= ids, ids


# --------------------------------------------------------------------------
# Local backend (real SmolLM2-135M), default policy, no cloud key
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_gateway(gateway_factory) -> Gateway:
    gguf = models_dir() / LOCAL_GGUF
    if not gguf.is_file():
        pytest.skip(f"local model not fetched: {gguf} is missing (run `slmgate models fetch`)")
    return gateway_factory(env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None})


@pytest.fixture()
def local(local_gateway: Gateway) -> OpenAI:
    return make_client(local_gateway, timeout=300.0)


def test_local_answers_capital_of_japan(local: OpenAI) -> None:
    raw = local.chat.completions.with_raw_response.create(
        model="local",
        messages=[{"role": "user", "content": "What is the capital of Japan?"}],
        temperature=0,
        max_tokens=24,
    )
    assert "local" in (raw.headers.get("x-slmgate-backend") or ""), dict(raw.headers)
    completion = raw.parse()
    content = completion.choices[0].message.content or ""
    assert "Tokyo" in content, content
    assert completion.choices[0].finish_reason in ("stop", "length")


HARD_PROMPT = (
    "Prove rigorously, step by step, that there are infinitely many primes congruent to 3 modulo 4. "
    "Then, as a second part, derive the asymptotic complexity of the following algorithm and prove it "
    "correct by induction: given an n x n matrix over a finite field, compute its determinant using "
    "fraction-free Gaussian elimination (Bareiss). Third, write an optimised Rust implementation with "
    "property-based tests, explain every invariant, analyse numerical edge cases, compare it against "
    "LU decomposition with partial pivoting, and justify each step of your reasoning with formal lemmas. "
    "Finally, discuss how the proof of the first part generalises via Dirichlet's theorem on arithmetic "
    "progressions, including the role of L-functions and characters, and state any assumptions explicitly."
)


def test_auto_hard_prompt_without_cloud_key_falls_back_to_local(local: OpenAI) -> None:
    raw = local.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": HARD_PROMPT}],
        temperature=0,
        max_tokens=16,
    )
    h = raw.headers
    diag = (
        f"route={h.get('x-slmgate-route')} score={h.get('x-slmgate-triage-score')} "
        f"backend={h.get('x-slmgate-backend')} fallback={h.get('x-slmgate-fallback')}"
    )
    assert "local" in (h.get("x-slmgate-backend") or ""), diag
    assert h.get("x-slmgate-fallback"), f"expected a fallback header (triage should call this hard): {diag}"
    assert raw.parse().choices[0].message.content is not None


def test_local_streamed(local: OpenAI) -> None:
    raw = local.chat.completions.with_raw_response.create(
        model="local",
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
        temperature=0,
        max_tokens=24,
        stream=True,
    )
    assert "local" in (raw.headers.get("x-slmgate-backend") or ""), dict(raw.headers)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), f"empty streamed answer from the local model: {chunks}"
    assert all(c.choices for c in chunks), "usage-only chunk reached a client that did not ask for it"
