"""IMU data glove: where each IMU sits on the hand skeleton and what it can measure.

A glove is a YAML file (format documented in ``config/glove_12imu.yaml``, the reference
12-IMU glove of AVI-HT): an ordered list of sites, each rigidly mounted on one bone of
:mod:`avi_ht_ros.common.hand_model` with a mounting rotation and offset, plus the IMU
specs (full-scale ranges, ADC resolution, noise densities) shared by the glove driver and
the IMU simulator. Another glove is another YAML file; nothing here knows about 12.

The site order of the file is the sensor order everywhere (wire protocol, IMU tensors,
attention tokens). Geometry is given for the right hand at scale 1; the left glove is
the mirror image (offset y -> -y, mount rotation R -> S R S), and offsets scale with
the hand scale of the FK result.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.common.hand_model import (
    BONE_INDEX,
    BONE_NAMES,
    SIDES,
    ForwardKinematicsResult,
    bone_adjacency,
    forward_kinematics_numpy,
    bone_path,
    kinematic_hop_distance,
    mirror_landmarks_local,
    mirror_rotations_local,
)

STANDARD_GRAVITY = 9.80665  # m/s^2 per g
REFERENCE_GLOVE_FILE = "glove_12imu.yaml"  # in config/, found by avi_ht_ros.common.paths.config_path

_SITE_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
_SITE_KEYS = {"name", "bone", "offset", "rpy", "quaternion_xyzw", "imu"}
_TOP_KEYS = {"name", "sample_rate_hz", "imu", "sites"}
_IMU_KEYS = {
    "part", "accel_full_scale_g", "gyro_full_scale_dps", "adc_bits",
    "accel_noise_density_ug_per_sqrt_hz", "gyro_noise_density_dps_per_sqrt_hz",
}


@dataclass(frozen=True)
class ImuSpec:
    """Specs of one 6-DoF IMU, in SI units.

    Attributes:
        part: part number (informational).
        accel_range: full-scale range, m/s^2 (readings saturate at +-accel_range).
        gyro_range: full-scale range, rad/s.
        adc_bits: bits per axis sample (two's complement).
        accel_noise_density: white-noise density, (m/s^2)/sqrt(Hz).
        gyro_noise_density: white-noise density, (rad/s)/sqrt(Hz).
    """

    part: str
    accel_range: float
    gyro_range: float
    adc_bits: int
    accel_noise_density: float
    gyro_noise_density: float

    @property
    def accel_resolution(self) -> float:
        """m/s^2 per count (one LSB): 2 * range / 2**bits."""
        return 2.0 * self.accel_range / 2.0 ** self.adc_bits

    @property
    def gyro_resolution(self) -> float:
        """rad/s per count (one LSB)."""
        return 2.0 * self.gyro_range / 2.0 ** self.adc_bits


@dataclass(frozen=True, eq=False)
class ImuSite:
    """One IMU rigidly mounted on a bone (right-hand geometry at scale 1).

    Attributes:
        name: site id (``index_proximal``); TF frame ``<side>_imu_<name>``.
        bone: hand-model bone name it is mounted on.
        mount_rotation: ``[3, 3]`` sensor frame -> bone frame.
        mount_offset: ``[3]`` m, sensor origin in the bone frame.
        imu: the sensor's specs.
    """

    name: str
    bone: str
    mount_rotation: np.ndarray
    mount_offset: np.ndarray
    imu: ImuSpec

    @property
    def bone_index(self) -> int:
        return BONE_INDEX[self.bone]


@dataclass(frozen=True, eq=False)
class GloveModel:
    """An IMU glove: ordered sites on the hand skeleton (see module docstring)."""

    name: str
    sample_rate_hz: float
    sites: tuple[ImuSite, ...]
    source: str = "<dict>"

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> "GloveModel":
        """Load and validate a glove YAML; bad content raises ``ConfigError(path, ...)``
        naming the offending field (e.g. ``sites[3].bone``)."""
        return cls.from_dict(load_yaml_mapping(path), where=str(path))

    @classmethod
    def reference(cls) -> "GloveModel":
        """The reference 12-IMU glove (``config/glove_12imu.yaml``, source tree or install)."""
        return cls.from_yaml(config_path(REFERENCE_GLOVE_FILE))

    @classmethod
    def from_dict(cls, data: Any, where: str = "<dict>") -> "GloveModel":
        """Validate an already-parsed glove description; errors name ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise ConfigError(where, "top level must be a mapping with keys name, sample_rate_hz, imu, sites")
        _reject_unknown_keys(data, _TOP_KEYS, "", where)
        name = data.get("name", Path(where).stem)
        if not isinstance(name, str) or not name:
            raise ConfigError(where, "name: must be a non-empty string")
        sample_rate_hz = _positive_number(data.get("sample_rate_hz"), "sample_rate_hz", where)
        default_imu = data.get("imu")
        if not isinstance(default_imu, Mapping):
            raise ConfigError(where, "imu: missing or not a mapping of IMU specs")
        _reject_unknown_keys(default_imu, _IMU_KEYS, "imu.", where)
        sites_data = data.get("sites")
        if not isinstance(sites_data, list) or not sites_data:
            raise ConfigError(where, "sites: missing or not a non-empty list")
        sites, seen = [], {}
        for i, site_data in enumerate(sites_data):
            field = f"sites[{i}]"
            site = _parse_site(site_data, default_imu, field, where)
            if site.name in seen:
                raise ConfigError(where, f"{field}.name: duplicate site name {site.name!r} "
                                         f"(also sites[{seen[site.name]}])")
            seen[site.name] = i
            sites.append(site)
        return cls(name=name, sample_rate_hz=sample_rate_hz, sites=tuple(sites), source=where)

    # ---------------------------------------------------------------- naming
    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self.sites)

    @property
    def num_sensors(self) -> int:
        return len(self.sites)

    @property
    def sensor_bone_indices(self) -> np.ndarray:
        """``[N]`` hand-model bone index of every sensor."""
        return np.array([site.bone_index for site in self.sites], dtype=np.int64)

    def site_index(self, site: str) -> int:
        """Position of a site in the sensor order; ``KeyError`` if the glove lacks it."""
        try:
            return self.sensor_names.index(site)
        except ValueError:
            raise KeyError(f"glove {self.name!r} has no site {site!r}; sites: {', '.join(self.sensor_names)}") from None

    def frame_id(self, side: str, site: str) -> str:
        """TF frame of an IMU: ``"<side>_imu_<site>"``."""
        if side not in SIDES:
            raise ValueError(f"side: {side!r}, expected 'left' or 'right'")
        self.site_index(site)
        return f"{side}_imu_{site}"

    def frame_ids(self, side: str) -> tuple[str, ...]:
        """TF frames of all sensors in sensor order."""
        return tuple(self.frame_id(side, site) for site in self.sensor_names)

    # ---------------------------------------------------------------- kinematic graph
    def hop_distance_matrix(self, compress_unsensed_bones: bool = True) -> np.ndarray:
        """``[N, N]`` int hop distances between sensor sites on the hand skeleton graph.

        With ``compress_unsensed_bones`` (default, AVI-HT's sensor graph) the bone tree is
        reduced to the sensor bones plus the branching bones that connect them: chains of
        bones that carry no sensor and do not branch collapse into one hop. So
        ``index_proximal``-``index_distal`` is 1 (across the unsensed intermediate
        phalanx), ``hand_back``-``pinky_proximal`` is 1, ``thumb_distal``-``pinky_distal``
        is 5. Sensors on the same bone are 0 apart. Without compression the plain
        bone-tree hop count (:func:`kinematic_hop_distance`) is returned.
        """
        bones = [site.bone_index for site in self.sites]
        n = len(bones)
        distances = np.zeros((n, n), dtype=np.int64)
        if not compress_unsensed_bones:
            for i in range(n):
                for j in range(n):
                    distances[i, j] = kinematic_hop_distance(bones[i], bones[j])
            return distances
        kept = self._sensor_graph_nodes()
        for i in range(n):
            for j in range(i + 1, n):
                on_path = sum(1 for bone in bone_path(bones[i], bones[j]) if bone in kept)
                distances[i, j] = distances[j, i] = on_path - 1
        return distances

    def _sensor_graph_nodes(self) -> set[int]:
        """Sensor bones plus the branch points of the subtree spanning them."""
        bones = sorted({site.bone_index for site in self.sites})
        spanning: set[int] = set(bones)
        for i, a in enumerate(bones):
            for b in bones[i + 1:]:
                spanning.update(bone_path(a, b))
        adjacency = bone_adjacency()
        branch_points = {bone for bone in spanning
                         if sum(1 for neighbour in adjacency[bone] if neighbour in spanning) >= 3}
        return set(bones) | branch_points

    # ---------------------------------------------------------------- poses
    def mount_rotations(self, side: str = "right") -> np.ndarray:
        """``[N, 3, 3]`` sensor -> bone rotations for one side (left = mirrored)."""
        rotations = np.stack([site.mount_rotation for site in self.sites])
        return mirror_rotations_local(rotations) if side == "left" else rotations

    def mount_offsets(self, side: str = "right") -> np.ndarray:
        """``[N, 3]`` m sensor origins in their bone frames at scale 1 (left = mirrored)."""
        offsets = np.stack([site.mount_offset for site in self.sites])
        return mirror_landmarks_local(offsets) if side == "left" else offsets

    def flat_hand_up_vectors(self, side: str = "right") -> np.ndarray:
        """``[N, 3]``: each sensor's "up" (opposite to gravity) in its mount frame when the hand
        lies flat (zero joint angles), palm down — the reference of the mounting calibration."""
        fk = forward_kinematics_numpy(np.zeros(22), np.eye(3), np.zeros(3), 1.0, side)  # wrist z (dorsal) = up
        rotations, _ = self.sensor_poses(fk)
        return np.einsum("nji,j->ni", rotations, np.array([0.0, 0.0, 1.0]))

    def sensor_poses(self, fk: ForwardKinematicsResult):
        """Sensor frames in the FK's parent frame (NumPy or torch, follows ``fk``).

        Returns ``(rotations [..., N, 3, 3], positions [..., N, 3])``: sensor -> parent
        rotation and sensor origin, using ``fk.side`` (mirrored mounts for the left hand)
        and ``fk.scale`` (offsets scale with the hand).
        """
        if fk.side not in SIDES:
            raise ValueError(f"fk.side: {fk.side!r}, expected 'left' or 'right'")
        mount_rotations = self.mount_rotations(fk.side)
        mount_offsets = self.mount_offsets(fk.side)
        bone_indices = self.sensor_bone_indices
        if type(fk.bone_rotations).__module__.startswith("torch"):
            import torch
            like = fk.bone_rotations
            mount_rotations = torch.as_tensor(mount_rotations, dtype=like.dtype, device=like.device)
            mount_offsets = torch.as_tensor(mount_offsets, dtype=like.dtype, device=like.device)
            bone_indices = torch.as_tensor(bone_indices, device=like.device)
        bone_rotations = fk.bone_rotations[..., bone_indices, :, :]
        bone_origins = fk.bone_origins[..., bone_indices, :]
        offsets = mount_offsets * fk.scale[..., None, None]
        rotations = bone_rotations @ mount_rotations
        positions = bone_origins + (bone_rotations @ offsets[..., None])[..., 0]
        return rotations, positions


# ------------------------------------------------------------------------ parsing
def _reject_unknown_keys(mapping: Mapping, allowed: set[str], prefix: str, where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ConfigError(where, f"{prefix}{unknown[0]}: unknown field; allowed: {', '.join(sorted(allowed))}")


def _positive_number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(where, f"{field}: must be a positive number, got {value!r}")
    return float(value)


def _number_vector(value: Any, length: int, field: str, where: str) -> np.ndarray:
    if (not isinstance(value, (list, tuple)) or len(value) != length
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)):
        raise ConfigError(where, f"{field}: must be a list of {length} finite numbers, got {value!r}")
    return np.array(value, dtype=float)


def _parse_imu(data: Mapping, field: str, where: str) -> ImuSpec:
    missing = sorted(_IMU_KEYS - {"part"} - set(data))
    if missing:
        raise ConfigError(where, f"{field}.{missing[0]}: missing IMU spec")
    bits = data["adc_bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 8 <= bits <= 32:
        raise ConfigError(where, f"{field}.adc_bits: must be an integer in 8..32, got {bits!r}")
    return ImuSpec(
        part=str(data.get("part", "")),
        accel_range=_positive_number(data["accel_full_scale_g"], f"{field}.accel_full_scale_g", where)
        * STANDARD_GRAVITY,
        gyro_range=math.radians(_positive_number(data["gyro_full_scale_dps"], f"{field}.gyro_full_scale_dps", where)),
        adc_bits=bits,
        accel_noise_density=_positive_number(
            data["accel_noise_density_ug_per_sqrt_hz"], f"{field}.accel_noise_density_ug_per_sqrt_hz", where)
        * 1e-6 * STANDARD_GRAVITY,
        gyro_noise_density=math.radians(_positive_number(
            data["gyro_noise_density_dps_per_sqrt_hz"], f"{field}.gyro_noise_density_dps_per_sqrt_hz", where)),
    )


def _parse_site(data: Any, default_imu: Mapping, field: str, where: str) -> ImuSite:
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"{field}: must be a mapping with name, bone, offset and rpy or quaternion_xyzw")
    _reject_unknown_keys(data, _SITE_KEYS, f"{field}.", where)
    name = data.get("name")
    if not isinstance(name, str) or not _SITE_NAME_PATTERN.match(name):
        raise ConfigError(where, f"{field}.name: must match [a-z0-9_]+, got {name!r}")
    bone = data.get("bone")
    if bone not in BONE_INDEX:
        raise ConfigError(where, f"{field}.bone: unknown bone {bone!r}; expected one of {', '.join(BONE_NAMES)}")
    offset = _number_vector(data.get("offset"), 3, f"{field}.offset", where)
    if np.linalg.norm(offset) > 0.1:
        raise ConfigError(where, f"{field}.offset: {offset.tolist()} m is more than 10 cm from the bone origin")
    has_rpy, has_quaternion = "rpy" in data, "quaternion_xyzw" in data
    if has_rpy == has_quaternion:
        raise ConfigError(where, f"{field}: give exactly one of rpy or quaternion_xyzw")
    if has_rpy:
        rpy = _number_vector(data["rpy"], 3, f"{field}.rpy", where)
        rotation = Rotation.from_euler("xyz", rpy).as_matrix()  # extrinsic x-y-z = Rz Ry Rx
    else:
        quaternion = _number_vector(data["quaternion_xyzw"], 4, f"{field}.quaternion_xyzw", where)
        norm = float(np.linalg.norm(quaternion))
        if abs(norm - 1.0) > 1e-3:
            raise ConfigError(where, f"{field}.quaternion_xyzw: not a unit quaternion (norm {norm:.6f})")
        rotation = Rotation.from_quat(quaternion / norm).as_matrix()
    imu_data = dict(default_imu)
    if "imu" in data:
        if not isinstance(data["imu"], Mapping):
            raise ConfigError(where, f"{field}.imu: must be a mapping of IMU spec overrides")
        _reject_unknown_keys(data["imu"], _IMU_KEYS, f"{field}.imu.", where)
        imu_data.update(data["imu"])
    imu = _parse_imu(imu_data, f"{field}.imu" if "imu" in data else "imu", where)
    rotation.setflags(write=False)
    offset.setflags(write=False)
    return ImuSite(name=name, bone=bone, mount_rotation=rotation, mount_offset=offset, imu=imu)
