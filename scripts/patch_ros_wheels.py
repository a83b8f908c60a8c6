"""Rewrite build-container paths baked into the ROS 2 wheels' CMake exports.

The PyPI ROS 2 wheels were built in a manylinux container; their exported
``*__rosidl_generator_pyExport.cmake`` files name that container's Python
include directory and numpy include directory, which makes CMake's generate
step fail when a package with messages is built against them.  This rewrites
those two paths, inside the given virtual environment only, to this
interpreter's.  Safe to re-run ("nothing left to patch").
"""
from __future__ import annotations

import pathlib
import sys
import sysconfig

import numpy

OLD_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
OLD_NUMPY = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def patch(venv: pathlib.Path) -> int:
    new_include = sysconfig.get_paths()["include"]
    new_numpy = numpy.get_include()
    changed = 0
    for path in (venv / "share").rglob("*.cmake"):
        text = path.read_text()
        if OLD_INCLUDE not in text and OLD_NUMPY not in text:
            continue
        path.write_text(text.replace(OLD_NUMPY, new_numpy).replace(OLD_INCLUDE, new_include))
        changed += 1
    return changed


if __name__ == "__main__":
    n = patch(pathlib.Path(sys.argv[1]))
    print(f"[setup] patched {n} CMake export files" if n else "[setup] nothing left to patch", file=sys.stderr)
