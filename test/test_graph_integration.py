"""The real node graph, one process per node, on simulated sources (glove via its serial protocol).

camera_node (sim) + glove_driver_node (sim glove over a pty) + sync_node + fusion_node with
the shipped model + retarget_node, talking over DDS; a probe node in the test process measures
what a user sees, and compares the poses with the simulator's ground truth (same stamps).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from avi_ht_ros.common.hand_model import BONE_NAMES
from avi_ht_ros.graph import GraphProcesses, sim_graph
from avi_ht_ros.io import convert
from avi_ht_ros.msg import GloveSample, HandGroundTruth, HandPose
from avi_ht_ros.nodes import base
from avi_ht_ros.nodes.tf_publisher import TF_QOS
from avi_ht_ros.sim.world import load_world_config, write_sequence_bag, simulate_sequence

pytestmark = pytest.mark.ros


#: seed of the scenario: outside the training seeds (0-23 of the shipped models, models/*.md)
SEED = 4011
#: live-graph accuracy bounds (median over the run's poses) with the shipped model on this
#: scenario (held-out benchmark MKPE 41.7 mm, models/avi_ht.md): measured 24-28 mm / 11-13 mm on
#: an idle machine, but 23-38 mm / 10-23 mm with another process saturating one of the two cores
#: (fusion skips 60 % of the frames and the starved glove driver makes the synchronizer drop
#: 10-20 % for late IMU data, so the tracker's crops follow a hand that moved further between
#: its frames). The bounds catch a
#: broken pipeline (vision alone scores 60 mm MKPE on the held-out benchmark), not the machine's speed.
MAX_MEDIAN_MKPE_MM = 45.0
MAX_MEDIAN_WRIST_ALIGNED_MM = 30.0


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    config = load_world_config(duration_s=6.0).with_occlusion("medium")
    sequence = simulate_sequence(config, seed=SEED)
    write_sequence_bag(sequence, out / "seq")
    return out / "seq", float(sequence.hands["right"].hand_scale)


def test_graph_runs_at_camera_and_glove_rates(rclpy_context, sim_bag, tmp_path):
    bag, hand_scale = sim_bag
    specs = sim_graph(bag, "right", model_path="", glove_latency_s=0.0,  # "": the shipped models/avi_ht.pt
                      extra={"fusion_node": {"hand_scale": round(hand_scale, 4)}})
    probe = rclpy.create_node("graph_probe", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(probe)
    received: dict[str, list] = {"pose": [], "glove": [], "tf": [], "markers": [], "commands": [], "truth": [],
                                 "diagnostics": []}
    probe.create_subscription(HandPose, "/right/hand_pose", lambda m: received["pose"].append(
        (time.monotonic(), m)), base.RELIABLE_QOS, raw=True)
    probe.create_subscription(GloveSample, "/right/glove/samples", lambda m: received["glove"].append(
        (time.monotonic(), m)), base.GLOVE_QOS, raw=True)
    probe.create_subscription(TFMessage, "/tf", lambda m: received["tf"].append(m), TF_QOS, raw=True)
    probe.create_subscription(MarkerArray, "/right/hand_markers", lambda m: received["markers"].append(m),
                              base.RELIABLE_QOS, raw=True)
    probe.create_subscription(JointState, "/right/robot/joint_commands", lambda m: received["commands"].append(m),
                              base.RELIABLE_QOS, raw=True)
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: received["diagnostics"].append(m),
                              base.RELIABLE_QOS, raw=True)
    probe.create_subscription(HandGroundTruth, "/right/hand_ground_truth", lambda m: received["truth"].append(m),
                              base.RELIABLE_QOS, raw=True)
    graph = GraphProcesses(specs, tmp_path / "logs").start()
    try:
        deadline = time.monotonic() + 40.0
        while len(received["pose"]) < 60 and time.monotonic() < deadline:  # start-up (imports, discovery)
            executor.spin_once(timeout_sec=0.05)
            assert not graph.failed(), graph.failed()
        for key in received:
            received[key].clear()
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        assert not graph.failed(), graph.failed()
    finally:
        codes = graph.stop()
        executor.shutdown()
        probe.destroy_node()
    # Throughput is a figure of `avi-ht bench graph`, not a unit-test assertion (ARCHITECTURE.md).
    # Here: every stage runs, in order, and every frame without a pose is explained. An overloaded
    # machine (CI shares 2 cores between five node processes and this probe) costs frames: the
    # fusion node drops stale frames rather than lagging behind (sensor-data QoS, depth-limited),
    # by design. How many depends on the CPU left to the graph (fusion inference 13 ms in the
    # graph on an idle machine, 21 ms with another process saturating one core: 75-84 % vs 42 %
    # of the frames in `avi-ht bench graph`), so the floor here is a quarter of the frames, at
    # least 12 poses/s.
    assert len(received["pose"]) > 60 and len(received["glove"]) > 400, \
        (len(received["pose"]), len(received["glove"]))
    poses = [convert.deserialize(m, convert.HAND_POSE) for _, m in received["pose"]]
    stamps = np.array([convert.stamp_ns_of(p.header.stamp) for p in poses])
    gaps = np.round(np.diff(stamps) / 16_666_667).astype(int)
    assert np.all(gaps >= 1), "poses out of order or duplicated"
    expected_frames = gaps.sum() + 1
    assert len(stamps) >= 0.25 * expected_frames, \
        f"{expected_frames - len(stamps)} of {expected_frames} camera frames produced no pose: {gaps[gaps > 1]}"
    # Every camera frame without a pose is explained: the fusion node counts each gap in the
    # synced frames it received (frames the synchronizer dropped or its input queue overflowed).
    fusion_dropped = []  # (diagnostics stamp, cumulative dropped_frames), 1 Hz
    for data in received["diagnostics"]:
        array = convert.deserialize(data, "diagnostic_msgs/msg/DiagnosticArray")
        for status in array.status:
            if status.name.endswith("hand fusion"):
                values = {kv.key: kv.value for kv in status.values}
                fusion_dropped.append((convert.stamp_ns_of(array.header.stamp), int(values["dropped_frames"])))
    assert len(fusion_dropped) >= 2, "no fusion diagnostics"
    (t_first, dropped_first), (t_last, dropped_last) = fusion_dropped[0], fusion_dropped[-1]
    inside = stamps[(stamps >= t_first) & (stamps <= t_last)]
    missing = int(np.round(np.diff(inside) / 16_666_667).astype(int).sum() + 1 - len(inside))
    # (10 frames of slack: a frame in flight at a diagnostics instant is counted on either side)
    assert missing <= dropped_last - dropped_first + 10, (missing, dropped_first, dropped_last)
    gloves = [convert.deserialize(m, convert.GLOVE_SAMPLE) for _, m in received["glove"]]
    sequence_steps = np.diff(np.array([g.sequence for g in gloves], dtype=np.int64))
    assert np.all(sequence_steps >= 1), "glove samples out of order or duplicated"
    assert len(gloves) >= 0.98 * (sequence_steps.sum() + 1), "glove samples lost between driver and subscriber"
    children = {t.child_frame_id for m in received["tf"] for t in convert.deserialize(m, convert.TF_MESSAGE).transforms}
    assert {f"right_{b}" for b in BONE_NAMES} | {"right_wrist"} <= children
    assert len(received["markers"]) >= 0.9 * len(poses) and len(received["commands"]) > 300
    assert all(code == 0 for code in codes.values()), codes  # clean shutdown on SIGINT
    # Poses close to the ground truth of the same camera frame (shipped model, unseen seed).
    truths = {convert.stamp_ns_of(t.header.stamp): t for t in
              (convert.deserialize(m, convert.HAND_GROUND_TRUTH) for m in received["truth"])}
    errors, aligned = [], []
    for pose in poses:
        truth = truths.get(convert.stamp_ns_of(pose.header.stamp))
        if truth is None or pose.tracking_state == HandPose.TRACKING_LOST:
            continue
        predicted = np.array([[q.x, q.y, q.z] for q in pose.landmarks])
        true = np.array([[q.x, q.y, q.z] for q in truth.pose.landmarks])
        errors.append(np.linalg.norm(predicted - true, axis=1).mean())
        aligned.append(np.linalg.norm((predicted - predicted[0]) - (true - true[0]), axis=1).mean())
    assert len(errors) >= 0.8 * len(poses), f"only {len(errors)} of {len(poses)} poses tracked with ground truth"
    mkpe, mkpe_wrist = 1e3 * np.median(errors), 1e3 * np.median(aligned)
    print(f"live graph vs ground truth: median MKPE {mkpe:.1f} mm, wrist-aligned {mkpe_wrist:.1f} mm "
          f"over {len(errors)} poses")
    assert mkpe < MAX_MEDIAN_MKPE_MM and mkpe_wrist < MAX_MEDIAN_WRIST_ALIGNED_MM, (mkpe, mkpe_wrist)
