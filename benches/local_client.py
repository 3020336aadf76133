#!/usr/bin/env python3
"""Streaming load client for an OpenAI-compatible /v1/chat/completions endpoint.

Used by benches/local.sh to drive slmgate's local model and llama-server the
same way. Standard library only (http.client + threading).

Each of --concurrency workers sends --requests streamed requests one after the
other (`stream: true`, `stream_options.include_usage`, `temperature: 0`). Per
request it measures:

  TTFT        send -> first SSE chunk whose delta.content is non-empty
              (includes HTTP, queueing, prefill and the first decode step)
  decode      (completion_tokens - 1) / (t_last_token - t_first_token)
  prefill     prompt_tokens / TTFT
  tokens      from the final usage chunk; without one, content chunks are
              counted as completion tokens (prompt tokens are then unknown)

One warm-up request runs first and is not counted. Prints one JSON line:
label, concurrency, n, ttft_p50_ms, ttft_p90_ms, decode_tok_s_median,
aggregate_tok_s (sum of completion tokens / wall time), prefill_tok_s_median,
errors, and a few extras (mean token counts, peak RSS of --rss-pid).

Prompts never repeat within a run (128 distinct short ones, and every long one
starts with its own question), so a prefix/prompt cache can reuse at most the
chat-template header: prefill is measured, not cache hits.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

# ------------------------------------------------------------------ prompts

# 16 one-line question templates x 8 fillers = 128 distinct short prompts.
# Prompt i uses template i % 16 and filler (i // 16) % 8, so consecutive
# requests (and the requests in flight at the same moment) always differ.
SHORT_TEMPLATES = [
    ("What is the capital of {}?",
     ["Japan", "France", "Brazil", "Canada", "Kenya", "Norway", "Peru", "Egypt"]),
    ("Who wrote {}?",
     ["Hamlet", "Don Quixote", "War and Peace", "Pride and Prejudice",
      "The Odyssey", "Moby-Dick", "Faust", "One Hundred Years of Solitude"]),
    ("How many legs does {} have?",
     ["a spider", "an ant", "a crab", "a dog", "a bird", "a starfish",
      "a lobster", "a centipede"]),
    ("What is {}?",
     ["2 plus 3", "7 plus 8", "12 plus 30", "45 plus 55", "9 plus 6",
      "100 plus 250", "13 plus 29", "64 plus 36"]),
    ("Translate '{}' into French.",
     ["good morning", "thank you", "the red house", "I am hungry",
      "see you tomorrow", "where is the station", "a cup of tea", "happy birthday"]),
    ("Name one famous landmark in {}.",
     ["Italy", "India", "China", "Australia", "Mexico", "Greece", "Spain", "Turkey"]),
    ("What colour is {}?",
     ["the sky on a clear day", "a ripe banana", "fresh grass", "snow",
      "a ripe tomato", "charcoal", "a carrot", "a lemon"]),
    ("Give me a synonym for '{}'.",
     ["happy", "fast", "big", "smart", "angry", "quiet", "brave", "tired"]),
    ("In one sentence, what is {}?",
     ["photosynthesis", "gravity", "a prime number", "democracy", "an atom",
      "inflation", "a volcano", "the internet"]),
    ("What is the boiling point of water in {}?",
     ["Celsius", "Fahrenheit", "Kelvin", "degrees Celsius at sea level",
      "Fahrenheit at sea level", "Kelvin at sea level", "Celsius on Everest",
      "Celsius in a pressure cooker"]),
    ("Which planet is {}?",
     ["closest to the Sun", "the largest", "known as the Red Planet",
      "famous for its rings", "the hottest", "the farthest from the Sun",
      "tilted on its side", "our home"]),
    ("Write a haiku about {}.",
     ["the sea", "autumn leaves", "a cat", "the moon", "rain", "mountains",
      "coffee", "winter"]),
    ("What does {} stand for?",
     ["CPU", "NASA", "HTML", "DNA", "USB", "GPS", "RAM", "PDF"]),
    ("How do you say '{}' in Spanish?",
     ["hello", "goodbye", "please", "water", "friend", "book", "cat", "house"]),
    ("Who painted {}?",
     ["the Mona Lisa", "The Starry Night", "The Scream", "Guernica",
      "The Last Supper", "Girl with a Pearl Earring", "The Persistence of Memory",
      "The Birth of Venus"]),
    ("Suggest a name for a {}.",
     ["pet goldfish", "coffee shop", "sailing boat", "rock band", "bakery",
      "robot", "garden", "bookstore"]),
]

# ~150 words: with the chat template and the question, ~230 prompt tokens.
LONG_PARAGRAPH = (
    "The town of Alderbrook sits in a narrow valley where two rivers meet. "
    "For most of its history it lived from a water mill that ground grain for "
    "the farms upstream, and from a weekly market held on the stone bridge. "
    "In 1887 a railway line reached the valley, and within ten years the mill "
    "had been turned into a small textile factory employing about two hundred "
    "people, many of them women from the surrounding villages. The factory "
    "closed in 1962, when cheaper cloth arrived from abroad, and the building "
    "stood empty for almost thirty years. In 1991 the town council bought it, "
    "repaired the roof and the water wheel, and opened a museum on the ground "
    "floor and a public library upstairs. Today the market still takes place "
    "every Saturday, although it has moved from the bridge to the square in "
    "front of the old mill, and the railway station serves about four hundred "
    "passengers a day."
)

LONG_QUESTIONS = [
    "Where do the two rivers meet?",
    "What did the water mill grind?",
    "When did the railway reach the valley?",
    "How many people did the textile factory employ?",
    "Why did the factory close?",
    "Who bought the old mill building?",
    "What is on the upper floor of the old mill?",
    "On which day is the market held?",
    "Where was the market held originally?",
    "How many passengers use the station each day?",
    "How long did the factory building stand empty?",
    "What was repaired in 1991?",
    "Where did many of the factory workers come from?",
    "What replaced the water mill in the 1890s?",
    "What is on the ground floor of the old mill?",
    "Where is the market held today?",
]


def prompt_for(prompt_set, i):
    """The i-th prompt of a set (i >= 0); distinct for i < 128 (short) / always (long)."""
    if prompt_set == "short":
        template, fillers = SHORT_TEMPLATES[i % len(SHORT_TEMPLATES)]
        return template.format(fillers[(i // len(SHORT_TEMPLATES)) % len(fillers)])
    # The distinct part comes first so that shared-prefix caching cannot skip
    # the paragraph's prefill.
    q = LONG_QUESTIONS[i % len(LONG_QUESTIONS)]
    return (f"Question {i + 1}: {q}\n\nAnswer it in one or two sentences, using "
            f"only this text:\n\n{LONG_PARAGRAPH}")


# ------------------------------------------------------------------ one request

class Result:
    __slots__ = ("ok", "error", "ttft", "total", "t_first", "t_last",
                 "completion_tokens", "prompt_tokens", "content_chunks")

    def __init__(self):
        self.ok = False
        self.error = None
        self.ttft = None
        self.total = None
        self.t_first = None
        self.t_last = None
        self.completion_tokens = None
        self.prompt_tokens = None
        self.content_chunks = 0


def one_request(url, model, prompt, max_tokens, timeout, expect_backend):
    """Send one streamed chat completion and time it. Never raises."""
    r = Result()
    u = urllib.parse.urlsplit(url)
    path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": "Bearer bench",  # ignored by servers without auth
    }
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            r.error = f"HTTP {resp.status}: {resp.read(300).decode(errors='replace')}"
            return r
        if expect_backend is not None:
            got = resp.getheader("x-slmgate-backend")
            if got != expect_backend:
                r.error = f"x-slmgate-backend is {got!r}, expected {expect_backend!r}"
                return r
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event: lines
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            chunk = json.loads(data)
            if "error" in chunk:
                r.error = f"error event: {json.dumps(chunk['error'])[:300]}"
                return r
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    r.content_chunks += 1
                    if r.t_first is None:
                        r.t_first = now
                    r.t_last = now
            usage = chunk.get("usage")
            if usage:
                r.completion_tokens = usage.get("completion_tokens")
                r.prompt_tokens = usage.get("prompt_tokens")
        r.total = time.perf_counter() - t0
        if not done:
            r.error = "stream ended without [DONE]"
        elif r.t_first is None:
            r.error = "no content in the stream"
        else:
            r.ttft = r.t_first - t0
            if r.completion_tokens is None:
                r.completion_tokens = r.content_chunks
            r.ok = True
    except Exception as e:  # noqa: BLE001 - any failure is one error
        r.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return r


# ------------------------------------------------------------------ peak RSS

def reset_hwm(pid):
    """Reset the peak RSS (VmHWM) of pid to its current RSS; False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def read_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ------------------------------------------------------------------ stats

def quantile(values, q):
    """Linear-interpolated quantile of a non-empty list (q in [0, 1])."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def rnd(x, nd=1):
    return None if x is None else round(x, nd)


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:18090")
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=8, help="requests per worker")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-set", choices=["short", "long"], default="short")
    ap.add_argument("--label", default="")
    ap.add_argument("--timeout", type=float, default=300.0, help="socket timeout, seconds")
    ap.add_argument("--expect-backend", default=None,
                    help="count a response as an error unless its x-slmgate-backend header is this")
    ap.add_argument("--rss-pid", type=int, default=None,
                    help="report this process's peak RSS over the measured requests")
    ap.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="extra string field for the JSON line (repeatable)")
    args = ap.parse_args()
    if args.concurrency < 1 or args.requests < 1:
        ap.error("--concurrency and --requests must be >= 1")

    # Warm-up (not counted). A failure here means the server is not usable.
    warm = one_request(args.url, args.model, "Say hello.", args.max_tokens,
                       args.timeout, args.expect_backend)
    if not warm.ok:
        print(f"local_client: warm-up request failed: {warm.error}", file=sys.stderr)
        return 1

    rss_scope = None
    if args.rss_pid is not None:
        rss_scope = "run" if reset_hwm(args.rss_pid) else "process lifetime"

    n_workers, per_worker = args.concurrency, args.requests
    results = [None] * (n_workers * per_worker)
    barrier = threading.Barrier(n_workers + 1)

    def worker(w):
        barrier.wait()
        for i in range(per_worker):
            # Interleaved numbering: in-flight requests and a worker's
            # consecutive requests all get different prompts.
            idx = i * n_workers + w
            results[idx] = one_request(args.url, args.model, prompt_for(args.prompt_set, idx),
                                       args.max_tokens, args.timeout, args.expect_backend)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(n_workers)]
    for t in threads:
        t.start()
    barrier.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start

    ok = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    ttft_ms = [r.ttft * 1000 for r in ok]
    decode = [(r.completion_tokens - 1) / (r.t_last - r.t_first)
              for r in ok if r.completion_tokens > 1 and r.t_last > r.t_first]
    prefill = [r.prompt_tokens / r.ttft for r in ok if r.prompt_tokens and r.ttft > 0]
    out = {
        "label": args.label,
        "prompt_set": args.prompt_set,
        "concurrency": n_workers,
        "n": len(ok),
        "ttft_p50_ms": rnd(quantile(ttft_ms, 0.5)) if ttft_ms else None,
        "ttft_p90_ms": rnd(quantile(ttft_ms, 0.9)) if ttft_ms else None,
        "decode_tok_s_median": rnd(statistics.median(decode)) if decode else None,
        "aggregate_tok_s": rnd(sum(r.completion_tokens for r in ok) / wall) if ok else None,
        "prefill_tok_s_median": rnd(statistics.median(prefill)) if prefill else None,
        "errors": len(errors),
        "wall_s": rnd(wall, 2),
        "max_tokens": args.max_tokens,
        "prompt_tokens_mean": rnd(statistics.mean(r.prompt_tokens for r in ok if r.prompt_tokens))
        if any(r.prompt_tokens for r in ok) else None,
        "completion_tokens_mean": rnd(statistics.mean(r.completion_tokens for r in ok)) if ok else None,
        "total_p50_ms": rnd(quantile([r.total * 1000 for r in ok], 0.5)) if ok else None,
    }
    if args.rss_pid is not None:
        out["peak_rss_mib"] = rnd(read_hwm_mib(args.rss_pid))
        out["rss_scope"] = rss_scope
    if errors:
        out["first_error"] = errors[0][:300]
    for kv in args.tag:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--tag wants KEY=VALUE, got {kv!r}")
        out[k] = v
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
