"""``avi-ht reliability``: accuracy of a checkpoint under sensor faults.

``--dead-sensors-sweep`` evaluates an IMU-using checkpoint with k = 0 … N of the glove's
IMUs dead (status DEAD, values zero: what the glove driver publishes for an IMU that stopped
answering) and prints MKPE vs k. For 0 < k < N, ``--subsets`` random sets of k IMUs are drawn
(deterministic per ``--seed``) and the figures averaged over them. Each run is the
evaluation's own path (:func:`avi_ht_ros.tracker.evaluate.evaluate`: live synchronizer and
online tracker on every frame), on the held-out benchmark or on recorded bags::

    avi-ht reliability models/avi_ht.pt --benchmark --dead-sensors-sweep --out eval/dead_sensors.json
    avi-ht reliability runs/a/best.pt --bags recordings/seq_0 --dead-sensors-sweep --ks 0 3 6 12

``eval --sensitivity ablation`` masks whole fingers; this sweeps the number of dead IMUs
(docs/RELIABILITY.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
from typing import Sequence

import numpy as np

from avi_ht_ros.common.errors import ConfigError

STATE_COLUMNS = ("ok", "degraded", "vision_only", "imu_only", "lost")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model checkpoint using the glove (AVI-HT or IMU-only)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", nargs="?", const="benchmark.yaml", metavar="YAML",
                        help="generate the benchmark of this config (default config/benchmark.yaml)")
    source.add_argument("--bags", nargs="+", metavar="BAG", help="recorded rosbag2 directories with ground truth")
    parser.add_argument("--dead-sensors-sweep", action="store_true",
                        help="evaluate with k = 0..N dead IMUs and print MKPE vs k")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="dead-IMU counts (default 0..N)")
    parser.add_argument("--subsets", type=int, default=3, help="random IMU sets per k for 0 < k < N (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the IMU sets (default 0)")
    bench = parser.add_argument_group("benchmark settings")
    bench.add_argument("--benchmark-seed", type=int, default=None, help="first sequence seed (default: held out)")
    bench.add_argument("--sequences", type=int, default=None, help="evaluate only the first N sequences")
    bench.add_argument("--duration", type=float, default=None, help="seconds per sequence")
    bench.add_argument("--image-scale", type=float, default=None, help="camera resize factor")
    bench.add_argument("--cache-dir", default=None, help="keep rendered sequences here and reuse them")
    bench.add_argument("--jobs", type=int, default=0, help="worker processes rendering sequences (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (live tracker: 1)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")


def dead_sensor_sets(num_sensors: int, ks: Sequence[int], subsets: int, seed: int) -> dict[int, list[tuple[int, ...]]]:
    """The IMU sets each k is evaluated with: all of them for k = N, none for k = 0, else
    ``subsets`` distinct random sets (fewer if there are not that many)."""
    rng = np.random.default_rng(seed)
    sets: dict[int, list[tuple[int, ...]]] = {}
    for k in ks:
        if not 0 <= k <= num_sensors:
            raise ConfigError("--ks", f"{k} outside 0..{num_sensors} (the glove has {num_sensors} IMUs)")
        wanted = min(subsets, math.comb(num_sensors, k))
        chosen: list[tuple[int, ...]] = []
        while len(chosen) < wanted:
            draw = tuple(sorted(int(i) for i in rng.choice(num_sensors, k, replace=False)))
            if draw not in chosen:
                chosen.append(draw)
        sets[k] = chosen
    return sets


def _with_dead_sensors(sequence, sensors: tuple[int, ...]):
    hands = {side: dataclasses.replace(hand, glove=hand.glove.masked(sensors)) for side, hand in sequence.hands.items()}
    return dataclasses.replace(sequence, hands=hands)


def dead_sensor_sweep(model, sequences: Sequence, ks: Sequence[int] | None = None, subsets: int = 3, seed: int = 0,
                      options=None) -> list[dict]:
    """MKPE (and MKPE.T, mean sigma, tracking-state shares) of ``model`` (an
    :class:`~avi_ht_ros.tracker.evaluate.EvalModel`) vs the number of dead IMUs, one row per k."""
    from avi_ht_ros.tracker import evaluate as E

    if not model.uses_imu:
        raise ConfigError(model.source or model.name, f"a {model.kind} model does not use the glove: nothing to sweep")
    if not sequences:
        raise ConfigError("sequences", "nothing to evaluate")
    num_sensors = sequences[0].glove_model.num_sensors
    ks = list(range(num_sensors + 1)) if ks is None else list(ks)
    options = options or E.EvalOptions(ekf=False, progress=False)
    rows = []
    for k, sets in dead_sensor_sets(num_sensors, ks, subsets, seed).items():
        runs = []
        for sensors in sets:
            results = E.evaluate([model], [_with_dead_sensors(s, sensors) for s in sequences], options)
            data = results.metrics()
            overall = data["overall"][model.name]
            predictions = [t.predictions[(E.NOMINAL, model.name)] for t in results.tracks]
            sigma = np.concatenate([p.sigma[p.processed] for p in predictions])
            runs.append({"dead_sensors": list(sensors), "frames": int(overall["frames"]),
                         "mkpe_mm": float(overall["mkpe_mm"]), "mkpe_t_mm": float(overall["mkpe_t_mm"]),
                         "sigma_mm": float(np.mean(sigma) * 1e3) if sigma.size else float("nan"),
                         "tracking_states": {s: float(data["tracking_states"][model.name].get(s, 0.0))
                                             for s in STATE_COLUMNS}})
        rows.append({"k": k, "runs": runs, "frames": int(np.mean([r["frames"] for r in runs])),
                     **{key: float(np.mean([r[key] for r in runs])) for key in ("mkpe_mm", "mkpe_t_mm", "sigma_mm")},
                     "tracking_states": {s: float(np.mean([r["tracking_states"][s] for r in runs]))
                                         for s in STATE_COLUMNS}})
    return rows


def format_table(rows: list[dict], title: str) -> str:
    header = ["k dead", "sets", "frames", "MKPE mm", "MKPE.T mm", "sigma mm", *STATE_COLUMNS]
    lines = [title, "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        states = [f"{row['tracking_states'][s]:.2f}" for s in STATE_COLUMNS]
        lines.append("| " + " | ".join([str(row["k"]), str(len(row["runs"])), str(row["frames"]),
                                        f"{row['mkpe_mm']:.2f}", f"{row['mkpe_t_mm']:.2f}", f"{row['sigma_mm']:.2f}",
                                        *states]) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from avi_ht_ros.models.checkpoint import load_checkpoint
    from avi_ht_ros.tracker import evaluate as E

    if not args.dead_sensors_sweep:
        raise ConfigError("avi-ht reliability", "choose a sweep: --dead-sensors-sweep")
    if args.subsets < 1 or args.threads < 1 or args.jobs < 0:
        raise ConfigError("--subsets/--threads/--jobs", "need --subsets >= 1, --threads >= 1, --jobs >= 0")
    loaded = load_checkpoint(args.checkpoint)
    model = E.EvalModel(pathlib.Path(args.checkpoint).stem, loaded.model, str(args.checkpoint), dict(loaded.metadata))
    if not model.uses_imu:  # before rendering anything
        raise ConfigError(str(args.checkpoint), f"a {model.kind} model does not use the glove: nothing to sweep")
    if args.benchmark is not None:
        config = E.load_benchmark_config(args.benchmark)
        overrides = E.WorldOverrides(duration_s=args.duration, image_scale=args.image_scale)
        specs = E.benchmark_sequences(config, args.benchmark_seed, overrides)
        if args.sequences is not None:
            if args.sequences < 1:
                raise ConfigError("--sequences", "must be >= 1")
            specs = specs[:args.sequences]
        sequences = list(E.prepare_benchmark(specs, args.cache_dir, args.jobs))
        source = f"benchmark {config.name}, seeds {specs[0].seed}..{specs[-1].seed}"
    else:
        sequences = [E.load_bag_sequence(path) for path in args.bags]
        source = f"bags {', '.join(str(p) for p in args.bags)}"
    options = E.EvalOptions(ekf=False, progress=False, threads=args.threads)
    rows = dead_sensor_sweep(model, sequences, args.ks, args.subsets, args.seed, options)
    print(format_table(rows, f"MKPE vs dead IMUs: {model.name} ({model.kind}, {args.checkpoint}) on {source}; "
                             f"{args.subsets} random IMU set(s) per k, seed {args.seed}"))
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "model": model.kind, "source": source,
                                   "subsets": args.subsets, "seed": args.seed, "rows": rows}, indent=2))
        print(f"figures: {out}")
    return 0
