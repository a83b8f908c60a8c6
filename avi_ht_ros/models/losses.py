"""Training losses (AVI-HT §3.3 "Output and Losses", UmeTrack §3.4, Deformer maxMSE).

:func:`compute_losses` combines, with the weights of :class:`~avi_ht_ros.models.config.LossConfig`:

* ``landmark_nll`` — negative log-likelihood of the ground-truth landmarks under an isotropic
  3D distribution centred on the prediction with the predicted per-landmark σ:
  Laplace-like ``‖Δ‖/σ + 3·log σ`` (UmeTrack-style; ∝ −log of ``σ⁻³ exp(−‖Δ‖/σ)``) or
  Gaussian ``‖Δ‖²/(2σ²) + 3·log σ``; mean over landmarks and frames. Lengths are expressed in
  ``length_unit_m`` (mm by default) — that only adds a constant, but keeps the value
  positive for realistic errors.
* ``joint_angle`` — L1 or smooth-L1 over the 22 angles (rad).
* ``wrist_translation`` — L1 of the wrist translation (length unit), UmeTrack's λ_w term.
* ``wrist_aligned_landmark`` — L1 of the landmarks in the predicted vs the true wrist frame
  (the MKPE.T error); ``wrist_aligned_landmark_nll`` — the same landmarks under the NLL with
  their own predicted σ (``log_sigma_aligned``), i.e. the factorised likelihood: global pose
  through the camera-frame NLL, articulation through a wrist-aligned one.
* ``temporal_velocity`` (clips) — L1 between predicted and true frame-to-frame landmark
  displacements (length unit): penalises jitter without biasing real motion.
* ``wrist_aligned_temporal_velocity`` (clips) — the same on the wrist-aligned landmarks: the
  articulation's jitter apart from the wrist's motion.
* ``temporal_acceleration`` (clips) — UmeTrack Eq. 6: L1 of the predicted acceleration
  ``x_{t+1} + x_{t−1} − 2x_t`` of joint angles (rad) and wrist translation (length unit).
* ``max_mse`` — Deformer Eq. 5 on landmarks: ``Σ‖Δ_i‖⁴ / Σ‖Δ_i‖²`` per frame, i.e. an MSE
  whose per-landmark weights are the landmarks' shares of the squared error (length unit²);
  it focuses the gradient on the worst (typically fingertip) landmarks.

Root-relative models (IMU-only, ``outputs.root_relative``) are compared in the wrist frame:
the ground-truth landmarks are mapped with the ground-truth wrist pose, ``Rᵀ(p − t)``, and the
wrist-translation term is skipped. Outputs/targets may be per frame ``[B, ...]`` or clips
``[B, S, ...]``; the temporal terms need clips with ``S ≥ 2`` (``S ≥ 3`` for acceleration).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from avi_ht_ros.models.config import LossConfig
from avi_ht_ros.models.interface import ModelOutputs


@dataclass
class PoseTargets:
    """Ground truth matching :class:`ModelOutputs` (camera optical frame, SI units).

    landmarks ``[B(, S), 21, 3]``, joint_angles ``[B(, S), 22]``, wrist_rotation
    ``[B(, S), 3, 3]``, wrist_translation ``[B(, S), 3]``; ``landmark_weight [B(, S), 21]``
    optional (e.g. 0 for landmarks the mocap lost).
    """

    landmarks: torch.Tensor
    joint_angles: torch.Tensor
    wrist_rotation: torch.Tensor
    wrist_translation: torch.Tensor
    landmark_weight: torch.Tensor | None = None


def landmark_nll(
    predicted: torch.Tensor, target: torch.Tensor, log_sigma: torch.Tensor, kind: str = "laplace",
    length_unit_m: float = 1e-3, weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean per-landmark NLL (see module doc). ``predicted/target [..., 21, 3]`` m, ``log_sigma [..., 21]``."""
    distance = (predicted - target).norm(dim=-1) / length_unit_m
    log_sigma_unit = log_sigma - torch.log(torch.tensor(length_unit_m, dtype=log_sigma.dtype))
    if kind == "laplace":
        nll = distance * torch.exp(-log_sigma_unit) + 3.0 * log_sigma_unit
    elif kind == "gaussian":
        nll = 0.5 * (distance * torch.exp(-log_sigma_unit)) ** 2 + 3.0 * log_sigma_unit
    else:
        raise ValueError(f"unknown landmark NLL kind {kind!r}")
    return _weighted_mean(nll, weight)


def joint_angle_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1",
                     beta: float = 0.05) -> torch.Tensor:
    """Mean over joints and frames of L1 or smooth-L1 (``beta`` rad) angle errors."""
    if kind == "l1":
        return (predicted - target).abs().mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(predicted, target, beta=beta)
    raise ValueError(f"unknown joint-angle loss kind {kind!r}")


def max_mse(predicted: torch.Tensor, target: torch.Tensor, length_unit_m: float = 1e-3) -> torch.Tensor:
    """Deformer maxMSE ``Σ‖Δ_i‖⁴ / Σ‖Δ_i‖²`` over the landmarks of each frame, mean over frames."""
    squared = ((predicted - target) / length_unit_m).pow(2).sum(dim=-1)  # [..., 21]
    return (squared.pow(2).sum(dim=-1) / squared.sum(dim=-1).clamp(min=1e-12)).mean()


def temporal_velocity_loss(predicted: torch.Tensor, target: torch.Tensor, length_unit_m: float = 1e-3) -> torch.Tensor:
    """L1 between predicted and true landmark displacement between consecutive frames (``[B, S, 21, 3]``)."""
    predicted_velocity = predicted[:, 1:] - predicted[:, :-1]
    target_velocity = target[:, 1:] - target[:, :-1]
    return ((predicted_velocity - target_velocity) / length_unit_m).norm(dim=-1).mean()


def acceleration_l1(sequence: torch.Tensor) -> torch.Tensor:
    """Mean absolute ``x_{t+1} + x_{t−1} − 2x_t`` over a ``[B, S, ...]`` sequence (UmeTrack Eq. 6)."""
    return (sequence[:, 2:] + sequence[:, :-2] - 2.0 * sequence[:, 1:-1]).abs().mean()


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1e-12)


def targets_in_wrist_frame(targets: PoseTargets) -> torch.Tensor:
    """Ground-truth landmarks in the ground-truth wrist frame, ``Rᵀ(p − t)``: ``[..., 21, 3]``."""
    relative = targets.landmarks - targets.wrist_translation[..., None, :]
    return relative @ targets.wrist_rotation  # row-vector form of Rᵀ v


def compute_losses(outputs: ModelOutputs, targets: PoseTargets, config: LossConfig) -> dict[str, torch.Tensor]:
    """Weighted loss terms and their sum (``"total"``). Terms with weight 0 are not computed."""
    unit = config.length_unit_m
    target_landmarks = targets_in_wrist_frame(targets) if outputs.root_relative else targets.landmarks
    is_clip = outputs.landmarks.dim() == 4
    terms: dict[str, torch.Tensor] = {}
    if config.landmark_nll_weight > 0:
        terms["landmark_nll"] = config.landmark_nll_weight * landmark_nll(
            outputs.landmarks, target_landmarks, outputs.log_sigma, config.landmark_nll_kind, unit,
            targets.landmark_weight,
        )
    if config.joint_angle_weight > 0:
        terms["joint_angle"] = config.joint_angle_weight * joint_angle_loss(
            outputs.joint_angles, targets.joint_angles, config.joint_angle_kind, config.joint_angle_smooth_l1_beta_rad
        )
    if config.wrist_translation_weight > 0 and not outputs.root_relative:
        terms["wrist_translation"] = config.wrist_translation_weight * (
            (outputs.wrist_translation - targets.wrist_translation).abs().mean() / unit
        )
    # per-frame articulation terms (root-relative models have them in their NLL already) and its jitter
    aligned_frames = not outputs.root_relative and (
        config.wrist_aligned_landmark_weight > 0 or config.wrist_aligned_landmark_nll_weight > 0)
    aligned_velocity = is_clip and outputs.landmarks.shape[1] >= 2 and config.wrist_aligned_temporal_velocity_weight > 0
    if outputs.root_relative:
        predicted_aligned, target_aligned = outputs.landmarks, target_landmarks
    elif aligned_frames or aligned_velocity:
        predicted_aligned = (outputs.landmarks - outputs.wrist_translation[..., None, :]) @ outputs.wrist_rotation
        target_aligned = targets_in_wrist_frame(targets)
    if aligned_frames:
        if config.wrist_aligned_landmark_weight > 0:
            terms["wrist_aligned_landmark"] = config.wrist_aligned_landmark_weight * (
                (predicted_aligned - target_aligned).norm(dim=-1).mean() / unit
            )
        if config.wrist_aligned_landmark_nll_weight > 0:
            if outputs.log_sigma_aligned is None:
                raise ValueError("loss.wrist_aligned_landmark_nll_weight > 0 needs a model with head.aligned_sigma")
            terms["wrist_aligned_landmark_nll"] = config.wrist_aligned_landmark_nll_weight * landmark_nll(
                predicted_aligned, target_aligned, outputs.log_sigma_aligned, config.landmark_nll_kind, unit,
                targets.landmark_weight,
            )
    if config.max_mse_weight > 0:
        terms["max_mse"] = config.max_mse_weight * max_mse(outputs.landmarks, target_landmarks, unit)
    if is_clip and outputs.landmarks.shape[1] >= 2 and config.temporal_velocity_weight > 0:
        terms["temporal_velocity"] = config.temporal_velocity_weight * temporal_velocity_loss(
            outputs.landmarks, target_landmarks, unit
        )
    if aligned_velocity:
        terms["wrist_aligned_temporal_velocity"] = config.wrist_aligned_temporal_velocity_weight * (
            temporal_velocity_loss(predicted_aligned, target_aligned, unit))
    if is_clip and outputs.landmarks.shape[1] >= 3 and config.temporal_acceleration_weight > 0:
        acceleration = acceleration_l1(outputs.joint_angles)
        if not outputs.root_relative:
            acceleration = acceleration + acceleration_l1(outputs.wrist_translation / unit)
        terms["temporal_acceleration"] = config.temporal_acceleration_weight * acceleration
    if not terms:
        raise ValueError("every loss weight is 0: nothing to optimise")
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms
