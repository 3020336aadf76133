# Shared helpers for the benchmark scripts (sourced, not run). The sourcing
# script defines log() and die(), and the globals WORK (temp dir) and PIDS.

# Install Debian packages that are missing (as root, or through sudo).
apt_install() {
  [ "$#" -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing $* with apt-get"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
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
