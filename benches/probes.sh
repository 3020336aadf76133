#!/usr/bin/env bash
# Triage on the blind probe sets (tests/data/triage-probes/): each probe is
# added to train+dev as a 22nd source and held out like the others
# (`slmgate eval --loso`), so it is scored by heads that never saw it.
# Prints, per probe, its AUC and accuracy at 0.5 next to the length and
# features baselines.
#
# Usage:  benches/probes.sh [path/to/slmgate]     (default target/release/slmgate)
# Env:    SLMGATE_MODELS_DIR=$REPO/models  SLMGATE_EMBED_CACHE (shared with eval --loso)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BIN="${1:-target/release/slmgate}"
DATA="${DATASETS:-$REPO/../shared/datasets}"
export SLMGATE_MODELS_DIR="${SLMGATE_MODELS_DIR:-$REPO/models}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
printf '| probe | n | hard | AUC | accuracy at 0.5 | length AUC | features AUC |\n|---|---:|---:|---:|---:|---:|---:|\n'
for f in tests/data/triage-probes/probe*.jsonl; do
  name="$(basename "$f" .jsonl)"
  SLMGATE_LOSO_DUMP="$TMP/$name.dump" "$BIN" eval --loso --data "$DATA/train.jsonl" \
    --data "$DATA/dev.jsonl" --data "$f" --json > "$TMP/$name.json" 2> "$TMP/$name.err" \
    || { cat "$TMP/$name.err" >&2; exit 1; }
  python3 - "$name" "$TMP/$name.json" "$TMP/$name.dump" <<'PY'
import json, struct, sys
name, report, dump = sys.argv[1:]
r = json.load(open(report))["by_source"]["zz-probe"]
rows = [json.loads(l) for l in open(dump)]
rows = [d for d in rows if d["source"] == "zz-probe"]
# The cascade's score: the full head inside the band, else the fast head.
# (the band is an f32 in the config: compare as the binary does)
f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
band = [f32(x) for x in json.load(open(report))["config"]["band"]]
score = lambda d: d["full"] if band[0] <= d["fast"] <= band[1] else d["fast"]
acc = sum((score(d) >= 0.5) == d["hard"] for d in rows) / len(rows)
print(f"| {name} | {r['n']} | {r['hard']} | {r['auc']:.3f} | {acc:.3f} | {r['length_auc']:.3f} | {r['features_auc']:.3f} |")
PY
done
