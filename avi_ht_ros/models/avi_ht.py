"""AVI-HT-UME: adaptive vision–IMU fusion for 3D hand tracking (Kou et al., §3.3).

::

    crops ─ ResNet ─ FTL ─ ConvGRU(state) ─ F_vis* ─┐
                                                    ├─ level-1 attention (−α·hop prior, dead-sensor mask)
    IMU window ─ temporal transformer ─ s_1..s_Ns ──┘        │
                                                    level-2 attention [F̃_vis*, mean s̃]
                                                             │ mean-pool → h (d)
                            [h, crop geometry, side] ─ head ─ joint angles, 6D rotation, ray-relative
                                                              translation, log σ ─ FK → 21 landmarks

See docs/MODEL.md for shapes, masks and deviations from the paper.
"""
from __future__ import annotations

import numpy as np
import torch

from avi_ht_ros.common.hand_model import HandModel
from avi_ht_ros.models.config import ModelConfig
from avi_ht_ros.models.fusion import HierarchicalCrossSensorFusion
from avi_ht_ros.models.head import PoseHead, decode_wrist_translation
from avi_ht_ros.models.imu_encoder import ImuEncoder, SensorDropout
from avi_ht_ros.models.interface import HandPoseModel, ModelInputs, ModelOutputs, RecurrentState
from avi_ht_ros.models.vision_encoder import CROP_GEOMETRY_DIM, VisionEncoder, VisionEncoding, reference_depth


def wrist_pose_in_camera(
    head_outputs: dict[str, torch.Tensor], vision: VisionEncoding, hand_scale: torch.Tensor,
    reference_hand_extent_m: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wrist rotation/translation in the physical camera from the head's outputs.

    Rotation: regressed in the FTL reference frame, ``R = R_refᵀ R_pred``. Translation:
    relative to view 0's crop ray (decoded in that virtual camera), ``t = R_0ᵀ t_0``.
    """
    depth_prior = reference_depth(vision.ray_from_normalized, hand_scale, reference_hand_extent_m)
    translation_virtual = decode_wrist_translation(
        head_outputs["translation_code"], vision.ray_from_normalized, depth_prior
    )
    rotation = vision.R_reference_from_camera.transpose(-1, -2) @ head_outputs["rotation_reference"]
    translation = (vision.R_virtual_from_camera.transpose(-1, -2) @ translation_virtual[..., None])[..., 0]
    return rotation, translation


def imu_window_or_dead(inputs: ModelInputs, encoder: ImuEncoder, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The IMU window and its validity; no window at all (glove absent) = every sensor dead."""
    features, valid = inputs.imu_features, inputs.imu_valid
    if features is None:
        shape = (inputs.batch_size, encoder.window_length, encoder.num_features)
        return like.new_zeros(shape + (3,)), torch.zeros(shape, dtype=torch.bool, device=like.device)
    if valid is None:
        valid = torch.ones(features.shape[:-1], dtype=torch.bool, device=features.device)
    return features, valid


class AviHtModel(HandPoseModel):
    """The fused vision + IMU model. ``forward(inputs, state) -> (ModelOutputs, new_state)``."""

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
        self.vision_encoder = VisionEncoder(config.vision_encoder, d)
        self.imu_encoder = ImuEncoder(config.imu_encoder, row_signals, torch.as_tensor(token_of_feature), num_sensors, d)
        self.sensor_dropout = SensorDropout(config.sensor_dropout, torch.as_tensor(token_of_feature), num_sensors)
        self.fusion = HierarchicalCrossSensorFusion(d, torch.as_tensor(hop_distance), config.fusion)
        self.head = PoseHead(d + CROP_GEOMETRY_DIM + 1, config.head, hand_model.joint_lower, hand_model.joint_upper,
                             predicts_wrist_pose=True)

    def forward(
        self, inputs: ModelInputs, state: RecurrentState | None = None
    ) -> tuple[ModelOutputs, RecurrentState]:
        vision = self.encode_vision(inputs, state)
        return self.fuse(inputs, vision), vision.state

    # The frame in two parts (the same computation as forward): the vision half needs only the
    # image, so a live tracker runs it while the frame's IMU window is still being completed
    # (HandTracker.prepare), and the fusion half once the window is there.
    def encode_vision(self, inputs: ModelInputs, state: RecurrentState | None = None) -> VisionEncoding:
        """The vision encoder on the frame's crops (``inputs``' IMU fields are not read)."""
        return self.vision_encoder(
            inputs.crops, inputs.K_virtual, inputs.R_virtual_from_camera, inputs.hand_scale, inputs.view_valid, state
        )

    def fuse(self, inputs: ModelInputs, vision: VisionEncoding) -> ModelOutputs:
        """IMU encoder, hierarchical fusion and head on ``vision`` (:meth:`encode_vision` of the
        same frame) and ``inputs``' IMU window (its vision fields are not read)."""
        features, valid = imu_window_or_dead(inputs, self.imu_encoder, vision.visual_token)
        if self.training:
            valid = self.sensor_dropout(valid)
        sensor_tokens, sensor_valid, all_live = self.imu_encoder(features, valid)
        hand, imu_attention, vision_weight, level1_attention = self.fusion(
            vision.visual_token, sensor_tokens, sensor_valid, all_live
        )
        head_outputs = self.head(torch.cat([hand, vision.geometry, inputs.is_left()[:, None]], dim=1))
        rotation, translation = wrist_pose_in_camera(
            head_outputs, vision, inputs.hand_scale, self.config.vision_encoder.reference_hand_extent_m
        )
        joint_angles = head_outputs["joint_angles"]
        return ModelOutputs(
            landmarks=self._landmarks(joint_angles, rotation, translation, inputs),
            joint_angles=joint_angles,
            wrist_rotation=rotation,
            wrist_translation=translation,
            log_sigma=head_outputs["log_sigma"],
            log_sigma_aligned=head_outputs.get("log_sigma_aligned"),
            imu_attention=imu_attention,
            vision_weight=vision_weight,
            level1_attention=level1_attention,
            sensor_valid=sensor_valid,
        )
