"""``avi-ht dataset``: build a training/evaluation dataset from rosbag2 recordings.

::

    avi-ht dataset --bags data/sim --out data/datasets/sim_v1 [--side both] [--seed 0]

``--bags`` takes rosbag2 directories or directories containing them (searched recursively),
simulated (``avi-ht simulate``) or recorded from the live system. Every frame that becomes a
sample needs a ground-truth message (``/<side>/hand_ground_truth``): recorded bags without
ground truth are skipped with the reason. See :mod:`avi_ht_ros.tracker.dataset` and
docs/TRAINING.md.
"""
from __future__ import annotations

import argparse
import dataclasses

from avi_ht_ros.common.errors import ConfigError


def _time_offset(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'auto' or seconds, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from avi_ht_ros.tracker.dataset import CropJitterConfig
    jitter_defaults = CropJitterConfig()
    parser.add_argument("--bags", nargs="+", required=True, metavar="DIR_OR_BAG",
                        help="rosbag2 directories, or directories searched recursively for them")
    parser.add_argument("--out", required=True, help="dataset directory to create (never overwritten)")
    parser.add_argument("--side", choices=("right", "left", "both"), default="both",
                        help="hands to build (default both; a bag without a hand's glove skips it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop jitter (default 0)")
    parser.add_argument("--time-offset", type=_time_offset, default="auto", metavar="auto|SECONDS",
                        help="camera-glove offset t_camera = t_glove + offset; 'auto' (default): the simulator's "
                             "true offset, else the live system's last applied offset in the bag, else 0")
    parser.add_argument("--glove-config", default="glove_12imu.yaml", help="glove YAML (config/ name or path)")
    parser.add_argument("--feature-set", default="gravity+finger_gyro",
                        help="IMU feature rows (must match the model's imu_encoder.feature_set)")
    parser.add_argument("--crop-size", type=int, default=None, help="crop side in pixels (default 96, tracker's)")
    parser.add_argument("--crop-radius", type=float, default=None,
                        help="crop sphere radius at hand scale 1, m (default 0.12, tracker's)")
    parser.add_argument("--center-noise", type=float, default=None,
                        help=f"tracking-crop centre noise sigma per axis, m (default {jitter_defaults.center_noise_m})")
    parser.add_argument("--radius-factor-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="tracking-crop radius factor range (default %g %g)" % jitter_defaults.radius_factor_range)
    parser.add_argument("--search-probability", type=float, default=None,
                        help=f"share of wide search crops (default {jitter_defaults.search_probability})")
    parser.add_argument("--window-length", type=int, default=None, help="IMU samples per window (default 14)")
    parser.add_argument("--jobs", type=int, default=1, help="bags processed in parallel (processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The :class:`~avi_ht_ros.tracker.dataset.DatasetBuildConfig` the arguments describe."""
    from avi_ht_ros.tracker.dataset import CropJitterConfig, DatasetBuildConfig, sides_from_choice
    from avi_ht_ros.tracker.preprocess import CropConfig
    from avi_ht_ros.tracker.sync import SyncConfig

    crop_changes = {k: v for k, v in (("size", args.crop_size), ("radius_m", args.crop_radius)) if v is not None}
    jitter_changes = {k: v for k, v in (("center_noise_m", args.center_noise),
                                        ("radius_factor_range", tuple(args.radius_factor_range)
                                         if args.radius_factor_range else None),
                                        ("search_probability", args.search_probability)) if v is not None}
    sync = SyncConfig() if args.window_length is None else SyncConfig(window_length=args.window_length)
    return DatasetBuildConfig(glove_config=args.glove_config, feature_set=args.feature_set,
                              sides=sides_from_choice(args.side), time_offset=args.time_offset, seed=args.seed,
                              crop=dataclasses.replace(CropConfig(), **crop_changes),
                              jitter=dataclasses.replace(CropJitterConfig(), **jitter_changes), sync=sync)


def run(args: argparse.Namespace) -> int:
    from avi_ht_ros.tracker.dataset import build_dataset

    if args.jobs < 1:
        raise ConfigError("--jobs", f"must be >= 1, got {args.jobs}")
    manifest = build_dataset(args.bags, args.out, config_from_args(args), jobs=args.jobs,
                             show_progress=not args.no_progress)
    return 0 if manifest["counts"]["frames"] else 1
