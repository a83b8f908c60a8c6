"""Our messages over real rclpy/DDS and through rosbags' CDR codec.

* every custom message is published by one node and received by another, and every
  field of the received message equals the sent one exactly;
* rclpy's serialized bytes deserialize with ``rosbags`` (type store built from the
  ``.msg`` text in ``msg/``) into the same values, and rosbags' bytes deserialize with
  rclpy into the same values (bytes themselves may differ in CDR padding, which is
  unspecified);
* rosbags computes the same RIHS01 type hash as rosidl did at build time.
"""
from __future__ import annotations

import array
import dataclasses
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Imu

from avi_ht_ros.io.messages import MESSAGE_NAMES, typestore
from avi_ht_ros.msg import GloveSample, HandGroundTruth, HandPose, PinchEvent, SyncedFrame, TimeOffset

pytestmark = pytest.mark.ros


def _stamp(rng) -> Time:
    return Time(sec=int(rng.integers(0, 2**31 - 1)), nanosec=int(rng.integers(0, 10**9)))


def make_glove_sample(rng, n_imus: int = 12) -> GloveSample:
    msg = GloveSample()
    msg.header.stamp = _stamp(rng)
    msg.header.frame_id = "right_glove"
    msg.handedness = GloveSample.HAND_RIGHT
    msg.sequence = int(rng.integers(0, 2**32))
    msg.device_time_us = int(rng.integers(0, 2**63))
    imus = []
    for i in range(n_imus):
        imu = Imu()
        imu.header.stamp = msg.header.stamp
        imu.header.frame_id = f"right_imu_site{i}"
        imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = rng.normal(0, 9.81, 3)
        imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = rng.normal(0, 3.0, 3)
        imu.orientation_covariance[0] = -1.0
        imu.linear_acceleration_covariance = rng.random(9)
        imus.append(imu)
    msg.imus = imus
    msg.status = rng.integers(0, 5, n_imus).astype(np.uint8).tolist()
    return msg


def make_hand_pose(rng) -> HandPose:
    msg = HandPose()
    msg.header.stamp = _stamp(rng)
    msg.header.frame_id = "head_camera_optical_frame"
    msg.handedness = HandPose.HAND_LEFT
    msg.tracking_state = HandPose.TRACKING_DEGRADED
    msg.joint_angles = rng.uniform(-1, 1, 22).astype(np.float32)
    msg.hand_scale = float(np.float32(rng.uniform(0.85, 1.15)))
    msg.wrist_pose.position.x, msg.wrist_pose.position.y, msg.wrist_pose.position.z = rng.normal(0, 0.3, 3)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    (msg.wrist_pose.orientation.x, msg.wrist_pose.orientation.y,
     msg.wrist_pose.orientation.z, msg.wrist_pose.orientation.w) = q
    msg.landmarks = [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in rng.normal(0, 0.2, (21, 3))]
    msg.landmark_sigma = rng.uniform(0.001, 0.05, 21).astype(np.float32)
    msg.imu_attention = rng.dirichlet(np.ones(12)).astype(np.float32).tolist()
    msg.vision_weight = float(np.float32(rng.random()))
    return msg


def make_ground_truth(rng) -> HandGroundTruth:
    msg = HandGroundTruth()
    msg.pose = make_hand_pose(rng)
    msg.header = msg.pose.header
    msg.landmark_visibility = (rng.random(21) > 0.3).astype(np.float32)
    msg.occlusion_ratio = float(np.float32(1.0 - msg.landmark_visibility.mean()))
    msg.activity = "grasp"
    return msg


def make_synced_frame(rng, t: int = 14, n: int = 12) -> SyncedFrame:
    msg = SyncedFrame()
    msg.header.stamp = _stamp(rng)
    msg.header.frame_id = "head_camera_optical_frame"
    msg.image.header = msg.header
    msg.image.height, msg.image.width = 48, 64
    msg.image.encoding = "mono8"
    msg.image.step = 64
    msg.image.data = rng.integers(0, 256, 48 * 64, dtype=np.uint8).tobytes()
    msg.camera_info.header = msg.header
    msg.camera_info.height, msg.camera_info.width = 48, 64
    msg.camera_info.distortion_model = "plumb_bob"
    msg.camera_info.d = rng.normal(0, 0.1, 5).tolist()
    msg.camera_info.k = rng.normal(0, 100, 9)
    msg.handedness = SyncedFrame.HAND_RIGHT
    msg.window_length, msg.num_imus = t, n
    msg.linear_acceleration = rng.normal(0, 9.81, t * n * 3).astype(np.float32)
    msg.angular_velocity = rng.normal(0, 2, t * n * 3).astype(np.float32)
    msg.gravity = rng.normal(0, 1, t * n * 3).astype(np.float32)
    msg.status = rng.integers(0, 5, t * n).astype(np.uint8).tolist()
    msg.window_stamps = [_stamp(rng) for _ in range(t)]
    msg.time_offset = float(rng.normal(0, 0.05))
    msg.time_offset_confidence = float(np.float32(rng.random()))
    msg.window_state = SyncedFrame.WINDOW_PARTIAL
    msg.valid_samples = t - 2
    return msg


def make_time_offset(rng) -> TimeOffset:
    msg = TimeOffset()
    msg.header.stamp = _stamp(rng)
    msg.header.frame_id = "right_glove"
    msg.offset_s = float(rng.normal(0, 0.05))
    msg.confidence = float(np.float32(rng.random()))
    msg.raw_offset_s = float("nan") if rng.random() < 0.5 else float(rng.normal())
    msg.peak_correlation = float(np.float32(rng.random()))
    msg.accepted_updates, msg.rejected_updates = int(rng.integers(0, 100)), int(rng.integers(0, 100))
    msg.online = True
    return msg


def make_pinch_event(rng) -> PinchEvent:
    msg = PinchEvent()
    msg.header.stamp = _stamp(rng)
    msg.header.frame_id = "right_robot/palm"
    msg.handedness = PinchEvent.HAND_RIGHT
    msg.finger = "middle"
    msg.pinching = bool(rng.random() < 0.5)
    msg.distance_m = float(np.float32(rng.random() * 0.05))
    return msg


def _field_names(msg) -> list[str]:
    if hasattr(msg, "get_fields_and_field_types"):  # rclpy message
        return list(msg.get_fields_and_field_types())
    # rosbags dataclass: constants are class attributes, not message fields
    return [f.name for f in dataclasses.fields(msg) if f.name != "__msgtype__" and not f.name.isupper()]


def assert_same_message(a, b, path: str = "msg") -> None:
    """Every field of ``a`` equals the one of ``b`` exactly (floats bit for bit)."""
    if isinstance(a, (bytes, bytearray, array.array)) or isinstance(b, (bytes, bytearray, array.array)):
        assert bytes(a) == bytes(b), path
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        assert a_arr.shape == b_arr.shape, path
        assert a_arr.astype(b_arr.dtype).tobytes() == b_arr.tobytes(), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_message(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, (int, float, str, bool)):
        assert a == b, f"{path}: {a!r} != {b!r}"
    else:
        names = _field_names(a)
        assert names == _field_names(b), path
        for name in names:
            assert_same_message(getattr(a, name), getattr(b, name), f"{path}.{name}")


MAKERS = {
    "GloveSample": (GloveSample, make_glove_sample),
    "HandPose": (HandPose, make_hand_pose),
    "HandGroundTruth": (HandGroundTruth, make_ground_truth),
    "SyncedFrame": (SyncedFrame, make_synced_frame),
    "TimeOffset": (TimeOffset, make_time_offset),
    "PinchEvent": (PinchEvent, make_pinch_event),
}


def test_every_message_has_a_maker():
    assert set(MAKERS) == set(MESSAGE_NAMES)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_message_round_trips_between_two_nodes(rclpy_context, name):
    msg_type, make = MAKERS[name]
    rng = np.random.default_rng(7)
    sent = [make(rng) for _ in range(3)]
    talker = rclpy.create_node(f"talker_{name.lower()}", context=rclpy_context)
    listener = rclpy.create_node(f"listener_{name.lower()}", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    try:
        received = []
        # reliable + transient-local so nothing depends on discovery timing
        qos = rclpy.qos.QoSProfile(depth=10, durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL,
                                   reliability=rclpy.qos.ReliabilityPolicy.RELIABLE)
        publisher = talker.create_publisher(msg_type, f"/roundtrip/{name}", qos)
        listener.create_subscription(msg_type, f"/roundtrip/{name}", received.append, qos)
        executor.add_node(talker)
        executor.add_node(listener)
        for msg in sent:
            publisher.publish(msg)
        deadline = time.monotonic() + 10.0
        while len(received) < len(sent) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert len(received) == len(sent), f"received {len(received)} of {len(sent)} {name}"
        for a, b in zip(sent, received):
            assert_same_message(a, b)
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_rclpy_and_rosbags_cdr_round_trip(name):
    msg_type, make = MAKERS[name]
    store = typestore()
    type_name = f"avi_ht_ros/msg/{name}"
    rng = np.random.default_rng(11)
    for _ in range(3):
        original = make(rng)
        decoded = store.deserialize_cdr(bytes(serialize_message(original)), type_name)
        assert_same_message(original, decoded)
        back = deserialize_message(bytes(store.serialize_cdr(decoded, type_name)), msg_type)
        assert_same_message(original, back)


def test_rosbags_reads_fields_rclpy_wrote():
    rng = np.random.default_rng(3)
    pose = make_hand_pose(rng)
    decoded = typestore().deserialize_cdr(bytes(serialize_message(pose)), "avi_ht_ros/msg/HandPose")
    np.testing.assert_array_equal(decoded.joint_angles, pose.joint_angles)
    assert decoded.landmarks[20].z == pose.landmarks[20].z
    assert decoded.tracking_state == HandPose.TRACKING_DEGRADED
    assert decoded.header.frame_id == "head_camera_optical_frame"


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_type_hash_matches_rosidl(name):
    """rosidl writes each type's RIHS01 hash into the installed type description."""
    import json
    import pathlib

    from ament_index_python.packages import get_package_share_directory

    description = pathlib.Path(get_package_share_directory("avi_ht_ros")) / "msg" / f"{name}.json"
    hashes = json.loads(description.read_text())["type_hashes"]
    expected = next(h["hash_string"] for h in hashes if h["type_name"] == f"avi_ht_ros/msg/{name}")
    assert typestore().hash_rihs01(f"avi_ht_ros/msg/{name}") == expected
