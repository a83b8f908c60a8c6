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
