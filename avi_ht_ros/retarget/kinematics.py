"""Robot hand kinematics from a URDF with pinocchio: FK of chosen links and their Jacobians.

:class:`RobotHandKinematics` wraps one pinocchio model/data pair and answers, for a joint
vector ``q`` (all movable joints, pinocchio order = URDF tree order), the positions of a
set of frames (URDF links, or extra points rigidly attached to a link) and their
translational Jacobians ``d p / d q`` expressed in the root frame.

:class:`JointCoupling` maps the *driven* joints (the optimisation variables) to the full
joint vector: mimic joints (``q_m = multiplier * q_source + offset``, from the URDF
``<mimic>`` tags and/or the retargeting config) follow their source, and joints that are
neither driven nor mimic are held at a fixed value.  Its driven-joint limits are
tightened so that every mimic joint also stays inside its own limits, which makes
"clip the driven joints" sufficient for "every joint inside its limits".

Only fixed-base hands with 1-DoF joints (revolute, prismatic) are supported; a
continuous or floating joint is rejected with :class:`~avi_ht_ros.common.errors.ConfigError`.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pinocchio as pin

from avi_ht_ros.common.errors import ConfigError

_LWA = pin.ReferenceFrame.LOCAL_WORLD_ALIGNED


@dataclass(frozen=True)
class MimicJoint:
    """``q[joint] = multiplier * q[source] + offset``."""

    joint: str
    source: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class ExtraFrame:
    """A point rigidly attached to a URDF link (e.g. a fingertip without its own link)."""

    name: str
    link: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


def parse_urdf_mimic_joints(urdf_path: str | Path) -> tuple[MimicJoint, ...]:
    """The ``<mimic>`` tags of a URDF (pinocchio's default parser ignores them)."""
    try:
        root = ET.parse(str(urdf_path)).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ConfigError(str(urdf_path), f"cannot read URDF: {exc}") from exc
    mimics = []
    for joint in root.iter("joint"):
        tag = joint.find("mimic")
        if tag is None:
            continue
        try:
            mimics.append(MimicJoint(
                joint=joint.attrib["name"], source=tag.attrib["joint"],
                multiplier=float(tag.attrib.get("multiplier", 1.0)),
                offset=float(tag.attrib.get("offset", 0.0))))
        except (KeyError, ValueError) as exc:
            raise ConfigError(str(urdf_path), f"joint {joint.attrib.get('name')!r}: malformed <mimic>: {exc}") from exc
    return tuple(mimics)


class RobotHandKinematics:
    """Forward kinematics and frame Jacobians of a fixed-base robot hand.

    Args:
        urdf_path: the robot's URDF (primitives or meshes; geometry is not loaded).
        extra_frames: points attached to links, addressable by name like links.
    """

    def __init__(self, urdf_path: str | Path, extra_frames: Iterable[ExtraFrame] = ()):
        self.urdf_path = str(urdf_path)
        if not Path(self.urdf_path).is_file():
            raise ConfigError(self.urdf_path, "URDF file not found")
        try:
            self.model: pin.Model = pin.buildModelFromUrdf(self.urdf_path)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(self.urdf_path, f"pinocchio cannot parse the URDF: {exc}") from exc
        if self.model.nq != self.model.nv or any(nq != 1 for nq in self.model.nqs[1:]):
            bad = [self.model.names[i] for i in range(1, self.model.njoints) if self.model.nqs[i] != 1]
            raise ConfigError(self.urdf_path, f"only 1-DoF joints (revolute, prismatic) are supported; "
                                              f"unsupported joints: {bad}")
        if self.model.nq == 0:
            raise ConfigError(self.urdf_path, "the robot has no movable joint")
        #: Movable joints in pinocchio's q order.
        self.joint_names: tuple[str, ...] = tuple(self.model.names[1:])
        self._joint_index = {name: i for i, name in enumerate(self.joint_names)}
        self.lower = np.array(self.model.lowerPositionLimit, dtype=float)
        self.upper = np.array(self.model.upperPositionLimit, dtype=float)
        self.velocity_limit = np.array(self.model.velocityLimit, dtype=float)
        self.effort_limit = np.array(self.model.effortLimit, dtype=float)
        self.mimic_joints: tuple[MimicJoint, ...] = parse_urdf_mimic_joints(self.urdf_path)
        self.link_names: tuple[str, ...] = tuple(
            f.name for f in self.model.frames if f.type == pin.FrameType.BODY)
        for extra in extra_frames:
            self.add_frame(extra)
        self.data: pin.Data = self.model.createData()
        self._q_cache: np.ndarray | None = None

    # ------------------------------------------------------------------ names, frames
    @property
    def nq(self) -> int:
        return int(self.model.nq)

    def joint_index(self, name: str) -> int:
        """Index of a movable joint in q; ``KeyError`` if the URDF has no such joint."""
        return self._joint_index[name]

    def has_frame(self, name: str) -> bool:
        """True for a URDF link or an extra frame of that name."""
        return name in self.link_names or any(
            f.name == name and f.type == pin.FrameType.OP_FRAME for f in self.model.frames)

    def frame_id(self, name: str) -> int:
        """pinocchio frame index of a link or extra frame; ``KeyError`` if unknown."""
        for frame_type in (pin.FrameType.BODY, pin.FrameType.OP_FRAME):
            if self.model.existFrame(name, frame_type):
                return int(self.model.getFrameId(name, frame_type))
        raise KeyError(name)

    def add_frame(self, extra: ExtraFrame) -> int:
        """Attach a point to a link; returns its frame index."""
        if self.has_frame(extra.name):
            raise ConfigError(self.urdf_path, f"extra frame {extra.name!r} already exists in the URDF")
        if extra.link not in self.link_names:
            raise ConfigError(self.urdf_path, f"extra frame {extra.name!r}: no link {extra.link!r}")
        parent = self.model.frames[self.frame_id(extra.link)]
        placement = parent.placement * pin.SE3(np.eye(3), np.asarray(extra.offset, dtype=float))
        frame_id = self.model.addFrame(pin.Frame(extra.name, parent.parentJoint, self.frame_id(extra.link),
                                                 placement, pin.FrameType.OP_FRAME))
        self.data = self.model.createData()
        return int(frame_id)

    def neutral(self) -> np.ndarray:
        """Zero joint vector clipped into the limits."""
        return np.clip(np.zeros(self.nq), self.lower, self.upper)

    def frame_parent_joint(self, frame_id: int) -> int:
        """pinocchio joint index (0 = universe/root) that carries a frame."""
        return int(self.model.frames[frame_id].parentJoint)

    def joint_support_mask(self, frame_ids: Sequence[int]) -> np.ndarray:
        """``[k, nq]`` bool: ``mask[i, j]`` when joint ``j`` moves frame ``frame_ids[i]``."""
        mask = np.zeros((len(frame_ids), self.nq), dtype=bool)
        for row, frame_id in enumerate(frame_ids):
            joint = self.frame_parent_joint(frame_id)
            for support in self.model.supports[joint]:
                if support > 0:
                    mask[row, support - 1] = True
        return mask

    # ------------------------------------------------------------------ kinematics
    def frame_placement(self, q: np.ndarray, frame_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(rotation [3, 3], translation [3]) of a frame in the root frame."""
        pin.forwardKinematics(self.model, self.data, np.asarray(q, dtype=float))
        placement = pin.updateFramePlacement(self.model, self.data, frame_id)
        return placement.rotation.copy(), placement.translation.copy()

    def frame_positions(self, q: np.ndarray, frame_ids: Sequence[int]) -> np.ndarray:
        """``[k, 3]`` positions of frames in the root frame."""
        model, data = self.model, self.data
        pin.forwardKinematics(model, data, np.asarray(q, dtype=float))
        return np.array([pin.updateFramePlacement(model, data, i).translation for i in frame_ids])

    def frame_positions_batch(self, q: np.ndarray, frame_ids: Sequence[int]) -> np.ndarray:
        """``[T, k, 3]`` positions for ``[T, nq]`` joint vectors."""
        q = np.atleast_2d(np.asarray(q, dtype=float))
        return np.stack([self.frame_positions(row, frame_ids) for row in q])

    def frame_positions_and_jacobians(self, q: np.ndarray, frame_ids: Sequence[int]
                                      ) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``[k, 3]`` and translational Jacobians ``[k, 3, nq]`` (root axes)."""
        model, data = self.model, self.data
        pin.computeJointJacobians(model, data, np.asarray(q, dtype=float))
        positions = np.array([pin.updateFramePlacement(model, data, i).translation for i in frame_ids])
        jacobians = np.array([pin.getFrameJacobian(model, data, i, _LWA)[:3] for i in frame_ids])
        return positions, jacobians


class JointCoupling:
    """Driven joints -> full joint vector: ``q_full = A @ q_driven + b``.

    Args:
        kinematics: the robot.
        driven: names of the optimised joints (default: every joint that is not a mimic).
        mimic: mimic relations (URDF ones are used when None).
        fixed_positions: value of each joint that is neither driven nor mimic (default:
            0 clipped into its limits).
        where: file name for error messages.
    """

    def __init__(self, kinematics: RobotHandKinematics, driven: Sequence[str] | None = None,
                 mimic: Sequence[MimicJoint] | None = None,
                 fixed_positions: dict[str, float] | None = None, where: str | None = None):
        where = where or kinematics.urdf_path
        names = kinematics.joint_names
        mimic = tuple(kinematics.mimic_joints if mimic is None else mimic)
        mimic_by_joint: dict[str, MimicJoint] = {}
        for relation in mimic:
            for role, name in (("joint", relation.joint), ("source", relation.source)):
                if name not in names:
                    raise ConfigError(where, f"mimic {role} {name!r} is not a movable joint of "
                                             f"{kinematics.urdf_path}")
            mimic_by_joint[relation.joint] = relation
        if driven is None:
            driven = [n for n in names if n not in mimic_by_joint]
        driven = list(driven)
        for name in driven:
            if name not in names:
                raise ConfigError(where, f"driven joint {name!r} is not a movable joint of {kinematics.urdf_path}; "
                                         f"movable joints: {list(names)}")
            if name in mimic_by_joint:
                raise ConfigError(where, f"joint {name!r} is both driven and a mimic joint")
        if len(set(driven)) != len(driven):
            raise ConfigError(where, "driven joints contain duplicates")
        self.kinematics = kinematics
        self.driven_names: tuple[str, ...] = tuple(driven)
        self.mimic: tuple[MimicJoint, ...] = tuple(mimic_by_joint.values())
        nq, nd = kinematics.nq, len(driven)
        a = np.zeros((nq, nd))
        b = np.zeros(nq)
        driven_index = {name: i for i, name in enumerate(driven)}
        fixed_positions = dict(fixed_positions or {})
        for name, value in fixed_positions.items():
            if name not in names:
                raise ConfigError(where, f"fixed joint {name!r} is not a movable joint")
        for j, name in enumerate(names):
            if name in driven_index:
                a[j, driven_index[name]] = 1.0
            elif name not in mimic_by_joint:
                value = float(fixed_positions.get(name, 0.0))
                b[j] = np.clip(value, kinematics.lower[j], kinematics.upper[j])

        # Resolve mimic chains (a mimic of a mimic) to driven/fixed joints.
        def resolve(name: str, depth: int = 0) -> tuple[np.ndarray, float]:
            if depth > len(names):
                raise ConfigError(where, f"mimic joints form a cycle through {name!r}")
            j = kinematics.joint_index(name)
            if name not in mimic_by_joint:
                return a[j].copy(), b[j]
            rel = mimic_by_joint[name]
            row, offset = resolve(rel.source, depth + 1)
            return rel.multiplier * row, rel.multiplier * offset + rel.offset

        for name in mimic_by_joint:
            j = kinematics.joint_index(name)
            a[j], b[j] = resolve(name)
        self.matrix = a
        self.offset = b
        self.driven_index = np.array([kinematics.joint_index(n) for n in driven], dtype=int)

        # Driven limits tightened so every dependent (mimic) joint stays inside its limits.
        lower = kinematics.lower[self.driven_index].copy()
        upper = kinematics.upper[self.driven_index].copy()
        for j in range(nq):
            row = a[j]
            nonzero = np.flatnonzero(row)
            if len(nonzero) != 1 or (names[j] in driven_index):
                continue
            d = nonzero[0]
            lo = (kinematics.lower[j] - b[j]) / row[d]
            hi = (kinematics.upper[j] - b[j]) / row[d]
            lo, hi = min(lo, hi), max(lo, hi)
            lower[d], upper[d] = max(lower[d], lo), min(upper[d], hi)
        if np.any(lower > upper):
            bad = [driven[i] for i in np.flatnonzero(lower > upper)]
            raise ConfigError(where, f"mimic relations leave no feasible range for joints {bad}")
        self.lower, self.upper = lower, upper
        self._identity = (nd == nq and np.array_equal(a, np.eye(nq)) and not b.any())

    @property
    def n_driven(self) -> int:
        return len(self.driven_names)

    def full(self, q_driven: np.ndarray) -> np.ndarray:
        """Full joint vector ``[..., nq]`` from driven joints ``[..., n_driven]``."""
        q_driven = np.asarray(q_driven, dtype=float)
        if self._identity:
            return q_driven.copy()
        full = q_driven @ self.matrix.T + self.offset
        # Mimic outputs are inside their limits by construction; the clip only removes
        # floating-point round-off at the boundaries.
        return np.minimum(np.maximum(full, self.kinematics.lower), self.kinematics.upper)

    def driven(self, q_full: np.ndarray) -> np.ndarray:
        """Driven joints picked out of a full joint vector."""
        return np.asarray(q_full, dtype=float)[..., self.driven_index]

    def chain_jacobian(self, jacobians_full: np.ndarray) -> np.ndarray:
        """``[..., nq]``-column Jacobians -> ``[..., n_driven]`` columns (chain rule through A)."""
        if self._identity:
            return jacobians_full
        return jacobians_full @ self.matrix
