"""TF chain and markers of a tracked hand."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import BONE_NAMES, forward_kinematics_numpy
from avi_ht_ros.io import convert
from avi_ht_ros.io.hand_viz import hand_markers, hand_transforms, imu_mount_transforms


def compose(transforms, frame, camera="cam"):
    """Pose of ``frame`` in ``camera`` by walking the TF chain."""
    by_child = {t.child_frame_id: t for t in transforms}
    rotation, translation = np.eye(3), np.zeros(3)
    while frame != camera:
        t = by_child[frame]
        r = Rotation.from_quat(convert.xyzw_of(t.transform.rotation)).as_matrix()
        p = convert.xyz_of(t.transform.translation)
        rotation, translation = r @ rotation, r @ translation + p
        frame = t.header.frame_id
    return rotation, translation


def test_tf_chain_reproduces_forward_kinematics():
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 0.5, 22)
    wrist_r = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    wrist_t = np.array([0.05, 0.1, 0.4])
    fk = forward_kinematics_numpy(q, wrist_r, wrist_t, 1.1, "left")
    transforms = hand_transforms(5, "left", "cam", wrist_r, wrist_t, fk.bone_rotations, fk.bone_origins)
    assert {t.child_frame_id for t in transforms} == {"left_wrist"} | {f"left_{b}" for b in BONE_NAMES}
    for b, name in enumerate(BONE_NAMES):
        rotation, origin = compose(transforms, f"left_{name}")
        np.testing.assert_allclose(rotation, fk.bone_rotations[b], atol=1e-9)
        np.testing.assert_allclose(origin, fk.bone_origins[b], atol=1e-9)


def test_imu_mounts_match_the_glove_model():
    glove = GloveModel.reference()
    fk = forward_kinematics_numpy(np.zeros(22), np.eye(3), np.zeros(3), 1.0, "right")
    transforms = hand_transforms(0, "right", "cam", np.eye(3), np.zeros(3), fk.bone_rotations, fk.bone_origins)
    transforms += imu_mount_transforms(glove, "right")
    rotations, positions = glove.sensor_poses(fk)
    for i, frame in enumerate(glove.frame_ids("right")):
        rotation, origin = compose(transforms, frame)
        np.testing.assert_allclose(origin, positions[i], atol=1e-9)
        np.testing.assert_allclose(rotation, rotations[i], atol=1e-9)


def test_markers_colour_uncertainty_and_attention():
    landmarks = np.random.default_rng(1).normal(size=(21, 3))
    sigma = np.linspace(0.001, 0.05, 21)
    attention = np.zeros(12)
    attention[3] = 0.6
    array = hand_markers(0, "cam", "right", landmarks, sigma, np.zeros((12, 3)), attention, 0.4)
    by_ns = {m.ns: m for m in array.markers}
    assert len(by_ns["right/skeleton"].points) == 42
    colors = by_ns["right/landmarks"].colors
    assert colors[0].g == 1.0 and colors[-1].r == 1.0
    imu = by_ns["right/imu_attention"].colors
    assert imu[3].r == 1.0 and imu[0].r < imu[3].r
    convert.serialize(array)  # a valid MarkerArray
