"""Fixtures for the end-to-end SDK tests (OpenAI and Anthropic) of the slmgate binary.

* ``mock_upstream`` -- a tiny threaded HTTP server that emulates both the OpenAI
  ``POST /v1/chat/completions`` endpoint and Anthropic's ``POST /v1/messages``
  endpoint (plain and SSE, text and tool use) and records every request it
  receives. The OpenAI base URL is ``base_url + "/v1"``; the Anthropic base URL
  (SDK convention, without ``/v1``) is ``base_url``.
* ``gateway_factory`` -- starts ``slmgate serve`` on a free port, waits for
  ``/readyz`` and stops it again at teardown.

The binary is taken from ``$SLMGATE_BIN`` (default ``target/debug/slmgate``);
the tests are skipped when it does not exist, and the local-model tests when the
model has not been fetched. Under CI (``$CI`` set to ``true``/``1``/``yes``)
every skip is a failure instead: a run that silently tested nothing must not
pass green (see ``pytest_runtest_makereport`` below).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "slmgate"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0

# The mock's fixed usage numbers (tests compare against these).
MOCK_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
# A user message containing this marker makes the mock answer 401, like
# OpenAI does for a bad key (used to check that errors never leak the key).
MOCK_FAIL_401 = "MOCK_FAIL_401"

# Anthropic mock: fixed usage of every answer (streamed: message_start says
# input 13 / output 1, message_delta the final output 5, like the real API).
MOCK_ANTHROPIC_USAGE = {"input_tokens": 13, "output_tokens": 5}
# A last user text containing this marker makes the Anthropic mock answer 529
# overloaded_error, as Anthropic does under load.
MOCK_FAIL_529 = "MOCK_FAIL_529"
# With `tools` in the request and this marker in the last user text, both mocks
# call the first tool with MOCK_TOOL_INPUT instead of answering in text.
MOCK_TOOL = "MOCK_TOOL"
MOCK_TOOL_INPUT = {"city": "Paris"}
MOCK_OPENAI_TOOL_CALL_ID = "call_mock1"
MOCK_ANTHROPIC_TOOL_USE_ID = "toolu_mock1"
ANTHROPIC_VERSION = "2023-06-01"


def under_ci() -> bool:
    """True when ``$CI`` says so (``true``, ``1`` or ``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """``pytest.skip(reason)`` locally; ``pytest.fail`` under CI."""
    if under_ci():
        pytest.fail(f"CI={os.environ.get('CI')}: would have skipped: {reason}", pytrace=False)
    pytest.skip(reason)


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: ...")
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, a skipped test (setup or call: a missing binary or model,
    whichever module raised the skip) is reported as failed. Expected failures
    (xfail) are left alone."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and under_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"CI={os.environ.get('CI')}: a skip counts as a failure under CI "
            f"(a missing binary or model would mean part of the suite never ran): {_skip_reason(report.longrepr)}"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a module skipped at import time (``pytest.skip(allow_module_level=True)``)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and under_ci():
        report.outcome = "failed"
        report.longrepr = f"CI={os.environ.get('CI')}: skipped module counts as a failure: {_skip_reason(report.longrepr)}"


def gateway_bin() -> Path:
    return Path(os.environ.get("SLMGATE_BIN") or DEFAULT_BIN)


def models_dir() -> Path:
    """Where the gateway looks for models: $SLMGATE_MODELS_DIR or <repo>/models."""
    env = os.environ.get("SLMGATE_MODELS_DIR")
    if env:
        return Path(env).resolve()  # relative to where pytest runs
    return REPO / "models"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# Mock OpenAI upstream
# --------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Message content may be a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last user message (OpenAI or Anthropic shape; text parts only)."""
    last_user = ""
    for m in messages or []:
        if isinstance(m, dict) and m.get("role") == "user":
            last_user = _text_of(m.get("content"))
    return last_user


def mock_reply_for(messages: list[dict[str, Any]]) -> str:
    """What both mocks answer: works for OpenAI and Anthropic message lists."""
    return "mock says: " + last_user_text(messages)


def anthropic_key_of(headers: dict[str, str]) -> str | None:
    """The key of an Anthropic request: ``x-api-key``, or ``Authorization: Bearer``
    (which the real API also accepts and which recent official SDKs send for
    ``api_key``)."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip()
    return None


def _wants_tool(body: dict[str, Any], messages: list[Any]) -> bool:
    """Tools offered and the conversation ends with a user turn asking for MOCK_TOOL."""
    if not body.get("tools") or not messages or not isinstance(messages[-1], dict):
        return False
    last = messages[-1]
    return last.get("role") == "user" and MOCK_TOOL in _text_of(last.get("content"))


def _first_tool_name(tools: list[Any]) -> str:
    t = tools[0] if tools and isinstance(tools[0], dict) else {}
    fn = t.get("function")
    if isinstance(fn, dict):  # OpenAI shape
        return str(fn.get("name") or "tool")
    return str(t.get("name") or "tool")  # Anthropic shape


def _thirds(text: str) -> list[str]:
    n = len(text)
    cuts = [0, n // 3, 2 * n // 3, n]
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON


@dataclass
class MockUpstream:
    base_url: str  # http://127.0.0.1:PORT  (the OpenAI base URL is base_url + "/v1")
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def record(self, req: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(req)

    def snapshot(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.requests)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.snapshot() if r.path.rstrip("/").endswith("/chat/completions")]

    def last_chat(self) -> RecordedRequest:
        reqs = self.chat_requests()
        assert reqs, "the mock upstream received no chat completion request"
        return reqs[-1]

    def messages_requests(self) -> list[RecordedRequest]:
        """Requests to Anthropic's ``POST /v1/messages`` (query string ignored)."""
        return [
            r
            for r in self.snapshot()
            if r.method == "POST" and r.path.split("?")[0].rstrip("/").endswith("/v1/messages")
        ]

    def last_messages(self) -> RecordedRequest:
        reqs = self.messages_requests()
        assert reqs, "the mock upstream received no Anthropic /v1/messages request"
        return reqs[-1]


def _make_handler(state: MockUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; bodies are length- or chunk-delimited

        def log_message(self, fmt: str, *args: Any) -> None:  # keep pytest output clean
            pass

        # -- helpers ------------------------------------------------------
        def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _send_error(self, status: int, message: str, etype: str, code: str | None) -> None:
            self._send_json(status, {"error": {"message": message, "type": etype, "param": None, "code": code}})

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers, up to the empty line
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()  # CRLF after each chunk
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        # -- routes -------------------------------------------------------
        def do_GET(self) -> None:
            state.record(RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(200, {"object": "list", "data": [
                    {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "mock"},
                    {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "mock"},
                ]})
            else:
                self._send_error(404, f"no route {self.path}", "invalid_request_error", "not_found")

        def do_POST(self) -> None:
            raw = self._read_body()
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.record(RecordedRequest("POST", self.path, headers, body))

            route = self.path.split("?")[0].rstrip("/")
            if route.endswith("/v1/messages"):
                self._anthropic_messages(headers, body)
                return
            if not route.endswith("/v1/chat/completions"):
                self._send_error(404, f"no route {self.path}", "invalid_request_error", "not_found")
                return
            if not isinstance(body, dict):
                self._send_error(400, "body is not a JSON object", "invalid_request_error", None)
                return

            model = body.get("model", "unknown")
            messages = body.get("messages") or []
            content = mock_reply_for(messages)
            if MOCK_FAIL_401 in content:
                # Like OpenAI: never echoes the full key.
                self._send_error(401, "Incorrect API key provided: upst****-key.", "invalid_request_error", "invalid_api_key")
                return

            created = int(time.time())
            tool_name = _first_tool_name(body["tools"]) if _wants_tool(body, messages) else None
            if body.get("stream"):
                self._stream(model, content, created, body, tool_name)
            else:
                if tool_name is not None:
                    message: dict[str, Any] = {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{
                            "id": MOCK_OPENAI_TOOL_CALL_ID,
                            "type": "function",
                            "function": {"name": tool_name, "arguments": json.dumps(MOCK_TOOL_INPUT)},
                        }],
                        "refusal": None,
                    }
                    finish = "tool_calls"
                else:
                    message = {"role": "assistant", "content": content}
                    finish = "stop"
                self._send_json(200, {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish,
                    }],
                    "usage": dict(MOCK_USAGE),
                    "system_fingerprint": "fp_mock",
                })

        def _stream(
            self, model: str, content: str, created: int, body: dict[str, Any], tool_name: str | None = None
        ) -> None:
            opts = body.get("stream_options") or {}
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True

            def chunk(choices: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
                c: dict[str, Any] = {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_mock",
                    "choices": choices,
                }
                if include_usage:  # OpenAI sends usage: null on every chunk but the last
                    c["usage"] = usage
                return c

            def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
                return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

            if tool_name is not None:
                # Like OpenAI: the first delta names the call, the arguments follow in pieces.
                events = [chunk(delta({
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{
                        "index": 0,
                        "id": MOCK_OPENAI_TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": tool_name, "arguments": ""},
                    }],
                    "refusal": None,
                }))]
                events += [
                    chunk(delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
                    for piece in _thirds(json.dumps(MOCK_TOOL_INPUT))
                ]
                events.append(chunk(delta({}, "tool_calls")))
            else:
                events = [chunk(delta({"role": "assistant", "content": ""}))]
                events += [chunk(delta({"content": piece})) for piece in _thirds(content)]
                events.append(chunk(delta({}, "stop")))
            if include_usage:
                events.append(chunk([], dict(MOCK_USAGE)))

            self._start_sse()
            for ev in events:
                self._chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
                time.sleep(0.01)  # make the chunks arrive separately
            self._chunk(b"data: [DONE]\n\n")
            self._end_chunks()

        def _start_sse(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

        def _end_chunks(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        # -- Anthropic Messages API ----------------------------------------
        def _anthropic_error(self, status: int, etype: str, message: str) -> None:
            self._send_json(status, {"type": "error", "error": {"type": etype, "message": message}}, {"request-id": "req_mock"})

        def _anthropic_messages(self, headers: dict[str, str], body: Any) -> None:
            """Anthropic's ``POST /v1/messages``, validated like the real API."""
            if not anthropic_key_of(headers):
                self._anthropic_error(401, "authentication_error", "x-api-key header is required")
                return
            if not headers.get("anthropic-version"):
                self._anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
                return
            if not isinstance(body, dict):
                self._anthropic_error(400, "invalid_request_error", "There was an error parsing the body of your request")
                return
            for name in ("model", "max_tokens", "messages"):
                if name not in body:
                    self._anthropic_error(400, "invalid_request_error", f"{name}: Field required")
                    return
            messages = body["messages"]
            mt = body["max_tokens"]
            if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
                self._anthropic_error(400, "invalid_request_error", "max_tokens: Input should be a valid integer >= 1")
                return
            if not isinstance(messages, list):
                self._anthropic_error(400, "invalid_request_error", "messages: Input should be a valid list")
                return
            for i, m in enumerate(messages):
                role = m.get("role") if isinstance(m, dict) else None
                if role not in ("user", "assistant"):
                    # The real API only has user/assistant turns; `system` is top-level.
                    self._anthropic_error(
                        400, "invalid_request_error",
                        f"messages.{i}.role: Input should be 'user' or 'assistant'",
                    )
                    return
            tools = body.get("tools")
            if tools is not None:
                if not isinstance(tools, list):
                    self._anthropic_error(400, "invalid_request_error", "tools: Input should be a valid list")
                    return
                for i, t in enumerate(tools):
                    if not isinstance(t, dict) or not t.get("name") or not isinstance(t.get("input_schema"), dict):
                        self._anthropic_error(
                            400, "invalid_request_error", f"tools.{i}: `name` and `input_schema` are required"
                        )
                        return

            user_text = last_user_text(messages)
            if MOCK_FAIL_529 in user_text:
                self._anthropic_error(529, "overloaded_error", "Overloaded")
                return

            model = str(body["model"])
            tool_name = _first_tool_name(tools) if _wants_tool(body, messages) else None
            text = "mock says: " + user_text
            if body.get("stream") is True:
                self._anthropic_stream(model, text, tool_name)
                return
            if tool_name is not None:
                content: list[dict[str, Any]] = [{
                    "type": "tool_use",
                    "id": MOCK_ANTHROPIC_TOOL_USE_ID,
                    "name": tool_name,
                    "input": dict(MOCK_TOOL_INPUT),
                }]
                stop = "tool_use"
            else:
                content = [{"type": "text", "text": text}]
                stop = "end_turn"
            self._send_json(200, {
                "id": "msg_mock",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {
                    **MOCK_ANTHROPIC_USAGE,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "service_tier": "standard",
                },
            }, {"request-id": "req_mock"})

        def _anthropic_stream(self, model: str, text: str, tool_name: str | None) -> None:
            """The real event sequence: message_start, content_block_start, ping,
            content_block_delta..., content_block_stop, message_delta, message_stop."""
            events: list[tuple[str, dict[str, Any]]] = [
                ("message_start", {"type": "message_start", "message": {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": MOCK_ANTHROPIC_USAGE["input_tokens"],
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                        "service_tier": "standard",
                    },
                }}),
            ]
            if tool_name is not None:
                block: dict[str, Any] = {
                    "type": "tool_use", "id": MOCK_ANTHROPIC_TOOL_USE_ID, "name": tool_name, "input": {},
                }
                deltas = [{"type": "input_json_delta", "partial_json": p}
                          for p in ["", *_thirds(json.dumps(MOCK_TOOL_INPUT))]]
                stop = "tool_use"
            else:
                block = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _thirds(text)]
                stop = "end_turn"
            events.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}))
            events.append(("ping", {"type": "ping"}))
            events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
            events.append(("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": MOCK_ANTHROPIC_USAGE["output_tokens"]},
            }))
            events.append(("message_stop", {"type": "message_stop"}))

            self._start_sse()
            for name, data in events:
                self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                time.sleep(0.01)  # make the chunks arrive separately
            self._end_chunks()

    return Handler


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[MockUpstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = MockUpstream(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _make_handler(state)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="mock-upstream", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------
# Gateway process
# --------------------------------------------------------------------------


@dataclass
class Gateway:
    base_url: str  # http://127.0.0.1:PORT (no /v1)
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, limit: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError as e:
            return f"<could not read {self.log_path}: {e}>"


def _get_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


# Variables the gateway reads; never inherited from the developer's shell, so a
# real cloud key cannot leak into (or change) a test. Tests pass them explicitly.
_SCRUBBED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """``start(args=(), env=None) -> Gateway``: launch ``slmgate serve`` and wait for /readyz.

    ``args`` are extra ``serve`` arguments (e.g. ``["--policy", path]``); ``env``
    entries override the inherited environment (a value of None removes the
    variable). All started gateways are stopped when the module finishes.
    """
    binary = gateway_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        skip_or_fail(f"slmgate binary not found at {binary} (run `cargo build` or set SLMGATE_BIN)")

    started: list[Gateway] = []
    logs = tmp_path_factory.mktemp("gateway-logs")

    def start(args: list[str] | tuple[str, ...] = (), env: dict[str, str | None] | None = None) -> Gateway:
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        full_env.setdefault("RUST_LOG", "info")
        if "SLMGATE_MODELS_DIR" in full_env:
            full_env["SLMGATE_MODELS_DIR"] = str(models_dir())  # absolute; cwd differs
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v

        log_path = logs / f"slmgate-{port}.log"
        cmd = [str(binary), "serve", *args, "--listen", f"127.0.0.1:{port}"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        gw = Gateway(base_url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
        started.append(gw)

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"slmgate exited with code {proc.returncode} before becoming ready\n"
                    f"command: {' '.join(cmd)}\n--- gateway output ---\n{gw.log_tail()}"
                )
            if _get_status(gw.base_url + "/readyz") == 200:
                return gw
            if time.monotonic() > deadline:
                pytest.fail(
                    f"slmgate not ready (GET /readyz != 200) after {READY_TIMEOUT_S:.0f}s\n"
                    f"command: {' '.join(cmd)}\n--- gateway output ---\n{gw.log_tail()}"
                )
            time.sleep(0.2)

    try:
        yield start
    finally:
        for gw in started:
            _stop(gw.proc)
