"""Tracking metrics (avi_ht_ros.tracker.metrics) on hand-made cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.hand_model import default_hand_model, forward_kinematics_numpy
from avi_ht_ros.tracker import metrics as M


def random_hands(frames: int, seed: int = 0, side: str = "right") -> M.HandPoses:
    """Realistic hands: random joint angles inside the limits, random wrist poses ~40 cm ahead."""
    rng = np.random.default_rng(seed)
    model = default_hand_model()
    angles = rng.uniform(model.joint_lower, model.joint_upper, (frames, 22))
    rotation = Rotation.random(frames, random_state=seed).as_matrix()
    translation = rng.normal([0.0, 0.1, 0.4], 0.05, (frames, 3))
    fk = forward_kinematics_numpy(angles, rotation, translation, 1.0, side)
    return M.HandPoses(fk.landmarks, angles, rotation, translation)


def moved(poses: M.HandPoses, rotation: np.ndarray, translation: np.ndarray, scale: float = 1.0) -> M.HandPoses:
    """Every hand moved by ``x -> s R x + t`` (landmarks and wrist pose; scale only on positions)."""
    return M.HandPoses(scale * poses.landmarks @ rotation.T + translation, poses.joint_angles,
                       rotation @ poses.wrist_rotation, scale * poses.wrist_translation @ rotation.T + translation)


@pytest.fixture(scope="module")
def truth() -> M.HandPoses:
    return random_hands(40)


def test_perfect_prediction_scores_zero_error_and_unit_auc(truth):
    errors = M.frame_errors(truth, truth)
    summary = M.summarize(errors)
    for key in ("mkpe_mm", "f_mkpe_mm", "mkpe_t_mm", "f_mkpe_t_mm", "angle_error_deg", "accel_error_mm_f2"):
        assert summary[key] == pytest.approx(0.0, abs=1e-9), key
    assert summary["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert summary["pck_auc"] == pytest.approx(1.0) and summary["pck_auc_t"] == pytest.approx(1.0)
    assert summary["angle_below_5deg"] == 1.0 and summary["frames"] == 40


def test_known_translation_gives_known_mkpe_and_zero_wrist_aligned_error(truth):
    offset = np.array([0.003, 0.004, 0.0])  # 5 mm
    shifted = moved(truth, np.eye(3), offset)
    summary = M.summarize(M.frame_errors(shifted, truth))
    assert summary["mkpe_mm"] == pytest.approx(5.0) and summary["f_mkpe_mm"] == pytest.approx(5.0)
    assert summary["mkpe_t_mm"] == pytest.approx(0.0, abs=1e-9)  # the wrist moved with the hand
    assert summary["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    # PCK: all errors are 5 mm -> PCK is 0 below 5 mm, 1 above: AUC = 1 - 5/50 (within half a 0.5-mm step)
    assert summary["pck_auc"] == pytest.approx(0.9, abs=0.25 / 50 + 1e-9)


def test_fingertip_only_error_separates_mkpe_and_f_mkpe(truth):
    landmarks = truth.landmarks.copy()
    landmarks[:, list(M.FINGERTIPS), 2] += 0.010  # 10 mm on the 5 tips only
    pred = M.HandPoses(landmarks, truth.joint_angles, truth.wrist_rotation, truth.wrist_translation)
    summary = M.summarize(M.frame_errors(pred, truth))
    assert summary["f_mkpe_mm"] == pytest.approx(10.0)
    assert summary["mkpe_mm"] == pytest.approx(10.0 * 5 / 21)
    assert summary["mkpe_t_mm"] == pytest.approx(10.0 * 5 / 21)  # wrist unchanged: same as absolute
    fingers = M.per_finger_mkpe_t_mm(M.frame_errors(pred, truth))
    assert fingers["index"] == pytest.approx(10.0 / 4) and fingers["thumb"] == pytest.approx(10.0 / 4)


def test_wrist_aligned_metrics_are_invariant_to_a_rigid_motion_of_the_prediction(truth):
    noisy_angles = np.clip(truth.joint_angles + np.random.default_rng(1).normal(0, 0.1, truth.joint_angles.shape),
                           default_hand_model().joint_lower, default_hand_model().joint_upper)
    fk = forward_kinematics_numpy(noisy_angles, truth.wrist_rotation, truth.wrist_translation, 1.0, "right")
    pred = M.HandPoses(fk.landmarks, noisy_angles, truth.wrist_rotation, truth.wrist_translation)
    rotation = Rotation.from_rotvec([0.3, -0.8, 1.1]).as_matrix()
    far = moved(pred, rotation, np.array([0.2, -0.1, 0.5]))
    near_errors, far_errors = M.frame_errors(pred, truth), M.frame_errors(far, truth)
    np.testing.assert_allclose(far_errors.kpe_t_mm, near_errors.kpe_t_mm, atol=1e-9)
    np.testing.assert_allclose(far_errors.pa_mm, near_errors.pa_mm, atol=1e-6)
    np.testing.assert_allclose(far_errors.angle_deg, near_errors.angle_deg)
    assert M.summarize(far_errors)["mkpe_mm"] > 100.0 > M.summarize(near_errors)["mkpe_t_mm"] > 1.0
    # (exact-zero palm errors may round either side of the 0-mm threshold: half a step at most)
    assert M.summarize(far_errors)["pck_auc_t"] == pytest.approx(M.summarize(near_errors)["pck_auc_t"],
                                                                 abs=0.25 / 50)


def test_wrist_aligned_error_equals_placing_the_prediction_at_the_true_wrist(truth):
    pred = random_hands(40, seed=5)
    errors = M.wrist_aligned_errors_mm(pred.landmarks, pred.wrist_rotation, pred.wrist_translation,
                                       truth.landmarks, truth.wrist_rotation, truth.wrist_translation)
    # "GT oriented": move the predicted hand rigidly so its wrist frame coincides with the true one
    relative = truth.wrist_rotation @ np.swapaxes(pred.wrist_rotation, -1, -2)
    placed = np.einsum("fij,fkj->fki", relative, pred.landmarks - pred.wrist_translation[:, None]) \
        + truth.wrist_translation[:, None]
    np.testing.assert_allclose(errors, M.keypoint_errors_mm(placed, truth.landmarks), atol=1e-9)


def test_procrustes_is_invariant_to_similarity_transforms_and_never_reflects(truth):
    pred = random_hands(40, seed=3)
    base = M.procrustes_errors_mm(pred.landmarks, truth.landmarks)
    rotation = Rotation.from_rotvec([1.0, 0.2, -0.4]).as_matrix()
    transformed = 1.7 * pred.landmarks @ rotation.T + np.array([0.3, 0.0, -0.2])
    np.testing.assert_allclose(M.procrustes_errors_mm(transformed, truth.landmarks), base, atol=1e-6)
    # a similarity copy of the truth aligns perfectly
    copy = 0.8 * truth.landmarks @ rotation.T + 0.05
    assert np.abs(M.procrustes_errors_mm(copy, truth.landmarks)).max() < 1e-6
    # a mirror image is not a similarity: alignment must not use a reflection
    mirrored = truth.landmarks * np.array([1.0, -1.0, 1.0])
    assert M.procrustes_errors_mm(mirrored, truth.landmarks).mean() > 1.0
    # NaN frames stay NaN, others are unaffected
    broken = pred.landmarks.copy()
    broken[3] = np.nan
    errors = M.procrustes_errors_mm(broken, truth.landmarks)
    assert np.isnan(errors[3]).all() and np.allclose(errors[4:], base[4:])


def test_pck_curve_and_auc():
    errors = np.full((10, 21), 25.0)
    thresholds = M.pck_thresholds_mm()
    curve = M.pck_curve(errors, thresholds)
    assert curve[thresholds < 25].max() == 0.0 and curve[thresholds >= 25].min() == 1.0
    assert M.pck_auc(errors) == pytest.approx(0.5, abs=0.01)
    assert M.pck_auc(np.zeros((3, 21))) == pytest.approx(1.0)
    assert M.pck_auc(np.full((3, 21), 80.0)) == 0.0
    mixed = np.concatenate([np.zeros(50), np.full(50, 100.0), np.full(10, np.nan)])  # NaN ignored
    assert M.pck_auc(mixed) == pytest.approx(0.5)


def test_joint_angle_errors_and_cdf(truth):
    offsets_deg = 0.25 + 0.5 * np.arange(22)  # 0.25, 0.75, ..., 10.75 degrees
    pred = M.HandPoses(truth.landmarks, truth.joint_angles - np.radians(offsets_deg), truth.wrist_rotation,
                       truth.wrist_translation)
    errors = M.frame_errors(pred, truth)
    np.testing.assert_allclose(M.per_joint_angle_error_deg(errors), offsets_deg, atol=1e-9)
    summary = M.summarize(errors)
    assert summary["angle_error_deg"] == pytest.approx(offsets_deg.mean())
    assert summary["angle_below_5deg"] == pytest.approx(10 / 22)
    cdf = M.fraction_below(errors.angle_deg, [0.0, 0.5, 5.0, 100.0])
    np.testing.assert_allclose(cdf, [0.0, 1 / 22, 10 / 22, 1.0])


def test_jitter_of_constant_velocity_is_zero_and_of_a_parabola_is_known():
    frames = np.arange(12, dtype=float)
    base = np.zeros((1, 21, 3))
    linear = base + (0.001 * frames)[:, None, None]           # 1 mm/frame on every axis
    parabola = base + (0.002 * frames**2)[:, None, None] * np.array([1.0, 0.0, 0.0])  # a = 4 mm/frame^2 on x
    assert np.nanmax(M.jitter_mm_per_frame2(linear)) == pytest.approx(0.0, abs=1e-9)
    jitter = M.jitter_mm_per_frame2(parabola)
    assert np.isnan(jitter[0]) and np.isnan(jitter[-1])
    np.testing.assert_allclose(jitter[1:-1], 4.0)
    np.testing.assert_allclose(M.acceleration_error_mm_per_frame2(parabola, linear)[1:-1], 4.0)
    # a gap in the frame indices: no acceleration across it
    index = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12])
    gapped = M.jitter_mm_per_frame2(parabola, index)
    assert np.isnan(gapped[[0, 3, 4, 11]]).all() and np.isfinite(gapped[[1, 2, 5, 10]]).all()


def pinch_sequence(distances_m: np.ndarray) -> np.ndarray:
    """Landmarks with the thumb tip at the given distances from the index tip."""
    landmarks = np.zeros((len(distances_m), 21, 3))
    landmarks[:, :, 0] = np.arange(21) * 0.01
    landmarks[:, M.INDEX_TIP] = [0.1, 0.05, 0.4]
    landmarks[:, M.THUMB_TIP] = landmarks[:, M.INDEX_TIP] + np.asarray(distances_m)[:, None] * [0.0, 1.0, 0.0]
    return landmarks


def test_pinch_precision_recall_on_constructed_sequences():
    far, near = 0.06, 0.01
    truth_distance = np.array([far, far, near, near, near, near, far, far, far, far])  # pinch on frames 2..5
    pred_distance = np.array([far, far, far, near, near, near, near, near, far, far])  # pinch on frames 3..7
    truth_labels = M.pinch_labels(pinch_sequence(truth_distance))
    pred_labels = M.pinch_labels(pinch_sequence(pred_distance))
    np.testing.assert_array_equal(np.flatnonzero(truth_labels), [2, 3, 4, 5])
    result = M.precision_recall(pred_labels, truth_labels)
    assert (result["tp"], result["fp"], result["fn"]) == (3, 2, 1)
    assert result["precision"] == pytest.approx(0.6) and result["recall"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    # exactly at the threshold is not a pinch (strict <), just below is
    assert not M.pinch_labels(pinch_sequence(np.array([0.025])))[0]
    assert M.pinch_labels(pinch_sequence(np.array([0.0249])))[0]
    none = M.precision_recall(np.zeros(5, bool), np.zeros(5, bool))
    assert np.isnan(none["precision"]) and np.isnan(none["recall"])


def test_pinch_in_frame_errors_uses_prediction_and_truth():
    truth_landmarks = pinch_sequence(np.array([0.06, 0.01, 0.01, 0.06]))
    pred_landmarks = pinch_sequence(np.array([0.01, 0.01, 0.06, 0.06]))
    eye = np.broadcast_to(np.eye(3), (4, 3, 3))
    zeros = np.zeros((4, 3))
    errors = M.frame_errors(M.HandPoses(pred_landmarks, np.zeros((4, 22)), eye, zeros),
                            M.HandPoses(truth_landmarks, np.zeros((4, 22)), eye, zeros))
    summary = M.summarize(errors)
    assert summary["pinch_precision"] == pytest.approx(0.5) and summary["pinch_recall"] == pytest.approx(0.5)


def test_occlusion_binning():
    ratio = np.array([0.0, 0.2499, 0.25, 0.5, 0.74, 0.75, 1.0, np.nan, -0.1, 1.2])
    np.testing.assert_array_equal(M.occlusion_bins(ratio), [0, 0, 1, 2, 2, 3, 3, -1, -1, -1])
    assert list(M.occlusion_bin_labels(ratio[:3])) == ["0-25%", "0-25%", "25-50%"]


def test_distance_binning_and_wrist_range_error(truth):
    distance = np.array([0.2, 0.3499, 0.35, 0.4499, 0.45, 0.9, np.nan])
    assert list(M.distance_bin_labels(distance)) == ["< 0.35 m", "< 0.35 m", "0.35-0.45 m", "0.35-0.45 m",
                                                     ">= 0.45 m", ">= 0.45 m", ""]
    # the whole hand 10 % farther along its ray: + range error of 10 % of each wrist distance
    farther = M.HandPoses(truth.landmarks * 1.1, truth.joint_angles, truth.wrist_rotation, truth.wrist_translation * 1.1)
    errors = M.frame_errors(farther, truth)
    distance_mm = np.linalg.norm(truth.wrist_translation, axis=-1) * 1000.0
    np.testing.assert_allclose(errors.wrist_range_error_mm, 0.1 * distance_mm, rtol=1e-9)
    nearer = M.HandPoses(truth.landmarks * 0.9, truth.joint_angles, truth.wrist_rotation, truth.wrist_translation * 0.9)
    summary = M.summarize(M.frame_errors(nearer, truth))
    assert summary["wrist_range_bias_mm"] == pytest.approx(-0.1 * distance_mm.mean())
    assert summary["wrist_range_error_mm"] == pytest.approx(0.1 * distance_mm.mean())
    assert "wrist_range_bias_mm" not in M.relative_reduction(summary, M.summarize(errors))  # signed: no "reduction"


def test_root_relative_prediction_has_no_absolute_metrics(truth):
    local = M.to_wrist_frame(truth.landmarks, truth.wrist_rotation, truth.wrist_translation)
    eye = np.broadcast_to(np.eye(3), (40, 3, 3))
    pred = M.HandPoses(local, truth.joint_angles, eye, np.zeros((40, 3)))
    summary = M.summarize(M.frame_errors(pred, truth, root_relative=True))
    for key in ("mkpe_mm", "f_mkpe_mm", "pck_auc", "jitter_mm_f2", "accel_error_mm_f2", "wrist_range_bias_mm"):
        assert np.isnan(summary[key]), key
    assert summary["mkpe_t_mm"] == pytest.approx(0.0, abs=1e-9) and summary["pck_auc_t"] == pytest.approx(1.0)


def test_breakdown_matches_masked_summaries_and_keeps_empty_groups(truth):
    pred = random_hands(40, seed=9)
    errors = M.frame_errors(pred, truth)
    ratio = np.linspace(0.0, 0.7, 40)
    table = M.breakdown(errors, M.occlusion_bin_labels(ratio), order=M.OCCLUSION_BIN_LABELS)
    assert list(table) == list(M.OCCLUSION_BIN_LABELS)
    assert table["75-100%"]["frames"] == 0 and np.isnan(table["75-100%"]["mkpe_mm"])
    low = M.occlusion_bins(ratio) == 0
    assert table["0-25%"]["frames"] == low.sum()
    assert table["0-25%"]["mkpe_mm"] == pytest.approx(M.summarize(errors, low)["mkpe_mm"])
    assert sum(v["frames"] for v in table.values()) == 40
    activities = np.array(["grasp"] * 10 + ["pinch"] * 30, dtype=object)
    by_activity = M.breakdown(errors, activities)
    assert list(by_activity) == ["grasp", "pinch"]
    assert by_activity["grasp"]["mkpe_t_mm"] == pytest.approx(M.mkpe(errors.kpe_t_mm[:10]))


def test_concatenate_and_subset_round_trip(truth):
    errors = M.frame_errors(random_hands(40, seed=2), truth)
    joined = M.FrameErrors.concatenate([errors.subset(slice(0, 15)), errors.subset(slice(15, 40))])
    for key, value in M.summarize(joined).items():
        assert value == pytest.approx(M.summarize(errors)[key], nan_ok=True), key


def test_relative_reduction_signs():
    reference = {"mkpe_mm": 12.0, "pck_auc": 0.5, "angle_error_deg": 0.0}
    candidate = {"mkpe_mm": 9.0, "pck_auc": 0.6, "angle_error_deg": 1.0}
    reduction = M.relative_reduction(candidate, reference)
    assert reduction["mkpe_mm"] == pytest.approx(25.0)       # 25 % lower error
    assert reduction["pck_auc"] == pytest.approx(20.0)       # 20 % higher AUC
    assert np.isnan(reduction["angle_error_deg"]) and np.isnan(reduction["f_mkpe_mm"])
