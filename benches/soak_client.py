#!/usr/bin/env python3
"""Mixed-load driver for benches/soak.sh. Standard library only (http.client, threads).

--concurrency workers send requests one after the other for --secs seconds,
each picking a scenario at random by weight (see SCENARIOS): whole and
streamed requests to /v1/chat/completions and /v1/messages, routed to the
mock cloud models, the fault models of benches/soak-policy.yaml and (a small
share, at most --local-concurrency at a time) the local model; streams the
client abandons after the first chunk; cached and semantic-cache requests;
bad requests; a rate-limited key.

Each request's outcome is a short string: the HTTP status and, for 2xx
streams, how the stream ended (`complete`: [DONE] or message_stop;
`error-event`: the gateway ended it with an error event; `cut`: the body ended
without either; `disconnected`: the client hung up on purpose), or `exc:<name>`
/ `timeout`. Every scenario lists the outcomes it expects (`... via-fallback`:
only with an `x-slmgate-fallback` header); anything else is
counted as unexpected and a few samples are kept (status, headers, body).

Writes a JSON summary (--out) and prints a progress line every 10 s;
``soak_client.py --report SUMMARY.json`` prints a summary as markdown.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"

OPENAI_FAULTS_PRE = ["fault-500", "fault-503", "fault-429", "fault-stall"]
OPENAI_FAULTS_MID = ["fault-reset", "fault-truncate", "fault-stall-mid", "fault-drip-long"]
ANTHROPIC_FAULTS = ["claude-fault-529", "claude-fault-reset", "claude-fault-truncate"]
# Streams of these models break after the 200 head: the gateway cannot fall
# back any more and must end the stream with an error event.
MID_STREAM = {"fault-reset", "fault-truncate", "fault-stall-mid", "fault-drip-long",
              "claude-fault-reset", "claude-fault-truncate"}

FILLER = ("The committee reviewed the quarterly figures, the staffing plan and the "
          "open items from the last meeting before it turned to the question. ")


@dataclass
class Req:
    method: str
    path: str
    body: bytes | None
    stream: bool = False
    disconnect: bool = False  # hang up after the first chunk of the body
    key: str | None = None  # None: the default key
    content_type: str = "application/json"
    partial_body: bool = False  # send half the body, then hang up


@dataclass
class Result:
    outcome: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    secs: float = 0.0


def expect_2xx_complete(r: Req) -> set[str]:
    return {"200 complete"} if r.stream else {"200 ok"}


# -------------------------------------------------------------- the workers


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host, port = args.gateway.replace("http://", "").rstrip("/").split(":")
        self.port = int(port)
        self.lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.fallbacks: Counter[str] = Counter()
        self.backends: Counter[str] = Counter()
        self.cache: Counter[str] = Counter()
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.unexpected: dict[str, Counter[str]] = defaultdict(Counter)
        self.samples: list[dict[str, Any]] = []
        self.sample_seen: Counter[str] = Counter()
        self.total = 0
        self.unexpected_total = 0
        self.local_sem = threading.Semaphore(args.local_concurrency)
        self.seq = 0
        self.stop_at = time.monotonic() + args.secs

    def next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    # ---------------------------------------------------------- one request
    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)

    def send(self, conn: http.client.HTTPConnection | None, r: Req) -> tuple[Result, http.client.HTTPConnection | None]:
        """Run one request on conn (a fresh one when None); returns the result and
        the connection when it may be reused."""
        t0 = time.monotonic()
        fresh = conn is None
        for attempt in (0, 1):
            if conn is None:
                conn = self.connect()
                fresh = True
            try:
                res = self._send(conn, r)
                res.secs = time.monotonic() - t0
                keep = res.outcome in ("200 ok", "200 complete") or (400 <= res.status < 500 and res.outcome.endswith(" ok"))
                if not keep or r.disconnect or r.partial_body:
                    conn.close()
                    return res, None
                return res, conn
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                conn = None
                if not fresh and attempt == 0:
                    continue  # a kept-alive connection the server had closed: retry once, fresh
                return Result(f"exc:{type(e).__name__}", secs=time.monotonic() - t0), None
            except socket.timeout:
                conn.close()
                return Result("timeout", secs=time.monotonic() - t0), None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                return Result(f"exc:{type(e).__name__}", secs=time.monotonic() - t0), None
        raise AssertionError("unreachable")

    def _send(self, conn: http.client.HTTPConnection, r: Req) -> Result:
        headers = {"Content-Type": r.content_type}
        key = self.args.key if r.key is None else r.key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if r.path == MESSAGES:
            headers["anthropic-version"] = "2023-06-01"
        if r.partial_body:
            body = r.body or b""
            conn.putrequest(r.method, r.path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            conn.send(body[: len(body) // 2])
            hangup(conn, rst=False)
            return Result("sent-partial")
        conn.request(r.method, r.path, body=r.body, headers=headers)
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        status = resp.status
        if not r.stream or status != 200 or "text/event-stream" not in hdrs.get("content-type", ""):
            data = resp.read()
            outcome = f"{status} ok"
            if status == 200:
                try:
                    obj = json.loads(data)
                    if r.stream:
                        outcome = "200 not-a-stream"
                    elif not (obj.get("choices") or obj.get("content")):
                        outcome = "200 no-answer"
                except ValueError:
                    outcome = "200 bad-json"
            return Result(outcome, status, hdrs, data[:2000])
        # A stream: read events until the end of the body.
        seen = b""
        first = True
        end = "cut"
        while True:
            line = resp.readline()
            if not line:
                break
            if len(seen) < 4000:
                seen += line
            if first and line.startswith(b"data:"):
                first = False
                if r.disconnect:
                    hangup(conn, rst=random.random() < 0.5)
                    return Result("200 disconnected", status, hdrs, seen)
            s = line.strip()
            if end == "error-event":
                continue  # sticky: an error event then [DONE] is still an error
            if s == b"data: [DONE]" or s == b"event: message_stop":
                end = "complete"
            elif s.startswith(b"event: error") or (s.startswith(b"data:") and b'"error"' in s[:40]):
                end = "error-event"
        return Result(f"200 {end}", status, hdrs, seen)

    def record(self, scen: str, expected: set[str], r: Req, res: Result) -> None:
        fell_back = "x-slmgate-fallback" in res.headers
        ok = (res.outcome in expected or ("4xx" in expected and 400 <= res.status < 500)
              or (fell_back and f"{res.outcome} via-fallback" in expected))
        with self.lock:
            self.total += 1
            self.counts[scen][res.outcome] += 1
            self.durations[scen].append(res.secs)
            if "x-slmgate-fallback" in res.headers:
                self.fallbacks[scen] += 1
            b = res.headers.get("x-slmgate-backend")
            if b:
                self.backends[b] += 1
            c = res.headers.get("x-slmgate-cache")
            if c:
                self.cache[c] += 1
            if not ok:
                self.unexpected_total += 1
                self.unexpected[scen][res.outcome] += 1
                k = f"{scen} {res.outcome}"
                self.sample_seen[k] += 1
                if self.sample_seen[k] <= 3:
                    self.samples.append({
                        "scenario": scen, "outcome": res.outcome, "secs": round(res.secs, 3),
                        "request": {"path": r.path, "body": (r.body or b"")[:300].decode("utf-8", "replace")},
                        "headers": {k2: v for k2, v in res.headers.items() if k2.startswith("x-slmgate") or k2 == "content-type"},
                        "body": res.body[:800].decode("utf-8", "replace"),
                    })

    def worker(self, wid: int) -> None:
        rnd = random.Random(self.args.seed * 1000 + wid)
        conn: http.client.HTTPConnection | None = None
        names = [s[0] for s in SCENARIOS]
        weights = [s[1] for s in SCENARIOS]
        while time.monotonic() < self.stop_at:
            name, _, local, build = SCENARIOS[names.index(rnd.choices(names, weights)[0])]
            if local and not self.local_sem.acquire(blocking=False):
                continue
            try:
                r, expected = build(self, rnd)
                res, conn = self.send(conn, r)
                self.record(name, expected, r, res)
            finally:
                if local:
                    self.local_sem.release()
        if conn is not None:
            conn.close()

    # ---------------------------------------------------------- reporting
    def summary(self, wall: float) -> dict[str, Any]:
        def pct(xs: list[float], p: float) -> float:
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else 0.0

        with self.lock:
            scen = {}
            for name, c in sorted(self.counts.items()):
                d = self.durations[name]
                scen[name] = {
                    "n": sum(c.values()), "outcomes": dict(sorted(c.items())),
                    "unexpected": dict(self.unexpected.get(name, {})), "fallbacks": self.fallbacks[name],
                    "p50_ms": round(pct(d, 0.5) * 1000, 1), "p99_ms": round(pct(d, 0.99) * 1000, 1),
                    "max_ms": round(max(d) * 1000, 1) if d else 0.0,
                }
            return {
                "wall_s": round(wall, 1), "requests": self.total, "unexpected": self.unexpected_total,
                "scenarios": scen, "backends": dict(self.backends), "cache": dict(self.cache),
                "samples": self.samples,
            }


def hangup(conn: http.client.HTTPConnection, rst: bool) -> None:
    """Close the client's socket at once (with a TCP reset when rst)."""
    sock = conn.sock
    if sock is not None:
        try:
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


# -------------------------------------------------------------- request builders


def prompt(c: Client, rnd: random.Random) -> str:
    return f"Request {c.next_seq()}: say something short about the number {rnd.randint(1, 10**6)}."


def chat(model: str, text: str, stream: bool, **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def messages(model: str, text: str, stream: bool, max_tokens: int = 64, **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": text}], **extra}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def api_req(path: str, model: str, text: str, stream: bool, disconnect: bool = False, **extra: Any) -> Req:
    body = chat(model, text, stream, **extra) if path == CHAT else messages(model, text, stream, **extra)
    return Req("POST", path, body, stream=stream, disconnect=disconnect)


Built = tuple[Req, set[str]]


def b_cloud(c: Client, rnd: random.Random) -> Built:
    path = rnd.choice([CHAT, CHAT, MESSAGES])
    model = rnd.choice(["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "openai/gpt-4o-mini"])
    r = api_req(path, model, prompt(c, rnd), rnd.random() < 0.5)
    return r, expect_2xx_complete(r)


def b_cached(c: Client, rnd: random.Random) -> Built:
    # temperature 0: the exact cache answers repeats; the pool (about 1.7 KB
    # a prompt, echoed by the mock) is bigger than the policy's 2 MiB cache,
    # so it fills and keeps evicting.
    i = rnd.randrange(c.args.cache_pool)
    text = f"Cached question {i}. " + FILLER * 12
    path = rnd.choice([CHAT, MESSAGES])
    r = api_req(path, "gpt-4o-mini", text, rnd.random() < 0.3, temperature=0)
    return r, expect_2xx_complete(r)


def b_semantic(c: Client, rnd: random.Random) -> Built:
    topics = ["the weather in Paris", "how to boil an egg", "the capital of Peru", "a good name for a cat",
              "how tides work", "why the sky is blue", "the tallest mountain", "how to tie a tie"]
    lead = rnd.choice(["Tell me about", "Please explain", "What do you know about", "Describe"])
    text = f"{lead} {rnd.choice(topics)}" + ("" if rnd.random() < 0.5 else f" (variant {rnd.randrange(400)})")
    r = api_req(CHAT, "soak-semantic", text, rnd.random() < 0.3)
    return r, expect_2xx_complete(r)


def b_disconnect_cloud(c: Client, rnd: random.Random) -> Built:
    path = rnd.choice([CHAT, MESSAGES])
    model = rnd.choice(["gpt-4o-mini", "claude-haiku-4-5", "fault-drip"])
    r = api_req(path, model, prompt(c, rnd), True, disconnect=True)
    return r, {"200 disconnected", "200 complete"}


def b_fault_pre(c: Client, rnd: random.Random) -> Built:
    # Faults before the head: retried, then a fallback answers.
    path = rnd.choice([CHAT, CHAT, MESSAGES])
    r = api_req(path, rnd.choice(OPENAI_FAULTS_PRE + ["claude-fault-529"]), prompt(c, rnd), rnd.random() < 0.5)
    return r, expect_2xx_complete(r)


def b_fault_mid(c: Client, rnd: random.Random) -> Built:
    # Faults after the head: whole answers fall back; streams end with an error event.
    path = rnd.choice([CHAT, CHAT, MESSAGES])
    model = rnd.choice(OPENAI_FAULTS_MID + ANTHROPIC_FAULTS[1:] + ["fault-drip"])
    r = api_req(path, model, prompt(c, rnd), rnd.random() < 0.6)
    if r.stream and model in MID_STREAM:
        # An open circuit sends it to the fallback before any head: complete.
        return r, {"200 error-event", "200 complete via-fallback"}
    return r, expect_2xx_complete(r)


def b_local(c: Client, rnd: random.Random) -> Built:
    path = rnd.choice([CHAT, CHAT, MESSAGES])
    text = rnd.choice(["Say hello.", "Name a colour.", "What is 2 plus 2?", "Name a fruit."]) + f" ({c.next_seq()})"
    stream = rnd.random() < 0.6
    if path == CHAT:
        r = Req("POST", CHAT, chat("local", text, stream, max_tokens=16), stream=stream)
    else:
        r = Req("POST", MESSAGES, messages("local", text, stream, max_tokens=16), stream=stream)
    return r, expect_2xx_complete(r)


def b_local_disconnect(c: Client, rnd: random.Random) -> Built:
    path = rnd.choice([CHAT, MESSAGES])
    text = f"Write a long story about a dragon ({c.next_seq()})."
    body = chat("local", text, True, max_tokens=64) if path == CHAT else messages("local", text, True, max_tokens=64)
    return Req("POST", path, body, stream=True, disconnect=True), {"200 disconnected", "200 complete"}


def b_auto(c: Client, rnd: random.Random) -> Built:
    text = rnd.choice([
        "Say hi.",
        "Prove that there are infinitely many primes, step by step, with a rigorous argument.",
        "Write a Python function that merges two sorted lists and explain its complexity.",
        "What is the capital of France?",
    ]) + f" ({c.next_seq()})"
    stream = rnd.random() < 0.5
    r = Req("POST", CHAT, chat("auto", text, stream, max_tokens=16), stream=stream)
    return r, expect_2xx_complete(r)


def b_bad(c: Client, rnd: random.Random) -> Built:
    k = rnd.randrange(8)
    if k == 0:
        return Req("POST", CHAT, b"{not json"), {"4xx"}
    if k == 1:
        return Req("POST", CHAT, json.dumps({"model": "gpt-4o-mini"}).encode()), {"4xx"}
    if k == 2:
        return Req("POST", CHAT, chat("no-such-model", "hi", False)), {"4xx"}
    if k == 3:
        return Req("POST", MESSAGES, json.dumps({"model": "claude-haiku-4-5",
                                                 "messages": [{"role": "user", "content": "hi"}]}).encode()), {"4xx"}
    if k == 4:
        return Req("GET", CHAT, None), {"4xx"}
    if k == 5:
        return Req("POST", "/v1/nothing", b"{}"), {"4xx"}
    if k == 6 and c.args.key:
        return Req("POST", CHAT, chat("gpt-4o-mini", "hi", False), key="sk-slm-nobody-0000"), {"4xx"}
    # half a body, then the client hangs up
    return Req("POST", CHAT, chat("gpt-4o-mini", prompt(c, rnd) + FILLER * 20, False), partial_body=True), {"sent-partial"}


def b_limited(c: Client, rnd: random.Random) -> Built:
    # A key with a small rpm: answered or refused with 429, nothing else.
    r = api_req(CHAT, "gpt-4o-mini", prompt(c, rnd), rnd.random() < 0.5)
    r.key = c.args.tight_key or None
    return r, expect_2xx_complete(r) | {"429 ok"}


# name, weight, uses the local model, builder
SCENARIOS: list[tuple[str, float, bool, Callable[[Client, random.Random], Built]]] = [
    ("cloud", 30, False, b_cloud),
    ("cached", 15, False, b_cached),
    ("semantic", 5, False, b_semantic),
    ("disconnect-cloud", 6, False, b_disconnect_cloud),
    ("fault-pre-head", 10, False, b_fault_pre),
    ("fault-mid-stream", 8, False, b_fault_mid),
    ("bad-request", 5, False, b_bad),
    ("rate-limited-key", 3, False, b_limited),
    ("local", 4, True, b_local),
    ("local-disconnect", 1, True, b_local_disconnect),
    ("auto-route", 2, True, b_auto),
]


def report(path: str) -> None:
    """The summary as markdown: a table by scenario, then the unexpected samples."""
    with open(path) as f:
        s = json.load(f)
    print(f"{s['requests']} requests in {s['secs']:.0f} s of load ({s['requests'] / max(s['secs'], 1e-9):.1f}/s; "
          f"{s['wall_s']} s until the last one finished), "
          f"**{s['unexpected']} with an unexpected outcome**, {s['hung_workers']} workers still busy at the end.")
    print()
    print("| scenario | requests | outcomes | unexpected | with fallback header | p50 ms | p99 ms | max ms |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, v in s["scenarios"].items():
        outcomes = ", ".join(f"{k}: {n}" for k, n in v["outcomes"].items())
        bad = sum(v["unexpected"].values())
        print(f"| {name} | {v['n']} | {outcomes} | {bad} | {v['fallbacks']} | {v['p50_ms']} | {v['p99_ms']} | {v['max_ms']} |")
    print()
    print("Answered by (`x-slmgate-backend`): " + ", ".join(f"{k} {n}" for k, n in sorted(s["backends"].items())))
    print()
    print("Cache header (`x-slmgate-cache`): " + ", ".join(f"{k} {n}" for k, n in sorted(s["cache"].items())))
    if s["samples"]:
        print()
        print("Unexpected outcomes, first samples (request, response headers, body):")
        print()
        for x in s["samples"][:20]:
            print(f"- `{x['scenario']}` → `{x['outcome']}` after {x['secs']} s: `{x['request']['path']}` "
                  f"`{x['request']['body'][:200]}`; headers `{json.dumps(x['headers'])}`; body `{x['body'][:300]!r}`")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        report(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="soak_client.py --report SUMMARY.json prints a summary as markdown.")
    ap.add_argument("--gateway", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--secs", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--local-concurrency", type=int, default=1,
                    help="local-model requests in flight at once (the rest of the mix keeps going)")
    ap.add_argument("--timeout", type=float, default=60, help="socket timeout per read, seconds")
    ap.add_argument("--key", default="", help="virtual key for every request (empty: none)")
    ap.add_argument("--tight-key", default="", help="virtual key with a small rpm (rate-limited-key scenario)")
    ap.add_argument("--cache-pool", type=int, default=3000, help="distinct temperature-0 prompts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON summary file")
    args = ap.parse_args()
    if not args.tight_key:
        global SCENARIOS
        SCENARIOS = [s for s in SCENARIOS if s[0] != "rate-limited-key"]

    c = Client(args)
    t0 = time.monotonic()
    threads = [threading.Thread(target=c.worker, args=(i,), daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    last_n, last_t = 0, t0
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        now = time.monotonic()
        if now - last_t >= 10:
            with c.lock:
                n, bad = c.total, c.unexpected_total
            print(f"[soak-client] {now - t0:5.0f}s  {n} requests ({(n - last_n) / (now - last_t):.0f}/s), "
                  f"{bad} unexpected", file=sys.stderr, flush=True)
            last_n, last_t = n, now
        if now > c.stop_at + args.timeout + 30:
            print("[soak-client] workers still busy long after the end: a request hangs", file=sys.stderr)
            break
    hung = sum(t.is_alive() for t in threads)
    s = c.summary(time.monotonic() - t0)
    s["hung_workers"] = hung
    s["secs"] = args.secs
    with open(args.out, "w") as f:
        json.dump(s, f, indent=1)
    print(f"[soak-client] done: {s['requests']} requests, {s['unexpected']} unexpected, {hung} hung workers",
          file=sys.stderr)


if __name__ == "__main__":
    main()
