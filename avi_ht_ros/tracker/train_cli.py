"""``avi-ht train``: train AVI-HT or a baseline on a dataset (one process, or DDP under torchrun).

::

    avi-ht train --config config/train_avi_ht.yaml --data DATASET --out runs/avi_ht
    avi-ht train --out runs/avi_ht --resume                       # continue from checkpoints/last.pt
    torchrun --nproc-per-node 2 -m avi_ht_ros.cli train --config config/train_avi_ht.yaml \\
        --data DATASET --out runs/avi_ht_ddp                      # DDP (gloo on CPU, nccl on GPU)

Command-line values override the config file (``--epochs`` rescales the learning-rate decay
epochs with it). With ``--resume`` the run's stored ``config.yaml`` is used unless ``--config``
is given (its model, loss, data and seed must match the run's); the run continues to its last
epoch unless ``--max-steps`` is given again (a ``max_steps`` stop of the earlier session does not
carry over). See
:mod:`avi_ht_ros.tracker.train` and docs/TRAINING.md.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="training YAML (e.g. config/train_avi_ht.yaml); with --resume: default the run's own")
    parser.add_argument("--data", default=None, help="dataset directory (overrides data.dataset)")
    parser.add_argument("--out", default=None, help="run directory (default runs/<config name>_seed<seed>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--seed", type=int, default=None, help="overrides run.seed")
    parser.add_argument("--epochs", type=int, default=None,
                        help="overrides training.epochs (learning-rate decay epochs scale with it)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many optimizer steps in total (checkpointed; --resume continues)")
    parser.add_argument("--batch-size", type=int, default=None, help="overrides training.batch_size (global)")
    parser.add_argument("--num-workers", type=int, default=None, help="overrides data.num_workers")
    parser.add_argument("--threads", type=int, default=None,
                        help="overrides run.torch_threads (intra-op CPU threads per process; 1 is fastest on a "
                             "busy CPU)")
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="warm start: copy the parameters of this checkpoint that match by name and shape "
                             "(e.g. an IMU-only run's IMU encoder into AVI-HT); overrides run.init_from")
    parser.add_argument("--init-part", action="append", default=None, metavar="PART=CHECKPOINT",
                        help="after --init-from, the model part PART (vision_encoder, imu_encoder, fusion, head) "
                             "takes all its parameters from CHECKPOINT (e.g. imu_encoder=<IMU-only run>/checkpoints/"
                             "best.pt); repeatable; overrides run.init_parts")
    parser.add_argument("--online-validation", action="store_true", default=None,
                        help="also track the validation recordings through the online tracker after every epoch "
                             "and keep best.pt by that MKPE (sets run.online_validation; docs/TRAINING.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from avi_ht_ros.common.errors import ConfigError
    from avi_ht_ros.tracker.train import RUN_CONFIG, load_train_config, train, with_overrides

    if args.config is None and not args.resume:
        raise ConfigError("--config", "required (e.g. config/train_avi_ht.yaml) unless --resume")
    if args.resume and args.out is None:
        raise ConfigError("--out", "--resume needs the run directory to continue")
    if args.config is not None:
        config = load_train_config(args.config)
    else:
        config = load_train_config(pathlib.Path(args.out) / RUN_CONFIG)
    if args.resume and args.max_steps is None:
        config.run.max_steps = 0  # a stop from the interrupted session does not carry over
    config = with_overrides(config, data=args.data, seed=args.seed, epochs=args.epochs, max_steps=args.max_steps,
                            batch_size=args.batch_size, num_workers=args.num_workers, torch_threads=args.threads,
                            init_from=args.init_from, init_parts=args.init_part,
                            online_validation=args.online_validation)
    out = args.out
    if out is None:
        name = pathlib.Path(args.config).stem if args.config else "run"
        out = str(pathlib.Path("runs") / f"{name}_seed{config.run.seed}")
    result = train(config, out, resume=args.resume, show_progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {result.progress.global_step} steps, {result.progress.epoch} epoch(s) complete, "
              f"best epoch {result.progress.best_epoch} -> {result.run_dir}", file=sys.stderr)
    return 0
