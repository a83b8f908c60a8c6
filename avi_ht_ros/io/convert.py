"""Core arrays <-> ROS messages, in one place for nodes, bags and datasets.

Messages are built as ``rosbags`` message objects from our type store
(standard types + ours). The offline tools write them to bags; the nodes
publish the same objects' CDR bytes (``serialize``), so a message looks the
same whichever path produced it. Readers (``*_from_msg``) only use attribute
access, so they accept rosbags objects and rclpy messages alike.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
from rosbags.interfaces import Nodetype

from avi_ht_ros.io.messages import typestore

_NUMPY_OF_ROS = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "octet": np.uint8,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
GLOVE_SAMPLE = "avi_ht_ros/msg/GloveSample"
HAND_POSE = "avi_ht_ros/msg/HandPose"
HAND_GROUND_TRUTH = "avi_ht_ros/msg/HandGroundTruth"
SYNCED_FRAME = "avi_ht_ros/msg/SyncedFrame"
TIME_OFFSET = "avi_ht_ros/msg/TimeOffset"
PINCH_EVENT = "avi_ht_ros/msg/PinchEvent"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
JOINT_STATE = "sensor_msgs/msg/JointState"

HAND_LEFT, HAND_RIGHT = 0, 1
SIDE_OF_HANDEDNESS = {HAND_LEFT: "left", HAND_RIGHT: "right"}
HANDEDNESS_OF_SIDE = {"left": HAND_LEFT, "right": HAND_RIGHT}


def _default(node: tuple) -> Any:
    kind, detail = node
    if kind == Nodetype.BASE:
        name = detail[0]
        return "" if name == "string" else (False if name == "bool" else _NUMPY_OF_ROS[name](0).item())
    if kind == Nodetype.NAME:
        return new_message(detail)
    element, size = detail
    if element[0] == Nodetype.BASE and element[1][0] != "string":
        return np.zeros(size if kind == Nodetype.ARRAY else 0, _NUMPY_OF_ROS[element[1][0]])
    return [_default(element) for _ in range(size if kind == Nodetype.ARRAY else 0)]


@functools.lru_cache(maxsize=None)
def _layout(msgtype: str) -> tuple[type, tuple, frozenset]:
    """(class, field definitions, field names) of ``msgtype`` (looked up once per type)."""
    store = typestore()
    fielddefs = tuple(store.fielddefs[msgtype][1])
    return store.types[msgtype], fielddefs, frozenset(name for name, _ in fielddefs)


def new_message(msgtype: str, **fields: Any) -> Any:
    """A message of ``msgtype`` with ``fields`` set and every other field defaulted."""
    cls, fielddefs, names = _layout(msgtype)
    if fields.keys() == names:      # every field given (points, vectors, stamps, ...): nothing to default
        return cls(**fields)
    values = {}
    for name, node in fielddefs:
        if name in fields:
            values[name] = fields.pop(name)
        elif msgtype == "geometry_msgs/msg/Quaternion" and name == "w":
            values[name] = 1.0
        else:
            values[name] = _default(node)
    if fields:
        raise TypeError(f"{msgtype} has no field(s) {sorted(fields)}")
    return cls(**values)


def prepare(*msgtypes: str) -> None:
    """Build the type store and the (de)serializers of ``msgtypes`` now.

    Nodes call this at start-up: rosbags generates each type's codec on first
    use (~0.4 s for the store, tens of ms per type), which would otherwise stall
    the first callbacks and let input queues overflow.
    """
    for msgtype in msgtypes:
        deserialize(serialize(new_message(msgtype)), msgtype)


def serialize(msg: Any) -> bytes:
    """CDR bytes of a rosbags message (what rclpy's publisher sends)."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str) -> Any:
    return typestore().deserialize_cdr(data, msgtype)


# -- primitives -------------------------------------------------------------------------
def stamp_msg(stamp_ns: int) -> Any:
    stamp_ns = int(stamp_ns)
    return new_message("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000,
                       nanosec=stamp_ns % 1_000_000_000)


def stamp_ns_of(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_msg(stamp_ns: int, frame_id: str) -> Any:
    return new_message("std_msgs/msg/Header", stamp=stamp_msg(stamp_ns), frame_id=frame_id)


def vector3_msg(v: Sequence[float]) -> Any:
    return new_message("geometry_msgs/msg/Vector3", x=float(v[0]), y=float(v[1]), z=float(v[2]))


def point_msg(v: Sequence[float]) -> Any:
    return new_message("geometry_msgs/msg/Point", x=float(v[0]), y=float(v[1]), z=float(v[2]))


def quaternion_msg(xyzw: Sequence[float]) -> Any:
    return new_message("geometry_msgs/msg/Quaternion", x=float(xyzw[0]), y=float(xyzw[1]),
                       z=float(xyzw[2]), w=float(xyzw[3]))


def xyz_of(msg: Any) -> np.ndarray:
    return np.array([msg.x, msg.y, msg.z], np.float64)


def xyzw_of(msg: Any) -> np.ndarray:
    return np.array([msg.x, msg.y, msg.z, msg.w], np.float64)


def transform_stamped_msg(stamp_ns: int, parent: str, child: str, translation: Sequence[float],
                          rotation_xyzw: Sequence[float]) -> Any:
    transform = new_message("geometry_msgs/msg/Transform", translation=vector3_msg(translation),
                            rotation=quaternion_msg(rotation_xyzw))
    return new_message("geometry_msgs/msg/TransformStamped", header=header_msg(stamp_ns, parent),
                       child_frame_id=child, transform=transform)


def tf_message(transforms: list[Any]) -> Any:
    return new_message(TF_MESSAGE, transforms=list(transforms))


# -- camera -----------------------------------------------------------------------------
def image_msg(stamp_ns: int, frame_id: str, image: np.ndarray) -> Any:
    """mono8 image message from a [H, W] uint8 array."""
    image = np.ascontiguousarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"mono8 image must be a 2-D uint8 array, got {image.dtype} {image.shape}")
    h, w = image.shape
    return new_message(IMAGE, header=header_msg(stamp_ns, frame_id), height=h, width=w, encoding="mono8",
                       is_bigendian=0, step=w, data=image.reshape(-1))


def image_from_msg(msg: Any) -> np.ndarray:
    """[H, W] uint8 array of a mono8 image message (copy-free where possible)."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ValueError(f"unsupported image encoding {msg.encoding!r} (mono8 expected)")
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8)
    rows = data[: msg.height * msg.step].reshape(msg.height, msg.step)
    return rows[:, : msg.width]


def camera_info_msg(stamp_ns: int, frame_id: str, fields: dict) -> Any:
    """CameraInfo from ``avi_ht_ros.common.camera``'s plain-Python camera-info dict."""
    return new_message(CAMERA_INFO, header=header_msg(stamp_ns, frame_id),
                       height=int(fields["height"]), width=int(fields["width"]),
                       distortion_model=str(fields.get("distortion_model", "plumb_bob")),
                       d=np.asarray(fields.get("d", np.zeros(5)), np.float64),
                       k=np.asarray(fields["k"], np.float64).reshape(9),
                       r=np.asarray(fields.get("r", np.eye(3)), np.float64).reshape(9),
                       p=np.asarray(fields["p"], np.float64).reshape(12))


# -- glove ------------------------------------------------------------------------------
def glove_sample_msg(stamp_ns: int, side: str, frame_ids: Sequence[str], accel: np.ndarray,
                     gyro: np.ndarray, status: np.ndarray, sequence: int, device_time_us: int,
                     accel_variance: float = 0.0, gyro_variance: float = 0.0) -> Any:
    """GloveSample from [N,3] specific force (m/s^2), [N,3] rate (rad/s), [N] status."""
    header = header_msg(stamp_ns, f"{side}_glove")
    accel_cov = np.diag([accel_variance] * 3).reshape(9)
    gyro_cov = np.diag([gyro_variance] * 3).reshape(9)
    orientation_cov = np.zeros(9)
    orientation_cov[0] = -1.0  # orientation unknown (REP-145)
    imus = [new_message("sensor_msgs/msg/Imu", header=header_msg(stamp_ns, frame_id),
                        orientation_covariance=orientation_cov.copy(),
                        angular_velocity=vector3_msg(g), angular_velocity_covariance=gyro_cov.copy(),
                        linear_acceleration=vector3_msg(a), linear_acceleration_covariance=accel_cov.copy())
            for frame_id, a, g in zip(frame_ids, accel, gyro)]
    return new_message(GLOVE_SAMPLE, header=header, handedness=HANDEDNESS_OF_SIDE[side],
                       sequence=int(sequence) % 2**32, device_time_us=int(device_time_us), imus=imus,
                       status=np.asarray(status, np.uint8))


def glove_arrays_from_msg(msg: Any) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(stamp_ns, accel [N,3], gyro [N,3], status [N]) of a GloveSample."""
    accel = np.array([[i.linear_acceleration.x, i.linear_acceleration.y, i.linear_acceleration.z]
                      for i in msg.imus], np.float32).reshape(-1, 3)
    gyro = np.array([[i.angular_velocity.x, i.angular_velocity.y, i.angular_velocity.z]
                     for i in msg.imus], np.float32).reshape(-1, 3)
    status = np.asarray(msg.status, np.uint8)
    if status.shape[0] != accel.shape[0]:
        raise ValueError(f"GloveSample has {accel.shape[0]} IMUs but {status.shape[0]} status entries")
    return stamp_ns_of(msg.header.stamp), accel, gyro, status


# -- hand pose --------------------------------------------------------------------------
def hand_pose_msg(stamp_ns: int, frame_id: str, side: str, tracking_state: int, joint_angles: np.ndarray,
                  hand_scale: float, wrist_position: np.ndarray, wrist_rotation_xyzw: np.ndarray,
                  landmarks: np.ndarray, landmark_sigma: np.ndarray | None = None,
                  imu_attention: np.ndarray | None = None, vision_weight: float = 1.0) -> Any:
    pose = new_message("geometry_msgs/msg/Pose", position=point_msg(wrist_position),
                       orientation=quaternion_msg(wrist_rotation_xyzw))
    return new_message(
        HAND_POSE, header=header_msg(stamp_ns, frame_id), handedness=HANDEDNESS_OF_SIDE[side],
        tracking_state=int(tracking_state), joint_angles=np.asarray(joint_angles, np.float32).reshape(22),
        hand_scale=float(hand_scale), wrist_pose=pose,
        landmarks=[point_msg(p) for p in np.asarray(landmarks).reshape(21, 3)],
        landmark_sigma=(np.zeros(21, np.float32) if landmark_sigma is None
                        else np.asarray(landmark_sigma, np.float32).reshape(21)),
        imu_attention=(np.zeros(0, np.float32) if imu_attention is None
                       else np.asarray(imu_attention, np.float32).reshape(-1)),
        vision_weight=float(vision_weight))


def hand_pose_arrays_from_msg(msg: Any) -> dict[str, Any]:
    """Arrays of a HandPose: joint_angles, landmarks [21,3], sigma, wrist position/quaternion..."""
    return {
        "stamp_ns": stamp_ns_of(msg.header.stamp),
        "frame_id": msg.header.frame_id,
        "side": SIDE_OF_HANDEDNESS.get(int(msg.handedness), "right"),
        "tracking_state": int(msg.tracking_state),
        "joint_angles": np.asarray(msg.joint_angles, np.float32),
        "hand_scale": float(msg.hand_scale),
        "wrist_position": xyz_of(msg.wrist_pose.position),
        "wrist_rotation_xyzw": xyzw_of(msg.wrist_pose.orientation),
        "landmarks": np.array([[p.x, p.y, p.z] for p in msg.landmarks], np.float64),
        "landmark_sigma": np.asarray(msg.landmark_sigma, np.float32),
        "imu_attention": np.asarray(msg.imu_attention, np.float32),
        "vision_weight": float(msg.vision_weight),
    }


def hand_ground_truth_msg(pose: Any, landmark_visibility: np.ndarray, occlusion_ratio: float,
                          activity: str) -> Any:
    return new_message(HAND_GROUND_TRUTH, header=pose.header, pose=pose,
                       landmark_visibility=np.asarray(landmark_visibility, np.float32).reshape(21),
                       occlusion_ratio=float(occlusion_ratio), activity=str(activity))


# -- synchronized frame -----------------------------------------------------------------
def synced_frame_msg(image: Any, camera_info: Any, side: str, window: Any, offset_confidence: float) -> Any:
    """SyncedFrame from an Image and CameraInfo message and a ``tracker.sync.ImuWindow``."""
    t, n = window.status.shape
    return new_message(
        SYNCED_FRAME, header=image.header, image=image, camera_info=camera_info,
        handedness=HANDEDNESS_OF_SIDE[side], window_length=t, num_imus=n,
        linear_acceleration=np.ascontiguousarray(window.accel, np.float32).reshape(-1),
        angular_velocity=np.ascontiguousarray(window.gyro, np.float32).reshape(-1),
        gravity=np.ascontiguousarray(window.gravity_up, np.float32).reshape(-1),
        status=np.ascontiguousarray(window.status, np.uint8).reshape(-1),
        window_stamps=[stamp_msg(s) for s in window.stamps_ns],
        time_offset=float(window.time_offset_s), time_offset_confidence=float(offset_confidence),
        window_state=int(window.state), valid_samples=int(window.valid_samples))


def window_arrays_from_synced_frame(msg: Any) -> dict[str, Any]:
    """The IMU window of a SyncedFrame as arrays shaped [T, N, 3] / [T, N] / [T]."""
    t, n = int(msg.window_length), int(msg.num_imus)
    expected = t * n * 3
    for name in ("linear_acceleration", "angular_velocity", "gravity"):
        if len(getattr(msg, name)) != expected:
            raise ValueError(f"SyncedFrame.{name} has {len(getattr(msg, name))} values, expected {t}x{n}x3")
    if len(msg.status) != t * n or len(msg.window_stamps) != t:
        raise ValueError(f"SyncedFrame status/stamps do not match window {t}x{n}")
    return {
        "accel": np.asarray(msg.linear_acceleration, np.float32).reshape(t, n, 3),
        "gyro": np.asarray(msg.angular_velocity, np.float32).reshape(t, n, 3),
        "gravity_up": np.asarray(msg.gravity, np.float32).reshape(t, n, 3),
        "status": np.asarray(msg.status, np.uint8).reshape(t, n),
        "stamps_ns": np.array([stamp_ns_of(s) for s in msg.window_stamps], np.int64),
        "time_offset_s": float(msg.time_offset),
        "window_state": int(msg.window_state),
        "valid_samples": int(msg.valid_samples),
    }


def time_offset_msg(stamp_ns: int, frame_id: str, offset_s: float, confidence: float, raw_offset_s: float,
                    peak_correlation: float, accepted: int, rejected: int, online: bool) -> Any:
    return new_message(TIME_OFFSET, header=header_msg(stamp_ns, frame_id), offset_s=float(offset_s),
                       confidence=float(confidence), raw_offset_s=float(raw_offset_s),
                       peak_correlation=float(peak_correlation), accepted_updates=int(accepted),
                       rejected_updates=int(rejected), online=bool(online))


# -- joint states / robot commands ------------------------------------------------------
def joint_state_msg(stamp_ns: int, frame_id: str, names: Sequence[str], position: np.ndarray,
                    velocity: np.ndarray | None = None) -> Any:
    return new_message(JOINT_STATE, header=header_msg(stamp_ns, frame_id), name=list(names),
                       position=np.asarray(position, np.float64).reshape(-1),
                       velocity=(np.zeros(0) if velocity is None else np.asarray(velocity, np.float64).reshape(-1)),
                       effort=np.zeros(0))


def joint_trajectory_msg(stamp_ns: int, frame_id: str, names: Sequence[str], position: np.ndarray,
                         velocity: np.ndarray, time_from_start_s: float) -> Any:
    """A one-point ``trajectory_msgs/JointTrajectory`` (what ros2_control's trajectory controller takes)."""
    duration = new_message("builtin_interfaces/msg/Duration", sec=int(time_from_start_s),
                           nanosec=int(round((time_from_start_s % 1.0) * 1e9)))
    point = new_message("trajectory_msgs/msg/JointTrajectoryPoint",
                        positions=np.asarray(position, np.float64).reshape(-1),
                        velocities=np.asarray(velocity, np.float64).reshape(-1), time_from_start=duration)
    return new_message("trajectory_msgs/msg/JointTrajectory", header=header_msg(stamp_ns, frame_id),
                       joint_names=list(names), points=[point])


def pinch_event_msg(stamp_ns: int, frame_id: str, side: str, finger: str, pinching: bool, distance_m: float) -> Any:
    return new_message(PINCH_EVENT, header=header_msg(stamp_ns, frame_id), handedness=HANDEDNESS_OF_SIDE[side],
                       finger=str(finger), pinching=bool(pinching), distance_m=float(distance_m))
