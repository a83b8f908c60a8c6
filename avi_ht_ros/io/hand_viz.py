"""TF frames and RViz markers of a tracked hand (built as messages, ROS-free).

* :func:`hand_transforms` — camera → ``<side>_wrist`` → ``<side>_palm`` → every
  bone frame (``<side>_<bone>``) from a forward-kinematics result.
* :func:`imu_mount_transforms` — static ``<side>_<bone>`` → ``<side>_imu_<site>``.
* :func:`hand_markers` — skeleton lines, landmark spheres coloured by their σ
  (green certain → red uncertain), and each glove IMU coloured by its current
  attention weight (dark → bright yellow, like the paper's figure 1).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import BONE_NAMES, BONE_PARENT, SKELETON_EDGES
from avi_ht_ros.io import convert

MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
MARKER = "visualization_msgs/msg/Marker"
SPHERE_LIST, LINE_LIST, TEXT_VIEW_FACING = 7, 5, 9
ADD = 0


def hand_transforms(stamp_ns: int, side: str, camera_frame: str, wrist_rotation: np.ndarray,
                    wrist_translation: np.ndarray, bone_rotations: np.ndarray, bone_origins: np.ndarray) -> list[Any]:
    """Dynamic TF of one hand: wrist in the camera frame, then each bone relative to its parent.

    ``bone_rotations``/``bone_origins`` are the FK's ``[B, 3, 3]``/``[B, 3]`` in the camera frame.
    All rotations go through one batched quaternion conversion (this runs for every frame).
    """
    wrist = f"{side}_wrist"
    wrist_r = np.asarray(wrist_rotation, float)
    wrist_t = np.asarray(wrist_translation, float)
    bone_r = np.asarray(bone_rotations, float)
    bone_t = np.asarray(bone_origins, float)
    parents = np.asarray(BONE_PARENT)
    parent_r = np.where((parents < 0)[:, None, None], wrist_r, bone_r[np.maximum(parents, 0)])
    parent_t = np.where((parents < 0)[:, None], wrist_t, bone_t[np.maximum(parents, 0)])
    relative_r = np.einsum("bji,bjk->bik", parent_r, bone_r)               # parent^T @ child
    relative_t = np.einsum("bji,bj->bi", parent_r, bone_t - parent_t)
    # rotations from the network's Gram–Schmidt head and products of them (orthonormal to float
    # rounding): scipy's orthogonalising SVD is skipped (~40 µs of ~50 per frame)
    quats = Rotation.from_matrix(np.concatenate([wrist_r[None], relative_r]), assume_valid=True).as_quat()
    transforms = [convert.transform_stamped_msg(stamp_ns, camera_frame, wrist, wrist_t, quats[0])]
    for bone, parent in enumerate(BONE_PARENT):
        parent_frame = wrist if parent < 0 else f"{side}_{BONE_NAMES[parent]}"
        transforms.append(convert.transform_stamped_msg(stamp_ns, parent_frame, f"{side}_{BONE_NAMES[bone]}",
                                                        relative_t[bone], quats[bone + 1]))
    return transforms


def imu_mount_transforms(glove: GloveModel, side: str, hand_scale: float = 1.0) -> list[Any]:
    """Static TF of each IMU on its bone (offsets scale with the hand)."""
    rotations, offsets = glove.mount_rotations(side), glove.mount_offsets(side) * hand_scale
    return [convert.transform_stamped_msg(0, f"{side}_{BONE_NAMES[bone]}", glove.frame_id(side, name),
                                          offset, Rotation.from_matrix(rotation).as_quat())
            for name, bone, rotation, offset in zip(glove.sensor_names, glove.sensor_bone_indices, rotations, offsets)]


def _color(r, g, b, a=1.0):
    return convert.new_message("std_msgs/msg/ColorRGBA", r=float(r), g=float(g), b=float(b), a=float(a))


def sigma_color(sigma_m: float, good_m: float = 0.005, bad_m: float = 0.03):
    """Green for σ <= good, red for σ >= bad, linear in between."""
    x = float(np.clip((sigma_m - good_m) / (bad_m - good_m), 0.0, 1.0)) if np.isfinite(sigma_m) else 1.0
    return _color(x, 1.0 - x, 0.0)


def attention_color(weight: float, max_weight: float):
    x = float(np.clip(weight / max_weight, 0.0, 1.0)) if max_weight > 0 else 0.0
    return _color(0.25 + 0.75 * x, 0.25 + 0.75 * x, 0.1, 0.5 + 0.5 * x)


def _marker(stamp_ns, frame, ns, marker_id, kind, scale, points, colors=None, color=None, lifetime_s=0.25, text=""):
    lifetime = convert.new_message("builtin_interfaces/msg/Duration", sec=int(lifetime_s),
                                   nanosec=int((lifetime_s % 1.0) * 1e9))
    return convert.new_message(
        MARKER, header=convert.header_msg(stamp_ns, frame), ns=ns, id=marker_id, type=kind, action=ADD,
        scale=convert.vector3_msg(scale), color=color if color is not None else _color(1, 1, 1),
        lifetime=lifetime, points=[convert.point_msg(p) for p in points], colors=list(colors or []), text=text,
        pose=convert.new_message("geometry_msgs/msg/Pose"))


def hand_markers(stamp_ns: int, frame: str, side: str, landmarks: np.ndarray, sigma: np.ndarray,
                 imu_positions: np.ndarray | None = None, imu_attention: np.ndarray | None = None,
                 vision_weight: float | None = None, edges: Sequence[tuple[int, int]] = SKELETON_EDGES) -> Any:
    """MarkerArray of one hand in ``frame`` (the camera optical frame)."""
    landmarks = np.asarray(landmarks, float)
    lines = [landmarks[i] for edge in edges for i in edge]
    markers = [
        _marker(stamp_ns, frame, f"{side}/skeleton", 0, LINE_LIST, (0.004, 0, 0), lines, color=_color(0.2, 0.6, 1.0)),
        _marker(stamp_ns, frame, f"{side}/landmarks", 1, SPHERE_LIST, (0.008, 0.008, 0.008), landmarks,
                colors=[sigma_color(s) for s in np.asarray(sigma, float)]),
    ]
    if imu_positions is not None and imu_attention is not None and len(imu_attention):
        attention = np.asarray(imu_attention, float)
        markers.append(_marker(stamp_ns, frame, f"{side}/imu_attention", 2, SPHERE_LIST, (0.012, 0.012, 0.012),
                               imu_positions, colors=[attention_color(w, attention.max()) for w in attention]))
    if vision_weight is not None:
        label = landmarks[0] + np.array([0.0, -0.03, 0.0])
        markers.append(_marker(stamp_ns, frame, f"{side}/label", 3, TEXT_VIEW_FACING, (0, 0, 0.015), [],
                               color=_color(1, 1, 1), text=f"{side} vision {vision_weight:.2f}"))
        markers[-1].pose.position = convert.point_msg(label)
    return convert.new_message(MARKER_ARRAY, markers=markers)
