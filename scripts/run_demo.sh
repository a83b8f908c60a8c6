#!/usr/bin/env bash
# The README's "run" command: bootstrap the environment, then run the main job.
# Until the full live demo lands (`avi-ht demo`), the main job is the synthetic world:
# one 8 s egocentric camera + 12-IMU glove scenario with heavy occlusion phases, written
# as an MCAP rosbag with the live topics, plus a picture strip with occluded fingers marked.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
# shellcheck disable=SC1091
source scripts/env.sh
OUT="${AVI_HT_DEMO_OUT:-$ROOT/out/demo-$(date +%Y%m%d-%H%M%S)}"
avi-ht simulate --out "$OUT" --sequences 1 --duration 8 --seed 7 --occlusion heavy --strip "$OUT/strip.png" "$@"
echo "demo output: $OUT (bag: $OUT/seq_7, picture strip: $OUT/strip.png)"
