#!/usr/bin/env bash
# Soak: SOAK_SECS (10 minutes) of mixed load on loopback through one gateway,
# its RSS sampled every 10 s. Not part of the default test run.
#
# The gateway runs benches/soak-policy.yaml (local model, MiniLM triage, exact
# and semantic caches, two virtual keys added to a copy of the policy) in
# front of benches/mock_upstream.py, which speaks OpenAI and Anthropic and
# answers the policy's fault models with faults: 500, 503 and 429 (with
# Retry-After), 529, a reset mid-stream, a truncated stream, a stall before
# the head and one mid-stream, a slow drip, and one that outlasts total_ms;
# good models get a pre-head fault 2% of the time (MOCK_FAULT_RATE); the
# `broken` backend sheds what exceeds its max_concurrency to the fallback.
# benches/soak_client.py sends the mix (whole and streamed, /v1/chat/completions
# and /v1/messages, cloud and a small local share, streams abandoned after the
# first chunk, bad requests, a rate-limited key) and checks every outcome
# against what the scenario expects (a fault model's request is answered by a
# fallback; a stream that breaks after its head ends with an error event).
#
# Writes benches/results/soak-<date>-<commit>[-dirty].md: request counts by
# scenario and outcome, RSS at the end of the warm-up (WARMUP_SECS), at the end
# and its maximum, growth per minute (least-squares fit over the second half),
# totals from /metrics, warnings and errors in the gateway's log, and the
# samples. Exits non-zero (after writing it) when the gateway died, a request
# hung, an outcome was unexpected, or the growth exceeds MAX_GROWTH_KIB_MIN.
#
# Usage:  benches/soak.sh
# Env:    SOAK_SECS=600  CONCURRENCY=8  LOCAL_CONCURRENCY=1  WARMUP_SECS=30
#         RSS_EVERY=10  IDLE_SECS=10  MOCK_FAULT_RATE=0.02
#         MAX_GROWTH_KIB_MIN= (unset: report only)
#         SLMGATE_BIN=target/release/slmgate (else target/debug/slmgate)
#         RUST_LOG=warn  GW_PORT=18090  MOCK_PORT=18091  READY_TIMEOUT_S=180
#         KEEP_WORK=1 (keep the temp dir with the logs when the run fails)
# Needs:  python3, curl, the models in SLMGATE_MODELS_DIR (default ./models).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SOAK_SECS="${SOAK_SECS:-600}"
CONCURRENCY="${CONCURRENCY:-8}"
LOCAL_CONCURRENCY="${LOCAL_CONCURRENCY:-1}"
WARMUP_SECS="${WARMUP_SECS:-30}"
RSS_EVERY="${RSS_EVERY:-10}"
IDLE_SECS="${IDLE_SECS:-10}"
MOCK_FAULT_RATE="${MOCK_FAULT_RATE:-0.02}"
MAX_GROWTH_KIB_MIN="${MAX_GROWTH_KIB_MIN:-}"
GW_PORT="${GW_PORT:-18090}"
MOCK_PORT="${MOCK_PORT:-18091}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}"
if [ -n "${SLMGATE_BIN:-}" ]; then
  BIN="$SLMGATE_BIN"
elif [ -x "$REPO/target/release/slmgate" ]; then
  BIN="$REPO/target/release/slmgate"
else
  BIN="$REPO/target/debug/slmgate"
fi
POLICY="$REPO/benches/soak-policy.yaml"
RESULTS_DIR="$REPO/benches/results"
export RUST_LOG="${RUST_LOG:-warn}"
export SLMGATE_MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"

log() { printf '[soak] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

command -v python3 >/dev/null 2>&1 || die "python3 is needed"
command -v curl >/dev/null 2>&1 || apt_install curl
[ -x "$BIN" ] || die "$BIN is not built (cargo build --release)"
[[ "$SOAK_SECS" =~ ^[0-9]+$ ]] && ((SOAK_SECS >= 20)) || die "SOAK_SECS must be a whole number of seconds, at least 20"
for p in "$GW_PORT" "$MOCK_PORT"; do
  ! port_busy "$p" || die "port $p is in use"
done

WORK="$(mktemp -d -t slmgate-soak.XXXXXX)"
PIDS=()
install_traps
stamp_init

# The policy with two virtual keys: `soak` (every request; a budget it never
# reaches) and `tight` (30 requests a minute: the rate-limited scenario).
cp "$POLICY" "$WORK/policy.yaml"
KEY="$("$BIN" keys add --policy "$WORK/policy.yaml" --name soak --budget-usd-day 1000000 2>>"$WORK/keys.log" | tail -n 1)"
TIGHT_KEY="$("$BIN" keys add --policy "$WORK/policy.yaml" --name tight --rpm 30 2>>"$WORK/keys.log" | tail -n 1)"
"$BIN" check --policy "$WORK/policy.yaml" >/dev/null || die "the soak policy does not validate"

log "starting the mock upstream on 127.0.0.1:$MOCK_PORT (fault rate $MOCK_FAULT_RATE on good models)"
python3 "$REPO/benches/mock_upstream.py" --port "$MOCK_PORT" --fault-rate "$MOCK_FAULT_RATE" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_ready mock "http://127.0.0.1:$MOCK_PORT/health" "$MOCK_PID" "$WORK/mock.log"

log "starting slmgate ($BIN) on 127.0.0.1:$GW_PORT"
env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u ANTHROPIC_API_KEY -u ANTHROPIC_BASE_URL \
  SOAK_UPSTREAM_KEY=soak-dummy-key \
  SOAK_OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" \
  SOAK_ANTHROPIC_BASE_URL="http://127.0.0.1:$MOCK_PORT" \
  "$BIN" serve --policy "$WORK/policy.yaml" --listen "127.0.0.1:$GW_PORT" >"$WORK/gw.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_ready slmgate "http://127.0.0.1:$GW_PORT/readyz" "$GW_PID" "$WORK/gw.log"

# One request of each kind before the clock starts.
check_post "http://127.0.0.1:$GW_PORT/v1/chat/completions" \
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}' "mock says" "$WORK/gw.log" cloud "" "$KEY"
check_post "http://127.0.0.1:$GW_PORT/v1/chat/completions" \
  '{"model":"fault-500","messages":[{"role":"user","content":"Say hello."}]}' "mock says" "$WORK/gw.log" fallback \
  '^x-slmgate-fallback:' "$KEY"
check_post "http://127.0.0.1:$GW_PORT/v1/chat/completions" \
  '{"model":"local","max_tokens":8,"messages":[{"role":"user","content":"Say hello."}]}' '"choices"' "$WORK/gw.log" local "" "$KEY"

# RSS, high-water mark, threads and open fds of the gateway every RSS_EVERY s.
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
sample() { # t_s
  printf '%s,%s,%s,%s,%s\n' "$1" "$(vm_field "$GW_PID" VmRSS)" "$(vm_field "$GW_PID" VmHWM)" \
    "$(vm_field "$GW_PID" Threads)" "$(fd_count "$GW_PID")"
}
echo "t_s,rss_kb,hwm_kb,threads,fds" >"$WORK/rss.csv"
T0=${EPOCHREALTIME/,/.}
(
  i=0
  while alive "$GW_PID"; do
    sample $((i * RSS_EVERY)) >>"$WORK/rss.csv" 2>/dev/null || break
    i=$((i + 1))
    # sleep until the next multiple of RSS_EVERY since T0
    sleep "$(awk -v t0="$T0" -v now="${EPOCHREALTIME/,/.}" -v n="$i" -v e="$RSS_EVERY" \
      'BEGIN { d = t0 + n * e - now; printf "%.3f", (d > 0 ? d : 0) }')"
  done
) &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")

log "load for ${SOAK_SECS}s: concurrency $CONCURRENCY, local model at most $LOCAL_CONCURRENCY at a time"
CLIENT_RC=0
python3 "$REPO/benches/soak_client.py" --gateway "http://127.0.0.1:$GW_PORT" --secs "$SOAK_SECS" \
  --concurrency "$CONCURRENCY" --local-concurrency "$LOCAL_CONCURRENCY" \
  --key "$KEY" --tight-key "$TIGHT_KEY" --out "$WORK/summary.json" || CLIENT_RC=$?
LOAD_END=$(awk -v t0="$T0" -v now="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.0f", now - t0 }')

GW_ALIVE=yes
alive "$GW_PID" || GW_ALIVE=no
IDLE_RSS="" IDLE_FDS="" READY_AFTER=""
if [ "$GW_ALIVE" = yes ]; then
  log "load done after ${LOAD_END}s; idle for ${IDLE_SECS}s"
  sleep "$IDLE_SECS"
  IDLE_RSS="$(vm_field "$GW_PID" VmRSS)"
  IDLE_FDS="$(fd_count "$GW_PID")"
  READY_AFTER="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$GW_PORT/readyz" || echo failed)"
  curl -s --max-time 10 "http://127.0.0.1:$GW_PORT/metrics" >"$WORK/metrics.txt" || true
else
  show_log slmgate "$WORK/gw.log"
  log "the gateway died during the run"
fi
curl -s --max-time 5 "http://127.0.0.1:$MOCK_PORT/stats" >"$WORK/mock-stats.json" || echo '{}' >"$WORK/mock-stats.json"
stop_pid "$SAMPLER_PID"
[ -s "$WORK/summary.json" ] || die "the load client wrote no summary (exit $CLIENT_RC)"

# ---------------------------------------------------------------- analysis
# Samples taken while the load ran (t <= SOAK_SECS).
awk -F, -v end="$SOAK_SECS" 'NR > 1 && $1 <= end' "$WORK/rss.csv" >"$WORK/load.csv"
# start: first sample at or after the warm-up; end: the last under load;
# slope: least squares over the second half, KiB per minute.
read -r RSS_START T_START RSS_END T_END RSS_MAX SLOPE FIT_N < <(awk -F, -v w="$WARMUP_SECS" -v half="$((SOAK_SECS / 2))" '
  { if (start == "" && $1 >= w) { start = $2; ts = $1 }
    last = $2; tl = $1; if ($2 > max) max = $2
    if ($1 >= half) { n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2 } }
  END {
    if (start == "") { start = last; ts = tl }
    slope = (n >= 2 && n * sxx - sx * sx != 0) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) * 60 : 0
    printf "%d %d %d %d %d %.1f %d\n", start, ts, last, tl, max, slope, n
  }' "$WORK/load.csv")
FDS_START="$(awk -F, -v t="$T_START" '$1 == t { print $5 }' "$WORK/load.csv")"
FDS_END="$(awk -F, -v t="$T_END" '$1 == t { print $5 }' "$WORK/load.csv")"

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# Sum of a metric's series whose labels match re (all when omitted).
metric_sum() { # name [label_re]
  awk -v n="$1" -v re="${2:-}" '
    index($0, n) == 1 { name = $1; sub(/\{.*/, "", name)
      if (name == n && (re == "" || $1 ~ re)) s += $NF }
    END { printf "%d", s }' "$WORK/metrics.txt" 2>/dev/null || echo 0
}
# "a 3, b 5" of a metric summed by one label.
metric_by() { # name label
  awk -v n="$1" -v l="$2" '
    index($0, n) == 1 { name = $1; sub(/\{.*/, "", name); if (name != n) next
      v = "-"; if (match($1, l "=\"[^\"]*\"")) { v = substr($1, RSTART + length(l) + 2, RLENGTH - length(l) - 3) }
      s[v] += $NF }
    END { sep = ""; for (k in s) { printf "%s%s %d", sep, k, s[k]; sep = ", " } }' "$WORK/metrics.txt" 2>/dev/null | tr ',' '\n' | sed 's/^ //' | sort | paste -sd, - | sed 's/,/, /g'
}

GW_LOG_PLAIN="$WORK/gw.plain.log"
sed 's/\x1b\[[0-9;]*m//g' "$WORK/gw.log" >"$GW_LOG_PLAIN"
N_WARN="$(grep -c ' WARN ' "$GW_LOG_PLAIN" || true)"
N_ERROR="$(grep -c ' ERROR ' "$GW_LOG_PLAIN" || true)"
N_PANIC="$(grep -ci 'panicked' "$GW_LOG_PLAIN" || true)"
# WARN/ERROR lines by message (timestamps and key=value fields dropped).
log_kinds() { # level
  { grep " $1 " "$GW_LOG_PLAIN" || true; } | sed -E 's/^[^ ]+ +[A-Z]+ +//; s/ [a-z_]+=.*$//' | sort | uniq -c | sort -rn | head -n 12 || true
}

UNEXPECTED="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unexpected"])' "$WORK/summary.json")"
HUNG="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hung_workers"])' "$WORK/summary.json")"

mkdir -p "$RESULTS_DIR"
OUT="$(results_path soak)"
{
  echo "# Soak — ${SOAK_SECS} s of mixed load, RSS every ${RSS_EVERY} s"
  echo
  stamp_header
  echo "- binary: $(bin_info "$BIN")"
  echo "- policy: \`benches/soak-policy.yaml\` plus two virtual keys (\`soak\`: every request, day budget; \`tight\`: rpm 30); upstream: \`benches/mock_upstream.py\` (fault rate $MOCK_FAULT_RATE on good models); RUST_LOG=$RUST_LOG"
  echo "- load: \`benches/soak_client.py\`, concurrency $CONCURRENCY, local model at most $LOCAL_CONCURRENCY at a time; the load generator, mock and gateway share the host"
  echo "- gateway alive at the end: **$GW_ALIVE**; \`/readyz\` after the run: ${READY_AFTER:-n/a}; client exit $CLIENT_RC"
  echo
  echo "## Memory"
  echo
  echo "| | t (s) | RSS (MiB) |"
  echo "|---|---:|---:|"
  echo "| start (first sample after the ${WARMUP_SECS}-s warm-up) | $T_START | $(mib "$RSS_START") |"
  echo "| end (last sample under load) | $T_END | $(mib "$RSS_END") |"
  echo "| max under load | | $(mib "$RSS_MAX") |"
  [ -z "$IDLE_RSS" ] || echo "| after ${IDLE_SECS} s idle | | $(mib "$IDLE_RSS") |"
  echo
  echo "- growth start → end: $(awk -v a="$RSS_START" -v b="$RSS_END" 'BEGIN { printf "%+.1f MiB (%+.1f%%)", (b - a) / 1024, (a > 0 ? (b - a) * 100 / a : 0) }')"
  echo "- growth rate, least-squares fit over the second half ($FIT_N samples, t ≥ $((SOAK_SECS / 2)) s): **$(awk -v s="$SLOPE" 'BEGIN { printf "%+.1f KiB/min (%+.2f MiB/min)", s, s / 1024 }')**"
  echo "- open fds: $FDS_START at the start, $FDS_END at the end${IDLE_FDS:+, $IDLE_FDS after idle}"
  echo
  echo "## Requests (client side)"
  echo
  python3 "$REPO/benches/soak_client.py" --report "$WORK/summary.json"
  echo
  echo "## Gateway /metrics at the end"
  echo
  if [ -s "$WORK/metrics.txt" ]; then
    echo "- \`slmgate_requests_total\`: $(metric_sum slmgate_requests_total); by status: $(metric_by slmgate_requests_total status)"
    echo "- \`slmgate_upstream_errors_total\` by kind: $(metric_by slmgate_upstream_errors_total kind)"
    echo "- \`slmgate_fallbacks_total\`: $(metric_sum slmgate_fallbacks_total); by reason: $(metric_by slmgate_fallbacks_total reason)"
    echo "- \`slmgate_cache_requests_total\` by result: $(metric_by slmgate_cache_requests_total result); \`slmgate_cache_evictions_total\`: $(metric_sum slmgate_cache_evictions_total); \`slmgate_cache_bytes\`: $(metric_by slmgate_cache_bytes cache)"
    echo "- \`slmgate_circuit_state\` at the end (0 closed, 1 open, 2 half-open): $(metric_by slmgate_circuit_state backend)"
    echo "- after ${IDLE_SECS} s idle: \`slmgate_local_queue_depth\` $(metric_sum slmgate_local_queue_depth), \`slmgate_backend_in_flight\` $(metric_sum slmgate_backend_in_flight) (by backend: $(metric_by slmgate_backend_in_flight backend))"
  else
    echo "(no scrape: the gateway was not running)"
  fi
  echo
  echo "## Mock upstream"
  echo
  echo "Requests by API, mode and shape (\`GET /stats\`):"
  echo
  echo '```'
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); [print(f"{k}: {v}") for k, v in s.get("requests", {}).items()]; print("writes to a connection the gateway had closed:", s.get("write_errors", "?"))' "$WORK/mock-stats.json"
  echo '```'
  echo
  echo "## Gateway log"
  echo
  echo "$N_WARN WARN lines, $N_ERROR ERROR lines, $N_PANIC panics. Most frequent WARN and ERROR messages:"
  echo
  echo '```'
  log_kinds WARN
  log_kinds ERROR
  echo '```'
  echo
  echo "## Samples"
  echo
  echo "| t (s) | RSS (MiB) | high-water (MiB) | threads | open fds |"
  echo "|---:|---:|---:|---:|---:|"
  awk -F, 'NR > 1 { printf "| %d | %.1f | %.1f | %d | %d |\n", $1, $2 / 1024, $3 / 1024, $4, $5 }' "$WORK/rss.csv"
} >"$OUT"
cat "$OUT"
log "results written to $OUT"

FAIL=()
[ "$GW_ALIVE" = yes ] || FAIL+=("the gateway died")
[ "${READY_AFTER:-}" = 200 ] || FAIL+=("/readyz after the run: ${READY_AFTER:-none}")
[ "$HUNG" -eq 0 ] || FAIL+=("$HUNG requests hung")
[ "$UNEXPECTED" -eq 0 ] || FAIL+=("$UNEXPECTED unexpected outcomes")
[ "$N_PANIC" -eq 0 ] || FAIL+=("$N_PANIC panics in the log")
if [ -s "$WORK/metrics.txt" ]; then
  IN_FLIGHT="$(metric_sum slmgate_backend_in_flight)"
  [ "$IN_FLIGHT" -eq 0 ] || FAIL+=("$IN_FLIGHT requests still counted in flight after ${IDLE_SECS} s idle")
  QUEUED="$(metric_sum slmgate_local_queue_depth)"
  [ "$QUEUED" -eq 0 ] || FAIL+=("local queue depth $QUEUED after ${IDLE_SECS} s idle")
fi
if [ -n "$MAX_GROWTH_KIB_MIN" ] && awk -v s="$SLOPE" -v m="$MAX_GROWTH_KIB_MIN" 'BEGIN { exit !(s > m) }'; then
  FAIL+=("RSS grows $SLOPE KiB/min (limit $MAX_GROWTH_KIB_MIN)")
fi
[ "${#FAIL[@]}" -eq 0 ] || die "$(IFS=';'; echo "${FAIL[*]}") (KEEP_WORK=1 keeps the logs)"
