#!/usr/bin/env bash
# What virtual keys, rate limits and budgets cost per request, with their
# counters in a real redis-server on loopback: the same nginx mock and wrk
# settings as benches/load.sh, through two gateways side by side (one run,
# interleaved): `open` (the base policy, no keys) and `keyed` (the same
# policy plus a key with rpm, tpm and day/month budgets high enough never to
# refuse, and `state: {redis_url}`), so every request is
# authenticated, rate-limited and has its budget reserved and settled in
# Redis. Writes benches/results/keys-<date>-<commit>[-dirty].md.
#
# Usage:  benches/keys.sh
# Env:    BASE=default (policies/default.yaml: what users run; needs the
#         models in SLMGATE_MODELS_DIR) | bench (benches/bench-policy.yaml)
#         DURATION=10s  WARMUP=2s  CONCURRENCY="1 16"  WRK_TIMEOUT=5s
#         SLMGATE_BIN=target/release/slmgate  RUST_LOG=warn
#         NGINX_PORT=18081  REDIS_PORT=18379  GW_PORT=18080  GW_KEYED_PORT=18084
# Needs:  nginx, wrk, curl, redis-server (installed with apt-get when missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 16}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5s}"
NGINX_PORT="${NGINX_PORT:-18081}"
REDIS_PORT="${REDIS_PORT:-18379}"
GW_PORT="${GW_PORT:-18080}"
GW_KEYED_PORT="${GW_KEYED_PORT:-18084}"
BIN="${SLMGATE_BIN:-$REPO/target/release/slmgate}"
NGINX_TMPL="$REPO/benches/nginx.conf.tmpl"
RESULTS_DIR="$REPO/benches/results"
export RUST_LOG="${RUST_LOG:-warn}"
BASE="${BASE:-default}"
MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"
case "$BASE" in
  default) BASE_POLICY="$REPO/policies/default.yaml"; READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}" ;;
  bench) BASE_POLICY="$REPO/benches/bench-policy.yaml" ;;
  *) echo "BASE must be default or bench" >&2; exit 1 ;;
esac
export SLMGATE_MODELS_DIR="$MODELS_DIR"

log() { printf '[keys] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

need_load_tools
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
[ -x "$BIN" ] || die "$BIN is not built (cargo build --release)"
for p in "$NGINX_PORT" "$REDIS_PORT" "$GW_PORT" "$GW_KEYED_PORT"; do
  ! port_busy "$p" || die "port $p is in use"
done

WORK="$(mktemp -d -t slmgate-keys.XXXXXX)"
PIDS=()
install_traps
CLK_TCK="$(getconf CLK_TCK)"
stamp_init

start_nginx

log "starting redis-server on 127.0.0.1:$REDIS_PORT"
(cd "$WORK" && exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no) >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do port_busy "$REDIS_PORT" && break; sleep 0.1; done
port_busy "$REDIS_PORT" || die "redis-server did not start"

# The keyed policy: the base policy, a key added by `slmgate keys add`, and Redis.
cp "$BASE_POLICY" "$WORK/keyed.yaml"
cp "$BASE_POLICY" "$WORK/open.yaml"
KEY="$("$BIN" keys add --policy "$WORK/keyed.yaml" --name bench --rpm 1000000000 --tpm 1000000000000 \
  --budget-usd-day 1000000 --budget-usd-month 1000000 2>/dev/null | tail -n 1)"
printf '\nstate: { redis_url: "redis://127.0.0.1:%s", timeout_ms: 250 }\n' "$REDIS_PORT" >>"$WORK/keyed.yaml"
"$BIN" check --policy "$WORK/keyed.yaml" >/dev/null || die "the keyed policy does not validate"

start() { # name port policy -> sets GW_PID
  env OPENAI_API_KEY=bench OPENAI_BASE_URL="http://127.0.0.1:$NGINX_PORT/v1" \
    "$BIN" serve --policy "$3" --listen "127.0.0.1:$2" >"$WORK/$1.log" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  wait_ready "slmgate $1" "http://127.0.0.1:$2/readyz" "$GW_PID" "$WORK/$1.log"
}
start open "$GW_PORT" "$WORK/open.yaml"
OPEN_PID=$GW_PID
start keyed "$GW_KEYED_PORT" "$WORK/keyed.yaml"
KEYED_PID=$GW_PID

# gpt-4o is priced, so every keyed request reserves and settles a budget.
BODY='{"model":"gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Say hello."}]}'
write_lua "$WORK/open.lua" "$BODY"
write_lua "$WORK/keyed.lua" "$BODY" "$KEY"
check_post "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$BODY" "Hello!" "$WORK/open.log" open
check_post "http://127.0.0.1:$GW_KEYED_PORT/v1/chat/completions" "$BODY" "Hello!" "$WORK/keyed.log" keyed '' "$KEY"

ROWS=()
FAILED=0
for c in $CONCURRENCY; do
  run_wrk "$WORK/warm-open.txt" "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$WORK/open.lua" "$c" "$WARMUP"
  run_wrk "$WORK/warm-keyed.txt" "http://127.0.0.1:$GW_KEYED_PORT/v1/chat/completions" "$WORK/keyed.lua" "$c" "$WARMUP"
  measure "$WORK/direct-$c.txt" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$WORK/open.lua" "$c" "$DURATION" -
  d_p50=${M[1]} d_p99=${M[2]}
  for g in open keyed; do
    if [ "$g" = open ]; then port=$GW_PORT pid=$OPEN_PID; else port=$GW_KEYED_PORT pid=$KEYED_PID; fi
    log "c=$c: $g"
    measure "$WORK/$g-$c.txt" "http://127.0.0.1:$port/v1/chat/completions" "$WORK/$g.lua" "$c" "$DURATION" "$pid"
    [ "${M[3]}" -eq 0 ] && [ "${M[4]}" -eq 0 ] || { FAILED=1; log "$g c=$c: ${M[3]} non-2xx, ${M[4]} socket errors"; }
    ROWS+=("$(awk -v g="$g" -v c="$c" -v rps="${M[0]}" -v p50="${M[1]}" -v p99="${M[2]}" -v d50="$d_p50" -v d99="$d_p99" \
      -v n="${M[5]}" -v cpu="${M[6]}" -v wall="${M[7]}" -v non2xx="${M[3]}" \
      'BEGIN { printf "| %s | %d | %.0f | %.3f | %.3f | %+.3f | %+.3f | %.1f | %d |", g, c, rps, p50, p99, p50 - d50, p99 - d99, (n > 0 ? cpu * 1e6 / n : 0), non2xx }')")
  done
done
KEYS_SEEN="$(redis-cli -p "$REDIS_PORT" --scan --pattern 'slmgate:*' | wc -l)"

mkdir -p "$RESULTS_DIR"
OUT="$(results_path keys)"
{
  echo "# Keys, limits and budgets in Redis — what they add per request"
  echo
  stamp_header
  echo "- binary: $(bin_info "$BIN")"
  echo "- wrk -t1, $DURATION per run, warm-up $WARMUP; upstream: nginx (1 worker), constant answers; redis-server $(redis-server --version | awk '{print $3}') on loopback"
  echo "- \`open\`: ${BASE_POLICY#"$REPO/"}; \`keyed\`: the same + a key (rpm, tpm, day and month budgets) + \`state: {redis_url}\` ($KEYS_SEEN slmgate keys in Redis after the run)"
  echo
  echo "| gateway | concurrency | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU us/request | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT"
log "results written to $OUT"
[ "$FAILED" -eq 0 ] || die "non-2xx responses or socket errors (see above)"
