"""Retargeting core: URDF kinematics, config validation, optimizers, safety filter, benchmark."""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.hand_model import (LANDMARK_INDEX, NUM_JOINTS, default_hand_model,
                                          forward_kinematics_numpy)
from avi_ht_ros.retarget.config import load_retarget_config
from avi_ht_ros.retarget.kinematics import JointCoupling, RobotHandKinematics
from avi_ht_ros.retarget.optimizer import (Retargeter, RetargetInputError, estimate_wrist_rotation,
                                           uncertainty_weights)
from avi_ht_ros.retarget.safety import (CommandSafetyFilter, FilterState, JointLimits, PinchDetector,
                                        TrackingState, rate_limit)

ROOT = Path(__file__).resolve().parents[1]
AVI_CONFIG = ROOT / "config" / "retarget_avi_hand_16dof.yaml"
AVI_LEFT_CONFIG = ROOT / "config" / "retarget_avi_hand_16dof_left.yaml"
TRI_CONFIG = ROOT / "test" / "data" / "retarget" / "retarget_tri_finger.yaml"
AVI_URDF = ROOT / "robots" / "avi_hand_16dof" / "avi_hand_16dof.urdf"
AVI_LEFT_URDF = ROOT / "robots" / "avi_hand_16dof" / "avi_hand_16dof_left.urdf"


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def avi_config():
    return load_retarget_config(AVI_CONFIG)


@pytest.fixture(scope="module")
def tri_config():
    return load_retarget_config(TRI_CONFIG)


def with_solver(config, **changes):
    return dataclasses.replace(config, solver=dataclasses.replace(config.solver, **changes))


def human_landmarks(angles=None, rotation=None, translation=None, side="right"):
    angles = np.zeros(NUM_JOINTS) if angles is None else angles
    rotation = np.eye(3) if rotation is None else rotation
    translation = np.zeros(3) if translation is None else translation
    return forward_kinematics_numpy(angles, rotation, translation, side=side).landmarks


def landmarks_for_robot_pose(retargeter: Retargeter, q_full: np.ndarray) -> np.ndarray:
    """Human landmarks whose (scaled, rotated) task vectors equal the robot's at ``q_full``:
    the least change of the reference hand that satisfies every term exactly."""
    terms = retargeter.terms
    human_vectors = (retargeter.robot_vectors(q_full) / retargeter.config.scaling_factor) @ retargeter.human_to_robot
    base = human_landmarks()
    d = np.zeros((terms.count + 1, 21))
    d[np.arange(terms.count), terms.task_landmark] += 1.0
    d[np.arange(terms.count), terms.origin_landmark] -= 1.0
    d[-1, LANDMARK_INDEX["wrist"]] = 1.0
    rhs = np.vstack([human_vectors, np.zeros((1, 3))])
    landmarks = base + np.linalg.pinv(d) @ (rhs - d @ base)
    assert np.allclose(d[:-1] @ landmarks, human_vectors, atol=1e-12)
    return landmarks


def smooth_human_trajectory(frames=90, seed=0):
    rng = np.random.default_rng(seed)
    model = default_hand_model()
    t = np.arange(frames) / 60.0
    phase = rng.uniform(0, 2 * np.pi, NUM_JOINTS)
    angles = 0.3 * model.joint_upper * (1 - np.cos(2 * np.pi * 0.5 * t[:, None] + phase))
    return human_landmarks(np.clip(angles, model.joint_lower, model.joint_upper))


def in_limits(retargeter: Retargeter, q: np.ndarray) -> bool:
    kin = retargeter.kinematics
    return bool(np.all(np.isfinite(q)) and np.all(q >= kin.lower) and np.all(q <= kin.upper))


def write_config(tmp_path: Path, data: dict, name="bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def shipped_config_dict() -> dict:
    data = yaml.safe_load(AVI_CONFIG.read_text())
    data["retargeting"]["robot"]["urdf"] = str(AVI_URDF)
    return data


# ------------------------------------------------------------------------------ robot files
def test_shipped_urdfs_are_up_to_date_with_their_generator():
    result = subprocess.run([sys.executable, str(ROOT / "robots" / "avi_hand_16dof" / "generate_urdf.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_avi_hand_has_16_limited_joints_with_inertials_and_collisions():
    import xml.etree.ElementTree as ET

    kin = RobotHandKinematics(AVI_URDF)
    assert kin.nq == 16
    fingers = {name.split("_")[0] for name in kin.joint_names}
    assert fingers == {"thumb", "index", "middle", "ring"}
    assert all(sum(n.startswith(f + "_") for n in kin.joint_names) == 4 for f in fingers)
    assert np.all(kin.lower < kin.upper) and np.all(kin.velocity_limit > 0) and np.all(kin.effort_limit > 0)
    root = ET.parse(AVI_URDF).getroot()
    for link in root.iter("link"):
        if link.attrib["name"].endswith("_tip"):
            continue  # massless marker frames
        assert link.find("inertial/mass") is not None and float(link.find("inertial/mass").attrib["value"]) > 0
        assert link.find("collision/geometry") is not None, link.attrib["name"]
    # Allegro-like size: wrist -> middle fingertip between 20 and 26 cm at the zero pose.
    tip = kin.frame_positions(kin.neutral(), [kin.frame_id("middle_tip")])[0]
    assert 0.20 < np.linalg.norm(tip) < 0.26


def test_left_urdf_is_the_mirror_image_of_the_right():
    right, left = RobotHandKinematics(AVI_URDF), RobotHandKinematics(AVI_LEFT_URDF)
    assert right.joint_names == left.joint_names
    assert np.allclose(right.lower, left.lower) and np.allclose(right.upper, left.upper)
    names = [n for n in right.link_names if n != "palm"]
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.uniform(right.lower, right.upper)
        p_right = right.frame_positions(q, [right.frame_id(n) for n in names])
        p_left = left.frame_positions(q, [left.frame_id(n) for n in names])
        assert np.allclose(p_left, p_right * [1, -1, 1], atol=1e-12)


def test_frame_jacobians_match_finite_differences():
    kin = RobotHandKinematics(AVI_URDF)
    ids = [kin.frame_id(n) for n in ("thumb_tip", "index_tip", "ring_middle")]
    q = np.random.default_rng(0).uniform(kin.lower, kin.upper)
    positions, jac = kin.frame_positions_and_jacobians(q, ids)
    eps = 1e-6
    numeric = np.stack([(kin.frame_positions(q + eps * e, ids) - kin.frame_positions(q - eps * e, ids)) / (2 * eps)
                        for e in np.eye(kin.nq)], axis=-1)
    assert np.allclose(positions, kin.frame_positions(q, ids))
    assert np.allclose(jac, numeric, atol=1e-7)


def test_mimic_coupling_tightens_the_source_range():
    kin = RobotHandKinematics(TRI_CONFIG.parent / "tri_finger_hand.urdf")
    coupling = JointCoupling(kin)
    assert "b_flex3" not in coupling.driven_names
    j = coupling.driven_names.index("b_flex2")
    assert coupling.upper[j] == pytest.approx(1.0 / 0.8)  # b_flex3 <= 1.0 with multiplier 0.8
    full = coupling.full(coupling.upper)
    assert full[kin.joint_index("b_flex3")] == pytest.approx(1.0)


# ------------------------------------------------------------------------------ config errors
def _mutate(data: dict, path: str, value):
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is KeyError:
        del node[last]
    else:
        node[last] = value


@pytest.mark.parametrize("path,value,field,words", [
    ("retargeting.vector.terms.1.task_link", "index_nail", "retargeting.vector.terms[1].task_link", "not in"),
    ("retargeting.dexpilot.fingertips.0.link", "thumb_nail", "retargeting.dexpilot.fingertips[0].link", "not in"),
    ("retargeting.robot.wrist_link", "hand_base", "retargeting.robot.wrist_link", "not in"),
    ("retargeting.position.terms.0.landmark", "thumb_nail", "retargeting.position.terms[0].landmark", "unknown landmark"),
    ("retargeting.vector.terms.0.origin", 42, "retargeting.vector.terms[0].origin", "landmark"),
    ("retargeting.scaling_factor", "big", "retargeting.scaling_factor", "expected a number"),
    ("retargeting.scaling_factor", -1.0, "retargeting.scaling_factor", "must be >"),
    ("retargeting.solver.max_iterations", 2.5, "retargeting.solver.max_iterations", "integer"),
    ("retargeting.human.mirror", "yes", "retargeting.human.mirror", "true or false"),
    ("retargeting.human.wrist_to_robot_rpy", [0, 0], "retargeting.human.wrist_to_robot_rpy", "3 numbers"),
    ("retargeting.method", "magic", "retargeting.method", "one of"),
    ("retargeting.vector.terms.0.wieght", 2.0, "retargeting.vector.terms[0].wieght", "unknown key"),
    ("retargeting.robot.urdf", "missing.urdf", "retargeting.robot.urdf", "not found"),
    ("retargeting.robot.driven_joints", ["index_abd", "index_knuckle"], "retargeting.robot.driven_joints", "not a movable joint"),
    ("retargeting.dexpilot.escape_distance", 0.01, "retargeting.dexpilot.escape_distance", "project_distance"),
    ("safety.lost_behavior", "freeze", "safety.lost_behavior", "one of"),
    ("safety.max_velocity", {"index_pip": -1.0}, "safety.max_velocity.index_pip", "> 0"),
    ("safety.open_pose", {"pinky_mcp": 0.1}, "safety.open_pose", "not a movable joint"),
    ("safety.pinch.end_distance", 0.01, "safety.pinch.end_distance", "hysteresis"),
    ("safety.engage_states", ["ok", "lost"], "safety.engage_states", "unknown tracking state"),
])
def test_config_errors_name_the_file_and_the_field(tmp_path, path, value, field, words):
    data = shipped_config_dict()
    _mutate(data, path, value)
    bad = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_retarget_config(bad)
    assert info.value.where == str(bad)
    assert info.value.problem.startswith(field + ":"), info.value.problem
    assert words in info.value.problem


def test_config_error_for_missing_required_section_and_bad_yaml(tmp_path):
    data = shipped_config_dict()
    del data["retargeting"]["robot"]["wrist_link"]
    with pytest.raises(ConfigError, match=r"retargeting\.robot\.wrist_link: missing"):
        load_retarget_config(write_config(tmp_path, data))
    broken = tmp_path / "broken.yaml"
    broken.write_text("retargeting: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_retarget_config(broken)
    assert info.value.where == str(broken) and "YAML" in info.value.problem
    with pytest.raises(ConfigError, match="method 'position' needs"):
        data = shipped_config_dict()
        data["retargeting"]["method"] = "position"
        del data["retargeting"]["position"]
        load_retarget_config(write_config(tmp_path, data, "nopos.yaml"))


def test_safety_open_pose_outside_limits_is_a_config_error(avi_config):
    kin = RobotHandKinematics(avi_config.urdf_path)
    safety = dataclasses.replace(avi_config.safety, open_pose={"index_pip": 3.0})
    with pytest.raises(ConfigError, match="open_pose.index_pip"):
        CommandSafetyFilter(JointLimits.from_kinematics(kin, safety), safety)


# ------------------------------------------------------------------------------ optimizer
@pytest.mark.parametrize("config_path", [AVI_CONFIG, TRI_CONFIG])
@pytest.mark.parametrize("method", ["vector", "position"])
def test_reachable_targets_are_reached(config_path, method):
    """Targets from the robot's own FK: the task error goes to ~0 from a perturbed start."""
    config = with_solver(load_retarget_config(config_path), regularization=1e-8)
    retargeter = Retargeter(config, method)
    rng = np.random.default_rng(7)
    for _ in range(5):
        q_true = retargeter.coupling.full(rng.uniform(retargeter.lower, retargeter.upper))
        landmarks = landmarks_for_robot_pose(retargeter, q_true)
        start = np.clip(q_true + rng.normal(0, 0.2, q_true.shape), retargeter.kinematics.lower,
                        retargeter.kinematics.upper)
        retargeter.reset(start)
        before = np.linalg.norm(retargeter.robot_vectors(start) - retargeter.target_vectors(landmarks), axis=1).max()
        q = retargeter.retarget(landmarks)
        after = np.linalg.norm(retargeter.robot_vectors(q) - retargeter.target_vectors(landmarks), axis=1).max()
        assert before > 5e-3
        assert after < 1e-4, (before, after)
        assert in_limits(retargeter, q)


def test_dexpilot_reaches_open_hand_targets_and_closes_pinches(avi_config):
    config = with_solver(avi_config, regularization=1e-8)
    retargeter = Retargeter(config, "dexpilot")
    vector = Retargeter(config, "vector")
    # An open robot pose: no fingertip pair is closer than the escape distance.
    q_true = retargeter.kinematics.neutral()
    landmarks = landmarks_for_robot_pose(vector, q_true)
    q = retargeter.retarget(landmarks)
    assert np.linalg.norm(vector.robot_vectors(q) - vector.target_vectors(landmarks), axis=1).max() < 1e-3
    # A human pinch (thumb-index tips 8 mm apart) closes the robot pinch to a few mm.
    from avi_ht_ros.retarget.bench import human_pinch_pose

    pinch = human_landmarks(human_pinch_pose("index"))
    retargeter.reset()
    for _ in range(5):
        q = retargeter.retarget(pinch)
    kin = retargeter.kinematics
    tips = kin.frame_positions(q, [kin.frame_id("thumb_tip"), kin.frame_id("index_tip")])
    vector.reset()
    q_vector = [vector.retarget(pinch) for _ in range(5)][-1]
    tips_vector = kin.frame_positions(q_vector, [kin.frame_id("thumb_tip"), kin.frame_id("index_tip")])
    assert np.linalg.norm(tips[0] - tips[1]) < 3e-3
    assert np.linalg.norm(tips_vector[0] - tips_vector[1]) > 3 * np.linalg.norm(tips[0] - tips[1])


@pytest.mark.parametrize("method", ["vector", "position", "dexpilot"])
def test_every_frame_is_within_limits_on_a_trajectory(avi_config, method):
    retargeter = Retargeter(avi_config, method)
    for landmarks in smooth_human_trajectory():
        q = retargeter.retarget(landmarks)
        assert in_limits(retargeter, q)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["noise", "huge", "equal", "tiny", "scaled"]), seed=st.integers(0, 2 ** 31),
       method=st.sampled_from(["vector", "position", "dexpilot"]))
def test_adversarial_inputs_never_leave_the_limits(avi_config, kind, seed, method):
    rng = np.random.default_rng(seed)
    config = dataclasses.replace(avi_config, max_landmark_distance=1e9)
    retargeter = Retargeter(config, method)
    retargeter.reset(rng.uniform(retargeter.kinematics.lower, retargeter.kinematics.upper))
    for _ in range(3):
        if kind == "noise":
            landmarks = rng.normal(0, 0.1, (21, 3))
        elif kind == "huge":
            landmarks = rng.normal(0, 1e6, (21, 3))
        elif kind == "equal":
            landmarks = np.tile(rng.normal(0, 1, 3), (21, 1))
        elif kind == "tiny":
            landmarks = rng.normal(0, 1e-9, (21, 3))
        else:
            landmarks = human_landmarks(rng.uniform(-1, 2, NUM_JOINTS)) * rng.uniform(0.1, 10)
        sigma = rng.uniform(0, 0.1, 21) if rng.random() < 0.5 else None
        q = retargeter.retarget(landmarks, sigma)
        assert in_limits(retargeter, q)


def test_non_finite_landmarks_are_rejected_with_a_clear_error(avi_config):
    retargeter = Retargeter(avi_config, "vector")
    landmarks = human_landmarks()
    landmarks[LANDMARK_INDEX["index_tip"], 1] = np.nan
    with pytest.raises(RetargetInputError, match="index_tip"):
        retargeter.retarget(landmarks)
    far = human_landmarks()
    far[LANDMARK_INDEX["ring_tip"]] = [50.0, 0.0, 0.0]
    with pytest.raises(RetargetInputError, match="ring_tip"):
        retargeter.retarget(far)
    with pytest.raises(RetargetInputError, match="shape"):
        retargeter.retarget(np.zeros((20, 3)))
    with pytest.raises(RetargetInputError, match="sigma"):
        retargeter.retarget(human_landmarks(), sigma=-np.ones(21))
    with pytest.raises(RetargetInputError, match="wrist_rotation"):
        retargeter.retarget(human_landmarks(), wrist_rotation=np.ones((3, 3)))


def test_drop_policy_ignores_a_non_finite_landmark_and_holds_its_finger(avi_config):
    config = dataclasses.replace(avi_config, invalid_landmarks="drop")
    retargeter = Retargeter(config, "vector")
    q_before = retargeter.retarget(smooth_human_trajectory(1)[0])
    moved = human_landmarks(np.full(NUM_JOINTS, 0.5))
    moved[LANDMARK_INDEX["index_tip"]] = np.nan
    q = retargeter.retarget(moved)
    assert in_limits(retargeter, q)
    assert retargeter.last_info.dropped_landmarks == ("index_tip",)
    index = [retargeter.joint_names.index(n) for n in ("index_mcp", "index_pip", "index_dip")]
    others = [retargeter.joint_names.index(n) for n in ("middle_mcp", "middle_pip")]
    assert np.abs(q[index] - q_before[index]).max() < 0.02  # held by the prior
    assert np.abs(q[others] - q_before[others]).max() > 0.1  # the rest still follows
    nan_wrist = human_landmarks()
    nan_wrist[0] = np.nan
    with pytest.raises(RetargetInputError, match="wrist"):
        retargeter.retarget(nan_wrist)


def test_uncertainty_weight_formula():
    sigma = np.array([0.0, 0.01, 0.02, np.inf])
    w = uncertainty_weights(sigma, np.array([0, 0, 1, 0]), np.array([1, 2, 2, 3]), sigma0=0.01)
    assert np.allclose(w, [0.5, 0.2, 1 / 6, 0.0])


@pytest.mark.parametrize("method", ["vector", "dexpilot"])
def test_uncertainty_weighting_reduces_the_jump_of_a_corrupted_fingertip(avi_config, method):
    """A fingertip landmark jumps 5 cm for a few frames while the tracker reports sigma = 5 cm."""
    frames = smooth_human_trajectory(60, seed=2)
    corrupted = frames.copy()
    bad = slice(30, 36)
    tip = LANDMARK_INDEX["index_tip"]
    corrupted[bad, tip] += np.array([-0.03, 0.02, -0.035])
    sigma = np.full((len(frames), 21), 0.004)
    sigma[bad, tip] = 0.05

    def max_jump(config, with_sigma):
        retargeter = Retargeter(config, method)
        q = np.array([retargeter.retarget(lm, s if with_sigma else None) for lm, s in zip(corrupted, sigma)])
        return np.abs(np.diff(q, axis=0))[25:40].max()

    weighted = max_jump(avi_config, True)
    unweighted = max_jump(avi_config, False)
    disabled = max_jump(dataclasses.replace(avi_config, uncertainty=dataclasses.replace(avi_config.uncertainty,
                                                                                          enabled=False)), True)
    assert unweighted == pytest.approx(disabled)
    assert weighted < 0.5 * unweighted, (weighted, unweighted)


def test_tri_finger_hand_works_through_config_only(tri_config):
    retargeter = Retargeter(tri_config)
    assert set(retargeter.joint_names) >= {"a_swivel", "b_flex2", "b_flex3", "c_flex3"}
    assert "b_flex3" not in retargeter.driven_joint_names
    for landmarks in smooth_human_trajectory(30):
        q = retargeter.retarget(landmarks)
        assert in_limits(retargeter, q)
        b2, b3 = q[retargeter.joint_names.index("b_flex2")], q[retargeter.joint_names.index("b_flex3")]
        assert b3 == pytest.approx(0.8 * b2)
    # The extra frame c_tip exists only through the config.
    assert not RobotHandKinematics(tri_config.urdf_path).has_frame("c_tip")
    assert retargeter.kinematics.has_frame("c_tip")


def test_wrist_rotation_input_is_equivalent_to_wrist_frame_landmarks(avi_config):
    a, b = Retargeter(avi_config, "dexpilot"), Retargeter(avi_config, "dexpilot")
    rotation = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix()
    translation = np.array([0.1, -0.2, 0.5])
    for landmarks in smooth_human_trajectory(10):
        q_wrist = a.retarget(landmarks)
        q_camera = b.retarget(landmarks @ rotation.T + translation, wrist_rotation=rotation)
        assert np.allclose(q_wrist, q_camera, atol=1e-9)


def test_estimated_wrist_rotation_recovers_the_true_one():
    rotation = Rotation.from_rotvec([0.4, 0.2, -1.0]).as_matrix()
    for side in ("right", "left"):
        landmarks = human_landmarks(rotation=rotation, side=side)
        estimate = estimate_wrist_rotation(landmarks, side)
        angle = np.linalg.norm(Rotation.from_matrix(estimate.T @ rotation).as_rotvec())
        assert angle < np.deg2rad(8)
    with pytest.raises(RetargetInputError, match="degenerate"):
        estimate_wrist_rotation(np.zeros((21, 3)))


def test_left_config_mirrors_the_right_one(avi_config):
    left = load_retarget_config(AVI_LEFT_CONFIG)
    assert left.side == "left" and Path(left.urdf_path).name == "avi_hand_16dof_left.urdf"
    right_r, left_r = Retargeter(avi_config, "dexpilot"), Retargeter(left, "dexpilot")
    # A right robot driven by a left human hand through the mirror option.
    mirrored = Retargeter(dataclasses.replace(avi_config, mirror=True, side="left"), "dexpilot")
    model = default_hand_model()
    angles = np.clip(np.random.default_rng(4).uniform(0, 0.8, (5, NUM_JOINTS)) * model.joint_upper,
                     model.joint_lower, model.joint_upper)
    for a in angles:
        q_right = right_r.retarget(human_landmarks(a, side="right"))
        q_left = left_r.retarget(human_landmarks(a, side="left"))
        q_mirror = mirrored.retarget(human_landmarks(a, side="left"))
        assert np.allclose(q_right, q_left, atol=1e-5)
        assert np.allclose(q_right, q_mirror, atol=1e-5)


def test_low_pass_filter_moves_alpha_of_the_way(avi_config):
    slow = Retargeter(dataclasses.replace(avi_config, low_pass_alpha=0.2), "vector")
    open_hand = human_landmarks()
    fist = human_landmarks(np.full(NUM_JOINTS, 0.9) * default_hand_model().joint_upper)
    start = slow.retarget(open_hand)
    filtered = slow.retarget(fist)
    raw = slow.last_info.unfiltered
    assert np.abs(raw - start).max() > 0.3
    assert np.allclose(filtered, start + 0.2 * (raw - start), atol=1e-9)
    assert in_limits(slow, filtered)


# ------------------------------------------------------------------------------ safety
@pytest.fixture(scope="module")
def avi_limits(avi_config):
    return JointLimits.from_kinematics(RobotHandKinematics(avi_config.urdf_path), avi_config.safety)


def check_command_stream(commands, limits: JointLimits, tolerance=1e-9):
    stamps = np.array([c.stamp for c in commands])
    q = np.array([c.position for c in commands])
    assert np.all(q >= limits.lower - tolerance) and np.all(q <= limits.upper + tolerance)
    dt = np.diff(stamps)
    v = np.diff(q, axis=0) / dt[:, None]
    assert np.all(np.abs(v) <= limits.velocity * (1 + 1e-9) + tolerance), np.abs(v).max(axis=0)
    a = np.diff(v, axis=0) / dt[1:, None]
    assert np.all(np.abs(a) <= limits.acceleration * (1 + 1e-6) + 1e-6), np.abs(a).max(axis=0)
    return v


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31), jitter=st.booleans())
def test_rate_limiter_never_exceeds_position_velocity_acceleration_limits(avi_limits, seed, jitter):
    rng = np.random.default_rng(seed)
    limits = avi_limits
    q = rng.uniform(limits.lower, limits.upper)
    v = np.zeros_like(q)
    stamps, positions = [0.0], [q]
    t = 0.0
    target = rng.uniform(limits.lower - 1, limits.upper + 1)
    for k in range(300):
        if rng.random() < 0.05:
            target = rng.uniform(limits.lower - 1, limits.upper + 1)  # jumps, some out of range
        dt = 0.01 if not jitter else rng.uniform(0.008, 0.012)
        q, v = rate_limit(q, v, target, dt, limits, rng.choice([1.0, 0.3]))
        t += dt
        stamps.append(t)
        positions.append(q)
    commands = [type("C", (), {"stamp": s, "position": p}) for s, p in zip(stamps, positions)]
    if jitter:  # position and velocity are hard limits; acceleration only at a constant period
        q_all = np.array(positions)
        assert np.all(q_all >= limits.lower) and np.all(q_all <= limits.upper)
        v_all = np.diff(q_all, axis=0) / np.diff(stamps)[:, None]
        assert np.all(np.abs(v_all) <= limits.velocity * (1 + 1e-9))
    else:
        check_command_stream(commands, limits)


def run_filter(flt: CommandSafetyFilter, schedule, t_end, period=0.01):
    """schedule(t) -> (target or None, tracking_state) or 'silent'; returns the commands."""
    commands = []
    t = 0.0
    while t <= t_end + 1e-12:
        item = schedule(t)
        if item != "silent":
            flt.update(t, *item)
        commands.append(flt.step(t))
        t = round(t + period, 9)
    return commands


def test_watchdog_holds_after_the_stale_timeout_and_never_snaps_to_zero(avi_config, avi_limits):
    safety = dataclasses.replace(avi_config.safety, lost_behavior="hold", stale_timeout_ms=150, engage_confirm_ms=50)
    flt = CommandSafetyFilter(avi_limits, safety)
    target = np.clip(np.full(16, 0.8), avi_limits.lower, avi_limits.upper)
    commands = run_filter(flt, lambda t: (target, TrackingState.OK) if t < 1.0 else "silent", 2.0)
    states = {round(c.stamp, 3): c.state for c in commands}
    assert states[0.04] is FilterState.IDLE and states[0.05] is FilterState.ENGAGING
    assert states[0.99] is FilterState.TRACKING
    assert states[1.14] is FilterState.TRACKING  # last input at 0.99 + 150 ms = 1.14: not yet stale
    assert states[1.15] is FilterState.HOLDING
    held = commands[-1].position
    assert np.allclose(held, target, atol=0.05)  # held near the last command, not zeros
    assert np.allclose(commands[-1].velocity, 0.0)
    check_command_stream(commands, avi_limits)


def test_watchdog_opens_at_limited_velocity_when_configured(avi_config, avi_limits):
    safety = dataclasses.replace(avi_config.safety, lost_behavior="open", open_pose={"thumb_rotation": 0.5},
                                 lost_velocity_scale=0.25, engage_confirm_ms=0)
    flt = CommandSafetyFilter(avi_limits, safety)
    fist = np.clip(np.full(16, 1.2), avi_limits.lower, avi_limits.upper)
    commands = run_filter(flt, lambda t: (fist, TrackingState.OK) if t < 1.5 else (None, TrackingState.LOST), 4.0)
    after = [c for c in commands if c.stamp > 1.5]
    assert after[0].state is FilterState.OPENING
    v = check_command_stream(commands, avi_limits)
    speeds = np.abs(v[[i for i, c in enumerate(commands[1:]) if c.stamp > 1.8]])
    assert np.all(speeds <= 0.25 * avi_limits.velocity + 1e-9)
    assert np.allclose(after[-1].position, flt.open_pose, atol=1e-6)
    assert flt.open_pose[avi_limits.names.index("thumb_rotation")] == 0.5
    assert np.abs(np.diff([c.position for c in commands], axis=0)).max() < 0.1  # no snap


def test_re_engagement_waits_the_confirm_time_and_ramps_smoothly(avi_config, avi_limits):
    safety = dataclasses.replace(avi_config.safety, lost_behavior="hold", engage_confirm_ms=100,
                                 engage_velocity_scale=0.3, engage_ramp_ms=1e12)
    flt = CommandSafetyFilter(avi_limits, safety)
    a = np.clip(np.full(16, 0.2), avi_limits.lower, avi_limits.upper)
    b = np.clip(np.full(16, 1.0), avi_limits.lower, avi_limits.upper)

    def schedule(t):
        if t < 1.0:
            return a, TrackingState.OK
        if t < 1.5:
            return None, TrackingState.LOST
        return b, TrackingState.VISION_ONLY

    commands = run_filter(flt, schedule, 4.0)
    by_time = {round(c.stamp, 3): c for c in commands}
    assert by_time[1.0].state is FilterState.HOLDING
    assert by_time[1.59].state is FilterState.HOLDING  # valid since 1.50, confirm 100 ms
    assert by_time[1.6].state is FilterState.ENGAGING
    engaging = [i for i, c in enumerate(commands) if c.state is FilterState.ENGAGING]
    v = check_command_stream(commands, avi_limits)
    assert np.all(np.abs(v[[i - 1 for i in engaging]]) <= 0.3 * avi_limits.velocity * (1 + 1e-6))
    assert commands[-1].state is FilterState.TRACKING
    assert np.allclose(commands[-1].position, b, atol=1e-6)


def test_engaging_speeds_up_to_catch_a_fast_target(avi_config, avi_limits):
    safety = dataclasses.replace(avi_config.safety, engage_confirm_ms=0, engage_velocity_scale=0.2,
                                 engage_ramp_ms=400)
    flt = CommandSafetyFilter(avi_limits, safety)
    centre = 0.5 * (avi_limits.lower + avi_limits.upper)
    amplitude = 0.3 * (avi_limits.upper - avi_limits.lower)

    def moving(t):  # peak speed ~ 2.8 rad/s on the widest joints: above 0.2 * 6 rad/s
        return centre + amplitude * np.sin(2 * np.pi * 0.7 * t), TrackingState.OK

    commands = run_filter(flt, moving, 3.0)
    v = check_command_stream(commands, avi_limits)
    first = commands[0].stamp  # engage_confirm_ms = 0: ENGAGING from the first step
    assert commands[0].state is FilterState.ENGAGING
    for i, c in enumerate(commands[1:]):
        if c.state is FilterState.ENGAGING:
            bound = min(1.0, 0.2 + 0.8 * (c.stamp - first) / 0.4) * avi_limits.velocity
            assert np.all(np.abs(v[i]) <= bound + 1e-9)
    assert commands[-1].state is FilterState.TRACKING


def test_commands_are_gated_on_the_tracking_state(avi_config, avi_limits):
    safety = dataclasses.replace(avi_config.safety, engage_states=("ok",), engage_confirm_ms=0)
    start = np.clip(np.full(16, 0.3), avi_limits.lower, avi_limits.upper)
    flt = CommandSafetyFilter(avi_limits, safety, initial_position=start)
    far = np.clip(np.full(16, 1.2), avi_limits.lower, avi_limits.upper)
    for state in (TrackingState.LOST, TrackingState.DEGRADED, TrackingState.IMU_ONLY):
        commands = run_filter(flt, lambda t, s=state: (far, s), 0.5)
        assert all(c.state is FilterState.IDLE for c in commands)
        assert np.allclose(commands[-1].position, start)
        flt.reset(start)
    assert not flt.update(0.0, np.full(16, np.nan), TrackingState.OK)  # non-finite target: invalid
    commands = run_filter(flt, lambda t: (far, TrackingState.OK), 3.0)
    assert commands[-1].state is FilterState.TRACKING
    assert np.allclose(commands[-1].position, far)


def test_duplicate_or_backward_timestamps_do_not_move_the_robot(avi_config, avi_limits):
    flt = CommandSafetyFilter(avi_limits, dataclasses.replace(avi_config.safety, engage_confirm_ms=0))
    target = np.clip(np.full(16, 1.0), avi_limits.lower, avi_limits.upper)
    flt.update(0.0, target, TrackingState.OK)
    flt.step(0.0)
    first = flt.step(0.01).position
    assert np.allclose(flt.step(0.01).position, first)
    assert np.allclose(flt.step(0.005).position, first)
    assert not flt.update(-1.0, target, TrackingState.OK)


def test_pinch_events_use_hysteresis(avi_config):
    detector = PinchDetector(avi_config.safety.pinch)  # start 2 cm, end 3.5 cm
    landmarks = human_landmarks()
    thumb, index = LANDMARK_INDEX["thumb_tip"], LANDMARK_INDEX["index_tip"]
    events = []
    distances = [0.06, 0.03, 0.021, 0.019, 0.025, 0.018, 0.034, 0.03, 0.036, 0.05, 0.01]
    for k, d in enumerate(distances):
        frame = landmarks.copy()
        frame[index] = frame[thumb] + [d, 0.0, 0.0]
        events += detector.update(k * 0.1, frame)
    index_events = [(round(e.stamp, 1), e.kind) for e in events if e.finger == "index"]
    assert index_events == [(0.3, "start"), (0.8, "end"), (1.0, "start")]
    assert detector.active["index"]
    lost = detector.update(1.1, None, valid=False)
    assert [(e.finger, e.kind) for e in lost] == [("index", "end")]
    nan_frame = landmarks.copy()
    nan_frame[index] = np.nan
    assert detector.update(1.2, nan_frame) == []


def test_tracking_state_values_match_the_hand_pose_message():
    msg = pytest.importorskip("avi_ht_ros.msg")
    for state in TrackingState:
        assert getattr(msg.HandPose, f"TRACKING_{state.name}") == state.value


# ------------------------------------------------------------------------------ benchmark
def test_benchmark_smoke_runs_ours_and_reports_every_metric(capsys):
    from avi_ht_ros.retarget.bench import format_benchmark_table, run_retarget_benchmark

    result = run_retarget_benchmark(duration_s=0.5, dex=(), progress=False, print_table=False)
    assert set(result["methods"]) == {"ours vector", "ours position", "ours dexpilot",
                                      "ours vector occluded +sigma", "ours vector occluded",
                                      "ours dexpilot occluded +sigma", "ours dexpilot occluded"}
    for metrics in result["methods"].values():
        assert metrics["limit_violations"] == 0
        assert np.isfinite([metrics["p50_ms"], metrics["p99_ms"], metrics["vector_error_mm"],
                            metrics["smoothness_rad_s"]]).all()
    assert "ours dexpilot" in format_benchmark_table(result)


@pytest.mark.slow
def test_benchmark_against_dex_retargeting():
    from avi_ht_ros.retarget.bench import run_retarget_benchmark

    result = run_retarget_benchmark(duration_s=2.0, progress=False, print_table=False)
    assert {"dex vector", "dex dexpilot"} <= set(result["methods"])
    assert result["ratios"]["vector"]["vector_error_mm"] < 1.0
