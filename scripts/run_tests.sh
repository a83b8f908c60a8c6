#!/usr/bin/env bash
# The test command (README, .ci/run): bootstrap the environment, then pytest.
# Extra arguments go to pytest, e.g. `scripts/run_tests.sh -m slow` for soak runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
# shellcheck disable=SC1091
source scripts/env.sh
exec python -m pytest "$@"
