"""Single-modality baselines built from the same parts as AVI-HT (paper §5.1, Table 1).

* :class:`VisionOnlyModel` — the UmeTrack-style vision path alone: the same
  :class:`~avi_ht_ros.models.vision_encoder.VisionEncoder` (ResNet, FTL, ConvGRU) and the
  same :class:`~avi_ht_ros.models.head.PoseHead` (absolute wrist pose in the camera frame).
  Its per-landmark σ is what the post-hoc EKF (:mod:`avi_ht_ros.models.ekf`) consumes.
* :class:`ImuOnlyModel` — the same :class:`~avi_ht_ros.models.imu_encoder.ImuEncoder` and
  level-1 kinematic-prior attention over the sensor tokens, masked mean-pooled, and a
  head that predicts joint angles and log σ only. A 6-DoF glove measures no position and
  no heading relative to the camera, so the model is **root-relative**: it returns the
  wrist at the origin with identity rotation (landmarks in the wrist frame) and is evaluated
  on wrist-aligned metrics (MKPE.T: prediction placed with the ground-truth wrist pose);
  :func:`avi_ht_ros.models.losses.compute_losses` compares it in the wrist frame.
"""
from __future__ import annotations

import numpy as np
import torch

from avi_ht_ros.common.hand_model import HandModel
from avi_ht_ros.models.avi_ht import imu_window_or_dead, wrist_pose_in_camera
from avi_ht_ros.models.config import ModelConfig
from avi_ht_ros.models.fusion import SensorOnlyFusion
from avi_ht_ros.models.head import PoseHead
from avi_ht_ros.models.imu_encoder import ImuEncoder, SensorDropout
from avi_ht_ros.models.interface import HandPoseModel, ModelInputs, ModelOutputs, RecurrentState
from avi_ht_ros.models.vision_encoder import CROP_GEOMETRY_DIM, VisionEncoder


class VisionOnlyModel(HandPoseModel):
    """Vision encoder + pose head (no IMU). ``forward(inputs, state) -> (ModelOutputs, new_state)``."""

    def __init__(self, config: ModelConfig, hand_model: HandModel):
        super().__init__(hand_model)
        self.config = config
        d = config.embed_dim
        self.vision_encoder = VisionEncoder(config.vision_encoder, d)
        self.token_norm = torch.nn.LayerNorm(d)
        self.head = PoseHead(d + CROP_GEOMETRY_DIM + 1, config.head, hand_model.joint_lower, hand_model.joint_upper,
                             predicts_wrist_pose=True)

    def forward(
        self, inputs: ModelInputs, state: RecurrentState | None = None
    ) -> tuple[ModelOutputs, RecurrentState]:
        vision = self.vision_encoder(
            inputs.crops, inputs.K_virtual, inputs.R_virtual_from_camera, inputs.hand_scale, inputs.view_valid, state
        )
        head_outputs = self.head(
            torch.cat([self.token_norm(vision.visual_token), vision.geometry, inputs.is_left()[:, None]], dim=1)
        )
        rotation, translation = wrist_pose_in_camera(
            head_outputs, vision, inputs.hand_scale, self.config.vision_encoder.reference_hand_extent_m
        )
        joint_angles = head_outputs["joint_angles"]
        outputs = ModelOutputs(
            landmarks=self._landmarks(joint_angles, rotation, translation, inputs),
            joint_angles=joint_angles,
            wrist_rotation=rotation,
            wrist_translation=translation,
            log_sigma=head_outputs["log_sigma"],
            log_sigma_aligned=head_outputs.get("log_sigma_aligned"),
        )
        return outputs, vision.state


class ImuOnlyModel(HandPoseModel):
    """IMU encoder + sensor attention + joint-angle head; root-relative outputs (see module doc)."""

    root_relative = True

    def __init__(
        self,
        config: ModelConfig,
        hand_model: HandModel,
        hop_distance: np.ndarray,
        row_signals: list[str],
        token_of_feature: np.ndarray,
    ):
        super().__init__(hand_model)
        self.config = config
        num_sensors = int(np.asarray(hop_distance).shape[0])
        d = config.embed_dim
        self.imu_encoder = ImuEncoder(config.imu_encoder, row_signals, torch.as_tensor(token_of_feature), num_sensors, d)
        self.sensor_dropout = SensorDropout(config.sensor_dropout, torch.as_tensor(token_of_feature), num_sensors)
        self.fusion = SensorOnlyFusion(d, torch.as_tensor(hop_distance), config.fusion)
        self.head = PoseHead(d + 1, config.head, hand_model.joint_lower, hand_model.joint_upper,
                             predicts_wrist_pose=False)

    def forward(self, inputs: ModelInputs, state: RecurrentState | None = None) -> tuple[ModelOutputs, None]:
        """``state`` is accepted for a uniform interface and ignored (the IMU window is the context)."""
        features, valid = imu_window_or_dead(inputs, self.imu_encoder, inputs.hand_scale)
        if self.training:
            valid = self.sensor_dropout(valid)
        sensor_tokens, sensor_valid, _ = self.imu_encoder(features, valid)
        hand, level1_attention = self.fusion(sensor_tokens, sensor_valid)
        head_outputs = self.head(torch.cat([hand, inputs.is_left()[:, None]], dim=1))
        joint_angles = head_outputs["joint_angles"]
        batch = joint_angles.shape[0]
        rotation = torch.eye(3, dtype=joint_angles.dtype, device=joint_angles.device).expand(batch, 3, 3)
        translation = joint_angles.new_zeros(batch, 3)
        outputs = ModelOutputs(
            landmarks=self._landmarks(joint_angles, rotation, translation, inputs),
            joint_angles=joint_angles,
            wrist_rotation=rotation,
            wrist_translation=translation,
            log_sigma=head_outputs["log_sigma"],
            level1_attention=level1_attention,
            sensor_valid=sensor_valid,
            root_relative=True,
        )
        return outputs, None
