"""Glove IMU driver node: serial glove protocol -> ``glove/samples`` at 200 Hz.

Thin wrapper over :mod:`avi_ht_ros.driver`: the serial link (reconnecting)
feeds the protocol parser; each frame's device time is mapped to ROS time
(offset + drift), each IMU is classified (OK/STALE/SATURATED/DEAD/INVALID),
the stored mounting calibration is applied, and a ``GloveSample`` is
published from the reader thread. Health, parser, link and clock figures go
to ``/diagnostics``. ``glove/calibrate`` (std_srvs/Trigger): hold the gloved
hand flat, palm down and still; the node records ``calibration_duration_s``,
solves per-IMU mounting corrections and gyro biases, saves them to
``calibration_file`` and applies them.

With ``sim_bag`` set, a simulated glove (``driver.sim_device``) replays that
bag's IMU stream through a pseudo-terminal and the node reads it exactly like
hardware (same parser, clock mapping and health path).
"""
from __future__ import annotations

import dataclasses
import pathlib
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from avi_ht_ros.common import topics
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.params import param
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.driver.calibration import (MountingCalibration, StillHandCollector, solve_mounting_calibration)
from avi_ht_ros.driver.clock import ClockMapperConfig, DeviceClockMapper
from avi_ht_ros.driver.health import HealthConfig, SensorHealthMonitor, zero_unusable
from avi_ht_ros.driver.protocol import HAND_LEFT, HAND_RIGHT, FrameParser, GloveFrame
from avi_ht_ros.driver.serial_link import SerialGloveLink, SerialLinkConfig
from avi_ht_ros.driver.sim_glove import BagGloveSource
from avi_ht_ros.io import convert
from avi_ht_ros.msg import GloveSample
from avi_ht_ros.nodes import base

HANDEDNESS_CODE = {"left": HAND_LEFT, "right": HAND_RIGHT}


@dataclasses.dataclass(frozen=True)
class GloveDriverParams:
    side: str = param("right", "which hand this glove is on", choices=topics.SIDES)
    glove_config: str = param("glove_12imu.yaml", "glove description (config/ name or path): sensor sites, "
                              "order, frame ids")
    calibration_file: str = param("", "mounting calibration YAML to load at start and write on "
                                  "glove/calibrate ('' = none)")
    calibration_duration_s: float = param(3.0, "still flat-hand recording length for glove/calibrate",
                                          range=(0.5, 60.0), unit="s")
    sim_bag: str = param("", "simulated glove: replay this `avi-ht simulate` bag's IMU stream through a "
                         "pseudo-terminal ('' = real hardware on serial.port)")
    sim_latency_s: float = param(0.0, "simulated glove: data age at transmission (appears as a camera-glove "
                                 "time offset for the synchronizer to estimate)", range=(0.0, 0.5), unit="s")
    sim_clock_drift_ppm: float = param(30.0, "simulated glove: device clock drift", range=(-1000.0, 1000.0),
                                       unit="ppm")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics", range=(0.1, 60.0), unit="s")
    realtime_priority: int = base.realtime_priority_param(30)


PARAMETER_SETS = (("", GloveDriverParams), ("serial.", SerialLinkConfig), ("clock.", ClockMapperConfig),
                  ("health.", HealthConfig))


class GloveDriverNode(Node):
    def __init__(self, **kwargs):
        super().__init__("glove_driver", **kwargs)
        self.params, serial_config, clock_config, health_config = base.declare_parameter_sets(self, PARAMETER_SETS)
        self.glove = GloveModel.from_yaml(config_path(self.params.glove_config))
        self.frame_ids = self.glove.frame_ids(self.params.side)
        self.clock = DeviceClockMapper(clock_config)
        self.health = SensorHealthMonitor(self.glove.num_sensors, health_config)
        self.calibration: MountingCalibration | None = None
        if self.params.calibration_file and pathlib.Path(self.params.calibration_file).is_file():
            self.calibration = MountingCalibration.load_yaml(self.params.calibration_file)
            if self.calibration.sensor_count != self.glove.num_sensors:
                raise ConfigError(self.params.calibration_file,
                                  f"has {self.calibration.sensor_count} sensors, the glove {self.glove.num_sensors}")
        self._collector: StillHandCollector | None = None
        self.link: SerialGloveLink | None = None
        self.sim_device = None
        self._lock = threading.Lock()
        self.published = 0
        self.wrong_glove = 0
        self.wrong_sensor_count = 0
        self.rate = base.RateMeter()
        convert.prepare(convert.GLOVE_SAMPLE, "diagnostic_msgs/msg/DiagnosticArray")

        # raw stream published reliable with 2 s of history (best-effort subscribers match; a recorder
        # starved of CPU for up to 2 s misses nothing: base.RAW_GLOVE_QOS)
        self.sample_pub = self.create_publisher(GloveSample, topics.GLOVE_SAMPLES, base.RAW_GLOVE_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, base.RELIABLE_QOS)
        self.create_service(Trigger, "glove/calibrate", self.on_calibrate,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)

        if self.params.sim_bag:
            source = BagGloveSource(self.params.sim_bag, self.params.side, latency_s=self.params.sim_latency_s)
            self.sim_device = source.start_device(clock_drift_ppm=self.params.sim_clock_drift_ppm)
            serial_config = dataclasses.replace(serial_config, port=self.sim_device.port_path)
        self.link = SerialGloveLink(serial_config, on_frame=self.on_frame, parser=FrameParser(),
                                    on_event=self.on_link_event)
        self.link.start()
        self.get_logger().info(f"{self.params.side} glove ({self.glove.num_sensors} IMUs) on {serial_config.port}")

    # -- reader thread --------------------------------------------------------------------
    def on_frame(self, frame: GloveFrame, receive_ns: int) -> None:
        if frame.handedness != HANDEDNESS_CODE[self.params.side]:
            self.wrong_glove += 1  # never publish the other hand's data under this hand's topic
            return
        if frame.sensor_count != self.glove.num_sensors:
            self.wrong_sensor_count += 1
            return
        stamp_ns = self.clock.update(frame.device_time_us, receive_ns)
        status = self.health.classify(frame)
        accel = zero_unusable(frame.accel, status)
        gyro = zero_unusable(frame.gyro, status)
        with self._lock:
            if self.calibration is not None:
                accel, gyro = self.calibration.apply(accel, gyro, status)
            if self._collector is not None:
                self._collector.add(frame.accel, frame.gyro, status == 0)
        msg = convert.glove_sample_msg(stamp_ns, self.params.side, self.frame_ids, accel, gyro, status,
                                       frame.sequence, frame.device_time_us)
        base.publish_serialized(self.sample_pub, msg)
        self.published += 1
        self.rate.tick()

    def on_link_event(self, kind: str, message: str) -> None:
        self.get_logger().warning(f"glove link {kind}: {message}", throttle_duration_sec=2.0)

    # -- calibration service --------------------------------------------------------------
    def on_calibrate(self, request, response):
        with self._lock:
            self._collector = StillHandCollector(self.glove.num_sensors)
        time.sleep(self.params.calibration_duration_s)  # frames arrive on the reader thread meanwhile
        with self._lock:
            collector, self._collector = self._collector, None
        try:
            calibration = solve_mounting_calibration(
                collector, self.glove.flat_hand_up_vectors(self.params.side), sensor_names=self.glove.sensor_names,
                handedness=self.params.side)
        except AviHtError as exc:
            response.success, response.message = False, f"calibration rejected: {exc}"
            return response
        if self.params.calibration_file:
            calibration.save_yaml(self.params.calibration_file)
        with self._lock:
            self.calibration = calibration
        response.success = True
        response.message = (f"calibrated {calibration.sensor_count} IMUs: max correction "
                            f"{calibration.correction_deg.max():.1f} deg, residual "
                            f"{calibration.residual_deg.max():.2f} deg"
                            + (f", saved to {self.params.calibration_file}" if self.params.calibration_file else ""))
        return response

    # -- diagnostics ----------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        now = base.now_ns(self)
        parser = dataclasses.asdict(self.link.parser.stats)
        tracker = self.link.parser.sequence
        sequence = dataclasses.asdict(tracker.stats) if tracker is not None else {}
        link = dataclasses.asdict(self.link.stats)
        estimate = self.clock.estimate()
        connected = self.link.connected
        summary = {"connected": connected, "published": self.published, "rate_hz": f"{self.rate.rate():.1f}",
                   "wrong_glove_frames": self.wrong_glove, "wrong_sensor_count_frames": self.wrong_sensor_count,
                   "clock_locked": estimate.locked, "clock_offset_s": f"{estimate.offset_ns / 1e9:.6f}",
                   "clock_drift_ppm": f"{estimate.drift_ppm:.2f}",
                   "clock_offset_uncertainty_us": (f"{estimate.offset_uncertainty_ns / 1e3:.1f}"
                                                   if estimate.offset_uncertainty_ns is not None else "n/a"),
                   "calibrated": self.calibration is not None, "scheduling": base.scheduling_value(self)}
        summary.update({f"parser.{k}": v for k, v in parser.items()})
        summary.update({f"sequence.{k}": v for k, v in sequence.items()})
        summary.update({f"link.{k}": v for k, v in link.items()})
        # every frame not published is counted here: failed checks (header errors included)
        # and valid frames dropped as duplicates or late
        rejected = self.link.parser.stats.frames_rejected
        dropped = sequence.get("duplicates", 0) + sequence.get("out_of_order", 0)
        problems = [text for count, text in ((rejected, f"{rejected} frames rejected"),
                                             (dropped, f"{dropped} duplicate/late frames dropped"),
                                             (self.wrong_glove, f"{self.wrong_glove} other-hand frames"),
                                             (self.wrong_sensor_count,
                                              f"{self.wrong_sensor_count} wrong-sensor-count frames")) if count]
        level = 2 if not connected else (1 if problems else 0)
        statuses = [base.diagnostic_status(f"{self.get_name()}: {self.params.side} glove link",
                                           f"{self.params.side}_glove", level,
                                           "disconnected" if not connected else (", ".join(problems) or "ok"),
                                           summary)]
        for index, item in enumerate(self.health.diagnostics(list(self.glove.sensor_names))):
            worst = item["worst_recent_status"]
            level = {"OK": 0, "STALE": 1, "SATURATED": 1}.get(worst, 2)
            values = {f"recent.{k}": v for k, v in item["recent"].items()}
            values.update({f"total.{k}": v for k, v in item["total"].items()})
            statuses.append(base.diagnostic_status(
                f"{self.get_name()}: {self.params.side} imu {item['sensor']}", self.frame_ids[index], level,
                worst.lower(), values))
        base.publish_serialized(self.diag_pub, base.diagnostic_array(now, statuses))

    def destroy_node(self):
        if getattr(self, "link", None) is not None:
            self.link.stop()
        if getattr(self, "sim_device", None) is not None:
            self.sim_device.stop()
        super().destroy_node()


def main(args=None) -> int:
    # the calibration service blocks while frames keep flowing: two executor threads
    return base.run_node(GloveDriverNode, args, make_executor=lambda: MultiThreadedExecutor(num_threads=2))


if __name__ == "__main__":
    raise SystemExit(main())
