#!/usr/bin/env python3
"""Mock cloud upstream with faults, for benches/soak.sh. Standard library only.

Speaks OpenAI's ``POST /v1/chat/completions`` (whole, and SSE with the usage
in the last chunk when ``stream_options.include_usage``) and Anthropic's
``POST /v1/messages`` (whole, and the real SSE event sequence). The OpenAI
base URL is ``http://HOST:PORT/v1``, the Anthropic one ``http://HOST:PORT``.

The fault is chosen per request:

* by the upstream model name: a name containing ``fault-<mode>`` (for example
  ``fault-503`` or ``claude-fault-reset``) always gets that mode;
* for every other model, with probability ``--fault-rate``, one of the
  faults before the response head (500, 503, 429; Anthropic: 529 too), which
  a gateway retries or falls back from, so a client never sees them.

Modes:

  500         500 with an error body
  503         503 with ``Retry-After: 1``
  429         429 with ``Retry-After: 1``
  529         Anthropic's overloaded_error
  reset       head and the first chunk (streams) or part of the body, then
              the socket is closed with a TCP reset (SO_LINGER 0)
  truncate    streams: a few events, then a clean end of the body without
              ``data: [DONE]`` / ``message_stop``; whole: fewer bytes than
              Content-Length, then FIN
  stall       no head for --stall-s seconds (longer than first_byte_ms)
  stall-mid   head and the first chunk, then silence for --stall-s seconds
              (longer than idle_ms); whole: head, then the body late
  drip        the answer in small pieces --drip-ms apart (within idle_ms),
              --drip-chunks of them: slow but complete
  drip-long   the same, pieces --drip-long-ms apart, --drip-long-chunks of
              them: outlasts total_ms

``GET /stats`` answers the requests counted by path, mode and stream as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
ANTHROPIC_USAGE = {"input_tokens": 13, "output_tokens": 5}
PRE_HEAD_OPENAI = ("500", "503", "429")
PRE_HEAD_ANTHROPIC = ("500", "503", "429", "529")
MODES = ("500", "503", "429", "529", "reset", "truncate", "stall", "stall-mid", "drip", "drip-long")


class Cut(Exception):
    """The handler closed the connection on purpose (reset / truncate)."""


def last_user_text(messages: Any) -> str:
    text = ""
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                text = c
            elif isinstance(c, list):
                text = "".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
    return text


def pieces(text: str, n: int) -> list[str]:
    n = max(1, n)
    size = max(1, -(-len(text) // n))
    out = [text[i:i + size] for i in range(0, len(text), size)]
    return out or [""]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.cut_errors = 0  # writes that failed because the gateway had gone (expected after stalls)

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(sorted(self.counts.items())), "write_errors": self.cut_errors}


def make_handler(args: argparse.Namespace, stats: Stats) -> type[BaseHTTPRequestHandler]:
    rng = random.Random(args.seed)
    rng_lock = threading.Lock()

    def choose_mode(model: str, anthropic: bool) -> str:
        if "fault-" in model:
            mode = model.split("fault-", 1)[1]
            return mode if mode in MODES else "ok"
        with rng_lock:
            if rng.random() < args.fault_rate:
                return rng.choice(PRE_HEAD_ANTHROPIC if anthropic else PRE_HEAD_OPENAI)
        return "ok"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Head and body go out in separate writes: without this, Nagle and
            # the gateway's delayed ACK add 40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt: str, *a: Any) -> None:
            pass

        # ---------------------------------------------------------- helpers
        def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def start_sse(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

        def chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def end_chunks(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def reset(self) -> None:
            """Close with a TCP RST: no FIN, no end of the chunked body."""
            try:
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                self.close_connection = True
                self.connection.close()
            raise Cut()

        def close_fin(self) -> None:
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
            finally:
                self.close_connection = True
                self.connection.close()
            raise Cut()

        def pre_head_fault(self, mode: str, anthropic: bool) -> bool:
            """Answer a fault that comes before any 2xx head; True when done."""
            if mode == "stall":
                time.sleep(args.stall_s)
                return False  # then answer normally (the gateway has usually gone)
            if mode not in ("500", "503", "429", "529"):
                return False
            status = int(mode)
            headers = {"Retry-After": "1"} if mode in ("503", "429", "529") else {}
            if anthropic:
                etype = {"500": "api_error", "503": "api_error", "429": "rate_limit_error", "529": "overloaded_error"}[mode]
                self.send_json(status, {"type": "error", "error": {"type": etype, "message": f"mock fault {mode}"}}, headers)
            else:
                etype = {"500": "server_error", "503": "server_error", "429": "rate_limit_exceeded", "529": "server_error"}[mode]
                self.send_json(status, {"error": {"message": f"mock fault {mode}", "type": etype, "param": None, "code": None}}, headers)
            return True

        def whole(self, obj: Any, mode: str) -> None:
            """A whole JSON answer, with the body faults."""
            data = json.dumps(obj).encode()
            if mode in ("reset", "truncate", "stall-mid"):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if mode == "reset":
                    self.reset()
                if mode == "truncate":
                    self.close_fin()
                time.sleep(args.stall_s)
                self.wfile.write(data[len(data) // 2:])
                self.wfile.flush()
                return
            if mode in ("drip", "drip-long"):
                gap, n = self.drip(mode)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                size = max(1, -(-len(data) // n))
                for i in range(0, len(data), size):
                    self.wfile.write(data[i:i + size])
                    self.wfile.flush()
                    time.sleep(gap)
                return
            self.send_json(200, obj)

        def drip(self, mode: str) -> tuple[float, int]:
            if mode == "drip-long":
                return args.drip_long_ms / 1000.0, args.drip_long_chunks
            return args.drip_ms / 1000.0, args.drip_chunks

        def sse_events(self, events: list[bytes], mode: str, done: bytes | None) -> None:
            """Send SSE events (already framed) with the stream faults."""
            self.start_sse()
            gap = 0.005
            if mode in ("drip", "drip-long"):
                gap, n = self.drip(mode)
                # pad the event list to n with comments (SSE keep-alives) in between
                extra = max(0, n - len(events))
                events = events[:1] + [b": drip\n\n"] * extra + events[1:]
            for i, ev in enumerate(events):
                self.chunk(ev)
                if i == 0 and mode == "reset":
                    self.reset()
                if i == 0 and mode == "stall-mid":
                    time.sleep(args.stall_s)
                if i == 1 and mode == "truncate":
                    self.end_chunks()  # a clean end of the body, without the final event
                    return
                time.sleep(gap)
            if done is not None:
                self.chunk(done)
            self.end_chunks()

        # ----------------------------------------------------------- routes
        def do_GET(self) -> None:
            if self.path == "/stats":
                self.send_json(200, stats.snapshot())
            elif self.path.rstrip("/") in ("/health", "/v1/models"):
                self.send_json(200, {"ok": True})
            else:
                self.send_json(404, {"error": {"message": "no route", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            raw = self.read_body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            route = self.path.split("?")[0].rstrip("/")
            anthropic = route.endswith("/v1/messages")
            if not anthropic and not route.endswith("/v1/chat/completions"):
                self.send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            if not isinstance(body, dict):
                self.send_json(400, {"error": {"message": "body is not a JSON object", "type": "invalid_request_error"}})
                return
            model = str(body.get("model", ""))
            stream = body.get("stream") is True
            mode = choose_mode(model, anthropic)
            stats.count(f"{'anthropic' if anthropic else 'openai'} {mode} {'stream' if stream else 'whole'}")
            try:
                if self.pre_head_fault(mode, anthropic):
                    return
                text = "mock says: " + last_user_text(body.get("messages"))[:2000]
                if anthropic:
                    self.anthropic(model, text, stream, mode)
                else:
                    self.openai(model, text, stream, mode, body)
            except Cut:
                pass
            except (BrokenPipeError, ConnectionResetError, OSError):
                # The gateway gave up first (stall, timeout) or the client left.
                with stats.lock:
                    stats.cut_errors += 1
                self.close_connection = True

        def openai(self, model: str, text: str, stream: bool, mode: str, body: dict[str, Any]) -> None:
            created = int(time.time())
            if not stream:
                self.whole({
                    "id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": dict(OPENAI_USAGE), "system_fingerprint": "fp_mock",
                }, mode)
                return
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and opts.get("include_usage") is True

            def chunk(choices: list[Any], usage: Any = None) -> bytes:
                c: dict[str, Any] = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created,
                                     "model": model, "system_fingerprint": "fp_mock", "choices": choices}
                if include_usage:
                    c["usage"] = usage
                return b"data: " + json.dumps(c).encode() + b"\n\n"

            def delta(d: dict[str, Any], finish: str | None = None) -> list[Any]:
                return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

            events = [chunk(delta({"role": "assistant", "content": ""}))]
            events += [chunk(delta({"content": p})) for p in pieces(text, 3)]
            events.append(chunk(delta({}, "stop")))
            if include_usage:
                events.append(chunk([], dict(OPENAI_USAGE)))
            self.sse_events(events, mode, b"data: [DONE]\n\n")

        def anthropic(self, model: str, text: str, stream: bool, mode: str) -> None:
            if not stream:
                self.whole({
                    "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": dict(ANTHROPIC_USAGE),
                }, mode)
                return

            def ev(name: str, data: dict[str, Any]) -> bytes:
                return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

            events = [ev("message_start", {"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": ANTHROPIC_USAGE["input_tokens"], "output_tokens": 1}}})]
            events.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                     "content_block": {"type": "text", "text": ""}}))
            events += [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": p}}) for p in pieces(text, 3)]
            events.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            events.append(ev("message_delta", {"type": "message_delta",
                                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                               "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]}}))
            events.append(ev("message_stop", {"type": "message_stop"}))
            self.sse_events(events, mode, None)

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (Cut, OSError)):
            return  # connections the gateway or a fault closed
        super().handle_error(request, client_address)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18091)
    ap.add_argument("--fault-rate", type=float, default=0.02,
                    help="share of requests to non-fault models that get a pre-head fault")
    ap.add_argument("--stall-s", type=float, default=3.0)
    ap.add_argument("--drip-ms", type=int, default=200)
    ap.add_argument("--drip-chunks", type=int, default=8)
    ap.add_argument("--drip-long-ms", type=int, default=600)
    ap.add_argument("--drip-long-chunks", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    stats = Stats()
    srv = Server((args.host, args.port), make_handler(args, stats))
    print(f"mock upstream on http://{args.host}:{args.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
