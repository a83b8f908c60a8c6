"""Hand skeleton contract, forward kinematics (NumPy and torch), limits, mirroring."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from avi_ht_ros.common import hand_model as hm
from avi_ht_ros.common.hand_model import (
    BONE_INDEX,
    BONE_NAMES,
    BONE_PARENT,
    FINGERTIP_LANDMARKS,
    JOINT_INDEX,
    JOINT_NAMES,
    LANDMARK_INDEX,
    LANDMARK_NAMES,
    MEDIAPIPE_INDEX_OF_LANDMARK,
    SKELETON_EDGES,
    HandModel,
    forward_kinematics_numpy,
    forward_kinematics_torch,
    kinematic_hop_distance,
    mirror_landmarks_local,
    mirror_rotations_local,
)

MODEL = HandModel.default()
IDENTITY = np.eye(3)
ORIGIN = np.zeros(3)


def random_angles(rng, shape=()):
    return rng.uniform(MODEL.joint_lower, MODEL.joint_upper, size=shape + (22,))


def random_wrist(rng, shape=()):
    count = int(np.prod(shape)) if shape else 1
    rotations = Rotation.random(count, random_state=rng.integers(1 << 31)).as_matrix().reshape(shape + (3, 3))
    return rotations, rng.normal(0.0, 0.3, size=shape + (3,))


def zero_pose(side="right", scale=1.0):
    return forward_kinematics_numpy(np.zeros(22), IDENTITY, ORIGIN, scale=scale, side=side)


# ---------------------------------------------------------------------- contract
def test_names_follow_the_architecture_contract():
    assert len(JOINT_NAMES) == 22 and len(set(JOINT_NAMES)) == 22
    assert JOINT_NAMES[:5] == ("thumb_cmc_flex", "thumb_cmc_abd", "thumb_mcp_flex", "thumb_mcp_abd", "thumb_ip_flex")
    for k, finger in enumerate(("index", "middle", "ring", "pinky")):
        assert JOINT_NAMES[5 + 4 * k: 9 + 4 * k] == tuple(
            f"{finger}_{j}" for j in ("mcp_flex", "mcp_abd", "pip_flex", "dip_flex"))
    assert JOINT_NAMES[21] == "pinky_cmc_flex"
    assert len(LANDMARK_NAMES) == 21
    assert LANDMARK_NAMES[0] == "wrist" and LANDMARK_NAMES[4] == "thumb_tip"
    assert [LANDMARK_NAMES[i] for i in (5, 9, 13, 17)] == ["index_mcp", "middle_mcp", "ring_mcp", "pinky_mcp"]
    assert all(MEDIAPIPE_INDEX_OF_LANDMARK[name] == i for i, name in enumerate(LANDMARK_NAMES))
    assert FINGERTIP_LANDMARKS == {"thumb": 4, "index": 8, "middle": 12, "ring": 16, "pinky": 20}


def test_bone_tree_is_a_tree_rooted_at_the_palm():
    assert BONE_NAMES[0] == "palm" and BONE_PARENT[0] == -1
    assert len(BONE_PARENT) == len(BONE_NAMES)
    assert all(0 <= parent < child for child, parent in enumerate(BONE_PARENT) if child > 0)


def test_skeleton_edges_connect_all_landmarks_as_mediapipe_does():
    assert len(SKELETON_EDGES) == 21
    reached, frontier = {0}, [0]
    while frontier:
        node = frontier.pop()
        for a, b in SKELETON_EDGES:
            for u, v in ((a, b), (b, a)):
                if u == node and v not in reached:
                    reached.add(v)
                    frontier.append(v)
    assert reached == set(range(21))


# ---------------------------------------------------------------------- zero pose
def test_zero_pose_geometry_is_a_plausible_adult_right_hand():
    fk = zero_pose()
    lm = fk.landmarks
    assert np.allclose(lm[0], 0.0)
    assert 0.17 < np.linalg.norm(lm[LANDMARK_INDEX["middle_tip"]]) < 0.20  # hand length
    for finger in ("index", "middle", "ring", "pinky"):
        chain = [LANDMARK_INDEX[f"{finger}_{j}"] for j in ("mcp", "pip", "dip", "tip")]
        segments = np.linalg.norm(np.diff(lm[chain], axis=0), axis=-1)
        assert np.all((segments > 0.015) & (segments < 0.05)), (finger, segments)
        assert 0.06 < lm[chain[0], 0] < 0.10  # MCP knuckles ~6-10 cm from the wrist
        for bone in ("proximal", "intermediate", "distal"):
            assert fk.bone_rotations[BONE_INDEX[f"{finger}_{bone}"]][0, 0] > 0.95  # fingers along +x
    assert lm[LANDMARK_INDEX["index_tip"], 1] > lm[LANDMARK_INDEX["pinky_tip"], 1]
    assert lm[LANDMARK_INDEX["thumb_tip"], 1] > 0.04  # right thumb on +y
    # Finger landmarks are ordered proximal -> distal along x.
    for finger in ("index", "middle", "ring", "pinky"):
        xs = lm[[LANDMARK_INDEX[f"{finger}_{j}"] for j in ("mcp", "pip", "dip", "tip")], 0]
        assert np.all(np.diff(xs) > 0)
    assert np.isclose(MODEL.hand_length, np.linalg.norm(lm[LANDMARK_INDEX["middle_tip"]]))


def test_left_zero_pose_has_the_thumb_on_minus_y():
    assert zero_pose("left").landmarks[LANDMARK_INDEX["thumb_tip"], 1] < -0.04


@pytest.mark.parametrize("side", ["left", "right"])
def test_bone_frames_are_proper_rotations_and_bones_rigid(side):
    rng = np.random.default_rng(1)
    angles = random_angles(rng, (64,))
    rotation, translation = random_wrist(rng, (64,))
    fk = forward_kinematics_numpy(angles, rotation, translation, scale=1.2, side=side)
    r = fk.bone_rotations
    assert np.allclose(r @ np.swapaxes(r, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(r), 1.0)
    # Consecutive finger landmarks are exactly one scaled bone length apart, in any pose.
    for finger in ("index", "middle", "ring", "pinky"):
        chain = [LANDMARK_INDEX[f"{finger}_{j}"] for j in ("mcp", "pip", "dip", "tip")]
        bones = [BONE_INDEX[f"{finger}_{b}"] for b in ("proximal", "intermediate", "distal")]
        seg = np.linalg.norm(np.diff(fk.landmarks[:, chain], axis=1), axis=-1)
        assert np.allclose(seg, 1.2 * MODEL.bone_lengths[bones])
    # Bone origins of children are the parents' distal ends.
    child, parent = BONE_INDEX["index_distal"], BONE_INDEX["index_intermediate"]
    end = fk.bone_origins[:, parent] + 1.2 * MODEL.bone_lengths[parent] * fk.bone_rotations[:, parent, :, 0]
    assert np.allclose(end, fk.bone_origins[:, child])


# ---------------------------------------------------------------------- angle semantics
@pytest.mark.parametrize("side", ["left", "right"])
def test_positive_flexion_curls_towards_the_palm(side):
    for finger in ("index", "middle", "ring", "pinky"):
        for joint in ("mcp_flex", "pip_flex", "dip_flex"):
            angles = np.zeros(22)
            angles[JOINT_INDEX[f"{finger}_{joint}"]] = 0.5
            moved = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, side=side).landmarks
            tip = FINGERTIP_LANDMARKS[finger]
            assert moved[tip, 2] < zero_pose(side).landmarks[tip, 2] - 0.003, (finger, joint)


@pytest.mark.parametrize("side, radial_sign", [("right", 1.0), ("left", -1.0)])
def test_positive_abduction_spreads_away_from_the_middle_finger(side, radial_sign):
    rest = zero_pose(side).landmarks
    for finger, direction in (("index", 1.0), ("middle", 1.0), ("ring", -1.0), ("pinky", -1.0)):
        angles = np.zeros(22)
        angles[JOINT_INDEX[f"{finger}_mcp_abd"]] = 0.3
        tip = FINGERTIP_LANDMARKS[finger]
        moved = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, side=side).landmarks
        # y is radial for the right hand and ulnar for the left one.
        assert (moved[tip, 1] - rest[tip, 1]) * radial_sign * direction > 0.01, finger


def test_thumb_flexion_crosses_the_palm_and_abduction_moves_it_away():
    rest = zero_pose().landmarks[LANDMARK_INDEX["thumb_tip"]]
    flexed = np.zeros(22)
    flexed[[JOINT_INDEX["thumb_cmc_flex"], JOINT_INDEX["thumb_mcp_flex"], JOINT_INDEX["thumb_ip_flex"]]] = 0.6
    tip = forward_kinematics_numpy(flexed, IDENTITY, ORIGIN).landmarks[LANDMARK_INDEX["thumb_tip"]]
    assert tip[1] < rest[1] - 0.02  # towards the pinky side
    abducted = np.zeros(22)
    abducted[JOINT_INDEX["thumb_cmc_abd"]] = 0.6
    tip = forward_kinematics_numpy(abducted, IDENTITY, ORIGIN).landmarks[LANDMARK_INDEX["thumb_tip"]]
    index_mcp = zero_pose().landmarks[LANDMARK_INDEX["index_mcp"]]
    assert np.linalg.norm(tip - index_mcp) > np.linalg.norm(rest - index_mcp) + 0.01


def test_pinky_cmc_flexion_cups_the_palm():
    angles = np.zeros(22)
    angles[JOINT_INDEX["pinky_cmc_flex"]] = 0.4
    moved = forward_kinematics_numpy(angles, IDENTITY, ORIGIN).landmarks
    rest = zero_pose().landmarks
    assert moved[LANDMARK_INDEX["pinky_mcp"], 2] < rest[LANDMARK_INDEX["pinky_mcp"], 2] - 0.005
    assert np.allclose(moved[LANDMARK_INDEX["ring_mcp"]], rest[LANDMARK_INDEX["ring_mcp"]])


# ---------------------------------------------------------------------- numpy vs torch
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), side=st.sampled_from(["left", "right"]),
       batch=st.sampled_from([(), (1,), (5,), (2, 3)]))
def test_numpy_and_torch_agree(seed, side, batch):
    rng = np.random.default_rng(seed)
    angles = random_angles(rng, batch) * 1.3  # also beyond the limits
    rotation, translation = random_wrist(rng, batch)
    scale = rng.uniform(0.85, 1.15, size=batch)
    expected = forward_kinematics_numpy(angles, rotation, translation, scale=scale, side=side)
    got = forward_kinematics_torch(torch.tensor(angles), torch.tensor(rotation), torch.tensor(translation),
                                   scale=torch.tensor(scale), side=side)
    assert got.landmarks.shape == batch + (21, 3)
    assert got.bone_rotations.shape == batch + (len(BONE_NAMES), 3, 3)
    assert np.abs(got.landmarks.numpy() - expected.landmarks).max() < 1e-6
    assert np.abs(got.bone_rotations.numpy() - expected.bone_rotations).max() < 1e-6
    assert np.abs(got.bone_origins.numpy() - expected.bone_origins).max() < 1e-6


def test_leading_dimensions_broadcast():
    rng = np.random.default_rng(3)
    angles = random_angles(rng, (4, 1))
    scales = np.array([0.9, 1.0, 1.1])
    fk = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, scale=scales)
    assert fk.landmarks.shape == (4, 3, 21, 3) and fk.scale.shape == (4, 3)
    # At the identity wrist the whole hand scales linearly.
    assert np.allclose(fk.landmarks[:, 2], 1.1 * fk.landmarks[:, 1])


def test_float32_torch_matches_float64_closely():
    rng = np.random.default_rng(4)
    angles = random_angles(rng, (16,))
    exact = forward_kinematics_numpy(angles, IDENTITY, ORIGIN).landmarks
    single = forward_kinematics_torch(torch.tensor(angles, dtype=torch.float32), torch.eye(3), torch.zeros(3))
    assert single.landmarks.dtype == torch.float32
    assert np.abs(single.landmarks.numpy() - exact).max() < 1e-6


def test_torch_fk_gradcheck_float64():
    rng = np.random.default_rng(5)
    angles = torch.tensor(random_angles(rng, (1,)), requires_grad=True)
    rotation = torch.tensor(random_wrist(rng, (1,))[0], requires_grad=True)
    translation = torch.tensor(rng.normal(size=(1, 3)), requires_grad=True)
    scale = torch.tensor([1.1], dtype=torch.float64, requires_grad=True)

    def landmarks(a, r, t, s):
        return forward_kinematics_torch(a, r, t, scale=s, side="left").landmarks

    assert torch.autograd.gradcheck(landmarks, (angles, rotation, translation, scale))


def test_every_joint_angle_moves_some_landmark():
    jacobian = torch.autograd.functional.jacobian(
        lambda a: forward_kinematics_torch(a, torch.eye(3, dtype=torch.float64),
                                           torch.zeros(3, dtype=torch.float64)).landmarks,
        torch.full((22,), 0.2, dtype=torch.float64))
    moved = jacobian.abs().amax(dim=(0, 1))
    assert torch.all(moved > 1e-3), [JOINT_NAMES[i] for i in torch.nonzero(moved <= 1e-3).flatten()]


# ---------------------------------------------------------------------- limits
def test_limits_are_anatomical_and_clip_respects_them():
    lower, upper = np.rad2deg(MODEL.joint_lower), np.rad2deg(MODEL.joint_upper)
    assert np.all(lower < upper) and np.all(lower >= -30) and np.all(upper <= 115)
    rng = np.random.default_rng(6)
    wild = rng.uniform(-3, 3, size=(200, 22))
    clipped = MODEL.clip_joint_angles(wild)
    assert np.all(MODEL.within_limits(clipped))
    assert not np.all(MODEL.within_limits(wild))
    inside = random_angles(rng, (50,))
    assert np.array_equal(MODEL.clip_joint_angles(inside), inside)
    assert np.array_equal(MODEL.clip_joint_angles(clipped), clipped)
    clipped_torch = MODEL.clip_joint_angles(torch.tensor(wild))
    assert np.allclose(clipped_torch.numpy(), clipped)
    assert MODEL.within_limits(inside).shape == (50,)


# ---------------------------------------------------------------------- mirroring
def test_mirroring_is_an_involution():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(10, 21, 3))
    rotations = Rotation.random(10, random_state=1).as_matrix()
    assert np.array_equal(mirror_landmarks_local(mirror_landmarks_local(points)), points)
    assert np.array_equal(mirror_rotations_local(mirror_rotations_local(rotations)), rotations)
    mirrored = mirror_rotations_local(rotations)
    assert np.allclose(np.linalg.det(mirrored), 1.0)
    assert not np.allclose(mirror_landmarks_local(points), points)
    assert torch.equal(mirror_landmarks_local(torch.tensor(points)), torch.tensor(mirror_landmarks_local(points)))


def test_mirrored_right_fk_is_left_fk():
    rng = np.random.default_rng(8)
    angles = random_angles(rng, (20,))
    right = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, side="right")
    left = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, side="left")
    assert np.allclose(mirror_landmarks_local(right.landmarks), left.landmarks)
    assert np.allclose(mirror_rotations_local(right.bone_rotations), left.bone_rotations)
    # With a wrist pose, the mirror acts in the wrist frame.
    rotation, translation = random_wrist(rng, (20,))
    posed_left = forward_kinematics_numpy(angles, rotation, translation, side="left")
    expected = np.einsum("bij,bkj->bki", rotation, mirror_landmarks_local(right.landmarks)) + translation[:, None]
    assert np.allclose(posed_left.landmarks, expected)
    # Left bone frames still have x distal and z dorsal: the flat left hand's z is +z.
    assert np.allclose(zero_pose("left").bone_rotations[BONE_INDEX["middle_proximal"]], np.eye(3))


# ---------------------------------------------------------------------- kinematic graph
def test_hop_distance_is_derived_from_the_bone_tree():
    assert kinematic_hop_distance("index_proximal", "index_proximal") == 0
    assert kinematic_hop_distance("index_proximal", "index_intermediate") == 1
    assert kinematic_hop_distance("index_proximal", "index_distal") == 2
    assert kinematic_hop_distance("palm", "pinky_proximal") == 2
    assert kinematic_hop_distance("thumb_distal", "pinky_distal") == 7
    matrix = hm.bone_hop_distance_matrix()
    assert np.array_equal(matrix, matrix.T) and np.all(np.diag(matrix) == 0)
    n = len(BONE_NAMES)
    for a in range(n):
        for b in range(n):
            assert matrix[a, b] == len(hm.bone_path(a, b)) - 1
            assert np.all(matrix[a, b] <= matrix[a] + matrix[:, b])  # triangle inequality
    with pytest.raises(KeyError):
        kinematic_hop_distance("index_middle", "palm")


# ---------------------------------------------------------------------- validation
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="joint_angles"):
        forward_kinematics_numpy(np.zeros(21), IDENTITY, ORIGIN)
    with pytest.raises(ValueError, match="wrist_rotation"):
        forward_kinematics_numpy(np.zeros(22), np.eye(4), ORIGIN)
    with pytest.raises(ValueError, match="side"):
        forward_kinematics_torch(torch.zeros(22), torch.eye(3), torch.zeros(3), side="both")
    with pytest.raises(ValueError, match="bone_lengths"):
        HandModel(np.ones(3), MODEL.bone_rest_origins, MODEL.bone_rest_rotations, MODEL.joint_lower,
                  MODEL.joint_upper)
    with pytest.raises(ValueError, match="joint_lower"):
        HandModel(MODEL.bone_lengths, MODEL.bone_rest_origins, MODEL.bone_rest_rotations, MODEL.joint_upper,
                  MODEL.joint_lower)


def test_scaled_model_equals_fk_scale():
    rng = np.random.default_rng(9)
    angles = random_angles(rng, (5,))
    big = HandModel.default().scaled(1.15)
    a = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, model=big).landmarks
    b = forward_kinematics_numpy(angles, IDENTITY, ORIGIN, scale=1.15).landmarks
    assert np.allclose(a, b)
    assert np.isclose(big.hand_length, 1.15 * MODEL.hand_length)


def test_fk_constants_first_built_in_inference_mode_still_serve_autograd():
    """The tracker runs FK inside torch.inference_mode(); the cached constants it builds
    must not be inference tensors, or training later in the same process fails."""
    import torch

    model = hm.HandModel.default()
    angles = torch.zeros(1, hm.NUM_JOINTS, dtype=torch.float64)
    rotation = torch.eye(3, dtype=torch.float64)[None]
    translation = torch.zeros(1, 3, dtype=torch.float64)
    scale = torch.ones(1, dtype=torch.float64)
    with torch.inference_mode():
        hm.forward_kinematics_torch(angles, rotation, translation, scale, "right", model=model)
    angles = angles.clone().requires_grad_(True)
    landmarks = hm.forward_kinematics_torch(angles, rotation, translation, scale, "right", model=model).landmarks
    landmarks.sum().backward()
    assert angles.grad is not None and torch.isfinite(angles.grad).all()
