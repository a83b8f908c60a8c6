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
# shellcheck disable=SC1091
source "$_AVI_HT_ROOT/install/setup.bash"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$_AVI_HT_ROOT/log/ros}"
unset _AVI_HT_ROOT _AVI_HT_VENV
