"""Camera node: mono8 images + CameraInfo from a device, a video, an image folder or the simulator.

Publishes ``/head_camera/image_raw`` and ``/head_camera/camera_info`` stamped
with the acquisition time, in the optical frame (REP-103), the static TF of
the camera mount (``head`` → ``head_camera`` → ``head_camera_optical_frame``)
and ``/diagnostics``. With the simulated source it also publishes the
simulator's ground truth (``/<side>/hand_ground_truth``), restamped like the
images. Frames are read by a worker thread (sources block); errors of a live
device are logged, counted and retried, never fatal.
"""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from avi_ht_ros.common import topics
from avi_ht_ros.common.camera import PinholeCamera, load_camera_mount, load_camera_yaml
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.params import param
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.driver.camera_source import (CameraSource, CameraSourceError, ImageFolderSource,
                                             OpenCVDeviceSource, SimBagSource, VideoFileSource)
from avi_ht_ros.io import convert
from avi_ht_ros.msg import HandGroundTruth
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.tf_publisher import TfPublisher


@dataclasses.dataclass(frozen=True)
class CameraNodeParams:
    source: str = param("sim", "frame source", choices=("sim", "device", "video", "folder"))
    device: str = param("0", "OpenCV device index or path (source=device)")
    video_path: str = param("", "video file (source=video)")
    folder_path: str = param("", "folder of images, sorted by name (source=folder)")
    sim_bag: str = param("", "bag written by `avi-ht simulate` (source=sim)")
    fps: float = param(60.0, "frame rate for video/folder sources and the device request", range=(1.0, 500.0),
                       unit="Hz")
    width: int = param(0, "requested device width (0: device default)", range=(0, 8192))
    height: int = param(0, "requested device height (0: device default)", range=(0, 8192))
    latency_s: float = param(0.0, "device grab-to-acquisition latency subtracted from stamps",
                             range=(0.0, 1.0), unit="s")
    loop: bool = param(True, "restart video/folder at the end")
    calibration_file: str = param("camera_sim.yaml", "camera calibration YAML (ROS camera_info format, "
                                  "optional 'mount' block for the head->camera TF)")
    frame_id: str = param(topics.CAMERA_OPTICAL_FRAME, "optical frame id of the images (REP-103)")
    publish_ground_truth: bool = param(True, "publish the simulator's ground truth (source=sim)")
    reconnect_period_s: float = param(1.0, "retry period after a device error", range=(0.05, 60.0), unit="s")
    realtime_priority: int = base.realtime_priority_param(30)


PARAMETER_SETS = (("", CameraNodeParams),)


def make_source(params: CameraNodeParams) -> CameraSource:
    """The configured frame source (errors name the parameter at fault)."""
    if params.source == "device":
        return OpenCVDeviceSource(params.device, params.width, params.height, params.fps, params.latency_s)
    if params.source == "video":
        if not params.video_path:
            raise ConfigError("parameter 'video_path'", "required for source=video")
        return VideoFileSource(params.video_path, params.fps, params.loop)
    if params.source == "folder":
        if not params.folder_path:
            raise ConfigError("parameter 'folder_path'", "required for source=folder")
        return ImageFolderSource(params.folder_path, params.fps, params.loop)
    if not params.sim_bag:
        raise ConfigError("parameter 'sim_bag'", "required for source=sim (make one with `avi-ht simulate`)")
    truths = tuple(topics.hand_topic(s, topics.HAND_GROUND_TRUTH) for s in topics.SIDES)
    return SimBagSource(params.sim_bag, topics.IMAGE, truths if params.publish_ground_truth else ())


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__("head_camera", **kwargs)
        (self.params,) = base.declare_parameter_sets(self, PARAMETER_SETS)
        calibration = config_path(self.params.calibration_file)
        self.camera: PinholeCamera = load_camera_yaml(calibration)
        self.mount = load_camera_mount(calibration)
        self.info_fields = self.camera.to_camera_info_fields()
        convert.prepare(convert.IMAGE, convert.CAMERA_INFO, convert.HAND_GROUND_TRUTH,
                        "diagnostic_msgs/msg/DiagnosticArray", convert.TF_MESSAGE)
        # raw streams are published reliable: sensor-data (best-effort) subscribers match,
        # and a recorder gets every frame even when starved of CPU for seconds (base.RAW_IMAGE_QOS)
        self.image_pub = self.create_publisher(Image, topics.IMAGE, base.RAW_IMAGE_QOS)
        self.info_pub = self.create_publisher(CameraInfo, topics.CAMERA_INFO, base.RAW_CAMERA_QOS)
        self.truth_pubs = {t: self.create_publisher(HandGroundTruth, t, base.RAW_CAMERA_QOS)
                           for t in (topics.hand_topic(s, topics.HAND_GROUND_TRUTH) for s in topics.SIDES)}
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, base.RELIABLE_QOS)
        self.tf = TfPublisher(self)
        self.publish_mount()
        self.source = make_source(self.params)
        self.frames = 0
        self.errors = 0
        self.size_mismatches = 0
        self.last_error = ""
        self.rate = base.RateMeter()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self.run_source, name="camera_source", daemon=True)
        self._worker.start()
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"camera source '{self.params.source}', {self.camera.width}x{self.camera.height}, "
                               f"frame '{self.params.frame_id}'")

    def publish_mount(self) -> None:
        parent_from_body = self.mount.parent_from_body()
        body_from_optical = np.linalg.inv(parent_from_body) @ self.mount.parent_from_optical()
        self.tf.send_static([
            convert.transform_stamped_msg(0, self.mount.parent_frame, self.mount.child_frame, parent_from_body[:3, 3],
                                          Rotation.from_matrix(parent_from_body[:3, :3]).as_quat()),
            convert.transform_stamped_msg(0, self.mount.child_frame, self.params.frame_id, body_from_optical[:3, 3],
                                          Rotation.from_matrix(body_from_optical[:3, :3]).as_quat()),
        ])

    def run_source(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.next_frame()
            except CameraSourceError as exc:
                self.errors += 1
                self.last_error = str(exc)
                self.get_logger().error(f"camera source error (retrying): {exc}", throttle_duration_sec=5.0)
                self._stop.wait(self.params.reconnect_period_s)
                if self.params.source == "device":
                    try:
                        self.source.close()
                        self.source = make_source(self.params)
                    except (CameraSourceError, ConfigError) as reopen_error:
                        self.last_error = str(reopen_error)
                continue
            if frame is None:
                self.get_logger().info("camera source finished")
                return
            try:
                self.publish_frame(frame)
            except Exception:  # noqa: BLE001 - rclpy's RCLError once SIGINT has shut the context down
                if not self.context.ok():
                    return         # shutting down: destroy_node() stops this thread anyway
                raise

    def publish_frame(self, frame) -> None:
        height, width = frame.image.shape
        if (width, height) != (self.camera.width, self.camera.height):
            self.size_mismatches += 1  # calibration does not describe this image: never publish a wrong pair
            self.get_logger().error(f"image {width}x{height} does not match the calibration "
                                    f"{self.camera.width}x{self.camera.height}; frame dropped",
                                    throttle_duration_sec=5.0)
            return
        stamp = frame.stamp_ns
        base.publish_serialized(self.image_pub, convert.image_msg(stamp, self.params.frame_id, frame.image))
        base.publish_serialized(self.info_pub, convert.camera_info_msg(stamp, self.params.frame_id, self.info_fields))
        for topic, truth in frame.extras.get("truth", {}).items():
            truth.header.stamp = convert.stamp_msg(stamp)
            truth.pose.header.stamp = convert.stamp_msg(stamp)
            base.publish_serialized(self.truth_pubs[topic], truth)
        self.frames += 1
        self.rate.tick()

    def publish_diagnostics(self) -> None:
        level = 0 if self.errors == 0 and self.size_mismatches == 0 else 1
        if self.frames == 0 and self.errors:
            level = 2
        status = base.diagnostic_status(
            f"{self.get_name()}: camera", self.params.frame_id, level, self.last_error or "ok",
            {"source": self.params.source, "frames": self.frames, "rate_hz": f"{self.rate.rate():.1f}",
             "errors": self.errors, "size_mismatches": self.size_mismatches,
             "scheduling": base.scheduling_value(self)})
        base.publish_serialized(self.diag_pub, base.diagnostic_array(base.now_ns(self), [status]))

    def destroy_node(self):
        self._stop.set()
        self._worker.join(timeout=2.0)
        self.source.close()
        super().destroy_node()


def main(args=None) -> int:
    return base.run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
