#!/usr/bin/env bash
# Load benchmark for slmgate: how much latency / throughput does the gateway add
# in front of an OpenAI-compatible upstream?
#
# A local nginx plays the upstream (constant answers, see nginx.conf.tmpl), and
# wrk drives it once directly and once through slmgate, non-streamed and
# streamed, at several concurrencies. Prints a markdown table and writes it to
# benches/results/load-<date>.md. Exits 1 if the gateway returned any non-2xx
# response or wrk saw socket errors through it.
#
# Usage:  benches/load.sh
# Env:    DURATION=10s  WARMUP=2s  CONCURRENCY="1 16 64"  WRK_TIMEOUT=5s
#         SLMGATE_BIN=target/release/slmgate  RUST_LOG=warn
#         NGINX_PORT=18081  GW_PORT=18080  GW_STREAM_PORT=18082
# Needs:  nginx, wrk, curl (installed with apt-get when missing), and the
#         release binary (built with `cargo build --release` when missing).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5s}"
NGINX_PORT="${NGINX_PORT:-18081}"
GW_PORT="${GW_PORT:-18080}"
GW_STREAM_PORT="${GW_STREAM_PORT:-18082}"
BIN="${SLMGATE_BIN:-$REPO/target/release/slmgate}"
POLICY="$REPO/benches/bench-policy.yaml"
NGINX_TMPL="$REPO/benches/nginx.conf.tmpl"
RESULTS_DIR="$REPO/benches/results"
READY_TIMEOUT_S=60
# Per-request logging would dominate the measurement; override to compare.
export RUST_LOG="${RUST_LOG:-warn}"

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"
apt_install ${missing[@]+"${missing[@]}"}
NGINX="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"

if [ ! -x "$BIN" ]; then
  [ -z "${SLMGATE_BIN:-}" ] || die "SLMGATE_BIN=$BIN is not an executable"
  log "$BIN missing; building it (cargo build --release)"
  cargo build --release
  [ -x "$BIN" ] || die "cargo build --release did not produce $BIN"
fi
[ -f "$POLICY" ] || die "missing $POLICY"
[ -f "$NGINX_TMPL" ] || die "missing $NGINX_TMPL"

# A port is busy when something accepts a connection on it.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$NGINX_PORT" "$GW_PORT" "$GW_STREAM_PORT"; do
  ! port_busy "$p" || die "port $p is already in use (set NGINX_PORT/GW_PORT/GW_STREAM_PORT)"
done

# ---------------------------------------------------------------- process care
WORK="$(mktemp -d -t slmgate-load.XXXXXX)"
PIDS=()

install_traps

# Poll URL (GET) until it answers 2xx; fail early if the process died.
wait_ready() { # name url pid logfile
  local name=$1 url=$2 pid=$3 logf=$4 deadline=$((SECONDS + READY_TIMEOUT_S))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! alive "$pid"; then show_log "$name" "$logf"; die "$name exited during startup"; fi
    if ((SECONDS >= deadline)); then show_log "$name" "$logf"; die "$name not ready after ${READY_TIMEOUT_S}s ($url)"; fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- nginx upstream
NGX="$WORK/nginx"
mkdir -p "$NGX"
sed -e "s|@PREFIX@|$NGX|g" -e "s|@PORT@|$NGINX_PORT|g" "$NGINX_TMPL" >"$NGX/nginx.conf"
nginx_args=(-p "$NGX/" -c "$NGX/nginx.conf")
# -e (startup error log) exists since nginx 1.19.5; avoids /var/log/nginx.
nginx_help="$("$NGINX" -h 2>&1 || true)"
[[ "$nginx_help" == *"-e filename"* ]] && nginx_args+=(-e "$NGX/error.log")
"$NGINX" -t "${nginx_args[@]}" >"$NGX/test.log" 2>&1 || { show_log "nginx -t" "$NGX/test.log"; die "nginx config invalid"; }

log "starting nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX" "${nginx_args[@]}" >"$NGX/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_ready nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$NGINX_PID" "$NGX/stdout.log"

# ---------------------------------------------------------------- gateways
start_gateway() { # port upstream_base logfile -> sets GW_PID
  env OPENAI_API_KEY=bench OPENAI_BASE_URL="$2" \
    "$BIN" serve --policy "$POLICY" --listen "127.0.0.1:$1" >"$3" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
  wait_ready "slmgate :$1" "http://127.0.0.1:$1/readyz" "$GW_PID" "$3"
}

log "starting slmgate on :$GW_PORT (non-streamed) and :$GW_STREAM_PORT (streamed)"
start_gateway "$GW_PORT" "http://127.0.0.1:$NGINX_PORT/v1" "$WORK/gw.log"
GW_PID_PLAIN=$GW_PID
start_gateway "$GW_STREAM_PORT" "http://127.0.0.1:$NGINX_PORT/stream/v1" "$WORK/gw-stream.log"
GW_PID_STREAM=$GW_PID

# ---------------------------------------------------------------- request bodies
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
BODY_STREAM='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello."}]}'
write_lua() { # file body
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-client"
wrk.body = [[$2]]
EOF
}
write_lua "$WORK/post.lua" "$BODY"
write_lua "$WORK/post-stream.lua" "$BODY_STREAM"

# One request through each gateway before measuring: right status, routed to
# openai, and the expected body shape.
check_gateway() { # port body expect_in_body logfile
  local code
  code="$(curl -sS --max-time 10 -o "$WORK/check.body" -D "$WORK/check.headers" -w '%{http_code}' \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer bench-client' \
    --data "$2" "http://127.0.0.1:$1/v1/chat/completions")" || code="curl-failed"
  if [ "$code" != "200" ] || ! grep -qi '^x-slmgate-backend: *openai' "$WORK/check.headers" ||
    ! grep -qF -- "$3" "$WORK/check.body"; then
    log "check through :$1 failed (HTTP $code)"
    cat "$WORK/check.headers" "$WORK/check.body" >&2 2>/dev/null || true
    show_log "slmgate :$1" "$4"
    die "gateway sanity check failed"
  fi
}
check_gateway "$GW_PORT" "$BODY" '"Hello! How can I help you today?"' "$WORK/gw.log"
check_gateway "$GW_STREAM_PORT" "$BODY_STREAM" 'data: [DONE]' "$WORK/gw-stream.log"

# ---------------------------------------------------------------- wrk helpers
run_wrk() { # outfile url lua concurrency duration
  if ! wrk -t1 -c"$4" -d"$5" --timeout "$WRK_TIMEOUT" --latency -s "$3" "$2" >"$1" 2>&1; then
    cat "$1" >&2
    die "wrk failed against $2"
  fi
}

# -> "rps p50_ms p99_ms non2xx socket_errors requests"
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /s$/)  return v * 1000
      if (v ~ /m$/)  return v * 60000
      if (v ~ /h$/)  return v * 3600000
      return v + 0
    }
    /Requests\/sec:/              { rps = $2 }
    /^[ \t]*50%/                  { p50 = ms($2) }
    /^[ \t]*99%/                  { p99 = ms($2) }
    /Non-2xx or 3xx responses:/   { non2xx = $NF }
    /Socket errors:/              { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
    / requests in /               { reqs = $1 }
    END { printf "%.2f %.3f %.3f %d %d %d\n", rps, p50, p99, non2xx, sock, reqs }
  ' "$1"
}

cpu_ticks() { # utime + stime of PID, in clock ticks
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
vm_field() { # PID field (VmHWM, VmRSS) -> kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

CLK_TCK="$(getconf CLK_TCK)"
ROWS=()
RESOURCES=()
FAILED=0

# ---------------------------------------------------------------- the runs
for mode in non-stream stream; do
  if [ "$mode" = non-stream ]; then
    direct_url="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    gw_url="http://127.0.0.1:$GW_PORT/v1/chat/completions"
    lua="$WORK/post.lua"
    gw_pid=$GW_PID_PLAIN
    gw_log="$WORK/gw.log"
  else
    direct_url="http://127.0.0.1:$NGINX_PORT/stream/v1/chat/completions"
    gw_url="http://127.0.0.1:$GW_STREAM_PORT/v1/chat/completions"
    lua="$WORK/post-stream.lua"
    gw_pid=$GW_PID_STREAM
    gw_log="$WORK/gw-stream.log"
  fi

  log "$mode: warm-up ($WARMUP)"
  run_wrk "$WORK/warmup.txt" "$gw_url" "$lua" 16 "$WARMUP"

  cpu_before="$(cpu_ticks "$gw_pid")"
  gw_requests=0
  for c in $CONCURRENCY; do
    log "$mode c=$c: direct"
    run_wrk "$WORK/$mode-direct-c$c.txt" "$direct_url" "$lua" "$c" "$DURATION"
    log "$mode c=$c: gateway"
    run_wrk "$WORK/$mode-gw-c$c.txt" "$gw_url" "$lua" "$c" "$DURATION"
    alive "$gw_pid" || { show_log slmgate "$gw_log"; die "gateway died during the $mode run"; }

    read -r d_rps d_p50 d_p99 _ _ _ < <(parse_wrk "$WORK/$mode-direct-c$c.txt")
    read -r g_rps g_p50 g_p99 g_non2xx g_sock g_reqs < <(parse_wrk "$WORK/$mode-gw-c$c.txt")
    gw_requests=$((gw_requests + g_reqs))
    if [ "$g_non2xx" -gt 0 ] || [ "$g_sock" -gt 0 ]; then
      FAILED=1
      log "$mode c=$c: gateway had $g_non2xx non-2xx responses and $g_sock socket errors"
      cat "$WORK/$mode-gw-c$c.txt" >&2
    fi
    ROWS+=("$(awk -v m="$mode" -v c="$c" -v dr="$d_rps" -v gr="$g_rps" \
      -v d50="$d_p50" -v d99="$d_p99" -v g50="$g_p50" -v g99="$g_p99" -v n="$g_non2xx" -v s="$g_sock" \
      'BEGIN { printf "| %s | %d | %.0f | %.0f | %.3f | %.3f | %.3f | %.3f | %+.3f | %+.3f | %d | %d |",
                      m, c, dr, gr, d50, d99, g50, g99, g50 - d50, g99 - d99, n, s }')")
  done
  cpu_after="$(cpu_ticks "$gw_pid")"
  hwm="$(vm_field "$gw_pid" VmHWM)"
  rss="$(vm_field "$gw_pid" VmRSS)"
  RESOURCES+=("$(awk -v m="$mode" -v t0="$cpu_before" -v t1="$cpu_after" -v hz="$CLK_TCK" \
    -v n="$gw_requests" -v hwm="$hwm" -v rss="$rss" \
    'BEGIN { cpu = (t1 - t0) / hz
             printf "- %s gateway: peak RSS (VmHWM) %.1f MiB, RSS at end %.1f MiB, CPU time %.2f s for %d requests (%.1f us/request)",
                    m, hwm / 1024, rss / 1024, cpu, n, (n > 0 ? cpu * 1e6 / n : 0) }')")
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/load-$(date +%Y%m%d-%H%M%S).md"
{
  echo "# slmgate load benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  echo "- commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- host: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown CPU)"
  echo "- wrk: -t1, ${DURATION} per run, timeout ${WRK_TIMEOUT}; upstream: nginx (1 worker), constant answers"
  echo "- gateway: $BIN, policy benches/bench-policy.yaml, RUST_LOG=$RUST_LOG"
  echo
  echo "| mode | concurrency | direct rps | gateway rps | direct p50 ms | direct p99 ms | gateway p50 ms | gateway p99 ms | added p50 ms | added p99 ms | gateway non-2xx | gateway socket errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
  echo
  printf '%s\n' "${RESOURCES[@]}"
} | tee "$OUT"
log "results written to $OUT"

if [ "$FAILED" -ne 0 ]; then
  die "the gateway returned non-2xx responses or had socket errors (see above)"
fi
