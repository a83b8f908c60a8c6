"""Time synchronizer node: one SyncedFrame (image + aligned IMU window) per camera frame.

Thin wrapper over :class:`avi_ht_ros.tracker.sync.ImuWindowSynchronizer`, built by
:func:`avi_ht_ros.tracker.sync.live_synchronizer` (the same construction the dataset builder
and the evaluation replay bags through), and
:class:`avi_ht_ros.tracker.time_offset.TimeOffsetEstimator`.

Subscribes: ``/head_camera/image_raw``, ``/head_camera/camera_info``,
``glove/samples``, ``hand_pose`` (wrist rotation for the online offset).
Publishes: ``synced_frame`` (built only while it has a subscriber), ``glove/time_offset``,
``/diagnostics``; in ``sync_fusion_node`` it hands every synchronized frame to the fusion node in
the same process (:attr:`SyncNode.frame_sink`) instead of through the topic.
Run it in the hand's namespace (``/left`` or ``/right``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from rclpy.node import Node

from avi_ht_ros.common import topics
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.params import param
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.io import convert
from avi_ht_ros.msg import GloveSample, HandPose, TimeOffset
from avi_ht_ros.nodes import base
from avi_ht_ros.tracker.sync import ImuWindow, SyncConfig, live_synchronizer
from avi_ht_ros.tracker.time_offset import TimeOffsetConfig, TimeOffsetEstimator
from sensor_msgs.msg import CameraInfo, Image
from diagnostic_msgs.msg import DiagnosticArray
from avi_ht_ros.msg import SyncedFrame


@dataclasses.dataclass(frozen=True)
class SyncNodeParams:
    side: str = param("right", "hand whose glove this synchronizer serves", choices=topics.SIDES)
    glove_config: str = param("glove_12imu.yaml", "glove description (config/ name or path)")
    time_offset_mode: str = param("online", "camera-glove offset: 'fixed' (sync.time_offset_s) or 'online' "
                                  "(estimated from gyro vs vision wrist rotation)", choices=("fixed", "online"))
    poll_rate_hz: float = param(100.0, "how often frames waiting for late glove data are checked against "
                                "max_wait_s (a frame whose window is complete goes out on the glove sample that "
                                "completes it)", range=(10.0, 2000.0), unit="Hz")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics and time-offset messages",
                                        range=(0.1, 60.0), unit="s")
    realtime_priority: int = base.realtime_priority_param(30)


PARAMETER_SETS = (("", SyncNodeParams), ("sync.", SyncConfig), ("time_offset.", TimeOffsetConfig))


class SyncNode(Node):
    def __init__(self, **kwargs):
        super().__init__("glove_camera_sync", **kwargs)
        self.params, self.sync_config, self.offset_config = base.declare_parameter_sets(self, PARAMETER_SETS)
        glove = GloveModel.from_yaml(config_path(self.params.glove_config))
        self.hand_back_index = glove.site_index("hand_back")
        self.synchronizer = live_synchronizer(self.sync_config, glove)
        self.offset_estimator = TimeOffsetEstimator(self.offset_config, self.sync_config.time_offset_s)
        convert.prepare(convert.IMAGE, convert.CAMERA_INFO, convert.GLOVE_SAMPLE, convert.HAND_POSE,
                        convert.SYNCED_FRAME, convert.TIME_OFFSET, "diagnostic_msgs/msg/DiagnosticArray")
        self.camera_info = None
        self.glove_frame = f"{self.params.side}_glove"
        self.frames_without_camera_info = 0
        self.published = 0
        self.rate = base.RateMeter()
        # in-process consumer of every synchronized frame, called as sink(image_msg, camera_info_msg,
        # ImuWindow) before the topic is published (sync_fusion_node: the fusion node's tracking thread,
        # FusionNode.start_handoff_worker)
        self.frame_sink: Callable[[Any, Any, ImuWindow], None] | None = None
        # in-process consumer of a camera frame that must wait for its glove window, called as
        # prefetch(image_msg, camera_info_msg) when it arrives (sync_fusion_node: the fusion node
        # runs the frame's vision half meanwhile)
        self.frame_prefetch: Callable[[Any, Any], None] | None = None

        self.synced_pub = self.create_publisher(SyncedFrame, topics.SYNCED_FRAME, base.RELIABLE_QOS)
        self.offset_pub = self.create_publisher(TimeOffset, topics.TIME_OFFSET, base.RELIABLE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, base.RELIABLE_QOS)
        self.create_subscription(Image, topics.IMAGE, self.on_image, base.SENSOR_QOS, raw=True)
        self.create_subscription(CameraInfo, topics.CAMERA_INFO, self.on_camera_info, base.SENSOR_QOS, raw=True)
        self.create_subscription(GloveSample, topics.GLOVE_SAMPLES, self.on_glove, base.GLOVE_QOS, raw=True)
        self.create_subscription(HandPose, topics.HAND_POSE, self.on_hand_pose, base.RELIABLE_QOS, raw=True)
        self.create_timer(1.0 / self.params.poll_rate_hz, self.poll)
        self.create_timer(self.params.diagnostics_period_s, self.publish_status)
        # the one writable parameter: rclpy has checked type and range before this runs
        self.add_post_set_parameters_callback(self.on_parameters_set)
        self.get_logger().info(
            f"synchronizing {glove.num_sensors} IMUs of the {self.params.side} glove, window "
            f"{self.sync_config.window_length}, offset {self.params.time_offset_mode}")

    # -- callbacks: convert, hand to the core -------------------------------------------
    def on_camera_info(self, data: bytes) -> None:
        self.camera_info = convert.deserialize(data, convert.CAMERA_INFO)

    def on_image(self, data: bytes) -> None:
        image = convert.deserialize(data, convert.IMAGE)
        self.synchronizer.add_camera_frame(convert.stamp_ns_of(image.header.stamp), image, base.now_ns(self))
        self.poll()
        if self.frame_prefetch is not None and self.camera_info is not None and self.synchronizer.has_pending_frames:
            self.frame_prefetch(image, self.camera_info)   # this frame waits for glove samples still to come

    def on_glove(self, data: bytes) -> None:
        try:
            stamp_ns, accel, gyro, status = convert.glove_arrays_from_msg(convert.deserialize(data, convert.GLOVE_SAMPLE))
        except ValueError as exc:
            self.get_logger().warning(f"dropping malformed glove sample: {exc}", throttle_duration_sec=5.0)
            return
        if accel.shape[0] != self.synchronizer.num_imus:
            self.get_logger().warning(f"dropping glove sample with {accel.shape[0]} IMUs "
                                   f"(configured {self.synchronizer.num_imus})", throttle_duration_sec=5.0)
            return
        self.synchronizer.add_glove_sample(stamp_ns, accel, gyro, status)
        self.offset_estimator.add_glove_gyro(stamp_ns, gyro[self.hand_back_index])
        if self.synchronizer.has_pending_frames:
            self.poll()       # the sample that completes a waiting frame's window sends it at once

    def on_hand_pose(self, data: bytes) -> None:
        pose = convert.deserialize(data, convert.HAND_POSE)
        if pose.tracking_state in (HandPose.TRACKING_OK, HandPose.TRACKING_VISION_ONLY, HandPose.TRACKING_DEGRADED):
            self.offset_estimator.add_wrist_orientation(convert.stamp_ns_of(pose.header.stamp),
                                                        convert.xyzw_of(pose.wrist_pose.orientation))

    def on_parameters_set(self, parameters) -> None:
        for parameter in parameters:
            if parameter.name == "sync.time_offset_s":
                offset_s = float(parameter.value)
                self.synchronizer.set_time_offset(offset_s)
                # online mode: the estimate restarts from the operator's value
                self.offset_estimator = TimeOffsetEstimator(self.offset_config, offset_s)
                self.get_logger().info(f"sync.time_offset_s set to {offset_s:.4f} s at runtime")

    def poll(self) -> None:
        for result in self.synchronizer.poll(base.now_ns(self)):
            if self.camera_info is None:
                self.frames_without_camera_info += 1
                continue
            if self.frame_sink is not None:
                self.frame_sink(result.payload, self.camera_info, result.window)
            # the ~300 kB message is built only for a subscriber (the fusion node in another process,
            # a recorder, a probe): with none (the fusion node in this process) it would go nowhere
            if self.synced_pub.get_subscription_count() > 0:
                online = self.params.time_offset_mode == "online"
                confidence = self.offset_estimator.estimate.confidence if online else 1.0
                msg = convert.synced_frame_msg(result.payload, self.camera_info, self.params.side, result.window,
                                               confidence)
                base.publish_serialized(self.synced_pub, msg)
            self.published += 1
            self.rate.tick()

    def publish_status(self) -> None:
        now = base.now_ns(self)
        online = self.params.time_offset_mode == "online"
        estimate = self.offset_estimator.update(now) if online else self.offset_estimator.estimate
        if online:
            self.synchronizer.set_time_offset(estimate.applied_offset_s)
        base.publish_serialized(self.offset_pub, convert.time_offset_msg(
            now, self.glove_frame, self.synchronizer.time_offset_s, estimate.confidence if online else 1.0,
            estimate.last_raw_offset_s, estimate.last_peak_correlation, estimate.accepted_updates,
            estimate.rejected_updates, online))
        stats = dataclasses.asdict(self.synchronizer.stats)
        stats.update(published=self.published, frames_without_camera_info=self.frames_without_camera_info,
                     rate_hz=f"{self.rate.rate():.1f}", time_offset_s=f"{self.synchronizer.time_offset_s:.4f}",
                     scheduling=base.scheduling_value(self))
        dropped = self.synchronizer.stats.frames_dropped + self.frames_without_camera_info
        level = 0 if dropped == 0 and self.published else 1
        message = "ok" if level == 0 else (f"{dropped} frames dropped" if self.published else "no output yet")
        status = base.diagnostic_status(f"{self.get_name()}: {self.params.side} glove/camera sync",
                                        self.glove_frame, level, message, stats)
        base.publish_serialized(self.diag_pub, base.diagnostic_array(now, [status]))


def main(args=None) -> int:
    return base.run_node(SyncNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
