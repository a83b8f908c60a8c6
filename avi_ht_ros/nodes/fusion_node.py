"""Fusion inference node: SyncedFrame -> HandPose, human JointState, TF, markers, diagnostics.

Thin wrapper over :class:`avi_ht_ros.tracker.tracker.HandTracker` (the same
online tracker evaluation runs): the crop follows the previous estimate, the
recurrent state is carried frame to frame, missing glove data degrades to
vision-only. Optional One-Euro smoothing of the published pose.

Subscribes ``synced_frame`` (inside ``sync_fusion_node`` the sync node in the same process hands
each synchronized frame to its tracking thread instead: :meth:`FusionNode.start_handoff_worker`);
publishes ``hand_pose``, ``hand_joint_states`` (the 22 human joints), TF (camera →
``<side>_wrist`` → every bone), static TF of the glove IMU mounts, ``hand_markers`` and
``/diagnostics`` (rate, latency, dropped frames, inference time).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from visualization_msgs.msg import MarkerArray

from avi_ht_ros.common import topics
from avi_ht_ros.common.camera import PinholeCamera
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import JOINT_NAMES, forward_kinematics_numpy
from avi_ht_ros.common.params import param
from avi_ht_ros.common.paths import config_path, share_path
from avi_ht_ros.io import convert, hand_viz
from avi_ht_ros.models.checkpoint import load_checkpoint
from avi_ht_ros.models.config import INFERENCE_BACKENDS
from avi_ht_ros.models.onnx_backend import BackendError, OnnxFrameModel, inference_model, runtime_name, splits_frame
from avi_ht_ros.msg import HandPose, SyncedFrame
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.tf_publisher import TfPublisher
from avi_ht_ros.tracker.one_euro import OneEuroConfig, OneEuroFilter
from avi_ht_ros.tracker.preprocess import window_dict
from avi_ht_ros.tracker.sync import ImuWindow
from avi_ht_ros.tracker.tracker import HandTracker, PreparedFrame, TrackerConfig

# The newest frame only: if inference falls behind, older frames are dropped (and counted
# from the gaps in camera stamps) rather than queued, which would only add latency.
LATEST_FRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)


@dataclasses.dataclass(frozen=True)
class FusionNodeParams:
    side: str = param("right", "hand this node tracks", choices=topics.SIDES)
    model_path: str = param("", "model checkpoint ('' = the shipped models/avi_ht.pt)")
    glove_config: str = param("glove_12imu.yaml", "glove description (config/ name or path)")
    hand_scale: float = param(1.0, "user's hand size relative to the reference hand (bone lengths)",
                              range=(0.7, 1.3))
    torch_threads: int = param(1, "CPU threads for inference (PyTorch or ONNX Runtime)", range=(1, 64))
    inference_backend: str = param("auto", "runtime of the network: onnxruntime (the model exported at start-up, "
                                           "checked against PyTorch), torch, or auto (onnxruntime when installed "
                                           "and its check passes, else torch)", choices=INFERENCE_BACKENDS)
    smoothing: bool = param(True, "One-Euro smoothing of the published landmarks and joint angles")
    publish_tf: bool = param(True, "publish TF of the wrist and every bone")
    publish_markers: bool = param(True, "publish RViz markers (skeleton, sigma, IMU attention), built only while "
                                        "the topic has a subscriber")
    prefetch_vision: bool = param(True, "sync_fusion_node only: run a frame's crop and vision half while the "
                                        "synchronizer still waits for its glove window (same estimate, sooner)")
    latency_log: str = param("", base.latency_log_description("its hand pose"))
    realtime_priority: int = base.realtime_priority_param(30)


PARAMETER_SETS = (("", FusionNodeParams), ("tracker.", TrackerConfig), ("smoothing.", OneEuroConfig))


class FusionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("hand_fusion", **kwargs)
        self.params, tracker_config, smoothing_config = base.declare_parameter_sets(self, PARAMETER_SETS)
        torch.set_num_threads(self.params.torch_threads)
        self.glove = GloveModel.from_yaml(config_path(self.params.glove_config))
        model_path = self.params.model_path or str(share_path("models", "avi_ht.pt"))
        loaded = load_checkpoint(model_path, glove=self.glove)
        self.model_type = loaded.config.type
        self.tracker_config = tracker_config
        self.tracker: HandTracker | None = None
        self._camera_info_key = None
        self.landmark_filter = OneEuroFilter(smoothing_config)
        self.angle_filter = OneEuroFilter(smoothing_config)
        self.model, self.backend = inference_model(loaded.model, self.params.inference_backend,
                                                   num_threads=self.params.torch_threads, sides=(self.params.side,))
        self.side = self.params.side
        self.handoff: base.LatestWorker | None = None
        self._prefetched: tuple[int, np.ndarray, PreparedFrame | None] | None = None  # (stamp, image, vision half)
        self.prefetched_frames = 0
        self.frames = 0
        self.dropped = 0
        self.rejected = 0
        self.inference_errors = 0
        self.marker_arrays = 0
        self.last_stamp_ns: int | None = None
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=600)       # stamp -> pose published
        self.input_latency_ms: collections.deque[float] = collections.deque(maxlen=600)  # stamp -> frame here
        self.inference_ms: collections.deque[float] = collections.deque(maxlen=600)
        self.states: collections.Counter = collections.Counter()
        self.rate = base.RateMeter()
        self.joint_names = [f"{self.side}_{name}" for name in JOINT_NAMES]
        convert.prepare(convert.SYNCED_FRAME, convert.HAND_POSE, convert.JOINT_STATE, hand_viz.MARKER_ARRAY,
                        convert.TF_MESSAGE, "diagnostic_msgs/msg/DiagnosticArray")

        self.pose_pub = self.create_publisher(HandPose, topics.HAND_POSE, base.RELIABLE_QOS)
        self.joint_pub = self.create_publisher(JointState, topics.HAND_JOINT_STATES, base.RELIABLE_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, topics.HAND_MARKERS, base.RELIABLE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, base.RELIABLE_QOS)
        self.latency_log = base.open_latency_log(self.params.latency_log)
        self.tf = TfPublisher(self)
        self.tf.send_static(hand_viz.imu_mount_transforms(self.glove, self.side, self.params.hand_scale))
        # (sync_fusion_node destroys it: there the sync node calls on_synced, and a subscription here
        # would make it build every frame's message for this node)
        self.synced_subscription = self.create_subscription(SyncedFrame, topics.SYNCED_FRAME, self.on_synced_frame,
                                                            LATEST_FRAME_QOS, raw=True)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"{self.model_type} model {model_path} tracking the {self.side} hand "
                               f"(inference: {self.backend})")

    def _tracker_for(self, info) -> HandTracker:
        key = (int(info.width), int(info.height), tuple(np.asarray(info.k).tolist()), tuple(np.asarray(info.d).tolist()))
        if self.tracker is None or key != self._camera_info_key:
            camera = PinholeCamera.from_camera_info(info)
            self.tracker = HandTracker(self.model, camera, self.glove, self.side, self.tracker_config,
                                       hand_scale=self.params.hand_scale)
            self._camera_info_key = key
        return self.tracker

    def on_synced_frame(self, data: bytes) -> None:
        """A SyncedFrame from the ``synced_frame`` topic (the sync node in another process)."""
        started = time.perf_counter()
        msg = convert.deserialize(data, convert.SYNCED_FRAME)
        try:
            image, window = convert.image_from_msg(msg.image), convert.window_arrays_from_synced_frame(msg)
        except ValueError as exc:
            self.reject(exc)
            return
        self.track(started, msg.header, image, window, msg.camera_info)

    def on_synced(self, image_msg, camera_info, window: ImuWindow) -> None:
        """A synchronized frame handed over in-process (``sync_fusion_node``): the image and camera
        info messages and the :class:`ImuWindow` the synchronizer built, no (de)serialization."""
        started = time.perf_counter()
        stamp_ns = convert.stamp_ns_of(image_msg.header.stamp)
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == stamp_ns:
            image, prepared = prefetched[1], prefetched[2]
        else:
            prepared = None
            try:
                image = convert.image_from_msg(image_msg)
            except ValueError as exc:
                self.reject(exc)
                return
        self.track(started, image_msg.header, image, window_dict(window), camera_info, prepared)

    def on_early_frame(self, image_msg, camera_info) -> None:
        """A camera frame whose glove window is not complete yet (``sync_fusion_node``): its crop
        and the network's vision half now (:meth:`HandTracker.prepare`), on the tracking thread
        while nothing else is to do; :meth:`on_synced` finishes the frame when the window is there."""
        stamp_ns = convert.stamp_ns_of(image_msg.header.stamp)
        if self.last_stamp_ns is not None and stamp_ns <= self.last_stamp_ns:
            return   # its frame was tracked (or overtaken) already
        try:
            image = convert.image_from_msg(image_msg)
            prepared = self._tracker_for(camera_info).prepare(stamp_ns, image)
        except (RuntimeError, ValueError):
            return   # the frame is run whole when it comes, and rejected or counted there
        self._prefetched = (stamp_ns, image, prepared)
        self.prefetched_frames += prepared is not None

    def start_handoff_worker(self) -> tuple[Callable[[Any, Any, ImuWindow], None], Callable[[Any, Any], None] | None]:
        """For ``sync_fusion_node``: a frame sink for the sync node in this process, and (parameter
        ``prefetch_vision``, a model with vision and IMU halves) a sink for frames still waiting
        for their glove window. Frames are tracked on a worker thread, the newest first (one not
        yet taken when a newer one comes is skipped, and counted in ``dropped_frames`` like a frame
        the ``synced_frame`` subscription's keep-last-1 queue overwrites), beside the sync node's
        callbacks; a waiting frame's vision half runs there while no complete frame waits."""
        prefetch = self.params.prefetch_vision and splits_frame(self.model)
        if prefetch and isinstance(self.model, OnnxFrameModel):
            try:
                self.model.prepare(self.side, split=True)
            except BackendError as exc:
                self.get_logger().warning(f"frames are run whole (no vision prefetch): {exc}")
                prefetch = False
        if self.handoff is None:
            self.handoff = base.LatestWorker(self.on_synced, self.get_logger(), name="fusion-tracking",
                                             handle_background=self.on_early_frame if prefetch else None)
        return self.handoff.offer, (self.handoff.offer_background if prefetch else None)

    def destroy_node(self):
        if self.handoff is not None:
            self.handoff.stop()
        if self.latency_log is not None:
            self.latency_log.close()
        return super().destroy_node()

    def reject(self, reason: Exception) -> None:
        self.rejected += 1
        self.get_logger().warning(f"rejected synced frame: {reason}", throttle_duration_sec=2.0)

    def track(self, started: float, header, image: np.ndarray, window: dict, camera_info,
              prepared: PreparedFrame | None = None) -> None:
        """Track one synchronized frame and publish the estimate (``started``: perf_counter at arrival;
        ``prepared``: its vision half, run while it waited for the window)."""
        stamp_ns = convert.stamp_ns_of(header.stamp)
        self.input_latency_ms.append((base.now_ns(self) - stamp_ns) / 1e6)
        if self.last_stamp_ns is not None:
            if stamp_ns <= self.last_stamp_ns:
                self.rejected += 1  # out of order: never track backwards
                return
            gap = (stamp_ns - self.last_stamp_ns) / 1e9
            self.dropped += max(0, int(round(gap * 60.0)) - 1)
        self.last_stamp_ns = stamp_ns
        try:
            tracker = self._tracker_for(camera_info)
        except ValueError as exc:
            self.reject(exc)
            return
        if window["status"].shape[1] != self.glove.num_sensors:
            window = None  # another glove's data: track vision-only rather than mis-assign sensors
        try:
            estimate = tracker.step(stamp_ns, image, window, prepared=prepared)
        except (RuntimeError, ValueError) as exc:  # e.g. a runtime error inside the network: drop the frame,
            self.inference_errors += 1            # restart the track, keep the node serving
            tracker.reset()
            self.get_logger().error(f"inference failed on the frame at {stamp_ns} ns ({self.inference_errors} so "
                                    f"far): {type(exc).__name__}: {exc}", throttle_duration_sec=2.0)
            return
        self.inference_ms.append((time.perf_counter() - started) * 1e3)
        published_ns = self.publish_estimate(header.frame_id, estimate)
        self.latency_ms.append((published_ns - stamp_ns) / 1e6)
        base.record_latency(self, self.latency_log, stamp_ns, published_ns)
        self.frames += 1
        self.states[estimate.tracking_state] += 1
        self.rate.tick()

    def publish_estimate(self, camera_frame: str, estimate) -> int:
        """Publish the estimate (the hand pose first); returns when the hand pose was published (ns)."""
        stamp = estimate.stamp_ns
        landmarks, angles = estimate.landmarks, estimate.joint_angles
        if self.params.smoothing and estimate.tracking_state != HandPose.TRACKING_LOST:
            t = stamp / 1e9
            landmarks = self.landmark_filter(t, landmarks)
            angles = self.angle_filter(t, angles).astype(np.float32)
        elif estimate.tracking_state == HandPose.TRACKING_LOST:
            self.landmark_filter.reset()
            self.angle_filter.reset()
        quat = Rotation.from_matrix(estimate.wrist_rotation, assume_valid=True).as_quat()  # orthonormal (network head)
        pose = convert.hand_pose_msg(stamp, camera_frame, self.side, estimate.tracking_state, angles,
                                     estimate.hand_scale, estimate.wrist_translation, quat, landmarks,
                                     estimate.sigma, estimate.imu_attention, estimate.vision_weight)
        base.publish_serialized(self.pose_pub, pose)
        published_ns = base.now_ns(self)
        base.publish_serialized(self.joint_pub, convert.joint_state_msg(stamp, f"{self.side}_wrist",
                                                                        self.joint_names, angles))
        if estimate.tracking_state == HandPose.TRACKING_LOST:
            return published_ns
        fk = forward_kinematics_numpy(angles, estimate.wrist_rotation, estimate.wrist_translation,
                                      estimate.hand_scale, self.side)
        if self.params.publish_tf:
            self.tf.send(hand_viz.hand_transforms(stamp, self.side, camera_frame, estimate.wrist_rotation,
                                                  estimate.wrist_translation, fk.bone_rotations, fk.bone_origins))
        # Markers are for RViz: ~0.6 ms per frame to build, so only while someone subscribes.
        if self.params.publish_markers and self.marker_pub.get_subscription_count() > 0:
            _, imu_positions = self.glove.sensor_poses(fk)
            markers = hand_viz.hand_markers(stamp, camera_frame, self.side, landmarks, estimate.sigma, imu_positions,
                                            estimate.imu_attention, estimate.vision_weight)
            base.publish_serialized(self.marker_pub, markers)
            self.marker_arrays += 1
        return published_ns

    def publish_diagnostics(self) -> None:
        # (copied first: in sync_fusion_node the tracking thread appends to them meanwhile)
        latency = np.array(list(self.latency_ms) or [0.0])
        input_latency = np.array(list(self.input_latency_ms) or [0.0])
        inference = np.array(list(self.inference_ms) or [0.0])
        names = {HandPose.TRACKING_LOST: "lost", HandPose.TRACKING_OK: "ok", HandPose.TRACKING_VISION_ONLY:
                 "vision_only", HandPose.TRACKING_IMU_ONLY: "imu_only", HandPose.TRACKING_DEGRADED: "degraded"}
        values = {"model": self.model_type, "inference_backend": runtime_name(self.model), "frames": self.frames,
                  "rate_hz": f"{self.rate.rate():.1f}",
                  "dropped_frames": self.dropped, "rejected_frames": self.rejected,
                  "inference_errors": self.inference_errors,
                  # camera stamp -> hand pose published
                  "latency_ms_p50": f"{np.percentile(latency, 50):.2f}",
                  "latency_ms_p99": f"{np.percentile(latency, 99):.2f}",
                  # camera stamp -> synchronized frame in this node (the sync node's wait for the glove
                  # window, plus the DDS hop when the two run as separate processes)
                  "input_latency_ms_p50": f"{np.percentile(input_latency, 50):.2f}",
                  "input_latency_ms_p99": f"{np.percentile(input_latency, 99):.2f}",
                  # frames whose vision half ran while they waited for the glove window (sync_fusion_node)
                  "vision_prefetched": self.prefetched_frames,
                  "inference_ms_p50": f"{np.percentile(inference, 50):.2f}",
                  "inference_ms_p99": f"{np.percentile(inference, 99):.2f}",
                  "scheduling": base.scheduling_value(self)}
        values.update({f"state.{names[k]}": v for k, v in dict(self.states).items()})
        level = 0 if self.frames and self.dropped == 0 and self.inference_errors == 0 else 1
        if level == 0:
            message = "ok"
        elif self.inference_errors:
            message = f"{self.inference_errors} frames failed in inference"
        else:
            message = f"{self.dropped} frames dropped" if self.frames else "no frames yet"
        status = base.diagnostic_status(f"{self.get_name()}: {self.side} hand fusion", f"{self.side}_wrist", level,
                                        message, values)
        base.publish_serialized(self.diag_pub, base.diagnostic_array(base.now_ns(self), [status]))


def main(args=None) -> int:
    return base.run_node(FusionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
