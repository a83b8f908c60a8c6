"""Dataset builder and clip dataset: live-identical windows, jittered crops, explicit ground truth,
determinism per seed, split by recording, load-time augmentation.

The bags are written here (small camera, one second each) with io/convert + io/bag, hand poses
from forward kinematics and images from the simulator's renderer, so the tests do not depend on
the full world simulator. :func:`write_synthetic_bag` is also used by ``test_train.py``.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation

from avi_ht_ros.common import topics
from avi_ht_ros.common.camera import PinholeCamera, default_sim_camera
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import forward_kinematics_numpy
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagWriter, read_messages
from avi_ht_ros.sim.render import HandRenderer
from avi_ht_ros.tracker import dataset as D
from avi_ht_ros.tracker import sync
from avi_ht_ros.tracker.preprocess import (CropConfig, center_is_croppable, crop_inputs, hand_center, imu_inputs,
                                           window_dict)

CROP_SIZE = 32
CAMERA_RATE_HZ = 60.0
GLOVE_RATE_HZ = 200.0
START_NS = 1_700_000_000 * 10**9


def small_camera() -> PinholeCamera:
    """The sim camera at a quarter of its resolution (160x120), no distortion."""
    camera = default_sim_camera()
    return camera.replace(width=160, height=120, fx=camera.fx / 4, fy=camera.fy / 4,
                          cx=(camera.cx + 0.5) / 4 - 0.5, cy=(camera.cy + 0.5) / 4 - 0.5, distortion=np.zeros(5))


def _hand_motion(t: np.ndarray, side: str, phase: float):
    """Smooth joint angles and a wrist pose in front of the camera (optical frame)."""
    n = len(t)
    angles = np.zeros((n, 22))
    angles[:, [5, 7, 9, 11, 13, 15, 17, 19]] = 0.6 + 0.5 * np.sin(2 * np.pi * 1.3 * t + phase)[:, None]
    angles[:, [0, 2, 4]] = 0.2 + 0.15 * np.sin(2 * np.pi * 0.9 * t + phase)[:, None]
    # wrist x (distal) up the image, z (dorsal) towards the camera; a slow roll
    base = np.column_stack([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    roll = 0.3 * np.sin(2 * np.pi * 0.7 * t + phase)
    rotations = np.empty((n, 3, 3))
    for i, a in enumerate(roll):
        c, s = np.cos(a), np.sin(a)
        rotations[i] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ base
    x0 = 0.05 if side == "right" else -0.05
    translations = np.column_stack([x0 + 0.04 * np.sin(2 * np.pi * 0.8 * t + phase),
                                    0.06 + 0.02 * np.cos(2 * np.pi * 0.5 * t), 0.28 + 0.03 * np.sin(2 * np.pi * 0.4 * t)])
    return angles, rotations, translations


def write_synthetic_bag(path: pathlib.Path, seed: int, *, sides=("right",), duration_s: float = 1.0,
                        time_offset_s: float = 0.0, glove_gap: tuple[float, int] | None = None,
                        drop_ground_truth_frames: tuple[int, ...] = (), ground_truth: bool = True,
                        sim_config: bool = True, hand_scale: float = 1.0) -> pathlib.Path:
    """A small rosbag2 with the raw topics of the live system (+ ground truth / sim config).

    ``glove_gap = (time_s, samples)`` removes glove samples (partial windows);
    ``drop_ground_truth_frames`` leaves those frames without a HandGroundTruth message.
    Glove stamps are ``true time - time_offset_s`` (simulator convention). The images show the
    first side's hand only (the renderer draws one hand), which is all these tests need.
    """
    rng = np.random.default_rng(seed)
    camera = small_camera()
    glove = GloveModel.reference()
    frames = int(round(duration_s * CAMERA_RATE_HZ))
    t_frames = np.arange(frames) / CAMERA_RATE_HZ
    renderer = HandRenderer(camera, seed=seed)
    motions = {side: _hand_motion(t_frames, side, phase=float(rng.uniform(0, 6.28))) for side in sides}
    landmarks = {side: forward_kinematics_numpy(a, r, tr, hand_scale, side).landmarks
                 for side, (a, r, tr) in motions.items()}
    t_glove = np.arange(-0.1, duration_s + 0.05, 1.0 / GLOVE_RATE_HZ)
    keep = np.ones(len(t_glove), bool)
    if glove_gap is not None:
        first = int(np.searchsorted(t_glove, glove_gap[0]))
        keep[first:first + glove_gap[1]] = False
    info = camera.to_camera_info_fields()
    optical = topics.CAMERA_OPTICAL_FRAME
    tracking_ok = 1
    events = []  # (stamp_ns, order, writer callback)
    with BagWriter(path) as bag:
        if sim_config:
            text = yaml.safe_dump({"generator": "test_dataset", "seed": seed, "world": {"time_offset_s": time_offset_s}})
            bag.write(topics.SIM_CONFIG_TOPIC, "std_msgs/msg/String", START_NS,
                      convert.new_message("std_msgs/msg/String", data=text), latched=True)
        for i, t in enumerate(t_frames):  # the image shows the first side's hand
            stamp = START_NS + int(round(t * 1e9))
            image = renderer.render(landmarks[sides[0]][i], frame_index=i).image
            events.append((stamp, 0, ("image", i, image)))
        for side in sides:
            frame_ids = glove.frame_ids(side)
            for k, t in enumerate(t_glove):
                if not keep[k]:
                    continue
                stamp = START_NS + int(round((t - time_offset_s) * 1e9))
                accel = np.tile([0.0, 0.0, 9.81], (12, 1)) + rng.normal(0, 0.05, (12, 3))
                gyro = 0.5 * np.sin(2 * np.pi * 1.3 * t + np.arange(36).reshape(12, 3)) + rng.normal(0, 0.01, (12, 3))
                events.append((stamp, 1, ("glove", side, k, frame_ids, accel, gyro)))
        for stamp, _order, event in sorted(events, key=lambda e: (e[0], e[1])):
            if event[0] == "image":
                _, i, image = event
                bag.write(topics.IMAGE, convert.IMAGE, stamp, convert.image_msg(stamp, optical, image))
                bag.write(topics.CAMERA_INFO, convert.CAMERA_INFO, stamp, convert.camera_info_msg(stamp, optical, info))
                if ground_truth and i not in drop_ground_truth_frames:
                    for side in sides:
                        angles, rotations, translations = motions[side]
                        pose = convert.hand_pose_msg(stamp, optical, side, tracking_ok, angles[i], hand_scale,
                                                     translations[i], Rotation.from_matrix(rotations[i]).as_quat(),
                                                     landmarks[side][i])
                        bag.write(topics.hand_topic(side, topics.HAND_GROUND_TRUTH), convert.HAND_GROUND_TRUTH, stamp,
                                  convert.hand_ground_truth_msg(pose, np.ones(21, np.float32), 0.0,
                                                                "grasp" if i < frames // 2 else "wave"))
            else:
                _, side, k, frame_ids, accel, gyro = event
                bag.write(topics.hand_topic(side, topics.GLOVE_SAMPLES), convert.GLOVE_SAMPLE, stamp,
                          convert.glove_sample_msg(stamp, side, frame_ids, accel, gyro, np.zeros(12, np.uint8), k,
                                                   k * 5000))
    return path


def write_bag_set(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Three recordings: a simulated-like right hand (offset, gap, one frame without ground truth),
    a two-handed one, and a recorded-like one without ground truth."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "bag_a": write_synthetic_bag(root / "bag_a", 1, time_offset_s=0.012, glove_gap=(0.5, 6),
                                     drop_ground_truth_frames=(20,), hand_scale=1.05),
        "bag_b": write_synthetic_bag(root / "bag_b", 2, sides=("right", "left")),
        "bag_c": write_synthetic_bag(root / "bag_c", 3, ground_truth=False, sim_config=False),
    }


def build_config(seed: int = 0, **changes) -> D.DatasetBuildConfig:
    return D.DatasetBuildConfig(seed=seed, crop=CropConfig(size=CROP_SIZE), **changes)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    return write_bag_set(tmp_path_factory.mktemp("bags"))


@pytest.fixture(scope="module")
def dataset(bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset") / "ds"
    manifest = D.build_dataset(list(bags.values()), out, build_config(seed=0), show_progress=False, log=None)
    return out, manifest


def _record(manifest, seq_id):
    return next(s for s in manifest["sequences"] if s["id"] == seq_id)


# --------------------------------------------------------------------------------------
# builder
# --------------------------------------------------------------------------------------
def test_windows_are_those_of_the_live_synchronizer(bags, dataset):
    out, manifest = dataset
    record = _record(manifest, "bag_a/right")
    assert record["time_offset_s"] == pytest.approx(0.012) and record["time_offset_source"] == "sim_config"
    arrays = D.load_shard(out, record)
    # the live node's construction and an independent replay of the same streams
    glove = GloveModel.reference()
    synchronizer = sync.live_synchronizer(sync.SyncConfig(time_offset_s=0.012), glove)
    samples = [convert.glove_arrays_from_msg(m.msg)
               for m in read_messages(bags["bag_a"], [topics.hand_topic("right", topics.GLOVE_SAMPLES)])]
    frames = [(convert.stamp_ns_of(m.msg.header.stamp), i)
              for i, m in enumerate(read_messages(bags["bag_a"], [topics.IMAGE]))]
    live = {r.payload: r.window for r in sync.replay(samples, frames, synchronizer)}
    assert len(arrays["stamps_ns"]) == len(live) - 1  # every synced frame but the one without ground truth
    assert 20 not in arrays["camera_frame_index"] and 20 in live
    partial = 0
    for row, index in enumerate(arrays["camera_frame_index"]):
        window = live[int(index)]
        assert arrays["stamps_ns"][row] == window.camera_stamp_ns == frames[index][0]
        np.testing.assert_array_equal(arrays["window_accel"][row], window.accel)
        np.testing.assert_array_equal(arrays["window_gyro"][row], window.gyro)
        np.testing.assert_array_equal(arrays["window_gravity_up"][row], window.gravity_up)
        np.testing.assert_array_equal(arrays["window_status"][row], window.status)
        np.testing.assert_array_equal(arrays["window_stamps_ns"][row], window.stamps_ns)
        assert arrays["window_state"][row] == window.state
        features, valid = imu_inputs(window_dict(window), glove, "gravity+finger_gyro")
        np.testing.assert_array_equal(arrays["imu_features"][row], features)
        np.testing.assert_array_equal(arrays["imu_valid"][row], valid)
        partial += window.state == sync.WINDOW_PARTIAL
    assert partial > 0 and record["sync"]["frames_partial"] == partial  # the glove gap is flagged, not hidden
    assert record["sync"]["glove_gaps"] == 6


def test_a_wrong_time_offset_shifts_the_windows(bags, dataset, tmp_path):
    """The offset matters (so 'auto' picking the simulator's offset is observable)."""
    out, manifest = dataset
    wrong = D.build_dataset([bags["bag_a"]], tmp_path / "ds", build_config(time_offset=0.0), show_progress=False,
                            log=None)
    assert wrong["sequences"][0]["time_offset_source"] == "configured"
    names = ["camera_frame_index", "window_gyro", "window_state"]
    shifted = D.load_shard(tmp_path / "ds", wrong["sequences"][0], names)
    right = D.load_shard(out, _record(manifest, "bag_a/right"), names)
    common, rows_wrong, rows_right = np.intersect1d(shifted["camera_frame_index"], right["camera_frame_index"],
                                                    return_indices=True)
    complete = (shifted["window_state"][rows_wrong] == 0) & (right["window_state"][rows_right] == 0)
    assert complete.sum() > 40
    # glove stamps are true time - 12 ms (2.4 periods): ignoring that picks samples 2-3 periods too late
    shifts = []
    for a, b in zip(rows_wrong[complete], rows_right[complete]):
        late, correct = shifted["window_gyro"][a], right["window_gyro"][b]
        shifts.append([s for s in (0, 1, 2, 3, 4) if np.array_equal(late[:14 - s], correct[s:])])
    assert all(found and found[0] in (2, 3) for found in shifts)
    assert {found[0] for found in shifts} == {2, 3}


def test_ground_truth_is_required_and_its_absence_reported(bags, dataset, tmp_path):
    _out, manifest = dataset
    assert _record(manifest, "bag_a/right")["frames_without_ground_truth"] == 1
    reasons = {(s["bag"], s["side"]): s["reason"] for s in manifest["skipped"]}
    assert "ground truth" in reasons[("bag_c", "right")]
    assert ("bag_a", "left") in reasons  # no left glove in bag_a
    assert {s["id"] for s in manifest["sequences"]} == {"bag_a/right", "bag_b/right", "bag_b/left"}
    with pytest.raises(D.DatasetError, match="no usable sequence"):
        D.build_dataset([bags["bag_c"]], tmp_path / "none", build_config(), show_progress=False, log=None)


def test_targets_match_the_ground_truth_messages(bags, dataset):
    out, manifest = dataset
    arrays = D.load_shard(out, _record(manifest, "bag_b/left"))
    truth = {convert.stamp_ns_of(m.msg.header.stamp): m.msg
             for m in read_messages(bags["bag_b"], [topics.hand_topic("left", topics.HAND_GROUND_TRUTH)])}
    for row in (0, len(arrays["stamps_ns"]) - 1):
        msg = truth[int(arrays["stamps_ns"][row])]
        pose = convert.hand_pose_arrays_from_msg(msg.pose)
        np.testing.assert_allclose(arrays["landmarks"][row], pose["landmarks"], atol=1e-6)
        np.testing.assert_allclose(arrays["joint_angles"][row], pose["joint_angles"], atol=1e-6)
        np.testing.assert_allclose(arrays["wrist_translation"][row], pose["wrist_position"], atol=1e-6)
        # wrist rotation: FK with the stored targets reproduces the stored landmarks
        fk = forward_kinematics_numpy(arrays["joint_angles"][row], arrays["wrist_rotation"][row],
                                      arrays["wrist_translation"][row], arrays["hand_scale"][row], "left")
        np.testing.assert_allclose(fk.landmarks, arrays["landmarks"][row], atol=2e-5)
        assert arrays["activity"][row] == msg.activity
    assert _record(manifest, "bag_b/left")["activities"] == {"grasp": 30, "wave": 30}


def test_crops_are_centred_on_truth_plus_jitter_never_on_truth(bags, dataset, tmp_path):
    out, manifest = dataset
    record = _record(manifest, "bag_a/right")
    arrays = D.load_shard(out, record)
    np.testing.assert_allclose(arrays["hand_center"], hand_center(arrays["landmarks"]), atol=1e-6)  # the tracker's centre
    offset = arrays["crop_center"] - arrays["hand_center"]
    tracking = ~arrays["search_crop"]
    assert np.all(np.linalg.norm(offset, axis=1) > 0)  # never exactly the ground truth
    jitter = D.CropJitterConfig()
    sigma = jitter.center_noise_m
    assert 0.6 * sigma < offset[tracking].std() < 1.4 * sigma
    assert np.abs(offset[tracking]).max() < 5 * sigma
    factors = arrays["crop_radius_factor"][tracking]
    low, high = jitter.radius_factor_range
    assert factors.min() >= low and factors.max() <= high and factors.std() > 0.2 * (high - low) / 3.5
    np.testing.assert_allclose(arrays["crop_radius_m"], 0.12 * 1.05 * arrays["crop_radius_factor"], rtol=1e-5)
    # the stored crop is exactly the tracker's crop_inputs around the stored (jittered) centre
    images = [convert.image_from_msg(m.msg) for m in read_messages(bags["bag_a"], [topics.IMAGE])]
    camera = small_camera()
    for row in (0, 33):
        index = int(arrays["camera_frame_index"][row])
        expected = crop_inputs(images[index], camera, arrays["crop_center"][row], 1.05, CropConfig(size=CROP_SIZE),
                               float(arrays["crop_radius_factor"][row]))
        np.testing.assert_array_equal(arrays["crops"][row], np.rint(expected.crop * 255).astype(np.uint8))
        np.testing.assert_allclose(arrays["K_virtual"][row], expected.K_virtual)
        np.testing.assert_allclose(arrays["R_virtual_from_camera"][row], expected.R_virtual_from_camera)
        # the true hand centre lands off the crop centre by the jitter, inside the crop
        center_virtual = arrays["R_virtual_from_camera"][row] @ arrays["hand_center"][row]
        uv = (arrays["K_virtual"][row] @ (center_virtual / center_virtual[2]))[:2]
        assert 0 < uv[0] < CROP_SIZE - 1 and 0 < uv[1] < CROP_SIZE - 1
        assert np.linalg.norm(uv - (CROP_SIZE - 1) / 2) > 1e-3
    # without jitter the crop centre *is* the ground-truth centre: the jitter is what moves it
    plain = D.build_dataset([bags["bag_a"]], tmp_path / "plain", build_config(jitter=D.CropJitterConfig.none()),
                            show_progress=False, log=None)
    exact = D.load_shard(tmp_path / "plain", plain["sequences"][0], ["crop_center", "hand_center", "crop_radius_factor"])
    np.testing.assert_array_equal(exact["crop_center"], exact["hand_center"])
    assert np.all(exact["crop_radius_factor"] == 1.0)


def test_search_crops_are_wide():
    rng = np.random.default_rng(0)
    jitter = D.CropJitterConfig(search_probability=1.0)
    draws = [D.draw_crop(np.array([0.0, 0.0, 0.4]), jitter, rng) for _ in range(200)]
    assert all(d.search and d.radius_factor == pytest.approx(1.8) for d in draws)
    assert np.all((0.03 < np.std([d.center for d in draws], axis=0)) & (np.std([d.center for d in draws], axis=0) < 0.05))


def test_uncroppable_centre_gives_no_view_like_the_tracker(bags, tmp_path):
    wild = D.CropJitterConfig(center_noise_m=0.2, search_probability=0.0)
    manifest = D.build_dataset([bags["bag_a"]], tmp_path / "wild", build_config(jitter=wild), show_progress=False,
                               log=None)
    record = manifest["sequences"][0]
    arrays = D.load_shard(tmp_path / "wild", record)
    camera = small_camera()
    croppable = np.array([center_is_croppable(camera, c) for c in arrays["crop_center"]])
    assert 0 < (~croppable).sum() < len(croppable)
    np.testing.assert_array_equal(arrays["view_valid"], croppable)
    assert record["frames_hand_out_of_view"] == (~croppable).sum()
    assert not arrays["crops"][~croppable].any() and arrays["crops"][croppable].any()
    clips = D.HandClipDataset(tmp_path / "wild", clip_length=4, training=True, seed=0)  # augmentation keeps zeros
    for i in range(len(clips)):
        item = clips[i]
        assert not item["crops"][~item["view_valid"][:, 0]].any()


def test_time_offset_resolution_order():
    streams = D.BagStreams(path=pathlib.Path("bag"), camera_stamps_ns=[], camera_of_frame=[],
                           sides={"right": D.SideStreams(recorded_offset_s=0.03)},
                           sim_config={"world": {"time_offset_s": 0.01}}, topic_counts={})
    assert D.resolve_time_offset(streams, "right", 0.05) == (0.05, "configured")
    assert D.resolve_time_offset(streams, "right", "auto") == (0.01, "sim_config")
    streams.sim_config = None  # a recorded bag: the offset the live synchronizer applied
    assert D.resolve_time_offset(streams, "right", "auto") == (0.03, "recorded_time_offset")
    streams.sides["right"].recorded_offset_s = None
    assert D.resolve_time_offset(streams, "right", "auto") == (0.0, "default_zero")


def test_build_is_deterministic_per_seed(bags, dataset, tmp_path):
    out, manifest = dataset
    inputs = [bags["bag_b"], bags["bag_a"]]  # other order, fewer bags: same sequences, same content
    again = D.build_dataset(inputs, tmp_path / "again", build_config(seed=0), show_progress=False, log=None)
    hashes = {s["id"]: s["content_sha256"] for s in manifest["sequences"]}
    assert {s["id"]: s["content_sha256"] for s in again["sequences"]} == hashes
    other = D.build_dataset(inputs, tmp_path / "other", build_config(seed=1), show_progress=False, log=None)
    for record in other["sequences"]:
        assert record["content_sha256"] != hashes[record["id"]]
        a = D.load_shard(out, _record(manifest, record["id"]))
        b = D.load_shard(tmp_path / "other", record)
        np.testing.assert_array_equal(a["imu_features"], b["imu_features"])  # the seed moves the crops only
        np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
        assert not np.array_equal(a["crop_center"], b["crop_center"])


def test_manifest_and_shard_layout(dataset):
    out, manifest = dataset
    on_disk = json.loads((out / D.MANIFEST_NAME).read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["seed"] == 0 and on_disk["ground_truth_required"] is True
    assert on_disk["config"]["crop"]["size"] == CROP_SIZE and on_disk["config"]["sync"]["window_length"] == 14
    assert [s["name"] for s in on_disk["sources"]] == ["bag_a", "bag_b", "bag_c"]
    assert on_disk["counts"]["frames"] == sum(s["frames"] for s in on_disk["sequences"])
    for record in on_disk["sequences"]:  # every synced frame with ground truth, nothing else
        synced = record["sync"]["frames_complete"] + record["sync"]["frames_partial"]
        assert record["frames"] == synced - record["frames_without_ground_truth"]
        assert synced + record["sync"]["frames_dropped_no_imu"] + record["sync"]["frames_dropped_too_few"] == 60
    # the 30 ms glove gap in bag_a: one frame has no sample near it (dropped, counted), one has no truth
    assert _record(on_disk, "bag_a/right")["sync"]["frames_dropped_no_imu"] == 1
    assert _record(on_disk, "bag_a/right")["frames"] == 58
    arrays = D.load_shard(out, on_disk["sequences"][0])
    assert set(arrays) == set(D.SHARD_ARRAYS)
    assert arrays["crops"].dtype == np.uint8 and arrays["crops"].shape[1:] == (CROP_SIZE, CROP_SIZE)
    assert arrays["imu_features"].shape[1:] == (14, 23, 3)
    with pytest.raises(D.DatasetError, match="never overwritten"):
        D.build_dataset([out.parent], out, build_config(), show_progress=False, log=None)


def test_split_is_by_recording(dataset):
    _out, manifest = dataset
    train, val = D.split_sequences(manifest, 0.5, seed=0)
    assert sorted(train + val) == sorted(s["id"] for s in manifest["sequences"]) and not set(train) & set(val)
    bag_of = {s["id"]: s["bag"] for s in manifest["sequences"]}
    assert not {bag_of[i] for i in train} & {bag_of[i] for i in val}
    assert {"bag_b/right", "bag_b/left"} <= set(train) or {"bag_b/right", "bag_b/left"} <= set(val)
    assert D.split_sequences(manifest, 0.5, seed=0) == (train, val)
    train, val = D.split_sequences(manifest, 0.0, seed=0, validation_bags=["bag_b"])
    assert val == ["bag_b/right", "bag_b/left"] and train == ["bag_a/right"]
    seen = {D.split_sequences(manifest, 0.5, seed=s)[1][0].split("/")[0] for s in range(8)}
    assert seen == {"bag_a", "bag_b"}  # the seed picks the recording


# --------------------------------------------------------------------------------------
# clip dataset
# --------------------------------------------------------------------------------------
def test_clips_are_consecutive_and_cover_each_frame_once(dataset):
    out, manifest = dataset
    clips = D.HandClipDataset(out, ["bag_b/right"], clip_length=4, training=True,
                              augmentation=D.AugmentationConfig(enabled=False))
    assert len(clips) == 60 // 4
    for epoch in (0, 1):
        clips.set_epoch(epoch)
        rows = np.concatenate([clips[i]["rows"] for i in range(len(clips))])
        assert np.all(np.diff(rows.reshape(-1, 4), axis=1) == 1)
        assert len(np.unique(rows)) >= len(rows) - 4  # at most one clip overlaps at a segment end
    clips.set_epoch(0)
    grid0 = clips[0]["rows"]
    assert any(not np.array_equal(grid0, (clips.set_epoch(e), clips[0]["rows"])[1]) for e in range(1, 6))
    # bag_a misses two frames (glove gap, no ground truth): with a 20 ms limit no clip spans them
    stamps = D.load_shard(out, _record(manifest, "bag_a/right"), ["stamps_ns"])["stamps_ns"]
    strict = D.HandClipDataset(out, ["bag_a/right"], clip_length=4, training=False, max_frame_gap_s=0.02)
    assert len(strict.segments) == 3
    for i in range(len(strict)):
        assert np.all(np.diff(stamps[strict[i]["rows"]]) < 0.02e9)
    tolerant = D.HandClipDataset(out, ["bag_a/right"], clip_length=4, training=False)  # 50 ms: one lost frame ok
    assert len(tolerant.segments) == 1


def test_augmentation_noise_gamma_fast_motion(dataset):
    out, _manifest = dataset
    noise_only = D.AugmentationConfig(gamma_range=(1.0, 1.0), fast_motion_probability=0.0)
    clean = D.HandClipDataset(out, ["bag_b/right"], clip_length=4, training=True,
                              augmentation=D.AugmentationConfig(enabled=False), seed=3)
    noisy = D.HandClipDataset(out, ["bag_b/right"], clip_length=4, training=True, augmentation=noise_only, seed=3)
    a, b = clean[2], noisy[2]
    np.testing.assert_array_equal(a["rows"], b["rows"])
    difference = (b["crops"] - a["crops"]) * 255.0
    interior = (a["crops"] > 40 / 255) & (a["crops"] < 215 / 255)
    assert difference[interior].std() == pytest.approx(10.0, rel=0.1)
    assert abs(difference[interior].mean()) < 1.0
    per_frame = [difference[k][interior[k]][:200] for k in range(4)]
    assert not np.allclose(per_frame[0], per_frame[1])  # noise is drawn per frame
    # deterministic per (seed, epoch, index)
    np.testing.assert_array_equal(noisy[2]["crops"], b["crops"])
    noisy.set_epoch(1)
    assert not np.array_equal(noisy[2]["crops"], b["crops"])

    gamma_only = D.HandClipDataset(out, ["bag_b/right"], clip_length=4, training=True, seed=3,
                                   augmentation=D.AugmentationConfig(image_noise_sigma_dn=0.0, fast_motion_probability=0))
    gammas = [gamma_only[i]["gamma"] for i in range(len(gamma_only))]
    assert min(gammas) >= 0.5 and max(gammas) <= 1.7 and np.std(gammas) > 0.1
    item = gamma_only[5]
    base = clean[5]
    np.testing.assert_allclose(item["crops"], np.power(base["crops"], item["gamma"]), atol=2e-6)

    fast = D.HandClipDataset(out, ["bag_b/right"], clip_length=4, training=True, seed=3,
                             augmentation=D.AugmentationConfig(fast_motion_probability=1.0, fast_motion_strides=(2, 3)))
    strides = set()
    for i in range(len(fast)):
        clip = fast[i]
        assert clip["stride"] in (2, 3) and np.all(np.diff(clip["rows"]) == clip["stride"])
        assert clip["rows"].max() < 60
        strides.add(clip["stride"])
    assert strides == {2, 3}


def test_validation_clips_are_not_augmented_and_collate(dataset):
    out, _manifest = dataset
    val = D.HandClipDataset(out, ["bag_a/right", "bag_b/left"], clip_length=5, training=False)
    shard = D.load_shard(out, _record(_manifest, "bag_b/left"), ["crops"])["crops"]
    item = val[len(val) - 1]
    # exactly the float crop the tracker feeds (preprocess.crop_inputs: float32 pixels / 255)
    np.testing.assert_array_equal(item["crops"][:, 0], shard[item["rows"]].astype(np.float32) / 255.0)
    assert item["crops"].dtype == np.float32
    assert item["stride"] == 1 and item["is_left"]
    batch = D.collate_clips([val[0], val[len(val) - 1]])
    inputs, targets = batch.inputs, batch.targets
    assert inputs.crops.shape == (2, 5, 1, CROP_SIZE, CROP_SIZE) and inputs.crops.dtype == torch.float32
    assert inputs.K_virtual.shape == (2, 5, 1, 3, 3) and inputs.view_valid.shape == (2, 5, 1)
    assert inputs.imu_features.shape == (2, 5, 14, 23, 3) and inputs.imu_valid.dtype == torch.bool
    assert inputs.hand_scale.shape == (2, 5) and inputs.side.tolist() == [False, True]
    assert targets.landmarks.shape == (2, 5, 21, 3) and targets.wrist_rotation.shape == (2, 5, 3, 3)
    frame = inputs.frame(2)  # what forward_clip feeds the model per frame
    assert frame.crops.shape == (2, 1, CROP_SIZE, CROP_SIZE) and frame.hand_scale.shape == (2,)
    assert frame.side.tolist() == [False, True]
    imu_only = D.HandClipDataset(out, ["bag_a/right"], clip_length=5, training=False, load_vision=False)
    assert "crops" not in imu_only[0] and D.collate_clips([imu_only[0]]).inputs.crops is None


def test_dataset_command(bags, tmp_path, capsys):
    from avi_ht_ros.cli import main

    out = tmp_path / "cli_ds"
    code = main(["dataset", "--bags", str(bags["bag_a"]), "--out", str(out), "--side", "right", "--seed", "5",
                 "--crop-size", "32", "--no-progress"])
    assert code == 0
    manifest = D.load_manifest(out)
    assert manifest["seed"] == 5 and manifest["config"]["sides"] == ["right"] and manifest["crop_size"] == 32
    assert main(["dataset", "--bags", str(bags["bag_a"]), "--out", str(out), "--no-progress"]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_simulated_bag_end_to_end(tmp_path):
    """A bag of the world simulator (``avi-ht simulate``) through the builder: windows as live."""
    from avi_ht_ros.cli import main

    assert main(["simulate", "--out", str(tmp_path / "sim"), "--duration", "1.0", "--seed", "4",
                 "--image-scale", "0.5", "--time-offset", "0.015", "--no-progress"]) == 0
    manifest = D.build_dataset([tmp_path / "sim"], tmp_path / "ds", D.DatasetBuildConfig(sides=("right",)),
                               show_progress=False, log=None)
    record = manifest["sequences"][0]
    assert record["time_offset_source"] == "sim_config" and record["time_offset_s"] == pytest.approx(0.015)
    assert record["frames"] == record["sync"]["frames_complete"] + record["sync"]["frames_partial"] > 50
    bag = next((tmp_path / "sim").iterdir())
    glove = GloveModel.reference()
    synchronizer = sync.live_synchronizer(sync.SyncConfig(time_offset_s=0.015), glove)
    samples = [convert.glove_arrays_from_msg(m.msg)
               for m in read_messages(bag, [topics.hand_topic("right", topics.GLOVE_SAMPLES)])]
    frames = [(convert.stamp_ns_of(m.msg.header.stamp), i) for i, m in enumerate(read_messages(bag, [topics.IMAGE]))]
    live = {r.payload: r.window for r in sync.replay(samples, frames, synchronizer)}
    arrays = D.load_shard(tmp_path / "ds", record)
    for row, index in enumerate(arrays["camera_frame_index"]):
        np.testing.assert_array_equal(arrays["window_gravity_up"][row], live[int(index)].gravity_up)
        np.testing.assert_array_equal(arrays["window_gyro"][row], live[int(index)].gyro)
    assert arrays["view_valid"].mean() > 0.8 and arrays["crops"][arrays["view_valid"]].mean() > 5
