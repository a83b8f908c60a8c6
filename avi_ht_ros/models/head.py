"""Pose regression head: hand representation → joint angles, wrist pose, per-landmark log σ.

* 22 joint angles, bounded into the hand model's limits: ``lower + (upper − lower)·sigmoid(x)``;
  the bias starts at the zero ("rest") pose clipped into the limits.
* Wrist rotation as the continuous 6D representation (Zhou et al. 2019: the first two
  columns, Gram–Schmidt) → rotation matrix, regressed in the FTL *reference* camera and
  rotated into the physical camera's optical frame with ``R_refᵀ`` (by the model).
* Wrist translation relative to view 0's crop ray (UmeTrack): the head predicts the wrist's
  normalised crop coordinates ``(x, y)`` and a log-depth correction ``δ``; with
  ``M = K_0⁻¹ S`` (normalised crop coords → ray) and the depth prior ``z_ref`` (a hand of
  the given scale filling the crop), ``t_0 = z_ref·e^δ · M [x, y, 1]ᵀ`` in the crop camera
  and ``t_camera = R_0ᵀ t_0``. At initialisation the wrist sits on the crop's centre ray at
  ``z_ref``.
* Per-landmark log σ (σ in metres), soft-clamped into ``[log_sigma_min_m, log_sigma_max_m]``;
  with ``aligned_sigma`` a second one for the wrist-aligned landmarks (own output layer).

Root-relative heads (IMU-only baseline) predict joint angles and log σ only.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avi_ht_ros.models.config import HeadConfig

NUM_JOINTS = 22
NUM_LANDMARKS = 21


def rotation_6d_to_matrix(six_d: torch.Tensor) -> torch.Tensor:
    """``[..., 6]`` (two 3-vectors) → rotation ``[..., 3, 3]`` whose first two columns are their Gram–Schmidt."""
    a1, a2 = six_d[..., :3], six_d[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(rotation: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rotation_6d_to_matrix` on rotations: the first two columns, ``[..., 6]``."""
    return torch.cat([rotation[..., :, 0], rotation[..., :, 1]], dim=-1)


class PoseHead(nn.Module):
    """``[B, in_dim]`` → joint angles, wrist rotation/translation (reference camera), log σ."""

    def __init__(
        self,
        in_dim: int,
        config: HeadConfig,
        joint_lower: np.ndarray,
        joint_upper: np.ndarray,
        predicts_wrist_pose: bool,
    ):
        super().__init__()
        lower = torch.tensor(np.array(joint_lower, dtype=np.float32))
        upper = torch.tensor(np.array(joint_upper, dtype=np.float32))
        if lower.shape != (NUM_JOINTS,) or upper.shape != (NUM_JOINTS,) or bool((upper <= lower).any()):
            raise ValueError("joint limits must be [22] with upper > lower")
        self.register_buffer("joint_lower", lower)
        self.register_buffer("joint_range", upper - lower)
        self.predicts_wrist_pose = predicts_wrist_pose
        self.log_sigma_min = config.log_sigma_min_m
        self.log_sigma_max = config.log_sigma_max_m
        wrist_outputs = 6 + 3 if predicts_wrist_pose else 0
        self.hidden = nn.Sequential(nn.Linear(in_dim, config.hidden_dim), nn.ReLU())
        self.output = nn.Linear(config.hidden_dim, NUM_JOINTS + wrist_outputs + NUM_LANDMARKS)
        with torch.no_grad():
            self.output.weight.mul_(0.1)
            rest_fraction = ((0.0 - lower) / (upper - lower)).clamp(0.02, 0.98)
            bias = [torch.logit(rest_fraction)]
            if predicts_wrist_pose:
                bias += [torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), torch.zeros(3)]
            bias.append(torch.full((NUM_LANDMARKS,), self._unclamp(config.log_sigma_init_m)))
            self.output.bias.copy_(torch.cat(bias))
        self.aligned_log_sigma = None
        if config.aligned_sigma:
            if not predicts_wrist_pose:
                raise ValueError("aligned_sigma needs a head that predicts the wrist pose")
            self.aligned_log_sigma = nn.Linear(config.hidden_dim, NUM_LANDMARKS)
            with torch.no_grad():
                self.aligned_log_sigma.weight.mul_(0.1)
                self.aligned_log_sigma.bias.fill_(self._unclamp(config.log_sigma_init_m))

    def _clamp_log_sigma(self, raw: torch.Tensor) -> torch.Tensor:
        """Smooth map of ℝ onto (log_sigma_min, log_sigma_max) (a scaled sigmoid)."""
        return self.log_sigma_min + (self.log_sigma_max - self.log_sigma_min) * torch.sigmoid(raw)

    def _unclamp(self, log_sigma: float) -> float:
        fraction = (log_sigma - self.log_sigma_min) / (self.log_sigma_max - self.log_sigma_min)
        fraction = min(max(fraction, 1e-4), 1 - 1e-4)
        return math.log(fraction / (1 - fraction))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``joint_angles [B, 22]``, ``log_sigma [B, 21]`` and, with a wrist pose,
        ``rotation_reference [B, 3, 3]`` and ``translation_code [B, 3]`` (crop x, y, log-depth δ);
        with ``aligned_sigma`` also ``log_sigma_aligned [B, 21]``."""
        hidden = self.hidden(features)
        out = self.output(hidden)
        joint_logits, rest = out[:, :NUM_JOINTS], out[:, NUM_JOINTS:]
        result = {"joint_angles": self.joint_lower + self.joint_range * torch.sigmoid(joint_logits)}
        if self.predicts_wrist_pose:
            result["rotation_reference"] = rotation_6d_to_matrix(rest[:, :6])
            result["translation_code"] = rest[:, 6:9]
            rest = rest[:, 9:]
        result["log_sigma"] = self._clamp_log_sigma(rest)
        if self.aligned_log_sigma is not None:
            result["log_sigma_aligned"] = self._clamp_log_sigma(self.aligned_log_sigma(hidden))
        return result


def decode_wrist_translation(
    translation_code: torch.Tensor, ray_from_normalized: torch.Tensor, depth_prior: torch.Tensor
) -> torch.Tensor:
    """``t_0 = z_ref·exp(δ)·M [x, y, 1]ᵀ`` in view 0's crop (virtual) camera, ``[B, 3]`` m.

    ``translation_code [B, 3] = (x, y, δ)``, ``ray_from_normalized`` = ``M [B, 3, 3]`` of view 0,
    ``depth_prior`` = ``z_ref [B]``. δ is clamped to ±4 (factor e⁴ ≈ 55) so a wild early
    prediction cannot overflow.
    """
    x_y = translation_code[:, :2]
    depth = depth_prior * torch.exp(translation_code[:, 2].clamp(-4.0, 4.0))
    homogeneous = torch.cat([x_y, torch.ones_like(x_y[:, :1])], dim=1)
    ray = (ray_from_normalized @ homogeneous[..., None])[..., 0]  # z component is 1
    return depth[:, None] * ray
