# Source this to use the environment scripts/setup_env.sh made:
#   source scripts/env.sh
_AVI_HT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_AVI_HT_VENV="$(readlink -f "${AVI_HT_VENV:-$_AVI_HT_ROOT/.venv}")"
# shellcheck disable=SC1091
source "$_AVI_HT_VENV/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  # ROS from wheels: the venv is the underlay (ament index, typesupport libs).
  export AMENT_PREFIX_PATH="$_AVI_HT_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
# colcon's generated setup scripts read unset variables (COLCON_TRACE, ...): source them without
# `set -u` even when the caller uses it (scripts/run_demo.sh, scripts/run_tests.sh), then restore it
_AVI_HT_NOUNSET=""
case $- in *u*) _AVI_HT_NOUNSET=1; set +u ;; esac
# shellcheck disable=SC1091
source "$_AVI_HT_ROOT/install/setup.bash"
if [ -n "$_AVI_HT_NOUNSET" ]; then set -u; fi
export ROS_LOG_DIR="${ROS_LOG_DIR:-$_AVI_HT_ROOT/log/ros}"
unset _AVI_HT_ROOT _AVI_HT_VENV _AVI_HT_NOUNSET
