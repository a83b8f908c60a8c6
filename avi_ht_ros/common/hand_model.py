"""Articulated hand skeleton: 22 joint angles -> 21 landmarks and 17 bone frames.

UmeTrack-style kinematic hand (Han et al., SIGGRAPH Asia 2022): a rigid palm (the
hand back, root of the bone tree, origin at the wrist) carrying five kinematic chains.
Every articulation is a scalar angle about a fixed axis of the child bone's rest frame:

* flexion (``*_flex``) rotates about the bone's local **+y** axis, so a positive angle
  curls the bone towards the palm (its x axis turns towards its -z, the palmar side);
* abduction (``*_abd``) rotates about the bone's local **z** (dorsal) axis, signed per
  finger so that a positive angle spreads the finger away from the middle finger (the
  middle finger itself: positive = radially, towards the index) and the thumb away from
  the palm.

A two-angle joint (CMC/MCP) applies ``R_z(abduction) @ R_y(flexion)``: abduction about
the parent-fixed dorsal axis, then flexion about the abducted lateral axis.

Frames follow docs/ARCHITECTURE.md: every bone frame has its origin at the bone's
proximal joint, x distal, z dorsal, y = z x x. The model geometry is that of a
right hand (y radial, thumb on +y); a left hand is the exact mirror image through the
wrist x-z plane (local positions y -> -y, rotations R -> S R S with S = diag(1,-1,1)),
and joint angles mean the same anatomical motion on both hands.

Two implementations share one code path (:func:`_forward_kinematics`): NumPy for the
simulator/tools, torch (differentiable, batched, no Python loop over the batch) for the
training loss and inference. Both evaluate the bone tree level by level (4 levels), so
the per-call cost is a handful of batched 3x3 matrix products.
"""
from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence, Union

import numpy as np
from scipy.spatial.transform import Rotation

# --------------------------------------------------------------------------------------
# Names and topology (the contract of docs/ARCHITECTURE.md; order is fixed)
# --------------------------------------------------------------------------------------

FINGER_NAMES: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")
SIDES: tuple[str, ...] = ("left", "right")

JOINT_NAMES: tuple[str, ...] = (
    "thumb_cmc_flex", "thumb_cmc_abd", "thumb_mcp_flex", "thumb_mcp_abd", "thumb_ip_flex",
    "index_mcp_flex", "index_mcp_abd", "index_pip_flex", "index_dip_flex",
    "middle_mcp_flex", "middle_mcp_abd", "middle_pip_flex", "middle_dip_flex",
    "ring_mcp_flex", "ring_mcp_abd", "ring_pip_flex", "ring_dip_flex",
    "pinky_mcp_flex", "pinky_mcp_abd", "pinky_pip_flex", "pinky_dip_flex",
    "pinky_cmc_flex",
)
NUM_JOINTS = len(JOINT_NAMES)  # 22
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}
FINGER_OF_JOINT: tuple[str, ...] = tuple(name.split("_")[0] for name in JOINT_NAMES)

LANDMARK_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)  # 21
LANDMARK_INDEX: dict[str, int] = {name: i for i, name in enumerate(LANDMARK_NAMES)}
#: Our landmark order *is* MediaPipe Hands' order, so this is the identity; it exists so
#: code converting to/from MediaPipe states the mapping instead of assuming it.
MEDIAPIPE_INDEX_OF_LANDMARK: dict[str, int] = dict(LANDMARK_INDEX)
FINGERTIP_LANDMARKS: dict[str, int] = {f: LANDMARK_INDEX[f"{f}_tip"] for f in FINGER_NAMES}
#: Landmarks of each finger from proximal to tip (the wrist belongs to no finger).
LANDMARKS_OF_FINGER: dict[str, tuple[int, ...]] = {
    f: tuple(i for i, n in enumerate(LANDMARK_NAMES) if n.startswith(f + "_"))
    for f in FINGER_NAMES
}

#: MediaPipe HAND_CONNECTIONS: landmark index pairs to draw the skeleton.
SKELETON_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)

BONE_NAMES: tuple[str, ...] = (
    "palm",
    "thumb_metacarpal", "thumb_proximal", "thumb_distal",
    "index_proximal", "index_intermediate", "index_distal",
    "middle_proximal", "middle_intermediate", "middle_distal",
    "ring_proximal", "ring_intermediate", "ring_distal",
    "pinky_metacarpal", "pinky_proximal", "pinky_intermediate", "pinky_distal",
)
NUM_BONES = len(BONE_NAMES)  # 17
BONE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BONE_NAMES)}
#: Parent bone index of every bone (-1 for the root ``palm``).
BONE_PARENT: tuple[int, ...] = (
    -1,
    0, 1, 2,
    0, 4, 5,
    0, 7, 8,
    0, 10, 11,
    0, 13, 14, 15,
)
FINGER_OF_BONE: tuple[str, ...] = tuple(
    "palm" if name == "palm" else name.split("_")[0] for name in BONE_NAMES
)

# Which bone each joint angle rotates, and about which axis (``flex``: local y,
# ``abd``: local z times ABDUCTION_SIGN of its finger).
JOINT_BONE: tuple[int, ...] = tuple(
    BONE_INDEX[b] for b in (
        "thumb_metacarpal", "thumb_metacarpal", "thumb_proximal", "thumb_proximal", "thumb_distal",
        "index_proximal", "index_proximal", "index_intermediate", "index_distal",
        "middle_proximal", "middle_proximal", "middle_intermediate", "middle_distal",
        "ring_proximal", "ring_proximal", "ring_intermediate", "ring_distal",
        "pinky_proximal", "pinky_proximal", "pinky_intermediate", "pinky_distal",
        "pinky_metacarpal",
    )
)
JOINT_AXIS: tuple[str, ...] = tuple("abd" if n.endswith("_abd") else "flex" for n in JOINT_NAMES)
#: Sign of a positive abduction as a rotation about the right hand's local +z.
#: Right-hand y is radial: index/middle/thumb spread radially (+), ring/pinky ulnarly (-).
ABDUCTION_SIGN: dict[str, float] = {"thumb": 1.0, "index": 1.0, "middle": 1.0, "ring": -1.0, "pinky": -1.0}

# Each landmark is either a bone origin (its proximal joint) or a fingertip (the distal
# end of a distal bone).
_LANDMARK_SOURCE_BONE: tuple[tuple[str, str], ...] = (
    ("origin", "palm"),
    ("origin", "thumb_metacarpal"), ("origin", "thumb_proximal"), ("origin", "thumb_distal"), ("tip", "thumb_distal"),
    ("origin", "index_proximal"), ("origin", "index_intermediate"), ("origin", "index_distal"), ("tip", "index_distal"),
    ("origin", "middle_proximal"), ("origin", "middle_intermediate"), ("origin", "middle_distal"), ("tip", "middle_distal"),
    ("origin", "ring_proximal"), ("origin", "ring_intermediate"), ("origin", "ring_distal"), ("tip", "ring_distal"),
    ("origin", "pinky_proximal"), ("origin", "pinky_intermediate"), ("origin", "pinky_distal"), ("tip", "pinky_distal"),
)
_TIP_BONES: tuple[int, ...] = tuple(BONE_INDEX[f"{f}_distal"] for f in FINGER_NAMES)
#: Index into concatenate([bone_origins (17), fingertips (5)]) for each landmark.
_LANDMARK_GATHER: np.ndarray = np.array(
    [BONE_INDEX[b] if kind == "origin" else NUM_BONES + _TIP_BONES.index(BONE_INDEX[b])
     for kind, b in _LANDMARK_SOURCE_BONE],
    dtype=np.int64,
)

#: Mirror through the wrist x-z plane: right-hand local <-> left-hand local.
MIRROR_MATRIX: np.ndarray = np.diag([1.0, -1.0, 1.0])
MIRROR_MATRIX.setflags(write=False)
_MIRROR_POINT_SIGN = np.array([1.0, -1.0, 1.0])
_MIRROR_ROTATION_SIGN = np.outer(_MIRROR_POINT_SIGN, _MIRROR_POINT_SIGN)  # (S R S)_ij = s_i s_j R_ij


def _bone_depths() -> tuple[int, ...]:
    depths = []
    for parent in BONE_PARENT:
        depths.append(0 if parent < 0 else depths[parent] + 1)
    return tuple(depths)


BONE_DEPTH: tuple[int, ...] = _bone_depths()
#: Bones grouped by tree depth; every parent is in an earlier group (FK evaluation order).
_BONE_LEVELS: tuple[np.ndarray, ...] = tuple(
    np.array([b for b in range(NUM_BONES) if BONE_DEPTH[b] == d], dtype=np.int64)
    for d in range(max(BONE_DEPTH) + 1)
)


# --------------------------------------------------------------------------------------
# Bone-tree distances
# --------------------------------------------------------------------------------------

BoneRef = Union[str, int]


def bone_index(bone: BoneRef) -> int:
    """Index of a bone given its name or index; ``KeyError``/``IndexError`` if unknown."""
    if isinstance(bone, (int, np.integer)):
        if not 0 <= int(bone) < NUM_BONES:
            raise IndexError(f"bone index {bone} out of range 0..{NUM_BONES - 1}")
        return int(bone)
    if bone not in BONE_INDEX:
        raise KeyError(f"unknown bone {bone!r}; expected one of {', '.join(BONE_NAMES)}")
    return BONE_INDEX[bone]


def bone_adjacency() -> dict[int, tuple[int, ...]]:
    """Undirected neighbour lists of the bone tree (parent and children of each bone)."""
    neighbours: dict[int, list[int]] = {b: [] for b in range(NUM_BONES)}
    for child, parent in enumerate(BONE_PARENT):
        if parent >= 0:
            neighbours[child].append(parent)
            neighbours[parent].append(child)
    return {b: tuple(n) for b, n in neighbours.items()}


def bone_hop_distance_matrix() -> np.ndarray:
    """``[B, B]`` int matrix of shortest-path hop counts in the bone tree (BFS)."""
    adjacency = bone_adjacency()
    distances = np.full((NUM_BONES, NUM_BONES), -1, dtype=np.int64)
    for source in range(NUM_BONES):
        distances[source, source] = 0
        queue = deque([source])
        while queue:
            bone = queue.popleft()
            for neighbour in adjacency[bone]:
                if distances[source, neighbour] < 0:
                    distances[source, neighbour] = distances[source, bone] + 1
                    queue.append(neighbour)
    return distances


_BONE_HOPS = bone_hop_distance_matrix()
_BONE_HOPS.setflags(write=False)


def kinematic_hop_distance(bone_a: BoneRef, bone_b: BoneRef) -> int:
    """Number of joints between two bones along the bone tree (0 for the same bone).

    E.g. ``index_proximal`` -> ``index_distal`` is 2, ``palm`` -> ``pinky_proximal`` is 2
    (through ``pinky_metacarpal``).
    """
    return int(_BONE_HOPS[bone_index(bone_a), bone_index(bone_b)])


def bone_path(bone_a: BoneRef, bone_b: BoneRef) -> tuple[int, ...]:
    """Bone indices on the tree path from ``bone_a`` to ``bone_b``, both ends included."""
    a, b = bone_index(bone_a), bone_index(bone_b)
    ancestors_a = [a]
    while BONE_PARENT[ancestors_a[-1]] >= 0:
        ancestors_a.append(BONE_PARENT[ancestors_a[-1]])
    up_from_b = [b]
    while up_from_b[-1] not in ancestors_a:
        up_from_b.append(BONE_PARENT[up_from_b[-1]])
    common = up_from_b[-1]
    down = ancestors_a[: ancestors_a.index(common) + 1]
    return tuple(down + up_from_b[-2::-1])


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------

def _rest_rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """R_z(yaw) R_y(pitch) R_x(roll): yaw > 0 turns +x towards +y (radial), pitch > 0
    tilts +x towards -z (palmar), roll turns the dorsal axis about the bone."""
    return Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()


def _chain_rest_pose(
    base_origin: Sequence[float],
    rotations: Sequence[np.ndarray],
    lengths: Sequence[float],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rest origins and rotations of a serial chain whose bones start where the
    previous one ends."""
    origins, rest_rotations = [], []
    origin = np.asarray(base_origin, dtype=float)
    for rotation, length in zip(rotations, lengths):
        origins.append(origin)
        rest_rotations.append(rotation)
        origin = origin + rotation[:, 0] * length
    return origins, rest_rotations


# Reference adult right hand (hand length wrist -> middle fingertip 18.5 cm, a typical
# adult value between average female ~17.5 cm and male ~19 cm). Joint centres in the
# palm frame (x distal, y radial, z dorsal, origin at the wrist joint centre); phalanx
# lengths are joint-centre to joint-centre, distal phalanges to the fingertip pad.
_REFERENCE_CHAINS: dict[str, dict[str, Any]] = {
    "thumb": dict(
        bones=("thumb_metacarpal", "thumb_proximal", "thumb_distal"),
        base=(0.028, 0.022, -0.012),
        # Metacarpal points distal-radial (43 deg) and slightly palmar, nail turned
        # radially; phalanges bend back a little towards the index in the rest pose.
        relative_rest=(dict(yaw=0.75, pitch=0.25, roll=-0.9), dict(yaw=-0.2), dict()),
        lengths=(0.046, 0.032, 0.027),
    ),
    "index": dict(
        bones=("index_proximal", "index_intermediate", "index_distal"),
        base=(0.088, 0.024, -0.002), relative_rest=(dict(yaw=0.06), dict(), dict()),
        lengths=(0.041, 0.024, 0.021),
    ),
    "middle": dict(
        bones=("middle_proximal", "middle_intermediate", "middle_distal"),
        base=(0.090, 0.004, 0.0), relative_rest=(dict(), dict(), dict()),
        lengths=(0.045, 0.028, 0.022),
    ),
    "ring": dict(
        bones=("ring_proximal", "ring_intermediate", "ring_distal"),
        base=(0.084, -0.015, -0.003), relative_rest=(dict(yaw=-0.07), dict(), dict()),
        lengths=(0.042, 0.027, 0.022),
    ),
    # The pinky metacarpal is a bone of its own (pinky_cmc_flex cups the palm); it runs
    # from the CMC joint to the pinky MCP at (0.077, -0.032, -0.008).
    "pinky": dict(
        bones=("pinky_metacarpal", "pinky_proximal", "pinky_intermediate", "pinky_distal"),
        base=(0.018, -0.019, -0.003),
        relative_rest="pinky",
        lengths=(None, 0.033, 0.019, 0.019),
    ),
}
_PINKY_MCP = np.array([0.077, -0.032, -0.008])
_PINKY_FINGER_YAW = -0.16

#: Anatomical joint limits in degrees (lower, upper), from goniometry ranges of motion
#: (e.g. Hume et al. 1990, American Academy of Orthopaedic Surgeons), slightly narrowed
#: to comfortable active ranges. Negative flexion = hyperextension.
JOINT_LIMITS_DEG: dict[str, tuple[float, float]] = {
    "thumb_cmc_flex": (-25.0, 45.0), "thumb_cmc_abd": (-15.0, 50.0),
    "thumb_mcp_flex": (-10.0, 60.0), "thumb_mcp_abd": (-10.0, 15.0),
    "thumb_ip_flex": (-15.0, 80.0),
    "index_mcp_flex": (-25.0, 90.0), "index_mcp_abd": (-15.0, 25.0),
    "index_pip_flex": (-5.0, 110.0), "index_dip_flex": (-10.0, 80.0),
    "middle_mcp_flex": (-25.0, 90.0), "middle_mcp_abd": (-15.0, 15.0),
    "middle_pip_flex": (-5.0, 110.0), "middle_dip_flex": (-10.0, 80.0),
    "ring_mcp_flex": (-25.0, 90.0), "ring_mcp_abd": (-15.0, 20.0),
    "ring_pip_flex": (-5.0, 110.0), "ring_dip_flex": (-10.0, 80.0),
    "pinky_mcp_flex": (-25.0, 90.0), "pinky_mcp_abd": (-15.0, 35.0),
    "pinky_pip_flex": (-5.0, 110.0), "pinky_dip_flex": (-10.0, 80.0),
    "pinky_cmc_flex": (-5.0, 25.0),
}
assert tuple(JOINT_LIMITS_DEG) == JOINT_NAMES


def _reference_geometry() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.zeros(NUM_BONES)
    origins = np.zeros((NUM_BONES, 3))
    rotations = np.tile(np.eye(3), (NUM_BONES, 1, 1))
    middle_mcp = np.array(_REFERENCE_CHAINS["middle"]["base"])
    lengths[BONE_INDEX["palm"]] = float(np.linalg.norm(middle_mcp))
    for finger, chain in _REFERENCE_CHAINS.items():
        chain_lengths = list(chain["lengths"])
        if chain["relative_rest"] == "pinky":
            to_mcp = _PINKY_MCP - np.asarray(chain["base"])
            chain_lengths[0] = float(np.linalg.norm(to_mcp))
            metacarpal_yaw = float(np.arctan2(to_mcp[1], to_mcp[0]))
            metacarpal_pitch = float(np.arctan2(-to_mcp[2], np.hypot(to_mcp[0], to_mcp[1])))
            metacarpal = _rest_rotation(yaw=metacarpal_yaw, pitch=metacarpal_pitch)
            finger_rest = _rest_rotation(yaw=_PINKY_FINGER_YAW)
            absolute = [metacarpal, finger_rest, finger_rest, finger_rest]
        else:
            absolute, current = [], np.eye(3)
            for relative in chain["relative_rest"]:
                current = current @ _rest_rotation(**relative)
                absolute.append(current)
        chain_origins, chain_rotations = _chain_rest_pose(chain["base"], absolute, chain_lengths)
        for name, origin, rotation, length in zip(chain["bones"], chain_origins, chain_rotations, chain_lengths):
            index = BONE_INDEX[name]
            origins[index], rotations[index], lengths[index] = origin, rotation, length
    return lengths, origins, rotations


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=float)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class HandModel:
    """Bone geometry and joint limits of a right hand (the left hand is its mirror).

    Attributes:
        bone_lengths: ``[B]`` m, proximal joint to distal joint (distal phalanges: to the
            fingertip; ``palm``: wrist to middle-finger MCP, used for drawing only).
        bone_rest_origins: ``[B, 3]`` m, proximal joint of each bone in the palm frame
            at the zero pose.
        bone_rest_rotations: ``[B, 3, 3]`` bone frame -> palm frame at the zero pose.
        joint_lower, joint_upper: ``[22]`` rad, joint limits in ``JOINT_NAMES`` order.

    Derived (computed once): ``bone_offsets_in_parent [B, 3]`` and
    ``bone_rest_rotations_in_parent [B, 3, 3]``, the FK's constant link transforms.
    """

    bone_lengths: np.ndarray
    bone_rest_origins: np.ndarray
    bone_rest_rotations: np.ndarray
    joint_lower: np.ndarray
    joint_upper: np.ndarray
    bone_offsets_in_parent: np.ndarray = field(init=False, repr=False)
    bone_rest_rotations_in_parent: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name, shape in (
            ("bone_lengths", (NUM_BONES,)), ("bone_rest_origins", (NUM_BONES, 3)),
            ("bone_rest_rotations", (NUM_BONES, 3, 3)),
            ("joint_lower", (NUM_JOINTS,)), ("joint_upper", (NUM_JOINTS,)),
        ):
            value = _readonly(getattr(self, name))
            if value.shape != shape:
                raise ValueError(f"HandModel.{name}: shape {value.shape}, expected {shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"HandModel.{name}: non-finite values")
            object.__setattr__(self, name, value)
        if np.any(self.bone_lengths[1:] <= 0):
            raise ValueError("HandModel.bone_lengths: every bone but the palm needs a positive length")
        if np.any(self.joint_lower > self.joint_upper):
            bad = [JOINT_NAMES[i] for i in np.flatnonzero(self.joint_lower > self.joint_upper)]
            raise ValueError(f"HandModel.joint_lower > joint_upper for {bad}")
        rotations = self.bone_rest_rotations
        orthonormal = np.abs(rotations @ np.swapaxes(rotations, -1, -2) - np.eye(3)).max(axis=(-1, -2)) < 1e-6
        proper = np.linalg.det(rotations) > 0
        if not np.all(orthonormal & proper):
            bad = [BONE_NAMES[i] for i in np.flatnonzero(~(orthonormal & proper))]
            raise ValueError(f"HandModel.bone_rest_rotations: not a rotation for {bad}")
        offsets = np.zeros((NUM_BONES, 3))
        relative = np.tile(np.eye(3), (NUM_BONES, 1, 1))
        for bone, parent in enumerate(BONE_PARENT):
            if parent < 0:
                offsets[bone] = self.bone_rest_origins[bone]
                relative[bone] = rotations[bone]
                continue
            parent_rotation = rotations[parent]
            offsets[bone] = parent_rotation.T @ (self.bone_rest_origins[bone] - self.bone_rest_origins[parent])
            relative[bone] = parent_rotation.T @ rotations[bone]
            if parent != BONE_INDEX["palm"]:
                # A phalanx starts where its parent ends.
                expected = np.array([self.bone_lengths[parent], 0.0, 0.0])
                if np.abs(offsets[bone] - expected).max() > 1e-6:
                    raise ValueError(
                        f"HandModel.bone_rest_origins: {BONE_NAMES[bone]} does not start at the "
                        f"distal end of {BONE_NAMES[parent]}")
        if np.abs(offsets[0]).max() > 1e-12 or np.abs(relative[0] - np.eye(3)).max() > 1e-12:
            raise ValueError("HandModel: the palm must be the wrist frame (zero origin, identity rotation)")
        object.__setattr__(self, "bone_offsets_in_parent", _readonly(offsets))
        object.__setattr__(self, "bone_rest_rotations_in_parent", _readonly(relative))

    @classmethod
    def default(cls) -> "HandModel":
        """The reference adult right hand (hand length 18.5 cm) with anatomical limits."""
        lengths, origins, rotations = _reference_geometry()
        limits = np.deg2rad(np.array([JOINT_LIMITS_DEG[name] for name in JOINT_NAMES]))
        return cls(lengths, origins, rotations, limits[:, 0], limits[:, 1])

    def scaled(self, scale: float) -> "HandModel":
        """The same hand uniformly scaled (lengths and joint positions times ``scale``)."""
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"HandModel.scaled: scale must be positive, got {scale}")
        return HandModel(self.bone_lengths * scale, self.bone_rest_origins * scale,
                         self.bone_rest_rotations, self.joint_lower, self.joint_upper)

    @property
    def hand_length(self) -> float:
        """Wrist to middle fingertip at the zero pose, m."""
        tip = forward_kinematics_numpy(np.zeros(NUM_JOINTS), np.eye(3), np.zeros(3), model=self)
        return float(np.linalg.norm(tip.landmarks[LANDMARK_INDEX["middle_tip"]]))

    def clip_joint_angles(self, joint_angles):
        """Joint angles ``[..., 22]`` (NumPy or torch) clipped into the limits."""
        if _is_torch(joint_angles):
            import torch
            lower = torch.tensor(np.array(self.joint_lower), dtype=joint_angles.dtype, device=joint_angles.device)
            upper = torch.tensor(np.array(self.joint_upper), dtype=joint_angles.dtype, device=joint_angles.device)
            return torch.clamp(joint_angles, lower, upper)
        return np.clip(np.asarray(joint_angles, dtype=float), self.joint_lower, self.joint_upper)

    def within_limits(self, joint_angles, tolerance: float = 1e-9):
        """``[...]`` bool: all 22 angles inside ``[lower - tol, upper + tol]``."""
        if _is_torch(joint_angles):
            joint_angles = joint_angles.detach().cpu().numpy()
        angles = np.asarray(joint_angles, dtype=float)
        _check_last_dim(angles.shape, NUM_JOINTS, "joint_angles")
        inside = (angles >= self.joint_lower - tolerance) & (angles <= self.joint_upper + tolerance)
        return np.all(inside, axis=-1)


_DEFAULT_MODEL: HandModel | None = None


def default_hand_model() -> HandModel:
    """Shared instance of :meth:`HandModel.default` (built once)."""
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = HandModel.default()
    return _DEFAULT_MODEL


# --------------------------------------------------------------------------------------
# Mirroring
# --------------------------------------------------------------------------------------

def mirror_landmarks_local(points):
    """Mirror points ``[..., 3]`` in a hand-local frame (wrist/palm frame): y -> -y.

    Maps right-hand local geometry to left-hand local geometry and back (an involution).
    Works on NumPy arrays and torch tensors.
    """
    return points * _constant_like(_MIRROR_POINT_SIGN, points)


mirror_points_local = mirror_landmarks_local


def mirror_rotations_local(rotations):
    """Mirror rotations ``[..., 3, 3]`` expressed in a hand-local frame: R -> S R S."""
    return rotations * _constant_like(_MIRROR_ROTATION_SIGN, rotations)


# --------------------------------------------------------------------------------------
# Forward kinematics
# --------------------------------------------------------------------------------------

class ForwardKinematicsResult(NamedTuple):
    """FK output, all in the wrist's parent frame (camera, world, ...).

    Attributes:
        landmarks: ``[..., 21, 3]`` m, ``LANDMARK_NAMES`` (MediaPipe) order.
        bone_rotations: ``[..., 17, 3, 3]`` bone frame -> parent-of-wrist frame.
        bone_origins: ``[..., 17, 3]`` proximal joint of each bone (palm: the wrist).
        scale: ``[...]`` the hand scale used (broadcast to the batch shape).
        side: ``"left"`` or ``"right"``.
    """

    landmarks: Any
    bone_rotations: Any
    bone_origins: Any
    scale: Any
    side: str


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")


def _constant_like(constant: np.ndarray, like):
    if _is_torch(like):
        import torch
        return torch.tensor(np.array(constant), dtype=like.dtype, device=like.device)
    return constant


def _check_last_dim(shape, size: int, name: str, dims: int = 1) -> None:
    if len(shape) < dims or tuple(shape[len(shape) - dims:]) != ((size,) * dims):
        expected = ", ".join(["..."] + [str(size)] * dims)
        raise ValueError(f"{name}: shape {tuple(shape)}, expected [{expected}]")


class _NumpyOps:
    name = "numpy"

    def __init__(self) -> None:
        self.stack = np.stack
        self.concat = np.concatenate
        self.sin, self.cos = np.sin, np.cos
        self.broadcast_to = np.broadcast_to

    def constant(self, array: np.ndarray) -> np.ndarray:
        return array

    def index(self, array: np.ndarray) -> np.ndarray:
        return array


class _TorchOps:
    name = "torch"

    def __init__(self, dtype, device) -> None:
        import torch
        self.torch = torch
        self.dtype, self.device = dtype, device
        self.stack = torch.stack
        self.concat = torch.cat
        self.sin, self.cos = torch.sin, torch.cos
        self.broadcast_to = torch.broadcast_to

    # Constants are cached across calls (``_fk_constants``), so they are created as normal
    # tensors even inside ``torch.inference_mode()`` (the tracker's): an inference tensor
    # in the cache would break every later FK under autograd (training) in the process.
    def constant(self, array: np.ndarray):
        with self.torch.inference_mode(False):
            return self.torch.tensor(np.array(array), dtype=self.dtype, device=self.device)

    def index(self, array: np.ndarray):
        with self.torch.inference_mode(False):
            return self.torch.as_tensor(array, dtype=self.torch.long, device=self.device)


class _FkConstants:
    """Model-dependent FK constants converted for one backend (dtype, device)."""

    def __init__(self, model: HandModel, ops) -> None:
        flex_select = np.zeros((NUM_JOINTS, NUM_BONES))
        abd_select = np.zeros((NUM_JOINTS, NUM_BONES))
        for joint, (bone, axis, finger) in enumerate(zip(JOINT_BONE, JOINT_AXIS, FINGER_OF_JOINT)):
            if axis == "flex":
                flex_select[joint, bone] = 1.0
            else:
                abd_select[joint, bone] = ABDUCTION_SIGN[finger]
        self.flex_select = ops.constant(flex_select)
        self.abd_select = ops.constant(abd_select)
        self.rest_rotations = ops.constant(model.bone_rest_rotations_in_parent)
        self.offsets = ops.constant(model.bone_offsets_in_parent)
        self.tip_vectors = ops.constant(
            np.stack([[model.bone_lengths[b], 0.0, 0.0] for b in _TIP_BONES]))
        self.tip_bones = ops.index(np.array(_TIP_BONES))
        self.landmark_gather = ops.index(_LANDMARK_GATHER)
        self.mirror_point = ops.constant(_MIRROR_POINT_SIGN)
        self.mirror_rotation = ops.constant(_MIRROR_ROTATION_SIGN)
        # Level-by-level evaluation: bones of a level, and where their parents sit in
        # the concatenation of all earlier levels.
        order: list[int] = _BONE_LEVELS[0].tolist()
        self.levels = []
        for level_bones in _BONE_LEVELS[1:]:
            parent_positions = np.array([order.index(BONE_PARENT[b]) for b in level_bones])
            self.levels.append((ops.index(level_bones), ops.index(parent_positions)))
            order.extend(level_bones.tolist())
        self.bone_order_inverse = ops.index(np.argsort(np.array(order)))


_FK_CONSTANT_CACHE: "weakref.WeakKeyDictionary[HandModel, dict]" = weakref.WeakKeyDictionary()


def _fk_constants(model: HandModel, ops) -> _FkConstants:
    per_model = _FK_CONSTANT_CACHE.setdefault(model, {})
    key = (ops.name, getattr(ops, "dtype", None), str(getattr(ops, "device", None)))
    if key not in per_model:
        per_model[key] = _FkConstants(model, ops)
    return per_model[key]


def _joint_rotations(ops, flexion, abduction):
    """``R_z(abduction) @ R_y(flexion)`` for ``[..., B]`` angles -> ``[..., B, 3, 3]``."""
    cf, sf = ops.cos(flexion), ops.sin(flexion)
    ca, sa = ops.cos(abduction), ops.sin(abduction)
    zero = flexion * 0.0
    rows = (
        ops.stack([ca * cf, -sa, ca * sf], -1),
        ops.stack([sa * cf, ca, sa * sf], -1),
        ops.stack([-sf, zero, cf], -1),
    )
    return ops.stack(rows, -2)


def _forward_kinematics(ops, constants: _FkConstants, joint_angles, wrist_rotation,
                        wrist_translation, scale, side: str) -> ForwardKinematicsResult:
    batch_shape = np.broadcast_shapes(tuple(joint_angles.shape[:-1]), tuple(wrist_rotation.shape[:-2]),
                                      tuple(wrist_translation.shape[:-1]), tuple(scale.shape))
    joint_angles = ops.broadcast_to(joint_angles, batch_shape + (NUM_JOINTS,))
    scale = ops.broadcast_to(scale, batch_shape)
    flexion = joint_angles @ constants.flex_select            # [..., B]
    abduction = joint_angles @ constants.abd_select           # [..., B]
    local_links = constants.rest_rotations @ _joint_rotations(ops, flexion, abduction)  # [..., B, 3, 3]
    scale_column = scale[..., None, None]
    scaled_offsets = constants.offsets * scale_column          # [..., B, 3]

    # Root (palm) = wrist frame: its link is the identity and its offset zero (the
    # HandModel validates both), so slicing keeps the batch shape and the autograd graph.
    rotations = local_links[..., :1, :, :]
    origins = scaled_offsets[..., :1, :]
    for level_bones, parent_positions in constants.levels:
        parent_rotations = rotations[..., parent_positions, :, :]
        parent_origins = origins[..., parent_positions, :]
        offsets = scaled_offsets[..., level_bones, :]
        level_rotations = parent_rotations @ local_links[..., level_bones, :, :]
        level_origins = parent_origins + (parent_rotations @ offsets[..., None])[..., 0]
        rotations = ops.concat([rotations, level_rotations], -3)
        origins = ops.concat([origins, level_origins], -2)
    rotations = rotations[..., constants.bone_order_inverse, :, :]
    origins = origins[..., constants.bone_order_inverse, :]
    if side == "left":
        rotations = rotations * constants.mirror_rotation
        origins = origins * constants.mirror_point

    tip_rotations = rotations[..., constants.tip_bones, :, :]
    tip_vectors = constants.tip_vectors * scale_column
    tips = origins[..., constants.tip_bones, :] + (tip_rotations @ tip_vectors[..., None])[..., 0]
    local_landmarks = ops.concat([origins, tips], -2)[..., constants.landmark_gather, :]

    wrist = wrist_rotation[..., None, :, :]
    translation = wrist_translation[..., None, :]
    world_rotations = wrist @ rotations
    world_origins = (wrist @ origins[..., None])[..., 0] + translation
    world_landmarks = (wrist @ local_landmarks[..., None])[..., 0] + translation
    return ForwardKinematicsResult(world_landmarks, world_rotations, world_origins, scale, side)


def _check_fk_inputs(joint_angles_shape, wrist_rotation_shape, wrist_translation_shape, side) -> None:
    _check_last_dim(joint_angles_shape, NUM_JOINTS, "joint_angles")
    _check_last_dim(wrist_rotation_shape, 3, "wrist_rotation", dims=2)
    _check_last_dim(wrist_translation_shape, 3, "wrist_translation")
    if side not in SIDES:
        raise ValueError(f"side: {side!r}, expected 'left' or 'right'")


def forward_kinematics_numpy(joint_angles, wrist_rotation, wrist_translation, scale=1.0,
                             side: str = "right", model: HandModel | None = None
                             ) -> ForwardKinematicsResult:
    """Batched forward kinematics with NumPy (float64).

    Args:
        joint_angles: ``[..., 22]`` rad in ``JOINT_NAMES`` order.
        wrist_rotation: ``[..., 3, 3]`` wrist frame -> parent frame (camera/world).
        wrist_translation: ``[..., 3]`` m, wrist origin in the parent frame.
        scale: float or ``[...]``, hand size relative to ``model``.
        side: ``"right"`` or ``"left"`` (left = mirrored model, same angle meanings).
        model: hand geometry; :func:`default_hand_model` when None.

    Returns: :class:`ForwardKinematicsResult` in the parent frame. Leading dims of all
    inputs broadcast.
    """
    joint_angles = np.asarray(joint_angles, dtype=float)
    wrist_rotation = np.asarray(wrist_rotation, dtype=float)
    wrist_translation = np.asarray(wrist_translation, dtype=float)
    scale = np.asarray(scale, dtype=float)
    _check_fk_inputs(joint_angles.shape, wrist_rotation.shape, wrist_translation.shape, side)
    ops = _NumpyOps()
    constants = _fk_constants(model or default_hand_model(), ops)
    return _forward_kinematics(ops, constants, joint_angles, wrist_rotation, wrist_translation, scale, side)


def forward_kinematics_torch(joint_angles, wrist_rotation, wrist_translation, scale=1.0,
                             side: str = "right", model: HandModel | None = None
                             ) -> ForwardKinematicsResult:
    """Batched, differentiable forward kinematics with torch; same semantics as
    :func:`forward_kinematics_numpy`. Computes in ``joint_angles``' dtype and device;
    the other inputs may be tensors, arrays or floats (converted)."""
    import torch

    joint_angles = torch.as_tensor(joint_angles)
    if not joint_angles.is_floating_point():
        joint_angles = joint_angles.to(torch.get_default_dtype())
    dtype, device = joint_angles.dtype, joint_angles.device
    wrist_rotation = torch.as_tensor(wrist_rotation, dtype=dtype, device=device)
    wrist_translation = torch.as_tensor(wrist_translation, dtype=dtype, device=device)
    scale = torch.as_tensor(scale, dtype=dtype, device=device)
    _check_fk_inputs(tuple(joint_angles.shape), tuple(wrist_rotation.shape),
                     tuple(wrist_translation.shape), side)
    ops = _TorchOps(dtype, device)
    constants = _fk_constants(model or default_hand_model(), ops)
    return _forward_kinematics(ops, constants, joint_angles, wrist_rotation, wrist_translation, scale, side)
