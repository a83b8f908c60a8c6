#!/usr/bin/env python3
"""Generate the AVI 16-DoF robot hand URDFs (right and mirrored left) from primitives.

Usage (from the repository root)::

    python robots/avi_hand_16dof/generate_urdf.py            # rewrite both URDFs
    python robots/avi_hand_16dof/generate_urdf.py --check    # exit 1 if they are stale

Allegro-like kinematics: thumb = rotation + 3 flexion joints; index, middle and ring =
abduction + 3 flexion joints.  All geometry is boxes, cylinders and spheres, with
inertials computed from the same primitives (uniform density), and collision shapes equal
to the visuals.

Frames follow docs/ARCHITECTURE.md "Hand frames": the root link ``palm`` has its origin
at the wrist, x distal (towards the fingers), z dorsal (out of the back of the hand) and
y = z x x, i.e. towards the thumb for the right hand.  Every finger link has x along the
bone (distal) and z dorsal, so every flexion joint turns about +y (positive flexion curls
the finger towards the palm).  The left hand is the right hand mirrored through the palm
x-z plane: positions y -> -y, fixed rotations rpy (r, p, y) -> (-r, p, -y) and joint axes
(ax, ay, az) -> (-ax, ay, -az), so a joint angle means the same anatomical motion on both
hands (as for the human hand model).

Standard library only, so it runs without the project venv.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DENSITY = 1400.0  # kg/m^3: printed plastic shell with servos inside, averaged
VELOCITY = 6.0  # rad/s, joint velocity limit (URDF <limit velocity>)
EFFORT = 0.7  # N m

# Palm: box from the wrist to the finger bases.  Metres.
PALM_LENGTH = 0.100
PALM_WIDTH = 0.092
PALM_THICKNESS = 0.026
FINGER_WIDTH = 0.022
FINGER_THICKNESS = 0.020
BASE_LINK_LENGTH = 0.010  # abduction -> flexion offset of the long fingers

# name, base position in the palm frame (right hand), abduction axis sign, link lengths
# (proximal, middle, distal up to the tip frame).
FINGERS = [
    ("index", (0.098, 0.032, 0.0), +1.0, (0.048, 0.030, 0.026)),
    ("middle", (0.102, 0.000, 0.0), +1.0, (0.052, 0.032, 0.027)),
    ("ring", (0.097, -0.032, 0.0), -1.0, (0.048, 0.030, 0.026)),
]
# lower, upper (rad) of: abduction, mcp flexion, pip flexion, dip flexion
FINGER_LIMITS = [(-0.35, 0.35), (-0.25, 1.65), (-0.10, 1.75), (-0.10, 1.50)]

# Thumb: rotation joint about the palm's long axis (positive turns the thumb under the
# palm, i.e. opposition), then three parallel flexion joints.  At zero the thumb lies in
# the palm plane, pointing THUMB_ANGLE from the palm x axis towards +y.
THUMB_ROTATION_ORIGIN = (0.030, 0.018, -0.012)
THUMB_ROTATION_AXIS = (-1.0, 0.0, 0.0)  # in the palm frame, unit
THUMB_BASE_OFFSET = 0.014  # rotation axis -> cmc flexion joint, along palm +y
THUMB_ANGLE = math.radians(42.0)
THUMB_LENGTHS = (0.054, 0.038, 0.032)  # metacarpal, proximal, distal up to the tip
# lower, upper of: rotation, cmc flexion, mcp flexion, ip flexion
THUMB_LIMITS = [(-0.10, 2.00), (-0.35, 1.20), (-0.10, 1.30), (-0.20, 1.50)]


@dataclass
class Shape:
    kind: str  # box | cylinder | sphere
    size: tuple  # box (x, y, z); cylinder (radius, length) along z; sphere (radius,)
    xyz: tuple = (0.0, 0.0, 0.0)
    rpy: tuple = (0.0, 0.0, 0.0)

    def mass(self) -> float:
        if self.kind == "box":
            return DENSITY * self.size[0] * self.size[1] * self.size[2]
        if self.kind == "cylinder":
            return DENSITY * math.pi * self.size[0] ** 2 * self.size[1]
        return DENSITY * 4.0 / 3.0 * math.pi * self.size[0] ** 3

    def inertia_local(self) -> tuple:
        """Principal moments about the shape's own centre (ixx, iyy, izz)."""
        m = self.mass()
        if self.kind == "box":
            x, y, z = self.size
            return (m * (y * y + z * z) / 12, m * (x * x + z * z) / 12, m * (x * x + y * y) / 12)
        if self.kind == "cylinder":
            r, h = self.size
            side = m * (3 * r * r + h * h) / 12
            return (side, side, m * r * r / 2)
        r = self.size[0]
        return (2 * m * r * r / 5,) * 3

    def geometry_xml(self) -> str:
        if self.kind == "box":
            return '<box size="%s"/>' % _fmt(self.size)
        if self.kind == "cylinder":
            return '<cylinder radius="%s" length="%s"/>' % (_num(self.size[0]), _num(self.size[1]))
        return '<sphere radius="%s"/>' % _num(self.size[0])


def _num(v: float) -> str:
    s = "%.6f" % v
    s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _fmt(values) -> str:
    return " ".join(_num(v) for v in values)


def _rot_rpy(rpy):
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]


def _inertial(shapes: list[Shape]) -> str:
    """Combined inertial of several primitives (parallel-axis theorem), in the link frame."""
    masses = [s.mass() for s in shapes]
    total = sum(masses)
    com = [sum(m * s.xyz[i] for m, s in zip(masses, shapes)) / total for i in range(3)]
    inertia = [[0.0] * 3 for _ in range(3)]
    for m, s in zip(masses, shapes):
        rot = _rot_rpy(s.rpy)
        principal = s.inertia_local()
        d = [s.xyz[i] - com[i] for i in range(3)]
        dd = sum(v * v for v in d)
        for i in range(3):
            for j in range(3):
                rotated = sum(rot[i][k] * principal[k] * rot[j][k] for k in range(3))
                inertia[i][j] += rotated + m * ((dd if i == j else 0.0) - d[i] * d[j])
    # Products of inertia that are zero up to rounding are written as exact zeros.
    scale = max(inertia[0][0], inertia[1][1], inertia[2][2])
    inertia = [[0.0 if abs(v) < 1e-9 * scale else v for v in row] for row in inertia]
    return (
        "    <inertial>\n"
        f'      <origin xyz="{_fmt(com)}" rpy="0 0 0"/>\n'
        f'      <mass value="{_num(total)}"/>\n'
        f'      <inertia ixx="{inertia[0][0]:.4e}" ixy="{inertia[0][1]:.4e}" ixz="{inertia[0][2]:.4e}"'
        f' iyy="{inertia[1][1]:.4e}" iyz="{inertia[1][2]:.4e}" izz="{inertia[2][2]:.4e}"/>\n'
        "    </inertial>\n"
    )


class UrdfWriter:
    def __init__(self, name: str, mirror: bool):
        self.name = name
        self.mirror = mirror
        self.parts: list[str] = []

    # Mirroring through the x-z plane (see the module docstring).
    def _xyz(self, xyz):
        return (xyz[0], -xyz[1], xyz[2]) if self.mirror else tuple(xyz)

    def _rpy(self, rpy):
        return (-rpy[0], rpy[1], -rpy[2]) if self.mirror else tuple(rpy)

    def _axis(self, axis):
        return (-axis[0], axis[1], -axis[2]) if self.mirror else tuple(axis)

    def link(self, name: str, shapes: list[Shape], material: str) -> None:
        shapes = [Shape(s.kind, s.size, self._xyz(s.xyz), self._rpy(s.rpy)) for s in shapes]
        out = [f'  <link name="{name}">\n', _inertial(shapes) if shapes else ""]
        for tag in ("visual", "collision"):
            for s in shapes:
                out.append(
                    f"    <{tag}>\n"
                    f'      <origin xyz="{_fmt(s.xyz)}" rpy="{_fmt(s.rpy)}"/>\n'
                    f"      <geometry>{s.geometry_xml()}</geometry>\n"
                    + (f'      <material name="{material}"/>\n' if tag == "visual" else "")
                    + f"    </{tag}>\n"
                )
        out.append("  </link>\n")
        self.parts.append("".join(out))

    def tip_link(self, name: str) -> None:
        """Massless marker link (fingertip frame); fixed joints fold it into its parent."""
        self.parts.append(f'  <link name="{name}"/>\n')

    def joint(self, name, kind, parent, child, xyz, rpy=(0, 0, 0), axis=None, limits=None) -> None:
        out = [
            f'  <joint name="{name}" type="{kind}">\n',
            f'    <parent link="{parent}"/>\n    <child link="{child}"/>\n',
            f'    <origin xyz="{_fmt(self._xyz(xyz))}" rpy="{_fmt(self._rpy(rpy))}"/>\n',
        ]
        if axis is not None:
            out.append(f'    <axis xyz="{_fmt(self._axis(axis))}"/>\n')
        if limits is not None:
            out.append(
                f'    <limit lower="{_num(limits[0])}" upper="{_num(limits[1])}"'
                f' velocity="{_num(VELOCITY)}" effort="{_num(EFFORT)}"/>\n'
            )
            out.append('    <dynamics damping="0.02" friction="0.01"/>\n')
        out.append("  </joint>\n")
        self.parts.append("".join(out))

    def xml(self) -> str:
        side = "left" if self.mirror else "right"
        head = (
            '<?xml version="1.0"?>\n'
            "<!-- Generated by robots/avi_hand_16dof/generate_urdf.py: edit that file, not this one. -->\n"
            f"<!-- AVI 16-DoF hand, {side}. Frames: x distal, z dorsal (docs/ARCHITECTURE.md). -->\n"
            f'<robot name="{self.name}">\n'
            '  <material name="shell"><color rgba="0.82 0.82 0.85 1"/></material>\n'
            '  <material name="joint"><color rgba="0.15 0.15 0.18 1"/></material>\n'
            '  <material name="pad"><color rgba="0.20 0.45 0.75 1"/></material>\n'
        )
        return head + "".join(self.parts) + "</robot>\n"


def _segment(length: float, tip: bool) -> list[Shape]:
    """A phalanx along +x: joint cylinder at the origin, box body, optional round pad."""
    shapes = [
        Shape("cylinder", (FINGER_THICKNESS / 2, FINGER_WIDTH), (0, 0, 0), (math.pi / 2, 0, 0)),
    ]
    body = length - (FINGER_THICKNESS / 2 if tip else 0.0)
    shapes.append(Shape("box", (body, FINGER_WIDTH * 0.9, FINGER_THICKNESS), (body / 2, 0, 0)))
    if tip:
        shapes.append(Shape("sphere", (FINGER_THICKNESS / 2,), (body, 0, 0)))
    return shapes


def build(mirror: bool) -> str:
    side = "left" if mirror else "right"
    w = UrdfWriter(f"avi_hand_16dof_{side}", mirror)
    w.link(
        "palm",
        [
            Shape("box", (PALM_LENGTH - 0.012, PALM_WIDTH, PALM_THICKNESS), ((PALM_LENGTH - 0.012) / 2 + 0.006, 0, 0)),
            Shape("cylinder", (0.024, 0.012), (0.006, 0, 0), (0, math.pi / 2, 0)),  # wrist flange
        ],
        "shell",
    )
    for name, base, abd_sign, (l1, l2, l3) in FINGERS:
        w.link(f"{name}_base", [Shape("box", (BASE_LINK_LENGTH, FINGER_WIDTH, FINGER_THICKNESS), (BASE_LINK_LENGTH / 2, 0, 0))], "joint")
        w.link(f"{name}_proximal", _segment(l1, False), "shell")
        w.link(f"{name}_middle", _segment(l2, False), "shell")
        w.link(f"{name}_distal", _segment(l3, True), "pad")
        w.tip_link(f"{name}_tip")
        lim = FINGER_LIMITS
        w.joint(f"{name}_abd", "revolute", "palm", f"{name}_base", base, axis=(0, 0, abd_sign), limits=lim[0])
        w.joint(f"{name}_mcp", "revolute", f"{name}_base", f"{name}_proximal", (BASE_LINK_LENGTH, 0, 0), axis=(0, 1, 0), limits=lim[1])
        w.joint(f"{name}_pip", "revolute", f"{name}_proximal", f"{name}_middle", (l1, 0, 0), axis=(0, 1, 0), limits=lim[2])
        w.joint(f"{name}_dip", "revolute", f"{name}_middle", f"{name}_distal", (l2, 0, 0), axis=(0, 1, 0), limits=lim[3])
        w.joint(f"{name}_tip_joint", "fixed", f"{name}_distal", f"{name}_tip", (l3, 0, 0))

    t1, t2, t3 = THUMB_LENGTHS
    lim = THUMB_LIMITS
    w.link("thumb_base", [Shape("box", (0.020, THUMB_BASE_OFFSET + 0.008, 0.018), (0, THUMB_BASE_OFFSET / 2, 0))], "joint")
    w.link("thumb_metacarpal", _segment(t1, False), "shell")
    w.link("thumb_proximal", _segment(t2, False), "shell")
    w.link("thumb_distal", _segment(t3, True), "pad")
    w.tip_link("thumb_tip")
    # Rotation about -x: positive angle swings the thumb from the palm plane under the palm.
    w.joint("thumb_rotation", "revolute", "palm", "thumb_base", THUMB_ROTATION_ORIGIN, axis=THUMB_ROTATION_AXIS, limits=lim[0])
    # Thumb bone frame: x along the thumb (THUMB_ANGLE towards +y), y = -z_palm, so that
    # flexion about +y swings the thumb towards the fingers in the palm plane at rotation
    # 0 and towards the fingertips under the palm at full rotation.
    w.joint(
        "thumb_cmc", "revolute", "thumb_base", "thumb_metacarpal",
        (0, THUMB_BASE_OFFSET, 0), rpy=(-math.pi / 2, 0, THUMB_ANGLE), axis=(0, 1, 0), limits=lim[1],
    )
    w.joint("thumb_mcp", "revolute", "thumb_metacarpal", "thumb_proximal", (t1, 0, 0), axis=(0, 1, 0), limits=lim[2])
    w.joint("thumb_ip", "revolute", "thumb_proximal", "thumb_distal", (t2, 0, 0), axis=(0, 1, 0), limits=lim[3])
    w.joint("thumb_tip_joint", "fixed", "thumb_distal", "thumb_tip", (t3, 0, 0))
    return w.xml()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for mirror, filename in ((False, "avi_hand_16dof.urdf"), (True, "avi_hand_16dof_left.urdf")):
        path = HERE / filename
        text = build(mirror)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale (rerun generate_urdf.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
