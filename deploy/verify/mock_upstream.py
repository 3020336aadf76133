#!/usr/bin/env python3
"""A small OpenAI-compatible upstream for deploy/verify-dashboard.sh
(standard library only). POST /v1/chat/completions answers a fixed text,
as JSON or, with "stream": true, as SSE chunks (20 ms apart) ending with a
usage chunk. The upstream model name "error-500" gets a 500.

Usage: mock_upstream.py PORT
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ["The ", "answer ", "is ", "forty-two."]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: simple SSE

    def log_message(self, *args):
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # readiness probe of the verify script
        self.send_json(200, {"ok": True})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return self.send_json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        if not self.path.endswith("/chat/completions"):
            return self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        model = req.get("model", "mock")
        if model == "error-500":
            return self.send_json(500, {"error": {"message": "mock failure", "type": "server_error"}})
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in req.get("messages", [])) + 5
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(ANSWER),
                 "total_tokens": prompt_tokens + len(ANSWER)}
        base = {"id": "chatcmpl-mock", "created": int(time.time()), "model": model}
        if not req.get("stream"):
            return self.send_json(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER)},
                 "finish_reason": "stop"}]})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()

        def chunk(delta, finish=None, **extra):
            body = {**base, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for piece in ANSWER:
            time.sleep(0.02)
            chunk({"content": piece})
        chunk({}, "stop")
        if (req.get("stream_options") or {}).get("include_usage"):
            self.wfile.write(f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
