"""``avi-ht simulate``: synthetic camera + glove sequences as rosbag2 (MCAP) directories.

Sequence ``i`` uses seed ``K + i`` and goes to ``DIR/seq_<K+i>/`` (a rosbag2 directory with
every topic the live nodes use, see docs/SIMULATION.md). Existing bags are never
overwritten: the command refuses to start if any target exists. ``--jobs N`` simulates N
sequences in parallel (``spawn`` processes); ``--strip PNG`` writes a picture strip of the
first sequence's most occluded phase with occluded landmarks marked (first camera);
``--second-camera [FILE]`` adds a second, synchronized headset camera.
"""
from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import queue
import sys
import time
from typing import Any

from avi_ht_ros.common.config_file import yaml_assignment
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.io.bag import BagError

_SIDE_CHOICES = {"right": ("right",), "left": ("left",), "both": ("left", "right")}
#: ``--second-camera`` without a file: the shipped second headset camera.
SECOND_CAMERA_FILE = "camera_sim_2.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (one rosbag2 directory per sequence)")
    parser.add_argument("--sequences", type=int, default=1, help="number of sequences (default 1)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per sequence (default: config)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sequence; sequence i uses seed+i")
    parser.add_argument("--config", default=None, help="world YAML (default config/sim_world.yaml)")
    parser.add_argument("--occlusion", choices=("low", "medium", "heavy"), default=None,
                        help="occluder preset (default: config)")
    parser.add_argument("--noise-scale", type=float, default=None, help="IMU error magnitude factor (default: config)")
    parser.add_argument("--time-offset", type=float, default=None,
                        help="true camera-glove offset s, t_camera = t_glove + offset (default: config)")
    parser.add_argument("--dead-sensors", nargs="+", default=None, metavar="SITE",
                        help="dead IMUs: site names or indices, optionally SITE@onset_s")
    parser.add_argument("--sides", choices=tuple(_SIDE_CHOICES), default=None, help="gloved hands (default: config)")
    parser.add_argument("--image-scale", type=float, default=None, help="camera resize factor (default: config)")
    parser.add_argument("--second-camera", nargs="?", const=SECOND_CAMERA_FILE, default=None, metavar="FILE",
                        help="also render a second headset camera (/head_camera_2/*) from this calibration + "
                             f"mount YAML (config/ name or path; FILE omitted: {SECOND_CAMERA_FILE})")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="world_set",
                        help="any world field (docs/SIMULATION.md), value in YAML, e.g. "
                             "--set glove_mount_error_deg=0 --set glove_mount_calibration=false; repeatable, "
                             "applied after the other options")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    parser.add_argument("--jobs", type=int, default=1, help="sequences simulated in parallel (processes)")
    parser.add_argument("--strip", default=None, metavar="PNG",
                        help="write a picture strip of the first sequence's most occluded phase")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _world_config(args: argparse.Namespace):
    from avi_ht_ros.sim.world import load_world_config, world_with_changes

    config = load_world_config(args.config)
    if args.occlusion is not None:
        config = config.with_occlusion(args.occlusion)
    overrides: dict[str, Any] = {}
    if args.duration is not None:
        overrides["duration_s"] = float(args.duration)
    if args.noise_scale is not None:
        overrides["noise_scale"] = float(args.noise_scale)
    if args.time_offset is not None:
        overrides["time_offset_s"] = float(args.time_offset)
    if args.dead_sensors is not None:
        overrides["dead_sensors"] = tuple(args.dead_sensors)
    if args.sides is not None:
        overrides["sides"] = _SIDE_CHOICES[args.sides]
    if args.image_scale is not None:
        overrides["image_scale"] = float(args.image_scale)
    if args.second_camera is not None:
        overrides["second_camera_config"] = str(args.second_camera)
    config = config.replace(**overrides) if overrides else config
    return world_with_changes(config, _field_values(args.world_set), "--set") if args.world_set else config


def _field_values(assignments: list[str]) -> dict[str, Any]:
    """``["field=value", ...]`` -> ``{field: YAML-parsed value}`` (a later assignment wins)."""
    return dict(yaml_assignment(assignment, "--set", "FIELD=VALUE") for assignment in assignments)


# -- worker (runs in a spawned process or in-process) ----------------------------------------
_PROGRESS: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress_queue


def _simulate_one(config, seed: int, path: str, storage: str, strip: str | None) -> dict[str, Any]:
    """Simulate, write, optionally strip; errors come back as text (ConfigError does not pickle)."""
    from avi_ht_ros.sim.world import SequenceSimulator, write_occlusion_strip

    pending = [0]

    def progress(count: int) -> None:
        pending[0] += count
        if _PROGRESS is not None and pending[0] >= 10:
            _PROGRESS.put(pending[0])
            pending[0] = 0

    try:
        start = time.perf_counter()
        simulator = SequenceSimulator(config, seed)
        sequence = simulator.write_bag(path, storage=storage, progress=progress)
        if _PROGRESS is not None and pending[0]:
            _PROGRESS.put(pending[0])
        summary = sequence.summary()
        summary["path"] = path
        summary["seconds"] = time.perf_counter() - start
        if strip:
            summary["strip_frames"] = write_occlusion_strip(simulator, sequence, strip)
        return summary
    except AviHtError as exc:
        return {"error": f"{path}: {exc}"}


def _directory_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(args: argparse.Namespace) -> int:
    if args.sequences < 1:
        raise ConfigError("--sequences", f"must be >= 1, got {args.sequences}")
    if args.jobs < 1:
        raise ConfigError("--jobs", f"must be >= 1, got {args.jobs}")
    if args.seed < 0:
        raise ConfigError("--seed", f"must be >= 0, got {args.seed}")
    config = _world_config(args)
    # Plan the first sequence here: bad configs (unknown sensor, missing file) fail before any work.
    from avi_ht_ros.sim.world import SequenceSimulator

    SequenceSimulator(config.replace(duration_s=min(config.duration_s, 1.0)), args.seed)
    out = pathlib.Path(args.out)
    seeds = [args.seed + i for i in range(args.sequences)]
    paths = [out / f"seq_{seed}" for seed in seeds]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise BagError(f"refusing to overwrite existing bag(s): {', '.join(existing)}")
    out.mkdir(parents=True, exist_ok=True)
    strip_path = str(pathlib.Path(args.strip)) if args.strip else None
    if strip_path:
        import cv2

        if not cv2.haveImageWriter(strip_path):
            raise ConfigError("--strip", f"{strip_path}: not a writable image format (use .png)")
    jobs = [(config, seed, str(path), args.storage, strip_path if i == 0 else None)
            for i, (seed, path) in enumerate(zip(seeds, paths))]
    total_frames = config.num_frames * len(jobs)

    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(total=total_frames, unit="frame", desc="simulate", disable=args.no_progress, file=sys.stderr)
    results: list[dict[str, Any]] = []
    workers = min(args.jobs, len(jobs))
    if workers == 1:
        class _Direct:
            @staticmethod
            def put(count: int) -> None:
                bar.update(count)

        _init_worker(_Direct())
        try:
            results = [_simulate_one(*job) for job in jobs]
        finally:
            _init_worker(None)
    else:
        context = multiprocessing.get_context("spawn")
        progress_queue = context.Queue()
        with context.Pool(workers, initializer=_init_worker, initargs=(progress_queue,)) as pool:
            pending = [pool.apply_async(_simulate_one, job) for job in jobs]
            while not all(p.ready() for p in pending):
                try:
                    bar.update(progress_queue.get(timeout=0.2))
                except queue.Empty:
                    pass
            results = [p.get() for p in pending]
            while True:
                try:
                    bar.update(progress_queue.get_nowait())
                except queue.Empty:
                    break
    bar.close()
    elapsed = time.perf_counter() - start

    errors = [r["error"] for r in results if "error" in r]
    done = [r for r in results if "error" not in r]
    frames = sum(r["frames"] for r in done)
    size = sum(_directory_bytes(pathlib.Path(r["path"])) for r in done)
    for r in done:
        occlusion = ", ".join(
            f"{key.split('_')[0]} occlusion {value:.2f}"
            + (f" (camera 2: {r[key + '_2']:.2f})" if key + "_2" in r else "")
            for key, value in r.items() if key.endswith("_mean_occlusion"))
        print(f"{r['path']}: seed {r['seed']}, {r['frames']} frames, {r['occluder_phases']} occluder phases, "
              f"{occlusion}, {r['seconds']:.1f} s")
    if strip_path and done and "strip_frames" in done[0]:
        print(f"strip: {strip_path} (frames {done[0]['strip_frames']})")
    print(f"{len(done)}/{len(jobs)} sequences, {frames} frames in {elapsed:.1f} s "
          f"({frames / max(elapsed, 1e-9):.1f} frames/s, {workers} job{'s' if workers > 1 else ''}), "
          f"{size / 1e6:.1f} MB in {out}")
    for error in errors:
        print(f"avi-ht simulate: error: {error}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":  # python -m avi_ht_ros.sim.cli ...
    parser = argparse.ArgumentParser(prog="avi-ht simulate")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
