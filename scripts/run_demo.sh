#!/usr/bin/env bash
# The README's "run" command (`make demo`): bootstrap the environment, then the main job,
# `avi-ht demo`: a simulated camera + 12-IMU glove scenario (20 s, heavy occlusion phases)
# through the real node graph (camera, glove driver over its serial protocol, synchronizer,
# AVI-HT fusion, retargeting to the shipped robot hand), recorded to MCAP, with a report
# folder (metrics vs ground truth, fusion vs vision-only, latency, time offset, picture strip).
# Extra arguments go to `avi-ht demo` (e.g. --model PATH --baseline-model PATH --video).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
# shellcheck disable=SC1091
source scripts/env.sh
OUT="${AVI_HT_DEMO_OUT:-$ROOT/out/demo-$(date +%Y%m%d-%H%M%S)}"
exec avi-ht demo --out "$OUT" "$@"
