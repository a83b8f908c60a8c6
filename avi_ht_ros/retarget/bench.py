"""Retargeting benchmark: our solver vs dex-retargeting on the same hand, targets and trajectory.

:func:`run_retarget_benchmark` builds a fixed, seeded trajectory of simulated human hand
landmarks (hand model FK over a smooth joint-angle trajectory with thumb-index, -middle
and -ring pinches, wrist moving in a camera frame), then runs, one after the other in this
process and on the same robot URDF:

* ours: ``vector``, ``position``, ``dexpilot`` (:class:`~avi_ht_ros.retarget.optimizer.Retargeter`);
* dex-retargeting 0.5 (nlopt SLSQP + pinocchio): ``vector`` and ``dexpilot``, its
  ``RetargetingConfig`` built programmatically from the same YAML config (same links,
  landmark pairs, scaling and low-pass alpha).

Metrics, computed identically for every method from its joint output:

``p50/p99 ms``
    wall time per frame of the retarget call, input conversion included.
``cpu p99 ms``
    the same call's thread CPU time (``time.thread_time``): insensitive to other processes
    competing for the CPU, which inflate the wall-clock tail on a shared machine (the
    1-minute load average is printed with the table).
``vec err mm``
    mean over frames and terms of ``|robot vector - s * human vector|`` for the config's
    ``vector`` terms (the wrist->fingertip vectors of the shipped config).
``pinch mm``
    mean robot thumb-tip <-> finger-tip distance over the frames where the human
    thumb-tip <-> same finger-tip distance is below ``pinch_threshold`` (2 cm).
``smooth rad/s``
    mean over frames and joints of ``|q_t - q_(t-1)| * rate``.
``peak rad/s``
    largest ``|q_t - q_(t-1)| * rate`` over frames and joints (jumps).
``viol``
    number of (frame, joint) outputs outside the URDF limits by more than 1e-6 rad.

``... occluded`` rows rerun vector/DexPilot on landmarks where, in four 0.5 s windows, one
fingertip drifts up to 4 cm off with 1 cm jitter (a tracker's guess for an occluded finger)
while its reported sigma rises to 4 cm (others 4 mm); ``+sigma`` passes the sigmas to our
retargeter.
Their ``vec err`` is measured against the *clean* human targets.

The lead wires this as ``avi-ht bench retarget`` (:func:`main` takes its argv).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.hand_model import (JOINT_INDEX, JOINT_NAMES, LANDMARK_INDEX, NUM_JOINTS,
                                          default_hand_model, forward_kinematics_numpy)
from avi_ht_ros.retarget.config import RetargetConfig, load_retarget_config
from avi_ht_ros.retarget.optimizer import Retargeter

DEFAULT_CONFIG = "retarget_avi_hand_16dof.yaml"  # shipped config (avi_ht_ros.common.paths.config_path)
PINCH_FINGERS = ("index", "middle", "ring")
VIOLATION_TOLERANCE = 1e-6


@dataclass
class HumanTrajectory:
    """Simulated human hand motion; landmarks in a camera-like parent frame."""

    rate_hz: float
    times: np.ndarray  # [T] s
    joint_angles: np.ndarray  # [T, 22] rad
    wrist_rotation: np.ndarray  # [T, 3, 3] wrist frame -> parent frame
    wrist_translation: np.ndarray  # [T, 3] m
    landmarks: np.ndarray  # [T, 21, 3] m, parent frame
    pinch_finger: np.ndarray  # [T] index into PINCH_FINGERS of the scripted pinch, -1 none


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def human_pinch_pose(finger: str, gap: float = 0.008, side: str = "right") -> np.ndarray:
    """Human joint angles (22) with the thumb tip ``gap`` m from ``finger``'s tip (IK on the hand model)."""
    model = default_hand_model()
    thumb = [JOINT_INDEX[n] for n in JOINT_NAMES if n.startswith("thumb_")]
    digit = [JOINT_INDEX[n] for n in JOINT_NAMES if n.startswith(finger + "_")]
    free = np.array(thumb + digit)
    nominal = np.zeros(NUM_JOINTS)
    nominal[JOINT_INDEX["thumb_cmc_flex"]] = 0.35
    nominal[JOINT_INDEX["thumb_cmc_abd"]] = 0.6
    nominal[JOINT_INDEX["thumb_mcp_flex"]] = 0.3
    nominal[JOINT_INDEX["thumb_ip_flex"]] = 0.3
    nominal[JOINT_INDEX[f"{finger}_mcp_flex"]] = 0.7
    nominal[JOINT_INDEX[f"{finger}_pip_flex"]] = 0.7
    nominal[JOINT_INDEX[f"{finger}_dip_flex"]] = 0.4
    tips = [LANDMARK_INDEX["thumb_tip"], LANDMARK_INDEX[f"{finger}_tip"]]

    def residual(x: np.ndarray) -> np.ndarray:
        angles = nominal.copy()
        angles[free] = x
        points = forward_kinematics_numpy(angles, np.eye(3), np.zeros(3), side=side).landmarks[tips]
        return np.concatenate([[np.linalg.norm(points[0] - points[1]) - gap], 0.02 * (x - nominal[free])])

    solution = least_squares(residual, nominal[free], bounds=(model.joint_lower[free], model.joint_upper[free]))
    pose = nominal.copy()
    pose[free] = solution.x
    return pose


def make_human_trajectory(duration_s: float = 10.0, rate_hz: float = 60.0, seed: int = 0,
                          side: str = "right",
                          pinches: Sequence[tuple[str, float, float]] = (
                              ("index", 1.5, 3.0), ("middle", 4.0, 5.2), ("index", 6.0, 6.8), ("ring", 7.6, 8.8)),
                          ramp_s: float = 0.35) -> HumanTrajectory:
    """Smooth random finger motion (sum of sinusoids, 0.1-0.7 Hz) blended into scripted pinches."""
    rng = np.random.default_rng(seed)
    model = default_hand_model()
    times = np.arange(int(round(duration_s * rate_hz))) / rate_hz
    low, high = model.joint_lower, model.joint_upper
    # Relaxed range: flexion 0..55 % of the upper limit, abduction +-40 % of the range.
    is_abd = np.array([n.endswith("_abd") for n in JOINT_NAMES])
    centre = np.where(is_abd, 0.5 * (low + high) * 0.5, 0.28 * high)
    amplitude = np.where(is_abd, 0.2 * (high - low), 0.27 * high)
    frequencies = rng.uniform(0.1, 0.7, size=(3, NUM_JOINTS))
    phases = rng.uniform(0, 2 * np.pi, size=(3, NUM_JOINTS))
    weights = rng.dirichlet(np.ones(3), size=NUM_JOINTS).T
    wave = (weights[None] * np.sin(2 * np.pi * frequencies[None] * times[:, None, None] + phases[None])).sum(axis=1)
    angles = centre + amplitude * wave
    pinch_finger = np.full(len(times), -1)
    for finger, start, end in pinches:
        pose = human_pinch_pose(finger, side=side)
        blend = _smoothstep((times - start) / ramp_s) * _smoothstep((end - times) / ramp_s)
        angles = (1 - blend[:, None]) * angles + blend[:, None] * pose
        pinch_finger[blend > 0.5] = PINCH_FINGERS.index(finger)
    angles = np.clip(angles, low, high)
    # Wrist: slow rotation and translation in front of a camera (optical frame, z forward).
    rotvec = np.stack([0.4 * np.sin(2 * np.pi * 0.13 * times), 0.3 * np.sin(2 * np.pi * 0.07 * times + 1.0),
                       0.5 * np.sin(2 * np.pi * 0.05 * times + 2.0)], axis=1)
    wrist_rotation = Rotation.from_rotvec(rotvec).as_matrix() @ Rotation.from_euler("x", -90, degrees=True).as_matrix()
    wrist_translation = np.stack([0.05 * np.sin(2 * np.pi * 0.1 * times), 0.03 * np.cos(2 * np.pi * 0.17 * times),
                                  0.45 + 0.05 * np.sin(2 * np.pi * 0.09 * times)], axis=1)
    landmarks = forward_kinematics_numpy(angles, wrist_rotation, wrist_translation, side=side).landmarks
    return HumanTrajectory(rate_hz, times, angles, wrist_rotation, wrist_translation, landmarks, pinch_finger)


# ------------------------------------------------------------------------------ methods
@dataclass
class _Method:
    name: str
    step: Callable[[int], np.ndarray]  # frame index -> full joint vector in our joint order
    reset: Callable[[], None]


def _ours(config: RetargetConfig, method: str, landmarks: np.ndarray, wrist_rotation: np.ndarray,
          sigma: np.ndarray | None = None, suffix: str = "") -> _Method:
    retargeter = Retargeter(config, method)

    def step(k: int) -> np.ndarray:
        return retargeter.retarget(landmarks[k], None if sigma is None else sigma[k], wrist_rotation[k])

    return _Method(f"ours {method}{suffix}", step, retargeter.reset)


def _dex(config: RetargetConfig, method: str, landmarks: np.ndarray, wrist_rotation: np.ndarray,
         joint_names: Sequence[str], human_to_robot: np.ndarray, suffix: str = "") -> _Method:
    """dex-retargeting configured programmatically from our config (same links and pairs)."""
    from dex_retargeting.retargeting_config import RetargetingConfig

    cfg: dict = dict(type=method, urdf_path=config.urdf_path, scaling_factor=config.scaling_factor,
                     low_pass_alpha=config.low_pass_alpha)
    if method == "vector":
        terms = config.vector_terms
        cfg.update(target_origin_link_names=[t.origin_link for t in terms],
                   target_task_link_names=[t.task_link for t in terms],
                   target_link_human_indices=[[t.origin_landmark for t in terms], [t.task_landmark for t in terms]])
        origin = np.array([t.origin_landmark for t in terms])
        task = np.array([t.task_landmark for t in terms])
    elif method == "dexpilot":
        dp = config.dexpilot
        cfg.update(finger_tip_link_names=list(dp.fingertip_links), wrist_link_name=config.wrist_link,
                   project_dist=dp.project_distance, escape_dist=dp.escape_distance)
        # dex-retargeting's DexPilot pairs: (origin j, task i) for fingers i < j, then wrist -> tip i.
        n = len(dp.fingertip_links)
        points = [LANDMARK_INDEX["wrist"]] + list(dp.fingertip_landmarks)
        origin_idx, task_idx = [], []
        for i in range(1, n):
            for j in range(i + 1, n + 1):
                origin_idx.append(j)
                task_idx.append(i)
        for i in range(1, n + 1):
            origin_idx.append(0)
            task_idx.append(i)
        origin = np.array([points[i] for i in origin_idx])
        task = np.array([points[i] for i in task_idx])
        if not np.array_equal(np.stack([origin, task]), np.stack([origin_idx, task_idx]) * 4):
            cfg["target_link_human_indices"] = np.stack([origin, task]).tolist()
    else:
        raise ValueError(f"dex-retargeting is benchmarked for vector and dexpilot, not {method!r}")
    retargeting = RetargetingConfig.from_dict(cfg).build()
    order = np.array([list(retargeting.joint_names).index(name) for name in joint_names])

    def step(k: int) -> np.ndarray:
        wrist_frame = landmarks[k] @ wrist_rotation[k]  # rows: R^T x
        ref = (wrist_frame[task] - wrist_frame[origin]) @ human_to_robot.T
        return np.asarray(retargeting.retarget(ref), dtype=float)[order]

    def reset() -> None:
        retargeting.reset()
        if retargeting.filter is not None:
            retargeting.filter.reset()

    return _Method(f"dex {method}{suffix}", step, reset)


def make_occlusions(trajectory: HumanTrajectory, seed: int = 0, windows: int = 4, duration_s: float = 0.5,
                    offset_m: float = 0.04, sigma_occluded: float = 0.04, sigma_visible: float = 0.004
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Corrupted copy of the landmarks + the sigmas a tracker would report.

    In ``windows`` windows of ``duration_s`` one fingertip (thumb, index or middle) is
    "occluded": its landmark drifts up to ``offset_m`` off in a random direction, with
    per-frame jitter of ``offset_m / 4`` (a tracker's unstable guess), while its sigma rises
    to ``sigma_occluded`` with the same envelope; every other landmark has ``sigma_visible``.
    """
    rng = np.random.default_rng(seed)
    landmarks = trajectory.landmarks.copy()
    sigma = np.full(landmarks.shape[:2], sigma_visible)
    frames = len(trajectory.times)
    length = max(2, min(int(round(duration_s * trajectory.rate_hz)), frames // (2 * windows)))
    starts = np.linspace(0.1 * frames, max(0.1 * frames, 0.9 * frames - length), windows).astype(int)
    envelope = np.sin(np.linspace(0.0, np.pi, length)) ** 0.3  # fast onset, fast recovery
    for start in starts:
        span = slice(start, min(start + length, frames))
        n = span.stop - span.start
        tip = LANDMARK_INDEX[f"{rng.choice(['thumb', 'index', 'middle'])}_tip"]
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        jitter = rng.normal(0.0, offset_m / 4, size=(n, 3)) * envelope[:n, None]
        landmarks[span, tip] += offset_m * envelope[:n, None] * (trajectory.wrist_rotation[span] @ direction) + jitter
        sigma[span, tip] = sigma_visible + (sigma_occluded - sigma_visible) * envelope[:n]
    return landmarks, sigma


# ------------------------------------------------------------------------------ metrics
def _metrics(q: np.ndarray, times_ms: np.ndarray, trajectory: HumanTrajectory, reference: Retargeter,
             pinch_threshold: float) -> dict:
    kin = reference.kinematics
    errors = []
    for k in range(len(q)):
        target = reference.target_vectors(trajectory.landmarks[k], trajectory.wrist_rotation[k])
        errors.append(np.linalg.norm(reference.robot_vectors(q[k]) - target, axis=1).mean())
    tip_ids = [kin.frame_id(link) for link in _fingertip_links(reference.config)]
    tips = kin.frame_positions_batch(q, tip_ids)  # [T, 1 + fingers, 3]
    human = trajectory.landmarks
    pinch_robot, pinch_human = [], []
    for f, finger in enumerate(PINCH_FINGERS[: len(tip_ids) - 1]):
        human_distance = np.linalg.norm(human[:, LANDMARK_INDEX["thumb_tip"]] - human[:, LANDMARK_INDEX[f"{finger}_tip"]], axis=1)
        mask = human_distance < pinch_threshold
        pinch_robot.append(np.linalg.norm(tips[mask, 0] - tips[mask, f + 1], axis=1))
        pinch_human.append(human_distance[mask])
    pinch_robot = np.concatenate(pinch_robot)
    pinch_human = np.concatenate(pinch_human)
    lower, upper = kin.lower, kin.upper
    violations = int(np.count_nonzero((q < lower - VIOLATION_TOLERANCE) | (q > upper + VIOLATION_TOLERANCE)))
    return dict(
        p50_ms=float(np.percentile(times_ms, 50)), p99_ms=float(np.percentile(times_ms, 99)),
        max_ms=float(times_ms.max()),
        vector_error_mm=float(np.mean(errors) * 1e3),
        pinch_distance_mm=float(pinch_robot.mean() * 1e3) if len(pinch_robot) else float("nan"),
        pinch_frames=int(len(pinch_robot)),
        human_pinch_distance_mm=float(pinch_human.mean() * 1e3) if len(pinch_human) else float("nan"),
        smoothness_rad_s=float(np.abs(np.diff(q, axis=0)).mean() * trajectory.rate_hz),
        peak_speed_rad_s=float(np.abs(np.diff(q, axis=0)).max() * trajectory.rate_hz),
        limit_violations=violations,
    )


def _fingertip_links(config: RetargetConfig) -> list[str]:
    if config.dexpilot is not None:
        return list(config.dexpilot.fingertip_links)
    return [t.task_link for t in config.vector_terms]


def run_retarget_benchmark(config_path: str | Path = DEFAULT_CONFIG, duration_s: float = 10.0,
                           rate_hz: float = 60.0, seed: int = 0, repeats: int = 1,
                           ours: Sequence[str] = ("vector", "position", "dexpilot"),
                           dex: Sequence[str] = ("vector", "dexpilot"), pinch_threshold: float = 0.02,
                           occlusion: bool = True, progress: bool = True, print_table: bool = True) -> dict:
    """Run every method on the same trajectory; returns ``{"methods": {name: metrics}, "ratios": ...}``.

    ``repeats`` > 1 replays the trajectory (state reset) and pools the timings; metrics of
    the joint outputs come from the first pass.  With ``occlusion``, the vector and DexPilot
    methods also run on :func:`make_occlusions` landmarks (rows ``... occluded``; ours once
    with the sigmas and once without), errors measured against the clean targets.
    """
    from tqdm import tqdm

    config = load_retarget_config(config_path)
    trajectory = make_human_trajectory(duration_s, rate_hz, seed, side=config.side)
    reference = Retargeter(config, "vector")
    lm, rot = trajectory.landmarks, trajectory.wrist_rotation
    methods = [_ours(config, m, lm, rot) for m in ours]
    methods += [_dex(config, m, lm, rot, reference.joint_names, reference.human_to_robot) for m in dex]
    if occlusion:
        bad, sigma = make_occlusions(trajectory, seed)
        for m in [m for m in ("vector", "dexpilot") if m in ours]:
            methods.append(_ours(config, m, bad, rot, sigma, " occluded +sigma"))
            methods.append(_ours(config, m, bad, rot, None, " occluded"))
            if m in dex:
                methods.append(_dex(config, m, bad, rot, reference.joint_names, reference.human_to_robot,
                                    " occluded"))
    frames = len(trajectory.times)
    results: dict[str, dict] = {}
    for method in methods:
        outputs = np.zeros((frames, reference.kinematics.nq))
        times, cpu_times = [], []
        for repeat in range(repeats):
            method.reset()
            iterator = range(frames)
            if progress:
                iterator = tqdm(iterator, desc=f"{method.name} ({repeat + 1}/{repeats})", leave=False,
                                file=sys.stderr, mininterval=0.5)
            gc.collect()
            for k in iterator:
                start, cpu_start = time.perf_counter(), time.thread_time()
                q = method.step(k)
                times.append(time.perf_counter() - start)
                cpu_times.append(time.thread_time() - cpu_start)
                if repeat == 0:
                    outputs[k] = q
        results[method.name] = _metrics(outputs, np.array(times) * 1e3, trajectory, reference, pinch_threshold)
        results[method.name]["cpu_p50_ms"] = float(np.percentile(cpu_times, 50) * 1e3)
        results[method.name]["cpu_p99_ms"] = float(np.percentile(cpu_times, 99) * 1e3)
    ratios = {}
    for name in list(results):
        kind = name.split(" ", 1)[1]
        if name.startswith("ours") and f"dex {kind}" in results and "occluded" not in kind:
            a, b = results[name], results[f"dex {kind}"]
            ratios[kind] = {key: (a[key] / b[key] if b[key] else float("nan"))
                            for key in ("p50_ms", "p99_ms", "cpu_p99_ms", "vector_error_mm", "pinch_distance_mm",
                                        "smoothness_rad_s")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = dict(config=str(config_path), frames=frames, rate_hz=rate_hz, seed=seed, repeats=repeats,
               load_average=load, methods=results, ratios=ratios)
    if print_table:
        print(format_benchmark_table(out))
    return out


def format_benchmark_table(result: dict) -> str:
    """Markdown table of :func:`run_retarget_benchmark` results (plus ours/dex ratios)."""
    head = ("| method | p50 ms | p99 ms | cpu p99 ms | vec err mm | pinch mm | smooth rad/s | peak rad/s | viol |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [head]
    for name, m in result["methods"].items():
        rows.append(f"| {name} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['cpu_p99_ms']:.3f} | "
                    f"{m['vector_error_mm']:.2f} | {m['pinch_distance_mm']:.1f} | {m['smoothness_rad_s']:.3f} | "
                    f"{m['peak_speed_rad_s']:.1f} | {m['limit_violations']} |")
    for kind, r in result["ratios"].items():
        rows.append(f"| ratio ours/dex {kind} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_p99_ms']:.2f} | "
                    f"{r['vector_error_mm']:.2f} | {r['pinch_distance_mm']:.2f} | {r['smoothness_rad_s']:.2f} | | |")
    any_method = next(iter(result["methods"].values()))
    rows.append(f"\n{result['frames']} frames at {result['rate_hz']:.0f} Hz (seed {result['seed']}, "
                f"{result['repeats']} pass(es) timed, load average {result['load_average']:.2f}); pinch: "
                f"{any_method['pinch_frames']} frames with human thumb-finger tip distance < 2 cm "
                f"(human mean {any_method['human_pinch_distance_mm']:.1f} mm).")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``avi-ht bench retarget``."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="retargeting YAML (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0, help="trajectory length, s")
    parser.add_argument("--rate", type=float, default=60.0, help="frame rate, Hz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per method")
    parser.add_argument("--no-dex", action="store_true", help="skip dex-retargeting")
    parser.add_argument("--no-occlusion", action="store_true", help="skip the occluded-fingertip rows")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """``avi-ht bench retarget``: prints the comparison table."""
    run_retarget_benchmark(args.config, args.duration, args.rate, args.seed, args.repeats,
                           dex=() if args.no_dex else ("vector", "dexpilot"), occlusion=not args.no_occlusion,
                           progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avi-ht bench retarget", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
