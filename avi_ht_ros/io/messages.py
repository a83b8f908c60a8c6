"""Our message definitions for ROS-free tools (``rosbags``).

The ``.msg`` files in ``msg/`` are the single source of truth: rosidl builds
them for rclpy, and this module registers the very same text with a
``rosbags`` type store, so bags written by our offline tools are readable by
ROS 2 and bags recorded by ROS 2 are readable here (same CDR layout, same
RIHS01 type hashes).
"""
from __future__ import annotations

import functools
import pathlib

from rosbags.typesys import Stores, get_typestore, get_types_from_msg

from avi_ht_ros.common.paths import share_path

PACKAGE = "avi_ht_ros"
MESSAGE_NAMES = ("GloveSample", "HandPose", "HandGroundTruth", "SyncedFrame", "TimeOffset", "PinchEvent")
ROS_STORE = Stores.ROS2_KILTED


def msg_dir() -> pathlib.Path:
    """The directory holding our ``.msg`` definitions."""
    return share_path("msg", f"{MESSAGE_NAMES[0]}.msg").parent


def message_definitions() -> dict[str, str]:
    """``{"avi_ht_ros/msg/Name": msg text}`` for every message of ours."""
    directory = msg_dir()
    return {f"{PACKAGE}/msg/{name}": (directory / f"{name}.msg").read_text()
            for name in MESSAGE_NAMES}


@functools.lru_cache(maxsize=1)
def typestore():
    """A ``rosbags`` type store with the ROS 2 standard types and ours."""
    store = get_typestore(ROS_STORE)
    types: dict = {}
    for name, text in message_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
