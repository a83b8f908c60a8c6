"""Per-frame inference latency of the models (``avi-ht bench model`` calls :func:`benchmark_models`).

What is timed: one ``model(inputs, state)`` call — batch 1, one view, the recurrent state
carried from the previous call, under ``torch.inference_mode()`` on ``num_threads`` CPU
threads (default 1) — i.e. exactly the per-frame work of the live tracker's network step
(crop making and IMU feature extraction excluded). The models of one backend are timed
*interleaved* (one frame of each per round, order rotating) so background load affects them
alike and the ratio is fair; backends are timed one after the other, as a deployment runs one
runtime (eager PyTorch frames between ONNX Runtime frames leave PyTorch's working set in the
caches and made the fused/vision-only ratio on ONNX Runtime 1.28-1.31 instead of 1.20-1.24,
docs/MODEL.md). Inputs are synthetic (random crops, a plausible virtual camera, random IMU
window).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from avi_ht_ros.models.config import ModelConfig, load_experiment_config
from avi_ht_ros.models.factory import build_model
from avi_ht_ros.models.interface import HandPoseModel, ModelInputs
from avi_ht_ros.models.onnx_backend import OnnxFrameModel


@dataclass(frozen=True)
class LatencyResult:
    """Per-frame latency statistics of one model, milliseconds."""

    name: str
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    cpu_p50_ms: float
    """Thread CPU time (excludes time the thread waited for a core: shows background load)."""
    cpu_p99_ms: float
    iterations: int
    parameters: int


def synthetic_frame_inputs(model: HandPoseModel, batch_size: int = 1, seed: int = 0) -> ModelInputs:
    """Random inputs of the shapes ``model`` expects (a 96-px crop seen by a ~77° virtual camera)."""
    generator = torch.Generator().manual_seed(seed)
    config: ModelConfig = model.config
    vision = config.vision_encoder
    inputs = ModelInputs(hand_scale=torch.ones(batch_size))
    if config.uses_vision:
        views, size = vision.num_views, vision.crop_size
        focal = float(size / 2.0 / np.tan(np.deg2rad(38.5)))
        centre = (size - 1) / 2.0  # pixel-centre convention of avi_ht_ros.common.camera
        K = torch.tensor([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])
        inputs.crops = torch.rand(batch_size, views, size, size, generator=generator)
        inputs.K_virtual = K.expand(batch_size, views, 3, 3).clone()
        inputs.R_virtual_from_camera = torch.eye(3).expand(batch_size, views, 3, 3).clone()
    if config.uses_imu:
        encoder = model.imu_encoder
        inputs.imu_features = torch.randn(
            batch_size, encoder.window_length, encoder.num_features, 3, generator=generator
        )
        inputs.imu_valid = torch.ones(batch_size, encoder.window_length, encoder.num_features, dtype=torch.bool)
    return inputs


def measure_latencies(
    models: dict[str, HandPoseModel], iterations: int = 500, warmup: int = 50, num_threads: int = 1
) -> dict[str, LatencyResult]:
    """Time ``models`` interleaved, each on its own synthetic batch-1 input with its recurrent state."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        names = list(models)
        inputs = {name: synthetic_frame_inputs(_eager(models[name])) for name in names}
        states = {name: None for name in names}
        samples = {name: [] for name in names}
        cpu_samples = {name: [] for name in names}
        for model in models.values():
            model.eval()
        with torch.inference_mode():
            for round_index in range(warmup + iterations):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    start, cpu_start = time.perf_counter(), time.thread_time()
                    _, states[name] = models[name](inputs[name], states[name])
                    elapsed, cpu_elapsed = time.perf_counter() - start, time.thread_time() - cpu_start
                    if round_index >= warmup:
                        samples[name].append(elapsed * 1e3)
                        cpu_samples[name].append(cpu_elapsed * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    results = {}
    for name in names:
        times = np.asarray(samples[name])
        cpu_times = np.asarray(cpu_samples[name])
        results[name] = LatencyResult(
            name=name,
            p50_ms=float(np.percentile(times, 50)),
            p99_ms=float(np.percentile(times, 99)),
            mean_ms=float(times.mean()),
            max_ms=float(times.max()),
            cpu_p50_ms=float(np.percentile(cpu_times, 50)),
            cpu_p99_ms=float(np.percentile(cpu_times, 99)),
            iterations=len(times),
            parameters=sum(p.numel() for p in models[name].parameters()),
        )
    return results


def _eager(model: HandPoseModel | OnnxFrameModel) -> HandPoseModel:
    return model.model if isinstance(model, OnnxFrameModel) else model


def timed_name(name: str, backend: str) -> str:
    """Row name of ``name`` run on ``backend`` (PyTorch rows keep the plain name)."""
    return name if backend == "torch" else f"{name}@{backend}"


def format_latency_table(results: dict[str, LatencyResult], reference: str | None = "vision_only") -> str:
    """Plain-text table; with ``reference`` present, adds each model's p50/p99 ratio to it."""
    header = (f"{'model':<24}{'params':>10}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'max ms':>9}"
              f"{'cpu p50':>9}{'cpu p99':>9}")
    with_ratio = reference in results
    if with_ratio:
        header += f"{'p50 ratio':>11}{'p99 ratio':>11}"
    lines = [header, "-" * len(header)]
    for r in results.values():
        line = (f"{r.name:<24}{r.parameters:>10,}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.mean_ms:>9.3f}{r.max_ms:>9.3f}"
                f"{r.cpu_p50_ms:>9.3f}{r.cpu_p99_ms:>9.3f}")
        if with_ratio:
            ref = results[reference]
            line += f"{r.p50_ms / ref.p50_ms:>11.3f}{r.p99_ms / ref.p99_ms:>11.3f}"
        lines.append(line)
    return "\n".join(lines)


def benchmark_models(
    configs: dict[str, ModelConfig] | None = None,
    iterations: int = 500,
    warmup: int = 50,
    num_threads: int = 1,
    seed: int = 0,
    print_table: bool = True,
    backends: tuple[str, ...] = ("torch",),
) -> dict[str, LatencyResult]:
    """Build the models (default: the shipped ``config/model_{avi_ht,vision_only,imu_only}.yaml``),
    time them on every backend of ``backends`` ("torch", "onnxruntime": the same weights; the
    models of a backend interleaved, the backends in turn), print a table per backend.

    Returns ``{timed_name(name, backend): LatencyResult}``; the fused/vision-only ratio on PyTorch
    is ``results["avi_ht"].p50_ms / results["vision_only"].p50_ms``.
    """
    if configs is None:
        configs = {name: load_experiment_config(f"model_{name}.yaml").model
                   for name in ("avi_ht", "vision_only", "imu_only")}
    torch.manual_seed(seed)
    models = {name: build_model(config) for name, config in configs.items()}
    results: dict[str, LatencyResult] = {}
    for backend in backends:
        timed = {timed_name(name, backend): (
            model if backend == "torch" else OnnxFrameModel(model, num_threads=num_threads).prepare("right"))
            for name, model in models.items()}
        results.update(measure_latencies(timed, iterations=iterations, warmup=warmup, num_threads=num_threads))
    if print_table:
        print(f"per-frame latency, batch 1, {num_threads} thread(s), {iterations} frames after {warmup} warm-up")
        for backend in backends:
            rows = {timed_name(name, backend): results[timed_name(name, backend)] for name in models}
            print(f"\n{backend}:")
            print(format_latency_table(rows, reference=timed_name("vision_only", backend)))
    return results
