#!/usr/bin/env python3
"""The mixed load of deploy/verify-dashboard.sh (standard library only):
local and cloud, streamed and not, auto-routed simple and hard prompts, a
fallback (a backend that refuses connections), upstream 500s, unknown
models, a request without a key, a key over its rpm, a key over its budget,
the local queue overflowing, and a client that leaves mid-stream.

Usage: traffic.py GATEWAY_URL TEAM_KEY TINY_KEY ROUNDS
Prints one line per request kind: how many answered with which status.
"""
import collections
import concurrent.futures as cf
import json
import socket
import sys
import urllib.error
import urllib.request

URL, TEAM, TINY, ROUNDS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SEEN = collections.defaultdict(collections.Counter)

SIMPLE = ["What is the capital of Japan?", "Say hello.", "What is 2 + 2?"]
HARD = ["Prove that the square root of 2 is irrational, step by step, and explain each lemma.",
        "Write a Rust function that parses an HTTP/1.1 request line and returns a typed struct, with tests."]


def post(kind, body, key=TEAM, timeout=120, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(URL + "/v1/chat/completions", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            SEEN[kind][r.status] += 1
    except urllib.error.HTTPError as e:
        SEEN[kind][e.code] += 1
    except (urllib.error.URLError, TimeoutError, socket.timeout) as e:
        SEEN[kind][f"client:{type(e).__name__}"] += 1


def chat(model, prompt, stream=False, max_tokens=16, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    if max_tokens:
        body["max_tokens"] = max_tokens
    body.update(kw)
    return body


def leave_mid_stream():
    """Read the head of a local stream, then hang up (counted as 499)."""
    host, port = URL.split("//")[1].split(":")
    body = json.dumps(chat("local", "Tell me a long story about a dragon.", True, 200)).encode()
    s = socket.create_connection((host, int(port)), timeout=60)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              + f"authorization: Bearer {TEAM}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    s.recv(4096)
    s.close()
    SEEN["client leaves mid-stream"]["left"] += 1


def one_round(i):
    p = SIMPLE[i % len(SIMPLE)]
    post("local", chat("local", p))
    post("local stream", chat("local", p, stream=True))
    post("auto simple", chat("auto", p))
    post("auto hard", chat("auto", HARD[i % len(HARD)]))
    post("auto hard stream", chat("auto", HARD[(i + 1) % len(HARD)], stream=True))
    post("cloud", chat("gpt-4o-mini", p))
    post("cloud stream", chat("gpt-4o-mini", p, stream=True))
    post("cloud gpt-4o (no max_tokens)", chat("gpt-4o", p, max_tokens=None))
    post("fallback (connection refused)", chat("gpt-4o-dead", p))
    post("upstream 500", chat("flaky", p))
    post("unknown model (404)", chat("no-such-model", p))
    post("invalid JSON (400)", None, raw=b"{not json")
    post("no key (401)", chat("gpt-4o-mini", p), key=None)
    # Deterministic requests: the exact cache misses, then hits; a long
    # answer each round pushes older entries out of the small cache.
    for _ in range(2):
        post("cache (temperature 0)", chat("gpt-4o-mini", p, temperature=0))
    post("cache (evicting)", chat("gpt-4o-mini", f"{p} ({i})", temperature=0))
    post("pii (redacted)", chat("gpt-4o-mini", f"Reply to jane.doe{i}@example.com: {p}"))


def main():
    for i in range(ROUNDS):
        one_round(i)
    # The tiny key: its day budget ($0.01) is below one gpt-4o reservation
    # (4096 tokens at $10/M), so that request goes to the local model; then
    # more requests than its rpm (3).
    post("tiny key over budget", chat("gpt-4o", "Say hi.", max_tokens=None), key=TINY)
    for _ in range(4):
        post("tiny key over rpm", chat("gpt-4o-mini", "Say hi."), key=TINY)
    # More local requests at once than the local queue admits (max_queue 2).
    with cf.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: post("local burst (queue full)", chat("local", "Count to five.", max_tokens=32)), range(6)))
    leave_mid_stream()
    for kind, counts in SEEN.items():
        print(f"  {kind:34s} {dict(counts)}")


if __name__ == "__main__":
    main()
