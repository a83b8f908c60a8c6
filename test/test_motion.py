"""Motion generator: limits, smoothness, exact derivatives, labels, grasps, camera view."""
import functools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.camera import default_sim_camera, load_camera_mount
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import FINGERTIP_LANDMARKS, default_hand_model
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.sim.motion import (
    ACTIVITY_LABELS,
    MotionConfig,
    ObjectShape,
    generate_sequence,
)

MODEL = default_hand_model()
MIRROR = np.diag([1.0, -1.0, 1.0])


@functools.lru_cache(maxsize=None)
def sequence(seed: int, duration: float, side: str, activities=None):
    return generate_sequence(seed, duration, side, activities=activities)


def dense_times(seq, step=1e-3, margin=True):
    low, high = seq.time_range if margin else (0.0, seq.duration)
    return np.arange(low, high, step)


# ---------------------------------------------------------------------- labels
def test_every_activity_label_appears_and_segments_tile_the_sequence():
    seq = sequence(1, 60.0, "right")
    labels = set(seq.labels_at(np.arange(0.0, seq.duration, 0.01)))
    assert labels == set(ACTIVITY_LABELS)
    assert seq.segments[0].start == 0.0 and seq.segments[-1].end == seq.duration
    for before, after in zip(seq.segments[:-1], seq.segments[1:]):
        assert before.end == after.start and before.start < before.end
    # a label lookup agrees with the segment list
    middle = np.array([(s.start + s.end) / 2 for s in seq.segments])
    assert list(seq.labels_at(middle)) == [s.label for s in seq.segments]
    assert np.array_equal(seq.label_indices_at(middle), [ACTIVITY_LABELS.index(s.label) for s in seq.segments])


@pytest.mark.parametrize("activities, expected", [
    (("wave", "typing"), {"wave", "typing"}),
    (("pinch",), {"pinch", "release"}),
    (("tool_rotate",), {"grasp", "tool_rotate", "release"}),
])
def test_requested_activities_only(activities, expected):
    seq = sequence(2, 25.0, "left", activities)
    assert set(seq.labels_at(np.arange(0.0, seq.duration, 0.01))) == expected


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="activities"):
        generate_sequence(0, 10.0, activities=["juggling"])
    with pytest.raises(ConfigError, match="side"):
        generate_sequence(0, 10.0, side="both")
    with pytest.raises(ConfigError, match="duration"):
        generate_sequence(0, 0.2)
    with pytest.raises(ConfigError, match="hand_scale_range"):
        MotionConfig(hand_scale_range=(1.2, 0.9))
    with pytest.raises(ConfigError, match="spline_degree"):
        MotionConfig(spline_degree=4)
    seq = sequence(3, 12.0, "right", ("wave",))
    with pytest.raises(ValueError, match="times"):
        seq.evaluate([seq.time_range[1] + 0.1])


def test_default_camera_mount_is_the_shipped_one():
    shipped = load_camera_mount(config_path("camera_sim.yaml"))
    config = MotionConfig()
    assert np.allclose(config.camera_mount.parent_from_body(), shipped.parent_from_body())
    assert MotionConfig.with_camera_mount(shipped).camera_mount_rpy == tuple(shipped.rpy)


# ---------------------------------------------------------------------- determinism, variation
def test_deterministic_per_seed():
    a = generate_sequence(11, 15.0, "right")
    b = generate_sequence(np.random.default_rng(11), 15.0, "right")
    c = generate_sequence(12, 15.0, "right")
    t = np.linspace(0.0, 15.0, 301)
    for key, value in a.evaluate(t, order=2).items():
        assert np.array_equal(value, b.evaluate(t, order=2)[key]), key
    assert a.segments == b.segments and a.contacts == b.contacts
    assert np.array_equal(a.object_poses(t)["position"], b.object_poses(t)["position"])
    assert not np.allclose(a.evaluate(t)["wrist_translation"], c.evaluate(t)["wrist_translation"])


def test_hand_size_and_speed_vary_within_the_configured_ranges():
    config = MotionConfig()
    scales = [generate_sequence(seed, 5.0, activities=["wave"]).scale for seed in range(8)]
    speeds = [generate_sequence(seed, 5.0, activities=["wave"]).speed for seed in range(8)]
    assert min(scales) >= config.hand_scale_range[0] and max(scales) <= config.hand_scale_range[1]
    assert np.ptp(scales) > 0.05 and np.ptp(speeds) > 0.05
    fixed = generate_sequence(0, 5.0, activities=["wave"], scale=0.9, speed=1.0)
    assert fixed.scale == 0.9 and fixed.speed == 1.0
    # a slower sequence takes longer for the same script
    slow = generate_sequence(0, 20.0, activities=["wave"], scale=1.0, speed=0.7)
    fast = generate_sequence(0, 20.0, activities=["wave"], scale=1.0, speed=1.3)
    assert len(slow.segments) <= len(fast.segments)


# ---------------------------------------------------------------------- limits and smoothness
@pytest.mark.parametrize("seed, side", [(1, "right"), (4, "left")])
def test_joint_limits_hold_at_every_instant(seed, side):
    seq = sequence(seed, 60.0 if seed == 1 else 30.0, side)
    angles = seq.evaluate(dense_times(seq, 5e-4))["joint_angles"]
    assert np.all(MODEL.within_limits(angles, tolerance=1e-12))
    # and the motion actually uses a good part of the range
    assert np.all(np.ptp(angles, axis=0) > 0.05)


@pytest.mark.parametrize("seed, side", [(1, "right"), (4, "left")])
def test_trajectories_are_smooth(seed, side):
    seq = sequence(seed, 60.0 if seed == 1 else 30.0, side)
    step = 1e-3
    times = dense_times(seq, step)
    pose = seq.evaluate(times, order=2)
    # finite-difference jerk of the joint angles and of the world landmarks is bounded
    joint_jerk = np.abs(np.diff(pose["joint_angles"], 3, axis=0)) / step**3
    assert joint_jerk.max() < 5e4
    landmarks = seq.forward_kinematics(times).landmarks
    landmark_jerk = np.linalg.norm(np.diff(landmarks, 3, axis=0), axis=-1) / step**3
    assert landmark_jerk.max() < 1e4
    # C2: accelerations change by at most (max jerk) * step between neighbouring samples
    for key in ("joint_acceleration", "wrist_linear_acceleration", "wrist_angular_acceleration",
                "head_angular_acceleration"):
        assert np.abs(np.diff(pose[key], axis=0)).max() < 5e4 * step, key
    # plausible speeds for a hand and a head
    assert np.linalg.norm(pose["wrist_linear_velocity"], axis=-1).max() < 2.5
    assert np.linalg.norm(pose["wrist_angular_velocity"], axis=-1).max() < 15.0
    assert np.linalg.norm(pose["head_angular_velocity"], axis=-1).max() < 3.0


def test_derivatives_are_exact():
    seq = sequence(4, 30.0, "left")
    times = np.random.default_rng(0).uniform(0.0, seq.duration, 300)
    h = 1e-5
    at, plus, minus = (seq.evaluate(times + d, order=2) for d in (0.0, h, -h))
    pairs = [("joint_angles", "joint_velocity"), ("joint_velocity", "joint_acceleration"),
             ("wrist_translation", "wrist_linear_velocity"), ("wrist_linear_velocity", "wrist_linear_acceleration"),
             ("head_translation", "head_linear_velocity"), ("head_linear_velocity", "head_linear_acceleration"),
             ("wrist_angular_velocity", "wrist_angular_acceleration"),
             ("head_angular_velocity", "head_angular_acceleration")]
    for value, derivative in pairs:
        numeric = (plus[value] - minus[value]) / (2 * h)
        assert np.abs(numeric - at[derivative]).max() <= 1e-6 * max(1.0, np.abs(at[derivative]).max()), derivative
    for name in ("wrist", "head"):
        rotation = at[f"{name}_rotation"]
        step_plus = Rotation.from_matrix(plus[f"{name}_rotation"] @ np.swapaxes(rotation, 1, 2)).as_rotvec()
        step_minus = Rotation.from_matrix(minus[f"{name}_rotation"] @ np.swapaxes(rotation, 1, 2)).as_rotvec()
        numeric = (step_plus - step_minus) / (2 * h)   # world-frame angular velocity
        assert np.abs(numeric - at[f"{name}_angular_velocity"]).max() < 1e-6, name


def test_rotations_are_proper_and_camera_follows_the_mount():
    seq = sequence(4, 30.0, "left")
    pose = seq.evaluate(np.linspace(0.0, seq.duration, 500))
    for key in ("wrist_rotation", "head_rotation", "camera_rotation"):
        r = pose[key]
        assert np.allclose(r @ np.swapaxes(r, 1, 2), np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(r), 1.0)
    mount = seq.config.camera_mount.parent_from_optical()
    assert np.allclose(pose["camera_rotation"], pose["head_rotation"] @ mount[:3, :3])
    # optical z (viewing direction) points forward and down, like the tilted headset camera
    view = pose["camera_rotation"][:, :, 2]
    assert np.all(view[:, 0] > 0.2) and np.all(view[:, 2] < 0.0)


# ---------------------------------------------------------------------- camera view
@pytest.mark.parametrize("seed, side", [(1, "right"), (4, "left")])
def test_hand_stays_in_front_of_the_camera(seed, side):
    seq = sequence(seed, 60.0 if seed == 1 else 30.0, side)
    times = np.arange(0.0, seq.duration, 1 / 30)
    pose = seq.evaluate(times)
    landmarks = seq.forward_kinematics(times).landmarks
    in_camera = np.einsum("tji,tkj->tki", pose["camera_rotation"], landmarks - pose["camera_translation"][:, None])
    assert np.mean(np.all(in_camera[..., 2] > 0.1, axis=-1)) > 0.98
    camera = default_sim_camera()
    pixels = camera.project(in_camera.reshape(-1, 3)).reshape(times.size, 21, 2)
    visible = camera.in_image(pixels.reshape(-1, 2)).reshape(times.size, 21)
    assert np.mean(visible.all(axis=-1)) > 0.9
    # at a sensible distance for a hand in front of a headset
    distance = np.linalg.norm(in_camera[:, 0], axis=-1)
    assert 0.2 < np.median(distance) < 0.8


# ---------------------------------------------------------------------- grasps and objects
@pytest.mark.parametrize("seed, side", [(21, "right"), (22, "left"), (23, "right")])
def test_grasps_bring_fingertips_onto_the_object(seed, side):
    seq = sequence(seed, 40.0, side, ("grasp", "pinch"))
    # every complete grasp/pinch segment (not cut by the end of the sequence) holds its object
    grasp_segments = [s for s in seq.segments if s.label in ("grasp", "pinch") and s.end < seq.duration]
    assert grasp_segments
    for segment in grasp_segments:
        contacts = [c for c in seq.contacts if c.object_name == segment.object_name
                    and segment.start <= c.start < segment.end]
        assert contacts, segment
    for contact in seq.contacts:
        assert contact.fingers
        if seq.objects[seq.object_index(contact.object_name)].category in ("marble", "pen", "die"):
            assert set(contact.fingers) == {"thumb", "index"}
        m = seq.object_index(contact.object_name)
        times = np.linspace(contact.start, contact.end, 25, endpoint=False)
        landmarks = seq.forward_kinematics(times).landmarks
        objects = seq.object_poses(times)
        assert np.all(objects["held"][:, m])
        local = np.einsum("tji,tkj->tki", objects["rotation"][:, m], landmarks - objects["position"][:, m, None])
        tips = [FINGERTIP_LANDMARKS[f] for f in contact.fingers]
        distance = seq.objects[m].shape.signed_distance(local[:, tips])
        assert np.all(distance < 0.02), (contact, distance.max())       # on the surface ...
        assert np.all(distance > 0.003), (contact, distance.min())      # ... not through it (skin)
        assert np.ptp(distance, axis=0).max() < 1e-6                    # and held still


def test_objects_rest_or_move_with_the_hand_without_jumps():
    seq = sequence(22, 40.0, "left", ("grasp", "pinch"))
    times = dense_times(seq, 1e-3)
    poses = seq.object_poses(times)
    speed = np.linalg.norm(np.diff(poses["position"], axis=0), axis=-1) / 1e-3
    assert speed.max() < 2.5                               # no teleporting at attach/detach
    static = ~poses["held"][1:] & ~poses["held"][:-1]
    assert np.all(speed[static] < 1e-9)                    # objects not held do not move
    assert poses["held"].any(axis=0).sum() >= 1
    # resting objects lie on the table (lowest point at table height)
    table = seq.config.table_height_m
    for state in seq.scene_at(0.0):
        depth = state.shape.support_depth(state.rotation)
        assert abs(state.position[2] - depth - table) < 1e-9, state.name
        assert state.held_by == ""
    held_states = [s for t in times[::500] for s in seq.scene_at(t) if s.held_by]
    assert held_states and all(s.held_by == "left" for s in held_states)


def test_object_shapes():
    sphere = ObjectShape("sphere", radius=0.02)
    cylinder = ObjectShape("cylinder", radius=0.01, half_length=0.05)
    box = ObjectShape("box", half_extents=(0.01, 0.02, 0.03))
    points = np.array([[0.0, 0.0, 0.0], [0.03, 0.0, 0.0], [0.0, 0.0, 0.06], [0.02, 0.0, 0.07]])
    assert np.allclose(sphere.signed_distance(points), [-0.02, 0.01, 0.04, np.hypot(0.02, 0.07) - 0.02])
    assert np.allclose(cylinder.signed_distance(points), [-0.01, 0.02, 0.01, np.hypot(0.01, 0.02)])
    assert np.allclose(box.signed_distance(points), [-0.01, 0.02, 0.03, np.hypot(0.01, 0.04)])
    lying = Rotation.from_euler("x", 90, degrees=True).as_matrix()
    assert np.isclose(cylinder.support_depth(np.eye(3)), 0.05) and np.isclose(cylinder.support_depth(lying), 0.01)
    assert np.isclose(box.support_depth(lying), 0.02)
    with pytest.raises(ValueError):
        ObjectShape("cone", radius=0.1)


# ---------------------------------------------------------------------- sides, glove
def test_left_sequence_is_the_mirror_image_of_the_right_one():
    right, left = sequence(3, 20.0, "right"), sequence(3, 20.0, "left")
    times = np.linspace(*right.time_range, 400)
    a, b = right.evaluate(times), left.evaluate(times)
    assert np.array_equal(a["joint_angles"], b["joint_angles"])
    assert np.allclose(a["wrist_translation"] @ MIRROR, b["wrist_translation"])
    assert np.allclose(MIRROR @ a["wrist_rotation"] @ MIRROR, b["wrist_rotation"])
    assert np.allclose(a["head_translation"] @ MIRROR, b["head_translation"])
    # the optical frame mirrors with the image flipped left-right
    assert np.allclose(MIRROR @ a["camera_rotation"] @ np.diag([-1.0, 1.0, 1.0]), b["camera_rotation"])
    assert np.allclose(right.forward_kinematics(times).landmarks @ MIRROR, left.forward_kinematics(times).landmarks)
    assert np.allclose(right.object_poses(times)["position"] @ MIRROR, left.object_poses(times)["position"])


def test_sensor_poses_for_the_imu_simulator():
    glove = GloveModel.reference()
    seq = sequence(3, 20.0, "left")
    pose_at = functools.partial(seq.sensor_poses, glove=glove)
    rotations, positions = pose_at(np.linspace(0.0, 1.0, 7))
    assert rotations.shape == (7, 12, 3, 3) and positions.shape == (7, 12, 3)
    # the hand-back IMU sits on the back of the hand, near the wrist
    wrist = seq.evaluate(np.linspace(0.0, 1.0, 7))["wrist_translation"]
    assert np.all(np.linalg.norm(positions[:, glove.site_index("hand_back")] - wrist, axis=-1) < 0.1)
