"""Helpers to run real rclpy nodes in-process in tests (real DDS on loopback)."""
from __future__ import annotations

import time
from typing import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor


class Harness:
    """An executor with the nodes under test plus a probe node to publish/subscribe."""

    def __init__(self, context, *nodes):
        self.context = context
        self.executor = SingleThreadedExecutor(context=context)
        self.probe = rclpy.create_node("test_probe", context=context)
        self.nodes = list(nodes)
        for node in [self.probe, *self.nodes]:
            self.executor.add_node(node)
        self.received: dict[str, list] = {}

    def collect(self, msg_type, topic: str, qos, raw: bool = True) -> list:
        bucket = self.received.setdefault(topic, [])
        self.probe.create_subscription(msg_type, topic, bucket.append, qos, raw=raw)
        return bucket

    def spin_for(self, seconds: float, every: Callable[[float], None] | None = None, step: float = 0.001):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if every is not None:
                every(time.monotonic())
            self.executor.spin_once(timeout_sec=step)

    def spin_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return condition()

    def close(self):
        self.executor.shutdown()
        for node in [self.probe, *self.nodes]:
            node.destroy_node()


def feed_lockstep(h: Harness, sync_node, image_pub, glove_pub, glove, t0: int, frames: int, image,
                  seed: int = 0, first_frame_ns: int = 100_000_000,
                  after_frame: Callable[[int], None] | None = None) -> None:
    """Camera frames at 60 Hz from ``t0 + first_frame_ns`` and glove samples on a 200 Hz grid from
    ``t0`` up to 10 ms past each frame, published in stamp order to ``sync_node``, each message
    waited for (lockstep: a starved machine changes nothing), and each frame until the
    synchronizer has emitted or dropped it (then ``after_frame(j)``, e.g. to wait for its pose)."""
    import numpy as np

    from avi_ht_ros.io import convert
    from avi_ht_ros.nodes import base

    rng = np.random.default_rng(seed)
    stats = sync_node.synchronizer.stats
    seq = 0
    for j in range(frames):
        camera_ns = t0 + first_frame_ns + j * 16_666_667
        seq = publish_glove_samples(h, sync_node, glove_pub, glove, t0, seq, camera_ns + 10_000_000, rng)
        before = stats.camera_frames
        base.publish_serialized(image_pub, convert.image_msg(camera_ns, "head_camera_optical_frame", image))
        assert h.spin_until(lambda: stats.camera_frames > before, 10.0), "image not received"
        assert h.spin_until(lambda: sync_node.published + stats.frames_dropped == stats.camera_frames, 10.0)
        if after_frame is not None:
            after_frame(j)


def publish_glove_samples(h: Harness, sync_node, glove_pub, glove, t0: int, seq: int, end_ns: int, rng) -> int:
    """Glove samples ``seq, seq + 1, …`` of a 200 Hz grid from ``t0`` (still, noisy) up to ``end_ns``,
    each waited for at ``sync_node``; returns the next sequence number."""
    import numpy as np

    from avi_ht_ros.io import convert
    from avi_ht_ros.nodes import base

    stats = sync_node.synchronizer.stats
    while t0 + seq * 5_000_000 <= end_ns:
        stamp = t0 + seq * 5_000_000
        before = stats.glove_samples
        base.publish_serialized(glove_pub, convert.glove_sample_msg(
            stamp, "right", glove.frame_ids("right"), rng.normal(0, 0.1, (12, 3)) + [0, 0, 9.81],
            rng.normal(0, 0.1, (12, 3)), np.zeros(12), seq, stamp // 1000))
        seq += 1
        assert h.spin_until(lambda: stats.glove_samples > before, 10.0), "glove sample not received"
    return seq


def sync_input_publishers(h: Harness, side: str = "right") -> tuple:
    """``(image, camera_info, glove)`` publishers on the topics a sync node reads, discovered."""
    from sensor_msgs.msg import CameraInfo, Image

    from avi_ht_ros.msg import GloveSample
    from avi_ht_ros.nodes import base

    publishers = (h.probe.create_publisher(Image, "/head_camera/image_raw", base.SENSOR_QOS),
                  h.probe.create_publisher(CameraInfo, "/head_camera/camera_info", base.SENSOR_QOS),
                  h.probe.create_publisher(GloveSample, f"/{side}/glove/samples", base.GLOVE_QOS))
    h.spin_for(0.5)  # discovery
    return publishers
