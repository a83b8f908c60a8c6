"""``avi-ht bench <target>``: latency benchmarks, one sub-target per component.

Targets live in :data:`BENCHMARKS` as ``name -> Benchmark(help, add_arguments, run)``; adding
``bench retarget`` or ``bench graph`` is one more entry (its module is imported only when
that target runs). Each ``run(args) -> int`` prints its own table.

``avi-ht bench retarget``: :mod:`avi_ht_ros.retarget.bench` (its arguments and table).

``avi-ht bench graph``: :mod:`avi_ht_ros.graph_bench` (the node processes on a simulated scenario).

``avi-ht bench model``: per-frame latency (p50/p99) of the fusion model and the vision-only
baseline (by default the shipped checkpoints' architectures), timed interleaved in the same process on one thread,
one backend after the other (:func:`avi_ht_ros.models.bench.benchmark_models`), and the fused/vision-only ratio
per backend.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Benchmark:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- bench model -------------------------------------------------------------------------------

def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fusion-config", default="",
                        help="experiment YAML or checkpoint (.pt: its stored architecture) of the fusion model "
                             "(default: the shipped models/avi_ht.pt)")
    parser.add_argument("--vision-config", default="",
                        help="experiment YAML or checkpoint of the vision-only baseline "
                             "(default: the shipped models/vision_only.pt)")
    parser.add_argument("--with-imu-only", action="store_true", help="also time the IMU-only baseline")
    parser.add_argument("--imu-config", default="",
                        help="experiment YAML or checkpoint of the IMU-only model (default: the shipped models/imu_only.pt)")
    parser.add_argument("--iterations", type=int, default=500, help="timed frames per model")
    parser.add_argument("--warmup", type=int, default=50, help="untimed frames per model first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (live tracker: 1)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--backend", choices=("both", "torch", "onnxruntime"), default="both",
                        help="inference backends to time, interleaved (both: PyTorch and ONNX Runtime, "
                             "or PyTorch alone where ONNX Runtime is not installed)")


def architecture_to_time(source: str, shipped_name: str):
    """The :class:`ModelConfig` ``bench model`` builds: an experiment YAML's, a checkpoint's stored
    one (``.pt``), or by default the shipped ``models/<shipped_name>.pt``'s — what the nodes run
    (timing does not depend on the weights, only on the architecture)."""
    from avi_ht_ros.common.paths import share_path
    from avi_ht_ros.models.checkpoint import read_checkpoint, stored_model_config
    from avi_ht_ros.models.config import load_experiment_config

    source = source or str(share_path("models", f"{shipped_name}.pt"))
    if source.endswith(".pt"):
        return stored_model_config(read_checkpoint(source), source)
    return load_experiment_config(source).model


def _run_model(args: argparse.Namespace) -> int:
    from avi_ht_ros.common.errors import ConfigError
    from avi_ht_ros.models.bench import benchmark_models

    if args.iterations < 2 or args.warmup < 0 or args.threads < 1:
        raise ConfigError("bench model", "need --iterations >= 2, --warmup >= 0, --threads >= 1")
    configs = {"avi_ht": architecture_to_time(args.fusion_config, "avi_ht"),
               "vision_only": architecture_to_time(args.vision_config, "vision_only")}
    if args.with_imu_only:
        configs["imu_only"] = architecture_to_time(args.imu_config, "imu_only")
    for name, expected in (("avi_ht", "avi_ht"), ("vision_only", "vision_only"), ("imu_only", "imu_only")):
        if name in configs and configs[name].type != expected:
            raise ConfigError(name, f"config has model.type {configs[name].type!r}, expected {expected!r}")
    from avi_ht_ros.models.bench import timed_name
    from avi_ht_ros.models.onnx_backend import onnxruntime_available

    if args.backend == "both":
        backends = ("torch", "onnxruntime") if onnxruntime_available() else ("torch",)
    else:
        backends = (args.backend,)
    results = benchmark_models(configs, iterations=args.iterations, warmup=args.warmup, num_threads=args.threads,
                               seed=args.seed, print_table=True, backends=backends)
    print()
    for backend in backends:
        fused, vision = results[timed_name("avi_ht", backend)], results[timed_name("vision_only", backend)]
        print(f"fusion / vision-only ({backend}): p50 {fused.p50_ms / vision.p50_ms:.3f}x "
              f"({fused.p50_ms:.3f} / {vision.p50_ms:.3f} ms), p99 {fused.p99_ms / vision.p99_ms:.3f}x "
              f"({fused.p99_ms:.3f} / {vision.p99_ms:.3f} ms)")
    if len(backends) == 2:
        for name in configs:
            eager, onnx = results[name], results[timed_name(name, "onnxruntime")]
            print(f"{name}: ONNX Runtime / PyTorch p50 {onnx.p50_ms / eager.p50_ms:.3f}x, "
                  f"p99 {onnx.p99_ms / eager.p99_ms:.3f}x")
    return 0


# -- bench retarget ----------------------------------------------------------------------------

def _retarget_arguments(parser: argparse.ArgumentParser) -> None:
    from avi_ht_ros.retarget import bench

    bench.add_arguments(parser)


def _run_retarget(args: argparse.Namespace) -> int:
    from avi_ht_ros.retarget import bench

    return bench.run(args)


# -- bench graph -------------------------------------------------------------------------------

def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    from avi_ht_ros import graph_bench

    graph_bench.add_arguments(parser)


def _run_graph(args: argparse.Namespace) -> int:
    from avi_ht_ros import graph_bench

    return graph_bench.run(args)


BENCHMARKS: dict[str, Benchmark] = {
    "model": Benchmark("per-frame latency of the fusion model vs the vision-only baseline (p50/p99, ratio)",
                       _model_arguments, _run_model),
    "retarget": Benchmark("our retargeter vs dex-retargeting (vector, DexPilot) on the same hand and targets: "
                          "time p50/p99, task-vector error, pinch, smoothness, limit violations",
                          _retarget_arguments, _run_retarget),
    "graph": Benchmark("the live node graph on a simulated scenario: latency camera stamp -> pose (p50/p99) and per "
                       "stage, pose rate vs camera rate, dropped frames, CPU and RSS per node",
                       _graph_arguments, _run_graph),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="bench_target", metavar="<target>", required=True)
    for name, bench in BENCHMARKS.items():
        sub = targets.add_parser(name, help=bench.help, description=bench.help)
        bench.add_arguments(sub)
        sub.set_defaults(bench_run=bench.run)


def run(args: argparse.Namespace) -> int:
    return int(args.bench_run(args) or 0)
