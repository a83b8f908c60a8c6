"""Hand-tracking metrics of AVI-HT §5 (plus Procrustes, jitter and pinch), pure NumPy, vectorised.

Inputs are SI (metres, radians); every *error* this module returns is in millimetres or
degrees. Landmarks are ``[..., 21, 3]`` in MediaPipe order (``docs/HAND_MODEL.md``), joint
angles ``[..., 22]`` in ``JOINT_NAMES`` order, wrist poses ``R [..., 3, 3]`` (wrist → camera)
and ``t [..., 3]``. Frames whose prediction is missing carry NaN and are ignored by every
mean (``nanmean``); counts say how many frames a number rests on.

Definitions (``p_k`` predicted, ``g_k`` ground-truth landmark ``k``; means over frames × landmarks):

* **MKPE** — mean keypoint position error over the 21 landmarks: ``mean ‖p_k − g_k‖``.
* **F.MKPE** — the same over the five fingertips (landmarks 4, 8, 12, 16, 20).
* **MKPE.T / F.MKPE.T** — "hand-root GT oriented (Transformed)". Our reading: each hand is
  expressed in its *own* wrist frame before comparing, ``p̃_k = R̂ᵀ(p_k − t̂)`` with the
  predicted wrist pose and ``g̃_k = Rᵀ(g_k − t)`` with the true one; MKPE.T = ``mean ‖p̃_k − g̃_k‖``.
  Equivalently, the predicted hand is moved rigidly so that its wrist lands on the true wrist
  with the true orientation ("GT oriented") — the global wrist position *and* orientation error
  are removed, articulation and hand-shape errors remain. It is invariant to any rigid motion
  of the prediction. A root-relative model (IMU-only: ``R̂ = I``, ``t̂ = 0``) is compared
  exactly this way; its absolute metrics are not defined (N/A).
* **P.A / P.A.T** — area under the PCK curve on 0–``max_mm`` (default 50 mm):
  ``PCK(τ) = fraction of (frame, landmark) errors ≤ τ``, ``AUC = (1/τ_max)∫₀^τmax PCK(τ)dτ``
  (trapezoid on ``steps`` evenly spaced thresholds). A perfect prediction has AUC 1.
  P.A uses the MKPE errors, P.A.T the MKPE.T errors.
* **PA-MPJPE** — MKPE after a per-frame similarity Procrustes alignment (rotation,
  translation and scale, Umeyama 1991) of the 21 predicted onto the 21 true landmarks.
* **Joint-angle error** — ``|θ̂_j − θ_j|`` in degrees for each of the 22 DoF (angles live inside
  the joint limits, no wrapping needed); reported per DoF (AVI-HT Fig. 4 top) and as the
  cumulative distribution of all (frame, DoF) errors (Fig. 4 bottom).
* **Jitter (MPJPA)** — mean per-joint acceleration magnitude of a landmark track,
  ``a_t = p_{t+1} − 2p_t + p_{t−1}`` in mm/frame² (× rate² for mm/s²), defined at frames
  whose two neighbours are the consecutive frames of the same sequence. Reported for the
  prediction and the ground truth (the floor a perfect tracker has), and as the
  acceleration error ``mean ‖a_t − a_t^GT‖`` of VIBE / Deformer §4.
* **Pinch precision / recall** — per-frame labels "thumb tip within ``threshold`` (2.5 cm)
  of the index tip", no hysteresis, prediction vs ground truth:
  ``P = TP / (TP + FP)``, ``R = TP / (TP + FN)``, ``F1 = 2PR / (P + R)``.
* **Occlusion bins** — the ground-truth occlusion ratio (fraction of occluded landmarks,
  ``HandGroundTruth.occlusion_ratio``) in [0, 25 %), [25, 50 %), [50, 75 %), [75, 100 %].

:class:`FrameErrors` holds the per-frame quantities of one model on a set of frames;
:func:`summarize` turns any subset of them into the scalars above, so breakdowns
(:func:`breakdown`, by occlusion bin or activity) reuse the same per-frame numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

from avi_ht_ros.common.hand_model import (
    FINGER_NAMES,
    FINGERTIP_LANDMARKS,
    LANDMARKS_OF_FINGER,
    NUM_JOINTS,
    NUM_LANDMARKS,
)

MM = 1000.0
"""Metres → millimetres."""

FINGERTIPS: tuple[int, ...] = tuple(int(FINGERTIP_LANDMARKS[f]) for f in FINGER_NAMES)
"""Landmark indices of the five fingertips (thumb … pinky), the F.MKPE set."""

THUMB_TIP = int(FINGERTIP_LANDMARKS["thumb"])
INDEX_TIP = int(FINGERTIP_LANDMARKS["index"])

OCCLUSION_BIN_EDGES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
OCCLUSION_BIN_LABELS: tuple[str, ...] = ("0-25%", "25-50%", "50-75%", "75-100%")
DISTANCE_BIN_EDGES_M: tuple[float, ...] = (0.35, 0.45)
"""Inner edges of the hand-distance bins (true camera-to-wrist distance, m)."""
DISTANCE_BIN_LABELS: tuple[str, ...] = ("< 0.35 m", "0.35-0.45 m", ">= 0.45 m")

DEFAULT_PCK_MAX_MM = 50.0
DEFAULT_PCK_STEPS = 101
DEFAULT_PINCH_THRESHOLD_M = 0.025
ANGLE_CDF_THRESHOLDS_DEG = np.linspace(0.0, 45.0, 181)
"""Thresholds of the joint-angle error CDF (0.25° steps)."""
ANGLE_ACCURACY_THRESHOLD_DEG = 5.0
"""The "< 5°" fraction reported with the CDF (the threshold AVI-HT §5.1 highlights)."""


# ======================================================================================
# Geometry
# ======================================================================================

def keypoint_errors_mm(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-landmark Euclidean distance ``[..., K]`` in mm of ``[..., K, 3]`` point sets (m)."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(truth, np.float64), axis=-1) * MM


def to_wrist_frame(landmarks: np.ndarray, wrist_rotation: np.ndarray, wrist_translation: np.ndarray) -> np.ndarray:
    """Landmarks ``[..., K, 3]`` in the wrist frame: ``Rᵀ (p − t)`` (row-vector form ``(p − t) R``)."""
    landmarks = np.asarray(landmarks, np.float64)
    centred = landmarks - np.asarray(wrist_translation, np.float64)[..., None, :]
    return np.einsum("...ki,...ij->...kj", centred, np.asarray(wrist_rotation, np.float64))


def wrist_aligned_errors_mm(pred: np.ndarray, pred_rotation: np.ndarray, pred_translation: np.ndarray,
                            truth: np.ndarray, truth_rotation: np.ndarray, truth_translation: np.ndarray) -> np.ndarray:
    """MKPE.T errors ``[..., K]`` mm: each hand in its own wrist frame (see module doc)."""
    return keypoint_errors_mm(to_wrist_frame(pred, pred_rotation, pred_translation),
                              to_wrist_frame(truth, truth_rotation, truth_translation))


def procrustes_align(pred: np.ndarray, truth: np.ndarray, scale: bool = True) -> np.ndarray:
    """``pred [..., K, 3]`` aligned onto ``truth`` by the best similarity (or rigid) transform.

    Umeyama (1991): with centred point sets ``X`` (pred) and ``Y`` (truth), ``Σ = YᵀX / K =
    U S Vᵀ``, ``D = diag(1, 1, sign det(U Vᵀ))``, ``R = U D Vᵀ``, ``s = tr(S D) / (‖X‖²/K)``;
    the aligned points are ``s R x + (ȳ − s R x̄)``. Batched over the leading axes (one SVD
    per frame). Frames with NaN come back NaN.
    """
    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    mu_x = pred.mean(axis=-2, keepdims=True)
    mu_y = truth.mean(axis=-2, keepdims=True)
    x = pred - mu_x
    y = truth - mu_y
    count = pred.shape[-2]
    covariance = np.einsum("...ki,...kj->...ij", y, x) / count
    finite = np.isfinite(covariance).all(axis=(-1, -2))
    covariance = np.where(finite[..., None, None], covariance, np.eye(3))
    u, s, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones(s.shape)
    d[..., 2] = sign
    rotation = (u * d[..., None, :]) @ vt
    if scale:
        variance = (x**2).sum(axis=(-1, -2)) / count
        factor = (s * d).sum(axis=-1) / np.where(variance > 0, variance, 1.0)
    else:
        factor = np.ones(s.shape[:-1])
    aligned = factor[..., None, None] * np.einsum("...ij,...kj->...ki", rotation, x) + mu_y
    return np.where(finite[..., None, None], aligned, np.nan)


def procrustes_errors_mm(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PA-MPJPE errors ``[..., K]`` mm after similarity alignment per frame."""
    return keypoint_errors_mm(procrustes_align(pred, truth, scale=True), truth)


def joint_angle_errors_deg(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Absolute joint-angle errors ``[..., 22]`` in degrees."""
    return np.degrees(np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64)))


def pinch_distance_m(landmarks: np.ndarray) -> np.ndarray:
    """Thumb-tip to index-tip distance ``[...]`` (m)."""
    landmarks = np.asarray(landmarks, np.float64)
    return np.linalg.norm(landmarks[..., THUMB_TIP, :] - landmarks[..., INDEX_TIP, :], axis=-1)


def pinch_labels(landmarks: np.ndarray, threshold_m: float = DEFAULT_PINCH_THRESHOLD_M) -> np.ndarray:
    """Per-frame pinch labels ``[...]`` bool: thumb tip closer than ``threshold_m`` to the index tip.

    NaN landmarks give False (use the caller's validity mask to exclude those frames).
    """
    return pinch_distance_m(landmarks) < threshold_m


# ======================================================================================
# Curves and scores
# ======================================================================================

def pck_thresholds_mm(max_mm: float = DEFAULT_PCK_MAX_MM, steps: int = DEFAULT_PCK_STEPS) -> np.ndarray:
    """Evenly spaced PCK thresholds ``[steps]`` from 0 to ``max_mm``."""
    if not max_mm > 0 or steps < 2:
        raise ValueError(f"pck thresholds need max_mm > 0 and steps >= 2, got {max_mm}, {steps}")
    return np.linspace(0.0, float(max_mm), int(steps))


def fraction_below(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Empirical CDF: fraction of the finite ``values`` ``≤ τ`` for each threshold ``[T]`` (NaN if none)."""
    values = np.asarray(values, np.float64).ravel()
    values = np.sort(values[np.isfinite(values)])
    thresholds = np.asarray(thresholds, np.float64)
    if values.size == 0:
        return np.full(thresholds.shape, np.nan)
    return np.searchsorted(values, thresholds, side="right") / values.size


def pck_curve(errors_mm: np.ndarray, thresholds_mm: np.ndarray | None = None) -> np.ndarray:
    """PCK ``[T]``: fraction of (frame, landmark) errors within each threshold (mm)."""
    return fraction_below(errors_mm, pck_thresholds_mm() if thresholds_mm is None else thresholds_mm)


def pck_auc(errors_mm: np.ndarray, max_mm: float = DEFAULT_PCK_MAX_MM, steps: int = DEFAULT_PCK_STEPS) -> float:
    """Normalised area under the PCK curve on ``[0, max_mm]`` (1 = every error is 0)."""
    thresholds = pck_thresholds_mm(max_mm, steps)
    curve = pck_curve(errors_mm, thresholds)
    if not np.isfinite(curve).all():
        return float("nan")
    return float(np.trapezoid(curve, thresholds) / max_mm)


def precision_recall(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and the counts of boolean per-frame labels (NaN where undefined)."""
    predicted = np.asarray(predicted, bool).ravel()
    actual = np.asarray(actual, bool).ravel()
    tp = int(np.count_nonzero(predicted & actual))
    fp = int(np.count_nonzero(predicted & ~actual))
    fn = int(np.count_nonzero(~predicted & actual))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if (tp + fp) and (tp + fn) else float("nan"))
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "positives": tp + fn}


# ======================================================================================
# Temporal
# ======================================================================================

def consecutive_interior(frame_index: np.ndarray) -> np.ndarray:
    """``[F]`` bool: frame ``t`` and its list neighbours are consecutive frames (index ``t−1, t, t+1``)."""
    index = np.asarray(frame_index, np.int64)
    interior = np.zeros(index.shape, bool)
    if index.size >= 3:
        interior[1:-1] = (index[1:-1] - index[:-2] == 1) & (index[2:] - index[1:-1] == 1)
    return interior


def landmark_acceleration(landmarks: np.ndarray, frame_index: np.ndarray | None = None) -> np.ndarray:
    """Second differences ``[F, K, 3]`` (m/frame²) attached to the middle frame, NaN where undefined.

    ``landmarks [F, K, 3]`` of one sequence in frame order; ``frame_index [F]`` (default
    ``0..F−1``) marks gaps (frames the tracker did not see), across which no acceleration is
    taken.
    """
    landmarks = np.asarray(landmarks, np.float64)
    frames = landmarks.shape[0]
    index = np.arange(frames) if frame_index is None else np.asarray(frame_index, np.int64)
    acceleration = np.full(landmarks.shape, np.nan)
    if frames >= 3:
        acceleration[1:-1] = landmarks[2:] - 2.0 * landmarks[1:-1] + landmarks[:-2]
    acceleration[~consecutive_interior(index)] = np.nan
    return acceleration


def jitter_mm_per_frame2(landmarks: np.ndarray, frame_index: np.ndarray | None = None) -> np.ndarray:
    """Per-frame MPJPA ``[F]``: mean over landmarks of ``‖a_t‖`` in mm/frame² (NaN where undefined)."""
    return np.linalg.norm(landmark_acceleration(landmarks, frame_index), axis=-1).mean(axis=-1) * MM


def acceleration_error_mm_per_frame2(pred: np.ndarray, truth: np.ndarray,
                                     frame_index: np.ndarray | None = None) -> np.ndarray:
    """Per-frame acceleration error ``[F]``: mean over landmarks of ``‖a_t − a_t^GT‖`` (mm/frame²)."""
    difference = landmark_acceleration(pred, frame_index) - landmark_acceleration(truth, frame_index)
    return np.linalg.norm(difference, axis=-1).mean(axis=-1) * MM


# ======================================================================================
# Grouping
# ======================================================================================

def occlusion_bins(occlusion_ratio: np.ndarray) -> np.ndarray:
    """Bin index ``[F]`` in 0..3 of :data:`OCCLUSION_BIN_LABELS` (−1 for NaN / outside [0, 1])."""
    ratio = np.asarray(occlusion_ratio, np.float64)
    bins = np.searchsorted(np.asarray(OCCLUSION_BIN_EDGES[1:-1]), ratio, side="right")
    valid = np.isfinite(ratio) & (ratio >= 0.0) & (ratio <= 1.0)
    return np.where(valid, bins, -1).astype(np.int64)


def distance_bins(distance_m: np.ndarray) -> np.ndarray:
    """Bin index ``[F]`` in 0..2 of :data:`DISTANCE_BIN_LABELS` (−1 where not finite)."""
    distance = np.asarray(distance_m, np.float64)
    bins = np.searchsorted(np.asarray(DISTANCE_BIN_EDGES_M), distance, side="right")
    return np.where(np.isfinite(distance), bins, -1).astype(np.int64)


def _bin_labels(bins: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """Label ``[F]`` (str, object array) of bin indices ``[F]`` ("" for −1)."""
    return np.asarray(labels + ("",), dtype=object)[bins]


def distance_bin_labels(distance_m: np.ndarray) -> np.ndarray:
    """Label ``[F]`` (str, object array) of each frame's hand-distance bin ("" if not finite)."""
    return _bin_labels(distance_bins(distance_m), DISTANCE_BIN_LABELS)


def occlusion_bin_labels(occlusion_ratio: np.ndarray) -> np.ndarray:
    """Label ``[F]`` (str, object array) of each frame's occlusion bin ("" if invalid)."""
    return _bin_labels(occlusion_bins(occlusion_ratio), OCCLUSION_BIN_LABELS)


# ======================================================================================
# Per-frame errors of one model, and their summaries
# ======================================================================================

@dataclasses.dataclass(frozen=True)
class HandPoses:
    """Poses of one hand over ``F`` frames (SI units, camera optical frame)."""

    landmarks: np.ndarray         # [F, 21, 3]
    joint_angles: np.ndarray      # [F, 22]
    wrist_rotation: np.ndarray    # [F, 3, 3] wrist -> camera
    wrist_translation: np.ndarray  # [F, 3]

    def __post_init__(self):
        frames = np.asarray(self.landmarks).shape[0]
        shapes = {"landmarks": (frames, NUM_LANDMARKS, 3), "joint_angles": (frames, NUM_JOINTS),
                  "wrist_rotation": (frames, 3, 3), "wrist_translation": (frames, 3)}
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"HandPoses.{name}: expected shape {shape}, got {np.shape(getattr(self, name))}")

    @property
    def num_frames(self) -> int:
        return int(np.asarray(self.landmarks).shape[0])

    def take(self, index: np.ndarray) -> "HandPoses":
        return HandPoses(*(np.asarray(getattr(self, f.name))[index] for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class FrameErrors:
    """Per-frame error quantities of one model on ``F`` frames (NaN = not defined)."""

    kpe_mm: np.ndarray            # [F, 21] absolute landmark errors (NaN for a root-relative model)
    kpe_t_mm: np.ndarray          # [F, 21] wrist-aligned (MKPE.T) errors
    pa_mm: np.ndarray             # [F, 21] Procrustes-aligned errors
    angle_deg: np.ndarray         # [F, 22] absolute joint-angle errors
    jitter: np.ndarray            # [F] prediction MPJPA, mm/frame² (absolute landmarks)
    jitter_t: np.ndarray          # [F] prediction MPJPA in its wrist frame
    jitter_truth: np.ndarray      # [F] ground-truth MPJPA (absolute landmarks)
    accel_error: np.ndarray       # [F] acceleration error, mm/frame² (absolute)
    accel_error_t: np.ndarray     # [F] acceleration error in the wrist frames
    pinch_true: np.ndarray        # [F] bool
    pinch_pred: np.ndarray        # [F] bool
    wrist_range_error_mm: np.ndarray  # [F] ‖t_pred‖ − ‖t_true‖ (mm; + = too far; NaN if root-relative)

    @property
    def num_frames(self) -> int:
        return int(self.kpe_t_mm.shape[0])

    @property
    def absolute(self) -> bool:
        """Whether absolute metrics are defined (not a root-relative model)."""
        return bool(np.isfinite(self.kpe_mm).any())

    def subset(self, mask: np.ndarray) -> "FrameErrors":
        """The frames where ``mask`` (bool ``[F]`` or an index array) holds."""
        return FrameErrors(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    @staticmethod
    def concatenate(parts: Sequence["FrameErrors"]) -> "FrameErrors":
        if not parts:
            raise ValueError("FrameErrors.concatenate: nothing to concatenate")
        return FrameErrors(*(np.concatenate([getattr(p, f.name) for p in parts])
                             for f in dataclasses.fields(FrameErrors)))


def frame_errors(pred: HandPoses, truth: HandPoses, frame_index: np.ndarray | None = None, *,
                 root_relative: bool = False, pinch_threshold_m: float = DEFAULT_PINCH_THRESHOLD_M) -> FrameErrors:
    """Per-frame errors of ``pred`` against ``truth`` on the frames of **one** sequence.

    ``frame_index [F]`` (default ``0..F−1``) are the frames' indices in the sequence, used to
    take accelerations only across consecutive frames. ``root_relative``: the prediction is in
    its wrist frame (IMU-only); absolute metrics become NaN.
    """
    frames = truth.num_frames
    if pred.num_frames != frames:
        raise ValueError(f"frame_errors: {pred.num_frames} predicted frames vs {frames} true frames")
    index = np.arange(frames) if frame_index is None else np.asarray(frame_index, np.int64)
    pred_local = to_wrist_frame(pred.landmarks, pred.wrist_rotation, pred.wrist_translation)
    truth_local = to_wrist_frame(truth.landmarks, truth.wrist_rotation, truth.wrist_translation)
    nan_frames = np.full(frames, np.nan)
    if root_relative:
        kpe = np.full((frames, NUM_LANDMARKS), np.nan)
        jitter, accel_error, range_error = nan_frames, nan_frames.copy(), nan_frames.copy()
    else:
        range_error = (np.linalg.norm(pred.wrist_translation, axis=-1)
                       - np.linalg.norm(truth.wrist_translation, axis=-1)) * MM
        kpe = keypoint_errors_mm(pred.landmarks, truth.landmarks)
        jitter = jitter_mm_per_frame2(pred.landmarks, index)
        accel_error = acceleration_error_mm_per_frame2(pred.landmarks, truth.landmarks, index)
    predicted_pinch = pinch_labels(pred.landmarks, pinch_threshold_m)
    return FrameErrors(
        kpe_mm=kpe,
        kpe_t_mm=keypoint_errors_mm(pred_local, truth_local),
        pa_mm=procrustes_errors_mm(pred.landmarks, truth.landmarks),
        angle_deg=joint_angle_errors_deg(pred.joint_angles, truth.joint_angles),
        jitter=jitter,
        jitter_t=jitter_mm_per_frame2(pred_local, index),
        jitter_truth=jitter_mm_per_frame2(truth.landmarks, index),
        accel_error=accel_error,
        accel_error_t=acceleration_error_mm_per_frame2(pred_local, truth_local, index),
        pinch_true=pinch_labels(truth.landmarks, pinch_threshold_m),
        pinch_pred=predicted_pinch & np.isfinite(pred.landmarks).all(axis=(-1, -2)),
        wrist_range_error_mm=range_error,
    )


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    return float(values[finite].mean()) if finite.any() else float("nan")


def mkpe(errors_mm: np.ndarray, landmarks: Iterable[int] | None = None) -> float:
    """Mean of ``[F, 21]`` landmark errors over frames and the chosen landmarks (all by default)."""
    errors_mm = np.asarray(errors_mm, np.float64)
    if landmarks is not None:
        errors_mm = errors_mm[..., list(landmarks)]
    return _nanmean(errors_mm)


def finger_mkpe(errors_mm: np.ndarray, finger: str) -> float:
    """Mean error over one finger's landmarks (``LANDMARKS_OF_FINGER``: cmc/mcp → tip)."""
    return mkpe(errors_mm, LANDMARKS_OF_FINGER[finger])


SUMMARY_KEYS: tuple[str, ...] = (
    "frames", "mkpe_mm", "f_mkpe_mm", "mkpe_t_mm", "f_mkpe_t_mm", "pck_auc", "pck_auc_t", "pa_mpjpe_mm",
    "angle_error_deg", "angle_below_5deg", "jitter_mm_f2", "jitter_t_mm_f2", "jitter_truth_mm_f2",
    "accel_error_mm_f2", "accel_error_t_mm_f2", "pinch_precision", "pinch_recall", "pinch_f1", "pinch_positives",
    "wrist_range_bias_mm", "wrist_range_error_mm",
)
"""Keys of :func:`summarize` (scalars), in report order."""

LOWER_IS_BETTER = {key: True for key in SUMMARY_KEYS}
LOWER_IS_BETTER.update({"pck_auc": False, "pck_auc_t": False, "angle_below_5deg": False, "pinch_precision": False,
                        "pinch_recall": False, "pinch_f1": False})


def summarize(errors: FrameErrors, mask: np.ndarray | None = None, *, pck_max_mm: float = DEFAULT_PCK_MAX_MM,
              pck_steps: int = DEFAULT_PCK_STEPS) -> dict[str, float]:
    """Scalar metrics (:data:`SUMMARY_KEYS`) of ``errors`` on the frames of ``mask`` (all by default)."""
    if mask is not None:
        errors = errors.subset(mask)
    pinch = precision_recall(errors.pinch_pred, errors.pinch_true)
    absolute = errors.absolute
    return {
        "frames": errors.num_frames,
        "mkpe_mm": mkpe(errors.kpe_mm),
        "f_mkpe_mm": mkpe(errors.kpe_mm, FINGERTIPS),
        "mkpe_t_mm": mkpe(errors.kpe_t_mm),
        "f_mkpe_t_mm": mkpe(errors.kpe_t_mm, FINGERTIPS),
        "pck_auc": pck_auc(errors.kpe_mm, pck_max_mm, pck_steps) if absolute else float("nan"),
        "pck_auc_t": pck_auc(errors.kpe_t_mm, pck_max_mm, pck_steps),
        "pa_mpjpe_mm": mkpe(errors.pa_mm),
        "angle_error_deg": _nanmean(errors.angle_deg),
        "angle_below_5deg": float(fraction_below(errors.angle_deg, [ANGLE_ACCURACY_THRESHOLD_DEG])[0]),
        "jitter_mm_f2": _nanmean(errors.jitter),
        "jitter_t_mm_f2": _nanmean(errors.jitter_t),
        "jitter_truth_mm_f2": _nanmean(errors.jitter_truth),
        "accel_error_mm_f2": _nanmean(errors.accel_error),
        "accel_error_t_mm_f2": _nanmean(errors.accel_error_t),
        "pinch_precision": pinch["precision"],
        "pinch_recall": pinch["recall"],
        "pinch_f1": pinch["f1"],
        "pinch_positives": pinch["positives"],
        "wrist_range_bias_mm": _nanmean(errors.wrist_range_error_mm),
        "wrist_range_error_mm": _nanmean(np.abs(errors.wrist_range_error_mm)),
    }


def per_joint_angle_error_deg(errors: FrameErrors, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean absolute error ``[22]`` per DoF (degrees)."""
    angles = errors.angle_deg if mask is None else errors.angle_deg[mask]
    finite = np.isfinite(angles)
    counts = finite.sum(axis=0)
    return np.where(counts > 0, np.where(finite, angles, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)


def per_finger_mkpe_t_mm(errors: FrameErrors, mask: np.ndarray | None = None) -> dict[str, float]:
    """MKPE.T of each finger's landmarks (the columns of AVI-HT Fig. 6 left)."""
    wrist_aligned = errors.kpe_t_mm if mask is None else errors.kpe_t_mm[mask]
    return {finger: finger_mkpe(wrist_aligned, finger) for finger in FINGER_NAMES}


def breakdown(errors: FrameErrors, labels: np.ndarray, order: Sequence[str] | None = None,
              **summary_options) -> dict[str, dict[str, float]]:
    """:func:`summarize` per distinct label (``labels [F]``), in ``order`` (default: sorted, "" skipped).

    Labels in ``order`` that never occur get ``{"frames": 0}`` plus NaN metrics, so tables
    keep their columns.
    """
    labels = np.asarray(labels, dtype=object)
    if labels.shape[0] != errors.num_frames:
        raise ValueError(f"breakdown: {labels.shape[0]} labels for {errors.num_frames} frames")
    keys = list(order) if order is not None else sorted({str(v) for v in labels if str(v)})
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        mask = labels == key
        if mask.any():
            out[key] = summarize(errors, mask, **summary_options)
        else:
            out[key] = {k: (0 if k in ("frames", "pinch_positives") else float("nan")) for k in SUMMARY_KEYS}
    return out


def relative_reduction(candidate: Mapping[str, float], reference: Mapping[str, float],
                       keys: Iterable[str] = SUMMARY_KEYS) -> dict[str, float]:
    """Relative improvement of ``candidate`` over ``reference`` per key, in percent.

    Lower-is-better metrics: ``(ref − cand) / ref × 100`` (the error *reduction*, positive =
    better, AVI-HT's "improving over UMETrack by 16.1 %"); higher-is-better metrics (AUC,
    fractions, P/R): ``(cand − ref) / ref × 100``. NaN where either value is undefined or the
    reference is 0.
    """
    out = {}
    for key in keys:
        if key in ("frames", "pinch_positives", "wrist_range_bias_mm"):  # counts, a signed bias
            continue
        ref, cand = float(reference.get(key, np.nan)), float(candidate.get(key, np.nan))
        if not (np.isfinite(ref) and np.isfinite(cand)) or ref == 0.0:
            out[key] = float("nan")
        elif LOWER_IS_BETTER.get(key, True):
            out[key] = (ref - cand) / abs(ref) * 100.0
        else:
            out[key] = (cand - ref) / abs(ref) * 100.0
    return out
