"""Model-input preprocessing shared by the dataset builder, evaluation and the fusion node.

* :func:`crop_inputs` — UmeTrack §3.1 perspective crop of the hand around a
  3D centre (the previous estimate at inference; ground truth plus jitter when
  building training data) into the network's normalized crop tensors.
* :func:`imu_inputs` — the IMU window (from :mod:`avi_ht_ros.tracker.sync`) as
  the paper's ``T×F×3`` feature window with its validity mask.

Keeping these in one place is what makes "no train/serve skew" true.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from avi_ht_ros.common.camera import PinholeCamera, perspective_crop
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.imu import imu_window_features
from avi_ht_ros.common.params import param, validate_params


@dataclasses.dataclass(frozen=True)
class CropConfig:
    size: int = param(96, "side of the square perspective crop fed to the network", range=(16, 512), unit="px")
    radius_m: float = param(0.12, "radius of the sphere around the hand centre the crop covers, at hand "
                            "scale 1", range=(0.02, 1.0), unit="m")

    def __post_init__(self):
        validate_params(self)


@dataclasses.dataclass(frozen=True)
class CropInputs:
    crop: np.ndarray                   # [S, S] float32 in [0, 1]
    K_virtual: np.ndarray              # [3, 3] virtual camera intrinsics (crop pixels)
    R_virtual_from_camera: np.ndarray  # [3, 3]
    center: np.ndarray                 # [3] crop centre in the camera optical frame, m
    radius_m: float


def hand_center(landmarks: np.ndarray) -> np.ndarray:
    """The point crops are centred on: the landmark centroid ``[..., 3]``."""
    return np.asarray(landmarks, np.float64).mean(axis=-2)


def center_is_croppable(camera: PinholeCamera, center: np.ndarray, margin_px: float = 0.0) -> bool:
    """Whether the hand centre is in front of the camera and projects inside the image."""
    center = np.asarray(center, np.float64)
    if not np.isfinite(center).all() or center[2] <= 0.05:
        return False
    uv = camera.project(center[None])[0]
    return bool(np.isfinite(uv).all() and camera.in_image(uv[None], margin=-margin_px)[0])


def crop_inputs(image: np.ndarray, camera: PinholeCamera, center: np.ndarray, hand_scale: float,
                config: CropConfig, radius_factor: float = 1.0) -> CropInputs:
    """Perspective crop of ``image`` (mono8) around ``center`` (camera optical frame, m)."""
    radius = float(config.radius_m * hand_scale * radius_factor)
    crop, virtual, rotation = perspective_crop(image, camera, np.asarray(center, np.float64), radius, config.size)
    return CropInputs(crop=(np.asarray(crop, np.float32) / 255.0), K_virtual=virtual.K.astype(np.float32),
                      R_virtual_from_camera=np.asarray(rotation, np.float32),
                      center=np.asarray(center, np.float64), radius_m=radius)


def imu_inputs(window: dict, glove: GloveModel, feature_set: str) -> tuple[np.ndarray, np.ndarray]:
    """``(features [T, F, 3] float32, valid [T, F] bool)`` of a synchronized IMU window.

    ``window`` has ``gravity_up``, ``gyro``, ``accel`` ``[T, N, 3]`` and ``status``
    ``[T, N]`` (an :class:`~avi_ht_ros.tracker.sync.ImuWindow` as a dict, or
    :func:`avi_ht_ros.io.convert.window_arrays_from_synced_frame`).
    """
    features = imu_window_features(window["gravity_up"], window["gyro"], window["accel"], window["status"],
                                   feature_set, hand_back_index=glove.site_index("hand_back"),
                                   gravity_valid=np.linalg.norm(window["gravity_up"], axis=-1) > 0.5)
    return features.features, features.valid


def window_dict(window) -> dict:
    """An :class:`~avi_ht_ros.tracker.sync.ImuWindow` as the dict :func:`imu_inputs` takes."""
    return {"gravity_up": window.gravity_up, "gyro": window.gyro, "accel": window.accel,
            "status": window.status, "stamps_ns": window.stamps_ns, "window_state": window.state,
            "valid_samples": window.valid_samples, "time_offset_s": window.time_offset_s}
