"""``avi-ht``: the one command-line tool for the offline work.

Subcommands register themselves in :data:`COMMANDS` as ``name -> (help,
"module:function")``; a subcommand module exposes ``add_arguments(parser)``
and ``run(args) -> int`` and is imported only when used (so ``avi-ht params``
does not pay for importing torch).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from avi_ht_ros.common.errors import AviHtError

COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("generate synthetic camera+glove sequences as rosbag2 (MCAP)", "avi_ht_ros.sim.cli"),
    "params": ("print every node's parameters (README tables)", "avi_ht_ros.nodes.params_cli"),
    "dataset": ("build a training dataset (crops, IMU windows, ground truth) from rosbag2 recordings",
                "avi_ht_ros.tracker.dataset_cli"),
    "train": ("train AVI-HT or a baseline (single process or torchrun DDP)", "avi_ht_ros.tracker.train_cli"),
    "eval": ("evaluate checkpoints (AVI-HT and baselines) on the held-out benchmark or bags: report + plots",
             "avi_ht_ros.tracker.eval_cli"),
    "pool": ("several `avi-ht eval` results (e.g. fresh seeds) per draw and pooled: MKPE by occlusion bin",
             "avi_ht_ros.tracker.pool"),
    "reliability": ("accuracy under sensor faults: --dead-sensors-sweep (MKPE vs k = 0..N dead IMUs)",
                    "avi_ht_ros.tracker.reliability"),
    "bench": ("benchmarks: bench model (fusion vs vision-only latency), bench retarget (vs dex-retargeting), "
              "bench graph (live node graph latency, rates, CPU)", "avi_ht_ros.tracker.bench_cli"),
    "demo": ("the main job: simulated camera + glove -> live node graph -> robot hand, recorded, with a report",
             "avi_ht_ros.demo"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="avi-ht", description="AVI-HT offline tools")
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (help_text, module_name) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if argv[:1] == [name]:  # import only the chosen subcommand's module
            importlib.import_module(module_name).add_arguments(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][1])
    try:
        return int(module.run(args) or 0)
    except AviHtError as exc:
        print(f"avi-ht {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"avi-ht {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
