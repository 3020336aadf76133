#!/usr/bin/env bash
# What the exact response cache gives: through one gateway on the default
# policy (what users run; its exact cache is on for deterministic requests),
# the same nginx mock and wrk settings as benches/load.sh, interleaved in one
# run: `direct` (nginx itself), `uncached` (a sampled request: the cache
# says bypass, the upstream answers), `hit` (temperature 0: after the first,
# every request is a cache hit) and `hit-stream` (the same, streamed).
# Writes benches/results/cache-<date>-<commit>[-dirty].md.
#
# Usage:  benches/cache.sh
# Env:    DURATION=10s  WARMUP=2s  CONCURRENCY="1 16"  WRK_TIMEOUT=5s
#         SLMGATE_BIN=target/release/slmgate  RUST_LOG=warn
#         NGINX_PORT=18081  GW_PORT=18080  READY_TIMEOUT_S=180
# Needs:  nginx, wrk, curl (installed with apt-get when missing), the models
#         in SLMGATE_MODELS_DIR (default ./models).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 16}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5s}"
NGINX_PORT="${NGINX_PORT:-18081}"
GW_PORT="${GW_PORT:-18080}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}"
BIN="${SLMGATE_BIN:-$REPO/target/release/slmgate}"
NGINX_TMPL="$REPO/benches/nginx.conf.tmpl"
RESULTS_DIR="$REPO/benches/results"
export RUST_LOG="${RUST_LOG:-warn}"
export SLMGATE_MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"

log() { printf '[cache] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

need_load_tools
[ -x "$BIN" ] || die "$BIN is not built (cargo build --release)"
for p in "$NGINX_PORT" "$GW_PORT"; do
  ! port_busy "$p" || die "port $p is in use"
done

WORK="$(mktemp -d -t slmgate-cache.XXXXXX)"
PIDS=()
install_traps
CLK_TCK="$(getconf CLK_TCK)"
stamp_init
start_nginx

log "starting slmgate (embedded default policy) on 127.0.0.1:$GW_PORT"
env OPENAI_API_KEY=bench OPENAI_BASE_URL="http://127.0.0.1:$NGINX_PORT/v1" \
  "$BIN" serve --listen "127.0.0.1:$GW_PORT" >"$WORK/gw.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_ready "slmgate" "http://127.0.0.1:$GW_PORT/readyz" "$GW_PID" "$WORK/gw.log"

UNCACHED='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
HIT='{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Say hello."}]}'
HIT_STREAM='{"model":"gpt-4o-mini","temperature":0,"stream":true,"messages":[{"role":"user","content":"Say hello."}]}'
write_lua "$WORK/uncached.lua" "$UNCACHED"
write_lua "$WORK/hit.lua" "$HIT"
write_lua "$WORK/hit-stream.lua" "$HIT_STREAM"
URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"
check_post "$URL" "$UNCACHED" "Hello!" "$WORK/gw.log" uncached
check_post "$URL" "$HIT" "Hello!" "$WORK/gw.log" hit
curl -s -D - -o /dev/null -H 'content-type: application/json' -d "$HIT" "$URL" | grep -qi '^x-slmgate-cache: hit' \
  || die "the second temperature-0 request was not a cache hit"
curl -s -o /dev/null -H 'content-type: application/json' -d "$HIT_STREAM" "$URL"

ROWS=()
FAILED=0
for c in $CONCURRENCY; do
  for s in uncached hit hit-stream; do
    run_wrk "$WORK/warm-$s.txt" "$URL" "$WORK/$s.lua" "$c" "$WARMUP"
  done
  measure "$WORK/direct-$c.txt" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$WORK/uncached.lua" "$c" "$DURATION" -
  d_p50=${M[1]} d_p99=${M[2]}
  ROWS+=("$(awk -v c="$c" -v rps="${M[0]}" -v p50="${M[1]}" -v p99="${M[2]}" \
    'BEGIN { printf "| direct (nginx) | %d | %.0f | %.3f | %.3f | | | | |", c, rps, p50, p99 }')")
  for s in uncached hit hit-stream; do
    log "c=$c: $s"
    measure "$WORK/$s-$c.txt" "$URL" "$WORK/$s.lua" "$c" "$DURATION" "$GW_PID"
    [ "${M[3]}" -eq 0 ] && [ "${M[4]}" -eq 0 ] || { FAILED=1; log "$s c=$c: ${M[3]} non-2xx, ${M[4]} socket errors"; }
    ROWS+=("$(awk -v g="$s" -v c="$c" -v rps="${M[0]}" -v p50="${M[1]}" -v p99="${M[2]}" -v d50="$d_p50" -v d99="$d_p99" \
      -v n="${M[5]}" -v cpu="${M[6]}" -v non2xx="${M[3]}" \
      'BEGIN { printf "| %s | %d | %.0f | %.3f | %.3f | %+.3f | %+.3f | %.1f | %d |", g, c, rps, p50, p99, p50 - d50, p99 - d99, (n > 0 ? cpu * 1e6 / n : 0), non2xx }')")
  done
done
HITS="$(curl -s "http://127.0.0.1:$GW_PORT/metrics" | awk '/^slmgate_cache_requests_total\{cache="exact",result="hit"\}/ {print $2}')"

mkdir -p "$RESULTS_DIR"
OUT="$(results_path cache)"
{
  echo "# Exact response cache — hit latency and throughput"
  echo
  stamp_header
  echo "- binary: $(bin_info "$BIN")"
  echo "- policy: the embedded default (\`serve\` without --policy; its exact cache on for deterministic requests); requests name gpt-4o-mini, so misses go to the nginx mock"
  echo "- wrk -t1, $DURATION per run, warm-up $WARMUP; upstream: nginx (1 worker), constant answers; $HITS cache hits counted by the gateway"
  echo "- added = the gateway's p50/p99 minus nginx's own in the same round"
  echo
  echo "| request | concurrency | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU us/request | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT"
log "results written to $OUT"
[ "$FAILED" -eq 0 ] || die "non-2xx responses or socket errors (see above)"
