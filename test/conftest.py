"""Test-session setup shared by every test file.

ROS traffic stays on this machine: discovery is limited to localhost and each
test session gets its own domain id, so parallel sessions never cross-talk.
"""
from __future__ import annotations

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def rclpy_context():
    """One real rclpy context for the whole session (DDS over loopback)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture(scope="session")
def untrained_avi_ht_checkpoint(tmp_path_factory):
    """An untrained AVI-HT checkpoint (seed 0) for node tests: real inference, no trained weights."""
    import torch

    from avi_ht_ros.common.glove_model import GloveModel
    from avi_ht_ros.models.checkpoint import save_checkpoint
    from avi_ht_ros.models.config import ModelConfig
    from avi_ht_ros.models.factory import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "avi_ht.pt"
    save_checkpoint(path, build_model(ModelConfig(type="avi_ht"), GloveModel.reference()))
    return path
