#!/usr/bin/env bash
# LiteLLM comparison: the same nginx mock upstream and the same wrk settings as
# benches/load.sh, driven directly, through the LiteLLM proxy and through
# slmgate, interleaved (for each mode and concurrency: direct, LiteLLM,
# slmgate) so drift hits all alike.
#
# LiteLLM is installed into a throwaway venv in the temp dir
# (`pip install 'litellm[proxy]==LITELLM_VERSION'`; when that version is not on
# the index, the closest one that is, said in the output), configured to map
# gpt-4o-mini to the nginx mock (OpenAI-compatible, dummy key) and started with
# `litellm --config ... --num_workers 1`. slmgate runs with
# benches/bench-policy.yaml, as in load.sh.
#
# Prints a markdown table (req/s, added p50/p99 over direct, CPU %, CPU per
# request, peak RSS) and writes it to
# benches/results/litellm-<date>-<commit>[-dirty].md. Exits 1 when a proxy
# answered non-2xx or wrk saw socket errors through it.
#
# Usage:  benches/litellm.sh
# Env:    DURATION=10s  WARMUP=2s  CONCURRENCY="1 16"  WRK_TIMEOUT=5s
#         STREAM_CONCURRENCY="1"  (streamed runs; empty: none)
#         LITELLM_VERSION=1.108.7
#         LITELLM_VENV=  an existing venv with litellm[proxy] to reuse instead
#                        of installing one (its version is reported)
#         SLMGATE_BIN=target/release/slmgate  ("none": LiteLLM only)
#         RUST_LOG=warn  NGINX_PORT=18081  LITELLM_PORT=18083
#         GW_PORT=18080  GW_STREAM_PORT=18082  READY_TIMEOUT_S=180
#         KEEP_WORK=1 (keep the temp dir with logs after a failure)
# CPU is utime + stime of each server's process tree (/proc/PID/stat) over the
# measured runs only; CPU % = that / wall time of the run. Peak RSS is VmHWM,
# summed over the tree.
# Needs:  nginx, wrk, curl (installed with apt-get when missing), python3 with
#         venv, PyPI access for the LiteLLM install, and the slmgate binary.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 16}"
STREAM_CONCURRENCY="${STREAM_CONCURRENCY-1}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5s}"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
LITELLM_VENV="${LITELLM_VENV:-}"
NGINX_PORT="${NGINX_PORT:-18081}"
LITELLM_PORT="${LITELLM_PORT:-18083}"
GW_PORT="${GW_PORT:-18080}"
GW_STREAM_PORT="${GW_STREAM_PORT:-18082}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}" # LiteLLM imports for a while on 2 cores
BIN="${SLMGATE_BIN:-$REPO/target/release/slmgate}"
POLICY="$REPO/benches/bench-policy.yaml"
NGINX_TMPL="$REPO/benches/nginx.conf.tmpl"
RESULTS_DIR="$REPO/benches/results"
export RUST_LOG="${RUST_LOG:-warn}"

log() { printf '[litellm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

# ---------------------------------------------------------------- prerequisites
need_load_tools
command -v python3 >/dev/null 2>&1 || apt_install python3
if [ -z "$LITELLM_VENV" ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3-venv
fi

if [ "$BIN" = none ]; then
  BIN=""
  log "SLMGATE_BIN=none: measuring LiteLLM only"
else
  case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
  [ -x "$BIN" ] || die "$BIN is not an executable: build it with \`cargo build --release\`, set SLMGATE_BIN, or SLMGATE_BIN=none"
fi
[ -f "$POLICY" ] || die "missing $POLICY"
[ -f "$NGINX_TMPL" ] || die "missing $NGINX_TMPL"
[ -n "${CONCURRENCY// /}" ] || die "CONCURRENCY is empty"

for p in "$NGINX_PORT" "$LITELLM_PORT" "$GW_PORT" "$GW_STREAM_PORT"; do
  ! port_busy "$p" || die "port $p is already in use (set NGINX_PORT/LITELLM_PORT/GW_PORT/GW_STREAM_PORT)"
done

stamp_init

# ---------------------------------------------------------------- process care
WORK="$(mktemp -d -t slmgate-litellm.XXXXXX)"
PIDS=()

install_traps

# ---------------------------------------------------------------- LiteLLM install
# Sets LITELLM_NOTE when the requested version was not used.
LITELLM_NOTE=""
pick_version() { # requested -> the version to install (stdout); notes go to stderr
  local want=$1 listing
  if ! listing="$("$VENV/bin/pip" index versions litellm --disable-pip-version-check 2>/dev/null)"; then
    echo "$want" # no index listing: let pip say whether it exists
    return
  fi
  python3 - "$want" "$listing" <<'PY'
import re, sys

want, listing = sys.argv[1], sys.argv[2]
m = re.search(r"Available versions:\s*(.*)", listing)
versions = [v.strip() for v in m.group(1).split(",")] if m else []

def key(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:4])

if not versions or want in versions:
    print(want)
    sys.exit(0)
w = key(want)
final = [v for v in versions if re.fullmatch(r"[\d.]+", v)] or versions
below = [v for v in final if key(v) <= w]
pick = max(below, key=key) if below else min(final, key=key)
print(pick)
PY
}

if [ -n "$LITELLM_VENV" ]; then
  VENV="$LITELLM_VENV"
  [ -x "$VENV/bin/litellm" ] || die "LITELLM_VENV=$VENV has no bin/litellm"
  log "reusing LiteLLM from $VENV"
else
  VENV="$WORK/venv"
  log "creating a throwaway venv in $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
  version="$(pick_version "$LITELLM_VERSION")"
  if [ "$version" != "$LITELLM_VERSION" ]; then
    LITELLM_NOTE="litellm $LITELLM_VERSION is not on the package index; installed $version, the closest version there"
    log "$LITELLM_NOTE"
  fi
  log "pip install 'litellm[proxy]==$version' (a few minutes)"
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$version" >"$WORK/pip.log" 2>&1; then
    show_log "pip install" "$WORK/pip.log"
    die "could not install litellm[proxy]==$version"
  fi
fi
LITELLM_INSTALLED="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo unknown)"
if [ -z "$LITELLM_NOTE" ] && [ "$LITELLM_INSTALLED" != "$LITELLM_VERSION" ]; then
  LITELLM_NOTE="requested litellm $LITELLM_VERSION, the venv has $LITELLM_INSTALLED"
  log "$LITELLM_NOTE"
fi
PY_VERSION="$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')"

# ---------------------------------------------------------------- upstream + servers
start_nginx

# The proxy refuses to start without a master key (recent versions); clients
# send it as their bearer token, as they would in production.
LL_KEY="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# gpt-4o-mini -> the non-streamed mock, gpt-4o-mini-stream -> the streamed one
# (nginx serves them on two paths).
cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$NGINX_PORT/v1
      api_key: bench-dummy-key
  - model_name: gpt-4o-mini-stream
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$NGINX_PORT/stream/v1
      api_key: bench-dummy-key
litellm_settings:
  telemetry: false
general_settings:
  master_key: $LL_KEY
EOF

log "starting LiteLLM $LITELLM_INSTALLED on 127.0.0.1:$LITELLM_PORT"
# Offline-friendly: the bundled model cost map, no telemetry; errors only.
env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
  "$VENV/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
  --num_workers 1 >"$WORK/litellm.log" 2>&1 &
LITELLM_PID=$!
PIDS+=("$LITELLM_PID")

start_gateway() { # port upstream_base logfile -> sets GW_PID
  env OPENAI_API_KEY=bench OPENAI_BASE_URL="$2" \
    "$BIN" serve --policy "$POLICY" --listen "127.0.0.1:$1" >"$3" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
}
GW_PID_PLAIN="" GW_PID_STREAM=""
if [ -n "$BIN" ]; then
  log "starting slmgate on :$GW_PORT (non-streamed) and :$GW_STREAM_PORT (streamed)"
  start_gateway "$GW_PORT" "http://127.0.0.1:$NGINX_PORT/v1" "$WORK/gw.log"
  GW_PID_PLAIN=$GW_PID
  if [ -n "${STREAM_CONCURRENCY// /}" ]; then
    start_gateway "$GW_STREAM_PORT" "http://127.0.0.1:$NGINX_PORT/stream/v1" "$WORK/gw-stream.log"
    GW_PID_STREAM=$GW_PID
  fi
fi

wait_ready LiteLLM "http://127.0.0.1:$LITELLM_PORT/health/liveliness" "$LITELLM_PID" "$WORK/litellm.log"
if [ -n "$BIN" ]; then
  wait_ready "slmgate :$GW_PORT" "http://127.0.0.1:$GW_PORT/readyz" "$GW_PID_PLAIN" "$WORK/gw.log"
  [ -z "$GW_PID_STREAM" ] ||
    wait_ready "slmgate :$GW_STREAM_PORT" "http://127.0.0.1:$GW_STREAM_PORT/readyz" "$GW_PID_STREAM" "$WORK/gw-stream.log"
fi

# ---------------------------------------------------------------- bodies + checks
LL_BODY_STREAM="${BENCH_BODY_STREAM/\"gpt-4o-mini\"/\"gpt-4o-mini-stream\"}"
write_lua "$WORK/post.lua" "$BENCH_BODY"
write_lua "$WORK/post-stream.lua" "$BENCH_BODY_STREAM"
write_lua "$WORK/post-litellm.lua" "$BENCH_BODY" "$LL_KEY"
write_lua "$WORK/post-stream-litellm.lua" "$LL_BODY_STREAM" "$LL_KEY"

LL_URL="http://127.0.0.1:$LITELLM_PORT/v1/chat/completions"
check_post "$LL_URL" "$BENCH_BODY" '"Hello! How can I help you today?"' "$WORK/litellm.log" LiteLLM "" "$LL_KEY"
if [ -n "${STREAM_CONCURRENCY// /}" ]; then
  check_post "$LL_URL" "$LL_BODY_STREAM" 'How can I help' "$WORK/litellm.log" "LiteLLM (streamed)" "" "$LL_KEY"
  grep -qF 'data: [DONE]' "$WORK/check.body" || die "LiteLLM (streamed): no data: [DONE]"
fi
if [ -n "$BIN" ]; then
  check_post "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$BENCH_BODY" '"Hello! How can I help you today?"' \
    "$WORK/gw.log" slmgate '^x-slmgate-backend: *openai'
  [ -z "$GW_PID_STREAM" ] ||
    check_post "http://127.0.0.1:$GW_STREAM_PORT/v1/chat/completions" "$BENCH_BODY_STREAM" 'data: [DONE]' \
      "$WORK/gw-stream.log" "slmgate (streamed)" '^x-slmgate-backend: *openai'
fi

# ---------------------------------------------------------------- the runs
# rows.tsv: mode c target rps p50 p99 non2xx sock reqs cpu_s wall_s peak_rss_kb
ROWS_TSV="$WORK/rows.tsv"
: >"$ROWS_TSV"
FAILED=0

# target name url lua pid logfile (one per line, for this mode)
targets() { # mode
  if [ "$1" = non-stream ]; then
    echo "LiteLLM $LL_URL $WORK/post-litellm.lua $LITELLM_PID $WORK/litellm.log"
    [ -z "$BIN" ] || echo "slmgate http://127.0.0.1:$GW_PORT/v1/chat/completions $WORK/post.lua $GW_PID_PLAIN $WORK/gw.log"
  else
    echo "LiteLLM $LL_URL $WORK/post-stream-litellm.lua $LITELLM_PID $WORK/litellm.log"
    [ -z "$BIN" ] || echo "slmgate http://127.0.0.1:$GW_STREAM_PORT/v1/chat/completions $WORK/post-stream.lua $GW_PID_STREAM $WORK/gw-stream.log"
  fi
}

MODES="non-stream"
[ -z "${STREAM_CONCURRENCY// /}" ] || MODES="non-stream stream"
for mode in $MODES; do
  if [ "$mode" = non-stream ]; then
    cs=$CONCURRENCY
    direct_url="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    direct_lua="$WORK/post.lua"
  else
    cs=$STREAM_CONCURRENCY
    direct_url="http://127.0.0.1:$NGINX_PORT/stream/v1/chat/completions"
    direct_lua="$WORK/post-stream.lua"
  fi
  while read -r name url lua pid logf; do
    log "$mode: warm-up $name ($WARMUP)"
    run_wrk "$WORK/warmup.txt" "$url" "$lua" 16 "$WARMUP"
  done < <(targets "$mode")

  for c in $cs; do
    log "$mode c=$c: direct"
    measure "$WORK/$mode-direct-c$c.txt" "$direct_url" "$direct_lua" "$c" "$DURATION" -
    printf '%s\t%s\t%s\t%s\n' "$mode" "$c" direct "$(m_tsv)" >>"$ROWS_TSV"
    while read -r name url lua pid logf; do
      log "$mode c=$c: $name"
      out="$WORK/$mode-$name-c$c.txt"
      measure "$out" "$url" "$lua" "$c" "$DURATION" "$pid"
      alive "$pid" || { show_log "$name" "$logf"; die "$name died during the $mode run"; }
      printf '%s\t%s\t%s\t%s\n' "$mode" "$c" "$name" "$(m_tsv)" >>"$ROWS_TSV"
      if [ "${M[3]}" -gt 0 ] || [ "${M[4]}" -gt 0 ]; then
        FAILED=1
        log "$mode c=$c: $name had ${M[3]} non-2xx responses and ${M[4]} socket errors"
        cat "$out" >&2
      fi
    done < <(targets "$mode")
  done
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$(results_path litellm)"
{
  echo "# LiteLLM vs slmgate — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  stamp_header
  echo "- wrk: -t1, ${DURATION} per run, timeout ${WRK_TIMEOUT}, warm-up ${WARMUP} (c16) per proxy; upstream: nginx (1 worker), constant answers (benches/nginx.conf.tmpl)"
  echo "- order: per mode and concurrency, direct, LiteLLM, slmgate (interleaved)"
  echo "- LiteLLM: $LITELLM_INSTALLED (litellm[proxy], Python $PY_VERSION), \`litellm --config ... --num_workers 1\` (uvicorn), master key set (clients send it), LITELLM_LOG=ERROR; gpt-4o-mini -> openai/gpt-4o-mini at the nginx mock"
  [ -z "$LITELLM_NOTE" ] || echo "- **note: $LITELLM_NOTE**"
  if [ -n "$BIN" ]; then
    echo "- slmgate: $(bin_info "$BIN"), policy benches/bench-policy.yaml, RUST_LOG=$RUST_LOG"
  else
    echo "- slmgate: not measured (SLMGATE_BIN=none)"
  fi
  echo "- CPU: utime + stime of the server's process tree over the measured run; CPU % of one core; peak RSS: VmHWM (summed over the tree) after the run"
  echo
  awk -F'\t' '
    {
      k = $1 SUBSEP $2 SUBSEP $3
      rps[k] = $4; p50[k] = $5; p99[k] = $6; non2xx[k] = $7; sock[k] = $8
      reqs[k] = $9; cpu[k] = $10; wall[k] = $11; rss[k] = $12
      if ($3 == "direct") { d50[$1, $2] = $5; d99[$1, $2] = $6 }
      order[++n] = k
    }
    END {
      print "| mode | concurrency | target | rps | p50 ms | p99 ms | added p50 ms | added p99 ms | non-2xx | socket errors | CPU % | CPU us/request | peak RSS MiB |"
      print "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= n; i++) {
        k = order[i]; split(k, f, SUBSEP)
        if (f[3] == "direct") {
          printf "| %s | %d | direct (nginx) | %.0f | %.3f | %.3f | | | %d | %d | | | |\n",
            f[1], f[2], rps[k], p50[k], p99[k], non2xx[k], sock[k]
          continue
        }
        printf "| %s | %d | %s | %.0f | %.3f | %.3f | %+.3f | %+.3f | %d | %d | %.0f | %.1f | %.1f |\n",
          f[1], f[2], f[3], rps[k], p50[k], p99[k], p50[k] - d50[f[1], f[2]], p99[k] - d99[f[1], f[2]],
          non2xx[k], sock[k], (wall[k] > 0 ? 100 * cpu[k] / wall[k] : 0),
          (reqs[k] > 0 ? cpu[k] * 1e6 / reqs[k] : 0), rss[k] / 1024
      }
      print ""
      for (i = 1; i <= n; i++) {
        k = order[i]; split(k, f, SUBSEP)
        if (f[3] != "LiteLLM") continue
        s = f[1] SUBSEP f[2] SUBSEP "slmgate"
        if (!(s in rps)) continue
        al = p50[k] - d50[f[1], f[2]]; as = p50[s] - d50[f[1], f[2]]
        printf "- %s, concurrency %d: LiteLLM adds %+.2f ms p50 / %+.2f ms p99, slmgate %+.3f / %+.3f ms; throughput slmgate/LiteLLM %.1fx; CPU per request LiteLLM/slmgate %.1fx; peak RSS %.0f vs %.0f MiB\n",
          f[1], f[2], al, p99[k] - d99[f[1], f[2]], as, p99[s] - d99[f[1], f[2]],
          (rps[k] > 0 ? rps[s] / rps[k] : 0),
          ((reqs[s] > 0 && cpu[s] > 0 && reqs[k] > 0) ? (cpu[k] / reqs[k]) / (cpu[s] / reqs[s]) : 0),
          rss[k] / 1024, rss[s] / 1024
      }
    }
  ' "$ROWS_TSV"
} | tee "$OUT"
log "results written to $OUT"

if [ "$FAILED" -ne 0 ]; then
  die "a proxy returned non-2xx responses or had socket errors (see above)"
fi
