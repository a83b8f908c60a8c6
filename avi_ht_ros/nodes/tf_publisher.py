"""TF output for our nodes: ``tf2_ros`` broadcasters on a ROS install, same wire behaviour otherwise.

Transforms are built by :mod:`avi_ht_ros.io.convert` (``transform_stamped_msg``).
With ``tf2_ros`` importable (any real ROS 2 install) they go through
``TransformBroadcaster``/``StaticTransformBroadcaster``. Where ROS comes from
PyPI wheels there is no ``tf2_ros``; then the same ``tf2_msgs/TFMessage`` is
published on ``/tf`` (depth 100) and ``/tf_static`` (transient local, the full
accumulated set, as the static broadcaster does).
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from tf2_msgs.msg import TFMessage

from avi_ht_ros.common import topics
from avi_ht_ros.io import convert

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TfPublisher:
    def __init__(self, node: Node):
        self._static: dict[str, Any] = {}  # child frame -> rosbags TransformStamped
        try:
            import tf2_ros
        except ImportError:
            tf2_ros = None
        self.uses_tf2_ros = tf2_ros is not None
        if tf2_ros is not None:
            self._broadcaster = tf2_ros.TransformBroadcaster(node)
            self._static_broadcaster = tf2_ros.StaticTransformBroadcaster(node)
        else:
            self._tf_pub = node.create_publisher(TFMessage, topics.TF, TF_QOS)
            self._tf_static_pub = node.create_publisher(TFMessage, topics.TF_STATIC, TF_STATIC_QOS)

    def send(self, transforms: list[Any]) -> None:
        """Publish dynamic transforms (rosbags ``TransformStamped`` objects)."""
        if not transforms:
            return
        data = convert.serialize(convert.tf_message(transforms))
        if self.uses_tf2_ros:
            self._broadcaster.sendTransform(list(deserialize_message(data, TFMessage).transforms))
        else:
            self._tf_pub.publish(data)

    def send_static(self, transforms: list[Any]) -> None:
        """Add/replace static transforms; the whole set is (re)published latched."""
        for transform in transforms:
            self._static[transform.child_frame_id] = transform
        data = convert.serialize(convert.tf_message(list(self._static.values())))
        if self.uses_tf2_ros:
            self._static_broadcaster.sendTransform(list(deserialize_message(data, TFMessage).transforms))
        else:
            self._tf_static_pub.publish(data)
