"""Model checkpoints that load with ``torch.load(path, weights_only=True)`` — never arbitrary pickles.

A checkpoint is one ``torch.save``d dict of plain types only::

    {"format": "avi_ht_ros.model_checkpoint", "version": 1,
     "model_config": {...},   # ModelConfig as nested dicts/lists/str/int/float/bool
     "state_dict": {name: tensor},
     "metadata": {...}}       # caller's plain-typed extras (epoch, metrics, git hash, ...)

:func:`load_checkpoint` reads it with ``weights_only=True``, so a file carrying any other
pickled object (a class instance, a ``__reduce__`` payload) is refused *before* anything in
it runs, with :class:`CheckpointError` naming the file. The model is rebuilt from the stored
config (its hop matrix, feature-row map and joint limits come back from the state dict).
"""
from __future__ import annotations

import math
import os
import pathlib
import pickle
from dataclasses import dataclass

import torch

from avi_ht_ros.common.errors import AviHtError, ConfigError
from avi_ht_ros.models.config import ModelConfig, config_to_dict, model_config_from_dict
from avi_ht_ros.models.interface import HandPoseModel

# How torch's weights-only unpickler reports bytes that are not a pickle at all.
_CORRUPT_PICKLE = ("Unsupported operand", "invalid load key", "pickle data was truncated", "could not find MARK")

CHECKPOINT_FORMAT = "avi_ht_ros.model_checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(AviHtError):
    """A checkpoint file is unreadable, not weights-only, or not one of ours; names the file."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` returns."""

    model: HandPoseModel
    config: ModelConfig
    metadata: dict


def _check_plain(value, where: str) -> None:
    """Refuse anything ``weights_only`` loading would reject (or silently mangle) at save time."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float {value!r}")
        return
    if isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: dict keys must be str, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise ValueError(f"{where}: {type(value).__name__} is not a plain type (dict/list/str/int/float/bool/None/tensor)")


def save_checkpoint(path: str | os.PathLike, model: HandPoseModel, metadata: dict | None = None) -> pathlib.Path:
    """Write ``model`` (weights + its ``ModelConfig``) and plain-typed ``metadata`` atomically."""
    path = pathlib.Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": config_to_dict(model.config),
        "state_dict": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    _check_plain(payload["metadata"], "metadata")
    _check_plain(payload["model_config"], "model_config")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict, loaded weights-only and validated; :class:`CheckpointError` otherwise."""
    where = str(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(where, "no such file") from exc
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        corrupt = [line for line in lines if line.startswith(_CORRUPT_PICKLE)]
        if corrupt:  # bytes that are no pickle at all, not a payload: say so rather than "refused"
            raise CheckpointError(where, f"not a readable torch checkpoint (corrupt?): {corrupt[0]}") from exc
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1])
        raise CheckpointError(
            where,
            "refused: not a weights-only checkpoint (it pickles objects other than tensors and plain "
            f"containers, which could run code on load) — {reason}",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - whatever torch.load raises on foreign bytes (KeyError on text, ...)
        raise CheckpointError(where, f"not a readable torch checkpoint: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(where, f"not an {CHECKPOINT_FORMAT} file (missing or wrong 'format' field)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(where, f"unsupported checkpoint version {payload.get('version')!r} "
                                     f"(this code reads {CHECKPOINT_VERSION})")
    for key, kind in (("model_config", dict), ("state_dict", dict), ("metadata", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(where, f"field {key!r} missing or not a {kind.__name__}")
    return payload


def stored_model_config(payload: dict, path: str | os.PathLike) -> ModelConfig:
    """The validated :class:`ModelConfig` of a :func:`read_checkpoint` payload (the architecture
    the weights belong to); :class:`CheckpointError` if it is invalid."""
    try:
        return model_config_from_dict(payload["model_config"], "model_config")
    except ConfigError as exc:
        raise CheckpointError(str(path), f"stored model config is invalid: {exc}") from exc


def load_checkpoint(path: str | os.PathLike, glove=None) -> LoadedCheckpoint:
    """Rebuild the model from a checkpoint (eval mode, CPU). Refuses non-weights-only files.

    ``glove`` (a :class:`~avi_ht_ros.common.glove_model.GloveModel`) overrides the glove file
    named in the stored config; the sensor count must match the stored weights.
    """
    from avi_ht_ros.models.factory import build_model

    where = str(path)
    payload = read_checkpoint(path)
    config = stored_model_config(payload, path)
    model = build_model(config, glove=glove)
    # The sensor layout (hop distances, feature row → sensor map) is fixed by the glove the
    # model was trained for; running it with another layout would silently mis-assign sensors.
    current = model.state_dict()
    for name, stored in payload["state_dict"].items():
        if name.endswith(("token_of_feature", "token_hops")) and name in current:
            if not isinstance(stored, torch.Tensor) or stored.shape != current[name].shape or not torch.equal(
                stored.to(current[name].dtype), current[name]
            ):
                raise CheckpointError(where, f"{name}: the model was trained for a different glove/sensor layout "
                                             f"than {config.glove_config!r} gives")
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(where, f"weights do not fit a {config.type} model of the stored config: {exc}") from exc
    model.eval()
    return LoadedCheckpoint(model=model, config=config, metadata=payload["metadata"])
