"""Inputs, outputs and the shared frame/clip driver of every hand-pose network here.

All models (:class:`~avi_ht_ros.models.avi_ht.AviHtModel` and the baselines) take one
:class:`ModelInputs` per frame and a recurrent state, and return ``(ModelOutputs,
new_state)``::

    outputs, state = model(inputs, state)        # one frame; state=None starts a track
    outputs, state = model.forward_clip(clip)    # [B, S, ...] inputs, state carried through S

Frames: poses are in the *physical* camera's optical frame (x right, y down, z forward) of
view 0 — the frame ``R_virtual_from_camera`` maps from. Root-relative models (IMU-only)
return the wrist at the origin with identity rotation (landmarks in the wrist frame).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from avi_ht_ros.common.hand_model import HandModel, forward_kinematics_torch

RecurrentState = torch.Tensor
"""The vision encoder's ConvGRU hidden map ``[B, C_h, h, w]`` (None for IMU-only models)."""


@dataclass
class ModelInputs:
    """One frame (or, for :meth:`HandPoseModel.forward_clip`, a clip with an extra axis 1).

    Vision (None for the IMU-only model):
        crops: ``[B, V, 96, 96]`` float mono perspective crops, 0…1.
        K_virtual: ``[B, V, 3, 3]`` virtual-camera intrinsics in crop pixels.
        R_virtual_from_camera: ``[B, V, 3, 3]`` physical camera (view 0's optical frame for
            every view) → virtual camera rotation.
        view_valid: ``[B, V]`` bool or None (all valid): a view not showing the hand.
    IMU (None for the vision-only model):
        imu_features: ``[B, T, F, 3]`` window of :func:`avi_ht_ros.common.imu.imu_window_features`.
        imu_valid: ``[B, T, F]`` bool or None (all valid).
    Both:
        hand_scale: ``[B]`` hand size relative to the reference hand model (1 = default).
        side: ``"right"``/``"left"`` for the whole batch, or ``[B]`` bool "is left".
    """

    hand_scale: torch.Tensor
    side: str | torch.Tensor = "right"
    crops: torch.Tensor | None = None
    K_virtual: torch.Tensor | None = None
    R_virtual_from_camera: torch.Tensor | None = None
    view_valid: torch.Tensor | None = None
    imu_features: torch.Tensor | None = None
    imu_valid: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.hand_scale.shape[0])

    def frame(self, index: int) -> "ModelInputs":
        """Frame ``index`` of a clip: every tensor indexed on axis 1 (a str or ``[B]`` side is kept)."""
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            per_frame = isinstance(value, torch.Tensor) and not (f.name == "side" and value.dim() == 1)
            values[f.name] = value[:, index] if per_frame else value
        return ModelInputs(**values)

    def is_left(self) -> torch.Tensor:
        """``[B]`` float, 1 for left hands."""
        if isinstance(self.side, str):
            if self.side not in ("left", "right"):
                raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
            return self.hand_scale.new_full((self.batch_size,), float(self.side == "left"))
        return self.side.to(self.hand_scale.dtype)


@dataclass
class ModelOutputs:
    """Per-frame predictions (``[B, ...]``; ``[B, S, ...]`` from ``forward_clip``).

    landmarks: ``[B, 21, 3]`` m, MediaPipe order, camera optical frame (wrist frame if
        ``root_relative``).
    joint_angles: ``[B, 22]`` rad, ``JOINT_NAMES`` order, inside the joint limits.
    wrist_rotation: ``[B, 3, 3]`` wrist → camera. wrist_translation: ``[B, 3]`` m.
    log_sigma: ``[B, 21]`` per-landmark log σ (σ in m).
    log_sigma_aligned: ``[B, 21]`` log σ of the wrist-aligned landmarks (``head.aligned_sigma``
        models; training signal, not used at inference).
    imu_attention: ``[B, N_s]`` level-1 visual-token attention per sensor (AVI-HT only).
    vision_weight: ``[B]`` level-2 attention share of the visual token (AVI-HT only).
    level1_attention: ``[B, N_tok, N_tok]`` full level-1 attention, head mean (diagnostics).
    sensor_valid: ``[B, N_s]`` sensors that were live in this frame's window.
    root_relative: the model cannot observe the wrist pose (IMU-only): evaluate wrist-aligned.
    """

    landmarks: torch.Tensor
    joint_angles: torch.Tensor
    wrist_rotation: torch.Tensor
    wrist_translation: torch.Tensor
    log_sigma: torch.Tensor
    imu_attention: torch.Tensor | None = None
    vision_weight: torch.Tensor | None = None
    level1_attention: torch.Tensor | None = None
    sensor_valid: torch.Tensor | None = None
    log_sigma_aligned: torch.Tensor | None = None
    root_relative: bool = False

    @property
    def sigma(self) -> torch.Tensor:
        """Per-landmark σ ``[B, 21]`` in m."""
        return self.log_sigma.exp()

    @staticmethod
    def stack(frames: list["ModelOutputs"]) -> "ModelOutputs":
        """Stack per-frame outputs along a new axis 1."""
        values = {}
        for f in dataclasses.fields(ModelOutputs):
            items = [getattr(o, f.name) for o in frames]
            values[f.name] = torch.stack(items, dim=1) if isinstance(items[0], torch.Tensor) else items[0]
        return ModelOutputs(**values)


def hand_landmarks(
    hand_model: HandModel,
    joint_angles: torch.Tensor,
    wrist_rotation: torch.Tensor,
    wrist_translation: torch.Tensor,
    hand_scale: torch.Tensor,
    side: str | torch.Tensor,
) -> torch.Tensor:
    """Differentiable FK landmarks ``[B, 21, 3]``; a per-sample side tensor runs both sides and selects."""
    if isinstance(side, str):
        return forward_kinematics_torch(
            joint_angles, wrist_rotation, wrist_translation, hand_scale, side, model=hand_model
        ).landmarks
    right = forward_kinematics_torch(joint_angles, wrist_rotation, wrist_translation, hand_scale, "right", model=hand_model)
    left = forward_kinematics_torch(joint_angles, wrist_rotation, wrist_translation, hand_scale, "left", model=hand_model)
    return torch.where(side.to(torch.bool)[:, None, None], left.landmarks, right.landmarks)


class HandPoseModel(nn.Module):
    """Base class: per-frame ``forward(inputs, state)`` plus the clip loop and FK helper."""

    #: The model cannot observe the wrist pose (outputs are in the wrist frame).
    root_relative: bool = False

    def __init__(self, hand_model: HandModel):
        super().__init__()
        self.hand_model = hand_model

    def forward(
        self, inputs: ModelInputs, state: RecurrentState | None = None
    ) -> tuple[ModelOutputs, RecurrentState | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_clip(
        self, clip: ModelInputs, state: RecurrentState | None = None
    ) -> tuple[ModelOutputs, RecurrentState | None]:
        """Run ``forward`` over the clip's frames (axis 1), carrying the recurrent state.

        Returns outputs stacked to ``[B, S, ...]`` and the state after the last frame.
        """
        length = next(
            getattr(clip, name).shape[1]
            for name in ("crops", "imu_features")
            if getattr(clip, name) is not None
        )
        frames = []
        for index in range(length):
            outputs, state = self(clip.frame(index), state)
            frames.append(outputs)
        return ModelOutputs.stack(frames), state

    def _landmarks(self, joint_angles, wrist_rotation, wrist_translation, inputs: ModelInputs) -> torch.Tensor:
        return hand_landmarks(
            self.hand_model, joint_angles, wrist_rotation, wrist_translation, inputs.hand_scale, inputs.side
        )
