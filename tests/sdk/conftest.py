"""Fixtures for the end-to-end OpenAI-SDK tests of the slmgate binary.

* ``mock_upstream`` -- a tiny threaded HTTP server that emulates the OpenAI
  ``POST /v1/chat/completions`` endpoint (plain and SSE) and records every
  request it receives.
* ``gateway_factory`` -- starts ``slmgate serve`` on a free port, waits for
  ``/readyz`` and stops it again at teardown.

The binary is taken from ``$SLMGATE_BIN`` (default ``target/debug/slmgate``);
the tests are skipped when it does not exist.
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


def mock_reply_for(messages: list[dict[str, Any]]) -> str:
    last_user = ""
    for m in messages or []:
        if isinstance(m, dict) and m.get("role") == "user":
            last_user = _text_of(m.get("content"))
    return "mock says: " + last_user


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


def _make_handler(state: MockUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; bodies are length- or chunk-delimited

        def log_message(self, fmt: str, *args: Any) -> None:  # keep pytest output clean
            pass

        # -- helpers ------------------------------------------------------
        def _send_json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
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

            if not self.path.split("?")[0].rstrip("/").endswith("/v1/chat/completions"):
                self._send_error(404, f"no route {self.path}", "invalid_request_error", "not_found")
                return
            if not isinstance(body, dict):
                self._send_error(400, "body is not a JSON object", "invalid_request_error", None)
                return

            model = body.get("model", "unknown")
            content = mock_reply_for(body.get("messages") or [])
            if MOCK_FAIL_401 in content:
                # Like OpenAI: never echoes the full key.
                self._send_error(401, "Incorrect API key provided: upst****-key.", "invalid_request_error", "invalid_api_key")
                return

            created = int(time.time())
            if body.get("stream"):
                self._stream(model, content, created, body)
            else:
                self._send_json(200, {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }],
                    "usage": dict(MOCK_USAGE),
                    "system_fingerprint": "fp_mock",
                })

        def _stream(self, model: str, content: str, created: int, body: dict[str, Any]) -> None:
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

            n = len(content)
            cuts = [0, n // 3, 2 * n // 3, n]
            events = [chunk(delta({"role": "assistant", "content": ""}))]
            events += [chunk(delta({"content": content[a:b]})) for a, b in zip(cuts, cuts[1:])]
            events.append(chunk(delta({}, "stop")))
            if include_usage:
                events.append(chunk([], dict(MOCK_USAGE)))

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for ev in events:
                self._chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
                time.sleep(0.01)  # make the chunks arrive separately
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

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
_SCRUBBED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL")


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Gateway]]:
    """``start(args=(), env=None) -> Gateway``: launch ``slmgate serve`` and wait for /readyz.

    ``args`` are extra ``serve`` arguments (e.g. ``["--policy", path]``); ``env``
    entries override the inherited environment (a value of None removes the
    variable). All started gateways are stopped when the module finishes.
    """
    binary = gateway_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.skip(f"slmgate binary not found at {binary} (run `cargo build` or set SLMGATE_BIN)")

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
