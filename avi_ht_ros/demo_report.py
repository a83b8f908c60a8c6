"""The demo's report: what the live graph did, read back from the bag its recorder wrote.

:func:`write_report` produces, in the report folder:

* ``report.json`` / ``report.md`` — tracking metrics against the ground truth for the live
  fusion output and, on the same recorded frames and glove samples, the fusion model and the
  vision-only model run offline through the same tracker code
  (:class:`avi_ht_ros.tracker.evaluate.Evaluator`); MKPE per occlusion bin; the latency of
  every stage (from the recorded receive times); the estimated camera–glove offset vs the
  true one; messages published vs recorded and the loss checks; CPU/RSS per node.
* ``mkpe_over_time.png`` (with the ground-truth occlusion shaded), ``occlusion_bins.png``,
  ``latency.png``, ``time_offset.png`` and ``strip.png`` — camera view with the tracked (and
  true) skeleton, the per-IMU attention and the robot hand pose of the same instants;
  ``demo.mp4`` with ``--video``.

Frames are those of the *window*: one whole scenario loop, camera stamps in
``[window_start, window_end)``; scenario time = stamp − window start.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any

import numpy as np

from avi_ht_ros.common import topics
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import bag_topics, read_messages, read_serialized
from avi_ht_ros.live_stats import STAGES, format_table, header_stamp_ns, latency_stats, stage_latencies

LIVE = "AVI-HT live (graph)"
OFFLINE = "AVI-HT offline"
VISION = "vision-only offline"
METHODS = (LIVE, OFFLINE, VISION)
TABLE_KEYS = ("frames", "mkpe_mm", "f_mkpe_mm", "mkpe_t_mm", "pa_mpjpe_mm", "angle_error_deg", "pck_auc",
              "jitter_mm_f2")


# ==========================================================================================
# Reading the recording
# ==========================================================================================

@dataclasses.dataclass
class Recording:
    topic_counts: dict[str, int]
    topic_types: dict[str, str]
    images: dict[int, int]                  # camera stamp -> receive time
    camera_infos: list[int]                 # stamps
    synced: dict[int, int] | None           # None: synced_frame not recorded (sync + fusion in one process)
    glove_stamps: np.ndarray
    glove_sequence: np.ndarray
    hand_back_gyro: np.ndarray              # [S, 3] rad/s of the hand-back IMU
    poses: dict[int, tuple[int, dict]]      # stamp -> (receive time, hand_pose_arrays)
    commands: list[tuple[int, list[str], np.ndarray]]   # (receive time, names, positions)
    offsets: list[dict]
    truths: dict[int, dict]                 # stamp -> pose arrays + visibility, occlusion, activity
    diagnostics: list[tuple[int, str, int, str, dict]]  # (receive, name, level, message, values)


def read_recording(bag: str | pathlib.Path, side: str) -> Recording:
    hand = {name: topics.hand_topic(side, name) for name in (
        topics.GLOVE_SAMPLES, topics.SYNCED_FRAME, topics.HAND_POSE, topics.HAND_GROUND_TRUTH, topics.TIME_OFFSET,
        topics.ROBOT_JOINT_COMMANDS)}
    available = bag_topics(bag)
    images: dict[int, int] = {}
    synced: dict[int, int] = {}
    infos: list[int] = []
    for topic, _, log_time, raw in read_serialized(bag, [topics.IMAGE, topics.CAMERA_INFO,
                                                         hand[topics.SYNCED_FRAME]]):
        stamp = header_stamp_ns(raw)
        if topic == topics.IMAGE:
            images.setdefault(stamp, log_time)
        elif topic == topics.CAMERA_INFO:
            infos.append(stamp)
        else:
            synced.setdefault(stamp, log_time)
    glove_stamps, glove_sequence, hand_back_rate = [], [], []
    from avi_ht_ros.common.glove_model import GloveModel

    hand_back = GloveModel.reference().site_index("hand_back")
    poses: dict[int, tuple[int, dict]] = {}
    commands, offsets, diagnostics = [], [], []
    truths: dict[int, dict] = {}
    wanted = [hand[topics.GLOVE_SAMPLES], hand[topics.HAND_POSE], hand[topics.HAND_GROUND_TRUTH],
              hand[topics.TIME_OFFSET], hand[topics.ROBOT_JOINT_COMMANDS], topics.DIAGNOSTICS]
    for message in read_messages(bag, wanted):
        msg, topic = message.msg, message.topic
        if topic == hand[topics.GLOVE_SAMPLES]:
            glove_stamps.append(convert.stamp_ns_of(msg.header.stamp))
            glove_sequence.append(int(msg.sequence))
            gyro = msg.imus[hand_back].angular_velocity if len(msg.imus) > hand_back else None
            hand_back_rate.append(np.array([gyro.x, gyro.y, gyro.z]) if gyro is not None else np.full(3, np.nan))
        elif topic == hand[topics.HAND_POSE]:
            pose = convert.hand_pose_arrays_from_msg(msg)
            poses.setdefault(pose["stamp_ns"], (message.log_time_ns, pose))
        elif topic == hand[topics.HAND_GROUND_TRUTH]:
            pose = convert.hand_pose_arrays_from_msg(msg.pose)
            pose.update(visibility=np.asarray(msg.landmark_visibility, np.float32),
                        occlusion_ratio=float(msg.occlusion_ratio), activity=str(msg.activity))
            truths[convert.stamp_ns_of(msg.header.stamp)] = pose
        elif topic == hand[topics.TIME_OFFSET]:
            offsets.append({"receive_ns": message.log_time_ns, "stamp_ns": convert.stamp_ns_of(msg.header.stamp),
                            "offset_s": float(msg.offset_s), "confidence": float(msg.confidence),
                            "raw_offset_s": float(msg.raw_offset_s), "accepted": int(msg.accepted_updates),
                            "rejected": int(msg.rejected_updates), "online": bool(msg.online)})
        elif topic == hand[topics.ROBOT_JOINT_COMMANDS]:
            commands.append((message.log_time_ns, list(msg.name), np.asarray(msg.position, np.float64)))
        else:
            for status in msg.status:
                diagnostics.append((message.log_time_ns, status.name, int(status.level), status.message,
                                    {kv.key: kv.value for kv in status.values}))
    synced_recorded = hand[topics.SYNCED_FRAME] in available   # not with sync + fusion in one process
    return Recording({t: n for t, (_, n) in available.items()}, {t: ty for t, (ty, _) in available.items()},
                     images, infos, synced if synced_recorded else None, np.asarray(glove_stamps, np.int64),
                     np.asarray(glove_sequence, np.int64),
                     np.asarray(hand_back_rate, np.float64).reshape(-1, 3), poses, commands, offsets, truths,
                     diagnostics)


def last_status(recording: Recording, contains: str, before_ns: int | None = None) -> dict | None:
    """Values of the newest diagnostics status whose name contains ``contains``."""
    found = [d for d in recording.diagnostics if contains in d[1] and (before_ns is None or d[0] <= before_ns)]
    if not found:
        return None
    receive, name, level, message, values = max(found, key=lambda d: d[0])
    return {"name": name, "level": level, "message": message, "receive_ns": receive, **values}


# ==========================================================================================
# Tracking accuracy
# ==========================================================================================

@dataclasses.dataclass
class WindowTrack:
    """Ground truth and every method's predictions on the window's frames."""

    stamps_ns: np.ndarray
    truth: Any                      # metrics.HandPoses
    truth_valid: np.ndarray
    occlusion: np.ndarray
    visibility: np.ndarray          # [F, 21]
    predictions: dict[str, dict[str, np.ndarray]]   # method -> landmarks, joint_angles, wrist_rotation, ...
    live_attention: np.ndarray      # [F, N] (NaN where no live pose)
    live_vision_weight: np.ndarray
    live_state: np.ndarray          # [F] (-1 where no live pose)
    images: Any                     # images[k] of window frame k
    camera: Any


def _empty_prediction(frames: int) -> dict[str, np.ndarray]:
    return {"landmarks": np.full((frames, 21, 3), np.nan), "joint_angles": np.full((frames, 22), np.nan),
            "wrist_rotation": np.full((frames, 3, 3), np.nan), "wrist_translation": np.full((frames, 3), np.nan)}


def window_track(recording: Recording, bag: str, side: str, window: tuple[int, int], true_offset_s: float,
                 model: str, baseline_model: str, progress: bool) -> tuple[WindowTrack, dict]:
    """Live predictions from the recording; the offline ones by re-running both checkpoints on it."""
    from scipy.spatial.transform import Rotation

    from avi_ht_ros.common.errors import AviHtError
    from avi_ht_ros.models.checkpoint import load_checkpoint
    from avi_ht_ros.tracker import evaluate as E

    sequence = E.load_bag_sequence(bag, time_offset_s=true_offset_s)
    keep = np.flatnonzero((sequence.stamps_ns >= window[0]) & (sequence.stamps_ns < window[1]))
    if keep.size == 0:
        raise AviHtError(f"{bag}: no recorded camera frame inside the scenario window")
    hand = sequence.hands[side]
    hand = dataclasses.replace(hand, truth=hand.truth.take(keep), truth_valid=np.asarray(hand.truth_valid)[keep],
                               occlusion_ratio=np.asarray(hand.occlusion_ratio)[keep],
                               activity=np.asarray(hand.activity)[keep])
    images = [sequence.images[int(k)] for k in keep]
    sequence = dataclasses.replace(sequence, stamps_ns=sequence.stamps_ns[keep], images=images, hands={side: hand},
                                   glove_variant=None)
    frames = int(keep.size)
    stamps = sequence.stamps_ns
    # -- offline: the same tracker code as the fusion node, on the recorded frames and glove samples
    entries = [E.EvalModel(OFFLINE, load_checkpoint(model, glove=sequence.glove_model).model, source=model),
               E.EvalModel(VISION, load_checkpoint(baseline_model, glove=sequence.glove_model).model,
                           source=baseline_model)]
    started = time.perf_counter()
    results = E.Evaluator(entries, E.EvalOptions(ekf=False, progress=progress, threads=1)).run(
        [sequence], expected_frames=frames)
    offline_s = time.perf_counter() - started
    record = results.tracks[0]
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for name in (OFFLINE, VISION):
        pred = record.predictions[("nominal", name)]
        predictions[name] = {"landmarks": pred.landmarks, "joint_angles": pred.joint_angles,
                             "wrist_rotation": pred.wrist_rotation, "wrist_translation": pred.wrist_translation}
    kinds = {entry.name: entry.kind for entry in entries}
    # -- live: what the fusion node published for these frames
    live = _empty_prediction(frames)
    attention = None
    vision_weight = np.full(frames, np.nan)
    state = np.full(frames, -1, np.int64)
    for k, stamp in enumerate(stamps):
        entry = recording.poses.get(int(stamp))
        if entry is None:
            continue
        pose = entry[1]
        live["landmarks"][k] = pose["landmarks"]
        live["joint_angles"][k] = pose["joint_angles"]
        live["wrist_rotation"][k] = Rotation.from_quat(pose["wrist_rotation_xyzw"]).as_matrix()
        live["wrist_translation"][k] = pose["wrist_position"]
        if attention is None:
            attention = np.full((frames, pose["imu_attention"].size), np.nan)
        if pose["imu_attention"].size == attention.shape[1]:
            attention[k] = pose["imu_attention"]
        vision_weight[k] = pose["vision_weight"]
        state[k] = pose["tracking_state"]
    predictions = {LIVE: live, **predictions}
    visibility = np.ones((frames, 21), np.float32)
    for k, stamp in enumerate(stamps):
        truth = recording.truths.get(int(stamp))
        if truth is not None:
            visibility[k] = truth["visibility"]
    track = WindowTrack(stamps, hand.truth, np.asarray(hand.truth_valid, bool), np.asarray(hand.occlusion_ratio),
                        visibility, predictions, attention if attention is not None else np.zeros((frames, 0)),
                        vision_weight, state, images, sequence.camera)
    info = {"offline_eval_s": offline_s, "offline_models": kinds, "sync_stats": record.sync_stats.get("nominal", {}),
            "hand_scale_prior": float(hand.hand_scale), "time_offset_told_s": true_offset_s}
    return track, info


def accuracy(track: WindowTrack) -> dict:
    """Per-method summaries (own frames and the common frames), occlusion bins, per-frame MKPE."""
    from avi_ht_ros.tracker import metrics as M

    frames = track.stamps_ns.size
    errors, processed = {}, {}
    for name, pred in track.predictions.items():
        poses = M.HandPoses(pred["landmarks"], pred["joint_angles"], pred["wrist_rotation"], pred["wrist_translation"])
        errors[name] = M.frame_errors(poses, track.truth)
        processed[name] = np.isfinite(pred["landmarks"]).all(axis=(1, 2))
    common = track.truth_valid.copy()
    for mask in processed.values():
        common &= mask
    labels = M.occlusion_bin_labels(track.occlusion)
    out: dict[str, Any] = {"frames": int(frames), "common_frames": int(common.sum()),
                           "coverage": {n: float(m.mean()) if frames else 0.0 for n, m in processed.items()},
                           "own_frames": {}, "same_frames": {}, "occlusion_bins": {}, "bin_labels":
                           list(M.OCCLUSION_BIN_LABELS)}
    for name, err in errors.items():
        out["own_frames"][name] = M.summarize(err, processed[name] & track.truth_valid)
        out["same_frames"][name] = M.summarize(err, common)
        out["occlusion_bins"][name] = M.breakdown(err.subset(common), labels[common], order=M.OCCLUSION_BIN_LABELS)
    heavy = common & (track.occlusion >= 0.5)
    out["heavy_occlusion_frames"] = int(heavy.sum())
    out["heavy_occlusion"] = {name: M.summarize(err, heavy) for name, err in errors.items()}
    vision = out["same_frames"][VISION]
    out["improvement_over_vision_pct"] = {
        name: M.relative_reduction(out["same_frames"][name], vision, ("mkpe_mm", "f_mkpe_mm", "mkpe_t_mm",
                                                                       "pa_mpjpe_mm", "angle_error_deg"))
        for name in (LIVE, OFFLINE)}
    out["improvement_heavy_occlusion_pct"] = {
        name: M.relative_reduction(out["heavy_occlusion"][name], out["heavy_occlusion"][VISION], ("mkpe_mm",))
        for name in (LIVE, OFFLINE)}
    out["per_frame_mkpe_mm"] = {name: _row_mean(err.kpe_mm) for name, err in errors.items()}
    out["_errors"] = errors
    out["_common"] = common
    return out


# ==========================================================================================
# Latency, offset, counts
# ==========================================================================================

def latencies(recording: Recording, window: tuple[int, int]) -> dict:
    inside = lambda stamp: window[0] <= stamp < window[1]   # noqa: E731
    poses = {s: r for s, (r, _) in recording.poses.items() if inside(s)}
    synced = None if recording.synced is None else {s: r for s, r in recording.synced.items() if inside(s)}
    images = {s: r for s, r in recording.images.items() if inside(s)}
    last = max(poses.values(), default=window[1]) + 100_000_000
    commands = np.array([r for r, _, _ in recording.commands if window[0] <= r <= last], np.int64)
    stages = stage_latencies(poses, synced, images, commands)
    table = {name: latency_stats(values) for name, values in stages.items()}
    fusion = last_status(recording, "hand fusion", window[1] + 2_000_000_000) or {}
    retarget = last_status(recording, "retargeting", window[1] + 2_000_000_000) or {}
    reported = {key: _number(fusion.get(key)) for key in ("latency_ms_p50", "latency_ms_p99", "inference_ms_p50",
                                                            "inference_ms_p99")}
    reported.update({f"retarget_{key}": _number(retarget.get(key)) for key in ("solve_ms_p50", "solve_ms_p99",
                                                                                "command_latency_ms_p50",
                                                                                "command_latency_ms_p99")})
    return {"stages": table, "labels": dict(STAGES), "node_reported": reported, "_values": stages}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def offset_from_ground_truth(recording: Recording) -> dict:
    """The online estimator (same class and defaults as sync_node) fed the *true* wrist rotation.

    What the live estimate converges to with perfect vision on this recording: it checks the
    glove stream and the offset convention independently of the tracking model's quality.
    """
    from avi_ht_ros.tracker.time_offset import TimeOffsetConfig, TimeOffsetEstimator

    estimator = TimeOffsetEstimator(TimeOffsetConfig(), 0.0)
    events = sorted([(int(s), 0, i) for i, s in enumerate(recording.glove_stamps)]
                    + [(int(s), 1, s) for s in recording.truths])
    for stamp, kind, key in events:
        if kind == 0:
            estimator.add_glove_gyro(stamp, recording.hand_back_gyro[key])
        else:
            estimator.add_wrist_orientation(stamp, recording.truths[key]["wrist_rotation_xyzw"])
        estimator.update(stamp)
    estimate = estimator.estimate
    return {"estimated_s": float(estimate.offset_s), "confidence": float(estimate.confidence),
            "accepted_updates": int(estimate.accepted_updates), "rejected_updates": int(estimate.rejected_updates)}


def time_offset(recording: Recording, window: tuple[int, int], true_offset_s: float) -> dict:
    inside = [o for o in recording.offsets if o["stamp_ns"] <= window[1] + 1_500_000_000]
    from_truth = offset_from_ground_truth(recording)
    if not inside:
        return {"true_s": true_offset_s, "estimated_s": float("nan"), "messages": 0,
                "with_true_wrist_rotation": from_truth}
    last = inside[-1]
    during = [o for o in inside if o["stamp_ns"] >= window[0]] or [last]
    return {"true_s": true_offset_s, "estimated_s": last["offset_s"], "error_ms": (last["offset_s"] - true_offset_s)
            * 1e3, "confidence": last["confidence"], "last_raw_estimate_s": last["raw_offset_s"],
            "accepted_updates": last["accepted"], "rejected_updates": last["rejected"], "online": last["online"],
            "mean_in_window_s": float(np.mean([o["offset_s"] for o in during])), "messages": len(inside),
            "with_true_wrist_rotation": from_truth,
            "_series": [(o["stamp_ns"], o["offset_s"], o["confidence"], o["raw_offset_s"]) for o in inside]}


def loss_checks(recording: Recording, frame_period_ns: int, window: tuple[int, int] | None = None) -> dict:
    """Counts of what is missing between the reliable publishers and the bag (all 0 = nothing lost).

    With ``window`` (stamps ``[start, end)``) only the messages stamped inside it are checked:
    the recorder subscribes each topic when it discovers its publisher, so the first frames of
    a recording may precede the subscription of a topic published beside them (camera info,
    ground truth) - a start-up skew of the recording, not a loss.
    """
    inside = (lambda s: True) if window is None else (lambda s: window[0] <= s < window[1])  # noqa: E731
    image_set = {s for s in recording.images if inside(s)}
    stamps = np.array(sorted(image_set), np.int64)
    steps = np.round(np.diff(stamps) / frame_period_ns).astype(np.int64) if stamps.size > 1 else np.zeros(0, np.int64)
    glove_stamps = recording.glove_stamps
    sequence = recording.glove_sequence if window is None else \
        recording.glove_sequence[(glove_stamps >= window[0]) & (glove_stamps < window[1])]
    seq_steps = np.diff(sequence) % 2**32 if sequence.size > 1 else np.zeros(0, np.int64)
    checks = {
        "image_stamp_gaps": int(np.sum(np.maximum(steps - 1, 0))),
        "image_duplicates_or_reordered": int(np.sum(steps < 1)),
        "camera_info_missing": int(len(image_set - set(recording.camera_infos))),
        "ground_truth_missing": int(len(image_set - set(recording.truths))),
        "glove_sequence_gaps": int(np.sum(np.maximum(seq_steps - 1, 0))),
        "glove_duplicates_or_reordered": int(np.sum(seq_steps < 1)),
    }
    if recording.synced is not None:   # recorded (sync and fusion as separate processes)
        synced = {s for s in recording.synced if inside(s)}
        checks["synced_without_image"] = int(len(synced - set(recording.images)))
        poses = {s for s in recording.poses if inside(s)}
        checks["poses_without_synced_frame"] = int(len(poses - set(recording.synced)))
    return checks


def message_counts(recording: Recording, window: tuple[int, int], frame_period_ns: int, side: str) -> dict:
    """Published (node diagnostics) vs recorded, and the loss checks on the recorded streams."""
    loss = loss_checks(recording, frame_period_ns, window)
    late = window[1] + 30_000_000_000
    camera = last_status(recording, ": camera", late) or {}
    glove = last_status(recording, f"{side} glove link", late) or {}
    sync = last_status(recording, "glove/camera sync", late) or {}
    fusion = last_status(recording, "hand fusion", late) or {}
    retarget = last_status(recording, "retargeting", late) or {}
    recorder = last_status(recording, "rosbag2 recorder", late) or {}
    in_window = lambda values: sum(1 for s in values if window[0] <= s < window[1])   # noqa: E731
    frames_in_window = in_window(recording.images)
    published = {
        "camera_frames (camera_node)": _number(camera.get("frames")),
        "glove_samples (glove_driver_node)": _number(glove.get("published")),
        "synced_frames (sync_node)": _number(sync.get("published")),
        "sync_dropped_frames (sync_node)": _number(sync.get("frames_dropped_no_imu", 0)) + _number(
            sync.get("frames_dropped_too_few", 0)),
        "hand_poses (fusion_node)": _number(fusion.get("frames")),
        "fusion_skipped_stale_frames (fusion_node)": _number(fusion.get("dropped_frames")),
        "joint_commands (retarget_node)": _number(retarget.get("commands")),
    }
    for name, values in (("camera", camera), ("glove", glove), ("sync", sync), ("fusion", fusion),
                         ("retarget", retarget)):
        published[f"_as_of_{name}_ns"] = values.get("receive_ns")
    return {"recorded_per_topic": dict(sorted(recording.topic_counts.items())),
            "published_by_nodes": published, "loss": loss, "lost_total": int(sum(loss.values())),
            "loss_whole_recording": loss_checks(recording, frame_period_ns),
            "window": {"camera_frames": frames_in_window,
                       "expected_camera_frames": int(round((window[1] - window[0]) / frame_period_ns)),
                       "glove_samples": in_window(recording.glove_stamps.tolist()),
                       "synced_frames": None if recording.synced is None else in_window(recording.synced),
                       "hand_poses": in_window(recording.poses),
                       "joint_commands": sum(1 for r, _, _ in recording.commands if window[0] <= r < window[1])},
            "recorder_diagnostics": {k: v for k, v in recorder.items() if not k.startswith("topic.")}}


# ==========================================================================================
# Figures
# ==========================================================================================

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {LIVE: "#d95f02", OFFLINE: "#7570b3", VISION: "#1b9e77", "truth": "#33cc33"}


def plot_mkpe_over_time(path: pathlib.Path, track: WindowTrack, acc: dict) -> None:
    plt = _plt()
    t = (track.stamps_ns - track.stamps_ns[0]) / 1e9 if track.stamps_ns.size else np.zeros(0)
    fig, ax = plt.subplots(figsize=(11, 4))
    shade = ax.twinx()
    shade.fill_between(t, track.occlusion, step="mid", color="0.6", alpha=0.3, linewidth=0)
    shade.set_ylim(0, 1)
    shade.set_ylabel("ground-truth occlusion ratio (shaded)")
    for name in METHODS:
        values = acc["per_frame_mkpe_mm"][name]
        smooth = _rolling_nanmean(values, 9)
        ax.plot(t, smooth, color=COLORS[name], label=f"{name} (mean {acc['same_frames'][name]['mkpe_mm']:.1f} mm)",
                linewidth=1.4)
    ax.set_zorder(shade.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("scenario time (s)")
    ax.set_ylabel("MKPE (mm), 0.15 s rolling mean")
    finite = np.concatenate([v[np.isfinite(v)] for v in acc["per_frame_mkpe_mm"].values()] + [np.zeros(1)])
    ax.set_ylim(0, max(10.0, float(np.percentile(finite, 98)) * 1.15))
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Tracking error over the scenario (fusion live and offline vs vision-only)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean of each row's finite values (NaN for a row without any)."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    counts = finite.sum(axis=-1)
    sums = np.where(finite, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _rolling_nanmean(values: np.ndarray, width: int) -> np.ndarray:
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    kernel = np.ones(width)
    sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def plot_occlusion_bins(path: pathlib.Path, acc: dict) -> None:
    plt = _plt()
    labels = acc["bin_labels"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(METHODS)
    for i, name in enumerate(METHODS):
        values = [acc["occlusion_bins"][name][b]["mkpe_mm"] for b in labels]
        ax.bar(np.arange(len(labels)) + (i - 1) * width, values, width, color=COLORS[name], label=name)
    counts = [acc["occlusion_bins"][VISION][b]["frames"] for b in labels]
    ax.set_xticks(np.arange(len(labels)), [f"{b}\n({n} frames)" for b, n in zip(labels, counts)])
    ax.set_xlabel("ground-truth occlusion ratio")
    ax.set_ylabel("MKPE (mm)")
    ax.legend(fontsize=8)
    ax.set_title("MKPE per occlusion bin (same frames for every method)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(path: pathlib.Path, lat: dict) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for name in ("sync", "fusion", "retarget", "end_to_end_pose", "end_to_end_command"):
        values = lat["_values"].get(name)
        if values is None:
            continue
        values = np.sort(values[np.isfinite(values)])
        if values.size:
            ax.plot(values, np.linspace(0, 1, values.size), label=lat["labels"][name])
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Latency per stage (recorder receive times)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time_offset(path: pathlib.Path, offset: dict, window: tuple[int, int]) -> None:
    plt = _plt()
    series = offset.get("_series") or []
    fig, ax = plt.subplots(figsize=(8, 3.4))
    if series:
        t = np.array([(s - window[0]) / 1e9 for s, *_ in series])
        ax.plot(t, [1e3 * o for _, o, _, _ in series], "o-", label="estimate in use (glove/time_offset)", markersize=3)
        raw = np.array([1e3 * r for *_, r in series])
        ax.plot(t, raw, "x", color="0.5", label="last raw estimate", markersize=4)
    ax.axhline(1e3 * offset["true_s"], color="k", linestyle="--", label="true offset")
    truth = offset.get("with_true_wrist_rotation", {})
    if truth.get("accepted_updates"):
        ax.axhline(1e3 * truth["estimated_s"], color="tab:green", linestyle=":",
                   label="estimator fed the true wrist rotation")
    ax.axvspan(0, (window[1] - window[0]) / 1e9, color="0.9", zorder=0, label="scenario window")
    ax.set_xlabel("scenario time (s)")
    ax.set_ylabel("camera-glove offset (ms)")
    ax.legend(fontsize=7)
    ax.set_title("Online camera-glove time offset (t_camera = t_glove + offset)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strip_frame_indices(track: WindowTrack, count: int, rate_hz: float) -> list[int]:
    """Frames for the strip: the most occluded moments (≥ 1.5 s apart) plus evenly spread ones."""
    frames = track.stamps_ns.size
    if frames == 0 or count <= 0:
        return []
    has_live = track.live_state >= 0
    candidates = np.flatnonzero(has_live & track.truth_valid) if (has_live & track.truth_valid).any() \
        else np.arange(frames)
    gap = int(1.5 * rate_hz)
    chosen: list[int] = []
    occlusion = np.nan_to_num(track.occlusion[candidates], nan=-1.0)
    for index in candidates[np.argsort(-occlusion, kind="stable")]:
        if len(chosen) >= (count + 1) // 2:
            break
        if all(abs(int(index) - c) >= gap for c in chosen):
            chosen.append(int(index))
    for target in np.linspace(0, frames - 1, count + 2)[1:-1]:
        if len(chosen) >= count:
            break
        index = int(candidates[np.argmin(np.abs(candidates - target))])
        if all(abs(index - c) >= gap // 2 for c in chosen):
            chosen.append(index)
    return sorted(chosen)


class RobotSkeleton:
    """Link origins of the shipped robot hand for a joint command (retarget/kinematics.py, pinocchio)."""

    def __init__(self, side: str):
        import pinocchio as pin

        from avi_ht_ros.common.paths import config_path
        from avi_ht_ros.retarget.config import load_retarget_config
        from avi_ht_ros.retarget.kinematics import RobotHandKinematics

        config = load_retarget_config(config_path("retarget_avi_hand_16dof.yaml" if side == "right"
                                                  else "retarget_avi_hand_16dof_left.yaml"))
        self.kinematics = RobotHandKinematics(config.urdf_path)
        frames = self.kinematics.model.frames
        self.bodies = [i for i, f in enumerate(frames) if f.type == pin.FrameType.BODY]
        self.parent = {}
        for i in self.bodies:
            j = frames[i].parentFrame
            while j > 0 and frames[j].type != pin.FrameType.BODY:
                j = frames[j].parentFrame
            self.parent[i] = j if frames[j].type == pin.FrameType.BODY else None

    def q_of(self, names: list[str], positions: np.ndarray) -> np.ndarray:
        q = self.kinematics.neutral()
        for name, value in zip(names, positions):
            try:
                q[self.kinematics.joint_index(name)] = value
            except KeyError:
                pass
        return q

    def segments(self, q: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        positions = dict(zip(self.bodies, self.kinematics.frame_positions(q, self.bodies)))
        return [(positions[p], positions[i]) for i, p in self.parent.items() if p is not None]


def _crop_box(points_uv: list[np.ndarray], width: int, height: int, minimum: int = 120) -> tuple[int, int, int]:
    finite = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in points_uv if p is not None] + [np.zeros((0, 2))])
    inside = finite[(finite[:, 0] > -50) & (finite[:, 0] < width + 50) & (finite[:, 1] > -50)
                    & (finite[:, 1] < height + 50)] if finite.size else finite
    if inside.size == 0:
        size = min(width, height)
        return (width - size) // 2, (height - size) // 2, size
    low, high = inside.min(axis=0), inside.max(axis=0)
    size = int(min(max(1.5 * float(np.max(high - low)), minimum), width, height))
    centre = (low + high) / 2
    u0 = int(np.clip(round(centre[0] - size / 2), 0, width - size))
    v0 = int(np.clip(round(centre[1] - size / 2), 0, height - size))
    return u0, v0, size


def draw_strip(path: pathlib.Path, track: WindowTrack, acc: dict, recording: Recording, side: str,
               indices: list[int], pose_receive: dict[int, int], glove_names: list[str]) -> list[int]:
    """Camera crop with skeletons, per-IMU attention and the robot hand, one column per frame."""
    from avi_ht_ros.sim.render import DEFAULT_BONE_PAIRS

    plt = _plt()
    if not indices:
        return []
    robot = RobotSkeleton(side)
    command_times = np.array([r for r, _, _ in recording.commands], np.int64)
    columns = len(indices)
    fig = plt.figure(figsize=(2.3 * columns, 7.2))
    grid = fig.add_gridspec(3, columns, height_ratios=[2.3, 1.0, 1.9], hspace=0.7, wspace=0.15)
    camera = track.camera
    t0 = track.stamps_ns[0]
    for column, k in enumerate(indices):
        image = np.asarray(track.images[k])
        skeletons = {"truth": track.truth.landmarks[k], LIVE: track.predictions[LIVE]["landmarks"][k],
                     VISION: track.predictions[VISION]["landmarks"][k]}
        uv = {n: (camera.project(p) if np.isfinite(p).all() else None) for n, p in skeletons.items()}
        u0, v0, size = _crop_box([uv["truth"] if uv["truth"] is not None else uv[LIVE]], camera.width,
                                 camera.height)
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(image[v0:v0 + size, u0:u0 + size], cmap="gray", vmin=0, vmax=255,
                  extent=(u0 - 0.5, u0 + size - 0.5, v0 + size - 0.5, v0 - 0.5))
        for name, style in (("truth", dict(color=COLORS["truth"], linewidth=1.0, alpha=0.9)),
                            (VISION, dict(color=COLORS[VISION], linewidth=1.0, linestyle="--")),
                            (LIVE, dict(color=COLORS[LIVE], linewidth=1.6))):
            points = uv[name]
            if points is None:
                continue
            for a, b in DEFAULT_BONE_PAIRS:
                ax.plot(points[[a, b], 0], points[[a, b], 1], **style)
        hidden = track.visibility[k] < 0.5
        if uv["truth"] is not None and hidden.any():
            ax.plot(uv["truth"][hidden, 0], uv["truth"][hidden, 1], "x", color="red", markersize=3)
        ax.set_xlim(u0 - 0.5, u0 + size - 0.5)
        ax.set_ylim(v0 + size - 0.5, v0 - 0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        live_err = acc["per_frame_mkpe_mm"][LIVE][k]
        vision_err = acc["per_frame_mkpe_mm"][VISION][k]
        ax.set_title(f"t={(track.stamps_ns[k] - t0) / 1e9:.2f}s occ {track.occlusion[k]:.0%}\n"
                     f"fusion {live_err:.0f} / vision {vision_err:.0f} mm", fontsize=7)
        # attention
        ax = fig.add_subplot(grid[1, column])
        attention = track.live_attention[k] if track.live_attention.shape[1] else np.zeros(0)
        if attention.size and np.isfinite(attention).all():
            ax.bar(np.arange(attention.size), attention, color=COLORS[LIVE])
            ax.set_ylim(0, max(0.2, float(np.max(attention)) * 1.15))
        ax.set_xticks(range(attention.size), [n.replace("_", " ") for n in glove_names[:attention.size]]
                      if column == 0 else [""] * attention.size, rotation=90, fontsize=5)
        ax.tick_params(axis="y", labelsize=6)
        weight = track.live_vision_weight[k]
        ax.set_title(f"vision weight {weight:.2f}" if np.isfinite(weight) else "no live pose", fontsize=7)
        if column == 0:
            ax.set_ylabel("per-IMU attention", fontsize=7)
        # robot hand: the command in force when this pose had been received
        ax = fig.add_subplot(grid[2, column], projection="3d")
        received = pose_receive.get(int(track.stamps_ns[k]))
        if received is not None and command_times.size:
            i = int(np.clip(np.searchsorted(command_times, received), 0, command_times.size - 1))
            _, names, positions = recording.commands[i]
            q = robot.q_of(names, positions)
        else:
            q = robot.kinematics.neutral()
        for a, b in robot.segments(q):
            ax.plot([a[0], b[0]], [a[1], b[1]], [a[2], b[2]], color="#444444", linewidth=1.5)
        ax.set_xlim(-0.02, 0.2)
        ax.set_ylim(-0.11, 0.11)
        ax.set_zlim(-0.11, 0.11)
        ax.view_init(elev=25, azim=-120)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_title("robot hand command", fontsize=7)
    handles = [plt.Line2D([], [], color=COLORS["truth"], label="ground truth (red x: occluded)"),
               plt.Line2D([], [], color=COLORS[LIVE], linewidth=1.6, label=LIVE),
               plt.Line2D([], [], color=COLORS[VISION], linestyle="--", label=VISION)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return indices


def write_video(path: pathlib.Path, track: WindowTrack, acc: dict, fps: float = 30.0, step: int = 2) -> bool:
    """Camera view with the true (green), live fusion (orange) and vision-only (blue) skeletons."""
    import cv2

    from avi_ht_ros.sim.render import DEFAULT_BONE_PAIRS

    camera = track.camera
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (camera.width, camera.height))
    if not writer.isOpened():
        return False
    colors = {"truth": (60, 200, 60), LIVE: (2, 95, 217), VISION: (119, 158, 27)}
    try:
        for k in range(0, track.stamps_ns.size, step):
            frame = cv2.cvtColor(np.asarray(track.images[k]), cv2.COLOR_GRAY2BGR)
            for name, landmarks in (("truth", track.truth.landmarks[k]), (VISION, track.predictions[VISION]
                                                                           ["landmarks"][k]),
                                    (LIVE, track.predictions[LIVE]["landmarks"][k])):
                if not np.isfinite(landmarks).all():
                    continue
                uv = camera.project(landmarks)
                if not np.isfinite(uv).all():
                    continue
                for a, b in DEFAULT_BONE_PAIRS:
                    cv2.line(frame, tuple(int(x) for x in uv[a]), tuple(int(x) for x in uv[b]), colors[name], 1,
                             cv2.LINE_AA)
            text = (f"t {(track.stamps_ns[k] - track.stamps_ns[0]) / 1e9:5.2f}s  occlusion "
                    f"{track.occlusion[k]:.0%}  fusion {acc['per_frame_mkpe_mm'][LIVE][k]:.0f} mm  vision "
                    f"{acc['per_frame_mkpe_mm'][VISION][k]:.0f} mm")
            cv2.putText(frame, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            writer.write(frame)
    finally:
        writer.release()
    return True


# ==========================================================================================
# The report
# ==========================================================================================

def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def _fmt(value: Any, pattern: str = "{:.1f}") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a" if value is None else str(value)
    return pattern.format(number) if math.isfinite(number) else "n/a"


def write_report(out: pathlib.Path, scenario, live, *, side: str, model: str, baseline_model: str,
                 glove_latency_s: float, timing: dict, strip_frames: int = 8, video: bool = False,
                 progress: bool = True, wall_start: float | None = None) -> dict:
    from avi_ht_ros.common.glove_model import GloveModel

    started = time.monotonic()
    out = pathlib.Path(out)
    window = (live.window_start_ns, live.window_end_ns)
    recording = read_recording(live.recorded_bag, side)
    true_offset = float(scenario.world.get("time_offset_s", 0.0)) - glove_latency_s
    track, offline = window_track(recording, live.recorded_bag, side, window, true_offset, model, baseline_model,
                                  progress)
    acc = accuracy(track)
    lat = latencies(recording, window)
    offset = time_offset(recording, window, true_offset)
    counts = message_counts(recording, window, scenario.frame_period_ns, side)
    glove_names = list(GloveModel.reference().sensor_names)
    files = {"recording": live.recorded_bag, "logs": live.log_dir}
    figures = {"mkpe_over_time": "mkpe_over_time.png", "occlusion_bins": "occlusion_bins.png",
               "latency": "latency.png", "time_offset": "time_offset.png", "strip": "strip.png"}
    plot_mkpe_over_time(out / figures["mkpe_over_time"], track, acc)
    plot_occlusion_bins(out / figures["occlusion_bins"], acc)
    plot_latency(out / figures["latency"], lat)
    plot_time_offset(out / figures["time_offset"], offset, window)
    rate = 1e9 / scenario.frame_period_ns
    indices = strip_frame_indices(track, strip_frames, rate)
    draw_strip(out / figures["strip"], track, acc, recording, side, indices,
               {s: r for s, (r, _) in recording.poses.items()}, glove_names)
    if video and write_video(out / "demo.mp4", track, acc):
        figures["video"] = "demo.mp4"
    files.update({k: str(out / v) for k, v in figures.items()})
    same = acc["same_frames"]
    headline = {
        "mkpe_mm": {name: same[name]["mkpe_mm"] for name in METHODS},
        "fusion_live_vs_vision_mkpe_reduction_pct": acc["improvement_over_vision_pct"][LIVE]["mkpe_mm"],
        "fusion_offline_vs_vision_mkpe_reduction_pct": acc["improvement_over_vision_pct"][OFFLINE]["mkpe_mm"],
        "heavy_occlusion_mkpe_mm": {name: acc["heavy_occlusion"][name]["mkpe_mm"] for name in METHODS},
        "fusion_beats_vision_only": bool(same[LIVE]["mkpe_mm"] < same[VISION]["mkpe_mm"]),
        "live_pose_coverage": acc["coverage"][LIVE],
        "end_to_end_pose_latency_ms": {k: lat["stages"]["end_to_end_pose"][k] for k in ("p50", "p99")},
        "time_offset_ms": {"true": 1e3 * offset["true_s"], "estimated": 1e3 * offset["estimated_s"],
                           "with_true_wrist_rotation": 1e3 * offset["with_true_wrist_rotation"]["estimated_s"]},
        "recorded_messages": int(sum(recording.topic_counts.values())),
        "lost_recorded_messages": counts["lost_total"],
    }
    report = {
        "headline": headline,
        "scenario": {"bag": scenario.path, "seed": scenario.seed, "duration_s": scenario.duration_s,
                     "frames": scenario.frames, "camera_rate_hz": rate, "side": side,
                     "hand_scale": scenario.hand_scales.get(side),
                     "occluder_rate_per_min": scenario.world.get("occluder_rate_per_min"),
                     "true_time_offset_in_bag_s": scenario.world.get("time_offset_s", 0.0),
                     "glove_latency_s": glove_latency_s},
        "window": {"start_ns": window[0], "end_ns": window[1]},
        "models": {"fusion": model, "vision_only": baseline_model, **offline},
        "tracking": {k: v for k, v in acc.items() if k not in ("per_frame_mkpe_mm",)},
        "latency_ms": lat,
        "time_offset": offset,
        "messages": counts,
        "recording": {"path": live.recorded_bag, "topics": recording.topic_types,
                      "write_error": next((str(c) for n, c in live.exit_codes.items() if n.startswith("recorder")
                                           and c != 0), "")},
        "graph": {"ros_domain_id": live.domain_id, "exit_codes": live.exit_codes, "cpu": live.cpu,
                  "logs": live.log_dir},
        "timing": {**timing, "report_s": time.monotonic() - started,
                   **({"total_s": time.monotonic() - wall_start} if wall_start is not None else {})},
        "files": files,
        "strip_frames": [int(k) for k in indices],
    }
    report["timing"]["report_s"] = time.monotonic() - started
    if wall_start is not None:
        report["timing"]["total_s"] = time.monotonic() - wall_start
    (out / "report.json").write_text(json.dumps(_json_safe(report), indent=2))
    (out / "report.md").write_text(markdown(report, acc, lat))
    return report


def markdown(report: dict, acc: dict, lat: dict) -> str:
    h = report["headline"]
    scenario = report["scenario"]
    lines = ["# AVI-HT demo report", ""]
    verdict = "beats" if h["fusion_beats_vision_only"] else "does NOT beat"
    lines += [f"Live fusion **{verdict}** the vision-only model on this run: MKPE "
              f"{_fmt(h['mkpe_mm'][LIVE])} mm vs {_fmt(h['mkpe_mm'][VISION])} mm "
              f"({_fmt(h['fusion_live_vs_vision_mkpe_reduction_pct'])} % lower; offline fusion "
              f"{_fmt(h['mkpe_mm'][OFFLINE])} mm), under heavy occlusion (≥ 50 % of landmarks hidden, "
              f"{acc['heavy_occlusion_frames']} frames) {_fmt(h['heavy_occlusion_mkpe_mm'][LIVE])} vs "
              f"{_fmt(h['heavy_occlusion_mkpe_mm'][VISION])} mm. End-to-end latency camera stamp → pose "
              f"p50 {_fmt(h['end_to_end_pose_latency_ms']['p50'])} ms, p99 "
              f"{_fmt(h['end_to_end_pose_latency_ms']['p99'])} ms; camera–glove offset estimated "
              f"{_fmt(h['time_offset_ms']['estimated'])} ms (true {_fmt(h['time_offset_ms']['true'])} ms); "
              f"{h['recorded_messages']} messages recorded, {h['lost_recorded_messages']} lost.", ""]
    lines += ["## Scenario", "",
              f"Simulated egocentric camera ({_fmt(scenario['camera_rate_hz'], '{:.0f}')} Hz) + 12-IMU glove (200 Hz, "
              f"through the serial protocol over a pseudo-terminal), {scenario['side']} hand, "
              f"{_fmt(scenario['duration_s'])} s, seed {scenario['seed']}, "
              f"{scenario['occluder_rate_per_min']} occluder phases/min. Bag: `{scenario['bag']}`. "
              f"The graph ran in ROS_DOMAIN_ID {report['graph']['ros_domain_id']}; one whole scenario loop "
              f"({acc['frames']} camera frames) is scored.", ""]
    lines += ["## Tracking accuracy", "",
              "Every method on the same frames (the frames the live graph produced a pose for; "
              f"{acc['common_frames']} of {acc['frames']}). *Offline*: the checkpoint run through the same "
              "tracker code (`tracker/evaluate.py`) on the recorded frames and glove samples, told the true "
              "camera–glove offset. Errors in mm / degrees; P.A = PCK AUC 0–50 mm.", ""]
    header = ["method", "frames", "MKPE", "F.MKPE", "MKPE.T", "PA-MPJPE", "angle err", "P.A", "jitter mm/f²",
              "coverage"]
    rows = [[name, str(acc["same_frames"][name]["frames"])] + [_fmt(acc["same_frames"][name][k], "{:.2f}" if k ==
                                                                    "pck_auc" else "{:.1f}")
                                                               for k in TABLE_KEYS[1:]]
            + [f"{acc['coverage'][name]:.0%}"] for name in METHODS]
    lines += [_md_table(header, rows), ""]
    lines += ["MKPE per ground-truth occlusion bin (same frames):", ""]
    bins = acc["bin_labels"]
    rows = [[name] + [f"{_fmt(acc['occlusion_bins'][name][b]['mkpe_mm'])} ({acc['occlusion_bins'][name][b]['frames']})"
                      for b in bins] for name in METHODS]
    lines += [_md_table(["method"] + [f"occlusion {b}" for b in bins], rows), "",
              "![MKPE over time](mkpe_over_time.png)", "", "![MKPE per occlusion bin](occlusion_bins.png)", ""]
    lines += ["## Latency", "", "From the recorder's receive times (the recorder is one more process on the same "
              "cores). Every message of a camera frame carries the frame's acquisition stamp; joint commands come "
              "from the retargeting node's 100 Hz control timer.", ""]
    rows = [[lat["labels"][k], str(v["n"]), _fmt(v["p50"], "{:.2f}"), _fmt(v["p90"], "{:.2f}"),
             _fmt(v["p99"], "{:.2f}"), _fmt(v["max"], "{:.2f}")] for k, v in lat["stages"].items()]
    lines += [_md_table(["stage (ms)", "n", "p50", "p90", "p99", "max"], rows), ""]
    reported = lat["node_reported"]
    lines += [f"Node-reported (last diagnostics, last 600 frames): fusion_node camera stamp → pose published p50 "
              f"{_fmt(reported['latency_ms_p50'], '{:.2f}')} / p99 {_fmt(reported['latency_ms_p99'], '{:.2f}')} ms, "
              f"inference p50 {_fmt(reported['inference_ms_p50'], '{:.2f}')} / p99 "
              f"{_fmt(reported['inference_ms_p99'], '{:.2f}')} ms; retarget_node camera stamp → command published "
              f"p50 {_fmt(reported['retarget_command_latency_ms_p50'], '{:.2f}')} / p99 "
              f"{_fmt(reported['retarget_command_latency_ms_p99'], '{:.2f}')} ms, solve p50 "
              f"{_fmt(reported['retarget_solve_ms_p50'], '{:.2f}')} / p99 "
              f"{_fmt(reported['retarget_solve_ms_p99'], '{:.2f}')} ms.", "", "![latency](latency.png)", ""]
    offset = report["time_offset"]
    lines += ["## Camera–glove time offset", "",
              f"True offset {_fmt(1e3 * offset['true_s'], '{:.1f}')} ms (scenario `time_offset_s` "
              f"{_fmt(1e3 * float(scenario['true_time_offset_in_bag_s']), '{:.1f}')} ms minus the simulated glove's "
              f"data age {_fmt(1e3 * scenario['glove_latency_s'], '{:.1f}')} ms; t_camera = t_glove + offset). "
              f"Online estimate in use at the end: {_fmt(1e3 * offset['estimated_s'], '{:.1f}')} ms "
              f"(error {_fmt(offset.get('error_ms'), '{:.1f}')} ms, confidence "
              f"{_fmt(offset.get('confidence'), '{:.2f}')},"
              f" {offset.get('accepted_updates', 0)} accepted / {offset.get('rejected_updates', 0)} rejected updates).",
              "", f"The same estimator fed the *true* wrist rotation instead of the tracked one (what the live "
              "estimate "
              f"reaches with perfect vision on this recording): "
              f"{_fmt(1e3 * offset['with_true_wrist_rotation']['estimated_s'], '{:.1f}')} ms "
              f"({offset['with_true_wrist_rotation']['accepted_updates']} accepted updates, confidence "
              f"{_fmt(offset['with_true_wrist_rotation']['confidence'], '{:.2f}')}). The online estimate needs a "
              "tracked wrist rotation that follows the hand: an untrained or failing model leaves it at its "
              "initial value (sync.time_offset_s).", "", "![time offset](time_offset.png)", ""]
    messages = report["messages"]
    lines += ["## Messages: published vs recorded", ""]
    published = {k: v for k, v in messages["published_by_nodes"].items() if not k.startswith("_")}
    lines += ["Node counters (cumulative since start, from each node's last /diagnostics): "
              + ", ".join(f"{k} {_fmt(v, '{:.0f}')}" for k, v in published.items()) + ".", ""]
    window = messages["window"]
    lines += [f"In the scenario window: {window['camera_frames']} of {window['expected_camera_frames']} camera frames, "
              f"{window['glove_samples']} glove samples, "
              + (f"{window['synced_frames']} synced frames, " if window["synced_frames"] is not None else "")
              + f"{window['hand_poses']} hand poses, {window['joint_commands']} joint commands recorded.", ""]
    lines += ["Loss checks on the messages stamped in the scenario window (0 = nothing lost between the publishers "
              "and the bag), and on the whole recording (start-up: the recorder subscribes each topic when it "
              "discovers its publisher, so the first frames may come without camera info or ground truth):", ""]
    whole = messages.get("loss_whole_recording", {})
    lines += [_md_table(["check", "window", "whole recording"],
                        [[k, str(v), str(whole.get(k, ""))] for k, v in messages["loss"].items()]), ""]
    lines += [_md_table(["topic", "recorded"], [[f"`{k}`", str(v)] for k, v in messages["recorded_per_topic"].items()]),
              ""]
    lines += ["## Nodes", "", _md_table(["process", "CPU % (one core)", "RSS MB", "peak RSS MB"], [
        [name, _fmt(v["cpu_percent"]), _fmt(v["rss_mb"], "{:.0f}"), _fmt(v["peak_rss_mb"], "{:.0f}")]
        for name, v in report["graph"]["cpu"].items()]), "",
        "Exit codes after SIGINT: " + ", ".join(f"{k} {v}" for k, v in report["graph"]["exit_codes"].items()), ""]
    lines += ["## Picture strip", "", "Camera view around the hand with the ground truth (green, red x = occluded "
              "landmark), the live fusion output (orange) and the vision-only model (blue, dashed); the fusion "
              "node's per-IMU attention and vision weight; the robot hand command in force when the pose arrived "
              "(forward kinematics of the shipped URDF).", "", "![strip](strip.png)", ""]
    timing = report["timing"]
    lines += ["## Files and timing", "",
              f"Recording (MCAP, replayable, feeds `avi-ht dataset` / `avi-ht eval`): `{report['files']['recording']}`;"
              f" node logs: `{report['files']['logs']}`.", "",
              "Timing: " + ", ".join(f"{k} {_fmt(v) if not isinstance(v, bool) else v}" for k, v in timing.items()),
              ""]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_text(report: dict) -> str:
    h = report["headline"]
    lat = report["latency_ms"]["stages"]
    rows = [[name, _fmt(h["mkpe_mm"][name]), _fmt(h["heavy_occlusion_mkpe_mm"][name])] for name in METHODS]
    text = [
        "",
        "AVI-HT demo: " + ("fusion beats vision-only" if h["fusion_beats_vision_only"]
                           else "fusion does NOT beat vision-only") + " on this run",
        format_table(["method (same frames)", "MKPE mm", "MKPE mm, occlusion >= 50 %"], rows),
        f"live poses for {h['live_pose_coverage']:.0%} of the camera frames; camera stamp -> pose "
        f"p50 {_fmt(lat['end_to_end_pose']['p50'], '{:.1f}')} ms, p99 {_fmt(lat['end_to_end_pose']['p99'], '{:.1f}')}"
        f" ms" + (f"; -> joint command p99 {_fmt(lat['end_to_end_command']['p99'], '{:.1f}')} ms"
                  if "end_to_end_command" in lat else ""),
        f"camera-glove offset: estimated online {_fmt(h['time_offset_ms']['estimated'])} ms, true "
        f"{_fmt(h['time_offset_ms']['true'])} ms (estimator fed the true wrist rotation: "
        f"{_fmt(h['time_offset_ms']['with_true_wrist_rotation'])} ms)",
        f"recorded {h['recorded_messages']} messages, lost {h['lost_recorded_messages']}; "
        f"total {_fmt(report['timing'].get('total_s'), '{:.0f}')} s",
        f"report:    {pathlib.Path(report['files']['strip']).parent / 'report.md'}",
        f"strip:     {report['files']['strip']}",
        f"recording: {report['files']['recording']}",
    ]
    return "\n".join(text)
