"""Where the package's data files (msg/, config/, robots/, models/, rviz/) live.

Three installs are supported, tried in this order:

1. a source checkout (also reached through colcon's ``--symlink-install``):
   the repository root, two levels above this file's real path;
2. a colcon/ROS install: ``share/avi_ht_ros`` found through the ament index;
3. ``pip install .``: ``<prefix>/share/avi_ht_ros`` (setup.py ``data_files``).
"""
from __future__ import annotations

import functools
import os
import pathlib
import sys

from avi_ht_ros.common.errors import ConfigError

PACKAGE = "avi_ht_ros"


def _candidate_roots() -> list[pathlib.Path]:
    roots = [pathlib.Path(__file__).resolve().parents[2]]
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(pathlib.Path(get_package_share_directory(PACKAGE)))
    except Exception:  # noqa: BLE001 - no ament index, or package not installed there
        pass
    for prefix in (sys.prefix, os.environ.get("VIRTUAL_ENV", "")):
        if prefix:
            roots.append(pathlib.Path(prefix) / "share" / PACKAGE)
    return roots


@functools.lru_cache(maxsize=None)
def share_path(*parts: str) -> pathlib.Path:
    """The first existing ``<root>/<parts...>`` among the install roots above."""
    for root in _candidate_roots():
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    raise ConfigError("/".join(parts), "not found in " + ", ".join(str(r) for r in _candidate_roots()))


def config_path(name: str) -> pathlib.Path:
    """A shipped config file by name (``config/<name>``); an existing path is returned as is."""
    direct = pathlib.Path(name)
    if direct.is_file():
        return direct
    return share_path("config", name)
