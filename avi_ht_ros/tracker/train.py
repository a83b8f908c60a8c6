"""Training of AVI-HT and its baselines on a dataset built by :mod:`avi_ht_ros.tracker.dataset`.

One command trains every model type (``model.type: avi_ht | vision_only | imu_only``)::

    avi-ht train --config config/train_avi_ht.yaml --data DATASET --out RUN_DIR
    torchrun --nproc-per-node 2 -m avi_ht_ros.cli train --config ... --out RUN_DIR   # DDP

Configuration (:class:`TrainConfig`, one YAML): ``base`` names an experiment file
(``config/model_<type>.yaml``: sections ``model``, ``loss``, ``training`` of
:class:`~avi_ht_ros.models.config.ExperimentConfig`); the training YAML's own ``model`` /
``loss`` / ``training`` sections override keys of it, and ``data`` (:class:`DataConfig`) and
``run`` (:class:`RunConfig`) are training-only. Unknown keys are errors naming the file and key.

What a run does
---------------
* **Seeds**: ``run.seed`` seeds Python, NumPy and torch before the model is built (every rank
  builds the same initial weights); the sampler shuffles with ``seed + epoch``; the data
  augmentation draws from ``(seed, epoch, item)``; the models' sensor-dropout generators are
  re-seeded from ``(seed, sensor_dropout.seed, rank)``. The same seed, data and world size
  give the same weights (CPU, same thread count).
* **Optimiser** (paper §5): Adam, lr 7.89e-4, weight decay 1e-6, β = (0.9, 0.999), ε 1e-8;
  ``MultiStepLR`` ×0.1 at epoch 30 of 40; batch 48 *global* (split evenly over the ranks, so
  the effective batch does not depend on the number of processes; batch-norm statistics are
  per process). Clips of
  ``training.clip_length`` frames, the ConvGRU state carried through each clip.
* **Validation** after every epoch on held-out *recordings* (:func:`~avi_ht_ros.tracker.dataset.
  split_sequences`), non-overlapping clips of ``data.validation_clip_length`` frames, no
  augmentation: loss terms, MKPE, MKPE.T (wrist-aligned: the predicted hand placed with the
  ground-truth wrist pose), fingertip F.MKPE / F.MKPE.T, joint-angle MAE. ``best.pt`` is kept by
  validation MKPE — by MKPE.T for root-relative models (IMU-only), which have no wrist pose.
* **Run directory**::

      config.yaml                resolved configuration (base merged, overrides applied)
      checkpoints/last.pt        model (models/checkpoint.py, torch.load(weights_only=True))
      checkpoints/last_state.pt  optimizer, scheduler, RNG states, progress (weights_only too)
      checkpoints/epoch_NNNN.pt  after every epoch (run.keep_epoch_checkpoints)
      checkpoints/best.pt        best validation metric so far
      metrics.csv / metrics.json per-epoch training and validation metrics
      steps.csv                  training loss every run.log_every_steps steps
      loss_curve.png             training/validation loss and validation MKPE

  Only rank 0 writes. A run directory with checkpoints is never overwritten: pass
  ``--resume`` to continue it (from ``last.pt``; mid-epoch positions included, so a run
  stopped by ``run.max_steps`` continues with exactly the batches it would have seen).
* **DDP**: started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), gloo on CPU and
  nccl on GPU; each rank reads a disjoint ``DistributedSampler`` share; validation is
  sharded over the ranks and reduced. Without torchrun the same code runs with world size 1.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import pathlib
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from avi_ht_ros.common.config_file import load_yaml_mapping, split_assignment
from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.models.checkpoint import read_checkpoint, save_checkpoint
from avi_ht_ros.models.config import ExperimentConfig, config_to_dict, dataclass_from_dict
from avi_ht_ros.models.factory import build_model, load_glove
from avi_ht_ros.models.imu_encoder import SensorDropout
from avi_ht_ros.models.interface import HandPoseModel, ModelInputs, ModelOutputs
from avi_ht_ros.models.losses import PoseTargets, compute_losses
from avi_ht_ros.tracker.dataset import (AugmentationConfig, ClipBatch, HandClipDataset, collate_clips, load_manifest,
                                        split_sequences)
from avi_ht_ros.tracker.metrics import FINGERTIPS, joint_angle_errors_deg, keypoint_errors_mm, wrist_aligned_errors_mm

TRAINING_STATE_FORMAT = "avi_ht_ros.training_state"
TRAINING_STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
LAST_STATE = "last_state.pt"
BEST_CHECKPOINT = "best.pt"
RUN_CONFIG = "config.yaml"



class TrainingError(AviHtError):
    """A run cannot start or continue (message names the run directory or file)."""


# ======================================================================================
# Configuration
# ======================================================================================
@dataclass
class DataConfig:
    """Which data, how it is split and augmented."""

    dataset: str = ""
    """Dataset directory (``avi-ht dataset --out``); ``--data`` overrides it."""
    validation_fraction: float = 0.2
    """Share of the recordings (bags) held out for validation (at least one when there are two)."""
    validation_bags: tuple[str, ...] = ()
    """Explicit validation recordings (bag names); overrides ``validation_fraction``."""
    split_seed: int = 0
    """Seed of the recording split (independent of ``run.seed``, so seeds compare on the same split)."""
    validation_clip_length: int = 16
    """Frames per validation clip (recurrent state carried through it, reset between clips)."""
    max_frame_gap_s: float = 0.05
    """Clips never span a gap in the frame stream longer than this."""
    num_workers: int = 0
    """DataLoader worker processes per rank (0: load in the training process)."""
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def validate(self, where: str) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"{where}.validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        if self.validation_clip_length < 1:
            raise ConfigError(f"{where}.validation_clip_length", f"must be >= 1, got {self.validation_clip_length}")
        if not (math.isfinite(self.max_frame_gap_s) and self.max_frame_gap_s > 0):
            raise ConfigError(f"{where}.max_frame_gap_s", f"must be > 0, got {self.max_frame_gap_s}")
        if self.num_workers < 0:
            raise ConfigError(f"{where}.num_workers", f"must be >= 0, got {self.num_workers}")
        self.augmentation.validate(f"{where}.augmentation")


@dataclass
class RunConfig:
    """Seeds, budget limits, logging and checkpointing."""

    seed: int = 0
    max_steps: int = 0
    """Stop after this many optimizer steps in total (0: run every epoch). The stop is
    checkpointed mid-epoch and ``--resume`` continues from it."""
    log_every_steps: int = 10
    """Training loss rows in ``steps.csv`` (and the progress bar) every this many steps."""
    keep_epoch_checkpoints: bool = True
    gradient_clip_norm: float = 0.0
    """Clip the global gradient norm to this value (0: off; the paper does not clip)."""
    torch_threads: int = 0
    """Intra-op CPU threads per process (0: torch's default, i.e. ``OMP_NUM_THREADS`` or every core;
    torchrun sets 1 per process). Small models on a busy CPU train faster with 1."""
    init_from: str = ""
    """Warm start: a checkpoint (any model type) whose parameters with the same name and shape
    initialise this model before training, e.g. the IMU encoder and sensor attention of an
    IMU-only run for AVI-HT (:func:`warm_start`). '' = random initialisation."""
    init_parts: tuple[str, ...] = ()
    """``PART=CHECKPOINT`` entries applied after ``init_from``: the model part PART
    (``vision_encoder``, ``imu_encoder``, ``fusion``, ``head``) takes every one of its parameters from
    CHECKPOINT — each must be there with the same name and shape (:func:`init_part`), e.g.
    ``imu_encoder=runs/imu_only/checkpoints/best.pt`` to start AVI-HT's glove side from the
    IMU-only model adapted to the worn glove while the rest comes from ``init_from``."""
    online_validation: bool = False
    """After every epoch also run the validation recordings (the dataset's source bags) through the
    online tracker exactly as ``avi-ht eval`` does — live synchronizer, crops following the model's
    own previous estimate — log ``val_online_*`` metrics and keep ``best.pt`` by the online MKPE
    (MKPE.T for root-relative models). Validation on the dataset's jittered crops can rank
    checkpoints differently from the tracker (docs/TRAINING.md). Costs the validation recordings'
    images in memory (~0.3 MB per 640x480 frame) and tracking them once per epoch."""

    def validate(self, where: str) -> None:
        if self.seed < 0:
            raise ConfigError(f"{where}.seed", f"must be >= 0, got {self.seed}")
        if self.max_steps < 0:
            raise ConfigError(f"{where}.max_steps", f"must be >= 0, got {self.max_steps}")
        if self.log_every_steps < 1:
            raise ConfigError(f"{where}.log_every_steps", f"must be >= 1, got {self.log_every_steps}")
        if not (math.isfinite(self.gradient_clip_norm) and self.gradient_clip_norm >= 0):
            raise ConfigError(f"{where}.gradient_clip_norm", f"must be >= 0, got {self.gradient_clip_norm}")
        if self.torch_threads < 0:
            raise ConfigError(f"{where}.torch_threads", f"must be >= 0, got {self.torch_threads}")
        if self.init_from and not pathlib.Path(self.init_from).is_file():
            raise ConfigError(f"{where}.init_from", f"no such checkpoint file: {self.init_from}")
        parts = [part_and_checkpoint(entry, f"{where}.init_parts[{i}]") for i, entry in enumerate(self.init_parts)]
        if len({part for part, _ in parts}) != len(parts):
            raise ConfigError(f"{where}.init_parts", f"one checkpoint per part, got {list(self.init_parts)}")


@dataclass
class TrainConfig:
    """A training run: the experiment (model, loss, optimiser) plus data and run settings."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    base: str = ""
    """The experiment file the config started from (informational)."""

    def validate(self, where: str = "") -> None:
        self.experiment.validate(where)
        self.data.validate(f"{where}data")
        self.run.validate(f"{where}run")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the YAML layout (``model``/``loss``/``training``/``data``/``run``)."""
        experiment = config_to_dict(self.experiment)
        return {"base": self.base, **experiment, "data": config_to_dict(self.data), "run": config_to_dict(self.run)}


_EXPERIMENT_SECTIONS = ("model", "loss", "training")
_TRAIN_SECTIONS = ("base", *_EXPERIMENT_SECTIONS, "data", "run")


def _deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def train_config_from_dict(data: dict, where: str = "train config",
                           directory: str | os.PathLike | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from the YAML layout (``base`` resolved, overrides merged).

    A relative ``base`` names a file beside the training YAML (``directory``) when one exists
    there, else a shipped config (``config/<name>``): a copied set of configs uses its own files.
    """
    prefix = f"{where}: "
    unknown = sorted(set(data) - set(_TRAIN_SECTIONS))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown key; known keys: {sorted(_TRAIN_SECTIONS)}")
    base_name = data.get("base") or ""
    if not isinstance(base_name, str):
        raise ConfigError(f"{prefix}base", f"must name an experiment file, got {base_name!r}")
    experiment_dict: dict = {}
    if base_name:
        sibling = pathlib.Path(directory) / base_name if directory is not None else None
        base_path = sibling if sibling is not None and sibling.is_file() else config_path(base_name)
        experiment_dict = load_yaml_mapping(base_path, str(base_name))
        unknown = sorted(set(experiment_dict) - set(_EXPERIMENT_SECTIONS))
        if unknown:
            raise ConfigError(f"{base_name}: {unknown[0]}", f"unknown key; known keys: {list(_EXPERIMENT_SECTIONS)}")
    experiment_dict = _deep_merge(experiment_dict, {k: data[k] for k in _EXPERIMENT_SECTIONS if k in data})
    config = TrainConfig(
        experiment=dataclass_from_dict(ExperimentConfig, experiment_dict, prefix),
        data=dataclass_from_dict(DataConfig, data.get("data"), f"{prefix}data"),
        run=dataclass_from_dict(RunConfig, data.get("run"), f"{prefix}run"),
        base=base_name,
    )
    config.validate(prefix)
    return config


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read a training YAML (a bare name is looked up under the package's ``config/``)."""
    resolved = config_path(str(path))
    return train_config_from_dict(load_yaml_mapping(resolved, str(path)), str(path), resolved.parent)


def with_overrides(config: TrainConfig, *, data: str | None = None, seed: int | None = None,
                   epochs: int | None = None, max_steps: int | None = None, batch_size: int | None = None,
                   num_workers: int | None = None, torch_threads: int | None = None,
                   init_from: str | None = None, init_parts: Sequence[str] | None = None,
                   online_validation: bool | None = None) -> TrainConfig:
    """A copy with command-line overrides applied.

    ``epochs`` rescales ``training.lr_decay_epochs`` proportionally (30 of 40 → 6 of 8), so a
    shortened run keeps the paper's schedule shape.
    """
    config = copy.deepcopy(config)
    if data is not None:
        config.data.dataset = str(data)
    if seed is not None:
        config.run.seed = int(seed)
    if max_steps is not None:
        config.run.max_steps = int(max_steps)
    if num_workers is not None:
        config.data.num_workers = int(num_workers)
    if torch_threads is not None:
        config.run.torch_threads = int(torch_threads)
    if init_from is not None:
        config.run.init_from = str(init_from)
    if init_parts is not None:
        config.run.init_parts = tuple(str(entry) for entry in init_parts)
    if online_validation is not None:
        config.run.online_validation = bool(online_validation)
    training = config.experiment.training
    if batch_size is not None:
        training.batch_size = int(batch_size)
    if epochs is not None and epochs != training.epochs:
        if epochs < 1:
            raise ConfigError("--epochs", f"must be >= 1, got {epochs}")
        scaled = sorted({min(epochs, max(1, round(e * epochs / training.epochs))) for e in training.lr_decay_epochs})
        training.lr_decay_epochs = tuple(e for e in scaled if e < epochs) or ((epochs,) if scaled else ())
        training.epochs = int(epochs)
    config.validate("")
    return config


# ======================================================================================
# Distributed context
# ======================================================================================
@dataclass
class DistributedContext:
    """Rank/world of this process; world size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls) -> "DistributedContext":
        """Join the process group torchrun describes (``RANK``/``WORLD_SIZE``/``MASTER_*``)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available()
        device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if world_size <= 1:
            return cls(0, 1, 0, device, False)
        initialized_here = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                    rank=rank, world_size=world_size)
            initialized_here = True
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, device, initialized_here)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (float64 on CPU for gloo, the device for nccl)."""
        if not self.distributed:
            return values
        reduced = values.to(self.device if self.device.type == "cuda" else "cpu").clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.cpu()

    def all_gather_objects(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_object(self, value: Any) -> Any:
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def shutdown(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


# ======================================================================================
# Warm start and frozen parts
# ======================================================================================
def part_and_checkpoint(entry: str, where: str) -> tuple[str, str]:
    """``"PART=CHECKPOINT"`` (``run.init_parts``, ``--init-part``) → (part, path); the file must exist.
    The path is taken as written, not read as YAML."""
    expected = "PART=CHECKPOINT (e.g. imu_encoder=runs/imu/checkpoints/best.pt)"
    part, path = split_assignment(entry, where, expected)
    path = path.strip()
    if not path:
        raise ConfigError(where, f"expected {expected}, got {entry!r}")
    if not pathlib.Path(path).is_file():
        raise ConfigError(where, f"no such checkpoint file: {path}")
    return part, path


def model_part(model: nn.Module, name: str, key: str) -> nn.Module:
    """The model's child ``name`` that has parameters; else a :class:`ConfigError` at ``key``
    naming the parts there are."""
    children = dict(model.named_children())
    module = children.get(name)
    if module is None or not any(True for _ in module.parameters()):
        trainable = sorted(n for n, m in children.items() if any(True for _ in m.parameters()))
        raise ConfigError(key, f"{name!r} is not a trainable part of this model; its parts: {', '.join(trainable)}")
    return module


def freeze_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """Stop training the model's children ``names`` (``training.frozen_modules``): their
    parameters get no gradient; the caller keeps them out of the optimiser and in inference mode
    (batch-norm statistics, dropout). Returns the frozen modules; an unknown name or freezing every
    trainable part is a :class:`ConfigError`."""
    frozen = []
    for name in names:
        module = model_part(model, name, "training.frozen_modules")
        module.requires_grad_(False)
        frozen.append(module)
    if names and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("training.frozen_modules", f"{list(names)} freezes the whole model: nothing to train")
    return frozen


_LAYOUT_BUFFERS = ("token_of_feature", "token_hops")
"""Buffers that describe this model's glove layout: never copied from another checkpoint."""


def warm_start(model: nn.Module, checkpoint_path: str | os.PathLike) -> list[str]:
    """Copy every parameter/buffer of a checkpoint whose name and shape match ``model``'s.

    The checkpoint is read weights-only (:func:`avi_ht_ros.models.checkpoint.read_checkpoint`).
    Layout buffers (hop distances, feature→sensor map) are never copied: they come from this
    model's glove. Returns the names copied; raises :class:`ConfigError` if none match.
    """
    from avi_ht_ros.models.checkpoint import read_checkpoint

    stored = read_checkpoint(checkpoint_path)["state_dict"]
    current = model.state_dict()
    copied = {name: tensor for name, tensor in stored.items()
              if name in current and isinstance(tensor, torch.Tensor) and tensor.shape == current[name].shape
              and not name.endswith(_LAYOUT_BUFFERS)}
    if not copied:
        raise ConfigError("run.init_from", f"{checkpoint_path}: no parameter matches this model by name and shape")
    model.load_state_dict(copied, strict=False)
    return sorted(copied)


def init_part(model: nn.Module, part: str, checkpoint_path: str | os.PathLike) -> list[str]:
    """Replace every parameter and buffer of the model part ``part`` (``run.init_parts``) with the
    checkpoint's tensor of the same name — all of them or none: a missing name or another shape is a
    :class:`ConfigError` (the part would be half one model, half another). Layout buffers are kept,
    as in :func:`warm_start`. Returns the names copied."""
    key = "run.init_parts"
    model_part(model, part, key)
    stored = read_checkpoint(checkpoint_path)["state_dict"]
    current = model.state_dict()
    wanted = [name for name in current if name.startswith(part + ".") and not name.endswith(_LAYOUT_BUFFERS)]
    for name in wanted:
        if name not in stored:
            raise ConfigError(key, f"{checkpoint_path} has no {name}: it has no {part} like this model's")
        if stored[name].shape != current[name].shape:
            raise ConfigError(key, f"{checkpoint_path}: {name} is {tuple(stored[name].shape)}, this model's "
                                   f"{tuple(current[name].shape)}")
    model.load_state_dict({name: stored[name] for name in wanted}, strict=False)
    return wanted


# ======================================================================================
# Seeds and RNG state
# ======================================================================================
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sensor_dropout_modules(model: nn.Module) -> list[SensorDropout]:
    return [m for m in model.modules() if isinstance(m, SensorDropout)]


def seed_sensor_dropout(model: nn.Module, run_seed: int, rank: int) -> None:
    """Give each rank its own, seed-determined sensor-dropout stream (models default to one seed)."""
    for index, module in enumerate(sensor_dropout_modules(model)):
        base = int(getattr(model.config.sensor_dropout, "seed", 0))
        seed = int(np.random.SeedSequence([run_seed, base, rank, index]).generate_state(1, np.uint64)[0] >> 1)
        module.generator.manual_seed(seed)


def rng_state(model: nn.Module) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "sensor_dropout": [m.generator.get_state() for m in sensor_dropout_modules(model)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(model: nn.Module, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    modules = sensor_dropout_modules(model)
    if len(modules) != len(state["sensor_dropout"]):
        raise TrainingError("training state: sensor-dropout generator count differs from the model's")
    for module, generator_state in zip(modules, state["sensor_dropout"]):
        module.generator.set_state(generator_state)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ======================================================================================
# Data
# ======================================================================================
class IndexListSampler(Sampler[int]):
    """Yields a fixed list of dataset indices (one rank's share of an epoch, from a position on)."""

    def __init__(self, indices: list[int]):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def check_dataset_fits_model(manifest: dict, config: ExperimentConfig, where: str) -> None:
    """The dataset's crops, IMU window and glove must be what the model expects."""
    model = config.model
    problems = []
    if model.uses_vision:
        if manifest["crop_size"] != model.vision_encoder.crop_size:
            problems.append(f"crop size {manifest['crop_size']} != model.vision_encoder.crop_size "
                            f"{model.vision_encoder.crop_size}")
        if manifest.get("num_views", 1) != model.vision_encoder.num_views:
            problems.append(f"{manifest.get('num_views', 1)} view(s) per frame != model.vision_encoder.num_views "
                            f"{model.vision_encoder.num_views}")
    if model.uses_imu:
        if manifest["feature_set"] != model.imu_encoder.feature_set:
            problems.append(f"IMU feature set {manifest['feature_set']!r} != model.imu_encoder.feature_set "
                            f"{model.imu_encoder.feature_set!r}")
        if manifest["window_length"] != model.imu_encoder.window_length:
            problems.append(f"IMU window {manifest['window_length']} != model.imu_encoder.window_length "
                            f"{model.imu_encoder.window_length}")
        glove = load_glove(model)
        if list(manifest["glove"]["sensors"]) != list(glove.sensor_names):
            problems.append(f"glove sensors {manifest['glove']['sensors']} != the model's {model.glove_config} "
                            f"{list(glove.sensor_names)}")
    if problems:
        raise ConfigError(where, "dataset does not fit the model: " + "; ".join(problems))


# ======================================================================================
# Metrics
# ======================================================================================
def metric_sums(outputs: ModelOutputs, targets: PoseTargets) -> dict[str, float]:
    """Sums from which the validation metrics are averaged over ranks and batches.

    The errors are :mod:`avi_ht_ros.tracker.metrics`' (the evaluation's definitions): MKPE,
    MKPE.T (each hand in its own wrist frame), fingertip F.MKPE / F.MKPE.T, joint-angle error.
    Absolute MKPE is not defined for root-relative (IMU-only) outputs.
    """
    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float64).numpy()

    predicted, truth = numpy(outputs.landmarks), numpy(targets.landmarks)
    aligned = wrist_aligned_errors_mm(predicted, numpy(outputs.wrist_rotation), numpy(outputs.wrist_translation),
                                      truth, numpy(targets.wrist_rotation), numpy(targets.wrist_translation))
    angles = joint_angle_errors_deg(numpy(outputs.joint_angles), numpy(targets.joint_angles))
    fingertips = list(FINGERTIPS)
    sums = {"mkpe_t_mm": float(aligned.sum()), "f_mkpe_t_mm": float(aligned[..., fingertips].sum()),
            "joint_angle_mae_deg": float(angles.sum()), "landmark_count": float(aligned.size),
            "fingertip_count": float(aligned[..., fingertips].size), "joint_count": float(angles.size)}
    if not outputs.root_relative:
        absolute = keypoint_errors_mm(predicted, truth)
        sums["mkpe_mm"] = float(absolute.sum())
        sums["f_mkpe_mm"] = float(absolute[..., fingertips].sum())
    return sums


def selection_metric(model: HandPoseModel, online: bool = False) -> str:
    """``best.pt`` criterion: MKPE, or MKPE.T for root-relative (IMU-only) models; with
    ``online`` the same metric from the online-tracker validation (``online_mkpe_mm``)."""
    return ("online_" if online else "") + ("mkpe_t_mm" if model.root_relative else "mkpe_mm")


ONLINE_VALIDATION_METRICS = ("mkpe_mm", "f_mkpe_mm", "mkpe_t_mm", "f_mkpe_t_mm", "angle_error_deg")


def online_validation_sequences(manifest: dict, sequence_ids: list[str]) -> list:
    """The recordings behind the dataset sequences ``sequence_ids`` (``bag/side``) as
    :class:`~avi_ht_ros.tracker.evaluate.EvalSequence` s holding only those hands, read from the
    source bags the manifest names with the camera–glove offset the dataset used."""
    from avi_ht_ros.tracker.evaluate import load_bag_sequence

    sources = {source["name"]: source["path"] for source in manifest["sources"]}
    entries = {entry["id"]: entry for entry in manifest["sequences"]}
    by_bag: dict[str, list[dict]] = {}
    for sequence_id in sequence_ids:
        entry = entries[sequence_id]
        by_bag.setdefault(entry["bag"], []).append(entry)
    sequences = []
    for bag, bag_entries in by_bag.items():
        path = sources.get(bag)
        if path is None or not pathlib.Path(path).exists():
            raise ConfigError("run.online_validation", f"the source bag of validation sequence {bag!r} is not "
                                                       f"available: {path}")
        sequence = load_bag_sequence(path, time_offset_s=float(bag_entries[0]["time_offset_s"]))
        sides = [entry["side"] for entry in bag_entries]
        missing = [side for side in sides if side not in sequence.hands]
        if missing:
            raise ConfigError("run.online_validation", f"{path}: no glove/ground truth of the {missing} hand")
        sequences.append(dataclasses.replace(sequence, hands={side: sequence.hands[side] for side in sides}))
    return sequences


# ======================================================================================
# The model step
# ======================================================================================
class ClipLoss(nn.Module):
    """``forward(inputs, targets) -> loss terms`` over a clip: the module DDP wraps.

    Running the whole clip (``forward_clip``) and the loss inside one ``forward`` lets DDP see
    one forward per optimizer step, however many frames the clip has.
    """

    def __init__(self, model: HandPoseModel, loss_config):
        super().__init__()
        self.model = model
        self.loss_config = loss_config

    def forward(self, inputs: ModelInputs, targets: PoseTargets) -> dict[str, torch.Tensor]:
        outputs, _state = self.model.forward_clip(inputs)
        return compute_losses(outputs, targets, self.loss_config)


def model_inputs_for(model_config, batch: ClipBatch) -> ModelInputs:
    """The batch's inputs without the modality a baseline does not use (saves its transfer)."""
    inputs = batch.inputs
    if not model_config.uses_vision:
        inputs = dataclasses.replace(inputs, crops=None, K_virtual=None, R_virtual_from_camera=None, view_valid=None)
    if not model_config.uses_imu:
        inputs = dataclasses.replace(inputs, imu_features=None, imu_valid=None)
    return inputs


# ======================================================================================
# Checkpoints and training state
# ======================================================================================
def _plain_scheduler_state(state: dict) -> dict:
    """``MultiStepLR.state_dict()`` with its ``Counter`` as a dict (weights_only-loadable)."""
    plain = dict(state)
    if isinstance(plain.get("milestones"), Counter):
        plain["milestones"] = {int(k): int(v) for k, v in plain["milestones"].items()}
    return plain


def _scheduler_state_from_plain(state: dict) -> dict:
    restored = dict(state)
    if isinstance(restored.get("milestones"), dict):
        restored["milestones"] = Counter({int(k): int(v) for k, v in restored["milestones"].items()})
    return restored


def _atomic_torch_save(payload: Any, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def read_training_state(path: str | os.PathLike) -> dict:
    """The optimizer/scheduler/progress file, loaded with ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise TrainingError(f"{path}: no training state (was the run checkpointed?)") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise TrainingError(f"{path}: not a weights-only training state: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise TrainingError(f"{path}: not an {TRAINING_STATE_FORMAT} file")
    if state.get("version") != TRAINING_STATE_VERSION:
        raise TrainingError(f"{path}: unsupported training state version {state.get('version')!r}")
    return state


@dataclass
class Progress:
    """Where a run is: ``epoch`` = completed epochs, ``batch_in_epoch`` = steps done in the current one."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    run_dir: pathlib.Path
    progress: Progress
    history: list[dict[str, Any]]
    stopped_by_max_steps: bool


# ======================================================================================
# Logging
# ======================================================================================
_STEP_FIELDS = ("global_step", "epoch", "learning_rate", "loss")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """``steps.csv``, ``metrics.csv``/``metrics.json`` and ``loss_curve.png`` (rank 0 only)."""

    def __init__(self, run_dir: pathlib.Path, enabled: bool):
        self.run_dir = run_dir
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def restore(self, global_step: int) -> None:
        """Reload logs of a resumed run, dropping rows written after its last checkpoint."""
        if not self.enabled:
            return
        metrics_path = self.run_dir / "metrics.json"
        if metrics_path.exists():
            rows = json.loads(metrics_path.read_text())
            self.history = [r for r in rows if r["global_step"] <= global_step]
        steps_path = self.run_dir / "steps.csv"
        if steps_path.exists():
            with steps_path.open() as handle:
                self.steps = [{k: float(v) if k in ("learning_rate", "loss") else int(v) for k, v in row.items()}
                              for row in csv.DictReader(handle) if int(row["global_step"]) <= global_step]
        self._rewrite_steps()
        self._write_metrics()

    def log_step(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.steps.append(row)
        path = self.run_dir / "steps.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_STEP_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row[k] for k in _STEP_FIELDS})

    def _rewrite_steps(self) -> None:
        with (self.run_dir / "steps.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_STEP_FIELDS)
            writer.writeheader()
            for row in self.steps:
                writer.writerow({k: row[k] for k in _STEP_FIELDS})

    def log_epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.history.append({k: _finite_or_none(v) for k, v in row.items()})
        self._write_metrics()
        self.plot()

    def _write_metrics(self) -> None:
        (self.run_dir / "metrics.json").write_text(json.dumps(self.history, indent=1))
        fields: list[str] = []
        for row in self.history:
            fields.extend(k for k in row if k not in fields)
        with (self.run_dir / "metrics.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in self.history:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})

    def plot(self) -> None:
        """Training loss per step (and its running mean), validation loss and MKPE per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(11, 4))
        if self.steps:
            steps = np.array([r["global_step"] for r in self.steps])
            losses = np.array([r["loss"] for r in self.steps])
            loss_axis.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train (logged steps)")
            window = max(1, min(len(losses) // 10, 50))
            if window > 1:
                smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
                loss_axis.plot(steps[window - 1:], smooth, color="tab:blue", lw=1.5, label=f"train ({window}-row mean)")
        epochs = [r for r in self.history if r.get("val_loss") is not None]
        if epochs:
            loss_axis.plot([r["global_step"] for r in epochs], [r["val_loss"] for r in epochs], "o-",
                           color="tab:orange", label="validation")
        train_epochs = [r for r in self.history if r.get("train_loss") is not None]
        if train_epochs:
            loss_axis.plot([r["global_step"] for r in train_epochs], [r["train_loss"] for r in train_epochs], "s--",
                           color="tab:blue", ms=4, label="train (epoch mean)")
        loss_axis.set_xlabel("optimizer step")
        loss_axis.set_ylabel("total loss")
        loss_axis.set_title("loss")
        loss_axis.grid(alpha=0.3)
        loss_axis.legend(fontsize=8)
        for name, label in (("val_mkpe_mm", "MKPE"), ("val_mkpe_t_mm", "MKPE.T"), ("val_f_mkpe_mm", "F.MKPE")):
            rows = [r for r in self.history if r.get(name) is not None]
            if rows:
                error_axis.plot([r["epoch"] for r in rows], [r[name] for r in rows], "o-", label=label)
        error_axis.set_xlabel("epoch")
        error_axis.set_ylabel("mm")
        error_axis.set_title("validation keypoint error")
        error_axis.grid(alpha=0.3)
        if error_axis.lines:
            error_axis.legend(fontsize=8)
        figure.tight_layout()
        temporary = self.run_dir / "loss_curve.tmp.png"
        figure.savefig(temporary, dpi=110)
        plt.close(figure)
        os.replace(temporary, self.run_dir / "loss_curve.png")


# ======================================================================================
# The trainer
# ======================================================================================
class Trainer:
    """One training run (see module doc). Use :func:`train` unless you need the pieces."""

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
                 show_progress: bool = True, context: DistributedContext | None = None,
                 log: Callable[[str], None] | None = print):
        self.context = context or DistributedContext.from_environment()
        self.run_dir = pathlib.Path(run_dir)
        self.checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        self.show_progress = show_progress and self.context.is_main
        self._log = log if self.context.is_main else None
        config = self._resolve_config(config, resume)
        self.config = config
        experiment = config.experiment
        self.model_config = experiment.model
        if not config.data.dataset:
            raise ConfigError("data.dataset", "no dataset: set it in the config or pass --data DIR")
        training = experiment.training
        if training.batch_size % self.context.world_size:
            raise ConfigError("training.batch_size", f"the global batch {training.batch_size} must divide evenly "
                                                     f"over {self.context.world_size} processes")
        self.batch_per_rank = training.batch_size // self.context.world_size

        # data
        self.manifest = load_manifest(config.data.dataset)
        check_dataset_fits_model(self.manifest, experiment, f"{config.data.dataset}")
        self.train_ids, self.val_ids = split_sequences(self.manifest, config.data.validation_fraction,
                                                       config.data.split_seed, config.data.validation_bags)
        if not self.train_ids:
            raise ConfigError("data", "no training sequence left after the validation split")
        uses_vision, uses_imu = self.model_config.uses_vision, self.model_config.uses_imu
        self.train_set = HandClipDataset(config.data.dataset, self.train_ids, training.clip_length, training=True,
                                         augmentation=config.data.augmentation, seed=config.run.seed,
                                         max_frame_gap_s=config.data.max_frame_gap_s, load_vision=uses_vision,
                                         load_imu=uses_imu)
        self.val_set = (HandClipDataset(config.data.dataset, self.val_ids, config.data.validation_clip_length,
                                        training=False, seed=config.run.seed,
                                        max_frame_gap_s=config.data.max_frame_gap_s, load_vision=uses_vision,
                                        load_imu=uses_imu) if self.val_ids else None)
        self.online_sequences = None
        if config.run.online_validation:
            if not self.val_ids:
                raise ConfigError("run.online_validation", "needs validation sequences (data.validation_fraction "
                                                           "> 0 or data.validation_bags)")
            if self.context.is_main:  # the other ranks receive its figures
                self.online_sequences = online_validation_sequences(self.manifest, list(self.val_ids))
        share = len(self.train_set) // self.context.world_size
        self.batches_per_epoch = share // self.batch_per_rank
        if self.batches_per_epoch < 1:
            raise ConfigError("training.batch_size", f"the training set has {len(self.train_set)} clips of "
                                                     f"{training.clip_length} frames: fewer than one batch of "
                                                     f"{training.batch_size}; use a smaller batch or more data")

        if config.run.torch_threads:
            torch.set_num_threads(config.run.torch_threads)
        # model and optimisation (same seed on every rank: identical initial weights)
        seed_everything(config.run.seed)
        self.model = build_model(self.model_config).to(self.context.device)
        self.selection_key = selection_metric(self.model, online=config.run.online_validation)
        if not resume:  # a resume continues from its own checkpoint
            self._warm_start(config.run)
        self.frozen = freeze_modules(self.model, training.frozen_modules)
        seed_sensor_dropout(self.model, config.run.seed, self.context.rank)
        self.clip_loss = ClipLoss(self.model, experiment.loss)
        if self.context.distributed:
            # Some parameters may get no gradient in a step (e.g. the "no IMU" token when every
            # sample has a live sensor), hence find_unused_parameters.
            self.step_module: nn.Module = nn.parallel.DistributedDataParallel(
                self.clip_loss, device_ids=None, find_unused_parameters=True)
        else:
            self.step_module = self.clip_loss
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                          lr=training.learning_rate,
                                          betas=(training.beta1, training.beta2), eps=training.eps,
                                          weight_decay=training.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(training.lr_decay_epochs),
                                                              gamma=training.lr_decay_factor)
        self.progress = Progress()
        self.logger = RunLogger(self.run_dir, self.context.is_main)
        if resume:
            self._load_last()
        if self.context.is_main:  # the configuration in effect (a resume may extend epochs / max_steps)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / RUN_CONFIG).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.context.barrier()

    # -- configuration on start/resume -----------------------------------------------------
    def _resolve_config(self, config: TrainConfig, resume: bool) -> TrainConfig:
        existing = (self.checkpoint_dir / LAST_CHECKPOINT).exists()
        if not resume:
            if existing:
                raise TrainingError(f"{self.run_dir}: already holds a run (checkpoints/{LAST_CHECKPOINT}); pass "
                                    "--resume to continue it or choose another --out")
            return config
        if not existing:
            raise TrainingError(f"{self.run_dir}: nothing to resume (no checkpoints/{LAST_CHECKPOINT})")
        stored = train_config_from_dict(load_yaml_mapping(self.run_dir / RUN_CONFIG), str(self.run_dir / RUN_CONFIG))
        if not config.data.dataset:  # e.g. a shipped config without --data: the run's dataset
            config = copy.deepcopy(config)
            config.data.dataset = stored.data.dataset
        for section in ("model", "loss"):
            if config_to_dict(getattr(config.experiment, section)) != config_to_dict(getattr(stored.experiment, section)):
                raise TrainingError(f"{self.run_dir}: the {section} section differs from the run's {RUN_CONFIG}; "
                                    "a resumed run must train the same network with the same loss")
        comparable = ("dataset", "validation_fraction", "validation_bags", "split_seed", "augmentation")
        for name in comparable:
            if config_to_dict(getattr(config.data, name)) != config_to_dict(getattr(stored.data, name)):
                raise TrainingError(f"{self.run_dir}: data.{name} differs from the run's {RUN_CONFIG}")
        if config.run.seed != stored.run.seed:
            raise TrainingError(f"{self.run_dir}: run.seed {config.run.seed} differs from the run's {stored.run.seed}")
        return config

    def _load_last(self) -> None:
        payload = read_checkpoint(self.checkpoint_dir / LAST_CHECKPOINT)
        state = read_training_state(self.checkpoint_dir / LAST_STATE)
        try:
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(f"{self.checkpoint_dir}: the checkpoint does not fit the configured model: {exc}") from exc
        self.scheduler.load_state_dict(_scheduler_state_from_plain(state["scheduler"]))
        # a changed schedule (e.g. more epochs) applies from here on
        self.scheduler.milestones = Counter(self.config.experiment.training.lr_decay_epochs)
        self.progress = Progress(**state["progress"])
        rng_states = state["rng"]
        if state["world_size"] == self.context.world_size:
            restore_rng_state(self.model, rng_states[self.context.rank])
        else:
            if self._log:
                self._log(f"resuming with {self.context.world_size} process(es) instead of {state['world_size']}: "
                          "sensor-dropout streams are re-seeded (the run stays deterministic, not identical)")
            seed_sensor_dropout(self.model, self.config.run.seed + self.progress.global_step, self.context.rank)
        self.logger.restore(self.progress.global_step)
        if self._log:
            self._log(f"resumed {self.run_dir} at epoch {self.progress.epoch} + {self.progress.batch_in_epoch} "
                      f"batches (step {self.progress.global_step})")

    # -- checkpoints -----------------------------------------------------------------------
    def _metadata(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": self.progress.epoch, "batch_in_epoch": self.progress.batch_in_epoch,
            "global_step": self.progress.global_step, "world_size": self.context.world_size,
            "seed": self.config.run.seed, "selection_metric": self.selection_key,
            "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
            "dataset": {"path": str(pathlib.Path(self.config.data.dataset).resolve()),
                        "train_sequences": list(self.train_ids), "validation_sequences": list(self.val_ids),
                        "content_sha256": [s["content_sha256"] for s in self.manifest["sequences"]]},
            "train_config": self.config.to_dict(),
        }

    def _save(self, metrics: dict[str, Any], epoch_end: bool) -> None:
        """Write last (+ epoch, + best) checkpoints and the training state (every rank's RNG)."""
        rng_states = self.context.all_gather_objects(rng_state(self.model))
        value = metrics.get(f"val_{self.selection_key}")
        is_best = value is not None and math.isfinite(value) and (self.progress.best_metric is None
                                                                  or value < self.progress.best_metric)
        if is_best:
            self.progress.best_metric, self.progress.best_epoch = float(value), self.progress.epoch
        if not self.context.is_main:
            return
        metadata = self._metadata(metrics)
        save_checkpoint(self.checkpoint_dir / LAST_CHECKPOINT, self.model, metadata)
        _atomic_torch_save({
            "format": TRAINING_STATE_FORMAT, "version": TRAINING_STATE_VERSION,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": _plain_scheduler_state(self.scheduler.state_dict()),
            "progress": self.progress.to_dict(), "world_size": self.context.world_size, "rng": rng_states,
        }, self.checkpoint_dir / LAST_STATE)
        if epoch_end and self.config.run.keep_epoch_checkpoints:
            save_checkpoint(self.checkpoint_dir / f"epoch_{self.progress.epoch:04d}.pt", self.model, metadata)
        if is_best:
            save_checkpoint(self.checkpoint_dir / BEST_CHECKPOINT, self.model, metadata)

    # -- loops -----------------------------------------------------------------------------
    def _epoch_indices(self, epoch: int) -> list[int]:
        """This rank's dataset indices of ``epoch`` (whole batches only), shuffled by ``seed + epoch``."""
        sampler = DistributedSampler(self.train_set, num_replicas=self.context.world_size, rank=self.context.rank,
                                     shuffle=True, seed=self.config.run.seed, drop_last=True)
        sampler.set_epoch(epoch)
        return list(sampler)[: self.batches_per_epoch * self.batch_per_rank]

    def _loader(self, dataset, indices: list[int], batch_size: int, epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.run.seed * 1000003 + epoch)  # worker seeds only
        return DataLoader(dataset, batch_size=batch_size, sampler=IndexListSampler(indices),
                          num_workers=self.config.data.num_workers, collate_fn=collate_clips, drop_last=False,
                          generator=generator, pin_memory=self.context.device.type == "cuda")

    def _warm_start(self, run: RunConfig) -> None:
        """``run.init_from``, then ``run.init_parts`` in order."""
        if run.init_from:
            copied = warm_start(self.model, run.init_from)
            if self._log:
                modules = sorted({name.split(".")[0] for name in copied})
                self._log(f"warm start from {run.init_from}: {len(copied)} tensors ({', '.join(modules)})")
        for index, entry in enumerate(run.init_parts):
            part, path = part_and_checkpoint(entry, f"run.init_parts[{index}]")
            copied = init_part(self.model, part, path)
            if self._log:
                self._log(f"{part} from {path}: {len(copied)} tensors")

    def _train_mode(self) -> None:
        """Training mode for the parts that train; the frozen ones stay in inference mode."""
        self.model.train()
        for module in self.frozen:
            module.eval()

    def train_step(self, batch: ClipBatch) -> dict[str, float]:
        """One optimizer step; returns the loss terms (this rank's batch)."""
        batch = batch.to(self.context.device)
        self._train_mode()
        terms = self.step_module(model_inputs_for(self.model_config, batch), batch.targets)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if self.config.run.gradient_clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.run.gradient_clip_norm)
        self.optimizer.step()
        return {name: float(value.detach()) for name, value in terms.items()}

    _VALIDATION_LOSS_TERMS = ("total", "landmark_nll", "joint_angle", "wrist_translation", "temporal_velocity",
                              "temporal_acceleration", "max_mse")
    _VALIDATION_SUMS = ("mkpe_mm", "mkpe_t_mm", "f_mkpe_mm", "f_mkpe_t_mm", "joint_angle_mae_deg", "landmark_count",
                        "fingertip_count", "joint_count")

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Validation loss terms and keypoint metrics over every rank's share of the clips."""
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        self.model.eval()
        self.val_set.set_epoch(0)
        indices = list(range(len(self.val_set)))[self.context.rank::self.context.world_size]
        batch_size = max(1, min(self.batch_per_rank, 16))
        keys = [f"loss:{n}" for n in self._VALIDATION_LOSS_TERMS] + list(self._VALIDATION_SUMS) + ["clips"]
        sums = dict.fromkeys(keys, 0.0)
        for batch in self._loader(self.val_set, indices, batch_size, 0):
            batch = batch.to(self.context.device)
            outputs, _ = self.model.forward_clip(model_inputs_for(self.model_config, batch))
            terms = compute_losses(outputs, batch.targets, self.config.experiment.loss)
            for name, value in terms.items():
                if f"loss:{name}" in sums:
                    sums[f"loss:{name}"] += float(value) * batch.batch_size
            for name, value in metric_sums(outputs, batch.targets).items():
                sums[name] += value
            sums["clips"] += batch.batch_size
        self._train_mode()
        reduced = self.context.all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        total = dict(zip(keys, reduced.tolist()))
        if total["clips"] == 0:
            return {}
        result: dict[str, Any] = {"val_loss": total["loss:total"] / total["clips"]}
        for name in self._VALIDATION_LOSS_TERMS[1:]:
            if total[f"loss:{name}"] != 0.0:
                result[f"val_{name}"] = total[f"loss:{name}"] / total["clips"]
        denominators = {"mkpe_mm": "landmark_count", "mkpe_t_mm": "landmark_count", "f_mkpe_mm": "fingertip_count",
                        "f_mkpe_t_mm": "fingertip_count", "joint_angle_mae_deg": "joint_count"}
        root_relative = self.model.root_relative
        for name, denominator in denominators.items():
            absolute = name in ("mkpe_mm", "f_mkpe_mm")
            result[f"val_{name}"] = (None if (absolute and root_relative) or not total[denominator]
                                     else total[name] / total[denominator])
        result["val_clips"] = int(total["clips"])
        return result

    def validate_online(self) -> dict[str, Any]:
        """``val_online_*``: the validation recordings tracked online (main rank; every rank
        returns its figures so that every rank keeps the same best checkpoint)."""
        if not self.config.run.online_validation:
            return {}
        result: dict[str, Any] = {}
        if self.context.is_main:
            from avi_ht_ros.tracker.evaluate import EvalModel, EvalOptions, evaluate

            options = EvalOptions(ekf=False, progress=False, threads=torch.get_num_threads())
            results = evaluate([EvalModel("validation", self.model)], self.online_sequences, options)
            summary = results.metrics()["overall"]["validation"]
            self._train_mode()
            result = {f"val_online_{name}": summary.get(name) for name in ONLINE_VALIDATION_METRICS}
            result["val_online_frames"] = summary.get("frames")
        return self.context.all_gather_objects(result)[0]

    def run(self) -> TrainResult:
        training = self.config.experiment.training
        max_steps = self.config.run.max_steps
        stopped = bool(max_steps) and self.progress.global_step >= max_steps
        if stopped and self._log:
            self._log(f"{self.run_dir}: already at run.max_steps = {max_steps}; nothing to do")
        elif self._log:
            self._log(f"training {self.model_config.type} on {len(self.train_ids)} sequence(s) "
                      f"({len(self.train_set)} clips of {training.clip_length}), validating on {len(self.val_ids)}; "
                      f"{self.context.world_size} process(es) x batch {self.batch_per_rank}, "
                      f"{self.batches_per_epoch} steps/epoch, {training.epochs} epochs -> {self.run_dir}")
        while self.progress.epoch < training.epochs and not stopped:
            epoch = self.progress.epoch
            self.train_set.set_epoch(epoch)
            indices = self._epoch_indices(epoch)[self.progress.batch_in_epoch * self.batch_per_rank:]
            loader = self._loader(self.train_set, indices, self.batch_per_rank, epoch)
            bar = None
            if self.show_progress:
                from tqdm import tqdm

                bar = tqdm(total=self.batches_per_epoch, initial=self.progress.batch_in_epoch, unit="step",
                           desc=f"epoch {epoch + 1}/{training.epochs}", file=sys.stderr, dynamic_ncols=True)
            term_sums: dict[str, float] = {}
            steps_this_session = 0
            started = time.perf_counter()
            for batch in loader:
                terms = self.train_step(batch)
                self.progress.batch_in_epoch += 1
                self.progress.global_step += 1
                steps_this_session += 1
                for name, value in terms.items():
                    term_sums[name] = term_sums.get(name, 0.0) + value
                if not math.isfinite(terms["total"]):
                    raise TrainingError(f"{self.run_dir}: loss became {terms['total']} at step "
                                        f"{self.progress.global_step} (terms {terms})")
                learning_rate = self.optimizer.param_groups[0]["lr"]
                if self.progress.global_step % self.config.run.log_every_steps == 0 or self.progress.global_step == 1:
                    self.logger.log_step({"global_step": self.progress.global_step, "epoch": epoch,
                                          "learning_rate": learning_rate, "loss": terms["total"]})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['total']:.3f}", lr=f"{learning_rate:.2e}")
                if max_steps and self.progress.global_step >= max_steps:
                    stopped = True
                    break
            if bar is not None:
                bar.close()
            elapsed = time.perf_counter() - started
            epoch_end = self.progress.batch_in_epoch >= self.batches_per_epoch
            learning_rate = self.optimizer.param_groups[0]["lr"]
            if epoch_end:
                self.progress.epoch += 1
                self.progress.batch_in_epoch = 0
                self.scheduler.step()
            # training loss of this session's steps, averaged over the ranks
            names = sorted(term_sums)
            reduced = self.context.all_reduce_sum(torch.tensor([term_sums[n] for n in names] + [steps_this_session],
                                                               dtype=torch.float64))
            steps_total = float(reduced[-1])
            row: dict[str, Any] = {
                "epoch": self.progress.epoch if epoch_end else epoch + self.progress.batch_in_epoch
                / self.batches_per_epoch,
                "global_step": self.progress.global_step, "learning_rate": learning_rate,
                "epoch_complete": epoch_end,
                "train_loss": float(reduced[names.index("total")]) / steps_total if steps_total else None,
                **{f"train_{n}": float(reduced[i]) / steps_total for i, n in enumerate(names)
                   if n != "total" and steps_total},
                "train_seconds": round(elapsed, 3),
                "steps_per_second": round(steps_this_session / elapsed, 4) if elapsed > 0 else None,
            }
            row.update(self.validate())
            row.update(self.validate_online())
            self._save(row, epoch_end)
            row["best_epoch"] = self.progress.best_epoch
            self.logger.log_epoch(row)
            if self._log:
                shown = {k: row[k] for k in ("train_loss", "val_loss", "val_mkpe_mm", "val_mkpe_t_mm",
                                             "val_online_mkpe_mm", "val_online_mkpe_t_mm")
                         if row.get(k) is not None}
                self._log(f"epoch {row['epoch']:.3g} step {self.progress.global_step}: " +
                          ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        self.context.barrier()
        return TrainResult(self.run_dir, self.progress, list(self.logger.history), stopped)


def train(config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, show_progress: bool = True,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train (or resume) a run; joins/leaves the torchrun process group when there is one."""
    context = DistributedContext.from_environment()
    try:
        return Trainer(config, run_dir, resume=resume, show_progress=show_progress, context=context, log=log).run()
    finally:
        context.shutdown()
