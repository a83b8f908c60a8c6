"""`avi-ht demo` end to end on a short scenario: real node processes, recorder, report files.

The same entry point as `make demo` (scripts/run_demo.sh -> `avi-ht demo`), with a 4 s
scenario and tiny untrained checkpoints (the numbers are meaningless; the test checks that
every part of the report exists and that the recorder lost nothing).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.models.checkpoint import save_checkpoint
from avi_ht_ros.models.config import (FusionConfig, HeadConfig, ImuEncoderConfig, ModelConfig, SensorDropoutConfig,
                                      VisionEncoderConfig)
from avi_ht_ros.models.factory import build_model

pytestmark = pytest.mark.ros
ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_checkpoint(path: pathlib.Path, model_type: str) -> pathlib.Path:
    config = ModelConfig(
        type=model_type, embed_dim=32,
        imu_encoder=ImuEncoderConfig(model_dim=24, num_heads=2, feedforward_dim=24, mlp_hidden_dim=32),
        vision_encoder=VisionEncoderConfig(stem_channels=8, stage_channels=(8, 16, 32), blocks_per_stage=(1, 1, 1),
                                           ftl_groups=8, recurrent_channels=16),
        fusion=FusionConfig(num_heads=2, feedforward_dim=32), head=HeadConfig(hidden_dim=64),
        sensor_dropout=SensorDropoutConfig(enabled=False))
    torch.manual_seed(0)
    return save_checkpoint(path, build_model(config, GloveModel.reference()).eval())


def run_cli(args: list[str], cwd: pathlib.Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "avi_ht_ros.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_runs_the_graph_records_everything_and_writes_the_report(tmp_path):
    fusion = tiny_checkpoint(tmp_path / "fusion.pt", "avi_ht")
    vision = tiny_checkpoint(tmp_path / "vision.pt", "vision_only")
    out = tmp_path / "report"
    result = run_cli(["demo", "--out", str(out), "--duration", "4", "--model", str(fusion), "--baseline-model",
                      str(vision), "--no-cache", "--glove-latency", "0.02", "--strip-frames", "4", "--no-progress"],
                     tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "report.md" in result.stdout and "fusion" in result.stdout    # the closing summary
    for name in ("report.md", "report.json", "strip.png", "mkpe_over_time.png", "occlusion_bins.png", "latency.png",
                 "time_offset.png", "recording/metadata.yaml"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    tracking = report["tracking"]
    for method in ("AVI-HT live (graph)", "AVI-HT offline", "vision-only offline"):
        assert method in tracking["same_frames"] and "mkpe_mm" in tracking["same_frames"][method]
        assert set(tracking["occlusion_bins"][method]) == set(tracking["bin_labels"])
    assert tracking["frames"] == 240 and tracking["common_frames"] > 0
    assert {"mkpe_mm", "fusion_beats_vision_only", "end_to_end_pose_latency_ms", "time_offset_ms"} <= set(
        report["headline"])
    stages = report["latency_ms"]["stages"]
    # (no sync -> fusion split: in sync_fusion_node that hop is a function call, and not recorded)
    assert set(stages) == {"camera_publish", "retarget", "end_to_end_pose", "end_to_end_command"}
    assert stages["end_to_end_pose"]["n"] > 0 and stages["end_to_end_pose"]["p50"] > 0
    # the nodes' own figures from their last diagnostics: pose and command publication, solve time
    reported = report["latency_ms"]["node_reported"]
    assert 0 < reported["latency_ms_p50"] <= reported["retarget_command_latency_ms_p50"]
    assert reported["retarget_solve_ms_p50"] > 0
    assert "camera stamp → command published" in (out / "report.md").read_text()
    assert report["time_offset"]["true_s"] == pytest.approx(-0.02)
    # nothing lost between the reliable publishers and the bag (messages stamped in the scenario window)
    messages = report["messages"]
    assert messages["loss"] and all(count == 0 for count in messages["loss"].values()), messages["loss"]
    assert messages["window"]["camera_frames"] == messages["window"]["expected_camera_frames"] == 240
    recorded = messages["recorded_per_topic"]
    # (whole-recording counts may differ by the frames published before the recorder discovered a
    # topic; inside the window every image has its camera info and ground truth: the loss checks)
    assert recorded["/head_camera/image_raw"] >= 240 and recorded["/head_camera/camera_info"] >= 240
    # (no /right/synced_frame: in sync_fusion_node the frames are a function call, not recorded)
    assert "/right/synced_frame" not in recorded
    for topic in ("/right/glove/samples", "/right/hand_pose", "/right/robot/joint_commands",
                  "/right/glove/time_offset", "/tf", "/tf_static", "/diagnostics"):
        assert recorded.get(topic, 0) > 0, topic
    assert all(code == 0 for code in report["graph"]["exit_codes"].values()), report["graph"]["exit_codes"]
    assert set(report["graph"]["cpu"]) >= {"camera_node", "sync_fusion_node", "recorder_node"}
