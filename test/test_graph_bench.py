"""`avi-ht bench graph` runs the node graph briefly and reports latency, rates, drops and CPU per node.

Structure only: timing figures are what the benchmark is for, never asserted (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import json

import pytest

from avi_ht_ros.sim.world import load_world_config, simulate_sequence, write_sequence_bag
from test_demo import run_cli, tiny_checkpoint
from test_realtime import fifo_permitted

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("separate", [False, True], ids=["sync_fusion_node", "separate_sync"])
def test_bench_graph_prints_and_writes_its_figures(tmp_path, separate):
    write_sequence_bag(simulate_sequence(load_world_config(duration_s=2.0).with_occlusion("medium"), seed=11),
                       tmp_path / "seq")
    model = tiny_checkpoint(tmp_path / "fusion.pt", "avi_ht")
    result = run_cli(["bench", "graph", "--duration", "3", "--warmup", "1", "--scenario", str(tmp_path / "seq"),
                      "--model", str(model), "--json", str(tmp_path / "bench.json"), "--no-progress",
                      "--param", "retarget_node:command_on_pose=false", "--param", "camera_node:realtime_priority=0"]
                     + (["--separate-sync"] if separate else []),
                     tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for text in ("latency (ms)", "end to end", "rates (Hz)", "node process", "fusion_node", "total"):
        assert text in result.stdout, text
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {"p50", "p99", "n"} <= set(data["latency_ms"]["end_to_end_pose"])
    assert data["latency_ms"]["end_to_end_pose"]["n"] > 0
    # the sync -> fusion split is seen only where the synchronized frames cross DDS
    stages = {"retarget", "end_to_end_command"} | ({"sync", "fusion"} if separate else set())
    assert set(data["latency_ms"]) == stages | {"camera_info", "glove", "end_to_end_pose", "pose_published",
                                                "command_published"}
    # the fusion node's log: every measured pose (a pose stamped at the window's end may reach the probe after
    # it stopped recording); no command is sent on a pose here (command_on_pose=false)
    assert abs(data["latency_ms"]["pose_published"]["n"] - data["latency_ms"]["end_to_end_pose"]["n"]) <= 2
    assert data["latency_ms"]["pose_published"]["n"] > 100
    # (not "published <= received": the node reads its clock after publish() returns, which under load can be
    # after the probe in another process has the message)
    assert data["latency_ms"]["pose_published"]["p50"] > 0
    assert data["latency_ms"]["command_published"]["n"] == 0
    assert {"camera", "glove", "poses", "synced_frames", "joint_commands"} <= set(data["rates_hz"])
    # every glove sample is timed (stamp -> received), and the glove rate counts the same samples
    assert data["latency_ms"]["glove"]["n"] == pytest.approx(data["rates_hz"]["glove"] * data["duration_s"], abs=1)
    assert data["rates_hz"]["glove"] > 150
    # --param reached the node: without command_on_pose only the 100 Hz timer commands
    assert 0 < data["rates_hz"]["joint_commands"] <= 102, data["rates_hz"]
    assert {"expected", "poses", "without_pose", "sync_dropped", "fusion_skipped_stale",
            "fusion_vision_prefetched"} <= set(data["frames"])
    nodes = {"camera_node", "glove_driver_node", "retarget_node"} | (
        {"sync_node", "fusion_node"} if separate else {"sync_fusion_node"})
    assert data["rates_hz"]["synced_frames"] > 0
    assert set(data["processes"]) == nodes
    assert all(p["cpu_percent"] is not None and p["rss_mb"] > 0 for p in data["processes"].values())
    # realtime_priority: SCHED_FIFO 30 (the default) where this machine permits it, else normal scheduling;
    # the camera node was given 0
    fifo = "SCHED_FIFO 30" if fifo_permitted(30) else "SCHED_OTHER"
    assert {name: p["scheduling"] for name, p in data["processes"].items()} == {
        name: "SCHED_OTHER" if name == "camera_node" else fifo for name in nodes}
    assert all(code == 0 for code in data["exit_codes"].values())


def test_bench_graph_parameter_overrides_are_parsed_and_checked():
    from avi_ht_ros.common.errors import ConfigError
    from avi_ht_ros.graph_bench import node_parameter_overrides

    nodes = ["fusion_node", "retarget_node"]
    assert node_parameter_overrides(["retarget_node:command_on_pose=false", "retarget_node:control_rate_hz=50",
                                     "fusion_node:inference_backend=torch", "fusion_node:model_path="], nodes) == {
        "retarget_node": {"command_on_pose": False, "control_rate_hz": 50},
        "fusion_node": {"inference_backend": "torch", "model_path": ""}}
    for bad in ("retarget_node:command_on_pose", "camera_node:x=1", "retarget_node:=1", "command_on_pose=false"):
        with pytest.raises(ConfigError):
            node_parameter_overrides([bad], nodes)


def test_bench_graph_process_prefixes_are_parsed_and_checked():
    from avi_ht_ros.common.errors import ConfigError
    from avi_ht_ros.graph import NodeProcessSpec
    from avi_ht_ros.graph_bench import process_prefixes

    executables = ["sync_fusion_node", "retarget_node"]
    assert process_prefixes(["sync_fusion_node=taskset -c 1", "retarget_node=nice -n 5"], executables) == {
        "sync_fusion_node": ("taskset", "-c", "1"), "retarget_node": ("nice", "-n", "5")}
    for bad in ("fusion_node=taskset -c 1", "sync_fusion_node=", "taskset -c 1", "retarget_node=nice 'x"):
        with pytest.raises(ConfigError):
            process_prefixes([bad], executables)
    command = NodeProcessSpec("retarget_node", "retarget", "right", prefix=("nice", "-n", "5")).command()
    assert command[:3] == ["nice", "-n", "5"] and command[3].endswith("/retarget_node")


def test_bench_graph_pools_the_frames_of_several_runs():
    """--runs N: each stage's statistics over all runs' frames (not an average of the runs' p99s), each
    run's p99 printed beside them; a stage one run lacks is left out."""
    import numpy as np

    from avi_ht_ros.graph_bench import format_pooled, pooled_latencies
    from avi_ht_ros.live_stats import STAGES, latency_stats

    fast = {"pose_published": np.full(99, 5.0), "command_published": np.full(100, 7.0), "glove": np.ones(10)}
    slow = {"pose_published": np.r_[np.full(98, 6.0), 30.0, 40.0], "command_published": np.full(100, 8.0)}
    pooled = pooled_latencies([fast, slow])
    assert set(pooled) == {"pose_published", "command_published"}
    assert pooled["pose_published"]["n"] == 199 and pooled["pose_published"]["max"] == 40.0
    assert pooled["pose_published"]["p50"] == 6.0 and pooled["command_published"]["p50"] == 7.5
    results = [{"duration_s": 120.0, "latency_labels": STAGES,
                "latency_ms": {name: latency_stats(values) for name, values in run.items()}} for run in (fast, slow)]
    text = format_pooled(pooled, results)
    assert text.startswith("2 runs of 120 s pooled") and STAGES["command_published"] in text
    assert f"{latency_stats(fast['command_published'])['p99']:.2f} {latency_stats(slow['command_published'])['p99']:.2f}" \
        in text


def test_bench_graph_alternates_runs_with_a_baseline_and_prints_their_ratios():
    import numpy as np

    from avi_ht_ros.graph_bench import format_ratios, latency_ratios, run_schedule
    from avi_ht_ros.live_stats import STAGES

    assert run_schedule(3, False) == [False, False, False]
    # pairs, the baseline first in odd pairs and second in even ones: a drifting machine weighs on both
    assert run_schedule(3, True) == [True, False, False, True, True, False]
    given = {"pose_published": {"p50": 6.0, "p99": 9.0}, "command_published": {"p50": 7.0, "p99": float("nan")}}
    baseline = {"pose_published": {"p50": 8.0, "p99": 12.0}, "command_published": {"p50": 7.0, "p99": 11.0},
                "glove": {"p50": 1.0, "p99": 2.0}}
    ratios = latency_ratios(given, baseline)
    assert ratios["pose_published"] == {"p50": 0.75, "p99": 0.75} and set(ratios) == set(given)
    assert ratios["command_published"]["p50"] == 1.0 and np.isnan(ratios["command_published"]["p99"])
    text = format_ratios(ratios, STAGES)
    assert STAGES["pose_published"] in text and "0.750" in text


@pytest.mark.ros
def test_bench_graph_baseline_runs_get_the_baseline_settings_only(tmp_path):
    write_sequence_bag(simulate_sequence(load_world_config(duration_s=2.0), seed=12), tmp_path / "seq")
    model = tiny_checkpoint(tmp_path / "fusion.pt", "avi_ht")
    result = run_cli(["bench", "graph", "--duration", "2", "--warmup", "0.5", "--scenario", str(tmp_path / "seq"),
                      "--model", str(model), "--json", str(tmp_path / "bench.json"), "--no-progress",
                      "--param", "retarget_node:realtime_priority=0",
                      "--baseline", "camera_node:realtime_priority=0"], tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for text in ("run 1 of 2 (baseline)", "run 2 of 2", "1 runs of 2 s pooled (as given)",
                 "1 runs of 2 s pooled (baseline: camera_node:realtime_priority=0)", "p99 ratio"):
        assert text in result.stdout, text
    data = json.loads((tmp_path / "bench.json").read_text())
    assert len(data["runs"]) == len(data["baseline_runs"]) == 1
    assert data["baseline_settings"] == ["camera_node:realtime_priority=0"]
    assert {"pose_published", "command_published"} <= set(data["ratios"]) <= set(data["pooled_latency_ms"])
    fifo = "SCHED_FIFO 30" if fifo_permitted(30) else "SCHED_OTHER"
    given, base = data["runs"][0]["processes"], data["baseline_runs"][0]["processes"]
    # --param holds in both, the baseline setting in the baseline runs only
    assert given["retarget_node"]["scheduling"] == base["retarget_node"]["scheduling"] == "SCHED_OTHER"
    assert (given["camera_node"]["scheduling"], base["camera_node"]["scheduling"]) == (fifo, "SCHED_OTHER")
    assert given["sync_fusion_node"]["scheduling"] == base["sync_fusion_node"]["scheduling"] == fifo
