# shellcheck shell=bash
# Shared helpers for the benchmark scripts (sourced, not run). The sourcing
# script defines log() and die(), and the globals WORK (temp dir) and PIDS.
# Helpers that need more globals name them above their definition.

# Install Debian packages that are missing (as root, or through sudo).
apt_install() {
  [ "$#" -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing $* with apt-get"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# nginx, wrk and curl, installed with apt-get when missing; sets NGINX.
need_load_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  apt_install ${missing[@]+"${missing[@]}"}
  NGINX="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
}

# True while PID exists and is not a zombie (kill -0 succeeds on zombies).
alive() {
  local state
  state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ -n "$state" ] && [ "$state" != "Z" ]
}

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do # up to 10 s, then SIGKILL
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

# Stop every process in PIDS; remove WORK unless KEEP_WORK is set after a failure.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do stop_pid "$pid"; done
  if [ "$rc" -ne 0 ] && [ -n "${KEEP_WORK:-}" ]; then
    log "keeping $WORK (logs) because KEEP_WORK is set"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}

install_traps() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

show_log() { # name file
  log "---- last lines of $1 ($2) ----"
  tail -n 40 "$2" >&2 2>/dev/null || true
}

# A port is busy when something accepts a connection on it.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# First port >= $1 that nothing listens on and that is not in the words of $2.
free_port_from() { # start "taken ports"
  local p=$1
  while port_busy "$p" || [[ " $2 " == *" $p "* ]]; do
    p=$((p + 1))
    ((p < 65535)) || die "no free port above $1"
  done
  echo "$p"
}

# Poll URL (GET) until it answers 2xx; fail early if the process died.
# timeout_s defaults to READY_TIMEOUT_S (60 when unset).
wait_ready() { # name url pid logfile [timeout_s]
  local name=$1 url=$2 pid=$3 logf=$4 t=${5:-${READY_TIMEOUT_S:-60}}
  local deadline=$((SECONDS + t))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! alive "$pid"; then show_log "$name" "$logf"; die "$name exited during startup"; fi
    if ((SECONDS >= deadline)); then show_log "$name" "$logf"; die "$name not ready after ${t}s ($url)"; fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- result stamp
# stamp_init (once, at start: the tree as it was when the measured binaries ran)
# sets STAMP_COMMIT, STAMP_TREE ("clean" / "dirty (N changed files)") and
# STAMP_SUFFIX (commit, plus "-dirty"). Files under benches/results/ are not
# counted: earlier results files are not code that was measured.
stamp_init() {
  local repo=${1:-$REPO} changed
  STAMP_COMMIT="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ "$STAMP_COMMIT" = unknown ]; then
    STAMP_TREE="unknown (not a git checkout)"
    STAMP_SUFFIX="unknown"
    return
  fi
  changed="$(git -C "$repo" status --porcelain -- . ':(exclude)benches/results' 2>/dev/null | wc -l)"
  if [ "$changed" -eq 0 ]; then
    STAMP_TREE="clean"
    STAMP_SUFFIX="$STAMP_COMMIT"
  else
    STAMP_TREE="dirty ($changed changed files, \`git status --porcelain\`)"
    STAMP_SUFFIX="$STAMP_COMMIT-dirty"
  fi
}

# benches/results/<prefix>-<date>-<commit>[-dirty].md (after stamp_init).
results_path() { # prefix
  echo "$RESULTS_DIR/$1-$(date +%Y%m%d-%H%M%S)-$STAMP_SUFFIX.md"
}

# Markdown bullet lines: commit, work tree, date (UTC), host CPU and nproc.
stamp_header() {
  [ -n "${STAMP_COMMIT:-}" ] || stamp_init
  echo "- commit: $STAMP_COMMIT, work tree $STAMP_TREE"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- host: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown CPU), nproc $(nproc)"
}

# "path (size, modified ..., sha256 ...)" of a binary, for result headers.
bin_info() { # path
  local sum
  sum="$(sha256sum "$1" 2>/dev/null | cut -c1-12)"
  printf '%s (%s MiB, built %s, sha256 %s)\n' "$1" \
    "$(awk -v b="$(stat -c %s "$1" 2>/dev/null || echo 0)" 'BEGIN { printf "%.1f", b / 1048576 }')" \
    "$(date -u -r "$1" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')" "${sum:-?}"
}

# ---------------------------------------------------------------- nginx upstream
# Needs NGINX (need_load_tools), NGINX_TMPL, NGINX_PORT, WORK; sets NGINX_PID.
start_nginx() {
  local ngx="$WORK/nginx" args help
  mkdir -p "$ngx"
  sed -e "s|@PREFIX@|$ngx|g" -e "s|@PORT@|$NGINX_PORT|g" "$NGINX_TMPL" >"$ngx/nginx.conf"
  args=(-p "$ngx/" -c "$ngx/nginx.conf")
  # -e (startup error log) exists since nginx 1.19.5; avoids /var/log/nginx.
  help="$("$NGINX" -h 2>&1 || true)"
  [[ "$help" == *"-e filename"* ]] && args+=(-e "$ngx/error.log")
  "$NGINX" -t "${args[@]}" >"$ngx/test.log" 2>&1 || { show_log "nginx -t" "$ngx/test.log"; die "nginx config invalid"; }

  log "starting nginx on 127.0.0.1:$NGINX_PORT"
  "$NGINX" "${args[@]}" >"$ngx/stdout.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_ready nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$NGINX_PID" "$ngx/stdout.log"
}

# ---------------------------------------------------------------- wrk
# The request bodies every load script sends (nginx answers them constantly).
# shellcheck disable=SC2034 # used by the sourcing scripts
BENCH_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
# shellcheck disable=SC2034
BENCH_BODY_STREAM='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello."}]}'

write_lua() { # file body [bearer_token]
  cat >"$1" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer ${3:-bench-client}"
wrk.body = [[$2]]
EOF
}

# Needs WRK_TIMEOUT.
run_wrk() { # outfile url lua concurrency duration
  if ! wrk -t1 -c"$4" -d"$5" --timeout "$WRK_TIMEOUT" --latency -s "$3" "$2" </dev/null >"$1" 2>&1; then
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

# One POST before measuring: HTTP 200, the expected text in the body and, when
# given, a response header line matching header_re (grep -i). Dies otherwise.
check_post() { # url body expect_in_body logfile name [header_re] [bearer_token]
  local code
  code="$(curl -sS --max-time 30 -o "$WORK/check.body" -D "$WORK/check.headers" -w '%{http_code}' \
    -H 'Content-Type: application/json' -H "Authorization: Bearer ${7:-bench-client}" \
    --data "$2" "$1")" || code="curl-failed"
  if [ "$code" != "200" ] || ! grep -qF -- "$3" "$WORK/check.body" ||
    { [ -n "${6:-}" ] && ! grep -qi -- "$6" "$WORK/check.headers"; }; then
    log "check of $5 through $1 failed (HTTP $code)"
    cat "$WORK/check.headers" "$WORK/check.body" >&2 2>/dev/null || true
    show_log "$5" "$4"
    die "$5: sanity check failed"
  fi
}

# ---------------------------------------------------------------- cpu / memory
cpu_ticks() { # utime + stime of PID (all its threads), in clock ticks
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
vm_field() { # PID field (VmHWM, VmRSS) -> kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# PID and all its live descendants, one per line (for servers that fork workers).
pid_tree() { # pid
  local f
  for f in /proc/[0-9]*/stat; do
    sed -n 's/^\([0-9]*\) .*) [A-Za-z] \([0-9]*\) .*/\1 \2/p' "$f" 2>/dev/null
  done | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      print root; n = 1; q[1] = root
      for (i = 1; i <= n; i++)
        for (p in parent)
          if (parent[p] == q[i]) { q[++n] = p; print p }
    }'
}
cpu_ticks_tree() { # utime + stime summed over PID and its descendants
  local t=0 p v
  for p in $(pid_tree "$1"); do
    v="$(cpu_ticks "$p" 2>/dev/null)" || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
vm_field_tree() { # PID field -> kB summed over PID and its descendants
  local t=0 p v
  for p in $(pid_tree "$1"); do
    v="$(vm_field "$p" "$2" 2>/dev/null)" || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

CLK_TCK="$(getconf CLK_TCK)"

# One measured wrk run; CPU of SERVER_PID's process tree counted over this run
# only. SERVER_PID "-" (e.g. nginx direct) skips CPU and memory. Runs in the
# calling shell (so a failed wrk ends the script) and sets the array
# M=(rps p50_ms p99_ms non2xx sock requests cpu_s wall_s peak_rss_kb).
measure() { # outfile url lua concurrency duration server_pid
  local pid=$6 t0=0 t1=0 w0 w1 hwm=0 rps p50 p99 non2xx sock reqs
  [ "$pid" = "-" ] || t0="$(cpu_ticks_tree "$pid")"
  w0=${EPOCHREALTIME/,/.}
  run_wrk "$1" "$2" "$3" "$4" "$5"
  w1=${EPOCHREALTIME/,/.}
  if [ "$pid" != "-" ]; then
    t1="$(cpu_ticks_tree "$pid")"
    hwm="$(vm_field_tree "$pid" VmHWM)"
  fi
  read -r rps p50 p99 non2xx sock reqs < <(parse_wrk "$1")
  M=("$rps" "$p50" "$p99" "$non2xx" "$sock" "$reqs"
    "$(awk -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (t1 - t0) / hz }')"
    "$(awk -v w0="$w0" -v w1="$w1" 'BEGIN { printf "%.3f", w1 - w0 }')"
    "$hwm")
}

# M as one tab-separated line.
m_tsv() { (
  IFS=$'\t'
  echo "${M[*]}"
); }
