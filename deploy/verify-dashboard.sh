#!/usr/bin/env bash
# Proves the dashboard against a real Prometheus: every panel has data while
# the gateway serves traffic, and every alert rule loads and evaluates.
#
# Starts (all on 127.0.0.1, free ports, in a temp dir): a mock OpenAI upstream
# (deploy/verify/mock_upstream.py), redis-server, the gateway with a policy
# that has the real local model, the MiniLM triage, a cloud backend (the
# mock), a backend that refuses connections (fallbacks), shadow sampling,
# shared state in Redis and two keys (one with a tiny budget and rpm);
# Prometheus (Debian's package) scraping /metrics every second with
# deploy/prometheus/alerts.yaml loaded. Then drives a mixed load
# (deploy/verify/traffic.py), stops Redis for a moment, reloads the policy
# (SIGHUP; an invalid file; the valid one again), drives more load, and
# evaluates every dashboard query and every rule through Prometheus's HTTP
# API (deploy/verify/query_panels.py), printing a markdown report.
#
# Not run by CI (it needs a few minutes of traffic): run it after changing
# the dashboard, the alert rules or the metrics.
#
# Usage:  deploy/verify-dashboard.sh
# Env:    SLMGATE_BIN (default target/release/slmgate, else target/debug/slmgate)
#         SLMGATE_MODELS_DIR ($REPO/models; `slmgate models fetch` fills it)
#         ROUNDS=3 (traffic rounds before and after the reloads)
#         RESULTS=FILE (also write the report there)
#         KEEP_WORK=1 (keep the temp dir with the logs after a failure)
# Needs:  python3, curl, prometheus, redis-server (apt-get installs the
#         missing ones).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
HERE="$REPO/deploy/verify"
ROUNDS="${ROUNDS:-3}"
MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"
if [ -z "${SLMGATE_BIN:-}" ]; then
  SLMGATE_BIN="$REPO/target/release/slmgate"
  [ -x "$SLMGATE_BIN" ] || SLMGATE_BIN="$REPO/target/debug/slmgate"
fi
[ -x "$SLMGATE_BIN" ] || { echo "no slmgate binary (set SLMGATE_BIN or cargo build)" >&2; exit 1; }
export RUST_LOG="${RUST_LOG:-warn}" SLMGATE_LOG="${SLMGATE_LOG:-warn}"

log() { printf '[verify] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
apt_install ${missing[@]+"${missing[@]}"}

WORK="$(mktemp -d)"
PIDS=()
install_traps

MOCK_PORT="$(free_port_from 18600 "")"
REDIS_PORT="$(free_port_from 18610 "$MOCK_PORT")"
GW_PORT="$(free_port_from 18620 "$MOCK_PORT $REDIS_PORT")"
PROM_PORT="$(free_port_from 18630 "$MOCK_PORT $REDIS_PORT $GW_PORT")"
GW="http://127.0.0.1:$GW_PORT"
PROM="http://127.0.0.1:$PROM_PORT"

log "mock upstream on :$MOCK_PORT"
python3 "$HERE/mock_upstream.py" "$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_ready mock "http://127.0.0.1:$MOCK_PORT/" $! "$WORK/mock.log"

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >>"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 50); do port_busy "$REDIS_PORT" && return; sleep 0.1; done
  die "redis-server did not start"
}
log "redis-server on :$REDIS_PORT"
start_redis

POLICY="$WORK/policy.yaml"
sed -e "s/@MOCK_PORT@/$MOCK_PORT/" -e "s/@REDIS_PORT@/$REDIS_PORT/" "$HERE/policy.yaml.tmpl" >"$POLICY"
TEAM_KEY="$("$SLMGATE_BIN" keys add --policy "$POLICY" --name team --budget-usd-day 5 | tail -n1)"
TINY_KEY="$("$SLMGATE_BIN" keys add --policy "$POLICY" --name tiny --rpm 3 --budget-usd-day 0.01 | tail -n1)"
cp "$POLICY" "$WORK/policy.good.yaml"

log "gateway ($SLMGATE_BIN) on :$GW_PORT"
mkdir -p "$WORK/home"
HOME="$WORK/home" VERIFY_UPSTREAM_KEY=mock-key SLMGATE_MODELS_DIR="$MODELS_DIR" \
  "$SLMGATE_BIN" serve --policy "$POLICY" --listen "127.0.0.1:$GW_PORT" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_ready gateway "$GW/readyz" "$GW_PID" "$WORK/gateway.log" 300

cat >"$WORK/prometheus.yml" <<EOF2
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $REPO/deploy/prometheus/alerts.yaml
scrape_configs:
  - job_name: slmgate
    static_configs:
      - targets: ["127.0.0.1:$GW_PORT"]
EOF2
log "prometheus on :$PROM_PORT"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_ready prometheus "$PROM/-/ready" $! "$WORK/prometheus.log"
sleep 3 # a few scrapes before the traffic: rates need two samples

START="$(date +%s)"
log "traffic: $ROUNDS rounds"
python3 "$HERE/traffic.py" "$GW" "$TEAM_KEY" "$TINY_KEY" "$ROUNDS" >&2

# A labelled counter appears with its first increment, and Prometheus's
# rate() does not count a series' appearance: the errors below are spread
# over several scrapes so that the panels show a rate, not just a series.
log "Redis stopped for a moment (shared-state errors; on_unavailable: open)"
stop_pid "$REDIS_PID"
for _ in 1 2 3 4; do
  sleep 1.5
  curl -sS -o /dev/null -w '  without Redis: %{http_code}\n' -H "authorization: Bearer $TEAM_KEY" \
    -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","max_tokens":8,"messages":[{"role":"user","content":"Say hi."}]}' \
    "$GW/v1/chat/completions" >&2
done
start_redis

log "policy reloads: SIGHUP, an invalid file (noticed, then SIGHUP), the valid one again"
kill -HUP "$GW_PID"
sleep 3
printf 'no_such_field: 1\n' >>"$POLICY"
sleep 4
kill -HUP "$GW_PID"
sleep 3
cp "$WORK/policy.good.yaml" "$POLICY.tmp" && mv "$POLICY.tmp" "$POLICY"
sleep 4
curl -fsS "$GW/metrics" | grep '^slmgate_policy_reloads_total' >&2 || die "no reloads counted"

log "traffic after the reloads: $ROUNDS rounds"
python3 "$HERE/traffic.py" "$GW" "$TEAM_KEY" "$TINY_KEY" "$ROUNDS" >&2
sleep 5 # the last scrapes
END="$(date +%s)"

# What the gateway wrote outside the models dir (the k8s manifest mounts a
# read-only root filesystem with HOME=/tmp on an emptyDir).
log "written under the gateway's HOME: $(cd "$WORK/home" && find . -mindepth 1 | tr '\n' ' ')"
alive "$GW_PID" || die "the gateway died"

report="$WORK/report.md"
rc=0
python3 "$HERE/query_panels.py" "$PROM" "$START" "$END" "$REPO"/dashboards/*.json >"$report" || rc=$?
{
  echo "## deploy/verify-dashboard.sh"
  echo
  stamp_header
  echo "- gateway: $(bin_info "$SLMGATE_BIN")"
  echo "- prometheus: $(prometheus --version 2>&1 | head -n1)"
  echo "- traffic: $((2 * ROUNDS)) rounds of deploy/verify/traffic.py, Redis stopped once, 3 policy reloads"
  echo
  cat "$report"
} | tee "${RESULTS:-/dev/null}"
exit "$rc"
