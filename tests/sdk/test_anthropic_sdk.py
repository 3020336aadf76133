"""End-to-end tests: the official `anthropic` Python SDK talking to slmgate's
``POST /v1/messages``, and the official `openai` SDK talking to an Anthropic
backend through ``POST /v1/chat/completions``.

Run (after `cargo build`):

    python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt
    .venv/bin/pytest tests/sdk -v

Both cloud backends are the local mock of conftest.py (one server speaks
OpenAI's and Anthropic's API); the local-model tests use the real SmolLM2-135M
and are skipped when its GGUF has not been fetched.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import openai
import pytest

from conftest import (
    MOCK_ANTHROPIC_TOOL_USE_ID,
    MOCK_ANTHROPIC_USAGE,
    MOCK_FAIL_529,
    MOCK_OPENAI_TOOL_CALL_ID,
    MOCK_TOOL,
    MOCK_TOOL_INPUT,
    MOCK_USAGE,
    Gateway,
    MockUpstream,
    RecordedRequest,
    _text_of,
    mock_reply_for,
    models_dir,
)

OPENAI_KEY = "upstream-openai-secret"
ANTHROPIC_KEY = "upstream-anthropic-secret"
CLIENT_KEY = "client-key"
LOCAL_GGUF = "smollm2/SmolLM2-135M-Instruct.Q8_0.gguf"

SYSTEM = "You are terse."
QUESTION = "Name three primary colours."
EXPECTED = mock_reply_for([{"role": "user", "content": QUESTION}])

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {"name": "get_weather", "description": "Current weather for a city.", "input_schema": WEATHER_SCHEMA}
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": WEATHER_TOOL["description"], "parameters": WEATHER_SCHEMA},
}
TOOL_QUESTION = f"{MOCK_TOOL}: what is the weather in Paris?"

# (model, backend, its mock's usage as (input, output), the mock's tool call id)
UPSTREAMS = [
    pytest.param(
        "gpt-4o-mini", "openai",
        (MOCK_USAGE["prompt_tokens"], MOCK_USAGE["completion_tokens"]), MOCK_OPENAI_TOOL_CALL_ID,
        id="openai-upstream",
    ),
    pytest.param(
        "claude-haiku-4-5", "anthropic",
        (MOCK_ANTHROPIC_USAGE["input_tokens"], MOCK_ANTHROPIC_USAGE["output_tokens"]), MOCK_ANTHROPIC_TOOL_USE_ID,
        id="anthropic-upstream",
    ),
]
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


def make_claude(gw: Gateway, timeout: float = 120.0) -> anthropic.Anthropic:
    # The SDK convention: base URL without /v1. No retries: a retry would hide
    # gateway errors and double upstream requests.
    return anthropic.Anthropic(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=timeout)


def make_openai(gw: Gateway, timeout: float = 120.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=timeout)


def upstream_request(mock: MockUpstream, backend: str) -> RecordedRequest:
    return mock.last_chat() if backend == "openai" else mock.last_messages()


def assert_upstream_auth(req: RecordedRequest, backend: str) -> None:
    """The upstream got the gateway's key for that backend, never the client's or the other backend's."""
    if backend == "openai":
        assert req.path.split("?")[0].endswith("/v1/chat/completions"), req.path
        assert req.headers.get("authorization") == f"Bearer {OPENAI_KEY}", req.headers
        other = ANTHROPIC_KEY
    else:
        assert req.path.split("?")[0].endswith("/v1/messages"), req.path
        assert req.headers.get("x-api-key") == ANTHROPIC_KEY, req.headers
        assert req.headers.get("anthropic-version"), req.headers
        other = OPENAI_KEY
    for secret in (CLIENT_KEY, other):
        assert not any(secret in v for v in req.headers.values()), req.headers
        assert secret not in json.dumps(req.body), req.body


def assert_no_secret(text: str, headers: Any) -> None:
    for secret in (OPENAI_KEY, ANTHROPIC_KEY):
        assert secret not in text, text
        assert not any(secret in v for v in headers.values()), dict(headers)


def check_event_sequence(events: list[Any]) -> None:
    """Anthropic's stream grammar: message_start, then content blocks (start,
    deltas, stop; indices 0, 1, ...; one open at a time), message_delta, message_stop."""
    types = [e.type for e in events if e.type != "ping"]
    assert types, "empty stream"
    assert types[0] == "message_start", types
    assert types[-2:] == ["message_delta", "message_stop"], types
    assert types.count("message_start") == types.count("message_delta") == types.count("message_stop") == 1, types
    open_index: int | None = None
    next_index = 0
    for e in [e for e in events if e.type != "ping"][1:-2]:
        if e.type == "content_block_start":
            assert open_index is None and e.index == next_index, (e, types)
            open_index, next_index = e.index, next_index + 1
        elif e.type == "content_block_delta":
            assert e.index == open_index, (e, types)
        elif e.type == "content_block_stop":
            assert e.index == open_index, (e, types)
            open_index = None
        else:
            pytest.fail(f"unexpected event {e.type} inside the message: {types}")
    assert open_index is None, f"content block {open_index} never stopped: {types}"
    assert next_index >= 1, f"no content block: {types}"


# --------------------------------------------------------------------------
# Cloud backends (mock OpenAI + mock Anthropic upstream), default policy
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud_gateway(gateway_factory, mock_upstream: MockUpstream) -> Gateway:
    return gateway_factory(env={
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": mock_upstream.v1,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": mock_upstream.base_url,
    })


@pytest.fixture()
def claude(cloud_gateway: Gateway, mock_upstream: MockUpstream) -> anthropic.Anthropic:
    mock_upstream.clear()
    return make_claude(cloud_gateway)


@pytest.fixture()
def oai(cloud_gateway: Gateway, mock_upstream: MockUpstream) -> openai.OpenAI:
    mock_upstream.clear()
    return make_openai(cloud_gateway)


@pytest.mark.parametrize(("model", "backend", "usage", "tool_id"), UPSTREAMS)
def test_messages_non_streamed(
    claude: anthropic.Anthropic, mock_upstream: MockUpstream, model: str, backend: str, usage: tuple, tool_id: str
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=model, max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": QUESTION}]
    )
    assert raw.headers.get("x-slmgate-backend") == backend, dict(raw.headers)
    assert raw.headers.get("content-type", "").startswith("application/json"), dict(raw.headers)
    msg = raw.parse()
    assert msg.id and msg.type == "message" and msg.role == "assistant"
    assert msg.model == model
    assert [b.type for b in msg.content] == ["text"], msg.content
    assert msg.content[0].text == EXPECTED
    assert msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == usage

    req = upstream_request(mock_upstream, backend)
    assert_upstream_auth(req, backend)
    body = req.body
    assert body["model"] == model
    assert body["max_tokens"] == 64
    assert not body.get("stream")
    if backend == "openai":
        # Anthropic's top-level `system` becomes the leading system message.
        assert [m["role"] for m in body["messages"]] == ["system", "user"], body["messages"]
        assert _text_of(body["messages"][0]["content"]) == SYSTEM
        assert _text_of(body["messages"][1]["content"]) == QUESTION
    else:
        assert _text_of(body["system"]) == SYSTEM, body
        assert [m["role"] for m in body["messages"]] == ["user"], body["messages"]
        assert _text_of(body["messages"][0]["content"]) == QUESTION


@pytest.mark.parametrize(("model", "backend", "usage", "tool_id"), UPSTREAMS)
def test_messages_streamed(
    claude: anthropic.Anthropic, mock_upstream: MockUpstream, model: str, backend: str, usage: tuple, tool_id: str
) -> None:
    with claude.messages.stream(
        model=model, max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == EXPECTED, pieces
    assert [b.type for b in final.content] == ["text"], final.content
    assert final.content[0].text == EXPECTED
    assert final.model == model
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == usage[1]
    # From an OpenAI upstream the input count only arrives at the end, in
    # message_delta's usage; the SDK takes it from there.
    assert final.usage.input_tokens == usage[0]

    req = upstream_request(mock_upstream, backend)
    assert_upstream_auth(req, backend)
    assert req.body["stream"] is True
    assert req.body["max_tokens"] == 64
    if backend == "openai":
        assert [m["role"] for m in req.body["messages"]] == ["system", "user"]
    else:
        assert _text_of(req.body["system"]) == SYSTEM


@pytest.mark.parametrize(("model", "backend", "usage", "tool_id"), UPSTREAMS)
def test_messages_stream_events(
    claude: anthropic.Anthropic, mock_upstream: MockUpstream, model: str, backend: str, usage: tuple, tool_id: str
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    assert raw.headers.get("content-type", "").startswith("text/event-stream"), dict(raw.headers)
    assert raw.headers.get("x-slmgate-backend") == backend, dict(raw.headers)
    events = list(raw.parse())
    check_event_sequence(events)
    start = events[0]
    assert start.message.role == "assistant" and start.message.model == model
    assert start.message.content == []
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert all(d.type == "text_delta" for d in deltas), deltas
    assert "".join(d.text for d in deltas) == EXPECTED
    [md] = [e for e in events if e.type == "message_delta"]
    assert md.delta.stop_reason == "end_turn"
    assert md.usage.output_tokens == usage[1]
    assert md.usage.input_tokens in (None, usage[0]), md.usage


@pytest.mark.parametrize(("model", "backend", "usage", "tool_id"), UPSTREAMS)
@STREAM
def test_messages_tool_use(
    claude: anthropic.Anthropic,
    mock_upstream: MockUpstream,
    model: str,
    backend: str,
    usage: tuple,
    tool_id: str,
    stream: bool,
) -> None:
    kwargs: dict[str, Any] = dict(
        model=model, max_tokens=64, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": TOOL_QUESTION}]
    )
    if stream:
        with claude.messages.stream(**kwargs) as s:
            events = list(s)
            msg = s.get_final_message()
        raw_types = [e.type for e in events]
        assert "content_block_start" in raw_types and "message_stop" in raw_types, raw_types
        json_deltas = [e.delta for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        assert json_deltas, f"tool input not streamed as input_json_delta: {raw_types}"
        assert json.loads("".join(d.partial_json for d in json_deltas)) == MOCK_TOOL_INPUT
    else:
        msg = claude.messages.create(**kwargs)
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["tool_use"], msg.content
    block = msg.content[0]
    assert (block.id, block.name, block.input) == (tool_id, "get_weather", MOCK_TOOL_INPUT)

    req = upstream_request(mock_upstream, backend)
    assert_upstream_auth(req, backend)
    if backend == "openai":
        [tool] = req.body["tools"]
        assert tool["type"] == "function", tool
        fn = tool["function"]
        assert (fn["name"], fn.get("description"), fn["parameters"]) == (
            "get_weather", WEATHER_TOOL["description"], WEATHER_SCHEMA
        ), tool
    else:
        [tool] = req.body["tools"]
        assert (tool["name"], tool["input_schema"]) == ("get_weather", WEATHER_SCHEMA), tool


@pytest.mark.parametrize(("model", "backend", "usage", "tool_id"), UPSTREAMS)
def test_messages_tool_result_follow_up(
    claude: anthropic.Anthropic, mock_upstream: MockUpstream, model: str, backend: str, usage: tuple, tool_id: str
) -> None:
    msg = claude.messages.create(
        model=model,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": TOOL_QUESTION},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": MOCK_TOOL_INPUT},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "sunny, 21 C"}]},
        ],
    )
    assert msg.stop_reason == "end_turn"
    assert [b.type for b in msg.content] == ["text"], msg.content
    assert msg.content[0].text.startswith("mock says: "), msg.content

    req = upstream_request(mock_upstream, backend)
    assert_upstream_auth(req, backend)
    msgs = req.body["messages"]
    if backend == "openai":
        # tool_use -> assistant tool_calls; tool_result -> a `tool` role message.
        assert [m["role"] for m in msgs] == ["user", "assistant", "tool"], msgs
        [call] = msgs[1]["tool_calls"]
        assert call["id"] == tool_id and call["type"] == "function", call
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == MOCK_TOOL_INPUT
        assert msgs[2]["tool_call_id"] == tool_id
        assert _text_of(msgs[2]["content"]) == "sunny, 21 C"
    else:
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"], msgs
        [use] = [b for b in msgs[1]["content"] if b.get("type") == "tool_use"]
        assert (use["id"], use["name"], use["input"]) == (tool_id, "get_weather", MOCK_TOOL_INPUT)
        [result] = [b for b in msgs[2]["content"] if b.get("type") == "tool_result"]
        assert result["tool_use_id"] == tool_id
        assert _text_of(result["content"]) == "sunny, 21 C"


# -- errors ----------------------------------------------------------------


def test_unknown_model_is_not_found(claude: anthropic.Anthropic, mock_upstream: MockUpstream) -> None:
    with pytest.raises(anthropic.NotFoundError) as ei:
        claude.messages.create(model="no-such-model-xyz", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    err = ei.value
    assert err.status_code == 404
    body = err.response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == "not_found_error", body
    assert "no-such-model-xyz" in body["error"]["message"], body
    assert_no_secret(err.response.text, err.response.headers)
    # Rejected by the gateway, not forwarded.
    assert not mock_upstream.chat_requests() and not mock_upstream.messages_requests()


def _post_messages(gw: Gateway, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    req = urllib.request.Request(
        gw.base_url + "/v1/messages",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode("utf-8", "replace"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), e.headers


ANTHROPIC_HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    "data",
    [
        json.dumps({"model": "gpt-4o-mini", "max_tokens": 16}).encode(),  # no `messages`
        b"{not json",
    ],
    ids=["missing-messages", "invalid-json"],
)
def test_invalid_body_is_invalid_request_error(
    cloud_gateway: Gateway, mock_upstream: MockUpstream, data: bytes
) -> None:
    mock_upstream.clear()
    status, text, headers = _post_messages(cloud_gateway, data, ANTHROPIC_HEADERS)
    assert status == 400, (status, text)
    body = json.loads(text)
    assert body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error", body
    assert body["error"]["message"], body
    assert_no_secret(text, headers)
    assert not mock_upstream.chat_requests() and not mock_upstream.messages_requests()


def test_anthropic_headers_are_optional(cloud_gateway: Gateway, mock_upstream: MockUpstream) -> None:
    """x-api-key / anthropic-version are accepted but not required by the gateway."""
    mock_upstream.clear()
    body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": QUESTION}]}
    status, text, _ = _post_messages(cloud_gateway, json.dumps(body).encode())
    assert status == 200, (status, text)
    msg = json.loads(text)
    assert msg["type"] == "message" and msg["role"] == "assistant", msg
    assert msg["content"] == [{"type": "text", "text": EXPECTED}], msg
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None, msg
    assert msg["usage"]["input_tokens"] == MOCK_USAGE["prompt_tokens"], msg
    assert msg["usage"]["output_tokens"] == MOCK_USAGE["completion_tokens"], msg


# -- the OpenAI SDK against the Anthropic backend -------------------------


OPENAI_MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def test_openai_sdk_to_anthropic_non_streamed(oai: openai.OpenAI, mock_upstream: MockUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="claude-haiku-4-5", messages=OPENAI_MESSAGES)
    assert raw.headers.get("x-slmgate-backend") == "anthropic", dict(raw.headers)
    c = raw.parse()
    assert c.object == "chat.completion"
    assert c.model == "claude-haiku-4-5"
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content == EXPECTED
    assert c.choices[0].finish_reason == "stop"
    assert c.usage is not None
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (
        MOCK_ANTHROPIC_USAGE["input_tokens"],
        MOCK_ANTHROPIC_USAGE["output_tokens"],
        MOCK_ANTHROPIC_USAGE["input_tokens"] + MOCK_ANTHROPIC_USAGE["output_tokens"],
    )

    req = mock_upstream.last_messages()
    assert_upstream_auth(req, "anthropic")
    body = req.body
    assert body["model"] == "claude-haiku-4-5"
    # The system message moves to Anthropic's top-level `system`.
    assert _text_of(body["system"]) == SYSTEM, body
    assert [m["role"] for m in body["messages"]] == ["user"], body["messages"]
    assert _text_of(body["messages"][0]["content"]) == QUESTION
    # Anthropic requires max_tokens: the gateway fills it in when the client did not.
    assert isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1, body
    assert not body.get("stream")


def test_openai_sdk_to_anthropic_streamed_with_usage(oai: openai.OpenAI, mock_upstream: MockUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5",
        messages=OPENAI_MESSAGES,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers.get("x-slmgate-backend") == "anthropic", dict(raw.headers)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"], chunks
    assert all(c.model == "claude-haiku-4-5" for c in chunks), chunks
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1], chunks
    u = usage_chunks[0].usage
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (13, 5, 18)

    body = mock_upstream.last_messages().body
    assert body["stream"] is True
    assert body["max_tokens"] == 50
    assert _text_of(body["system"]) == SYSTEM


def test_openai_sdk_to_anthropic_streamed_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="claude-haiku-4-5", messages=OPENAI_MESSAGES, stream=True))
    assert chunks
    assert all(c.choices for c in chunks), "usage-only chunk reached a client that did not ask for it"
    assert all(c.usage is None for c in chunks), chunks
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == EXPECTED
    assert chunks[-1].choices[0].finish_reason == "stop"


@STREAM
def test_openai_sdk_to_anthropic_tool_round_trip(
    oai: openai.OpenAI, mock_upstream: MockUpstream, stream: bool
) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": TOOL_QUESTION}]
    if stream:
        chunks = list(oai.chat.completions.create(
            model="claude-haiku-4-5", messages=messages, tools=[OPENAI_WEATHER_TOOL], stream=True
        ))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls, chunks
        assert all(tc.index == 0 for tc in calls), calls
        call_id = next(tc.id for tc in calls if tc.id)
        name = "".join(tc.function.name or "" for tc in calls if tc.function)
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"], chunks
    else:
        c = oai.chat.completions.create(model="claude-haiku-4-5", messages=messages, tools=[OPENAI_WEATHER_TOOL])
        assert c.choices[0].finish_reason == "tool_calls"
        [tc] = c.choices[0].message.tool_calls or []
        assert tc.type == "function"
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    assert call_id == MOCK_ANTHROPIC_TOOL_USE_ID
    assert name == "get_weather"
    assert json.loads(arguments) == MOCK_TOOL_INPUT

    # OpenAI tools -> Anthropic tools with input_schema.
    [tool] = mock_upstream.last_messages().body["tools"]
    assert (tool["name"], tool.get("description"), tool["input_schema"]) == (
        "get_weather", WEATHER_TOOL["description"], WEATHER_SCHEMA
    ), tool

    # Second turn: assistant tool_calls + a `tool` message -> tool_use / tool_result blocks.
    follow = oai.chat.completions.create(
        model="claude-haiku-4-5",
        tools=[OPENAI_WEATHER_TOOL],
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}},
            ]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert (follow.choices[0].message.content or "").startswith("mock says: ")
    msgs = mock_upstream.last_messages().body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"], msgs
    [use] = [b for b in msgs[1]["content"] if b.get("type") == "tool_use"]
    assert (use["id"], use["name"], use["input"]) == (call_id, "get_weather", MOCK_TOOL_INPUT)
    [result] = [b for b in msgs[2]["content"] if b.get("type") == "tool_result"]
    assert result["tool_use_id"] == call_id
    assert _text_of(result["content"]) == "sunny, 21 C"


# --------------------------------------------------------------------------
# Upstream overloaded (529): a policy without fallbacks, so the error surfaces
# --------------------------------------------------------------------------

NO_FALLBACK_POLICY = """\
version: 1
backends:
  anthropic:
    kind: anthropic
    api_key_env: ANTHROPIC_API_KEY
    base_url_env: ANTHROPIC_BASE_URL
    base_url: https://api.anthropic.com
    models:
      claude-haiku-4-5: { input_per_mtok: 1.00, output_per_mtok: 5.00 }
"""


@pytest.fixture(scope="module")
def strict_gateway(gateway_factory, mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    policy = tmp_path_factory.mktemp("policy") / "anthropic-only.yaml"
    policy.write_text(NO_FALLBACK_POLICY)
    return gateway_factory(
        args=["--policy", str(policy)],
        env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": mock_upstream.base_url},
    )


def test_overloaded_upstream_via_anthropic_sdk(strict_gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    with pytest.raises(anthropic.APIStatusError) as ei:
        make_claude(strict_gateway).messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": f"{MOCK_FAIL_529} now"}]
        )
    err = ei.value
    assert err.status_code == 503, (err.status_code, err.response.text)
    body = err.response.json()
    assert body["type"] == "error", body
    assert isinstance(body["error"]["type"], str) and body["error"]["message"], body
    assert_no_secret(err.response.text, err.response.headers)
    assert mock_upstream.messages_requests(), "the request never reached the upstream"


def test_overloaded_upstream_via_openai_sdk(strict_gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    with pytest.raises(openai.APIStatusError) as ei:
        make_openai(strict_gateway).chat.completions.create(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": f"{MOCK_FAIL_529} now"}]
        )
    err = ei.value
    assert err.status_code == 503, (err.status_code, err.response.text)
    assert isinstance(err.body, dict) and err.body.get("message"), err.response.text
    assert_no_secret(err.response.text, err.response.headers)
    assert mock_upstream.messages_requests(), "the request never reached the upstream"


# --------------------------------------------------------------------------
# Local backend (real SmolLM2-135M), default policy, no cloud key
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_gateway(gateway_factory) -> Gateway:
    gguf = models_dir() / LOCAL_GGUF
    if not gguf.is_file():
        pytest.skip(f"local model not fetched: {gguf} is missing (run `slmgate models fetch`)")
    return gateway_factory(env={
        "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "ANTHROPIC_API_KEY": None, "ANTHROPIC_BASE_URL": None,
    })


@pytest.fixture()
def local_claude(local_gateway: Gateway) -> anthropic.Anthropic:
    return make_claude(local_gateway, timeout=300.0)


LOCAL_MAX_TOKENS = 16


def test_local_messages_non_streamed(local_claude: anthropic.Anthropic) -> None:
    raw = local_claude.messages.with_raw_response.create(
        model="local",
        max_tokens=LOCAL_MAX_TOKENS,
        extra_body={"temperature": 0},  # recent SDKs dropped the typed parameter
        system="You are a helpful assistant.",
        messages=[{"role": "user", "content": "What is the capital of Japan?"}],
    )
    assert "local" in (raw.headers.get("x-slmgate-backend") or ""), dict(raw.headers)
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"], msg.content
    assert msg.content[0].text.strip(), msg
    assert msg.stop_reason in ("end_turn", "max_tokens"), msg
    assert msg.usage.input_tokens > 0, msg.usage
    assert 0 < msg.usage.output_tokens <= LOCAL_MAX_TOKENS, msg.usage


def test_local_messages_streamed(local_claude: anthropic.Anthropic) -> None:
    with local_claude.messages.stream(
        model="local",
        max_tokens=LOCAL_MAX_TOKENS,
        extra_body={"temperature": 0},  # recent SDKs dropped the typed parameter
        messages=[{"role": "user", "content": "Say hello in one short sentence."}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    text = "".join(pieces)
    assert text.strip(), f"empty streamed answer from the local model: {final}"
    assert [b.type for b in final.content] == ["text"], final.content
    assert final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens"), final
    assert final.usage.input_tokens > 0, final.usage
    assert 0 < final.usage.output_tokens <= LOCAL_MAX_TOKENS, final.usage
