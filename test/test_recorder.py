"""The rosbag2 recorder: ROS-free core (BagRecorder) and the recorder_node executable over real DDS."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from avi_ht_ros.common import topics
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagError, bag_topics, read_messages
from avi_ht_ros.io.recorder import RAW_TOPICS, BagRecorder


def _string(i: int) -> bytes:
    return convert.serialize(convert.new_message("std_msgs/msg/String", data=f"message {i}"))


def test_recorder_writes_everything_handed_over_from_many_threads(tmp_path):
    recorder = BagRecorder(tmp_path / "bag").start()

    def produce(name: str, count: int) -> None:
        for i in range(count):
            assert recorder.add(f"/{name}", "std_msgs/msg/String", _string(i), 1_000 + i)

    threads = [threading.Thread(target=produce, args=(f"t{k}", 500)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tf = convert.tf_message([convert.transform_stamped_msg(0, "a", "b", [0, 0, 0], [0, 0, 0, 1])])
    recorder.add(topics.TF_STATIC, convert.TF_MESSAGE, convert.serialize(tf))
    stats = recorder.close()     # everything queued is written before the bag closes
    assert stats.received == stats.written == 2001 and stats.queued == 0 and not stats.error
    assert not recorder.add("/t0", "std_msgs/msg/String", _string(0)), "accepted after close"
    assert {t: n for t, (_, n) in bag_topics(tmp_path / "bag").items()} == {
        "/t0": 500, "/t1": 500, "/t2": 500, "/t3": 500, topics.TF_STATIC: 1}
    texts = [m.msg.data for m in read_messages(tmp_path / "bag", ["/t2"])]
    assert texts == [f"message {i}" for i in range(500)]
    metadata = (tmp_path / "bag" / "metadata.yaml").read_text()
    assert "transient_local" in metadata.lower() or "durability: 1" in metadata   # /tf_static latched


def test_recorder_refuses_existing_bags_and_a_second_type_on_a_topic(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagError):
        BagRecorder(tmp_path / "bag")
    with BagRecorder(tmp_path / "other") as recorder:
        assert recorder.add("/x", "std_msgs/msg/String", _string(1))
        assert not recorder.add("/x", convert.TF_MESSAGE, b"\x00\x01\x00\x00")
    assert recorder.stats().rejected == 1 and recorder.stats().written == 1


def test_recorder_reports_a_write_error_instead_of_truncating_silently(tmp_path):
    recorder = BagRecorder(tmp_path / "bag").start()
    recorder.add("/x", "not_a_package/msg/Nothing", b"\x00\x01\x00\x00")   # type unknown to the store
    with pytest.raises(BagError, match="not written"):
        recorder.close()


def test_default_topics_are_what_record_launch_records():
    import ast
    import pathlib

    tree = ast.parse((pathlib.Path(__file__).resolve().parents[1] / "launch" / "record.launch.py").read_text())
    recorded = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RECORDED_TOPICS")
    assert tuple(recorded) == RAW_TOPICS


@pytest.mark.ros
def test_recorder_node_records_reliable_and_latched_topics_and_flushes_on_sigint(rclpy_context, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from avi_ht_ros.graph import executable_path
    from avi_ht_ros.nodes import base
    from avi_ht_ros.nodes.tf_publisher import TF_STATIC_QOS

    node = rclpy.create_node("recorder_test_publisher", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    stream = node.create_publisher(String, "/recorder_test/stream", base.RELIABLE_QOS)
    latched = node.create_publisher(TFMessage, topics.TF_STATIC, TF_STATIC_QOS)
    tf = convert.tf_message([convert.transform_stamped_msg(0, "head", "cam", [0, 0, 0], [0, 0, 0, 1])])
    latched.publish(convert.serialize(tf))       # before the recorder exists: it must still get it
    # a topic that first exists with a subscriber only: the recorder must wait for its publisher's QoS
    node.create_subscription(String, "/recorder_test/late", lambda _: None, base.RELIABLE_QOS, raw=True)
    bag = tmp_path / "rec"
    process = subprocess.Popen(
        [str(executable_path("recorder_node")), "--ros-args", "-p", f"output:={bag}",
         "-p", f"topics:=[/recorder_test/stream,/recorder_test/late,{topics.TF_STATIC}]"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
    try:
        deadline = time.monotonic() + 30.0
        while stream.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            assert process.poll() is None, process.stdout.read().decode()
        assert stream.get_subscription_count() == 1, "recorder never subscribed"
        late = node.create_publisher(String, "/recorder_test/late", base.RELIABLE_QOS)
        while late.get_subscription_count() < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert late.get_subscription_count() == 2, "recorder never subscribed to the late topic"
        for i in range(50):
            late.publish(_string(i))
        for i in range(300):
            stream.publish(_string(i))
            if i % 50 == 0:
                executor.spin_once(timeout_sec=0.001)
        process.send_signal(signal.SIGINT)        # right after the last publish: the node must drain
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        executor.shutdown()
        node.destroy_node()
    assert process.returncode == 0, output.decode()
    counts = {t: n for t, (_, n) in bag_topics(bag).items()}
    assert counts == {"/recorder_test/stream": 300, "/recorder_test/late": 50, topics.TF_STATIC: 1}, counts
    assert "recording /recorder_test/late (std_msgs/msg/String, reliable)" in output.decode()
    texts = [m.msg.data for m in read_messages(bag, ["/recorder_test/stream"])]
    assert texts == [f"message {i}" for i in range(300)]
    log_times = np.array([m.log_time_ns for m in read_messages(bag, ["/recorder_test/stream"])])
    assert np.all(np.diff(log_times) >= 0) and abs(log_times[0] / 1e9 - time.time()) < 120
