"""Pinhole camera model, ROS calibration files and UmeTrack-style perspective crops.

Conventions
-----------
* Points are in the camera **optical frame** (REP-103: x right, y down, z forward), metres.
* Pixel coordinates follow OpenCV/ROS: ``(u, v)`` = (column, row), the *centre* of the
  top-left pixel is ``(0, 0)``; the image spans ``[-0.5, width - 0.5] x [-0.5, height - 0.5]``.
* Lens distortion is the ROS ``plumb_bob`` model (OpenCV's 5-parameter model
  ``k1, k2, p1, p2, k3``) applied to normalized coordinates ``(x/z, y/z)`` before the
  intrinsic matrix ``K``. A camera with all-zero coefficients is an ideal pinhole.

What is here
------------
* :class:`PinholeCamera`: intrinsics + distortion, batched ``project``/``unproject`` in numpy
  and torch (differentiable), per-pixel ray grid, FOV.
* ROS camera calibration YAML (the ``camera_calibration`` / ``camera_info_manager`` format):
  :func:`load_camera_yaml`, :func:`save_camera_yaml`, validated field by field
  (:class:`~avi_ht_ros.common.errors.ConfigError` names the file and the field).
* ``sensor_msgs/CameraInfo`` as plain Python (:meth:`PinholeCamera.to_camera_info_fields`,
  :meth:`PinholeCamera.from_camera_info`) without importing ROS.
* :class:`CameraMount`: where the headset camera sits on the head (the forward-down tilt of
  the simulated camera), read from the optional ``mount`` block of the same YAML file.
* Perspective crops (UmeTrack §3.1): a *virtual* pinhole camera at the same optical centre,
  rotated so its z axis points at the hand, with a focal length that makes the hand fill
  the crop; the image is resampled with ``cv2.remap``. Because the virtual camera is an
  ideal pinhole, ``virtual_camera.project(points @ R_virtual_from_camera.T)`` is exactly
  where those points appear in the crop (lens distortion of the source is undone).
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from avi_ht_ros.common.errors import ConfigError

__all__ = [
    "PLUMB_BOB",
    "PinholeCamera",
    "CameraMount",
    "load_camera_yaml",
    "save_camera_yaml",
    "camera_from_ros_yaml_dict",
    "ROTATION_BODY_FROM_OPTICAL",
    "load_camera_mount",
    "default_sim_camera",
    "project_points_torch",
    "unproject_points_torch",
    "distort_normalized",
    "undistort_normalized",
    "virtual_camera_looking_at",
    "perspective_crop",
    "perspective_crop_roi",
    "perspective_crop_maps",
    "crop_to_camera_pixels",
]

PLUMB_BOB = "plumb_bob"
NUM_PLUMB_BOB_COEFFICIENTS = 5
DEFAULT_SIM_CAMERA_FILE = "camera_sim.yaml"

# ---------------------------------------------------------------------------------------
# plumb_bob distortion on normalized coordinates. Pure arithmetic on (x, y) so the same
# code runs on numpy arrays and on torch tensors (autograd flows through it).
# ---------------------------------------------------------------------------------------


def _distort_xy(x, y, k1, k2, p1, p2, k3):
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xy2 = 2.0 * x * y
    xd = x * radial + p1 * xy2 + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + p2 * xy2
    return xd, yd


def _undistort_xy(xd, yd, k1, k2, p1, p2, k3, iterations: int):
    """Newton's method on ``distort(x) = xd`` (analytic 2x2 Jacobian), started at ``xd``."""
    x, y = xd, yd
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d radial / d r2
        xy2 = 2.0 * x * y
        fx = x * radial + p1 * xy2 + p2 * (r2 + 2.0 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2.0 * y * y) + p2 * xy2 - yd
        j_xx = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
        j_yy = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
        j_xy = xy2 * d_radial + 2.0 * p1 * x + 2.0 * p2 * y
        det = j_xx * j_yy - j_xy * j_xy
        x = x - (j_yy * fx - j_xy * fy) / det
        y = y - (j_xx * fy - j_xy * fx) / det
    return x, y


def distort_normalized(xy: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """plumb_bob distortion of normalized coordinates ``xy[..., 2]`` (numpy)."""
    xy = np.asarray(xy, dtype=np.float64)
    xd, yd = _distort_xy(xy[..., 0], xy[..., 1], *np.asarray(distortion, dtype=np.float64))
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xy_distorted: np.ndarray, distortion: np.ndarray, iterations: int = 12) -> np.ndarray:
    """Inverse of :func:`distort_normalized` by Newton iterations (numpy, float64)."""
    xy_distorted = np.asarray(xy_distorted, dtype=np.float64)
    x, y = _undistort_xy(xy_distorted[..., 0], xy_distorted[..., 1], *np.asarray(distortion, np.float64), iterations)
    return np.stack([x, y], axis=-1)


def _max_monotonic_r2(distortion: np.ndarray) -> float:
    """Largest squared normalized radius where the radial distortion is still monotonic.

    Beyond it the polynomial folds back and points far outside the field of view would
    be projected *into* the image; :meth:`PinholeCamera.project` marks those NaN.
    """
    k1, k2, _, _, k3 = distortion
    if k1 == 0.0 and k2 == 0.0 and k3 == 0.0:
        return math.inf
    r = np.linspace(0.0, 10.0, 20001)
    r2 = r * r
    rd = r * (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)))
    bad = np.nonzero(np.diff(rd) <= 0.0)[0]
    return math.inf if bad.size == 0 else float(r2[bad[0]])


# ---------------------------------------------------------------------------------------
# Torch projection (batched over cameras too: the network loss projects each sample into
# its own virtual crop camera).
# ---------------------------------------------------------------------------------------


def project_points_torch(points, intrinsics, distortion=None, min_depth: float = 1e-6):
    """Differentiable projection of ``points[..., 3]`` (optical frame) to pixels ``[..., 2]``.

    ``intrinsics[..., 4]`` = (fx, fy, cx, cy) and ``distortion[..., 5]`` (plumb_bob, or None)
    broadcast against the leading dimensions of ``points``. Depth is clamped to
    ``min_depth`` so gradients stay finite; mask points behind the camera yourself.
    """
    import torch

    z = points[..., 2].clamp(min=min_depth)
    x = points[..., 0] / z
    y = points[..., 1] / z
    if distortion is not None:
        distortion = torch.as_tensor(distortion, dtype=points.dtype, device=points.device)
        x, y = _distort_xy(x, y, *(distortion[..., i] for i in range(NUM_PLUMB_BOB_COEFFICIENTS)))
    intrinsics = torch.as_tensor(intrinsics, dtype=points.dtype, device=points.device)
    u = intrinsics[..., 0] * x + intrinsics[..., 2]
    v = intrinsics[..., 1] * y + intrinsics[..., 3]
    return torch.stack([u, v], dim=-1)


def unproject_points_torch(uv, depth, intrinsics, distortion=None, iterations: int = 12):
    """Differentiable inverse of :func:`project_points_torch`: pixels + z-depth -> points ``[..., 3]``."""
    import torch

    intrinsics = torch.as_tensor(intrinsics, dtype=uv.dtype, device=uv.device)
    x = (uv[..., 0] - intrinsics[..., 2]) / intrinsics[..., 0]
    y = (uv[..., 1] - intrinsics[..., 3]) / intrinsics[..., 1]
    if distortion is not None:
        distortion = torch.as_tensor(distortion, dtype=uv.dtype, device=uv.device)
        coeffs = [distortion[..., i] for i in range(NUM_PLUMB_BOB_COEFFICIENTS)]
        x, y = _undistort_xy(x, y, *coeffs, iterations)
    depth = torch.as_tensor(depth, dtype=uv.dtype, device=uv.device)
    depth = torch.broadcast_to(depth, x.shape)
    return torch.stack([x * depth, y * depth, depth], dim=-1)


# ---------------------------------------------------------------------------------------
# The camera
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class PinholeCamera:
    """Pinhole camera with optional plumb_bob distortion.

    ``rectification`` (R, 3x3) and ``projection`` (P, 3x4) are carried only so a ROS
    calibration file round-trips; projection in this class uses K and the distortion
    (the raw, unrectified image that the sensor produces). ``projection=None`` means
    ``[K | 0]`` (what ``camera_calibration`` writes for a monocular camera).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(NUM_PLUMB_BOB_COEFFICIENTS))
    camera_name: str = "camera"
    rectification: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    projection: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.width = int(self.width)
        self.height = int(self.height)
        self.fx, self.fy, self.cx, self.cy = (float(v) for v in (self.fx, self.fy, self.cx, self.cy))
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0 and all(map(math.isfinite, (self.cx, self.cy)))):
            raise ValueError(f"focal lengths must be positive and the principal point finite: {self.intrinsics}")
        self.distortion = np.asarray(self.distortion, dtype=np.float64).reshape(-1)
        if self.distortion.size == 0:
            self.distortion = np.zeros(NUM_PLUMB_BOB_COEFFICIENTS)
        if self.distortion.shape != (NUM_PLUMB_BOB_COEFFICIENTS,):
            raise ValueError(f"plumb_bob needs {NUM_PLUMB_BOB_COEFFICIENTS} coefficients, got {self.distortion.size}")
        self.rectification = np.asarray(self.rectification, dtype=np.float64).reshape(3, 3)
        if self.projection is not None:
            self.projection = np.asarray(self.projection, dtype=np.float64).reshape(3, 4)
        self._max_r2 = _max_monotonic_r2(self.distortion)

    # -- basic properties ---------------------------------------------------------------

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name
        """Intrinsic matrix, 3x3."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def P(self) -> np.ndarray:  # noqa: N802
        """Projection matrix 3x4 as stored in CameraInfo (``[K | 0]`` unless loaded otherwise)."""
        if self.projection is not None:
            return self.projection.copy()
        return np.hstack([self.K, np.zeros((3, 1))])

    @property
    def intrinsics(self) -> np.ndarray:
        """``(fx, fy, cx, cy)`` as a float64 array (the layout the torch functions take)."""
        return np.array([self.fx, self.fy, self.cx, self.cy])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.distortion != 0.0))

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.width, self.height

    def fov_deg(self) -> tuple[float, float, float]:
        """Horizontal, vertical and diagonal field of view in degrees (through the image edges, distortion included)."""
        edges = np.array(
            [[-0.5, self.cy], [self.width - 0.5, self.cy], [self.cx, -0.5], [self.cx, self.height - 0.5],
             [-0.5, -0.5], [self.width - 0.5, self.height - 0.5]]
        )
        rays = self.unproject(edges)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)

        def angle(a, b):
            return math.degrees(math.acos(float(np.clip(np.dot(rays[a], rays[b]), -1.0, 1.0))))

        return angle(0, 1), angle(2, 3), angle(4, 5)

    def replace(self, **changes: Any) -> "PinholeCamera":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # -- numpy projection ----------------------------------------------------------------

    def project(self, points: np.ndarray, min_depth: float = 1e-6) -> np.ndarray:
        """Points ``[..., 3]`` in the optical frame -> pixels ``[..., 2]`` (float64).

        Points with ``z <= min_depth`` (behind the camera) and, for distorted cameras,
        points beyond the radius where the distortion polynomial stops being monotonic
        get NaN. Points outside the image are returned as is (check :meth:`in_image`).
        """
        points = np.asarray(points, dtype=np.float64)
        z = points[..., 2]
        with np.errstate(all="ignore"):
            x = points[..., 0] / z
            y = points[..., 1] / z
            valid = z > min_depth
            if self.has_distortion:
                valid &= x * x + y * y < self._max_r2
                x, y = _distort_xy(x, y, *self.distortion)
        uv = np.stack([self.fx * x + self.cx, self.fy * y + self.cy], axis=-1)
        uv[~valid] = np.nan
        return uv

    def unproject(self, uv: np.ndarray, depth: np.ndarray | float | None = None) -> np.ndarray:
        """Pixels ``[..., 2]`` -> points ``[..., 3]`` at z-depth ``depth`` (broadcast; ``None``: z = 1 rays).

        For a distorted camera, pixels outside the range the distortion polynomial can
        produce (corners of an over-fitted wide-angle calibration) have no ray: NaN.
        """
        uv = np.asarray(uv, dtype=np.float64)
        x = (uv[..., 0] - self.cx) / self.fx
        y = (uv[..., 1] - self.cy) / self.fy
        if self.has_distortion:
            xd, yd = x, y
            with np.errstate(all="ignore"):
                x, y = _undistort_xy(xd, yd, *self.distortion, iterations=20)
                # Pixels the lens polynomial cannot reach (beyond its fold) have no ray.
                check_x, check_y = _distort_xy(x, y, *self.distortion)
                ok = (np.abs(check_x - xd) < 1e-9) & (np.abs(check_y - yd) < 1e-9) & (x * x + y * y < self._max_r2)
            x, y = np.where(ok, x, np.nan), np.where(ok, y, np.nan)
        rays = np.stack([x, y, np.ones_like(x)], axis=-1)
        if depth is None:
            return rays
        return rays * np.asarray(depth, dtype=np.float64)[..., None]

    def in_image(self, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Boolean ``[...]``: pixel inside the image (pixel edges at -0.5 and size - 0.5), shrunk by ``margin``."""
        uv = np.asarray(uv, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return (
                (uv[..., 0] >= -0.5 + margin)
                & (uv[..., 0] < self.width - 0.5 - margin)
                & (uv[..., 1] >= -0.5 + margin)
                & (uv[..., 1] < self.height - 0.5 - margin)
            )

    def pixel_rays(self, dtype=np.float32) -> np.ndarray:
        """Ray direction of every pixel centre, ``[height, width, 3]`` with z = 1 (not unit length)."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        return self.unproject(np.stack([u, v], axis=-1)).astype(dtype)

    # -- torch projection ----------------------------------------------------------------

    def project_torch(self, points, min_depth: float = 1e-6):
        """Differentiable :meth:`project` for a tensor ``points[..., 3]`` (z clamped, no NaN)."""
        distortion = self.distortion if self.has_distortion else None
        return project_points_torch(points, self.intrinsics, distortion, min_depth)

    def unproject_torch(self, uv, depth):
        """Differentiable :meth:`unproject` for a tensor ``uv[..., 2]`` and z-depth ``depth``."""
        distortion = self.distortion if self.has_distortion else None
        return unproject_points_torch(uv, depth, self.intrinsics, distortion)

    # -- ROS formats ---------------------------------------------------------------------

    def to_camera_info_fields(self) -> dict[str, Any]:
        """The fields of ``sensor_msgs/CameraInfo`` as plain Python (no ROS import).

        Keys: ``width``, ``height``, ``distortion_model``, ``d`` (5), ``k`` (9, row-major),
        ``r`` (9), ``p`` (12). Assign them onto a message: ``for k, v in f.items(): setattr(msg, k, v)``.
        """
        return {
            "width": self.width,
            "height": self.height,
            "distortion_model": PLUMB_BOB,
            "d": [float(v) for v in self.distortion],
            "k": [float(v) for v in self.K.reshape(-1)],
            "r": [float(v) for v in self.rectification.reshape(-1)],
            "p": [float(v) for v in self.P.reshape(-1)],
        }

    @classmethod
    def from_camera_info(cls, info: Any, camera_name: str = "camera", where: str = "CameraInfo") -> "PinholeCamera":
        """From a ``sensor_msgs/CameraInfo`` message or a mapping with the same field names."""

        def field(name: str):
            if isinstance(info, Mapping):
                if name not in info:
                    raise ConfigError(where, f"missing field '{name}'")
                return info[name]
            if not hasattr(info, name):
                raise ConfigError(where, f"missing field '{name}'")
            return getattr(info, name)

        k = _matrix_values(field("k"), (3, 3), where, "k")
        d = np.asarray(list(field("d")), dtype=np.float64)
        model = str(field("distortion_model"))
        if d.size == 0 or not d.any():
            d = np.zeros(NUM_PLUMB_BOB_COEFFICIENTS)
        elif model != PLUMB_BOB:
            raise ConfigError(where, f"distortion_model: unsupported '{model}' (supported: {PLUMB_BOB})")
        if d.shape != (NUM_PLUMB_BOB_COEFFICIENTS,):
            raise ConfigError(where, f"d: expected {NUM_PLUMB_BOB_COEFFICIENTS} plumb_bob coefficients, got {d.size}")
        r = _matrix_values(field("r"), (3, 3), where, "r") if _has(info, "r") else np.eye(3)
        p = _matrix_values(field("p"), (3, 4), where, "p") if _has(info, "p") else None
        if r is not None and not r.any():  # default-constructed message: all zeros
            r = np.eye(3)
        if p is not None and not p.any():
            p = None
        return _camera_from_parts(int(field("width")), int(field("height")), k, d, camera_name, r, p, where)

    def to_ros_yaml_dict(self) -> dict[str, Any]:
        """The ROS camera calibration YAML content as a dict (see :func:`save_camera_yaml`)."""

        def matrix(values: np.ndarray) -> dict[str, Any]:
            values = np.atleast_2d(values)
            return {"rows": int(values.shape[0]), "cols": int(values.shape[1]),
                    "data": [float(v) for v in values.reshape(-1)]}

        return {
            "image_width": self.width,
            "image_height": self.height,
            "camera_name": self.camera_name,
            "camera_matrix": matrix(self.K),
            "distortion_model": PLUMB_BOB,
            "distortion_coefficients": matrix(self.distortion.reshape(1, -1)),
            "rectification_matrix": matrix(self.rectification),
            "projection_matrix": matrix(self.P),
        }


def _has(info: Any, name: str) -> bool:
    return name in info if isinstance(info, Mapping) else hasattr(info, name)


def _matrix_values(values: Any, shape: tuple[int, int], where: str, name: str) -> np.ndarray:
    try:
        array = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(where, f"{name}: expected {shape[0] * shape[1]} numbers ({exc})") from None
    if array.size != shape[0] * shape[1]:
        raise ConfigError(where, f"{name}: expected {shape[0]}x{shape[1]} = {shape[0] * shape[1]} values, "
                                 f"got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ConfigError(where, f"{name}: values must be finite numbers")
    return array.reshape(shape)


def _camera_from_parts(width, height, k, d, name, r, p, where) -> PinholeCamera:
    if width <= 0 or height <= 0:
        raise ConfigError(where, f"image size must be positive, got {width}x{height}")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ConfigError(where, f"camera_matrix: focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}")
    if k[0, 1] != 0.0:
        raise ConfigError(where, f"camera_matrix: skew K[0][1] = {k[0, 1]} is not supported (must be 0)")
    if not np.allclose(k[1, 0], 0.0) or not np.allclose(k[2], [0.0, 0.0, 1.0]):
        raise ConfigError(where, "camera_matrix: not an intrinsic matrix (rows 2-3 must be [0 fy cy], [0 0 1]): "
                                 f"{k.tolist()}")
    return PinholeCamera(width, height, k[0, 0], k[1, 1], k[0, 2], k[1, 2], d, name, r, p)


# ---------------------------------------------------------------------------------------
# ROS camera calibration YAML
# ---------------------------------------------------------------------------------------

_REQUIRED_KEYS = ("image_width", "image_height", "camera_matrix", "distortion_model", "distortion_coefficients")


def _yaml_matrix(doc: Mapping[str, Any], key: str, shape: tuple[int, int] | None, where: str) -> np.ndarray:
    """A ``{rows, cols, data}`` block; ``shape=None`` accepts 1xN (distortion)."""
    block = doc[key]
    if not isinstance(block, Mapping):
        raise ConfigError(where, f"{key}: expected a mapping with rows, cols, data; got {type(block).__name__}")
    for sub in ("rows", "cols", "data"):
        if sub not in block:
            raise ConfigError(where, f"{key}: missing key '{sub}'")
    rows, cols, data = block["rows"], block["cols"], block["data"]
    if not isinstance(rows, int) or not isinstance(cols, int) or rows < 0 or cols < 0:
        raise ConfigError(where, f"{key}: rows and cols must be non-negative integers, got {rows!r}, {cols!r}")
    if not isinstance(data, list):
        raise ConfigError(where, f"{key}.data: expected a list of numbers, got {type(data).__name__}")
    if len(data) != rows * cols:
        raise ConfigError(where, f"{key}: data has {len(data)} values but rows x cols = {rows} x {cols} "
                                 f"= {rows * cols}")
    if shape is not None and (rows, cols) != shape:
        raise ConfigError(where, f"{key}: expected shape {shape[0]}x{shape[1]}, got {rows}x{cols}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in data):
        raise ConfigError(where, f"{key}.data: every value must be a number")
    array = np.asarray(data, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ConfigError(where, f"{key}.data: values must be finite")
    return array.reshape(rows, cols)


def camera_from_ros_yaml_dict(doc: Any, where: str = "<camera yaml>") -> PinholeCamera:
    """Validate a parsed ROS calibration document and build the camera (errors name the field)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(where, f"expected a mapping at the top level, got {type(doc).__name__}")
    for key in _REQUIRED_KEYS:
        if key not in doc:
            raise ConfigError(where, f"missing key '{key}'")
    for key in ("image_width", "image_height"):
        if isinstance(doc[key], bool) or not isinstance(doc[key], int) or doc[key] <= 0:
            raise ConfigError(where, f"{key}: expected a positive integer, got {doc[key]!r}")
    model = doc["distortion_model"]
    k = _yaml_matrix(doc, "camera_matrix", (3, 3), where)
    d = _yaml_matrix(doc, "distortion_coefficients", None, where).reshape(-1)
    if model != PLUMB_BOB and not (d.size == 0 or not d.any()):
        raise ConfigError(where, f"distortion_model: unsupported '{model}' (supported: {PLUMB_BOB})")
    if d.size == 0:
        d = np.zeros(NUM_PLUMB_BOB_COEFFICIENTS)
    if d.size != NUM_PLUMB_BOB_COEFFICIENTS:
        raise ConfigError(where, f"distortion_coefficients: plumb_bob needs 1x{NUM_PLUMB_BOB_COEFFICIENTS}, "
                                 f"got {d.size} values")
    r = _yaml_matrix(doc, "rectification_matrix", (3, 3), where) if "rectification_matrix" in doc else np.eye(3)
    p = _yaml_matrix(doc, "projection_matrix", (3, 4), where) if "projection_matrix" in doc else None
    name = doc.get("camera_name", "camera")
    if not isinstance(name, str) or not name:
        raise ConfigError(where, f"camera_name: expected a non-empty string, got {name!r}")
    return _camera_from_parts(doc["image_width"], doc["image_height"], k, d, name, r, p, where)


def load_camera_yaml(path: str | os.PathLike) -> PinholeCamera:
    """Read a ROS camera calibration YAML file (``camera_calibration`` / ``camera_info_manager`` format)."""
    from avi_ht_ros.common.config_file import load_yaml_mapping

    return camera_from_ros_yaml_dict(load_yaml_mapping(path), str(path))


def save_camera_yaml(camera: PinholeCamera, path: str | os.PathLike, mount: "CameraMount | None" = None) -> None:
    """Write ``camera`` as a ROS camera calibration YAML file (matrices as flow lists).

    ``mount`` adds the optional ``mount`` block read by :func:`load_camera_mount`
    (ROS tools ignore keys they do not know).
    """
    import yaml

    doc = camera.to_ros_yaml_dict()
    if mount is not None:
        doc["mount"] = mount.to_dict()
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    pathlib.Path(path).write_text(text, encoding="utf-8")


def default_sim_camera() -> PinholeCamera:
    """The simulated headset camera shipped in ``config/camera_sim.yaml``."""
    from avi_ht_ros.common.paths import config_path

    return load_camera_yaml(config_path(DEFAULT_SIM_CAMERA_FILE))


# ---------------------------------------------------------------------------------------
# Camera mount on the head
# ---------------------------------------------------------------------------------------


def _rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF/ROS fixed-axis roll-pitch-yaw: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


# Columns: the optical axes (x right, y down, z forward) in the camera body frame (x forward, y left, z up).
ROTATION_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclasses.dataclass
class CameraMount:
    """Pose of the camera body frame (``head_camera``, x forward, y left, z up) in its parent (``head``).

    ``rpy`` follows URDF: a positive pitch tilts the camera's forward axis *down*.
    """

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    parent_frame: str = "head"
    child_frame: str = "head_camera"
    optical_frame: str = "head_camera_optical_frame"

    def parent_from_body(self) -> np.ndarray:
        """4x4 transform mapping camera-body coordinates to parent (head) coordinates."""
        t = np.eye(4)
        t[:3, :3] = _rotation_from_rpy(*self.rpy)
        t[:3, 3] = self.xyz
        return t

    def parent_from_optical(self) -> np.ndarray:
        """4x4 transform mapping optical-frame coordinates to parent (head) coordinates."""
        t = self.parent_from_body()
        t[:3, :3] = t[:3, :3] @ ROTATION_BODY_FROM_OPTICAL
        return t

    def to_dict(self) -> dict[str, Any]:
        return {"parent_frame": self.parent_frame, "child_frame": self.child_frame,
                "optical_frame": self.optical_frame,
                "xyz": [float(v) for v in self.xyz], "rpy": [float(v) for v in self.rpy]}


def load_camera_mount(path: str | os.PathLike) -> CameraMount:
    """The optional ``mount`` block of a camera YAML (identity mount if absent)."""
    from avi_ht_ros.common.config_file import load_yaml_mapping

    where = str(path)
    doc = load_yaml_mapping(path)
    block = doc.get("mount")
    if block is None:
        return CameraMount()
    if not isinstance(block, Mapping):
        raise ConfigError(where, "mount: expected a mapping")
    values = {}
    for key in ("xyz", "rpy"):
        triple = block.get(key, [0.0, 0.0, 0.0])
        if not isinstance(triple, list) or len(triple) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in triple
        ):
            raise ConfigError(where, f"mount.{key}: expected 3 numbers, got {triple!r}")
        values[key] = tuple(float(v) for v in triple)
    for key in ("parent_frame", "child_frame", "optical_frame"):
        if key in block:
            if not isinstance(block[key], str) or not block[key]:
                raise ConfigError(where, f"mount.{key}: expected a frame name")
            values[key] = block[key]
    return CameraMount(**values)


# ---------------------------------------------------------------------------------------
# Perspective crops (UmeTrack §3.1)
# ---------------------------------------------------------------------------------------


def _look_at_rotation(direction: np.ndarray) -> np.ndarray:
    """Rows = virtual camera axes in the source optical frame; z along ``direction``, no roll.

    x stays perpendicular to the source y axis (so "down" in the crop is as close to
    "down" in the image as possible); falls back to the source x axis when looking
    straight up/down.
    """
    z = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(z)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"perspective crop: invalid viewing direction {direction!r}")
    z = z / norm
    x = np.cross([0.0, 1.0, 0.0], z)
    if np.linalg.norm(x) < 1e-6:
        y = np.cross(z, [1.0, 0.0, 0.0])
        y /= np.linalg.norm(y)
        x = np.cross(y, z)
    else:
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
    return np.stack([x, y, z])


def virtual_camera_looking_at(
    camera: PinholeCamera, direction: np.ndarray, half_angle_rad: float, out_size: int = 96
) -> tuple[PinholeCamera, np.ndarray]:
    """Virtual ideal pinhole at the optical centre of ``camera`` looking along ``direction``.

    The focal length makes a cone of ``half_angle_rad`` around the axis touch the crop
    edges. Returns ``(virtual_camera, R_virtual_from_camera)``; a point ``p`` in the source
    optical frame is ``R_virtual_from_camera @ p`` in the virtual optical frame.
    """
    half_angle = float(np.clip(half_angle_rad, 1e-4, math.radians(80.0)))
    rotation = _look_at_rotation(direction)
    focal = (out_size / 2.0) / math.tan(half_angle)
    centre = (out_size - 1) / 2.0
    virtual = PinholeCamera(out_size, out_size, focal, focal, centre, centre, camera_name=f"{camera.camera_name}_crop")
    return virtual, rotation


def perspective_crop_maps(
    camera: PinholeCamera, virtual_camera: PinholeCamera, rotation_virtual_from_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (float32 ``[h, w]`` each): source-image pixel sampled by each crop pixel."""
    rays_virtual = virtual_camera.pixel_rays(np.float64)
    rays_camera = rays_virtual @ np.asarray(rotation_virtual_from_camera)  # R^T applied to row vectors
    uv = camera.project(rays_camera)
    uv = np.where(np.isfinite(uv), uv, -1e6)  # invalid rays sample the border
    return uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)


def _remap_antialiased(image, map_x, map_y, interpolation, border_value, antialias):
    import cv2

    level = 0
    if antialias:
        h, w = map_x.shape
        cy, cx = h // 2, w // 2
        nx = min(cx + 1, w - 1)  # source-pixel step per crop pixel at the crop centre
        step = math.hypot(float(map_x[cy, nx] - map_x[cy, cx]), float(map_y[cy, nx] - map_y[cy, cx]))
        if math.isfinite(step) and step >= 2.0:
            level = min(int(math.floor(math.log2(step))), 4)
    source = image
    for _ in range(level):
        source = cv2.pyrDown(source)
    if level:
        # cv2.pyrDown output pixel i is centred on input pixel 2 i.
        scale = 1.0 / (1 << level)
        map_x = map_x * scale
        map_y = map_y * scale
    return cv2.remap(source, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def perspective_crop(
    image: np.ndarray,
    camera: PinholeCamera,
    center_3d: np.ndarray,
    radius_m: float,
    out_size: int = 96,
    *,
    interpolation: int | None = None,
    antialias: bool = True,
    border_value: float = 0,
) -> tuple[np.ndarray, PinholeCamera, np.ndarray]:
    """Perspective crop around a 3D hand centre (UmeTrack §3.1).

    The virtual camera's z axis points at ``center_3d`` (optical frame, m) and its focal
    length makes a sphere of ``radius_m`` around the centre fill the ``out_size`` crop.
    Returns ``(crop, virtual_camera, R_virtual_from_camera)``: landmarks ``L[..., 3]`` in the
    source optical frame appear in the crop at ``virtual_camera.project(L @ R.T)``.
    With ``antialias`` the source is first reduced with ``cv2.pyrDown`` when the crop
    samples it more sparsely than every 2nd pixel (bilinear ``remap`` would alias).
    """
    center = np.asarray(center_3d, dtype=np.float64).reshape(3)
    distance = float(np.linalg.norm(center))
    if not math.isfinite(distance) or distance <= 0.0 or center[2] <= 0.0:
        raise ValueError(f"perspective crop: hand centre {center.tolist()} is not in front of the camera")
    if not radius_m > 0.0:
        raise ValueError(f"perspective crop: radius must be positive, got {radius_m}")
    half_angle = math.asin(min(radius_m / distance, 0.98))
    virtual, rotation = virtual_camera_looking_at(camera, center, half_angle, out_size)
    crop = _crop_with(image, camera, virtual, rotation, interpolation, antialias, border_value)
    return crop, virtual, rotation


def perspective_crop_roi(
    image: np.ndarray,
    camera: PinholeCamera,
    center_uv: np.ndarray,
    radius_px: float,
    out_size: int = 96,
    *,
    interpolation: int | None = None,
    antialias: bool = True,
    border_value: float = 0,
) -> tuple[np.ndarray, PinholeCamera, np.ndarray]:
    """Perspective crop around a 2D ROI (a circle ``center_uv``, ``radius_px`` in the source image).

    Same outputs as :func:`perspective_crop`; the half angle is the largest angle between the
    centre ray and the rays through the ROI's left/right/top/bottom extremes.
    """
    center_uv = np.asarray(center_uv, dtype=np.float64).reshape(2)
    offsets = np.array([[radius_px, 0.0], [-radius_px, 0.0], [0.0, radius_px], [0.0, -radius_px]])
    rays = camera.unproject(np.vstack([center_uv, center_uv + offsets]))
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    half_angle = float(np.max(np.arccos(np.clip(rays[1:] @ rays[0], -1.0, 1.0))))
    virtual, rotation = virtual_camera_looking_at(camera, rays[0], half_angle, out_size)
    crop = _crop_with(image, camera, virtual, rotation, interpolation, antialias, border_value)
    return crop, virtual, rotation


def _crop_with(image, camera, virtual, rotation, interpolation, antialias, border_value):
    import cv2

    if image.shape[0] != camera.height or image.shape[1] != camera.width:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the camera is {camera.width}x{camera.height}")
    map_x, map_y = perspective_crop_maps(camera, virtual, rotation)
    interpolation = cv2.INTER_LINEAR if interpolation is None else interpolation
    return _remap_antialiased(image, map_x, map_y, interpolation, border_value, antialias)


def crop_to_camera_pixels(
    uv_crop: np.ndarray, virtual_camera: PinholeCamera, rotation_virtual_from_camera: np.ndarray, camera: PinholeCamera
) -> np.ndarray:
    """Map crop pixels ``[..., 2]`` back to source-image pixels (e.g. to draw crop predictions)."""
    rays_virtual = virtual_camera.unproject(uv_crop)
    return camera.project(rays_virtual @ np.asarray(rotation_virtual_from_camera))
