"""The online tracker: crops follow the previous estimate, states reflect the inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avi_ht_ros.common.camera import default_sim_camera
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.models.config import ModelConfig
from avi_ht_ros.models.factory import build_model
from avi_ht_ros.tracker import tracker as T
from avi_ht_ros.tracker.preprocess import CropConfig, crop_inputs, hand_center, imu_inputs


def window(t=14, n=12, dead=()):
    status = np.zeros((t, n), np.uint8)
    for k in dead:
        status[:, k] = 3
    up = np.zeros((t, n, 3), np.float32)
    up[..., 2] = 1.0
    return {"gravity_up": up, "gyro": np.zeros((t, n, 3), np.float32),
            "accel": np.tile(np.float32([0, 0, 9.81]), (t, n, 1)), "status": status, "window_state": 0}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    glove = GloveModel.reference()
    return glove, default_sim_camera()


def test_imu_inputs_shape_and_dead_sensor_mask(setup):
    glove, _ = setup
    features, valid = imu_inputs(window(dead=(3,)), glove, "gravity+finger_gyro")
    assert features.shape == (14, 23, 3) and valid.shape == (14, 23)
    assert not valid[:, 3].any() and valid[:, 0].all()


def test_crop_is_centred_on_the_given_point(setup):
    _, camera = setup
    image = np.zeros((camera.height, camera.width), np.uint8)
    center = np.array([0.05, 0.1, 0.4])
    uv = camera.project(center[None])[0]
    image[int(uv[1]) - 2:int(uv[1]) + 3, int(uv[0]) - 2:int(uv[0]) + 3] = 255
    crop = crop_inputs(image, camera, center, 1.0, CropConfig())
    assert crop.crop.shape == (96, 96) and crop.crop.dtype == np.float32
    peak = np.unravel_index(np.argmax(crop.crop), crop.crop.shape)
    assert abs(peak[0] - 47.5) <= 2 and abs(peak[1] - 47.5) <= 2


@pytest.mark.parametrize("model_type", ["avi_ht", "vision_only", "imu_only"])
def test_tracker_states_and_crop_following(setup, model_type):
    glove, camera = setup
    model = build_model(ModelConfig(type=model_type), glove)
    tracker = T.HandTracker(model, camera, glove, "right", T.TrackerConfig(lost_sigma_m=1.0))
    image = np.random.default_rng(0).integers(0, 255, (camera.height, camera.width), dtype=np.uint8)
    first = tracker.step(0, image, window())
    assert first.landmarks.shape == (21, 3) and np.isfinite(first.landmarks).all()
    second = tracker.step(16_666_667, image, window())
    if model_type != "imu_only":
        # the second crop is centred on the first estimate (no ground truth anywhere)
        np.testing.assert_allclose(second.crop_center, hand_center(first.landmarks), atol=1e-9)
    if model_type == "avi_ht":
        assert first.tracking_state == T.TRACKING_OK and first.imu_attention.shape == (12,)
        assert tracker.step(33_333_333, image, window(dead=(0, 1))).tracking_state == T.TRACKING_DEGRADED
        assert tracker.step(50_000_000, image, None).tracking_state == T.TRACKING_VISION_ONLY
    if model_type == "vision_only":
        assert first.tracking_state == T.TRACKING_OK and first.imu_attention.size == 0


def test_a_given_crop_centre_replaces_the_prediction_and_keeps_the_state(setup):
    """The evaluation's truth-crop diagnostic: crops where told, recurrent state carried."""
    glove, camera = setup
    model = build_model(ModelConfig(type="vision_only"), glove)
    told = T.HandTracker(model, camera, glove, "right", T.TrackerConfig(lost_sigma_m=1.0))
    image = np.random.default_rng(1).integers(0, 255, (camera.height, camera.width), dtype=np.uint8)
    centers = [np.array([0.02, 0.05, 0.40]), np.array([-0.03, 0.08, 0.35]), np.array([0.0, 0.1, 0.45])]
    states = []
    for k, center in enumerate(centers):
        estimate = told.step(k * 16_666_667, image, None, crop_center=center)
        np.testing.assert_allclose(estimate.crop_center, center, atol=0)
        states.append(told._state)
    assert states[0] is not None and not torch.equal(states[1], states[2])
    # the same crops fed with their state reproduce the estimate: nothing else differs
    fresh = T.HandTracker(model, camera, glove, "right", T.TrackerConfig(lost_sigma_m=1.0))
    for k, center in enumerate(centers):
        again = fresh.step(k * 16_666_667, image, None, crop_center=center)
    np.testing.assert_array_equal(again.landmarks, estimate.landmarks)


def test_large_sigma_declares_the_track_lost_and_restarts(setup):
    glove, camera = setup
    model = build_model(ModelConfig(type="avi_ht"), glove)
    tracker = T.HandTracker(model, camera, glove, "right", T.TrackerConfig(lost_sigma_m=0.001))
    image = np.zeros((camera.height, camera.width), np.uint8)
    estimate = tracker.step(0, image, window())
    assert estimate.tracking_state == T.TRACKING_LOST
    again = tracker.step(16_666_667, image, window())
    np.testing.assert_allclose(again.crop_center, hand_center(estimate.landmarks), atol=0.5)  # refined search
    assert tracker._previous is None  # still lost: every frame restarts from the search crop


def test_a_crop_size_the_model_does_not_take_is_a_start_up_error(setup):
    """tracker.crop_size must equal the model's crop size: a clear error naming the parameter at
    construction (the fusion node's start-up), not a shape error on the first frame."""
    glove, camera = setup
    model = build_model(ModelConfig(type="avi_ht"), glove=glove)
    with pytest.raises(ConfigError, match="tracker.crop_size.*96 px crops"):
        T.HandTracker(model, camera, glove, "right", T.TrackerConfig(crop_size=64))
    imu_model = build_model(ModelConfig(type="imu_only"), glove=glove)   # no crops: any size is fine
    T.HandTracker(imu_model, camera, glove, "right", T.TrackerConfig(crop_size=64))
