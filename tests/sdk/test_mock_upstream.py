"""The mock upstream itself, checked with the official SDKs (no gateway needed).

The gateway tests trust the mock to speak OpenAI's and Anthropic's wire
formats exactly like the real APIs; these tests make sure the official SDKs
accept it as such (they run even when the slmgate binary is missing).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import pytest
from openai import OpenAI

from conftest import (
    ANTHROPIC_VERSION,
    MOCK_ANTHROPIC_TOOL_USE_ID,
    MOCK_ANTHROPIC_USAGE,
    MOCK_FAIL_529,
    MOCK_OPENAI_TOOL_CALL_ID,
    MOCK_TOOL,
    MOCK_TOOL_INPUT,
    MOCK_USAGE,
    MockUpstream,
    anthropic_key_of,
)

KEY = "direct-key"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture()
def claude(mock_upstream: MockUpstream) -> anthropic.Anthropic:
    mock_upstream.clear()
    return anthropic.Anthropic(base_url=mock_upstream.base_url, api_key=KEY, max_retries=0, timeout=30)


def test_anthropic_mock_non_streamed(claude: anthropic.Anthropic, mock_upstream: MockUpstream) -> None:
    msg = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=32,
        system="Be terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-haiku-4-5"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "mock says: Hi there"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (
        MOCK_ANTHROPIC_USAGE["input_tokens"],
        MOCK_ANTHROPIC_USAGE["output_tokens"],
    )
    req = mock_upstream.last_messages()
    assert anthropic_key_of(req.headers) == KEY
    assert req.headers.get("anthropic-version")  # recent SDKs send newer dates than 2023-06-01
    assert req.body["system"] == "Be terse." and req.body["max_tokens"] == 32


def test_anthropic_mock_streamed(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=32, messages=[{"role": "user", "content": "Stream it"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 3, pieces
    assert "".join(pieces) == "mock says: Stream it" == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (13, 5)

    # The raw event sequence, as the real API sends it.
    events = list(
        claude.messages.create(
            model="claude-haiku-4-5", max_tokens=32, messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"], types
    assert events[0].message.usage.output_tokens == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_mock_tool_use(claude: anthropic.Anthropic, stream: bool) -> None:
    kwargs: dict[str, Any] = dict(
        model="claude-haiku-4-5",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"{MOCK_TOOL}: weather in Paris?"}],
    )
    if stream:
        with claude.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = claude.messages.create(**kwargs)
    assert msg.stop_reason == "tool_use"
    [block] = msg.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == (MOCK_ANTHROPIC_TOOL_USE_ID, "get_weather", MOCK_TOOL_INPUT)

    # A tool_result turn is answered in text.
    follow = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            kwargs["messages"][0],
            {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
        ],
    )
    assert follow.stop_reason == "end_turn" and follow.content[0].type == "text"


def test_anthropic_mock_overloaded(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as ei:
        claude.messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": MOCK_FAIL_529}]
        )
    assert ei.value.status_code == 529
    assert ei.value.response.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def _raw_post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_anthropic_mock_validates_like_the_real_api(mock_upstream: MockUpstream) -> None:
    url = mock_upstream.base_url + "/v1/messages"
    ok_body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    ct = {"content-type": "application/json"}
    status, body = _raw_post(url, ok_body, {**ct, "anthropic-version": ANTHROPIC_VERSION})
    assert (status, body["error"]["type"]) == (401, "authentication_error")
    status, body = _raw_post(url, ok_body, {**ct, "x-api-key": KEY})
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    bearer = {**ct, "authorization": f"Bearer {KEY}", "anthropic-version": ANTHROPIC_VERSION}
    assert _raw_post(url, ok_body, bearer)[0] == 200
    full = {**ct, "x-api-key": KEY, "anthropic-version": ANTHROPIC_VERSION}
    for broken in (
        {k: v for k, v in ok_body.items() if k != "max_tokens"},
        {**ok_body, "messages": [{"role": "system", "content": "no"}, *ok_body["messages"]]},
        {**ok_body, "tools": [{"name": "t", "parameters": {}}]},
    ):
        status, body = _raw_post(url, broken, full)
        assert (status, body["type"], body["error"]["type"]) == (400, "error", "invalid_request_error"), broken
    assert _raw_post(url, ok_body, full)[0] == 200


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_mock_tool_calls(mock_upstream: MockUpstream, stream: bool) -> None:
    client = OpenAI(base_url=mock_upstream.v1, api_key=KEY, max_retries=0, timeout=30)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER_TOOL["description"], "parameters": WEATHER_TOOL["input_schema"],
    }}]
    messages = [{"role": "user", "content": f"{MOCK_TOOL}: weather in Paris?"}]
    if stream:
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, tools=tools, stream=True, stream_options={"include_usage": True}
        ))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls[0].id == MOCK_OPENAI_TOOL_CALL_ID and calls[0].function.name == "get_weather"
        args = "".join(tc.function.arguments or "" for tc in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == MOCK_USAGE["prompt_tokens"]
    else:
        c = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
        assert c.choices[0].finish_reason == "tool_calls"
        [tc] = c.choices[0].message.tool_calls
        assert (tc.id, tc.function.name) == (MOCK_OPENAI_TOOL_CALL_ID, "get_weather")
        args = tc.function.arguments
    assert json.loads(args) == MOCK_TOOL_INPUT

    # Without tools the marker is just text; after a tool message the mock answers in text.
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert plain.choices[0].finish_reason == "stop"
    follow = client.chat.completions.create(model="gpt-4o-mini", tools=tools, messages=[
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": MOCK_OPENAI_TOOL_CALL_ID, "type": "function",
            "function": {"name": "get_weather", "arguments": args},
        }]},
        {"role": "tool", "tool_call_id": MOCK_OPENAI_TOOL_CALL_ID, "content": "sunny"},
    ])
    assert follow.choices[0].finish_reason == "stop"
