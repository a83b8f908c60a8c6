"""``avi-ht eval``: evaluate checkpoints on the held-out benchmark or on recorded bags.

Examples::

    avi-ht eval models/avi_ht.pt models/vision_only.pt models/imu_only.pt --benchmark
    avi-ht eval avi=runs/a/best.pt umetrack=runs/v/best.pt --benchmark config/benchmark.yaml \\
        --seed 2000000 --occlusion heavy --sensitivity noise shift --cache-dir ~/.cache/avi_ht_bench
    avi-ht eval runs/a/best.pt runs/v/best.pt --bags recordings/seq_0 recordings/seq_1 --out eval/real
    avi-ht eval runs/a/checkpoints/epoch_*.pt --validation-of datasets/sim_v1 --no-ekf   # pick a checkpoint

Every checkpoint runs through the live synchronizer and the online tracker on the same frames;
the vision-only model also gets its post-hoc EKF row. The report (``report.md``,
``metrics.json``, PNG figures) goes to ``--out``; docs/EVALUATION.md explains it.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import re
import sys

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.models.config import INFERENCE_BACKENDS

_SIDES = {"right": ("right",), "left": ("left",), "both": ("left", "right")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="[NAME=]CHECKPOINT",
                        help="model checkpoints (AVI-HT, vision-only, IMU-only); NAME defaults to the file stem")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", nargs="?", const="benchmark.yaml", metavar="YAML",
                        help="generate the benchmark of this config on the fly (default config/benchmark.yaml)")
    source.add_argument("--bags", nargs="+", metavar="BAG", help="recorded rosbag2 directories with ground truth")
    source.add_argument("--validation-of", metavar="DATASET",
                        help="the validation recordings of a training dataset (its source bags, only the hands of "
                             "its validation sequences; split as training splits it: --split-seed, "
                             "--validation-fraction): what `avi-ht train --online-validation` measures")
    parser.add_argument("--out", default=None, help="report directory (default eval/<source>-<time>)")
    bench = parser.add_argument_group("benchmark settings (override the config for every sequence)")
    bench.add_argument("--seed", type=int, default=None, help="first seed (default: the config's held-out seed)")
    bench.add_argument("--sequences", type=int, default=None, help="evaluate only the first N sequences")
    bench.add_argument("--occlusion", choices=("low", "medium", "heavy"), default=None, help="occlusion preset")
    bench.add_argument("--duration", type=float, default=None, help="seconds per sequence")
    bench.add_argument("--dead-sensors", nargs="+", default=None, metavar="SITE",
                       help="dead IMUs: site names or indices, optionally SITE@onset_s")
    bench.add_argument("--time-offset", type=float, default=None,
                       help="true camera-glove offset, s (the synchronizer is told it)")
    bench.add_argument("--hand-scale", type=float, default=None, help="fixed hand size (1 = 18.5 cm hand)")
    bench.add_argument("--noise-scale", type=float, default=None, help="IMU error magnitude (x native noise floor)")
    bench.add_argument("--image-scale", type=float, default=None, help="camera resize factor")
    bench.add_argument("--sides", choices=tuple(_SIDES), default=None, help="gloved hands")
    bench.add_argument("--cache-dir", default=None,
                       help="keep rendered sequences here and reuse them (keyed by config, seed, simulator code)")
    bench.add_argument("--jobs", type=int, default=1,
                       help="worker processes rendering sequences ahead of the evaluation (0: render in the "
                            "evaluating process; default 1)")
    split = parser.add_argument_group("dataset validation split (--validation-of; defaults: the training defaults)")
    split.add_argument("--split-seed", type=int, default=0, help="data.split_seed of the training run")
    split.add_argument("--validation-fraction", type=float, default=0.2,
                       help="data.validation_fraction of the training run")
    split.add_argument("--validation-bags", nargs="+", default=(), metavar="BAG",
                       help="data.validation_bags of the training run (names the validation recordings instead)")
    bags = parser.add_argument_group("bag settings")
    bags.add_argument("--glove", default=None, help="glove YAML of the recordings (default: the bag's /sim/config "
                                                    "or config/glove_12imu.yaml)")
    bags.add_argument("--bag-time-offset", type=float, default=None,
                      help="camera-glove offset of the recordings, s (default: /sim/config or 0)")
    sens = parser.add_argument_group("sensitivity (AVI-HT Fig. 6/7)")
    sens.add_argument("--sensitivity", nargs="+", choices=("noise", "shift", "ablation", "all"), default=(),
                      help="extra sweeps: IMU noise scale, camera-glove time shift, per-finger sensor ablation")
    sens.add_argument("--noise-scales", type=float, nargs="+", default=None, help="noise sweep values (x)")
    sens.add_argument("--time-shifts", type=float, nargs="+", default=None, help="time-shift sweep values (s)")
    sens.add_argument("--ablation-groups", nargs="+", default=None,
                      choices=("thumb", "index", "middle", "ring", "pinky", "hand_back"), help="groups to ablate")
    sens.add_argument("--ablation-mode", choices=("drop", "only"), default=None,
                      help="drop: mask the group; only: mask every other sensor")
    run = parser.add_argument_group("run")
    run.add_argument("--reference", default=None, help="vision-only model AVI-HT is compared with (default: first)")
    run.add_argument("--no-ekf", action="store_true", help="skip the post-hoc EKF baseline")
    run.add_argument("--truth-crops", action="store_true",
                     help="also run every vision model with crops centred on the true hand (NAME@truth_crop): "
                          "what the tracker's own crop placement costs")
    run.add_argument("--threads", type=int, default=1, help="CPU threads of the networks (live tracker: 1)")
    run.add_argument("--backend", choices=INFERENCE_BACKENDS, default="torch",
                     help="runtime of the networks: torch (the reference), onnxruntime (the network ~2x faster, the "
                          "nodes' default; each network checked against PyTorch when it is exported), auto")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def _named_checkpoints(items: list[str]) -> list[tuple[str, pathlib.Path]]:
    named: list[tuple[str, pathlib.Path]] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = pathlib.Path(item).stem, item
        if not name:
            raise ConfigError(item, "empty model name before '='")
        named.append((name, pathlib.Path(path)))
    names = [n for n, _ in named]
    for i, (name, path) in enumerate(named):
        if names.count(name) > 1:  # same stem in different runs: qualify with the directory
            named[i] = (f"{path.parent.name}/{name}", path)
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ConfigError("checkpoints", f"duplicate model names {names}; use NAME=PATH")
    return named


_SIMULATED_BAG = re.compile(r"^seq_(\d+)(?:/|$)")


def training_seeds(metadata: dict) -> set[int]:
    """World seeds a checkpoint was trained or validated on, from its metadata.

    ``train_seeds`` (a list), and the sequence ids of the training run's dataset
    (``dataset.train_sequences`` / ``validation_sequences``, ``seq_<seed>/<side>`` for bags
    written by ``avi-ht simulate``).
    """
    seeds = {int(s) for s in metadata.get("train_seeds") or () if isinstance(s, int) and not isinstance(s, bool)}
    dataset = metadata.get("dataset")
    if isinstance(dataset, dict):
        for key in ("train_sequences", "validation_sequences"):
            for sequence in dataset.get(key) or ():
                match = _SIMULATED_BAG.match(str(sequence))
                if match:
                    seeds.add(int(match.group(1)))
    return seeds


def _training_seed_warnings(models, seeds: list[int]) -> list[str]:
    warnings = []
    for model in models:
        overlap = sorted(set(seeds) & training_seeds(model.metadata))
        if overlap:
            warnings.append(f"{model.name} was trained on evaluated seeds {overlap[:10]}"
                            f"{' ...' if len(overlap) > 10 else ''}: these results are not held out")
    return warnings


def run(args: argparse.Namespace) -> int:
    from avi_ht_ros.common.glove_model import GloveModel
    from avi_ht_ros.common.paths import config_path
    from avi_ht_ros.models.checkpoint import load_checkpoint
    from avi_ht_ros.tracker import evaluate as E

    models = []
    for name, path in _named_checkpoints(args.checkpoints):
        loaded = load_checkpoint(path)
        models.append(E.EvalModel(name, loaded.model, str(path), dict(loaded.metadata)))
    options = E.EvalOptions(ekf=not args.no_ekf, reference=args.reference, threads=args.threads,
                            truth_crops=args.truth_crops, backend=args.backend,
                            progress=not args.no_progress)
    sweeps = ("noise", "shift", "ablation") if "all" in args.sensitivity else tuple(dict.fromkeys(args.sensitivity))
    if args.threads < 1 or args.jobs < 0:
        raise ConfigError("--threads/--jobs", "need --threads >= 1 and --jobs >= 0")

    if args.benchmark is not None:
        if not args.benchmark.endswith((".yaml", ".yml")):
            raise ConfigError("--benchmark", f"{args.benchmark!r} is not a YAML file (give the checkpoints before "
                                             "--benchmark, or name the benchmark YAML after it)")
        config = E.load_benchmark_config(args.benchmark)
        overrides = E.WorldOverrides(occlusion=args.occlusion, duration_s=args.duration,
                                     dead_sensors=None if args.dead_sensors is None else tuple(args.dead_sensors),
                                     time_offset_s=args.time_offset, hand_scale=args.hand_scale,
                                     noise_scale=args.noise_scale, image_scale=args.image_scale,
                                     sides=None if args.sides is None else _SIDES[args.sides])
        specs = E.benchmark_sequences(config, args.seed, overrides)
        if args.sequences is not None:
            if args.sequences < 1:
                raise ConfigError("--sequences", "must be >= 1")
            specs = specs[:args.sequences]
        options.pck_max_mm, options.pinch_threshold_m = config.pck_max_mm, config.pinch_threshold_m
        options.noise_scales, options.time_shifts_s = config.noise_scales, config.time_shifts_s
        options.ablation_groups, options.ablation_mode = config.ablation_groups, config.ablation_mode
        seeds = [s.seed for s in specs]
        source = {"benchmark": config.name, "config": config.source, "first_seed": seeds[0], "last_seed": seeds[-1],
                  "sequences": [{"name": s.name, "seed": s.seed, "occlusion": s.occlusion,
                                 "sides": list(s.world.sides)} for s in specs],
                  "overrides": {k: v for k, v in vars(overrides).items() if v is not None},
                  "warnings": _training_seed_warnings(models, seeds)}
        expected = sum(s.world.num_frames * len(s.world.sides) for s in specs)
        sequences = E.prepare_benchmark(specs, args.cache_dir, args.jobs)
        label = f"{config.name}-{seeds[0]}"
    elif args.validation_of is not None:
        from avi_ht_ros.tracker.dataset import load_manifest, split_sequences
        from avi_ht_ros.tracker.train import online_validation_sequences

        manifest = load_manifest(args.validation_of)
        _, validation_ids = split_sequences(manifest, args.validation_fraction, args.split_seed,
                                            tuple(args.validation_bags))
        if not validation_ids:
            raise ConfigError("--validation-of", f"{args.validation_of}: no validation sequence with fraction "
                                                 f"{args.validation_fraction}, split seed {args.split_seed} and "
                                                 f"validation bags {list(args.validation_bags)}")
        loaded_bags = online_validation_sequences(manifest, list(validation_ids))
        source = {"validation_of": str(args.validation_of), "split_seed": args.split_seed,
                  "validation_fraction": args.validation_fraction, "validation_bags": list(args.validation_bags),
                  "sequences": list(validation_ids), "warnings": []}
        label = "validation"
    else:
        glove = None if args.glove is None else GloveModel.from_yaml(config_path(args.glove))
        loaded_bags = [E.load_bag_sequence(path, glove, args.bag_time_offset) for path in args.bags]
        source = {"bags": [str(p) for p in args.bags], "warnings": []}
        label = "bags"
    if args.benchmark is None:  # recordings, loaded whole
        expected = sum(s.num_frames * len(s.hands) for s in loaded_bags)
        sequences = iter(loaded_bags)
    if args.noise_scales is not None:
        options.noise_scales = tuple(args.noise_scales)
    if args.time_shifts is not None:
        options.time_shifts_s = tuple(args.time_shifts)
    if args.ablation_groups is not None:
        options.ablation_groups = tuple(args.ablation_groups)
    if args.ablation_mode is not None:
        options.ablation_mode = args.ablation_mode
    options.sensitivity = sweeps
    if options.sensitivity and "ablation" in options.sensitivity and not any(m.kind == "avi_ht" for m in models):
        raise ConfigError("--sensitivity ablation", "needs an AVI-HT checkpoint")

    out = pathlib.Path(args.out) if args.out else pathlib.Path("eval") / (
        f"{label}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    for warning in source.get("warnings", []):
        print(f"avi-ht eval: warning: {warning}", file=sys.stderr)
    results = E.evaluate(models, sequences, options, expected_frames=expected, source=source)
    data = results.metrics()
    files = E.write_report(results, out, data)
    timing = data["timing"]
    print(E.summary_table(data))
    print(f"\n{timing['frames']} frames, {timing['tracker_steps']} tracker/filter steps in {timing['wall_s']:.1f} s "
          f"({timing['frames_per_s']:.2f} frames/s end to end, {timing['steps_per_s']:.1f} steps/s tracking)")
    print(f"report: {files['report']}")
    print(f"metrics: {files['metrics']}")
    return 0
