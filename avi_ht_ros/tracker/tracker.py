"""Online per-hand tracker: one camera frame + its IMU window in, one hand pose out.

Used by the fusion node and by evaluation (which therefore measures exactly
what runs live). The crop is centred on the *previous estimate* — never on
ground truth. With no previous estimate (start, or after the track was lost)
the tracker searches a wide crop around a prior hand position and refines it
by re-cropping around its own estimate a few times on the same frame.

The tracking state follows ``msg/HandPose.msg``: OK (vision and glove), VISION_ONLY
(no usable glove data), IMU_ONLY (hand outside the camera view: fingers from the
glove, wrist extrapolated), DEGRADED (partial window or dead sensors), LOST.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from avi_ht_ros.common.camera import PinholeCamera
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.imu import feature_rows
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.models.interface import HandPoseModel, ModelInputs
from avi_ht_ros.models.onnx_backend import splits_frame
from avi_ht_ros.models.vision_encoder import VisionEncoding
from avi_ht_ros.tracker.preprocess import (CropConfig, center_is_croppable, crop_inputs, hand_center,
                                           imu_inputs)

TRACKING_LOST, TRACKING_OK, TRACKING_VISION_ONLY, TRACKING_IMU_ONLY, TRACKING_DEGRADED = range(5)
STATUS_OK, STATUS_STALE, STATUS_SATURATED = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    crop_size: int = param(96, "perspective crop size; must be the one the model was trained on (96 for the "
                           "shipped models)", range=(16, 512), unit="px")
    crop_radius_m: float = param(0.12, "crop sphere radius around the hand centre at hand scale 1",
                                 range=(0.02, 1.0), unit="m")
    init_center_m: tuple[float, ...] = param((0.0, 0.12, 0.40), "where a new track searches for the hand "
                                             "(camera optical frame x, y, z)", unit="m")
    init_radius_factor: float = param(1.8, "search crop size relative to a tracking crop", range=(1.0, 5.0))
    init_refinements: int = param(2, "re-crops around the estimate on a track's first frame", range=(0, 10))
    lost_sigma_m: float = param(0.04, "mean landmark sigma above which the track is declared lost",
                                range=(0.001, 1.0), unit="m")
    predict_motion: bool = param(True, "centre the crop on a constant-velocity prediction of the hand")

    def __post_init__(self):
        validate_params(self)
        if len(self.init_center_m) != 3:
            raise ConfigError("tracker.init_center_m", "needs 3 values (x, y, z)")

    @functools.cached_property
    def crop(self) -> CropConfig:
        # built (and validated) once: the tracker asks for it on every frame
        return CropConfig(size=self.crop_size, radius_m=self.crop_radius_m)


@dataclasses.dataclass(frozen=True)
class TrackEstimate:
    stamp_ns: int
    tracking_state: int
    landmarks: np.ndarray          # [21, 3] m, camera optical frame
    joint_angles: np.ndarray       # [22] rad
    wrist_rotation: np.ndarray     # [3, 3] wrist -> camera
    wrist_translation: np.ndarray  # [3] m
    sigma: np.ndarray              # [21] m
    imu_attention: np.ndarray      # [N] (empty without IMU)
    vision_weight: float
    hand_scale: float
    crop_center: np.ndarray        # [3] where this frame's crop was centred


@dataclasses.dataclass(frozen=True)
class PreparedFrame:
    """A frame's vision half, run before its IMU window is complete (:meth:`HandTracker.prepare`)."""
    stamp_ns: int
    vision: VisionEncoding         # the model's encode_vision on the crop around the tracker's prediction
    after: TrackEstimate           # the estimate it follows: valid only while that is the last one


class HandTracker:
    """Runs a :class:`HandPoseModel` frame by frame with crop tracking and recurrent state."""

    def __init__(self, model: HandPoseModel, camera: PinholeCamera, glove: GloveModel | None, side: str,
                 config: TrackerConfig = TrackerConfig(), hand_scale: float = 1.0, feature_set: str | None = None):
        self.model = model.eval()
        self.camera = camera
        self.glove = glove
        self.side = side
        self.config = config
        self.hand_scale = float(hand_scale)
        self.uses_vision = model.config.uses_vision
        if self.uses_vision and config.crop_size != model.config.vision_encoder.crop_size:
            raise ConfigError("tracker.crop_size", f"{config.crop_size} px, but the model takes "
                                                   f"{model.config.vision_encoder.crop_size} px crops")
        self.uses_imu = model.config.uses_imu and glove is not None
        self.feature_set = feature_set or model.config.imu_encoder.feature_set
        self.splits = self.uses_imu and splits_frame(model)
        self.reset()

    def reset(self) -> None:
        self._state = None
        self._previous: TrackEstimate | None = None
        self._before_previous: TrackEstimate | None = None

    # -- inputs ------------------------------------------------------------------------
    def _imu_tensors(self, window: dict | None):
        """IMU inputs; an IMU model with no window this frame gets an all-invalid window
        (every sensor masked, as in sensor-dropout training) instead of no input."""
        if not self.uses_imu:
            return None, None, False
        if window is None:
            rows = len(feature_rows(self.feature_set, self.glove.num_sensors,
                                    self.glove.site_index("hand_back")))
            length = self.model.config.imu_encoder.window_length
            return torch.zeros(1, length, rows, 3), torch.zeros(1, length, rows, dtype=torch.bool), False
        features, valid = imu_inputs(window, self.glove, self.feature_set)
        # non-finite values are unusable whatever their status says (imu_inputs masks them too)
        finite = np.isfinite(window["accel"]).all(-1) & np.isfinite(window["gyro"]).all(-1) \
            & np.isfinite(window["gravity_up"]).all(-1)
        usable = np.isin(window["status"], (STATUS_OK, STATUS_STALE, STATUS_SATURATED)) & finite
        degraded = bool(window.get("window_state", 0)) or not usable.all()
        return (torch.from_numpy(np.ascontiguousarray(features))[None],
                torch.from_numpy(np.ascontiguousarray(valid))[None], degraded)

    def _predicted_center(self) -> np.ndarray | None:
        if self._previous is None:
            return None
        center = hand_center(self._previous.landmarks)
        if self.config.predict_motion and self._before_previous is not None:
            dt = self._previous.stamp_ns - self._before_previous.stamp_ns
            if 0 < dt < 200_000_000:
                center = center + (center - hand_center(self._before_previous.landmarks))
        return center

    def _inputs(self, image, center, radius_factor, imu_features, imu_valid) -> tuple[ModelInputs, bool]:
        """The model's inputs for a crop around ``center`` (the view invalid when there is no image or
        the centre cannot be cropped) and the IMU window; and whether the view is valid."""
        crop = None
        view_valid = False
        if self.uses_vision and image is not None and center_is_croppable(self.camera, center):
            crop = crop_inputs(image, self.camera, center, self.hand_scale, self.config.crop, radius_factor)
            view_valid = True
        inputs = ModelInputs(hand_scale=torch.tensor([self.hand_scale], dtype=torch.float32), side=self.side,
                             imu_features=imu_features, imu_valid=imu_valid)
        if self.uses_vision:
            size = self.config.crop_size
            if crop is not None:
                inputs.crops = torch.from_numpy(crop.crop)[None, None]
                inputs.K_virtual = torch.from_numpy(crop.K_virtual)[None, None]
                inputs.R_virtual_from_camera = torch.from_numpy(crop.R_virtual_from_camera)[None, None]
            else:  # hand outside the view: the model is told the view is invalid
                inputs.crops = torch.zeros(1, 1, size, size)
                inputs.K_virtual = torch.from_numpy(self.camera.K.astype(np.float32))[None, None]
                inputs.R_virtual_from_camera = torch.eye(3)[None, None]
            inputs.view_valid = torch.tensor([[view_valid]])
        return inputs, view_valid

    def _run(self, image, center, radius_factor, imu_features, imu_valid, state):
        inputs, view_valid = self._inputs(image, center, radius_factor, imu_features, imu_valid)
        with torch.inference_mode():   # what `avi-ht bench model` times; ~6 % faster than no_grad
            outputs, state = self.model(inputs, state)
        return outputs, state, view_valid

    # -- the frame in two halves (live: the vision half while the IMU window completes) ----
    def prepare(self, stamp_ns: int, image: np.ndarray) -> PreparedFrame | None:
        """The vision half of the next frame, before its IMU window is there: the crop around the
        tracker's prediction and the model's ``encode_vision``. :meth:`step` with the result gives
        exactly the estimate it gives without it, sooner. None where the step would not take its
        common path (no previous estimate, the prediction out of view) or the model has no halves."""
        if not self.splits or image is None:
            return None
        center = self._predicted_center()
        if center is None or not center_is_croppable(self.camera, center):
            return None
        inputs, _ = self._inputs(image, center, 1.0, None, None)
        with torch.inference_mode():
            vision = self.model.encode_vision(inputs, self._state)
        return PreparedFrame(stamp_ns=int(stamp_ns), vision=vision, after=self._previous)

    # -- the step ----------------------------------------------------------------------
    def step(self, stamp_ns: int, image: np.ndarray | None, window: dict | None,
             crop_center: np.ndarray | None = None, prepared: PreparedFrame | None = None) -> TrackEstimate:
        """One frame. ``crop_center`` (analysis only, e.g. the true hand centre): crop around it
        instead of around the tracker's own prediction, recurrent state carried as usual.
        ``prepared``: :meth:`prepare`'s result for this frame (used only if it is for this stamp and
        no other frame was stepped since; otherwise the frame is run whole)."""
        if prepared is not None and (prepared.stamp_ns != stamp_ns or prepared.after is not self._previous
                                     or crop_center is not None):
            prepared = None
        imu_features, imu_valid, imu_degraded = self._imu_tensors(window)
        no_glove_data = imu_valid is not None and not bool(imu_valid.any())
        center = self._predicted_center() if crop_center is None else np.asarray(crop_center, np.float64)
        if center is None or not center_is_croppable(self.camera, center):
            if self._previous is None or not self.uses_imu or no_glove_data:
                # new track: search around the prior position, refine on this frame
                self._state = None
                center = np.asarray(self.config.init_center_m, np.float64)
                outputs, state, view_valid = self._run(image, center, self.config.init_radius_factor,
                                                       imu_features, imu_valid, None)
                for _ in range(self.config.init_refinements):
                    center = hand_center(outputs.landmarks[0].numpy())
                    if not center_is_croppable(self.camera, center):
                        break
                    outputs, state, view_valid = self._run(image, center, 1.0, imu_features, imu_valid, None)
            else:
                outputs, state, view_valid = self._run(None, center, 1.0, imu_features, imu_valid, self._state)
        elif prepared is not None:  # the vision half ran already, on this crop and state
            inputs = ModelInputs(hand_scale=torch.tensor([self.hand_scale], dtype=torch.float32), side=self.side,
                                 imu_features=imu_features, imu_valid=imu_valid)
            with torch.inference_mode():
                outputs = self.model.fuse(inputs, prepared.vision)
            state, view_valid = prepared.vision.state, True
        else:
            outputs, state, view_valid = self._run(image, center, 1.0, imu_features, imu_valid, self._state)
        self._state = state

        sigma = outputs.sigma[0].numpy().astype(np.float32)
        attention = (outputs.imu_attention[0].numpy().astype(np.float32) if outputs.imu_attention is not None
                     else np.zeros(0, np.float32))
        vision_weight = float(outputs.vision_weight[0]) if outputs.vision_weight is not None else (
            1.0 if self.uses_vision else 0.0)
        if float(sigma.mean()) > self.config.lost_sigma_m or not np.isfinite(outputs.landmarks.numpy()).all():
            state_code = TRACKING_LOST
        elif not view_valid and self.uses_vision:
            state_code = TRACKING_IMU_ONLY if imu_features is not None and not no_glove_data else TRACKING_LOST
        elif self.model.config.uses_imu and (imu_features is None or no_glove_data):
            state_code = TRACKING_VISION_ONLY  # an IMU model without glove data this frame
        elif imu_degraded:
            state_code = TRACKING_DEGRADED
        else:
            state_code = TRACKING_OK
        estimate = TrackEstimate(
            stamp_ns=int(stamp_ns), tracking_state=state_code,
            landmarks=outputs.landmarks[0].numpy().astype(np.float64),
            joint_angles=outputs.joint_angles[0].numpy().astype(np.float32),
            wrist_rotation=outputs.wrist_rotation[0].numpy().astype(np.float64),
            wrist_translation=outputs.wrist_translation[0].numpy().astype(np.float64),
            sigma=sigma, imu_attention=attention, vision_weight=vision_weight, hand_scale=self.hand_scale,
            crop_center=np.asarray(center, np.float64))
        if state_code == TRACKING_LOST:
            self.reset()
        else:
            self._before_previous, self._previous = self._previous, estimate
        return estimate
