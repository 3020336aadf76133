#!/usr/bin/env bash
# Triage latency (criterion, release): runs `cargo bench --bench triage` and
# writes the figures, stamped with the commit and whether the tree was clean,
# to benches/results/triage-<date>-<commit>[-dirty].md.
#
# Usage:  benches/triage.sh [criterion filter]
#         BENCH=semantic benches/triage.sh   (another criterion bench: semantic,
#         privacy; results go to benches/results/<bench>-...)
# Env:    SLMGATE_MODELS_DIR=$REPO/models  MEASUREMENT_S=3  WARMUP_S=1
# Needs:  the models (`slmgate models fetch`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RESULTS_DIR="$REPO/benches/results"
export SLMGATE_MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"
log() { printf '[triage] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=benches/lib.sh
. "$REPO/benches/lib.sh"

BENCH="${BENCH:-triage}"
[ -f "$SLMGATE_MODELS_DIR/minilm/model.safetensors" ] || die "no MiniLM in $SLMGATE_MODELS_DIR (run: slmgate models fetch)"
stamp_init
RAW="$(mktemp)"
trap 'rm -f "$RAW"' EXIT
cargo bench --bench "$BENCH" -- --warm-up-time "${WARMUP_S:-1}" \
  --measurement-time "${MEASUREMENT_S:-3}" ${1:+"$1"} 2>&1 | tee "$RAW" >&2

mkdir -p "$RESULTS_DIR"
OUT="$(results_path "$BENCH")"
{
  echo "# slmgate $BENCH bench — criterion, release"
  echo
  stamp_header
  echo "- command: BENCH=$BENCH benches/triage.sh ${1:-} (cargo bench --bench $BENCH; ${MEASUREMENT_S:-3} s per bench)"
  echo
  echo "| bench | low | estimate | high |"
  echo "|---|---:|---:|---:|"
  # criterion prints "name  time: [lo est hi]", the name sometimes on the line before.
  awk '
    /^[A-Za-z0-9_\/]+$/ { name = $1; next }
    /time:/ {
      line = $0
      if ($1 != "time:") { name = $1 }
      sub(/.*\[/, "", line); sub(/\].*/, "", line)
      n = split(line, f, " ")
      if (n == 6) printf "| %s | %s %s | %s %s | %s %s |\n", name, f[1], f[2], f[3], f[4], f[5], f[6]
    }' "$RAW"
} | tee "$OUT"
log "results written to $OUT"
