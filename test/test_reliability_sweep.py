"""``avi-ht reliability --dead-sensors-sweep``: MKPE vs k dead IMUs, on a tiny self-made
checkpoint and a tiny benchmark (the numbers are meaningless; the plumbing is tested: every
k runs, the IMUs really are dead in what the tracker sees, the table and JSON come out).
The figure for the shipped checkpoint is produced by the command in docs/RELIABILITY.md."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avi_ht_ros import cli
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.models.checkpoint import save_checkpoint
from avi_ht_ros.models.config import (FusionConfig, HeadConfig, ImuEncoderConfig, ModelConfig, SensorDropoutConfig,
                                      VisionEncoderConfig)
from avi_ht_ros.models.factory import build_model
from avi_ht_ros.tracker import evaluate as E
from avi_ht_ros.tracker.reliability import STATE_COLUMNS, dead_sensor_sets, dead_sensor_sweep
from avi_ht_ros.tracker.tracker import TrackerConfig
from reliability_log import record

SMALL = ["--sequences", "1", "--duration", "1.0", "--image-scale", "0.25"]


def small_model(kind: str):
    torch.manual_seed(0)
    config = ModelConfig(
        type=kind, embed_dim=32,
        imu_encoder=ImuEncoderConfig(model_dim=24, num_heads=2, feedforward_dim=24, mlp_hidden_dim=32),
        vision_encoder=VisionEncoderConfig(stem_channels=8, stage_channels=(8, 16, 32), blocks_per_stage=(1, 1, 1),
                                           ftl_groups=8, recurrent_channels=16),
        fusion=FusionConfig(num_heads=2, feedforward_dim=32), head=HeadConfig(hidden_dim=64),
        sensor_dropout=SensorDropoutConfig(enabled=False))
    return build_model(config, GloveModel.reference()).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("sweep") / "tiny_avi_ht.pt", small_model("avi_ht"))


@pytest.fixture(scope="module")
def render_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("render_cache")


@pytest.fixture(scope="module")
def sequences(render_cache):
    config = E.load_benchmark_config()
    specs = E.benchmark_sequences(config, None, E.WorldOverrides(duration_s=1.0, image_scale=0.25))[:1]
    return list(E.prepare_benchmark(specs, render_cache, jobs=0))


def test_dead_sensor_sets_are_deterministic_and_distinct():
    sets = dead_sensor_sets(12, range(13), 3, seed=4)
    assert sets[0] == [()] and sets[12] == [tuple(range(12))] and len(sets[11]) == 3
    assert all(len(set(s)) == len(s) == 3 for s in [sets[k] for k in range(1, 12)])
    assert all(len(d) == k for k in range(13) for d in sets[k])
    assert sets == dead_sensor_sets(12, range(13), 3, seed=4)
    with pytest.raises(ConfigError, match="--ks"):
        dead_sensor_sets(12, [13], 1, 0)


def test_sweep_runs_every_k_with_the_imus_really_dead(sequences, monkeypatch):
    model = E.EvalModel("tiny", small_model("avi_ht"))
    dead_seen = []  # per evaluation run: the IMUs dead in every sample of every window the tracker got
    real_evaluate = E.evaluate

    def observed(models, seqs, options=None, **kwargs):
        windows = []
        result = real_evaluate(models, seqs, options, window_observer=lambda info: windows.append(
            info["window"]["status"]), **kwargs)
        dead_seen.append({tuple(np.nonzero((status == 3).all(axis=0))[0]) for status in windows})
        return result

    monkeypatch.setattr(E, "evaluate", observed)
    options = E.EvalOptions(ekf=False, progress=False, tracker=TrackerConfig(lost_sigma_m=1.0))
    rows = dead_sensor_sweep(model, sequences, subsets=1, seed=1, options=options)
    assert [r["k"] for r in rows] == list(range(13))
    frames = {r["frames"] for r in rows}
    assert len(frames) == 1 and frames.pop() > 10  # every k scored on the same frames
    for row, seen in zip(rows, dead_seen):
        (run,) = row["runs"]
        assert len(run["dead_sensors"]) == row["k"]
        assert seen == {tuple(run["dead_sensors"])}, (row["k"], seen)  # exactly these IMUs were dead
        assert np.isfinite(row["mkpe_mm"]) and np.isfinite(row["mkpe_t_mm"]) and row["sigma_mm"] > 0
        assert abs(sum(row["tracking_states"].values()) - 1.0) < 1e-6
    assert all(rows[k]["tracking_states"]["ok"] == 0.0 for k in range(1, 13))  # never OK with a dead IMU
    assert rows[12]["tracking_states"]["degraded"] == 0.0 and rows[12]["tracking_states"]["imu_only"] == 0.0


def test_command_prints_the_table_and_writes_json(checkpoint, tmp_path, capsys, sequences, render_cache):
    out = tmp_path / "dead.json"
    code = cli.main(["reliability", str(checkpoint), "--benchmark", *SMALL, "--cache-dir", str(render_cache),
                     "--dead-sensors-sweep", "--ks", "0", "1", "6", "12", "--subsets", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "MKPE vs dead IMUs" in text and "| k dead | sets | frames | MKPE mm |" in text
    data = json.loads(out.read_text())
    assert [r["k"] for r in data["rows"]] == [0, 1, 6, 12]
    assert [len(r["runs"]) for r in data["rows"]] == [1, 2, 2, 1]
    assert set(data["rows"][0]["tracking_states"]) == set(STATE_COLUMNS)
    record("MKPE vs k dead IMUs (command check, tiny untrained model)",
           "`avi-ht reliability CKPT --benchmark --dead-sensors-sweep` on a 1 s benchmark sequence", 4,
           "runs k = 0, 1, 6, 12 (2 IMU sets each for 0 < k < 12), prints the table, writes JSON; figures of "
           "the shipped checkpoint: see the command in docs/RELIABILITY.md",
           rows=[{k: r[k] for k in ("k", "mkpe_mm", "mkpe_t_mm", "sigma_mm")} for r in data["rows"]])


def test_command_refuses_what_it_cannot_sweep(tmp_path, capsys):
    vision = save_checkpoint(tmp_path / "vision.pt", small_model("vision_only"))
    assert cli.main(["reliability", str(vision), "--benchmark", *SMALL, "--dead-sensors-sweep"]) == 2
    assert "does not use the glove" in capsys.readouterr().err
    assert cli.main(["reliability", str(vision), "--benchmark", *SMALL]) == 2
    assert "--dead-sensors-sweep" in capsys.readouterr().err
