#!/usr/bin/env bash
# Load benchmark for slmgate: how much latency / throughput does the gateway add
# in front of an OpenAI-compatible upstream?
#
# A local nginx plays the upstream (constant answers, see nginx.conf.tmpl), and
# wrk drives it once directly and once through each gateway, non-streamed and
# streamed, at several concurrencies. Several gateway builds and policies can be
# compared in one run: same nginx, same wrk settings, interleaved (for each mode
# and concurrency: direct, then every binary x policy) so drift hits all alike.
# Prints markdown tables and writes them to
# benches/results/load-<date>-<commit>[-dirty].md. Exits 1 if a gateway
# returned any non-2xx response or wrk saw socket errors through it.
#
# Usage:  benches/load.sh
#         BINS="before=/tmp/slmgate.old after=target/release/slmgate" \
#           POLICIES="bench features default" benches/load.sh
# Env:    DURATION=10s  WARMUP=2s  CONCURRENCY="1 16 64"  WRK_TIMEOUT=5s
#         MODES="non-stream stream"
#         BINS="name=path ..."  gateway binaries to compare; the first is the
#             baseline of the ratios. Default: current=$SLMGATE_BIN, where
#             SLMGATE_BIN defaults to target/release/slmgate.
#         POLICIES="bench"  any of:
#             bench     benches/bench-policy.yaml (cloud-only, features triage)
#             default   the embedded default policy, as users run it (`serve`
#                       with no --policy): loads the local model and the MiniLM
#                       triage encoder from SLMGATE_MODELS_DIR (default
#                       $REPO/models); requests name gpt-4o-mini, so they go to
#                       the nginx mock through OPENAI_API_KEY / OPENAI_BASE_URL
#             features  policies/default.yaml with only `triage.kind: features`
#                       (generated into the temp dir; note: from this checkout's
#                       file, not from each binary's embedded copy)
#         SLMGATE_MODELS_DIR=$REPO/models  (default / features policies)
#         READY_TIMEOUT_S=60, or 180 when default/features is measured
#         RUST_LOG=warn  NGINX_PORT=18081
#         GW_PORT=18080  GW_STREAM_PORT=18082  (first gateway of each mode;
#             further gateways take the next free ports from GW_PORT_SCAN=18100)
#         KEEP_WORK=1 (keep the temp dir with logs after a failure)
# Per (binary, policy, mode) one gateway process is started, kept for all the
# concurrencies of that mode and stopped before the next mode. Its CPU time
# (utime + stime from /proc/PID/stat) is counted over the measured wrk runs
# only, not warm-up or startup; peak RSS is VmHWM.
# Needs:  nginx, wrk, curl (installed with apt-get when missing), and the
#         release binary (built with `cargo build --release` when missing and
#         neither BINS nor SLMGATE_BIN is set).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
MODES="${MODES:-non-stream stream}"
WRK_TIMEOUT="${WRK_TIMEOUT:-5s}"
NGINX_PORT="${NGINX_PORT:-18081}"
GW_PORT="${GW_PORT:-18080}"
GW_STREAM_PORT="${GW_STREAM_PORT:-18082}"
GW_PORT_SCAN="${GW_PORT_SCAN:-18100}"
DEFAULT_BIN="${SLMGATE_BIN:-$REPO/target/release/slmgate}"
BINS="${BINS:-current=$DEFAULT_BIN}"
POLICIES="${POLICIES:-bench}"
MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"
BENCH_POLICY="$REPO/benches/bench-policy.yaml"
DEFAULT_POLICY_SRC="$REPO/policies/default.yaml"
NGINX_TMPL="$REPO/benches/nginx.conf.tmpl"
RESULTS_DIR="$REPO/benches/results"
# Per-request logging would dominate the measurement; override to compare.
export RUST_LOG="${RUST_LOG:-warn}"

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

# ---------------------------------------------------------------- arguments
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$REPO/$1" ;; esac; }

BIN_NAMES=()
declare -A BIN_PATH=()
for spec in $BINS; do
  [[ "$spec" == ?*=?* ]] || die "BINS entry '$spec' is not name=path"
  name="${spec%%=*}"
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "BINS name '$name': use letters, digits, . _ -"
  [ -z "${BIN_PATH[$name]:-}" ] || die "BINS names '$name' twice"
  BIN_NAMES+=("$name")
  BIN_PATH[$name]="$(abspath "${spec#*=}")"
done
[ "${#BIN_NAMES[@]}" -gt 0 ] || die "BINS is empty"

POLICY_NAMES=()
needs_models=0
for p in $POLICIES; do
  case "$p" in
    bench) ;;
    default | features) needs_models=1 ;;
    *) die "unknown policy '$p' in POLICIES (bench, features, default)" ;;
  esac
  [[ " ${POLICY_NAMES[*]-} " != *" $p "* ]] || die "POLICIES names '$p' twice"
  POLICY_NAMES+=("$p")
done
[ "${#POLICY_NAMES[@]}" -gt 0 ] || die "POLICIES is empty"
[ -n "${MODES// /}" ] || die "MODES is empty"
[ -n "${CONCURRENCY// /}" ] || die "CONCURRENCY is empty"
for m in $MODES; do
  case "$m" in non-stream | stream) ;; *) die "unknown mode '$m' in MODES (non-stream, stream)" ;; esac
done
if [ "$needs_models" -eq 1 ]; then
  READY_TIMEOUT_S="${READY_TIMEOUT_S:-180}" # local model + encoder load
else
  READY_TIMEOUT_S="${READY_TIMEOUT_S:-60}"
fi

# ---------------------------------------------------------------- prerequisites
need_load_tools

for name in "${BIN_NAMES[@]}"; do
  bin="${BIN_PATH[$name]}"
  [ -x "$bin" ] && continue
  # Only the untouched default is built on demand, as before.
  if [ "$BINS" = "current=$REPO/target/release/slmgate" ] && [ -z "${SLMGATE_BIN:-}" ]; then
    log "$bin missing; building it (cargo build --release)"
    cargo build --release
    [ -x "$bin" ] || die "cargo build --release did not produce $bin"
  else
    die "binary '$name' = $bin is not an executable"
  fi
done
[ -f "$BENCH_POLICY" ] || die "missing $BENCH_POLICY"
[ -f "$NGINX_TMPL" ] || die "missing $NGINX_TMPL"
if [ "$needs_models" -eq 1 ]; then
  MODELS_DIR="$(abspath "$MODELS_DIR")"
  # Without them `serve` would try to fetch them first; say so instead.
  if [ ! -d "$MODELS_DIR/minilm" ] || ! compgen -G "$MODELS_DIR/smollm2/*.gguf" >/dev/null; then
    die "models missing in $MODELS_DIR (default/features policies): run \`slmgate models fetch --dir $MODELS_DIR\` or set SLMGATE_MODELS_DIR"
  fi
  [ -f "$DEFAULT_POLICY_SRC" ] || die "missing $DEFAULT_POLICY_SRC"
fi

for p in "$NGINX_PORT" "$GW_PORT" "$GW_STREAM_PORT"; do
  ! port_busy "$p" || die "port $p is already in use (set NGINX_PORT/GW_PORT/GW_STREAM_PORT)"
done

stamp_init # the tree the binaries were measured with, before anything runs

# ---------------------------------------------------------------- process care
WORK="$(mktemp -d -t slmgate-load.XXXXXX)"
PIDS=()

install_traps

# features: the default policy with only the triage kind changed.
FEATURES_POLICY="$WORK/policy-features.yaml"
if [[ " ${POLICY_NAMES[*]} " == *" features "* ]]; then
  sed '/^triage:/,/^[^[:space:]#]/ s/^\([[:space:]]*kind:[[:space:]]*\)model\([[:space:]]*\(#.*\)\{0,1\}\)$/\1features\2/' \
    "$DEFAULT_POLICY_SRC" >"$FEATURES_POLICY"
  # Exactly one line may differ, and it must be the triage kind.
  changed="$(diff "$DEFAULT_POLICY_SRC" "$FEATURES_POLICY" | grep '^[<>]' || true)"
  if [ "$(grep -c '^>' <<<"$changed")" != 1 ] || ! grep -q '^> *kind: *features' <<<"$changed"; then
    die "could not derive the features policy from $DEFAULT_POLICY_SRC (triage.kind: model not found)"
  fi
fi

policy_args() { # policy -> serve arguments (one per line)
  case "$1" in
    bench) printf '%s\n' --policy "$BENCH_POLICY" ;;
    features) printf '%s\n' --policy "$FEATURES_POLICY" ;;
    default) ;; # the embedded policy
  esac
}
policy_desc() {
  case "$1" in
    bench) echo "benches/bench-policy.yaml (cloud-only, features triage)" ;;
    features) echo "policies/default.yaml with \`triage: {kind: features}\` (local model loaded, no encoder)" ;;
    default) echo "embedded default policy (local model + MiniLM triage encoder)" ;;
  esac
}

# ---------------------------------------------------------------- gateways
# Start one gateway in the background (readiness checked by the caller).
launch_gateway() { # bin policy port upstream_base logfile -> sets GW_PID
  local args=()
  mapfile -t args < <(policy_args "$2")
  env OPENAI_API_KEY=bench OPENAI_BASE_URL="$4" SLMGATE_MODELS_DIR="$MODELS_DIR" \
    "$1" serve ${args[@]+"${args[@]}"} --listen "127.0.0.1:$3" >"$5" 2>&1 &
  GW_PID=$!
  PIDS+=("$GW_PID")
}

# Stop one gateway and drop it from PIDS.
retire_gateway() { # pid
  local keep=() p
  stop_pid "$1"
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- request bodies
write_lua "$WORK/post.lua" "$BENCH_BODY"
write_lua "$WORK/post-stream.lua" "$BENCH_BODY_STREAM"

# One request through each gateway before measuring: right status, routed to
# openai, and the expected body shape.
check_gateway() { # port body expect_in_body logfile
  check_post "http://127.0.0.1:$1/v1/chat/completions" "$2" "$3" "$4" "slmgate :$1" '^x-slmgate-backend: *openai'
}

# ---------------------------------------------------------------- the runs
start_nginx

# rows.tsv: mode c target policy rps p50 p99 non2xx sock reqs cpu_s wall_s peak_rss_kb
ROWS_TSV="$WORK/rows.tsv"
# gateways.tsv: mode bin policy peak_rss_kb rss_end_kb
GWS_TSV="$WORK/gateways.tsv"
: >"$ROWS_TSV"
: >"$GWS_TSV"
FAILED=0

for mode in $MODES; do
  if [ "$mode" = non-stream ]; then
    direct_url="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    upstream="http://127.0.0.1:$NGINX_PORT/v1"
    lua="$WORK/post.lua"
    body="$BENCH_BODY"
    expect='"Hello! How can I help you today?"'
    first_port=$GW_PORT
  else
    direct_url="http://127.0.0.1:$NGINX_PORT/stream/v1/chat/completions"
    upstream="http://127.0.0.1:$NGINX_PORT/stream/v1"
    lua="$WORK/post-stream.lua"
    body="$BENCH_BODY_STREAM"
    expect='data: [DONE]'
    first_port=$GW_STREAM_PORT
  fi

  # One gateway per binary x policy, started together (model loads overlap).
  GWS=() # "bin policy port pid log"
  taken="$NGINX_PORT $GW_PORT $GW_STREAM_PORT"
  for name in "${BIN_NAMES[@]}"; do
    for pol in "${POLICY_NAMES[@]}"; do
      if [ "${#GWS[@]}" -eq 0 ]; then
        port=$first_port
      else
        port="$(free_port_from "$GW_PORT_SCAN" "$taken")"
      fi
      taken="$taken $port"
      logf="$WORK/gw-$mode-$name-$pol.log"
      log "$mode: starting slmgate '$name' (policy $pol) on :$port"
      launch_gateway "${BIN_PATH[$name]}" "$pol" "$port" "$upstream" "$logf"
      GWS+=("$name $pol $port $GW_PID $logf")
    done
  done
  for g in "${GWS[@]}"; do
    read -r name pol port pid logf <<<"$g"
    wait_ready "slmgate $name/$pol :$port" "http://127.0.0.1:$port/readyz" "$pid" "$logf"
    check_gateway "$port" "$body" "$expect" "$logf"
  done

  for g in "${GWS[@]}"; do
    read -r name pol port pid logf <<<"$g"
    log "$mode: warm-up $name/$pol ($WARMUP)"
    run_wrk "$WORK/warmup.txt" "http://127.0.0.1:$port/v1/chat/completions" "$lua" 16 "$WARMUP"
  done

  for c in $CONCURRENCY; do
    log "$mode c=$c: direct"
    measure "$WORK/$mode-direct-c$c.txt" "$direct_url" "$lua" "$c" "$DURATION" -
    printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$c" direct - "$(m_tsv)" >>"$ROWS_TSV"
    for g in "${GWS[@]}"; do
      read -r name pol port pid logf <<<"$g"
      out="$WORK/$mode-$name-$pol-c$c.txt"
      log "$mode c=$c: $name/$pol"
      measure "$out" "http://127.0.0.1:$port/v1/chat/completions" "$lua" "$c" "$DURATION" "$pid"
      alive "$pid" || { show_log "slmgate $name/$pol" "$logf"; die "gateway $name/$pol died during the $mode run"; }
      printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$c" "$name" "$pol" "$(m_tsv)" >>"$ROWS_TSV"
      # M: rps p50 p99 non2xx sock reqs cpu_s wall_s peak_rss_kb
      if [ "${M[3]}" -gt 0 ] || [ "${M[4]}" -gt 0 ]; then
        FAILED=1
        log "$mode c=$c: $name/$pol had ${M[3]} non-2xx responses and ${M[4]} socket errors"
        cat "$out" >&2
      fi
    done
  done

  for g in "${GWS[@]}"; do
    read -r name pol port pid logf <<<"$g"
    printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$name" "$pol" "$(vm_field_tree "$pid" VmHWM)" "$(vm_field_tree "$pid" VmRSS)" >>"$GWS_TSV"
    retire_gateway "$pid"
  done
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$(results_path load)"
multi=0
if [ "${#BIN_NAMES[@]}" -gt 1 ] || [ "${#POLICY_NAMES[@]}" -gt 1 ]; then multi=1; fi
{
  echo "# slmgate load benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo
  stamp_header
  echo "- wrk: -t1, ${DURATION} per run, timeout ${WRK_TIMEOUT}, warm-up ${WARMUP} per gateway; upstream: nginx (1 worker), constant answers"
  echo "- order: per mode and concurrency, direct then every gateway (interleaved); one gateway process per binary x policy x mode"
  for name in "${BIN_NAMES[@]}"; do echo "- binary \`$name\`: $(bin_info "${BIN_PATH[$name]}")"; done
  for pol in "${POLICY_NAMES[@]}"; do echo "- policy \`$pol\`: $(policy_desc "$pol")"; done
  [ "$needs_models" -eq 0 ] || echo "- models: $MODELS_DIR"
  echo "- RUST_LOG=$RUST_LOG; gateway CPU = utime + stime over the measured runs only; peak RSS = VmHWM"
  echo
  awk -F'\t' -v base="${BIN_NAMES[0]}" -v multi="$multi" \
    -v binorder="${BIN_NAMES[*]}" -v polorder="${POLICY_NAMES[*]}" -v modeorder="$MODES" -v corder="$CONCURRENCY" '
    function us(k) { return reqs[k] > 0 ? cpu[k] * 1e6 / reqs[k] : -1 }
    function ratio(a, b) { return (b > 0 && a >= 0) ? sprintf("%.2fx", a / b) : "—" }
    function num(v, f) { return v < 0 ? "—" : sprintf(f, v) }
    FNR == NR {
      # rows: mode c target policy rps p50 p99 non2xx sock reqs cpu_s wall_s rss_kb
      k = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4
      rps[k] = $5; p50[k] = $6; p99[k] = $7; non2xx[k] = $8; sock[k] = $9
      reqs[k] = $10; cpu[k] = $11; wall[k] = $12; rss[k] = $13
      if ($3 == "direct") { d_rps[$1, $2] = $5; d50[$1, $2] = $6; d99[$1, $2] = $7 }
      else {
        a50[k] = $6 - d50[$1, $2]; a99[k] = $7 - d99[$1, $2]
        g = $1 SUBSEP $3 SUBSEP $4; gcpu[g] += $11; greqs[g] += $10
      }
      order[++n] = k
      next
    }
    { hwm[$1, $2, $3] = $4; rss_end[$1, $2, $3] = $5 }
    END {
      nb = split(binorder, bins, " "); np = split(polorder, pols, " ")
      nm = split(modeorder, modes, " "); nc = split(corder, cs, " ")
      print "| mode | concurrency | gateway | direct rps | gateway rps | direct p50 ms | direct p99 ms | gateway p50 ms | gateway p99 ms | added p50 ms | added p99 ms | gateway non-2xx | gateway socket errors | gateway CPU us/request | gateway CPU % | gateway peak RSS MiB |"
      print "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= n; i++) {
        k = order[i]; split(k, f, SUBSEP)
        if (f[3] == "direct") continue
        printf "| %s | %d | %s/%s | %.0f | %.0f | %.3f | %.3f | %.3f | %.3f | %+.3f | %+.3f | %d | %d | %.1f | %.0f | %.1f |\n",
          f[1], f[2], f[3], f[4], d_rps[f[1], f[2]], rps[k], d50[f[1], f[2]], d99[f[1], f[2]], p50[k], p99[k],
          a50[k], a99[k], non2xx[k], sock[k], us(k), (wall[k] > 0 ? 100 * cpu[k] / wall[k] : 0), rss[k] / 1024
      }
      print ""
      for (m = 1; m <= nm; m++) for (b = 1; b <= nb; b++) for (p = 1; p <= np; p++) {
        g = modes[m] SUBSEP bins[b] SUBSEP pols[p]
        if (!(g in hwm)) continue
        printf "- %s gateway %s/%s: peak RSS (VmHWM) %.1f MiB, RSS at end %.1f MiB, CPU time %.2f s for %d requests (%.1f us/request)\n",
          modes[m], bins[b], pols[p], hwm[g] / 1024, rss_end[g] / 1024, gcpu[g], greqs[g], (greqs[g] > 0 ? gcpu[g] * 1e6 / greqs[g] : 0)
      }
      if (!multi) exit
      if (nb > 1) {
        print ""
        print "## Binaries compared with `" base "` (ratio = binary / " base "; below 1 = less)"
        print ""
        print "| policy | mode | concurrency | binary | CPU us/request | vs " base " | ratio | added p50 ms | vs " base " | ratio | added p99 ms | vs " base " | ratio | rps ratio |"
        print "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (p = 1; p <= np; p++) for (m = 1; m <= nm; m++) for (c = 1; c <= nc; c++) for (b = 2; b <= nb; b++) {
          k0 = modes[m] SUBSEP cs[c] SUBSEP base SUBSEP pols[p]
          k = modes[m] SUBSEP cs[c] SUBSEP bins[b] SUBSEP pols[p]
          if (!(k in rps) || !(k0 in rps)) continue
          printf "| %s | %s | %d | %s | %s | %s | %s | %+.3f | %+.3f | %s | %+.3f | %+.3f | %s | %s |\n",
            pols[p], modes[m], cs[c], bins[b], num(us(k), "%.1f"), num(us(k0), "%.1f"), ratio(us(k), us(k0)),
            a50[k], a50[k0], ratio(a50[k], a50[k0]), a99[k], a99[k0], ratio(a99[k], a99[k0]), ratio(rps[k], rps[k0])
        }
        print ""
        print "Added-latency ratios are shown only where the baseline added latency is above 0 (it is the difference of two noisy medians)."
      }
      hasd = 0; hasf = 0
      for (p = 1; p <= np; p++) { if (pols[p] == "default") hasd = 1; if (pols[p] == "features") hasf = 1 }
      if (hasd && hasf) {
        print ""
        print "## default / features policy, same binary (cost of the MiniLM triage encoder)"
        print ""
        print "| binary | mode | concurrency | CPU us/request default | features | ratio | added p50 ms default | features | added p99 ms default | features | peak RSS MiB default | features | ratio |"
        print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (b = 1; b <= nb; b++) for (m = 1; m <= nm; m++) for (c = 1; c <= nc; c++) {
          kd = modes[m] SUBSEP cs[c] SUBSEP bins[b] SUBSEP "default"
          kf = modes[m] SUBSEP cs[c] SUBSEP bins[b] SUBSEP "features"
          if (!(kd in rps) || !(kf in rps)) continue
          printf "| %s | %s | %d | %s | %s | %s | %+.3f | %+.3f | %+.3f | %+.3f | %.1f | %.1f | %s |\n",
            bins[b], modes[m], cs[c], num(us(kd), "%.1f"), num(us(kf), "%.1f"), ratio(us(kd), us(kf)),
            a50[kd], a50[kf], a99[kd], a99[kf], rss[kd] / 1024, rss[kf] / 1024, ratio(rss[kd], rss[kf])
        }
      }
    }
  ' "$ROWS_TSV" "$GWS_TSV"
} | tee "$OUT"
log "results written to $OUT"

if [ "$FAILED" -ne 0 ]; then
  die "a gateway returned non-2xx responses or had socket errors (see above)"
fi
