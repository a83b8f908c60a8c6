"""Evaluation end to end (avi_ht_ros.tracker.evaluate, `avi-ht eval`, `avi-ht bench`) on a tiny benchmark.

Tiny randomly initialised models, two 1-s sequences of 40 frames at 160x120 (one right hand with no
occluders, one left hand with heavy occlusion): the numbers are meaningless, the plumbing is
what is tested — live synchronizer + online tracker on the same frames for every method, the
EKF row, the report files, and that the sensitivity sweeps really shift / mask / re-noise the
glove stream the model sees.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from avi_ht_ros import cli
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.paths import share_path
from avi_ht_ros.models.checkpoint import load_checkpoint, save_checkpoint
from avi_ht_ros.models.config import (
    FusionConfig,
    HeadConfig,
    ImuEncoderConfig,
    ModelConfig,
    SensorDropoutConfig,
    VisionEncoderConfig,
)
from avi_ht_ros.models.factory import build_model
from avi_ht_ros.sim.world import WorldConfig
from avi_ht_ros.tracker import evaluate as E
from avi_ht_ros.tracker import metrics as M
from avi_ht_ros.tracker.tracker import TRACKING_DEGRADED, TRACKING_OK, TrackerConfig

SMALL_WORLD = WorldConfig(duration_s=1.0, camera_rate_hz=40.0, image_scale=0.25)
SHIFT_S = 0.2
PERIOD_NS = 5_000_000


def tiny_config(model_type: str) -> ModelConfig:
    return ModelConfig(
        type=model_type, embed_dim=32,
        imu_encoder=ImuEncoderConfig(model_dim=24, num_heads=2, feedforward_dim=24, mlp_hidden_dim=32),
        vision_encoder=VisionEncoderConfig(stem_channels=8, stage_channels=(8, 16, 32), blocks_per_stage=(1, 1, 1),
                                           ftl_groups=8, recurrent_channels=16),
        fusion=FusionConfig(num_heads=2, feedforward_dim=32), head=HeadConfig(hidden_dim=64),
        sensor_dropout=SensorDropoutConfig(enabled=False))


@pytest.fixture(scope="module")
def glove() -> GloveModel:
    return GloveModel.reference()


@pytest.fixture(scope="module")
def models(glove) -> list[E.EvalModel]:
    torch.manual_seed(0)
    return [E.EvalModel(kind, build_model(tiny_config(kind), glove).eval()) for kind in ("avi_ht", "vision_only",
                                                                                       "imu_only")]


@pytest.fixture(scope="module")
def sequences() -> list[E.EvalSequence]:
    specs = [E.SequenceSpec("low_right", 7, SMALL_WORLD.with_occlusion("low"), "low"),
             E.SequenceSpec("heavy_left", 8, SMALL_WORLD.with_occlusion("heavy").replace(sides=("left",)), "heavy")]
    return list(E.prepare_benchmark(specs, cache_dir=None, jobs=0))


@pytest.fixture(scope="module")
def run(models, sequences):
    """One evaluation with every sweep (few points), recording the windows the IMU models see."""
    seen: dict[tuple[str, str, str, int], dict] = {}

    def observer(info):
        seen[(info["track"], info["condition"], info["model"], info["frame"])] = info["window"]

    options = E.EvalOptions(sensitivity=("noise", "shift", "ablation"), noise_scales=(0.0, 2.0),
                            time_shifts_s=(-SHIFT_S, 0.0, SHIFT_S), ablation_groups=("index", "hand_back"),
                            tracker=TrackerConfig(lost_sigma_m=1.0), progress=False)
    expected = sum(s.num_frames * len(s.hands) for s in sequences)
    results = E.evaluate(models, sequences, options, expected_frames=expected, source={"benchmark": "tiny"},
                         window_observer=observer)
    return results, results.metrics(), seen


# ------------------------------------------------------------------------------ same frames, baselines
def test_every_method_runs_on_the_same_synchronized_frames(run):
    results, data, _ = run
    assert set(data["overall"]) == {"avi_ht", "vision_only", "imu_only", "vision_only+ekf"}
    for track in results.tracks:
        processed = [track.predictions[(E.NOMINAL, m)].processed for m in data["overall"]]
        assert all(np.array_equal(processed[0], p) for p in processed)
        assert processed[0].sum() >= track.num_frames - 1  # the synchronizer emits (nearly) every frame
    frames = {m: s["frames"] for m, s in data["overall"].items()}
    assert len(set(frames.values())) == 1 and frames["avi_ht"] == sum(t.truth_valid.sum() for t in results.tracks)


def test_truth_crops_add_a_diagnostic_row_per_vision_model(models, sequences):
    options = E.EvalOptions(truth_crops=True, sensitivity=("shift",), time_shifts_s=(0.0, SHIFT_S),
                            tracker=TrackerConfig(lost_sigma_m=1.0), progress=False)
    results = E.evaluate(models, sequences[:1], options)
    data = results.metrics()
    assert set(data["overall"]) == {"avi_ht", "vision_only", "imu_only", "vision_only+ekf",
                                    "avi_ht@truth_crop", "vision_only@truth_crop"}
    assert data["reference"] == "vision_only"  # the diagnostic row is never the reference
    assert set(data["sensitivity"]["shift"]["curves"]) == {"avi_ht", "imu_only", "vision_only+ekf"}  # not swept
    track = results.tracks[0]
    truth_crop = track.predictions[(E.NOMINAL, "vision_only@truth_crop")]
    online = track.predictions[(E.NOMINAL, "vision_only")]
    assert not np.allclose(truth_crop.landmarks, online.landmarks)  # other crops, other estimates


def test_ekf_row_filters_the_vision_estimate(run):
    results, data, _ = run
    ekf = data["overall"]["vision_only+ekf"]
    assert np.isfinite([ekf["mkpe_mm"], ekf["mkpe_t_mm"], ekf["pck_auc"], ekf["angle_error_deg"]]).all()
    track = results.tracks[0]
    vision = track.predictions[(E.NOMINAL, "vision_only")]
    filtered = track.predictions[(E.NOMINAL, "vision_only+ekf")]
    done = filtered.processed
    # the gyros moved the joints away from the raw vision angles, the wrist pose is vision's
    assert np.abs(filtered.joint_angles[done] - vision.joint_angles[done]).max() > 1e-3
    np.testing.assert_allclose(filtered.wrist_translation[done], vision.wrist_translation[done])
    hand_scale = track.info["hand_scale"]
    from avi_ht_ros.common.hand_model import forward_kinematics_numpy
    fk = forward_kinematics_numpy(filtered.joint_angles[done], filtered.wrist_rotation[done],
                                  filtered.wrist_translation[done], hand_scale, track.side)
    np.testing.assert_allclose(filtered.landmarks[done], fk.landmarks, atol=1e-9)


def test_imu_only_is_scored_wrist_aligned_only(run):
    _, data, _ = run
    imu = data["overall"]["imu_only"]
    assert np.isnan(imu["mkpe_mm"]) and np.isnan(imu["pck_auc"]) and np.isnan(imu["jitter_mm_f2"])
    assert np.isfinite(imu["mkpe_t_mm"]) and np.isfinite(imu["pck_auc_t"]) and np.isfinite(imu["pa_mpjpe_mm"])
    for method in ("avi_ht", "vision_only"):
        assert np.isfinite(data["overall"][method]["mkpe_mm"])


def test_breakdowns_cover_the_scored_frames(run):
    _, data, _ = run
    bins = data["occlusion_bins"]["avi_ht"]
    assert sum(b["frames"] for b in bins.values()) == data["overall"]["avi_ht"]["frames"]
    assert sum(b["frames"] for b in bins.values() if b["frames"]) and bins["0-25%"]["frames"] >= 0
    activities = data["activities"]["vision_only"]
    assert sum(a["frames"] for a in activities.values()) == data["overall"]["vision_only"]["frames"]
    scored_tracks = sum(1 for t in data["tracks"].values() if t["scored_frames"])
    for table in (bins, data["distance_bins"]["avi_ht"]):
        assert all((b["tracks"] > 0) == (b["frames"] > 0) and b["tracks"] <= scored_tracks for b in table.values())
    distances = data["distance_bins"]["avi_ht"]
    assert list(distances) == list(M.DISTANCE_BIN_LABELS)
    assert sum(b["frames"] for b in distances.values()) == data["overall"]["avi_ht"]["frames"]
    assert np.isnan(data["overall"]["imu_only"]["wrist_range_bias_mm"])  # root-relative: no distance
    assert np.isfinite(data["overall"]["avi_ht"]["wrist_range_error_mm"])
    assert len(data["per_joint_angle_error_deg"]["avi_ht"]) == 22
    assert "avi_ht" in data["reduction_vs_reference"] and data["reference"] == "vision_only"


# ------------------------------------------------------------------------------ sweeps reach the model
def test_time_shift_moves_the_glove_stream_the_model_sees(run, sequences):
    _, _, seen = run
    glove = sequences[0].hands["right"].glove
    shift_ns = int(SHIFT_S * 1e9)
    checked = 0
    for (track, condition, model, frame), window in seen.items():
        if track != "low_right/right" or model != "avi_ht" or condition not in (E.NOMINAL, f"shift={SHIFT_S:+.3f}s",
                                                                                 f"shift={-SHIFT_S:+.3f}s"):
            continue
        camera_ns = int(sequences[0].stamps_ns[frame])
        newest = int(window["stamps_ns"][-1])
        assert abs(newest - camera_ns) <= PERIOD_NS // 2  # the window is anchored at the frame, as live
        delta = 0 if condition == E.NOMINAL else (shift_ns if "+" in condition else -shift_ns)
        # ... but its newest sample is the one recorded at t + delta (offset 0 in this world)
        source = int(np.argmin(np.abs(glove.stamps_ns - (newest + delta))))
        assert abs(int(glove.stamps_ns[source]) - (camera_ns + delta)) <= PERIOD_NS // 2
        np.testing.assert_array_equal(window["gyro"][-1], glove.gyro[source])
        checked += 1
    assert checked >= 3 * 35


def test_ablation_masks_exactly_the_group_sensors(run, glove):
    results, data, seen = run
    groups = E.sensor_groups(glove)
    assert groups["index"] == (0, 1) and groups["hand_back"] == (11,) and groups["thumb"] == (8, 9, 10)
    counted = {"drop=index": 0, "drop=hand_back": 0}
    for (track, condition, model, frame), window in seen.items():
        if condition not in counted:
            continue
        dead = (window["status"] == 3).all(axis=0)
        assert set(np.flatnonzero(dead)) == set(groups[condition.split("=")[1]])
        assert (window["gyro"][:, dead] == 0).all()
        counted[condition] += 1
    assert min(counted.values()) >= 35
    track = results.tracks[0]
    nominal = track.predictions[(E.NOMINAL, "avi_ht")].tracking_state
    ablated = track.predictions[("drop=index", "avi_ht")].tracking_state
    # (an untrained model often predicts the hand out of view: those frames are IMU_ONLY in both runs)
    assert (nominal == TRACKING_OK).any() and not (nominal == TRACKING_DEGRADED).any()
    assert (ablated == TRACKING_DEGRADED).any() and not (ablated == TRACKING_OK).any()
    ablation = data["sensitivity"]["ablation"]
    assert list(ablation["methods"]["avi_ht"]["gap"]) == ["all", "index", "hand_back"]
    gap = ablation["methods"]["avi_ht"]["gap"]["all"]["mkpe_t_mm"]
    assert gap == pytest.approx(data["overall"]["avi_ht"]["mkpe_t_mm"] - data["overall"]["vision_only"]["mkpe_t_mm"])


def test_only_mode_keeps_just_the_group(glove):
    groups = E.sensor_groups(glove)
    condition = E.sweep_conditions("ablation", ["ring"], "only")[0]
    assert condition.label == "only=ring"
    assert set(condition.masked_sensors(groups)) == set(range(12)) - {4, 5}
    with pytest.raises(ConfigError):
        E.sweep_conditions("ablation", ["wrist"])


def test_noise_sweep_resimulates_the_glove(run, sequences):
    _, data, seen = run
    quiet = {k[3]: w for k, w in seen.items() if k[:3] == ("low_right/right", "noise=0", "avi_ht")}
    loud = {k[3]: w for k, w in seen.items() if k[:3] == ("low_right/right", "noise=2", "avi_ht")}
    nominal = {k[3]: w for k, w in seen.items() if k[:3] == ("low_right/right", E.NOMINAL, "avi_ht")}
    frame = sorted(quiet)[len(quiet) // 2]
    assert not np.array_equal(quiet[frame]["gyro"], loud[frame]["gyro"])
    assert not np.array_equal(quiet[frame]["gyro"], nominal[frame]["gyro"])
    np.testing.assert_array_equal(quiet[frame]["stamps_ns"], loud[frame]["stamps_ns"])
    noise = data["sensitivity"]["noise"]
    assert set(noise["curves"]) == {"avi_ht", "imu_only", "vision_only+ekf"} and noise["values"] == [0.0, 2.0]
    shift = data["sensitivity"]["shift"]
    # shift 0 is the nominal run (reused), so its value is the nominal one on the common frames
    assert set(shift["curves"]["avi_ht"]) == {"-0.2", "0", "0.2"}


def test_a_noise_level_whose_glove_cannot_be_calibrated_is_a_clear_error(sequences, monkeypatch):
    """Every noise level is the same glove with its errors scaled, worn and calibrated again; when
    the driver would refuse that calibration on every wearing (x10: turn-on biases of 0.2 g) the
    sweep stops with the level and sequence named, not a bare simulator message."""
    from avi_ht_ros.driver.calibration import CalibrationError
    from avi_ht_ros.sim import world

    def refuse(self, *args, **kwargs):
        raise CalibrationError("sensor index_distal: |accel| 8.64 m/s^2 is not g = 9.81 +- 1.0")

    monkeypatch.setattr(world.SequenceSimulator, "flat_hand_calibration", refuse)
    with pytest.raises(ConfigError, match=r"IMU noise x10: low_right: glove_mount_error_deg: .*refused on 20 "
                                          r"wearings.*index_distal"):
        sequences[0].glove_variant(10.0)


# ------------------------------------------------------------------------------ report files
def test_report_has_every_table_and_plot(run, tmp_path):
    results, data, _ = run
    files = E.write_report(results, tmp_path / "report", data)
    assert set(files) == {"report", "metrics", "fig4", "pck", "occlusion", "fig6", "fig7"}
    for kind in ("fig4", "pck", "occlusion", "fig6", "fig7"):
        content = files[kind].read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 10_000, kind
    text = files["report"].read_text()
    for heading in ("## Overall", "## Relative change vs `vision_only`", "## By occlusion", "## By hand distance", "## By activity",
                    "## Joint-angle error per DoF", "## Sensitivity: IMU noise", "## Sensitivity: camera–glove",
                    "## Per-finger sensor ablation", "## Tracking and synchronization", "## Timing"):
        assert heading in text, heading
    assert "| vision_only+ekf |" in text and "| imu_only | N/A | N/A |" in text
    assert " tr.) |" in text  # bins say how many hand tracks their frames come from
    stored = json.loads(files["metrics"].read_text())
    assert stored["overall"]["imu_only"]["mkpe_mm"] is None  # NaN -> null
    assert stored["overall"]["avi_ht"]["frames"] == data["overall"]["avi_ht"]["frames"]
    assert "vision_only+ekf" in stored["timing"]["step_ms"]
    assert E.summary_table(data).count("\n") >= 5


# ------------------------------------------------------------------------------ benchmark config
def test_default_benchmark_is_held_out_large_and_mixed():
    config = E.load_benchmark_config()
    specs = E.benchmark_sequences(config)
    assert sum(s.world.num_frames * len(s.world.sides) for s in specs) >= 3000
    assert min(s.seed for s in specs) >= 100000 and len({s.seed for s in specs}) == len(specs)
    assert {s.occlusion for s in specs} == {"low", "medium", "heavy"}
    assert {side for s in specs for side in s.world.sides} == {"left", "right"}
    fresh = E.benchmark_sequences(config, seed=5000, overrides=E.WorldOverrides(
        occlusion="heavy", hand_scale=1.1, noise_scale=2.0, time_offset_s=0.05, dead_sensors=("index_distal",)))
    assert [s.seed for s in fresh] == list(range(5000, 5000 + len(specs)))
    world = fresh[0].world
    assert world.hand_scale_range == (1.1, 1.1) and world.noise_scale == 2.0 and world.time_offset_s == 0.05
    assert world.dead_sensors == ("index_distal",) and world.occluder_rate_per_min == 12.0


def test_benchmark_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"seed": 1, "sequences": [{"count": 1, "occlusion": "extreme"}]}))
    with pytest.raises(ConfigError, match=r"sequences\[0\]\.occlusion"):
        E.load_benchmark_config(bad)
    bad.write_text(yaml.safe_dump({"sequences": [{"count": 1, "frame_rate": 30}]}))
    with pytest.raises(ConfigError, match=r"sequences\[0\]: frame_rate: unknown key"):
        E.load_benchmark_config(bad)
    bad.write_text(yaml.safe_dump({"sequences": [{"count": 1}], "colour": 1}))
    with pytest.raises(ConfigError, match="colour"):
        E.load_benchmark_config(bad)
    bad.write_text(yaml.safe_dump({"world_overrides": {"duration_s": -1.0}, "sequences": [{"count": 1}]}))
    with pytest.raises(ConfigError, match=r"bad.yaml: world_overrides: duration_s"):
        E.load_benchmark_config(bad)


def test_glove_data_transforms(sequences, glove):
    data = sequences[0].hands["right"].glove
    shifted = data.shifted(0.1)
    np.testing.assert_array_equal(shifted.stamps_ns, data.stamps_ns - 100_000_000)
    masked = data.masked([2, 3])
    assert (masked.status[:, [2, 3]] == 3).all() and (masked.accel[:, [2, 3]] == 0).all()
    np.testing.assert_array_equal(masked.gyro[:, 4:], data.gyro[:, 4:])
    noisy = data.with_white_noise(glove, 1.0, np.random.default_rng(0))
    spread = np.std(noisy.gyro - data.gyro)
    expected = glove.sites[0].imu.gyro_noise_density * np.sqrt(glove.sample_rate_hz)
    assert spread == pytest.approx(expected, rel=0.1)


# ------------------------------------------------------------------------------ bags and the CLI
def test_bag_sequence_matches_the_simulation(tmp_path):
    from avi_ht_ros.sim.world import simulate_sequence, write_sequence_bag

    world = WorldConfig(duration_s=1.0, camera_rate_hz=20.0, image_scale=0.25, time_offset_s=0.02)
    simulated = simulate_sequence(world, 21)
    write_sequence_bag(simulated, tmp_path / "bag")
    loaded = E.load_bag_sequence(tmp_path / "bag")
    assert loaded.time_offset_s == pytest.approx(0.02)
    np.testing.assert_array_equal(loaded.stamps_ns, simulated.camera_stamps_ns)
    np.testing.assert_array_equal(loaded.images[5], simulated.images[5])
    hand, truth = loaded.hands["right"], simulated.hands["right"]
    np.testing.assert_allclose(hand.truth.landmarks, truth.landmarks, atol=1e-9)
    np.testing.assert_allclose(hand.truth.wrist_rotation, truth.wrist_rotation, atol=1e-6)
    np.testing.assert_allclose(hand.truth.joint_angles, truth.joint_angles, atol=1e-6)
    np.testing.assert_allclose(hand.occlusion_ratio, truth.occlusion_ratio, atol=1e-6)
    np.testing.assert_array_equal(hand.glove.stamps_ns, simulated.gloves["right"].stamps_ns)
    np.testing.assert_allclose(hand.glove.gyro, simulated.gloves["right"].gyro, atol=1e-6)
    assert hand.truth_valid.all() and hand.hand_scale == pytest.approx(truth.hand_scale, rel=1e-6)
    assert loaded.info["malformed_glove_samples"] == {"right": 0}


def test_eval_and_bench_commands(tmp_path, glove, capsys):
    torch.manual_seed(1)
    paths = {}
    for kind in ("avi_ht", "vision_only"):
        paths[kind] = save_checkpoint(tmp_path / f"{kind}.pt", build_model(tiny_config(kind), glove).eval(),
                                      {"epoch": 3, "train_seeds": [77]})
    benchmark = tmp_path / "bench.yaml"
    benchmark.write_text(yaml.safe_dump({
        "name": "tiny", "seed": 77, "world_overrides": {"duration_s": 1.0, "camera_rate_hz": 30.0, "image_scale": 0.25},
        "sequences": [{"count": 1, "occlusion": "medium", "sides": ["right"]}]}))
    out = tmp_path / "report"
    code = cli.main(["eval", f"fused={paths['avi_ht']}", f"vision={paths['vision_only']}", "--benchmark",
                     str(benchmark), "--out", str(out), "--sensitivity", "shift", "--time-shifts", "0.1",
                     "--no-progress", "--jobs", "1"])
    printed = capsys.readouterr()
    assert code == 0
    assert "vision+ekf" in printed.out and f"report: {out / 'report.md'}" in printed.out
    assert "trained on evaluated seeds [77]" in printed.err
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["overall"]) == {"fused", "vision", "vision+ekf"}
    assert data["sensitivity"]["shift"]["values"] == [0.1] and (out / "fig7_sensitivity.png").exists()
    assert not (out / "fig6_ablation.png").exists()
    assert "not held out" in (out / "report.md").read_text()
    from avi_ht_ros.tracker.eval_cli import training_seeds
    assert training_seeds({"train_seeds": [3], "dataset": {"train_sequences": ["seq_12/right", "lab_7/left"],
                                                             "validation_sequences": ["seq_100000/left"]}}) \
        == {3, 12, 100000}

    # the same evaluation with the networks on ONNX Runtime: the same figures, and the report says so
    code = cli.main(["eval", f"fused={paths['avi_ht']}", f"vision={paths['vision_only']}", "--benchmark",
                     str(benchmark), "--out", str(tmp_path / "report_ort"), "--no-ekf", "--no-progress", "--jobs", "1",
                     "--backend", "onnxruntime"])
    capsys.readouterr()
    assert code == 0
    onnx = json.loads((tmp_path / "report_ort" / "metrics.json").read_text())
    for name in ("fused", "vision"):
        assert onnx["overall"][name]["mkpe_mm"] == pytest.approx(data["overall"][name]["mkpe_mm"], rel=0.02)
    assert "networks on ONNX Runtime" in (tmp_path / "report_ort" / "report.md").read_text()

    code = cli.main(["bench", "model", "--iterations", "3", "--warmup", "1"])
    printed = capsys.readouterr().out
    assert code == 0 and "fusion / vision-only (torch): p50" in printed and "avi_ht" in printed
    assert "fusion / vision-only (onnxruntime): p50" in printed and "avi_ht: ONNX Runtime / PyTorch p50" in printed
    # a checkpoint is timed with its own stored architecture; the default is the shipped one's
    from avi_ht_ros.tracker.bench_cli import architecture_to_time
    assert architecture_to_time(str(paths["avi_ht"]), "avi_ht") == tiny_config("avi_ht")
    shipped = load_checkpoint(share_path("models", "avi_ht.pt")).config
    assert architecture_to_time("", "avi_ht") == shipped
    assert architecture_to_time("model_vision_only.yaml", "vision_only").type == "vision_only"
    code = cli.main(["bench", "model", "--iterations", "3", "--warmup", "1", "--fusion-config", str(paths["avi_ht"]),
                     "--vision-config", str(paths["vision_only"])])
    assert code == 0 and "fusion / vision-only (torch): p50" in capsys.readouterr().out
