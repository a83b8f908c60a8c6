"""Synthetic world -> rosbag2: topics, types, rates, clocks, ground truth, determinism, CLI."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from scipy.spatial.transform import Rotation

from avi_ht_ros.common import topics
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.hand_model import forward_kinematics_numpy
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagError, bag_topics, read_messages
from avi_ht_ros.io.messages import typestore
from avi_ht_ros.sim.motion import ACTIVITY_LABELS
from avi_ht_ros.sim.render import OCCLUDED_OBJECT
from avi_ht_ros.sim.world import (
    OCCLUSION_LEVELS,
    STATIC_ACTIVITY,
    SequenceSimulator,
    WorldConfig,
    load_world_config,
    simulate_sequence,
    write_sequence_bag,
)

GRAVITY = 9.81
# Small and fast: 160x120 images; the ground-truth geometry does not depend on the size.
SMALL = dict(image_scale=0.25)
IMAGE_TOPIC, INFO_TOPIC = topics.IMAGE, topics.CAMERA_INFO
SIM_CONFIG_TOPIC = topics.SIM_CONFIG_TOPIC
GLOVE_TOPIC = topics.hand_topic("right", topics.GLOVE_SAMPLES)
TRUTH_TOPIC = topics.hand_topic("right", topics.HAND_GROUND_TRUTH)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 2 s right-hand sequence at 60 Hz with occluders, in memory and as a bag."""
    config = WorldConfig(duration_s=2.0, occluder_rate_per_min=40.0, time_offset_s=0.03, **SMALL)
    simulator = SequenceSimulator(config, 11)
    sequence = simulator.run()
    path = tmp_path_factory.mktemp("bags") / "seq_11"
    counts = write_sequence_bag(sequence, path)
    messages: dict[str, list] = {}
    for message in read_messages(path):
        messages.setdefault(message.topic, []).append(message)
    return simulator, sequence, path, counts, messages


# ----------------------------------------------------------------------------- bag layout
def test_bag_has_exactly_the_live_topics_with_our_message_types(recorded):
    _, sequence, path, counts, _ = recorded
    expected = {
        IMAGE_TOPIC: convert.IMAGE, INFO_TOPIC: convert.CAMERA_INFO, GLOVE_TOPIC: convert.GLOVE_SAMPLE,
        TRUTH_TOPIC: convert.HAND_GROUND_TRUTH, topics.TF: convert.TF_MESSAGE, topics.TF_STATIC: convert.TF_MESSAGE,
        SIM_CONFIG_TOPIC: "std_msgs/msg/String",
    }
    listed = bag_topics(path)
    assert {topic: msgtype for topic, (msgtype, _) in listed.items()} == expected
    assert {topic: count for topic, (_, count) in listed.items()} == counts
    frames = sequence.num_frames
    assert counts[IMAGE_TOPIC] == counts[INFO_TOPIC] == counts[TRUTH_TOPIC] == counts[topics.TF] == frames
    assert counts[topics.TF_STATIC] == counts[SIM_CONFIG_TOPIC] == 1
    store = typestore()
    with Reader(path) as reader:
        for connection in reader.connections:
            assert connection.digest == store.hash_rihs01(connection.msgtype), connection.topic
            assert connection.msgdef.data == store.generate_msgdef(connection.msgtype, ros_version=2)[0]
            latched = connection.topic in (topics.TF_STATIC, SIM_CONFIG_TOPIC)
            durability = connection.ext.offered_qos_profiles[0].durability.name
            assert durability == ("TRANSIENT_LOCAL" if latched else "VOLATILE"), connection.topic


def test_rates_and_monotonic_stamps_log_time_is_header_stamp(recorded):
    _, _, _, _, messages = recorded
    for topic, rate in ((IMAGE_TOPIC, 60.0), (INFO_TOPIC, 60.0), (TRUTH_TOPIC, 60.0), (GLOVE_TOPIC, 200.0)):
        stamps = np.array([convert.stamp_ns_of(m.msg.header.stamp) for m in messages[topic]], np.int64)
        assert np.array_equal(stamps, [m.log_time_ns for m in messages[topic]]), topic
        assert np.all(np.diff(stamps) > 0), topic
        measured = (stamps.size - 1) / ((stamps[-1] - stamps[0]) * 1e-9)
        assert measured == pytest.approx(rate, rel=0.01), topic
    tf = [m for m in messages[topics.TF]]
    assert all(m.log_time_ns == convert.stamp_ns_of(m.msg.transforms[0].header.stamp) for m in tf)


def test_camera_messages_and_static_transforms(recorded):
    _, sequence, _, _, messages = recorded
    image = messages[IMAGE_TOPIC][0].msg
    info = messages[INFO_TOPIC][0].msg
    assert image.encoding == "mono8" and image.header.frame_id == topics.CAMERA_OPTICAL_FRAME
    assert (image.width, image.height) == (info.width, info.height) == (160, 120)
    assert info.header.frame_id == topics.CAMERA_OPTICAL_FRAME
    assert np.allclose(np.asarray(info.k).reshape(3, 3), sequence.camera.K)
    static = {t.child_frame_id: t for t in messages[topics.TF_STATIC][0].msg.transforms}
    assert static[topics.CAMERA_FRAME].header.frame_id == topics.HEAD_FRAME
    assert static[topics.CAMERA_OPTICAL_FRAME].header.frame_id == topics.CAMERA_FRAME
    glove = sequence.glove
    scale = sequence.hand_scales["right"]
    for i, (site, frame_id) in enumerate(zip(glove.sites, glove.frame_ids("right"))):
        transform = static[frame_id]
        parent = "right_wrist" if site.bone == "palm" else f"right_{site.bone}"
        assert transform.header.frame_id == parent
        assert np.allclose(convert.xyz_of(transform.transform.translation), glove.mount_offsets("right")[i] * scale)
        rotation = Rotation.from_quat(convert.xyzw_of(transform.transform.rotation)).as_matrix()
        assert np.allclose(rotation, glove.mount_rotations("right")[i], atol=1e-9)
    # world -> head per frame, equal to the sequence's head poses
    for k in (0, sequence.num_frames - 1):
        transform = messages[topics.TF][k].msg.transforms[0]
        assert (transform.header.frame_id, transform.child_frame_id) == (topics.WORLD_FRAME, topics.HEAD_FRAME)
        assert np.allclose(convert.xyz_of(transform.transform.translation), sequence.head_translation[k])


def test_bag_describes_itself(recorded):
    _, sequence, _, _, messages = recorded
    doc = yaml.safe_load(messages[SIM_CONFIG_TOPIC][0].msg.data)
    assert doc["seed"] == 11
    assert WorldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["world"].items()}) \
        == sequence.config


def test_glove_messages_follow_device_and_camera_clocks(recorded):
    _, sequence, _, _, messages = recorded
    glove = sequence.gloves["right"]
    samples = [m.msg for m in messages[GLOVE_TOPIC]]
    assert len(samples) == glove.num_samples
    config = sequence.config
    stamps = np.array([convert.stamp_ns_of(s.header.stamp) for s in samples], np.int64)
    since_start = (stamps - int(round(config.start_time_s * 1e9))).astype(np.float64)
    # glove stamps = true time - offset (t_camera = t_glove + offset)
    assert np.abs(since_start - (glove.true_time_s - config.time_offset_s) * 1e9).max() <= 1.0
    # the glove spans the camera frames on the true clock
    assert glove.true_time_s[0] < 0.0 and glove.true_time_s[-1] > sequence.frame_times_s[-1]
    device = np.array([s.device_time_us for s in samples], np.int64)
    expected_step = 1e6 / config.imu_rate_hz
    assert np.abs(np.diff(device) - expected_step).max() <= 1.0
    device_s = config.glove_clock_offset_s + (1 + config.glove_clock_drift_ppm * 1e-6) * glove.true_time_s
    assert np.abs(device * 1e-6 - device_s).max() < 1e-6
    sequence_numbers = np.array([s.sequence for s in samples], np.int64)
    assert np.all(np.diff(sequence_numbers) == 1)
    first = samples[0]
    assert first.header.frame_id == "right_glove" and first.handedness == convert.HAND_RIGHT
    assert [imu.header.frame_id for imu in first.imus] == list(sequence.glove.frame_ids("right"))
    for i in (0, len(samples) // 2):
        _, accel, gyro, status = convert.glove_arrays_from_msg(samples[i])
        assert np.allclose(accel, glove.accel[i], atol=1e-5) and np.allclose(gyro, glove.gyro[i], atol=1e-6)
        assert np.array_equal(status, glove.status[i])
    assert samples[0].imus[0].linear_acceleration_covariance[0] == pytest.approx(glove.accel_variance)


def test_ground_truth_is_consistent_and_reprojects_onto_the_rendered_hand(recorded):
    simulator, sequence, _, _, messages = recorded
    info = messages[INFO_TOPIC][0].msg
    k_matrix = np.asarray(info.k).reshape(3, 3)
    truths = [m.msg for m in messages[TRUTH_TOPIC]]
    images = [convert.image_from_msg(m.msg) for m in messages[IMAGE_TOPIC]]
    on_hand = visible_count = 0
    for k in range(0, sequence.num_frames, 7):
        truth = truths[k]
        assert truth.header.stamp == messages[IMAGE_TOPIC][k].msg.header.stamp
        pose = convert.hand_pose_arrays_from_msg(truth.pose)
        assert pose["frame_id"] == topics.CAMERA_OPTICAL_FRAME and pose["side"] == "right"
        # joint angles + wrist pose + scale reproduce the landmarks (FK in the optical frame)
        rotation = Rotation.from_quat(pose["wrist_rotation_xyzw"]).as_matrix()
        fk = forward_kinematics_numpy(pose["joint_angles"].astype(np.float64), rotation, pose["wrist_position"],
                                      scale=pose["hand_scale"], side="right")
        assert np.abs(fk.landmarks - pose["landmarks"]).max() < 2e-5
        # visible landmarks project onto hand pixels of the very image in the bag
        frame = simulator.render_frame(k)
        assert np.array_equal(frame.image, images[k])
        mask = cv2.dilate(frame.results["right"].hand_mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        projected = pose["landmarks"] @ k_matrix.T
        uv = projected[:, :2] / projected[:, 2:]
        visible = np.asarray(truth.landmark_visibility) > 0.5
        assert truth.occlusion_ratio == pytest.approx(1.0 - visible.mean(), abs=1e-6)
        assert truth.activity in ACTIVITY_LABELS
        for u, v in uv[visible]:
            visible_count += 1
            on_hand += bool(mask[int(round(v)), int(round(u))])
    assert visible_count > 20
    assert on_hand / visible_count > 0.95


# ----------------------------------------------------------------------------- physics and clocks
def test_static_hand_reads_one_g_and_no_rotation(tmp_path):
    config = WorldConfig(duration_s=1.5, motion="static", camera_rate_hz=10.0, image_scale=0.15,
                         occluder_rate_per_min=0.0)
    sequence = simulate_sequence(config, 4)
    glove = sequence.gloves["right"]
    assert np.allclose(np.linalg.norm(glove.accel_true, axis=-1), GRAVITY, atol=1e-6)
    assert np.abs(glove.gyro_true).max() < 1e-9
    assert np.ptp(sequence.hands["right"].landmarks, axis=0).max() < 1e-12
    assert set(sequence.hands["right"].activity) == {STATIC_ACTIVITY}
    path = tmp_path / "static"
    write_sequence_bag(sequence, path)
    accel = np.stack([convert.glove_arrays_from_msg(m.msg)[1] for m in read_messages(path, [GLOVE_TOPIC])])
    gyro = np.stack([convert.glove_arrays_from_msg(m.msg)[2] for m in read_messages(path, [GLOVE_TOPIC])])
    magnitude = np.linalg.norm(accel, axis=-1).mean(axis=0)           # per IMU, m/s^2
    assert np.abs(magnitude - GRAVITY).max() < 0.15                     # biases ~5 mg, scale errors 0.3 %
    assert np.abs(gyro.mean(axis=0)).max() < 0.02                       # turn-on bias ~0.2 deg/s
    assert np.all(np.std(accel, axis=0) < 0.05)


def test_time_offset_shifts_only_the_glove_stamps():
    base = WorldConfig(duration_s=1.0, **SMALL)
    zero = SequenceSimulator(base, 2).gloves["right"]
    shifted = SequenceSimulator(base.replace(time_offset_s=0.25), 2).gloves["right"]
    assert np.array_equal(zero.stamps_ns - shifted.stamps_ns, np.full(zero.num_samples, 250_000_000))
    assert np.array_equal(zero.accel, shifted.accel) and np.array_equal(zero.device_time_us, shifted.device_time_us)


def test_dead_sensor_and_dropouts():
    config = WorldConfig(duration_s=1.0, dead_sensors=("index_distal", "thumb_distal@0.5"), dropout_rate=0.05,
                         **SMALL)
    glove = SequenceSimulator(config, 3).gloves["right"]
    assert np.all(glove.status[:, 1] == convert.typestore().types[convert.GLOVE_SAMPLE].STATUS_DEAD)
    assert np.all(glove.accel[:, 1] == 0.0)
    thumb = glove.status[:, 10]
    onset = glove.true_time_s - glove.true_time_s[0] >= 0.5
    assert np.all(thumb[onset] == 3) and not np.any(thumb[~onset] == 3)
    alive = glove.status[:, [0, 2, 3, 4]]
    assert 0.01 < np.mean(alive == 1) < 0.15          # STALE samples near the dropout rate


# ----------------------------------------------------------------------------- randomness
def test_same_seed_same_data_other_seed_other_data():
    config = WorldConfig(duration_s=1.0, camera_rate_hz=10.0, **SMALL)
    first, again, other = simulate_sequence(config, 5), simulate_sequence(config, 5), simulate_sequence(config, 6)
    assert np.array_equal(first.images, again.images)
    for name in ("accel", "gyro", "status", "device_time_us", "stamps_ns"):
        assert np.array_equal(getattr(first.gloves["right"], name), getattr(again.gloves["right"], name))
    assert np.array_equal(first.hands["right"].landmarks, again.hands["right"].landmarks)
    assert np.array_equal(first.hands["right"].visibility, again.hands["right"].visibility)
    assert not np.array_equal(first.images, other.images)
    assert not np.allclose(first.gloves["right"].accel, other.gloves["right"].accel)
    assert not np.allclose(first.hands["right"].joint_angles, other.hands["right"].joint_angles)


def test_activity_labels_cover_at_least_six_types():
    simulator = SequenceSimulator(WorldConfig(duration_s=45.0, camera_rate_hz=10.0, **SMALL), 1)
    labels = set(simulator.hands["right"].activity.tolist())
    assert labels <= set(ACTIVITY_LABELS)
    assert len(labels) >= 6, labels


def test_occlusion_grows_with_the_occlusion_level():
    base = WorldConfig(duration_s=6.0, camera_rate_hz=10.0, **SMALL)
    low = SequenceSimulator(base.with_occlusion("low"), 8)
    heavy = SequenceSimulator(base.with_occlusion("heavy"), 8)
    assert low.occluders == () and len(heavy.occluders) >= 1
    assert np.array_equal(low.hands["right"].landmarks, heavy.hands["right"].landmarks)   # same motion
    low_seq, heavy_seq = low.run(), heavy.run()
    times = heavy_seq.frame_times_s
    during = np.zeros(times.size, bool)
    for phase in heavy.occluders:
        during |= (times >= phase.start_s) & (times < phase.end_s)
    ratio_low = low_seq.hands["right"].occlusion_ratio
    ratio_heavy = heavy_seq.hands["right"].occlusion_ratio
    assert ratio_heavy[during].mean() > ratio_low[during].mean() + 0.1
    assert ratio_heavy.mean() > ratio_low.mean()
    assert np.any(heavy_seq.hands["right"].landmark_occlusion[during] == OCCLUDED_OBJECT)
    assert np.array_equal(ratio_heavy[~during], ratio_low[~during])        # occluders only act in their phases


def test_two_hands_share_one_camera(tmp_path):
    config = WorldConfig(duration_s=1.0, camera_rate_hz=10.0, sides=("left", "right"), **SMALL)
    simulator = SequenceSimulator(config, 9)
    sequence = simulator.run()
    assert sequence.sides == ("left", "right")
    frame = simulator.render_frame(4)
    assert np.array_equal(frame.image, sequence.images[4])
    left, right = frame.results["left"], frame.results["right"]
    assert left.hand_mask.any() and right.hand_mask.any()
    # where only one hand is seen in its own pass, the composite shows that pass; elsewhere
    # without hands it is the first pass (same background, objects and sensor noise in both)
    for own, other in ((left, right), (right, left)):
        only = own.hand_mask & ~other.hand_mask
        assert only.any() and np.array_equal(frame.image[only], own.image[only])
    neither = ~left.hand_mask & ~right.hand_mask
    assert np.array_equal(frame.image[neither], left.image[neither])
    path = tmp_path / "two"
    write_sequence_bag(sequence, path)
    listed = bag_topics(path)
    for side in ("left", "right"):
        assert listed[topics.hand_topic(side, topics.GLOVE_SAMPLES)][0] == convert.GLOVE_SAMPLE
        assert listed[topics.hand_topic(side, topics.HAND_GROUND_TRUTH)][1] == sequence.num_frames
    static = next(read_messages(path, [topics.TF_STATIC])).msg
    assert {"left_imu_hand_back", "right_imu_hand_back"} <= {t.child_frame_id for t in static.transforms}


# ----------------------------------------------------------------------------- configuration
def test_shipped_yaml_is_the_default_config_and_errors_name_the_field(tmp_path):
    assert load_world_config() == WorldConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera_rate_hz: -5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: camera_rate_hz"):
        load_world_config(bad)
    bad.write_text("cameraa_rate_hz: 30\n")
    with pytest.raises(ConfigError, match="cameraa_rate_hz: unknown key"):
        load_world_config(bad)
    bad.write_text("sides: [right, middle]\n")
    with pytest.raises(ConfigError, match="sides"):
        load_world_config(bad)
    good = tmp_path / "heavy.yaml"
    good.write_text("occlusion: heavy\ndead_sensors: [3, index_distal]\nduration_s: 5\n")
    config = load_world_config(good)
    assert config.occluder_rate_per_min == OCCLUSION_LEVELS["heavy"]["occluder_rate_per_min"]
    assert config.dead_sensors == ("3", "index_distal") and config.duration_s == 5.0
    with pytest.raises(ConfigError, match="no site 'pinky_middle'"):
        SequenceSimulator(WorldConfig(dead_sensors=("pinky_middle",), duration_s=1.0), 0)


def test_never_overwrites_a_bag(recorded):
    _, sequence, path, _, _ = recorded
    with pytest.raises(BagError, match="already exists"):
        write_sequence_bag(sequence, path)


# ----------------------------------------------------------------------------- CLI
def test_cli_end_to_end_with_jobs_and_strip(tmp_path, capsys):
    from avi_ht_ros.cli import main

    world = tmp_path / "world.yaml"
    world.write_text("image_scale: 0.2\ncamera_rate_hz: 20.0\n")
    out, strip = tmp_path / "sim", tmp_path / "strip.png"
    argv = ["simulate", "--out", str(out), "--sequences", "2", "--duration", "1", "--seed", "3",
            "--config", str(world), "--occlusion", "heavy", "--dead-sensors", "index_distal",
            "--time-offset", "0.02", "--jobs", "2", "--strip", str(strip), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2/2 sequences, 40 frames" in printed and "frames/s" in printed and "MB" in printed
    assert sorted(p.name for p in out.iterdir()) == ["seq_3", "seq_4"]
    for seed in (3, 4):
        listed = bag_topics(out / f"seq_{seed}")
        assert listed[IMAGE_TOPIC] == (convert.IMAGE, 20)
        doc = yaml.safe_load(next(read_messages(out / f"seq_{seed}", [SIM_CONFIG_TOPIC])).msg.data)
        assert doc["seed"] == seed and doc["world"]["time_offset_s"] == 0.02
        assert doc["world"]["occluder_rate_per_min"] == OCCLUSION_LEVELS["heavy"]["occluder_rate_per_min"]
    sample = next(read_messages(out / "seq_3", [GLOVE_TOPIC])).msg
    assert sample.status[1] == 3                                           # index_distal is dead
    picture = cv2.imread(str(strip))
    assert picture is not None and picture.shape[0] == 240 and picture.shape[1] > 4 * 240
    assert main(argv) == 2                                                 # refuses to overwrite
    assert "refusing to overwrite" in capsys.readouterr().err
    assert not any(p.name.startswith(".") for p in out.iterdir())          # no partial bags left


# ----------------------------------------------------------------------------- second camera
SECOND_CAMERA = "camera_sim_2.yaml"
IMAGE_2_TOPIC, INFO_2_TOPIC = topics.IMAGE_2, topics.CAMERA_INFO_2
TRUTH_2_TOPIC = topics.hand_topic("right", topics.HAND_GROUND_TRUTH_2)


@pytest.fixture(scope="module")
def two_cameras(tmp_path_factory):
    """A 1 s right-hand sequence at 60 Hz seen by both headset cameras, in memory and as a bag."""
    config = WorldConfig(duration_s=1.0, occluder_rate_per_min=40.0, second_camera_config=SECOND_CAMERA, **SMALL)
    simulator = SequenceSimulator(config, 12)
    sequence = simulator.run()
    path = tmp_path_factory.mktemp("bags") / "seq_12"
    write_sequence_bag(sequence, path)
    messages: dict[str, list] = {}
    for message in read_messages(path):
        messages.setdefault(message.topic, []).append(message)
    return simulator, sequence, path, messages


def _transform(message) -> np.ndarray:
    """4x4 parent_from_child of a TransformStamped."""
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(convert.xyzw_of(message.transform.rotation)).as_matrix()
    out[:3, 3] = convert.xyz_of(message.transform.translation)
    return out


def test_second_camera_adds_its_topics_at_60hz_with_the_first_cameras_stamps(two_cameras):
    _, sequence, path, messages = two_cameras
    listed = bag_topics(path)
    frames = sequence.num_frames
    assert set(listed) == {IMAGE_TOPIC, INFO_TOPIC, GLOVE_TOPIC, TRUTH_TOPIC, topics.TF, topics.TF_STATIC,
                           SIM_CONFIG_TOPIC, IMAGE_2_TOPIC, INFO_2_TOPIC, TRUTH_2_TOPIC}
    assert listed[IMAGE_2_TOPIC] == (convert.IMAGE, frames) and listed[INFO_2_TOPIC] == (convert.CAMERA_INFO, frames)
    assert listed[TRUTH_2_TOPIC] == (convert.HAND_GROUND_TRUTH, frames)
    first = np.array([convert.stamp_ns_of(m.msg.header.stamp) for m in messages[IMAGE_TOPIC]], np.int64)
    for topic in (IMAGE_2_TOPIC, INFO_2_TOPIC, TRUTH_2_TOPIC):
        stamps = np.array([convert.stamp_ns_of(m.msg.header.stamp) for m in messages[topic]], np.int64)
        assert np.array_equal(stamps, first), topic                       # hardware-synchronized
        assert np.array_equal(stamps, [m.log_time_ns for m in messages[topic]]), topic
        assert (stamps.size - 1) / ((stamps[-1] - stamps[0]) * 1e-9) == pytest.approx(60.0, rel=0.01), topic
        assert all(m.msg.header.frame_id == topics.CAMERA_2_OPTICAL_FRAME for m in messages[topic]), topic
    image, info = messages[IMAGE_2_TOPIC][0].msg, messages[INFO_2_TOPIC][0].msg
    assert image.encoding == "mono8" and (image.width, image.height) == (info.width, info.height) == (160, 120)
    assert np.allclose(np.asarray(info.k).reshape(3, 3), sequence.camera_2.K)
    assert not np.allclose(sequence.camera_2.K, sequence.camera.K)      # its own calibration
    assert np.array_equal(convert.image_from_msg(image), sequence.images_2[0])
    doc = yaml.safe_load(messages[SIM_CONFIG_TOPIC][0].msg.data)
    assert doc["world"]["second_camera_config"] == SECOND_CAMERA


def test_second_camera_static_tf_matches_its_mount_and_the_ground_truth(two_cameras):
    from avi_ht_ros.common.camera import load_camera_mount
    from avi_ht_ros.common.paths import config_path

    _, sequence, _, messages = two_cameras
    mount = load_camera_mount(config_path(SECOND_CAMERA))
    assert (mount.parent_frame, mount.child_frame, mount.optical_frame) == (
        topics.HEAD_FRAME, topics.CAMERA_2_FRAME, topics.CAMERA_2_OPTICAL_FRAME)
    static = {t.child_frame_id: t for t in messages[topics.TF_STATIC][0].msg.transforms}
    body, optical = static[topics.CAMERA_2_FRAME], static[topics.CAMERA_2_OPTICAL_FRAME]
    assert (body.header.frame_id, optical.header.frame_id) == (topics.HEAD_FRAME, topics.CAMERA_2_FRAME)
    assert np.allclose(_transform(body), mount.parent_from_body(), atol=1e-9)
    head_from_optical_2 = _transform(body) @ _transform(optical)
    assert np.allclose(head_from_optical_2, mount.parent_from_optical(), atol=1e-9)
    head_from_optical = _transform(static[topics.CAMERA_FRAME]) @ _transform(static[topics.CAMERA_OPTICAL_FRAME])
    camera_2_from_camera = np.linalg.inv(head_from_optical_2) @ head_from_optical
    assert np.allclose(camera_2_from_camera, sequence.camera_2_from_camera, atol=1e-9)
    # the TF chain carries the first view's truth into the second's
    for k in (0, sequence.num_frames - 1):
        truth = convert.hand_pose_arrays_from_msg(messages[TRUTH_TOPIC][k].msg.pose)
        truth_2 = convert.hand_pose_arrays_from_msg(messages[TRUTH_2_TOPIC][k].msg.pose)
        assert truth_2["frame_id"] == topics.CAMERA_2_OPTICAL_FRAME
        moved = truth["landmarks"] @ camera_2_from_camera[:3, :3].T + camera_2_from_camera[:3, 3]
        assert np.abs(moved - truth_2["landmarks"]).max() < 1e-5
        rotation = Rotation.from_quat(truth["wrist_rotation_xyzw"]).as_matrix()
        rotation_2 = Rotation.from_quat(truth_2["wrist_rotation_xyzw"]).as_matrix()
        assert np.allclose(camera_2_from_camera[:3, :3] @ rotation, rotation_2, atol=1e-6)
    # world -> second optical frame = head pose x mount
    optical_2 = mount.parent_from_optical()
    assert np.allclose(sequence.camera_2_rotation, sequence.head_rotation @ optical_2[:3, :3])


def test_landmarks_project_into_the_second_view_where_its_ground_truth_says(two_cameras):
    simulator, sequence, _, messages = two_cameras
    k_matrix = np.asarray(messages[INFO_2_TOPIC][0].msg.k).reshape(3, 3)
    on_hand = visible_count = 0
    for k in range(0, sequence.num_frames, 5):
        truth = messages[TRUTH_2_TOPIC][k].msg
        image, results = simulator.render_view(k, 1)
        assert np.array_equal(image, convert.image_from_msg(messages[IMAGE_2_TOPIC][k].msg))
        mask = cv2.dilate(results["right"].hand_mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        landmarks = convert.hand_pose_arrays_from_msg(truth.pose)["landmarks"]
        projected = landmarks @ k_matrix.T
        uv = projected[:, :2] / projected[:, 2:]
        visible = np.asarray(truth.landmark_visibility) > 0.5
        assert np.array_equal(visible, sequence.hands["right"].visibility_2[k])
        assert truth.occlusion_ratio == pytest.approx(1.0 - visible.mean(), abs=1e-6)
        for u, v in uv[visible]:
            visible_count += 1
            on_hand += bool(mask[int(round(v)), int(round(u))])
    assert visible_count > 20
    assert on_hand / visible_count > 0.95
    # the views differ: another pose in the image and its own visibility
    hand = sequence.hands["right"]
    assert not np.allclose(hand.landmarks, hand.landmarks_2)
    assert not np.array_equal(sequence.images, sequence.images_2)


def test_second_camera_is_deterministic_and_leaves_the_first_view_as_it_was():
    config = WorldConfig(duration_s=1.0, camera_rate_hz=10.0, second_camera_config=SECOND_CAMERA, **SMALL)
    first, again = simulate_sequence(config, 5), simulate_sequence(config, 5)
    other = simulate_sequence(config, 6)
    single = simulate_sequence(config.replace(second_camera_config=""), 5)
    assert np.array_equal(first.images_2, again.images_2)
    assert np.array_equal(first.hands["right"].visibility_2, again.hands["right"].visibility_2)
    assert not np.array_equal(first.images_2, other.images_2)
    # the first camera's images and truth do not depend on whether a second camera exists
    assert np.array_equal(first.images, single.images)
    for name in ("landmarks", "visibility", "landmark_occlusion", "occlusion_ratio"):
        assert np.array_equal(getattr(first.hands["right"], name), getattr(single.hands["right"], name)), name
    assert single.images_2 is None and single.camera_2 is None and single.hands["right"].landmarks_2 is None
    with pytest.raises(ConfigError, match="head_camera_2"):      # the first camera's file has its frames
        SequenceSimulator(config.replace(second_camera_config="camera_sim.yaml"), 0)


def test_cli_second_camera_flag(tmp_path, capsys):
    import argparse

    from avi_ht_ros.cli import main
    from avi_ht_ros.sim import cli as sim_cli

    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    assert sim_cli._world_config(parser.parse_args(["--out", "x"])).second_camera_config == ""
    assert sim_cli._world_config(parser.parse_args(["--out", "x", "--second-camera"])).second_camera_config \
        == SECOND_CAMERA
    assert sim_cli._world_config(parser.parse_args(["--out", "x", "--second-camera", "mine.yaml"])) \
        .second_camera_config == "mine.yaml"
    world = tmp_path / "world.yaml"
    world.write_text("image_scale: 0.2\ncamera_rate_hz: 20.0\n")
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--duration", "1", "--config", str(world), "--second-camera",
                 "--no-progress"]) == 0
    assert "camera 2:" in capsys.readouterr().out
    listed = bag_topics(out / "seq_0")
    assert listed[IMAGE_TOPIC] == listed[IMAGE_2_TOPIC] == (convert.IMAGE, 20)


def test_cli_set_changes_any_world_field_and_refuses_unknown_or_bad_ones():
    import argparse

    from avi_ht_ros.sim import cli as sim_cli

    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)

    def world(*options):
        return sim_cli._world_config(parser.parse_args(["--out", "x", *options]))

    ideal = world("--set", "glove_mount_error_deg=0", "--set", "glove_mount_calibration=false", "--duration", "3")
    assert ideal == load_world_config().replace(glove_mount_error_deg=0.0, glove_mount_calibration=False,
                                                duration_s=3.0)
    assert world("--set", "dead_sensors=[3, index_distal]").dead_sensors == ("3", "index_distal")
    assert world("--noise-scale", "2", "--set", "noise_scale=0.5").noise_scale == 0.5      # --set comes last
    with pytest.raises(ConfigError, match="--set: glove_mount_error_dg: unknown key"):
        world("--set", "glove_mount_error_dg=0")
    with pytest.raises(ConfigError, match="--set: glove_mount_error_deg"):
        world("--set", "glove_mount_error_deg=45")                                        # range [0, 30]
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        world("--set", "glove_mount_error_deg")
    with pytest.raises(ConfigError, match="--set: 'dead_sensors=\\[3': the value is not YAML"):
        world("--set", "dead_sensors=[3")


# ----------------------------------------------------------------------------- glove wearing
def test_mount_errors_rotate_only_the_glove_and_zero_sigma_is_the_nominal_glove():
    base = WorldConfig(duration_s=1.0, camera_rate_hz=10.0, noise_scale=0.0, glove_mount_error_deg=0.0,
                       glove_mount_calibration=False, **SMALL)
    nominal = SequenceSimulator(base, 5)
    worn = SequenceSimulator(base.replace(glove_mount_error_deg=6.0), 5)
    zero = SequenceSimulator(base.replace(glove_mount_error_deg=0.0), 5)
    g_nom, g_worn = nominal.gloves["right"], worn.gloves["right"]
    assert np.array_equal(zero.gloves["right"].accel, g_nom.accel)
    assert np.array_equal(worn.motions["right"].evaluate(np.array([0.3]))["joint_angles"],
                          nominal.motions["right"].evaluate(np.array([0.3]))["joint_angles"])
    assert np.array_equal(worn.render_frame(4).image, nominal.render_frame(4).image)  # vision data unchanged
    errors = worn.glove_mount_errors["right"]
    angles = np.degrees(Rotation.from_matrix(errors).magnitude())
    assert 2.0 < np.median(angles) < 15.0                                  # chi(3)·6° has median ~9°
    # noise-free: the worn glove reads the nominal glove's signals in its rotated frames
    expected = np.einsum("nji,tnj->tni", errors, g_nom.accel)
    assert np.abs(g_worn.accel - expected).max() < 2e-3 * GRAVITY + 1e-3   # 16-bit ADC
    assert np.array_equal(nominal.glove_mount_errors["right"], np.broadcast_to(np.eye(3), errors.shape))


def test_flat_hand_calibration_removes_the_tilt_of_each_mount_error_and_keeps_its_yaw():
    config = WorldConfig(duration_s=1.0, camera_rate_hz=10.0, noise_scale=0.0, glove_mount_error_deg=8.0,
                         glove_mount_calibration=True, glove_calibration_posture_deg=0.0, **SMALL)
    simulator = SequenceSimulator(config, 7)
    glove = simulator.gloves["right"]
    calibration = simulator.glove_calibrations["right"]
    errors = simulator.glove_mount_errors["right"]
    up = simulator.glove.flat_hand_up_vectors("right")
    residual = calibration.rotations.as_matrix() @ np.swapaxes(errors, 1, 2)  # nominal -> corrected frame
    assert np.allclose(np.einsum("nij,nj->ni", residual, up), up, atol=2e-3)  # flat-hand "up" restored
    yaw = np.degrees(Rotation.from_matrix(residual).magnitude())
    assert yaw.max() > 1.0                                                   # rotation about "up" stays
    assert np.abs(calibration.gyro_bias).max() < 1e-6                        # noise-free glove
    # the recorded samples are the calibrated ones
    uncalibrated = SequenceSimulator(config.replace(glove_mount_calibration=False), 7).gloves["right"]
    assert np.allclose(glove.accel, np.einsum("nij,tnj->tni", calibration.rotations.as_matrix(), uncalibrated.accel))


def test_calibration_reduces_the_gravity_direction_error_and_survives_a_dead_sensor():
    base = WorldConfig(duration_s=2.0, camera_rate_hz=10.0, glove_mount_error_deg=5.0, glove_mount_calibration=False,
                       dead_sensors=("index_distal", "thumb_distal@0.5"), **SMALL)

    def direction_error_deg(config, seed):
        simulator = SequenceSimulator(config, seed)
        glove = simulator.gloves["right"]
        nominal_true = np.einsum("nij,tnj->tni", simulator.glove_mount_errors["right"], glove.accel_true)
        cosine = np.einsum("tni,tni->tn", glove.accel, nominal_true) / (
            np.linalg.norm(glove.accel, axis=-1) * np.linalg.norm(nominal_true, axis=-1) + 1e-12)
        alive = ~np.isin(np.arange(12), (1, 10))
        return np.degrees(np.arccos(np.clip(cosine[:, alive], -1, 1))).mean(), simulator, glove

    raw = np.mean([direction_error_deg(base, seed)[0] for seed in range(3)])
    calibrated = [direction_error_deg(base.replace(glove_mount_calibration=True), seed) for seed in range(3)]
    assert np.mean([c[0] for c in calibrated]) < 0.85 * raw
    simulator, glove = calibrated[0][1], calibrated[0][2]
    assert np.all(glove.accel[:, 1] == 0.0)                                  # dead sensor: no correction, still zeros
    died = glove.true_time_s - glove.true_time_s[0] >= 0.5                   # calibrated, then dead: zeros as the driver
    assert simulator.glove_calibrations["right"].gyro_bias[10].any()           # alive while calibrating
    assert np.all(glove.gyro[died, 10] == 0.0) and np.all(glove.accel[died, 10] == 0.0)
    assert _calibration_is_identity(simulator.glove_calibrations["right"], 1)


def test_a_refused_calibration_means_the_glove_is_put_on_again(monkeypatch):
    """The driver refuses a sensor tilted beyond its largest correction (30 deg); a user then puts
    the glove on again. The simulator does the same: the next wearing of the same stream, the same
    physical glove, until a calibration is accepted (a clear error after 20 refusals)."""
    from avi_ht_ros.driver.calibration import CalibrationError
    from avi_ht_ros.sim import world

    config = WorldConfig(duration_s=1.0, camera_rate_hz=10.0, glove_mount_error_deg=5.0,
                         glove_mount_calibration=True, **SMALL)
    accepted = SequenceSimulator(config, 3)
    assert accepted.gloves and accepted.glove_wearings == {"right": 1}
    original = world.SequenceSimulator.flat_hand_calibration
    calls = []

    def refuse_first(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise CalibrationError("sensor thumb_metacarpal: gravity is 31.2 deg from its expected up (> 30.0)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(world.SequenceSimulator, "flat_hand_calibration", refuse_first)
    again = SequenceSimulator(config, 3)
    glove = again.gloves["right"]
    assert again.glove_wearings == {"right": 2} and len(calls) == 2
    first_wearing = accepted.glove_mount_errors["right"]
    assert not np.allclose(again.glove_mount_errors["right"], first_wearing)   # a new wearing ...
    assert np.array_equal(glove.accel_true.shape, accepted.gloves["right"].accel_true.shape)
    assert np.array_equal(again.motions["right"].evaluate(np.array([0.2]))["joint_angles"],
                          accepted.motions["right"].evaluate(np.array([0.2]))["joint_angles"])  # ... same motion

    def refuse(self, *args, **kwargs):
        raise CalibrationError("sensor index_distal: gravity is 40.0 deg from its expected up (> 30.0)")

    monkeypatch.setattr(world.SequenceSimulator, "flat_hand_calibration", refuse)
    with pytest.raises(ConfigError, match="refused on 20 wearings in a row .*index_distal"):
        SequenceSimulator(config, 3).gloves


def _calibration_is_identity(calibration, index):
    return (calibration.rotations[index].magnitude() == 0.0 and not calibration.gyro_bias[index].any())
