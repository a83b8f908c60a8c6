"""ONNX Runtime inference of the hand-pose networks: the same weights, without eager PyTorch's per-op cost.

The per-frame network step is a few hundred small ops; in eager PyTorch their dispatch costs
more than their arithmetic (the shipped AVI-HT: ~7.5 ms per frame on one thread, of which
~2.2 ms are convolutions). :class:`OnnxFrameModel` exports the step of a loaded
:class:`~avi_ht_ros.models.interface.HandPoseModel` to ONNX in memory at start-up
(``torch.onnx.export``, no file, nothing downloaded) and runs it with ONNX Runtime on the CPU
(``avi-ht bench model`` times both backends side by side). It is a drop-in for the model
where the tracker calls it: ``outputs, state = model(inputs, state)`` for one frame
(batch 1). Training, batches and clips stay with the PyTorch model.

One network, several graphs. The eager code takes shortcuts that depend on the data (the
IMU encoder and the fusion skip every mask when all samples and sensors are live), and the
hand side selects the forward kinematics. The export records one path, so each (side,
IMU-window kind) gets its own graph: ``live`` (every sample finite and valid — the common
case, the shortcut) and ``masked`` (the general path with masks, for dead or stale sensors,
glove gaps, non-finite samples). Which graph runs is decided per frame with the eager code's
own condition. The recurrent state is always an input (zeros start a track, as ``None`` does
in eager mode).

Every graph is checked against the eager model when it is built (:data:`PARITY_TOLERANCE`
on every output, on probe frames with and without the shortcut's conditions: live window,
dead sensors, a non-finite sample, no valid sample, hand out of view, a carried state); a
graph that does not reproduce the eager model is never used: :class:`BackendError`, and
:func:`inference_model` with ``backend="auto"`` falls back to PyTorch and says why.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it records the eager code
as it runs, shortcuts included, which is what the per-kind graphs rely on; the newer
``torch.export`` path refuses data-dependent branches instead. It is deprecated since
PyTorch 2.9; if a future PyTorch drops it, the export fails and ``auto`` runs PyTorch.
"""
from __future__ import annotations

import dataclasses
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from avi_ht_ros.common.errors import AviHtError
from avi_ht_ros.models.config import INFERENCE_BACKENDS
from avi_ht_ros.models.interface import HandPoseModel, ModelInputs, ModelOutputs
from avi_ht_ros.models.vision_encoder import VisionEncoding

PARITY_TOLERANCE = 1e-4
"""Largest |ONNX − eager| accepted on any output at build time (m for landmarks: 0.1 mm)."""

_OPSET = 17
# output names = the ModelOutputs fields a model produces (then "new_state", the recurrent state
# after the frame); log_sigma_aligned is a training signal, not exported
_OUTPUTS = ("landmarks", "joint_angles", "wrist_rotation", "wrist_translation", "log_sigma",
            "imu_attention", "vision_weight", "level1_attention", "sensor_valid")
_INPUTS = ("hand_scale", "crops", "K_virtual", "R_virtual_from_camera", "view_valid", "imu_features", "imu_valid",
           "state")


# the split frame (models with vision and IMU, HandTracker.prepare): the vision half's outputs are
# VisionEncoding's fields, fed to the fusion half under these names ("state" leaves as new_state)
_VISION_INPUTS = ("hand_scale", "crops", "K_virtual", "R_virtual_from_camera", "view_valid", "state")
_VISION_FEED = tuple(f"vision_{name}" for name in VisionEncoding._fields[:-1])
_FUSE_MODEL_INPUTS = ("hand_scale", "imu_features", "imu_valid")   # the fusion half's inputs from ModelInputs
_FUSE_INPUTS = _FUSE_MODEL_INPUTS + _VISION_FEED


class BackendError(AviHtError):
    """The ONNX Runtime backend cannot run this model (not installed, export failed, or parity check failed)."""


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _FrameStep(nn.Module):
    """The eager per-frame step with tensors only (what is exported): every input present, the
    state explicit, a fixed side."""

    def __init__(self, model: HandPoseModel, side: str, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.side = side
        self.outputs = outputs

    def forward(self, hand_scale, crops, K_virtual, R_virtual_from_camera, view_valid, imu_features, imu_valid, state):
        inputs = ModelInputs(hand_scale=hand_scale, side=self.side, crops=crops, K_virtual=K_virtual,
                             R_virtual_from_camera=R_virtual_from_camera, view_valid=view_valid,
                             imu_features=imu_features, imu_valid=imu_valid)
        outputs, new_state = self.model(inputs, state)
        values = tuple(getattr(outputs, name) for name in self.outputs)
        return values + ((new_state,) if new_state is not None else ())


class _VisionStep(nn.Module):
    """The vision half of a frame (``model.encode_vision``) with tensors only."""

    def __init__(self, model: HandPoseModel):
        super().__init__()
        self.model = model

    def forward(self, hand_scale, crops, K_virtual, R_virtual_from_camera, view_valid, state):
        inputs = ModelInputs(hand_scale=hand_scale, crops=crops, K_virtual=K_virtual,
                             R_virtual_from_camera=R_virtual_from_camera, view_valid=view_valid)
        return tuple(self.model.encode_vision(inputs, state))


class _FuseStep(nn.Module):
    """The fusion half of a frame (``model.fuse``) with tensors only, a fixed side."""

    def __init__(self, model: HandPoseModel, side: str, outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.side = side
        self.outputs = outputs

    def forward(self, hand_scale, imu_features, imu_valid, *vision_fields):
        # (the recurrent state is not an input of the fusion half: the token stands in for it)
        vision = VisionEncoding(*vision_fields, state=vision_fields[0])
        outputs = self.model.fuse(ModelInputs(hand_scale=hand_scale, side=self.side, imu_features=imu_features,
                                              imu_valid=imu_valid), vision)
        return tuple(getattr(outputs, name) for name in self.outputs)


def splits_frame(model: HandPoseModel) -> bool:
    """Whether ``model`` runs a frame in two halves (``encode_vision`` then ``fuse``): vision and
    IMU input (AVI-HT), so the vision half can run before the IMU window is complete."""
    inner = model.model if isinstance(model, OnnxFrameModel) else model
    return inner.config.uses_vision and inner.config.uses_imu and hasattr(inner, "encode_vision")


def window_is_live(imu_features: torch.Tensor | np.ndarray | None, imu_valid: torch.Tensor | np.ndarray | None) -> bool:
    """The IMU encoder's shortcut condition (:func:`~avi_ht_ros.models.imu_encoder.window_all_valid`:
    every sample finite and marked valid), evaluated in NumPy on the tensors' memory: this check
    runs before every frame, where (caches cold after the previous network run) two PyTorch
    reductions cost 50–100 µs and these ~30 µs. False for a window whose finite samples sum
    beyond float32 range (the masked graph is right for every window, only slower). A model
    without IMU input has only the live graph."""
    if imu_features is None:
        return True
    features = _as_array(imu_features, np.float32)
    # a NaN or ±inf anywhere makes the sum non-finite: one reduction, a third of np.isfinite().all()'s time
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN sums are the answer, not a warning
        total = float(features.sum())
    if not math.isfinite(total):
        return False
    if imu_valid is None:
        return True
    return bool(_as_array(imu_valid, np.bool_).all())


@dataclass(frozen=True)
class _Graph:
    session: object          # onnxruntime.InferenceSession
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs (``output_names`` order) for ``feed`` (:meth:`OnnxFrameModel._feed`; the
        inputs this graph does not take are left out)."""
        return self.session.run(list(self.output_names), {name: feed[name] for name in self.input_names})


class OnnxFrameModel:
    """A :class:`HandPoseModel`'s per-frame inference on ONNX Runtime (batch 1); see the module doc.

    ``side`` graphs are built on first use, or ahead with :meth:`prepare` (a node does it at
    start-up, ~2 s per graph, so the first frame does not wait). The graphs hold the weights as
    they were when exported: for inference of a trained model, not during training.
    """

    def __init__(self, model: HandPoseModel, num_threads: int = 1):
        if not onnxruntime_available():
            raise BackendError("onnxruntime and onnx are not installed (pip install onnxruntime onnx)")
        self.model = model.eval()
        self.config = model.config
        self.root_relative = model.root_relative
        self.num_threads = int(num_threads)
        self._graphs: dict[tuple[str, str], _Graph] = {}
        self._window_shape = ((model.imu_encoder.window_length, model.imu_encoder.num_features)
                              if self.config.uses_imu else None)

    # -- the drop-in interface ---------------------------------------------------------------
    def eval(self) -> "OnnxFrameModel":
        return self

    def parameters(self):
        return self.model.parameters()

    def initial_state(self) -> torch.Tensor | None:
        return self.model.vision_encoder.initial_state(1) if self.config.uses_vision else None

    def __call__(self, inputs: ModelInputs, state: torch.Tensor | None = None) -> tuple[ModelOutputs, torch.Tensor | None]:
        if inputs.batch_size != 1:
            raise ValueError(f"the ONNX Runtime backend runs one frame (batch 1), got batch {inputs.batch_size}")
        side = inputs.side
        if not isinstance(side, str):
            raise ValueError("the ONNX Runtime backend takes the side as 'left'/'right'")
        inputs = self._with_window(inputs)
        feed = self._feed(inputs, state)
        live = self._window_shape is None or window_is_live(feed["imu_features"], feed["imu_valid"])
        graph = self._graph(side, "live" if live else "masked")
        return self._outputs(graph.output_names, graph.run(feed))

    def encode_vision(self, inputs: ModelInputs, state: torch.Tensor | None = None) -> VisionEncoding:
        """The vision half of a frame (:meth:`AviHtModel.encode_vision`; :func:`splits_frame` models)."""
        self._check_split()
        feed = self._feed(inputs, state, _VISION_INPUTS)
        return VisionEncoding(*(torch.from_numpy(value) for value in self._graph("", "vision").run(feed)))

    def fuse(self, inputs: ModelInputs, vision: VisionEncoding) -> ModelOutputs:
        """The fusion half (:meth:`AviHtModel.fuse`) on :meth:`encode_vision`'s result for the frame."""
        self._check_split()
        inputs = self._with_window(inputs)
        feed = self._feed(inputs, None, _FUSE_MODEL_INPUTS)
        feed.update({name: _as_array(value, np.float32) for name, value in zip(_VISION_FEED, vision)})
        live = window_is_live(feed["imu_features"], feed["imu_valid"])
        graph = self._graph(inputs.side, "fuse-live" if live else "fuse-masked")
        return self._outputs(graph.output_names, graph.run(feed))[0]

    def prepare(self, side: str, split: bool = False) -> "OnnxFrameModel":
        """Build (export, load, check) every graph of ``side`` now; ``split``: also the two halves'
        graphs (:meth:`encode_vision`, :meth:`fuse`) of a :func:`splits_frame` model."""
        for kind in (("live", "masked") if self.config.uses_imu else ("live",)):
            self._graph(side, kind)
        if split:
            self._check_split()
            self._graph("", "vision")
            for kind in ("fuse-live", "fuse-masked"):
                self._graph(side, kind)
        return self

    def _check_split(self) -> None:
        if not splits_frame(self.model):
            raise ValueError(f"the {self.config.type} model does not run a frame in two halves")

    def _with_window(self, inputs: ModelInputs) -> ModelInputs:
        """``inputs`` with a window: no window at all (glove absent) = every sensor dead, as the
        eager model reads it."""
        if self._window_shape is None or inputs.imu_features is not None:
            return inputs
        shape = (inputs.batch_size, *self._window_shape)
        return dataclasses.replace(inputs, imu_features=torch.zeros(*shape, 3), imu_valid=torch.zeros(shape, dtype=torch.bool))

    # -- graphs ------------------------------------------------------------------------------
    def _graph(self, side: str, kind: str) -> _Graph:
        key = (side, kind)
        if key not in self._graphs:
            graph = self._build(side, kind)
            self._check(graph, side, kind)
            self._graphs[key] = graph
        return self._graphs[key]

    # Graph kinds: "live" / "masked" (the whole frame, per IMU-window kind), "vision" (the vision
    # half, side-independent: built under side ""), "fuse-live" / "fuse-masked" (the fusion half).
    def _build(self, side: str, kind: str) -> _Graph:
        import onnxruntime

        window_kind = kind.removeprefix("fuse-") if kind != "vision" else "live"
        # the masked graphs are recorded on a frame with dead sensors: the general path everywhere
        example = dataclasses.replace(  # (the vision half has no side: any will do for the example)
            self._probe_inputs(window_kind, np.random.default_rng(0))[1 if window_kind == "masked" else 0],
            side=side or "right")
        full = self._full_inputs(example, self.initial_state())
        with torch.inference_mode():
            produced = self.model(example, None)[0]
        outputs = tuple(name for name in _OUTPUTS if getattr(produced, name) is not None)
        if kind == "vision":
            step: nn.Module = _VisionStep(self.model)
            input_names, args = _VISION_INPUTS, tuple(full[name] for name in _VISION_INPUTS)
            output_names = _VISION_FEED + ("new_state",)
        elif kind.startswith("fuse-"):
            step = _FuseStep(self.model, side, outputs)
            with torch.inference_mode():
                vision = self.model.encode_vision(example, None)
            input_names = _FUSE_INPUTS
            args = (*(full[name] for name in _FUSE_MODEL_INPUTS), *vision[:-1])
            output_names = outputs
        else:
            step = _FrameStep(self.model, side, outputs)
            input_names, args = _INPUTS, tuple(full[name] for name in _INPUTS)
            output_names = outputs + (("new_state",) if self.config.uses_vision else ())
        buffer = io.BytesIO()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # the exporter narrates every Python-side branch and tensor-to-int it records;
                # the parity check below is what decides whether the graph is right
                warnings.simplefilter("ignore")
                torch.onnx.export(step.eval(), args, buffer, output_names=list(output_names),
                                  input_names=[name for name, value in zip(input_names, args) if value is not None],
                                  opset_version=_OPSET, dynamo=False, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means: this backend cannot run the model
            raise BackendError(f"ONNX export of the {self.config.type} model ({side}, {kind}) failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # worker threads sleep when idle instead of spinning (the nodes share a few cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - e.g. an op without a CPU kernel
            raise BackendError(f"ONNX Runtime cannot load the {self.config.type} model's graph ({side}, {kind}): "
                               f"{type(exc).__name__}: {exc}") from exc
        return _Graph(session, tuple(i.name for i in session.get_inputs()), output_names)

    def _check(self, graph: _Graph, side: str, kind: str) -> None:
        """Compare the graph with the eager model on the probe frames of ``kind`` (a half's graph
        with that half of the eager model, fed the eager vision half's result)."""
        state = None
        worst = (0.0, "")
        window_kind = kind.removeprefix("fuse-") if kind != "vision" else "live"
        for index, inputs in enumerate(self._probe_inputs(window_kind, np.random.default_rng(1))):
            inputs = dataclasses.replace(inputs, side=side or "right")
            feed = self._feed(inputs, state)
            with torch.inference_mode():
                if kind in ("live", "masked"):
                    outputs, new_state = self.model(inputs, state)
                    expected = {**{name: getattr(outputs, name) for name in _OUTPUTS
                                   if getattr(outputs, name) is not None}, "new_state": new_state}
                else:
                    vision = self.model.encode_vision(inputs, state)
                    new_state = vision.state
                    if kind == "vision":
                        expected = dict(zip(_VISION_FEED + ("new_state",), vision))
                    else:
                        outputs = self.model.fuse(inputs, vision)
                        expected = {name: getattr(outputs, name) for name in graph.output_names}
                        feed.update({name: _as_array(value, np.float32) for name, value in zip(_VISION_FEED, vision)})
            got = dict(zip(graph.output_names, graph.run(feed)))
            for name in graph.output_names:
                reference = expected[name]
                error = (float(np.max(np.abs(got[name].astype(np.float64) - reference.numpy().astype(np.float64))))
                         if reference.numel() else 0.0)
                if not np.isfinite(error) or error > worst[0]:
                    worst = (error if np.isfinite(error) else float("inf"), f"{name} on probe frame {index}")
            state = new_state
        if not worst[0] <= PARITY_TOLERANCE:
            raise BackendError(f"the ONNX graph of the {self.config.type} model ({side}, {kind} graph) differs "
                               f"from the PyTorch model by {worst[0]:.3g} (> {PARITY_TOLERANCE:g}) in {worst[1]}")

    def _probe_inputs(self, kind: str, rng: np.random.Generator) -> list[ModelInputs]:
        """Frames exercising ``kind``'s graph: a plausible crop camera, random crops and windows;
        ``masked``: dead sensors, a non-finite sample, a window with nothing valid, the hand out of view."""
        from avi_ht_ros.models.bench import synthetic_frame_inputs

        frames = []
        for index in range(4):
            inputs = synthetic_frame_inputs(self.model, seed=int(rng.integers(1 << 31)))
            inputs.hand_scale = torch.tensor([0.9 + 0.2 * float(rng.random())])
            if self.config.uses_vision:
                inputs.view_valid = torch.tensor([[index != 3]])
            if self.config.uses_imu and kind == "masked":
                t, f = self._window_shape
                valid = torch.from_numpy(rng.random((1, t, f)) > (0.3, 0.0, 1.0, 0.05)[index])
                if index == 1:  # a third of the sensors dead (every row of theirs), one non-finite sample
                    assignment = self.model.imu_encoder.sensor_assignment
                    valid[..., assignment[: max(1, assignment.shape[0] // 3)].any(dim=0)] = False
                    inputs.imu_features[0, 5, f - 1, 1] = float("nan")
                inputs.imu_valid = valid
            frames.append(inputs)
        return frames

    # -- conversion --------------------------------------------------------------------------
    def _full_inputs(self, inputs: ModelInputs, state: torch.Tensor | None,
                     names: tuple[str, ...] = _INPUTS) -> dict[str, torch.Tensor | None]:
        """The inputs ``names`` of ``inputs``, absent masks and state defaulted (None where the
        model takes no such input)."""
        values = {name: getattr(inputs, name) for name in names if name != "state"}
        if self.config.uses_vision:
            if "view_valid" in values and values["view_valid"] is None:
                values["view_valid"] = torch.ones(1, inputs.crops.shape[1], dtype=torch.bool)
            if "state" in names:
                values["state"] = self.initial_state() if state is None else state
        elif "state" in names:
            values["state"] = None
        if self.config.uses_imu and "imu_valid" in values and values["imu_valid"] is None:
            values["imu_valid"] = torch.ones(values["imu_features"].shape[:-1], dtype=torch.bool)
        return values

    def _feed(self, inputs: ModelInputs, state: torch.Tensor | None,
              names: tuple[str, ...] = _INPUTS) -> dict[str, np.ndarray]:
        """The inputs ``names`` (default: every input the model takes; :meth:`_full_inputs`) as
        C-contiguous NumPy arrays of their graph's dtype; a graph may use fewer (:meth:`_Graph.run`
        picks its own). Shapes are checked here, once per frame."""
        feed = {name: _as_array(value, np.bool_ if name in ("view_valid", "imu_valid") else np.float32)
                for name, value in self._full_inputs(inputs, state, names).items() if value is not None}
        if self._window_shape is not None and "imu_features" in feed \
                and feed["imu_features"].shape[1:3] != self._window_shape:
            raise ValueError(f"IMU window must be [1, {self._window_shape[0]}, {self._window_shape[1]}, 3], "
                             f"got {tuple(feed['imu_features'].shape)}")
        if self.config.uses_vision and "crops" in feed:
            size, views = self.config.vision_encoder.crop_size, self.config.vision_encoder.num_views
            if feed["crops"].shape != (1, views, size, size):
                raise ValueError(f"crops must be [1, {views}, {size}, {size}], got {tuple(feed['crops'].shape)}")
        return feed

    def _outputs(self, names: tuple[str, ...], values: list[np.ndarray]) -> tuple[ModelOutputs, torch.Tensor | None]:
        got = {name: torch.from_numpy(value) for name, value in zip(names, values)}
        state = got.pop("new_state", None)
        outputs = ModelOutputs(root_relative=self.root_relative, **got)
        return outputs, state


def _as_array(value: torch.Tensor | np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(value.detach().numpy() if isinstance(value, torch.Tensor) else value, dtype=dtype)


def inference_model(model: HandPoseModel, backend: str = "auto", num_threads: int = 1,
                    sides: tuple[str, ...] = ()) -> tuple[HandPoseModel | OnnxFrameModel, str]:
    """``model`` wrapped for per-frame inference on ``backend`` (:data:`~avi_ht_ros.models.config.INFERENCE_BACKENDS`); graphs of
    ``sides`` are built now. Returns ``(model, note)``: the note says which backend runs and,
    when ``auto`` fell back to PyTorch, why."""
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f"inference backend must be one of {INFERENCE_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return model.eval(), runtime_name(model)
    try:
        wrapped = OnnxFrameModel(model, num_threads=num_threads)
        for side in sides:
            wrapped.prepare(side)
    except BackendError as exc:
        if backend == "onnxruntime":
            raise
        return model.eval(), f"{runtime_name(model)} (ONNX Runtime not used: {exc})"
    return wrapped, runtime_name(wrapped)


def runtime_name(model: HandPoseModel | OnnxFrameModel) -> str:
    """What runs ``model``'s network: ``"ONNX Runtime <version>"`` or ``"PyTorch"``."""
    if isinstance(model, OnnxFrameModel):
        import onnxruntime

        return f"ONNX Runtime {onnxruntime.__version__}"
    return "PyTorch"


__all__ = ["PARITY_TOLERANCE", "BackendError", "OnnxFrameModel", "inference_model",
           "onnxruntime_available", "runtime_name", "splits_frame", "window_is_live"]
