"""rosbag2 I/O and message conversion without ROS (rosbags), and the same bytes rclpy reads."""
from __future__ import annotations

import numpy as np
import pytest

from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagError, BagWriter, bag_topics, read_messages


def _glove(stamp_ns, rng, n=12):
    return convert.glove_sample_msg(stamp_ns, "right", [f"right_imu_s{i}" for i in range(n)],
                                    rng.normal(size=(n, 3)), rng.normal(size=(n, 3)),
                                    rng.integers(0, 5, n), sequence=stamp_ns // 5_000_000,
                                    device_time_us=stamp_ns // 1000)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(tmp_path, storage):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    with BagWriter(tmp_path / "bag", storage=storage) as bag:
        for k in range(20):
            bag.write("/right/glove/samples", convert.GLOVE_SAMPLE, k * 5_000_000, _glove(k * 5_000_000, rng))
        bag.write("/head_camera/image_raw", convert.IMAGE, 7, convert.image_msg(7, "cam", image))
        tf = convert.tf_message([convert.transform_stamped_msg(0, "head", "head_camera", [0, 0, 0.1],
                                                               [0, 0, 0, 1])])
        bag.write("/tf_static", convert.TF_MESSAGE, 0, tf, latched=True)
    topics = bag_topics(tmp_path / "bag")
    assert topics["/right/glove/samples"] == (convert.GLOVE_SAMPLE, 20)
    assert topics["/tf_static"] == (convert.TF_MESSAGE, 1)
    messages = list(read_messages(tmp_path / "bag", ["/right/glove/samples", "/head_camera/image_raw"]))
    assert [m.log_time_ns for m in messages] == sorted(m.log_time_ns for m in messages)
    (img,) = [m for m in messages if m.topic == "/head_camera/image_raw"]
    np.testing.assert_array_equal(convert.image_from_msg(img.msg), image)
    stamp, accel, gyro, status = convert.glove_arrays_from_msg(messages[-1].msg)
    assert accel.shape == (12, 3) and status.shape == (12,) and stamp == 95_000_000


def test_reading_an_absent_topic_yields_nothing(tmp_path):
    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/x", convert.IMAGE, 0, convert.image_msg(0, "c", np.zeros((2, 2), np.uint8)))
    assert list(read_messages(tmp_path / "bag", ["/y"])) == []


def test_bags_are_never_overwritten(tmp_path):
    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/x", convert.IMAGE, 0, convert.image_msg(0, "c", np.zeros((2, 2), np.uint8)))
    with pytest.raises(BagError, match="already exists"):
        BagWriter(tmp_path / "bag")


def test_missing_bag_is_a_clear_error(tmp_path):
    with pytest.raises(BagError, match="no such bag"):
        list(read_messages(tmp_path / "nope"))


def test_hand_pose_conversion_round_trip():
    rng = np.random.default_rng(1)
    landmarks = rng.normal(size=(21, 3))
    msg = convert.hand_pose_msg(123, "head_camera_optical_frame", "left", 1, rng.normal(size=22), 1.05,
                                [0.1, 0.2, 0.3], [0, 0, 0, 1], landmarks, rng.random(21), rng.random(12), 0.4)
    back = convert.hand_pose_arrays_from_msg(convert.deserialize(convert.serialize(msg), convert.HAND_POSE))
    np.testing.assert_allclose(back["landmarks"], landmarks)
    assert back["side"] == "left" and back["stamp_ns"] == 123 and back["imu_attention"].shape == (12,)


def test_rclpy_reads_bytes_built_by_convert():
    from rclpy.serialization import deserialize_message

    from avi_ht_ros.msg import GloveSample

    rng = np.random.default_rng(2)
    built = _glove(10_000_000, rng)
    ros = deserialize_message(convert.serialize(built), GloveSample)
    for ours, theirs in zip(convert.glove_arrays_from_msg(built), convert.glove_arrays_from_msg(ros)):
        np.testing.assert_array_equal(ours, theirs)


def test_new_message_rejects_unknown_fields():
    with pytest.raises(TypeError, match="no field"):
        convert.new_message(convert.IMAGE, colour="red")
