"""Glove YAML loading/validation, sensor graph distances, sensor poses."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.common.glove_model import REFERENCE_GLOVE_FILE, STANDARD_GRAVITY, GloveModel
from avi_ht_ros.common.hand_model import (
    BONE_INDEX,
    HandModel,
    forward_kinematics_numpy,
    forward_kinematics_torch,
    mirror_landmarks_local,
    mirror_rotations_local,
)

GLOVE = GloveModel.reference()
EXPECTED_SITES = (
    "index_proximal", "index_distal", "middle_proximal", "middle_distal",
    "ring_proximal", "ring_distal", "pinky_proximal", "pinky_distal",
    "thumb_metacarpal", "thumb_proximal", "thumb_distal", "hand_back",
)


def write_glove(tmp_path: Path, data) -> Path:
    path = tmp_path / "glove.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def reference_dict():
    return yaml.safe_load(config_path(REFERENCE_GLOVE_FILE).read_text())


def test_reference_glove_has_the_twelve_avi_ht_sites():
    assert GLOVE.num_sensors == 12
    assert GLOVE.sensor_names == EXPECTED_SITES
    bones = {site.name: site.bone for site in GLOVE.sites}
    assert bones["hand_back"] == "palm"
    assert all(bones[name] == name for name in EXPECTED_SITES if name != "hand_back")
    assert GLOVE.sample_rate_hz == 200.0
    assert GLOVE.frame_id("left", "index_distal") == "left_imu_index_distal"
    assert GLOVE.frame_ids("right")[-1] == "right_imu_hand_back"
    with pytest.raises(KeyError):
        GLOVE.frame_id("right", "wrist")
    with pytest.raises(ValueError):
        GLOVE.frame_id("center", "hand_back")


def test_imu_specs_are_converted_to_si():
    imu = GLOVE.sites[0].imu
    assert math.isclose(imu.accel_range, 16 * STANDARD_GRAVITY)
    assert math.isclose(imu.gyro_range, math.radians(2000))
    assert math.isclose(imu.accel_resolution, 32 * STANDARD_GRAVITY / 65536)
    assert math.isclose(imu.gyro_resolution, math.radians(4000) / 65536)
    assert 1e-4 < imu.accel_noise_density < 1e-2 and 1e-5 < imu.gyro_noise_density < 1e-3


def test_sensor_graph_hop_distances():
    hops = GLOVE.hop_distance_matrix()
    index = {name: i for i, name in enumerate(GLOVE.sensor_names)}
    assert hops.shape == (12, 12) and hops.dtype.kind == "i"
    assert np.array_equal(hops, hops.T) and np.all(np.diag(hops) == 0)
    assert np.all(hops[~np.eye(12, dtype=bool)] > 0)
    assert hops[index["index_proximal"], index["index_distal"]] == 1
    assert hops[index["hand_back"], index["index_proximal"]] == 1
    assert hops[index["hand_back"], index["pinky_proximal"]] == 1
    assert hops[index["thumb_metacarpal"], index["thumb_distal"]] == 2
    thumb_pinky = hops[index["thumb_distal"], index["pinky_distal"]]
    assert thumb_pinky == 5
    assert thumb_pinky > hops[index["ring_distal"], index["pinky_distal"]] > hops[index["index_proximal"],
                                                                                   index["index_distal"]]
    raw = GLOVE.hop_distance_matrix(compress_unsensed_bones=False)
    assert raw[index["index_proximal"], index["index_distal"]] == 2
    assert np.all(raw >= hops)


def test_custom_six_site_glove_is_a_yaml_change_only(tmp_path):
    data = reference_dict()
    data["name"] = "fingertips_and_back"
    data["sites"] = [
        {"name": f"{finger}_tip", "bone": f"{finger}_distal", "offset": [0.01, 0.0, 0.007], "rpy": [0, 0, 0]}
        for finger in ("thumb", "index", "middle", "ring", "pinky")
    ] + [{"name": "back", "bone": "palm", "offset": [0.05, 0, 0.016], "rpy": [0, 0, math.pi / 2],
          "imu": {"gyro_full_scale_dps": 500.0}}]
    glove = GloveModel.from_yaml(write_glove(tmp_path, data))
    assert glove.num_sensors == 6 and glove.name == "fingertips_and_back"
    assert math.isclose(glove.sites[5].imu.gyro_range, math.radians(500))
    assert math.isclose(glove.sites[0].imu.gyro_range, math.radians(2000))
    hops = glove.hop_distance_matrix()
    assert np.array_equal(hops[5, :5], [1, 1, 1, 1, 1])  # every tip chain hangs off the sensed back
    assert hops[1, 2] == 2
    fk = forward_kinematics_numpy(np.zeros((3, 22)), np.eye(3), np.zeros(3))
    rotations, positions = glove.sensor_poses(fk)
    assert rotations.shape == (3, 6, 3, 3) and positions.shape == (3, 6, 3)
    # Without the back sensor the palm is kept as the junction: tips are 2 apart.
    data["sites"] = data["sites"][:5]
    no_back = GloveModel.from_yaml(write_glove(tmp_path, data)).hop_distance_matrix()
    assert np.all(no_back[~np.eye(5, dtype=bool)] == 2)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["sites"][3].update(bone="index_middle"), "sites[3].bone"),
    (lambda d: d["sites"][2].update(rpy=[0.0, 0.1]), "sites[2].rpy"),
    (lambda d: d["sites"][11].update(quaternion_xyzw=[0, 0, 0, 2.0]), "sites[11].quaternion_xyzw"),
    (lambda d: d["sites"][11].update(quaternion_xyzw=[[0, 0], [0, 1]]), "sites[11].quaternion_xyzw"),
    (lambda d: d["sites"][1].update(rpy=None), "sites[1].rpy"),
    (lambda d: d["sites"][0].update(quaternion_xyzw=[0, 0, 0, 1]), "sites[0]: give exactly one"),
    (lambda d: d["sites"][4].update(offset=[0.0, 0.0]), "sites[4].offset"),
    (lambda d: d["sites"][4].update(name="Index Prox"), "sites[4].name"),
    (lambda d: d["sites"][5].update(name="index_proximal"), "sites[5].name: duplicate"),
    (lambda d: d["sites"][6].update(ofset=[0, 0, 0]), "sites[6].ofset"),
    (lambda d: d["imu"].update(adc_bits=12.5), "imu.adc_bits"),
    (lambda d: d["imu"].pop("gyro_full_scale_dps"), "imu.gyro_full_scale_dps"),
    (lambda d: d["sites"][7].update(imu={"accel_full_scale_g": -4}), "sites[7].imu.accel_full_scale_g"),
    (lambda d: d.update(sample_rate_hz="fast"), "sample_rate_hz"),
    (lambda d: d.update(sites=[]), "sites"),
])
def test_yaml_errors_name_the_file_and_field(tmp_path, mutate, field):
    data = reference_dict()
    mutate(data)
    path = write_glove(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        GloveModel.from_yaml(path)
    assert error.value.where == str(path)
    assert error.value.problem.startswith(field), error.value.problem


def test_unreadable_or_malformed_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        GloveModel.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        GloveModel.from_yaml(write_glove(tmp_path, "sites: [unclosed"))
    with pytest.raises(ConfigError, match="top level"):
        GloveModel.from_yaml(write_glove(tmp_path, "- just\n- a list\n"))


@pytest.mark.parametrize("side", ["left", "right"])
def test_sensors_sit_on_the_dorsal_side_of_their_bones(side):
    rng = np.random.default_rng(0)
    model = HandModel.default()
    angles = rng.uniform(model.joint_lower, model.joint_upper, (32, 22))
    fk = forward_kinematics_numpy(angles, np.eye(3), np.zeros(3), scale=1.1, side=side)
    rotations, positions = GLOVE.sensor_poses(fk)
    bones = GLOVE.sensor_bone_indices
    from_bone = positions - fk.bone_origins[:, bones]
    dorsal = np.einsum("bni,bni->bn", from_bone, fk.bone_rotations[:, bones][..., :, 2])
    assert np.all(dorsal > 0.005)
    assert np.allclose(np.linalg.det(rotations), 1.0)
    # The mounting offset scales with the hand and is rigid on its bone.
    distance = np.linalg.norm(from_bone, axis=-1)
    assert np.allclose(distance, 1.1 * np.linalg.norm(GLOVE.mount_offsets(), axis=-1))
    # Finger sensors are mounted with x distal, so their x axis equals the bone's.
    finger = GLOVE.site_index("index_distal")
    assert np.allclose(rotations[:, finger], fk.bone_rotations[:, BONE_INDEX["index_distal"]])


def test_left_glove_is_the_mirrored_right_glove():
    rng = np.random.default_rng(1)
    model = HandModel.default()
    angles = rng.uniform(model.joint_lower, model.joint_upper, (8, 22))
    right = GLOVE.sensor_poses(forward_kinematics_numpy(angles, np.eye(3), np.zeros(3), side="right"))
    left = GLOVE.sensor_poses(forward_kinematics_numpy(angles, np.eye(3), np.zeros(3), side="left"))
    assert np.allclose(mirror_landmarks_local(right[1]), left[1])
    assert np.allclose(mirror_rotations_local(right[0]), left[0])


def test_sensor_poses_follow_torch_inputs():
    rng = np.random.default_rng(2)
    angles = rng.uniform(-0.3, 0.8, (4, 22))
    expected = GLOVE.sensor_poses(forward_kinematics_numpy(angles, np.eye(3), np.ones(3), side="left"))
    angles_t = torch.tensor(angles, requires_grad=True)
    fk = forward_kinematics_torch(angles_t, torch.eye(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                                  side="left")
    rotations, positions = GLOVE.sensor_poses(fk)
    assert np.allclose(rotations.detach().numpy(), expected[0]) and np.allclose(positions.detach().numpy(),
                                                                                 expected[1])
    positions.sum().backward()
    assert angles_t.grad is not None and torch.any(angles_t.grad != 0)
