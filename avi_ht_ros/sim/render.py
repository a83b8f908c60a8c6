"""Fast monochrome renderer of a (gloved) hand and occluding objects, with ground truth.

Everything is expressed in the camera **optical frame** (x right, y down, z forward, m).

Geometry (exact, analytic ray casting)
--------------------------------------
* **Hand** from the 21 landmarks (MediaPipe order): every finger bone of ``bone_pairs`` is a
  capsule (radius per bone, thinner towards the tips, scaled with the hand size), the
  finger joints are slightly larger spheres (knuckles), the palm is a *rounded slab*: a fan
  of triangles (wrist, thumb CMC, the four MCPs and a virtual hypothenar point) each
  extruded to a prism of ``2 * palm_half_thickness`` plus capsules of the same radius along
  every triangle edge -- i.e. the exact Minkowski sum of the palm polygon with a ball --
  and the forearm is a capsule from the wrist towards the elbow (see ``forearm_direction``).
* **Objects** that occlude the hand: :class:`Sphere`, :class:`Box` (oriented) and
  :class:`Cylinder` (oriented, finite, flat caps), each with an albedo and optional solid
  texture.
* Each primitive is intersected only with the pixels of its projected bounding box
  (exact tangent bounds of its bounding spheres / projected vertices), vectorized over
  those pixels; a z-buffer keeps the nearest hit. Depth is the z coordinate (the per-pixel
  rays have z = 1, so the ray parameter *is* the depth).

Shading and sensor
------------------
Deferred Lambert shading with a point light on the headset (``light_offset_m`` from the
camera centre, inverse-square falloff normalised at ``light_reference_distance_m``) plus
ambient, times the albedo and a solid 3D texture (glove fabric weave, object patterns).
The static background (room clutter: a textured table plane in perspective, a wall with
posters/screens, gradients, random lines) is rendered once per sequence and kept behind
everything (it does not take part in the depth test). Camera effects, in the order a
sensor applies them: vignetting, slight optical blur, exposure, shot + read noise (in
linear DN, per frame), quantisation to 8 bit, then a per-sequence tone curve
``out = 255 * (in / 255) ** gamma`` with gamma jittered in ``gamma_range``. Motion blur is
not simulated.

Ground truth
------------
* ``landmark_visibility[21]``: a landmark is visible iff it is in front of the camera,
  projects inside the image, and the majority of the (2n+1)^2 pixels around its projection
  (n = ``visibility_neighborhood_px``, default 1 -> 3x3) *see* it. A pixel sees the landmark
  when its rendered surface is

  a. not in front of the landmark's *own surface* by more than ``visibility_tolerance_m``
     (4 mm). The own surface is where the ray enters the landmark's own joint ball, radius
     r = its joint radius (palm landmarks: the palm half-thickness, wrist: the forearm
     radius, fingertips: the distal bone radius): depth ``z * (1 - r / |p|)``; or
  b. part of the landmark's own geometry (its joint sphere, the bones that end at it, the
     palm pieces it is a corner of) and at most ``visibility_own_depth_radii * r`` in front
     of it: a joint seen obliquely through the surface of its own phalanx is visible, one
     seen along the whole length of that phalanx is not.

  Anything else nearer -- an object, another finger, the palm -- occludes it.
  ``landmark_occlusion`` says why: OUT_OF_VIEW, OCCLUDED_SELF (the hand alone already
  hides it; wins when both apply) or OCCLUDED_OBJECT.
* ``occlusion_ratio``: fraction of the 21 landmarks that are not visible (out of view
  counts as occluded, as in ``HandGroundTruth.msg``).
* ``hand_mask`` (visible hand pixels), ``hand_amodal_mask`` (hand pixels ignoring objects),
  ``object_pixel_occlusion_ratio`` (fraction of the amodal hand area covered by objects),
  ``depth`` (z, inf = background).

Determinism: a renderer built with a seed draws the sequence appearance (background,
gamma, exposure, noise levels, albedos) from it; per-frame noise comes from
``numpy.random.default_rng([seed, frame_index])``, so a frame is reproducible on its own.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence, Union

import cv2
import numpy as np

from avi_ht_ros.common.camera import PinholeCamera

__all__ = [
    "Sphere",
    "Box",
    "Cylinder",
    "HandGeometry",
    "RenderConfig",
    "SequenceAppearance",
    "RenderResult",
    "HandRenderer",
    "render_background",
    "DEFAULT_BONE_PAIRS",
    "ELBOW_DIRECTION_PRIOR",
    "REFERENCE_PALM_LENGTH_M",
    "VISIBLE",
    "OUT_OF_VIEW",
    "OCCLUDED_SELF",
    "OCCLUDED_OBJECT",
]

NUM_LANDMARKS = 21
WRIST, THUMB_CMC, INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP = 0, 1, 5, 9, 13, 17
#: Wrist -> middle MCP distance of the reference hand (hand_model default), m. Radii below are for it.
REFERENCE_PALM_LENGTH_M = 0.090

# landmark_occlusion codes
VISIBLE, OUT_OF_VIEW, OCCLUDED_SELF, OCCLUDED_OBJECT = 0, 1, 2, 3

try:  # the project's skeleton (MediaPipe HAND_CONNECTIONS) when available
    from avi_ht_ros.common.hand_model import SKELETON_EDGES as _SKELETON_EDGES
except Exception:  # noqa: BLE001 - hand model absent or broken: same connections, stated here
    _SKELETON_EDGES = (
        (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
        (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
    )
DEFAULT_BONE_PAIRS: tuple[tuple[int, int], ...] = tuple(tuple(e) for e in _SKELETON_EDGES)

#: Bone radii of the reference hand (m): finger widths of an adult hand in a thin glove.
_BONE_RADIUS_M: dict[frozenset, float] = {
    frozenset(pair): radius
    for pair, radius in {
        (1, 2): 0.0115, (2, 3): 0.0100, (3, 4): 0.0090,  # thumb metacarpal, proximal, distal
        (5, 6): 0.0092, (6, 7): 0.0083, (7, 8): 0.0075,  # index
        (9, 10): 0.0095, (10, 11): 0.0086, (11, 12): 0.0078,  # middle
        (13, 14): 0.0088, (14, 15): 0.0080, (15, 16): 0.0072,  # ring
        (17, 18): 0.0080, (18, 19): 0.0072, (19, 20): 0.0066,  # pinky
    }.items()
}
_DEFAULT_BONE_RADIUS_M = 0.0090
#: Knuckles bulge a little beyond the phalanges.
_KNUCKLE_FACTOR = 1.03
#: The distal capsule ends this many radii short of the fingertip landmark, so the
#: fingertip landmark (the pad) sits just inside the rendered fingertip.
_TIP_INSET_RADII = 0.8
#: Palm polygon as a fan around the wrist: thumb CMC, MCPs and a virtual hypothenar point
#: ``wrist + HYPOTHENAR * (pinky_mcp - index_mcp)`` (index -1 below).
_PALM_FAN = (THUMB_CMC, INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP, -1)
_HYPOTHENAR = 0.35
#: Default forearm direction = normalize(wrist - middle MCP (straight wrist) + this prior):
#: from the hands of a seated/standing user the elbow lies below the hand and a little
#: towards the head, i.e. down in the image and slightly towards the camera (optical frame,
#: head camera pitched ~30 deg down). Without the prior a forearm continuing the hand axis
#: of a hand pointing away from the user would run through the camera.
ELBOW_DIRECTION_PRIOR = np.array([0.0, 0.93, -0.36])

# ---------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------


def _vec3(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected 3 finite numbers, got {value!r}")
    return array


@dataclasses.dataclass
class Sphere:
    """Sphere occluder: ``center`` (optical frame, m), ``radius`` (m)."""

    center: Sequence[float]
    radius: float
    albedo: float = 0.6
    texture_amplitude: float = 0.0
    texture_period_m: float = 0.01


@dataclasses.dataclass
class Box:
    """Oriented box occluder: ``rotation`` maps box axes to the optical frame (camera_from_box)."""

    center: Sequence[float]
    half_extents: Sequence[float]
    rotation: Sequence[Sequence[float]] = dataclasses.field(default_factory=lambda: np.eye(3))
    albedo: float = 0.6
    texture_amplitude: float = 0.0
    texture_period_m: float = 0.01


@dataclasses.dataclass
class Cylinder:
    """Finite cylinder with flat caps, ``axis`` (any length, normalised) through ``center``."""

    center: Sequence[float]
    axis: Sequence[float]
    radius: float
    half_length: float
    albedo: float = 0.6
    texture_amplitude: float = 0.0
    texture_period_m: float = 0.01


SceneObject = Union[Sphere, Box, Cylinder]


@dataclasses.dataclass
class HandGeometry:
    """Shape of the rendered hand around its 21 landmarks (sizes for the reference hand, m).

    ``bone_pairs``: landmark pairs drawn as capsules (palm edges among them are part of the
    palm slab instead). ``bone_radii``: one per pair, ``None`` = the built-in table.
    ``joint_radii``: ``[21]``, ``None`` = 1.03 x the thickest bone at the joint. With
    ``scale_with_hand`` all sizes are multiplied by ``|wrist -> middle MCP| / 0.09 m``.
    ``forearm_radius = 0`` disables the forearm.
    """

    bone_pairs: Sequence[tuple[int, int]] = DEFAULT_BONE_PAIRS
    bone_radii: Sequence[float] | None = None
    joint_radii: Sequence[float] | None = None
    palm_half_thickness: float = 0.012
    forearm_radius: float = 0.021
    forearm_length: float = 0.22
    scale_with_hand: bool = True

    def resolved_radii(self) -> tuple[np.ndarray, np.ndarray]:
        """``(bone_radii[B], joint_radii[21])`` for the reference hand size."""
        pairs = [tuple(int(i) for i in p) for p in self.bone_pairs]
        for pair in pairs:
            if len(pair) != 2 or not all(0 <= i < NUM_LANDMARKS for i in pair) or pair[0] == pair[1]:
                raise ValueError(f"HandGeometry.bone_pairs: invalid pair {pair}")
        if self.bone_radii is None:
            bone_radii = np.array([_BONE_RADIUS_M.get(frozenset(p), _DEFAULT_BONE_RADIUS_M) for p in pairs])
        else:
            bone_radii = np.asarray(self.bone_radii, dtype=np.float64).reshape(-1)
            if bone_radii.shape != (len(pairs),):
                raise ValueError(f"HandGeometry.bone_radii: {bone_radii.size} values for {len(pairs)} bone pairs")
        if self.joint_radii is None:
            joint_radii = np.zeros(NUM_LANDMARKS)
            for (i, j), radius in zip(pairs, bone_radii):
                if frozenset((i, j)) in _palm_edge_set():
                    continue
                joint_radii[i] = max(joint_radii[i], radius * _KNUCKLE_FACTOR)
                joint_radii[j] = max(joint_radii[j], radius * _KNUCKLE_FACTOR)
            joint_radii[joint_radii == 0.0] = self.palm_half_thickness
        else:
            joint_radii = np.asarray(self.joint_radii, dtype=np.float64).reshape(-1)
            if joint_radii.shape != (NUM_LANDMARKS,):
                raise ValueError(f"HandGeometry.joint_radii: expected 21 values, got {joint_radii.size}")
        if np.any(bone_radii <= 0) or np.any(joint_radii <= 0):
            raise ValueError("HandGeometry: radii must be positive")
        return bone_radii, joint_radii


def _palm_triangles() -> list[tuple[int, int, int]]:
    return [(WRIST, a, b) for a, b in zip(_PALM_FAN[:-1], _PALM_FAN[1:])]


def _palm_edge_set() -> set[frozenset]:
    edges = set()
    for a, b, c in _palm_triangles():
        edges |= {frozenset((a, b)), frozenset((b, c)), frozenset((a, c))}
    return edges


# ---------------------------------------------------------------------------------------
# Configuration, per-sequence appearance, result
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class RenderConfig:
    """Ranges the per-sequence appearance is drawn from, and fixed rendering parameters."""

    gamma_range: tuple[float, float] = (0.5, 1.7)
    exposure_range: tuple[float, float] = (0.8, 1.25)
    read_noise_dn_range: tuple[float, float] = (2.0, 10.0)
    shot_noise_gain_range: tuple[float, float] = (0.1, 0.8)  # variance DN^2 per DN of signal
    vignetting_range: tuple[float, float] = (0.1, 0.45)  # relative fall-off at the image corner
    ambient_range: tuple[float, float] = (0.1, 0.3)
    light_range: tuple[float, float] = (0.45, 0.85)
    hand_albedo_range: tuple[float, float] = (0.35, 0.75)  # glove fabric in the near infrared
    hand_texture_amplitude: float = 0.08  # fabric weave contrast
    hand_texture_period_m: float = 0.003
    light_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # illuminator w.r.t. the camera
    # Headset IR illuminators light a hand at arm's length (0.35-0.55 m) brightly while the
    # room (1-3 m away) receives a fraction of that: falloff == 1 at this distance, and the
    # background's radiance is scaled by background_gain_range.
    light_reference_distance_m: float = 0.45
    background_gain_range: tuple[float, float] = (0.35, 0.7)
    max_falloff_gain: float = 3.0
    optical_blur_sigma_px: float = 0.6  # 0 disables
    near_m: float = 0.02
    visibility_tolerance_m: float = 0.004
    visibility_neighborhood_px: int = 1
    visibility_own_depth_radii: float = 2.5  # own-geometry surface allowed this many own radii in front
    background: bool = True
    background_clutter: int = 14  # posters, screens, objects on the wall/table


@dataclasses.dataclass
class SequenceAppearance:
    """Appearance values drawn once per sequence from :class:`RenderConfig` ranges."""

    gamma: float
    exposure: float
    read_noise_dn: float
    shot_noise_gain: float
    vignetting: float
    ambient: float
    light: float
    hand_albedo: float

    @classmethod
    def draw(cls, config: RenderConfig, rng: np.random.Generator) -> "SequenceAppearance":
        def u(bounds):
            return float(rng.uniform(*bounds))

        return cls(
            gamma=u(config.gamma_range), exposure=u(config.exposure_range),
            read_noise_dn=u(config.read_noise_dn_range), shot_noise_gain=u(config.shot_noise_gain_range),
            vignetting=u(config.vignetting_range), ambient=u(config.ambient_range),
            light=u(config.light_range), hand_albedo=u(config.hand_albedo_range),
        )


@dataclasses.dataclass
class RenderResult:
    """One rendered frame and its ground truth (see the module docstring)."""

    image: np.ndarray  # uint8 [H, W] mono8
    depth: np.ndarray  # float32 [H, W] z in m, inf = background
    hand_mask: np.ndarray  # bool [H, W] hand pixels seen in the image
    hand_amodal_mask: np.ndarray  # bool [H, W] hand pixels had there been no objects
    landmark_uv: np.ndarray  # float64 [21, 2] projections (NaN behind the camera)
    landmark_visibility: np.ndarray  # bool [21]
    landmark_occlusion: np.ndarray  # int8 [21] VISIBLE / OUT_OF_VIEW / OCCLUDED_SELF / OCCLUDED_OBJECT
    occlusion_ratio: float  # fraction of the 21 landmarks not visible
    object_pixel_occlusion_ratio: float  # fraction of the amodal hand area covered by objects


# ---------------------------------------------------------------------------------------
# Compiled primitives
# ---------------------------------------------------------------------------------------

_SPHERE, _CAPSULE, _CYLINDER, _CONVEX = 0, 1, 2, 3
_MAX_PLANES = 6


class _Scene:
    """Flat arrays of primitives (one row each) plus per-primitive material/texture."""

    def __init__(self) -> None:
        self.kind: list[int] = []
        self.params: list[tuple] = []
        self.is_hand: list[bool] = []
        self.albedo: list[float] = []
        self.tex_amp: list[float] = []
        self.tex_freq: list[float] = []
        self.tex_origin: list[np.ndarray] = []
        self.tex_axes: list[np.ndarray] = []
        self.owners: list[tuple[int, ...]] = []  # landmarks whose own geometry a hand primitive is

    def _add(self, kind, params, hand, albedo, amp, period, origin, axes, owners=()):
        self.owners.append(tuple(int(i) for i in owners if 0 <= i < NUM_LANDMARKS))
        self.kind.append(kind)
        self.params.append(params)
        self.is_hand.append(hand)
        self.albedo.append(float(albedo))
        self.tex_amp.append(float(amp))
        self.tex_freq.append(2.0 * math.pi / max(float(period), 1e-6))
        self.tex_origin.append(np.asarray(origin, dtype=np.float64))
        self.tex_axes.append(np.asarray(axes, dtype=np.float64))

    def sphere(self, c, r, hand, albedo, amp=0.0, period=0.01, owners=()):
        self._add(_SPHERE, (np.asarray(c, np.float64), float(r)), hand, albedo, amp, period, c, np.eye(3), owners)

    def capsule(self, a, b, r, hand, albedo, amp=0.0, period=0.01, owners=(), cap_a=True, cap_b=True):
        """Capsule a-b; ``cap_a/cap_b=False`` leaves out an end sphere another primitive already covers."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        self._add(_CAPSULE, (a, b, float(r), bool(cap_a), bool(cap_b)), hand, albedo, amp, period, a,
                  _axes_along(b - a), owners)

    def cylinder(self, a, b, r, hand, albedo, amp=0.0, period=0.01):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        self._add(_CYLINDER, (a, b, float(r), False, False), hand, albedo, amp, period, a, _axes_along(b - a))

    def convex(self, normals, offsets, vertices, hand, albedo, amp=0.0, period=0.01, axes=None, owners=()):
        """Convex polytope ``{p : normals @ p <= offsets}`` with its vertices (for bounds)."""
        normals = np.asarray(normals, np.float64)
        offsets = np.asarray(offsets, np.float64)
        pad = _MAX_PLANES - len(offsets)
        normals = np.vstack([normals, np.zeros((pad, 3))])
        offsets = np.concatenate([offsets, np.ones(pad)])  # 0 . p <= 1: always satisfied
        vertices = np.asarray(vertices, np.float64)
        axes = np.eye(3) if axes is None else axes
        self._add(_CONVEX, (normals, offsets, vertices), hand, albedo, amp, period, vertices.mean(axis=0), axes,
                  owners)

    def __len__(self) -> int:
        return len(self.kind)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross is ~10x slower for single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _axes_along(direction: np.ndarray) -> np.ndarray:
    """Rows: a unit vector along ``direction`` and two perpendicular unit vectors."""
    x = direction / max(math.sqrt(direction @ direction), 1e-12)
    helper = np.array([0.0, 0.0, 1.0]) if abs(x[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    y = _cross(helper, x)
    y /= math.sqrt(y @ y)
    return np.stack([x, y, _cross(x, y)])


def _add_hand(scene: _Scene, landmarks: np.ndarray, geometry: HandGeometry, albedo: float, amp: float,
              period: float, forearm_direction: np.ndarray | None) -> np.ndarray:
    """Append the hand primitives; returns each landmark's own-surface radius ``[21]`` (m)."""
    bone_radii, joint_radii = geometry.resolved_radii()
    palm_length = float(np.linalg.norm(landmarks[MIDDLE_MCP] - landmarks[WRIST]))
    scale = palm_length / REFERENCE_PALM_LENGTH_M if geometry.scale_with_hand else 1.0
    if not (0.2 < scale < 5.0):
        raise ValueError(f"hand landmarks look degenerate: wrist-middle MCP distance {palm_length:.4f} m")
    bone_radii = bone_radii * scale
    joint_radii = joint_radii * scale
    palm_r = geometry.palm_half_thickness * scale
    own_radius = joint_radii.copy()

    # Palm: rounded slab = triangle prisms + capsules on the triangle edges.
    hypothenar = landmarks[WRIST] + _HYPOTHENAR * (landmarks[PINKY_MCP] - landmarks[INDEX_MCP])
    points = np.vstack([landmarks, hypothenar[None]])  # index 21 == the virtual point (-1)
    palm_edges = set()
    for a, b, c in _palm_triangles():
        tri = points[[a, b, c]]
        normal = _cross(tri[1] - tri[0], tri[2] - tri[0])
        n_norm = np.linalg.norm(normal)
        for e in ((a, b), (b, c), (a, c)):
            palm_edges.add(tuple(sorted(i % (NUM_LANDMARKS + 1) for i in e)))
        if n_norm < 1e-9:
            continue  # degenerate triangle: its edge capsules still cover it
        normal /= n_norm
        normals = [normal, -normal]
        offsets = [normal @ tri[0] + palm_r, -normal @ tri[0] + palm_r]
        centroid = tri.mean(axis=0)
        for k in range(3):
            p, q = tri[k], tri[(k + 1) % 3]
            side = _cross(q - p, normal)
            side /= max(np.linalg.norm(side), 1e-12)
            if side @ (centroid - p) > 0:
                side = -side
            normals.append(side)
            offsets.append(side @ p)
        vertices = np.vstack([tri + palm_r * normal, tri - palm_r * normal])
        axes = _axes_along(tri[1] - tri[0])
        scene.convex(normals, offsets, vertices, True, albedo, amp, period, axes, owners=(a, b, c))
    # Rounded edges: open cylinders along the edges plus one ball per polygon corner.
    for i, j in sorted(palm_edges):
        scene.capsule(points[i], points[j], palm_r, True, albedo, amp, period, owners=(i, j), cap_a=False, cap_b=False)
    corners = sorted({i for edge in palm_edges for i in edge})
    for i in corners:
        scene.sphere(points[i], palm_r, True, albedo, amp, period, owners=(i,))
    corner_radius = np.zeros(NUM_LANDMARKS)
    corner_radius[[i for i in corners if i < NUM_LANDMARKS]] = palm_r
    for landmark in (WRIST, THUMB_CMC, INDEX_MCP, MIDDLE_MCP, RING_MCP, PINKY_MCP):
        own_radius[landmark] = max(own_radius[landmark], palm_r)

    # Fingers: capsules for the bones that are not palm edges, knuckle spheres at inner joints.
    palm_pairs = {frozenset(e) for e in palm_edges}
    palm_members = {i for pair in palm_pairs for i in pair}
    degree = np.zeros(NUM_LANDMARKS, dtype=int)
    finger_bones = []
    for (i, j), radius in zip(geometry.bone_pairs, bone_radii):
        if frozenset((i, j)) in palm_pairs:
            continue
        finger_bones.append((int(i), int(j), float(radius)))
        degree[[i, j]] += 1
    is_tip = (degree == 1) & ~np.isin(np.arange(NUM_LANDMARKS), list(palm_members))
    # Knuckle spheres at joints shared by two finger bones, when thicker than the bones.
    bone_max = np.zeros(NUM_LANDMARKS)
    for i, j, radius in finger_bones:
        bone_max[[i, j]] = np.maximum(bone_max[[i, j]], radius)
    knuckle = (degree >= 2) & (joint_radii > bone_max * 1.001)
    for k in np.flatnonzero(knuckle):
        scene.sphere(landmarks[k], joint_radii[k], True, albedo, amp, period, owners=(k,))
    # A bone's end sphere is redundant where a knuckle or palm-corner ball at least as thick sits.
    covering = np.maximum(np.where(knuckle, joint_radii, 0.0), corner_radius)
    for i, j, radius in finger_bones:
        a, b = landmarks[i].copy(), landmarks[j].copy()
        length = float(np.linalg.norm(b - a))
        if length > 0:
            # A fingertip landmark (the pad) sits just inside the rounded end of its finger.
            inset = min(_TIP_INSET_RADII * radius, 0.45 * length) / length
            if is_tip[j]:
                b = b - (b - a) * inset
                own_radius[j] = radius
            if is_tip[i]:
                a = a + (b - a) * inset
                own_radius[i] = radius
        scene.capsule(a, b, radius, True, albedo, amp, period, owners=(i, j),
                      cap_a=is_tip[i] or covering[i] < radius, cap_b=is_tip[j] or covering[j] < radius)

    # Forearm: capsule from the wrist towards the elbow.
    if geometry.forearm_radius > 0:
        if forearm_direction is None:
            backwards = landmarks[WRIST] - landmarks[MIDDLE_MCP]
            direction = backwards / max(np.linalg.norm(backwards), 1e-12) + ELBOW_DIRECTION_PRIOR
            if np.linalg.norm(direction) < 0.2:
                direction = ELBOW_DIRECTION_PRIOR
        else:
            direction = _vec3(forearm_direction, "forearm_direction")
        direction = direction / max(np.linalg.norm(direction), 1e-12)
        radius = geometry.forearm_radius * scale
        scene.capsule(landmarks[WRIST], landmarks[WRIST] + direction * geometry.forearm_length * scale,
                      radius, True, albedo, amp, period, owners=(WRIST,))
        own_radius[WRIST] = max(own_radius[WRIST], radius)
    return own_radius


def _add_object(scene: _Scene, obj: SceneObject) -> None:
    if isinstance(obj, Sphere):
        center = _vec3(obj.center, "Sphere.center")
        if not obj.radius > 0:
            raise ValueError(f"Sphere.radius must be positive, got {obj.radius}")
        scene.sphere(center, obj.radius, False, obj.albedo, obj.texture_amplitude, obj.texture_period_m)
    elif isinstance(obj, Cylinder):
        center = _vec3(obj.center, "Cylinder.center")
        axis = _vec3(obj.axis, "Cylinder.axis")
        if not (obj.radius > 0 and obj.half_length > 0 and np.linalg.norm(axis) > 0):
            raise ValueError("Cylinder: radius, half_length and axis must be non-zero")
        axis = axis / np.linalg.norm(axis) * obj.half_length
        scene.cylinder(center - axis, center + axis, obj.radius, False, obj.albedo,
                       obj.texture_amplitude, obj.texture_period_m)
    elif isinstance(obj, Box):
        center = _vec3(obj.center, "Box.center")
        half = _vec3(obj.half_extents, "Box.half_extents")
        rotation = np.asarray(obj.rotation, dtype=np.float64).reshape(3, 3)
        if np.any(half <= 0):
            raise ValueError(f"Box.half_extents must be positive, got {half.tolist()}")
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-6:
            raise ValueError("Box.rotation is not a rotation matrix")
        axes = rotation.T  # rows: box axes in the optical frame
        normals = np.vstack([axes, -axes])
        offsets = np.concatenate([axes @ center + half, -(axes @ center) + half])
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        vertices = center + (signs * half) @ axes
        scene.convex(normals, offsets, vertices, False, obj.albedo, obj.texture_amplitude,
                     obj.texture_period_m, axes)
    else:
        raise TypeError(f"unsupported scene object {type(obj).__name__}")


# ---------------------------------------------------------------------------------------
# Background (once per sequence)
# ---------------------------------------------------------------------------------------


def render_background(camera: PinholeCamera, rng: np.random.Generator, clutter: int = 14) -> np.ndarray:
    """A static egocentric room background, linear radiance float32 ``[H, W]`` in [0, 1].

    A wall (gradient, posters/screens/windows as textured rectangles) behind a table plane
    seen in perspective (wood-grain or tiled texture), random edges and blobs, slightly
    defocused. Deterministic for a given ``rng`` state.
    """
    h, w = camera.height, camera.width
    rays = camera.pixel_rays(np.float64)
    u = np.linspace(0.0, 1.0, w)[None, :]
    v = np.linspace(0.0, 1.0, h)[:, None]
    angle = rng.uniform(0, 2 * math.pi)
    wall = (rng.uniform(0.15, 0.45) + rng.uniform(-0.15, 0.15) * (math.cos(angle) * u + math.sin(angle) * v)
            ).astype(np.float32) * np.ones((h, w), np.float32)
    # Low-frequency blotches on the wall.
    coarse = rng.uniform(-1.0, 1.0, (6, 8)).astype(np.float32)
    wall += rng.uniform(0.02, 0.08) * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    image = wall
    # Posters, screens, windows, shelves: textured axis-aligned and rotated rectangles.
    for _ in range(int(clutter)):
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 0.8) * h
        half_w, half_h = rng.uniform(0.03, 0.22) * w, rng.uniform(0.03, 0.2) * h
        rect = ((cx, cy), (2 * half_w, 2 * half_h), rng.uniform(-25, 25) if rng.random() < 0.5 else 0.0)
        corners = cv2.boxPoints(rect).astype(np.int32)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(mask, corners, 1)
        sel = mask.astype(bool)
        kind = rng.integers(0, 4)
        base = rng.uniform(0.05, 0.95)
        if kind == 0:  # flat
            values = np.full(sel.sum(), base, np.float32)
        elif kind == 1:  # gradient (screen, window)
            g = rng.uniform(-0.3, 0.3)
            values = (base + g * (u * np.ones((h, 1)))[sel]).astype(np.float32)
        elif kind == 2:  # stripes (blinds, book spines)
            period = rng.uniform(4, 25)
            phase = rng.uniform(0, 2 * math.pi)
            direction = rng.uniform(0, math.pi)
            coord = (np.arange(w)[None, :] * math.cos(direction) + np.arange(h)[:, None] * math.sin(direction))
            values = (base + 0.15 * np.sign(np.sin(coord * 2 * math.pi / period + phase)))[sel].astype(np.float32)
        else:  # printed texture
            noise = rng.uniform(-1, 1, (max(2, h // 24), max(2, w // 24))).astype(np.float32)
            values = (base + 0.2 * cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR))[sel]
        image[sel] = values
    # Table (most of the time): a horizontal plane below the headset seen by a camera pitched
    # down by 15-45 deg and rolled a little, with a far edge, in perspective.
    if rng.random() < 0.75:
        pitch, roll = rng.uniform(math.radians(15), math.radians(45)), rng.uniform(-0.2, 0.2)
        height, table_depth = rng.uniform(0.35, 0.8), rng.uniform(0.6, 1.6)
        down = np.array([math.sin(roll) * math.cos(pitch), math.cos(roll) * math.cos(pitch), math.sin(pitch)])
        forward = np.array([0.0, 0.0, 1.0]) - down * down[2]
        forward /= np.linalg.norm(forward)
        right = np.cross(down, forward)
        denom = rays @ down
        with np.errstate(divide="ignore", invalid="ignore"):
            t = height / denom
            hit = rays * t[..., None]
        q = hit @ forward  # distance ahead on the table
        on_table = (denom > 1e-3) & (q < table_depth)
        s, q = (hit @ right)[on_table], q[on_table]
        kind = rng.integers(0, 3)
        base = rng.uniform(0.2, 0.7)
        if kind == 0:  # wood grain
            freq = rng.uniform(40, 120)
            texture = 0.08 * np.sin(freq * (s + 0.05 * np.sin(7 * q))) + 0.04 * np.sin(3.1 * freq * s)
        elif kind == 1:  # tiles / checker
            size = rng.uniform(0.05, 0.2)
            texture = 0.1 * ((np.floor(s / size) + np.floor(q / size)) % 2 - 0.5)
        else:  # mottled laminate
            texture = 0.05 * np.sin(53 * s) * np.sin(41 * q) + 0.03 * np.sin(17 * s + 11 * q)
        falloff = np.clip(0.6 / np.linalg.norm(hit[on_table], axis=1), 0.4, 1.5)
        image[on_table] = (base * falloff + texture).astype(np.float32)
    # Random edges (cables, furniture edges) and blobs.
    for _ in range(int(clutter) // 2):
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        p1 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.line(image, p0, p1, float(rng.uniform(0.0, 1.0)), int(rng.integers(1, 5)), cv2.LINE_AA)
    for _ in range(int(clutter) // 2):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(5, 40)), int(rng.uniform(5, 40)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.0, 1.0)), -1,
                    cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.8, 2.0)))  # background is out of focus
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------
# The renderer
# ---------------------------------------------------------------------------------------


class HandRenderer:
    """Renders frames of one sequence: fixed camera, background and appearance.

    Usage::

        renderer = HandRenderer(camera, seed=7)
        result = renderer.render(landmarks, objects=[Sphere([0, 0, 0.3], 0.03)], frame_index=0)
        result.image, result.landmark_visibility, result.occlusion_ratio

    Build a new renderer (or call :meth:`new_sequence`) for each sequence.
    """

    def __init__(self, camera: PinholeCamera, config: RenderConfig | None = None, seed: int = 0,
                 appearance: SequenceAppearance | None = None):
        self.camera = camera
        self.config = config or RenderConfig()
        h, w = camera.height, camera.width
        rays = camera.pixel_rays(np.float64)
        self._rx = np.ascontiguousarray(rays[..., 0], dtype=np.float32)
        self._ry = np.ascontiguousarray(rays[..., 1], dtype=np.float32)
        self._dd = (self._rx * self._rx + self._ry * self._ry + 1.0).astype(np.float32)  # |d|^2, d = (x, y, 1)
        self._flat_rays = np.stack([self._rx.ravel(), self._ry.ravel(), np.ones(h * w, np.float32)], axis=1)
        # Vignetting profile: squared pixel distance from the principal point, 1 at the farthest corner.
        u, v = np.meshgrid(np.arange(w) - camera.cx, np.arange(h) - camera.cy)
        r2 = u * u + v * v
        self._vignetting_shape = r2 / r2.max()
        self.new_sequence(seed, appearance)

    # -- sequence --------------------------------------------------------------------------

    def new_sequence(self, seed: int, appearance: SequenceAppearance | None = None) -> None:
        """Draw a new appearance and background from ``seed`` (deterministic)."""
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self.appearance = appearance or SequenceAppearance.draw(self.config, rng)
        self._vignette = (1.0 - self.appearance.vignetting * self._vignetting_shape).astype(np.float32)
        if self.config.background:
            background = render_background(self.camera, rng, self.config.background_clutter)
        else:
            background = np.zeros((self.camera.height, self.camera.width), np.float32)
        gain = float(rng.uniform(*self.config.background_gain_range))
        self._background = (background * gain * self._vignette).astype(np.float32)
        gamma = self.appearance.gamma
        self._tone_lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
        self._frame_counter = 0

    @property
    def background(self) -> np.ndarray:
        """The static background, linear radiance float32 ``[H, W]`` (vignetting applied)."""
        return self._background

    # -- bounds ----------------------------------------------------------------------------

    def _window_from_normalized(self, x0, x1, y0, y1):
        """Pixel window (r0, r1, c0, c1), half-open, covering normalised bounds; None if empty."""
        cam = self.camera
        if cam.has_distortion:
            s = np.linspace(0.0, 1.0, 9)
            xs = np.concatenate([x0 + (x1 - x0) * s, x0 + (x1 - x0) * s, np.full(9, x0), np.full(9, x1)])
            ys = np.concatenate([np.full(9, y0), np.full(9, y1), y0 + (y1 - y0) * s, y0 + (y1 - y0) * s])
            uv = cam.project(np.stack([xs, ys, np.ones_like(xs)], axis=1))
            if not np.all(np.isfinite(uv)):
                return 0, cam.height, 0, cam.width
            u0, u1 = uv[:, 0].min() - 2, uv[:, 0].max() + 2
            v0, v1 = uv[:, 1].min() - 2, uv[:, 1].max() + 2
        else:
            u0, u1 = cam.fx * x0 + cam.cx - 1, cam.fx * x1 + cam.cx + 1
            v0, v1 = cam.fy * y0 + cam.cy - 1, cam.fy * y1 + cam.cy + 1
        c0, c1 = max(int(math.floor(u0)), 0), min(int(math.ceil(u1)) + 1, cam.width)
        r0, r1 = max(int(math.floor(v0)), 0), min(int(math.ceil(v1)) + 1, cam.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def _sphere_bounds(self, centers: np.ndarray, radii: np.ndarray):
        """Exact normalised bounds of the union of spheres (tangent cones), or None = unbounded."""
        x, y, z = centers[:, 0], centers[:, 1], centers[:, 2]
        if np.any(z - radii <= self.config.near_m):
            return None
        den = z * z - radii * radii

        def extent(a):
            root = radii * np.sqrt(np.maximum(a * a + z * z - radii * radii, 0.0))
            return ((a * z - root) / den).min(), ((a * z + root) / den).max()

        (x0, x1), (y0, y1) = extent(x), extent(y)
        return x0, x1, y0, y1

    def _window(self, kind, params):
        if kind == _SPHERE:
            bounds = self._sphere_bounds(params[0][None], np.array([params[1]]))
        elif kind in (_CAPSULE, _CYLINDER):
            bounds = self._sphere_bounds(np.stack([params[0], params[1]]), np.array([params[2], params[2]]))
        else:
            vertices = params[2]
            if np.any(vertices[:, 2] <= self.config.near_m):
                bounds = None
            else:
                x, y = vertices[:, 0] / vertices[:, 2], vertices[:, 1] / vertices[:, 2]
                bounds = x.min(), x.max(), y.min(), y.max()
        if bounds is None:
            return 0, self.camera.height, 0, self.camera.width
        return self._window_from_normalized(*bounds)

    # -- intersections (window arrays: dx, dy, dd; ray d = (dx, dy, 1), origin 0) ------------

    # Primitive parameters arrive in float64; per-primitive scalars are formed in float64 (no
    # cancellation) and cast to float32 so the per-pixel arithmetic stays float32.

    @staticmethod
    def _hit_sphere(dx, dy, dd, c, r, near):
        """Nearest ray parameter (= depth) of ``|t d - c| = r``; inf where missed."""
        cx, cy, cz = (np.float32(v) for v in c)
        b = dx * cx + dy * cy + cz
        h = b * b - dd * np.float32(c @ c - r * r)
        t = (b - np.sqrt(np.maximum(h, 0.0))) / dd
        return np.where((h >= 0.0) & (t > near), t, np.inf)

    def _hit_capsule(self, dx, dy, dd, a, b, r, cap_a, cap_b, near, flat_caps=False):
        """Capsule a-b of radius r (min of the open cylinder body and the end spheres that
        ``cap_a``/``cap_b`` ask for); with ``flat_caps`` a finite cylinder (body and end discs)."""
        ba = b - a
        f32 = np.float32
        baba, baoa = f32(ba @ ba), f32(-(ba @ a))
        bax, bay, baz = (f32(v) for v in ba)
        ax, ay, az = (f32(v) for v in a)
        bard = dx * bax + dy * bay + baz
        rda = dx * ax + dy * ay + az  # d . a
        qa = baba * dd - bard * bard
        qb = -baba * rda - baoa * bard
        qc = f32((ba @ ba) * (a @ a) - (ba @ a) ** 2 - r * r * (ba @ ba))  # |ba x a|^2 - r^2 |ba|^2
        h = qb * qb - qa * qc
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-qb - np.sqrt(np.maximum(h, 0.0))) / qa
            y = baoa + t * bard  # ba . (p - a): position along the axis
            body = np.where((h >= 0.0) & (t > near) & (y > 0.0) & (y < baba), t, np.inf)
            if flat_caps:
                out = body
                for centre in (a, b):  # disc in the plane ba . p = ba . centre
                    tc = f32(ba @ centre) / bard
                    cx, cy, cz = (f32(v) for v in centre)
                    r2 = tc * tc * dd - 2.0 * tc * (dx * cx + dy * cy + cz) + f32(centre @ centre)
                    out = np.minimum(out, np.where((tc > near) & (r2 <= f32(r * r)), tc, np.inf))
                return out
        if cap_a:
            body = np.minimum(body, self._hit_sphere(dx, dy, dd, a, r, near))
        if cap_b:
            body = np.minimum(body, self._hit_sphere(dx, dy, dd, b, r, near))
        return body

    @staticmethod
    def _hit_convex(dx, dy, dd, normals, offsets, near):
        """Convex polytope ``normals @ p <= offsets`` (slab method over its planes)."""
        normals, offsets = normals.astype(np.float32), offsets.astype(np.float32)
        t_enter = np.full(dx.shape, -np.inf, dx.dtype)
        t_exit = np.full(dx.shape, np.inf, dx.dtype)
        miss = np.zeros(dx.shape, bool)
        for n, h in zip(normals, offsets):
            if not n.any():
                continue
            denom = dx * n[0] + dy * n[1] + n[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = h / denom
            t_enter = np.where(denom < 0.0, np.maximum(t_enter, ratio), t_enter)
            t_exit = np.where(denom > 0.0, np.minimum(t_exit, ratio), t_exit)
            if h < 0.0:
                miss |= denom == 0.0
        hit = (~miss) & (t_enter <= t_exit) & (t_enter > near)
        return np.where(hit, t_enter, np.inf)

    # -- normals on final hit points (deferred) -----------------------------------------------

    @staticmethod
    def _normals(scene: _Scene, prim: np.ndarray, points: np.ndarray) -> np.ndarray:
        normals = np.empty_like(points)
        order = np.argsort(prim, kind="stable")
        sorted_prim = prim[order]
        starts = np.flatnonzero(np.r_[True, sorted_prim[1:] != sorted_prim[:-1]])
        ends = np.r_[starts[1:], sorted_prim.size]
        for start, end in zip(starts, ends):
            sel = order[start:end]
            index = int(sorted_prim[start])
            p = points[sel]
            kind = scene.kind[index]
            params = scene.params[index]
            if kind == _SPHERE:
                n = p - params[0]
            elif kind in (_CAPSULE, _CYLINDER):
                a, b, r = params[:3]
                ba = b - a
                s = np.clip(((p - a) @ ba) / (ba @ ba), 0.0, 1.0)
                radial = p - a - s[:, None] * ba
                n = radial
                if kind == _CYLINDER:
                    length = math.sqrt(ba @ ba)
                    cap_distance = np.minimum(s, 1.0 - s) * length
                    radial_distance = np.abs(np.linalg.norm(radial, axis=1) - r)
                    on_cap = cap_distance < radial_distance
                    axis = ba / length
                    n = np.where(on_cap[:, None], np.where((s < 0.5)[:, None], -axis, axis), radial)
            else:
                plane_normals, offsets = params[0], params[1]
                signed = p @ plane_normals.T - offsets  # <= 0 inside; the face is the max
                n = plane_normals[np.argmax(signed, axis=1)]
            normals[sel] = n
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        return normals

    # -- main entry ---------------------------------------------------------------------------

    def render(
        self,
        landmarks: np.ndarray,
        objects: Iterable[SceneObject] = (),
        hand: HandGeometry | None = None,
        *,
        forearm_direction: np.ndarray | None = None,
        frame_index: int | None = None,
        draw_hand: bool = True,
    ) -> RenderResult:
        """Render one frame.

        ``landmarks[21, 3]``: hand landmarks in the optical frame (m, MediaPipe order).
        ``objects``: occluders. ``hand``: shape (default :class:`HandGeometry`).
        ``forearm_direction``: vector from the wrist towards the elbow (default: the hand
        axis blended with :data:`ELBOW_DIRECTION_PRIOR`; pass it when the arm pose is known).
        ``frame_index``: seeds the frame's noise together with the sequence seed
        (default: an internal counter). ``draw_hand=False`` renders objects only (the
        ground truth then reports every landmark as not visible).
        """
        cfg, cam, app = self.config, self.camera, self.appearance
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (NUM_LANDMARKS, 3) or not np.all(np.isfinite(landmarks)):
            raise ValueError(f"landmarks: expected finite [21, 3], got shape {landmarks.shape}")
        if frame_index is None:
            frame_index = self._frame_counter
        self._frame_counter = int(frame_index) + 1
        hand = hand or HandGeometry()

        scene = _Scene()
        own_radius = np.zeros(NUM_LANDMARKS)
        if draw_hand:
            own_radius = _add_hand(scene, landmarks, hand, app.hand_albedo, cfg.hand_texture_amplitude,
                                   cfg.hand_texture_period_m, forearm_direction)
        num_hand = len(scene)
        for obj in objects:
            _add_object(scene, obj)

        h, w = cam.height, cam.width
        depth = np.full((h, w), np.inf, np.float32)
        label = np.full((h, w), -1, np.int32)
        hand_depth, hand_label = depth, label
        near = np.float32(cfg.near_m)
        for index in range(len(scene)):
            if index == num_hand:
                hand_depth, hand_label = depth.copy(), label.copy()
            window = self._window(scene.kind[index], scene.params[index])
            if window is None:
                continue
            r0, r1, c0, c1 = window
            dx, dy, dd = self._rx[r0:r1, c0:c1], self._ry[r0:r1, c0:c1], self._dd[r0:r1, c0:c1]
            kind, params = scene.kind[index], scene.params[index]
            if kind == _SPHERE:
                t = self._hit_sphere(dx, dy, dd, params[0], params[1], near)
            elif kind == _CAPSULE:
                t = self._hit_capsule(dx, dy, dd, *params, near)
            elif kind == _CYLINDER:
                t = self._hit_capsule(dx, dy, dd, *params, near, flat_caps=True)
            else:
                t = self._hit_convex(dx, dy, dd, params[0], params[1], near)
            depth_window = depth[r0:r1, c0:c1]
            closer = t < depth_window
            depth_window[closer] = t[closer]
            label[r0:r1, c0:c1][closer] = index
        if num_hand == len(scene):
            hand_depth, hand_label = depth, label  # no objects: hand-only == final (not modified below)

        # Deferred shading of every hit pixel.
        radiance = self._background.copy()
        flat_label = label.ravel()
        hit = np.flatnonzero(flat_label >= 0)
        if hit.size:
            prim = flat_label[hit]
            points = self._flat_rays[hit] * depth.ravel()[hit, None]
            points64 = points.astype(np.float64)
            normals = self._normals(scene, prim, points64)
            to_light = np.asarray(cfg.light_offset_m, np.float64) - points64
            light_distance = np.linalg.norm(to_light, axis=1)
            lambert = np.maximum(np.einsum("ij,ij->i", normals, to_light) / light_distance, 0.0)
            falloff = np.minimum((cfg.light_reference_distance_m / light_distance) ** 2, cfg.max_falloff_gain)
            albedo = np.asarray(scene.albedo)[prim]
            amp = np.asarray(scene.tex_amp)[prim]
            textured = amp > 0
            texture = np.ones(hit.size)
            if textured.any():
                tp = prim[textured]
                origin = np.asarray(scene.tex_origin)[tp]
                axes = np.asarray(scene.tex_axes)[tp]
                frequency = np.asarray(scene.tex_freq)[tp, None]
                local = np.einsum("nij,nj->ni", axes, points64[textured] - origin) * frequency
                weave = 0.6 * np.sin(local[:, 0]) * np.sin(local[:, 1] + local[:, 2]) + 0.4 * np.sin(
                    0.37 * local[:, 0] + 0.71 * local[:, 1] - 0.53 * local[:, 2])
                texture[textured] = 1.0 + amp[textured] * weave
            shade = albedo * texture * (app.ambient + app.light * lambert * falloff)
            radiance.ravel()[hit] = (shade * self._vignette.ravel()[hit]).astype(np.float32)

        image = self._sensor(radiance, frame_index)

        hand_amodal = hand_depth < np.inf
        is_hand_prim = np.append(np.asarray(scene.is_hand, bool), False)  # label -1 (background) -> False
        hand_mask = is_hand_prim[label]
        amodal_area = int(hand_amodal.sum())
        object_ratio = 1.0 - hand_mask.sum() / amodal_area if amodal_area else 0.0

        own = np.zeros((NUM_LANDMARKS, len(scene) + 1), bool)  # last column: background (-1)
        for index, owners in enumerate(scene.owners):
            own[list(owners), index] = True
        uv, visible, occlusion = self._visibility(landmarks, own_radius, own, (depth, label),
                                                  (hand_depth, hand_label), draw_hand)
        return RenderResult(
            image=image, depth=depth, hand_mask=hand_mask, hand_amodal_mask=hand_amodal,
            landmark_uv=uv, landmark_visibility=visible, landmark_occlusion=occlusion,
            occlusion_ratio=float(1.0 - visible.mean()), object_pixel_occlusion_ratio=float(object_ratio),
        )

    # -- sensor ----------------------------------------------------------------------------------

    def _sensor(self, radiance: np.ndarray, frame_index: int) -> np.ndarray:
        app, cfg = self.appearance, self.config
        if cfg.optical_blur_sigma_px > 0:
            radiance = cv2.GaussianBlur(radiance, (0, 0), cfg.optical_blur_sigma_px)
        rng = np.random.default_rng([self.seed, int(frame_index)])
        signal = radiance * np.float32(255.0 * app.exposure)
        np.maximum(signal, 0.0, out=signal)
        sigma = np.sqrt(np.float32(app.read_noise_dn ** 2) + np.float32(app.shot_noise_gain) * signal)
        noisy = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
        linear8 = np.clip(noisy + 0.5, 0.0, 255.0).astype(np.uint8)
        return cv2.LUT(linear8, self._tone_lut)

    # -- ground truth -------------------------------------------------------------------------------

    def _visibility(self, landmarks, own_radius, own, final, hand_only, draw_hand):
        """Per-landmark visibility and occlusion cause (rule in the module docstring)."""
        cam, cfg = self.camera, self.config
        uv = cam.project(landmarks)
        in_view = cam.in_image(uv) & (landmarks[:, 2] > cfg.near_m)
        occlusion = np.full(NUM_LANDMARKS, OUT_OF_VIEW, np.int8)
        visible = np.zeros(NUM_LANDMARKS, bool)
        idx = np.flatnonzero(in_view)
        if not draw_hand or idx.size == 0:
            return uv, visible, occlusion
        n = int(cfg.visibility_neighborhood_px)
        du, dv = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
        pixel = np.rint(uv[idx]).astype(int)
        cols = np.clip(pixel[:, 0, None] + du.ravel()[None], 0, cam.width - 1)
        rows = np.clip(pixel[:, 1, None] + dv.ravel()[None], 0, cam.height - 1)
        z, r = landmarks[idx, 2], own_radius[idx]
        ball_surface = z * (1.0 - r / np.linalg.norm(landmarks[idx], axis=1)) - cfg.visibility_tolerance_m
        own_limit = z - cfg.visibility_own_depth_radii * r
        majority = du.size // 2 + 1

        def sees(depth, label):
            d, lab = depth[rows, cols], label[rows, cols]
            nothing_in_front = d >= ball_surface[:, None]
            own_surface = own[idx[:, None], lab] & (d >= own_limit[:, None])
            return (nothing_in_front | own_surface).sum(axis=1) >= majority

        seen = sees(*final)
        self_hidden = ~sees(*hand_only)
        visible[idx] = seen
        occlusion[idx] = np.where(seen, VISIBLE, np.where(self_hidden, OCCLUDED_SELF, OCCLUDED_OBJECT))
        return uv, visible, occlusion
