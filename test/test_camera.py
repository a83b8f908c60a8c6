"""Camera model: projection, distortion, ROS calibration files, CameraInfo, perspective crops."""
from __future__ import annotations

import math
import types

import cv2
import numpy as np
import pytest
import yaml

from avi_ht_ros.common.camera import (
    CameraMount,
    PinholeCamera,
    crop_to_camera_pixels,
    default_sim_camera,
    load_camera_mount,
    load_camera_yaml,
    perspective_crop,
    perspective_crop_roi,
    project_points_torch,
    save_camera_yaml,
    unproject_points_torch,
)
from avi_ht_ros.common.errors import ConfigError

DISTORTION = np.array([-0.12, 0.02, 0.0012, -0.0008, -0.001])  # a wide-angle lens, monotonic over the image


@pytest.fixture
def pinhole():
    return PinholeCamera(640, 480, 300.0, 305.0, 321.3, 238.7, camera_name="test_cam")


@pytest.fixture
def distorted(pinhole):
    return pinhole.replace(distortion=DISTORTION)


def points_in_view(n=500, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.15, 1.5, n)
    return np.stack([rng.uniform(-0.8, 0.8, n) * z, rng.uniform(-0.6, 0.6, n) * z, z], axis=1)


# -- projection --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pinhole", "distorted"])
def test_project_unproject_round_trip(name, request):
    camera = request.getfixturevalue(name)
    points = points_in_view()
    uv = camera.project(points)
    assert uv.shape == (500, 2) and np.all(np.isfinite(uv))
    back = camera.unproject(uv, points[:, 2])
    np.testing.assert_allclose(back, points, atol=1e-9)
    # Pixel -> ray -> pixel as well, on a grid covering the whole image.
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 639.5, 9), np.linspace(-0.5, 479.5, 7)), -1).reshape(-1, 2)
    np.testing.assert_allclose(camera.project(camera.unproject(grid)), grid, atol=1e-7)


def test_projection_matches_opencv(distorted):
    points = points_in_view(seed=1)
    expected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), distorted.K, distorted.distortion)
    np.testing.assert_allclose(distorted.project(points), expected[:, 0], atol=1e-8)


def test_pinhole_projection_is_k_times_normalized(pinhole):
    uv = pinhole.project(np.array([[0.1, -0.05, 0.5], [0.0, 0.0, 2.0]]))
    np.testing.assert_allclose(uv, [[300 * 0.2 + 321.3, 305 * -0.1 + 238.7], [321.3, 238.7]])


def test_points_behind_camera_and_outside_distortion_range_are_nan(pinhole):
    folding = pinhole.replace(distortion=[-0.21, 0.06, 0.0, 0.0, -0.008])  # folds back at r ~ 1.9
    uv = folding.project(np.array([[0.0, 0.0, -1.0], [0.1, 0.1, 0.0], [1.5, 0.0, 0.5], [0.0, 0.0, 1.0]]))
    assert np.all(np.isnan(uv[:3])) and np.all(np.isfinite(uv[3]))
    # Without the guard the polynomial folds back: x/z = 3 would land inside the image.
    assert folding.in_image(uv).tolist() == [False, False, False, True]
    # Image corners beyond the polynomial's maximum radius have no ray.
    rays = folding.unproject(np.array([[-0.5, -0.5], [321.3, 238.7]]))
    assert np.all(np.isnan(rays[0, :2])) and np.all(np.isfinite(rays[1]))


def test_in_image_uses_pixel_edges(pinhole):
    uv = np.array([[-0.5, 0.0], [-0.51, 0.0], [639.49, 479.49], [639.5, 0.0], [np.nan, 1.0]])
    assert pinhole.in_image(uv).tolist() == [True, False, True, False, False]


def test_pixel_rays_have_unit_depth_and_hit_their_pixel(distorted):
    rays = distorted.pixel_rays()
    assert rays.shape == (480, 640, 3) and rays.dtype == np.float32
    assert np.all(rays[..., 2] == 1.0)
    uv = distorted.project(rays[::97, ::113].astype(np.float64))
    u, v = np.meshgrid(np.arange(640)[::113], np.arange(480)[::97])
    np.testing.assert_allclose(uv, np.stack([u, v], -1), atol=2e-4)  # float32 rays


def test_invalid_cameras_are_rejected():
    with pytest.raises(ValueError):
        PinholeCamera(640, 480, -1.0, 300.0, 320, 240)
    with pytest.raises(ValueError):
        PinholeCamera(0, 480, 300.0, 300.0, 320, 240)
    with pytest.raises(ValueError):
        PinholeCamera(640, 480, 300.0, 300.0, 320, 240, distortion=[0.1, 0.0, 0.0, 0.0])


# -- torch -------------------------------------------------------------------------------------


def test_torch_projection_matches_numpy_and_round_trips(distorted):
    torch = pytest.importorskip("torch")
    points = points_in_view(50, seed=2)
    uv = distorted.project_torch(torch.tensor(points))
    np.testing.assert_allclose(uv.numpy(), distorted.project(points), atol=1e-9)
    back = distorted.unproject_torch(uv, torch.tensor(points[:, 2]))
    np.testing.assert_allclose(back.numpy(), points, atol=1e-9)


def test_torch_projection_gradients(distorted):
    torch = pytest.importorskip("torch")
    points = torch.tensor(points_in_view(6, seed=3), requires_grad=True)
    intrinsics = torch.tensor(distorted.intrinsics, requires_grad=True)
    distortion = torch.tensor(distorted.distortion, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, k, d: project_points_torch(p, k, d), (points, intrinsics, distortion))
    # Analytic check of one entry for the pinhole: du/dx = fx / z.
    p = torch.tensor([[0.1, 0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    project_points_torch(p, torch.tensor([300.0, 305.0, 320.0, 240.0], dtype=torch.float64))[0, 0].backward()
    np.testing.assert_allclose(p.grad.numpy(), [[600.0, 0.0, -120.0]])
    uv = torch.tensor([[100.0, 50.0], [400.0, 300.0]], dtype=torch.float64, requires_grad=True)
    intrinsics, distortion = torch.tensor(distorted.intrinsics), torch.tensor(distorted.distortion)
    assert torch.autograd.gradcheck(lambda x: unproject_points_torch(x, 0.7, intrinsics, distortion), (uv,))


def test_torch_projection_broadcasts_per_sample_cameras():
    torch = pytest.importorskip("torch")
    points = torch.tensor([[[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]], [[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]]])
    intrinsics = torch.tensor([[100.0, 100.0, 10.0, 10.0], [200.0, 200.0, 20.0, 20.0]])[:, None, :]
    uv = project_points_torch(points, intrinsics)
    assert uv.shape == (2, 2, 2)
    np.testing.assert_allclose(uv.numpy(), [[[10, 10], [20, 10]], [[20, 20], [40, 20]]], rtol=1e-6)


# -- ROS calibration YAML ------------------------------------------------------------------------


def test_yaml_round_trip(tmp_path, distorted):
    path = tmp_path / "cam.yaml"
    mount = CameraMount(xyz=(0.1, 0.0, -0.02), rpy=(0.0, 0.4, 0.0))
    save_camera_yaml(distorted, path, mount=mount)
    doc = yaml.safe_load(path.read_text())
    assert list(doc)[:8] == ["image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                             "distortion_coefficients", "rectification_matrix", "projection_matrix"]
    assert doc["camera_matrix"] == {"rows": 3, "cols": 3, "data": distorted.K.reshape(-1).tolist()}
    loaded = load_camera_yaml(path)
    assert (loaded.width, loaded.height, loaded.camera_name) == (640, 480, "test_cam")
    np.testing.assert_array_equal(loaded.K, distorted.K)
    np.testing.assert_array_equal(loaded.distortion, distorted.distortion)
    np.testing.assert_array_equal(loaded.P, distorted.P)
    np.testing.assert_array_equal(loaded.rectification, np.eye(3))
    loaded_mount = load_camera_mount(path)
    assert loaded_mount.xyz == mount.xyz and loaded_mount.rpy == mount.rpy


def test_shipped_sim_camera():
    camera = default_sim_camera()
    assert (camera.width, camera.height, camera.camera_name) == (640, 480, "head_camera")
    horizontal, vertical, diagonal = camera.fov_deg()
    assert 100.0 <= diagonal <= 110.0 and horizontal > vertical
    from avi_ht_ros.common.paths import config_path

    mount = load_camera_mount(config_path("camera_sim.yaml"))
    head_from_optical = mount.parent_from_optical()
    forward = head_from_optical[:3, 2]  # optical z in the head frame (x forward, z up)
    assert forward[0] > 0.7 and forward[2] < -0.2, "camera looks forward and down"
    np.testing.assert_allclose(head_from_optical[:3, 0], [0.0, -1.0, 0.0], atol=1e-12)  # image right = head right


def _valid_doc():
    return PinholeCamera(640, 480, 300, 300, 319.5, 239.5, camera_name="c").to_ros_yaml_dict()


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("camera_matrix"), "camera_matrix"),
        (lambda d: d.pop("image_width"), "image_width"),
        (lambda d: d.pop("distortion_coefficients"), "distortion_coefficients"),
        (lambda d: d["camera_matrix"].update(rows=2, data=d["camera_matrix"]["data"][:6]), "camera_matrix"),
        (lambda d: d["camera_matrix"].update(data=[1.0, 2.0]), "camera_matrix"),
        (lambda d: d["camera_matrix"].pop("data"), "camera_matrix"),
        (lambda d: d["projection_matrix"].update(rows=4, cols=3), "projection_matrix"),
        (lambda d: d["rectification_matrix"].update(data=["a"] * 9), "rectification_matrix"),
        (lambda d: d["distortion_coefficients"].update(cols=4, data=[0.1, 0, 0, 0]), "distortion_coefficients"),
        (lambda d: d.update(distortion_model="equidistant", distortion_coefficients={
            "rows": 1, "cols": 4, "data": [0.1, 0.0, 0.0, 0.0]}), "distortion_model"),
        (lambda d: d.update(image_height=-480), "image_height"),
        (lambda d: d["camera_matrix"]["data"].__setitem__(0, -300.0), "camera_matrix"),
        (lambda d: d["camera_matrix"]["data"].__setitem__(1, 2.0), "camera_matrix"),
    ],
)
def test_yaml_errors_name_the_field(tmp_path, mutate, field):
    doc = _valid_doc()
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load_camera_yaml(path)
    assert info.value.where == str(path)
    assert field in info.value.problem


def test_yaml_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_camera_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_camera_yaml(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_camera_yaml(bad)


def test_yaml_optional_matrices_default(tmp_path):
    doc = _valid_doc()
    del doc["rectification_matrix"], doc["projection_matrix"], doc["camera_name"]
    path = tmp_path / "minimal.yaml"
    path.write_text(yaml.safe_dump(doc))
    camera = load_camera_yaml(path)
    np.testing.assert_array_equal(camera.rectification, np.eye(3))
    np.testing.assert_array_equal(camera.P, np.hstack([camera.K, np.zeros((3, 1))]))


# -- CameraInfo ----------------------------------------------------------------------------------


def test_camera_info_fields_are_plain_python(distorted):
    fields = distorted.to_camera_info_fields()
    assert set(fields) == {"width", "height", "distortion_model", "d", "k", "r", "p"}
    assert (fields["width"], fields["height"], fields["distortion_model"]) == (640, 480, "plumb_bob")
    assert [len(fields[k]) for k in ("d", "k", "r", "p")] == [5, 9, 9, 12]
    assert all(type(v) is float for k in ("d", "k", "r", "p") for v in fields[k])
    assert fields["k"][0] == 300.0 and fields["p"][2] == distorted.cx and fields["d"] == DISTORTION.tolist()


def test_camera_from_camera_info_message_like_object(distorted):
    fields = distorted.to_camera_info_fields()
    for info in (fields, types.SimpleNamespace(**fields)):
        camera = PinholeCamera.from_camera_info(info)
        np.testing.assert_array_equal(camera.K, distorted.K)
        np.testing.assert_array_equal(camera.distortion, distorted.distortion)
    with pytest.raises(ConfigError, match="k"):
        PinholeCamera.from_camera_info({**fields, "k": [1.0] * 8})
    with pytest.raises(ConfigError, match="width"):
        PinholeCamera.from_camera_info({k: v for k, v in fields.items() if k != "width"})


# -- perspective crops ---------------------------------------------------------------------------


def _blob_image(camera, uv, sigma=3.0):
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    image = 250.0 * np.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * sigma**2))
    return image.astype(np.float32)


def _centroid(image):
    weights = np.where(image > 0.2 * image.max(), image, 0.0).astype(np.float64)
    v, u = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(weights * u).sum(), (weights * v).sum()]) / weights.sum()


@pytest.mark.parametrize("name", ["pinhole", "distorted"])
@pytest.mark.parametrize("radius", [0.06, 0.12])  # 0.12 m at ~0.35 m: the crop is down-sampled (pyramid path)
def test_perspective_crop_landmark_lands_where_the_virtual_camera_says(name, radius, request):
    camera = request.getfixturevalue(name)
    center = np.array([0.15, 0.12, 0.35])  # off-axis: the virtual camera is really rotated
    landmark = center + np.array([0.02, -0.025, 0.01])
    image = _blob_image(camera, camera.project(landmark))
    crop, virtual, rotation = perspective_crop(image, camera, center, radius, out_size=96)
    assert crop.shape == (96, 96) and crop.dtype == np.float32
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0)
    expected = virtual.project(rotation @ landmark)
    assert np.linalg.norm(_centroid(crop) - expected) < 0.3
    # The virtual axis points at the centre, and the whole ball of `radius` fits in the crop.
    np.testing.assert_allclose(virtual.project(rotation @ center), [47.5, 47.5], atol=1e-9)
    directions = np.random.default_rng(0).normal(size=(200, 3))
    ball = center + radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    assert np.all(virtual.in_image(virtual.project(ball @ rotation.T)))
    # And back: crop pixel -> source pixel.
    np.testing.assert_allclose(crop_to_camera_pixels(expected, virtual, rotation, camera), camera.project(landmark),
                               atol=1e-6)


def test_perspective_crop_keeps_image_up_direction(pinhole):
    """No roll: a point below the centre in the image is below it in the crop."""
    image = np.zeros((480, 640), np.uint8)
    _, virtual, rotation = perspective_crop(image, pinhole, [-0.2, 0.1, 0.4], 0.08)
    below = virtual.project(rotation @ np.array([-0.2, 0.14, 0.4]))
    right = virtual.project(rotation @ np.array([-0.16, 0.1, 0.4]))
    assert below[1] > 47.5 + 5 and abs(below[0] - 47.5) < 5
    assert right[0] > 47.5 + 5 and abs(right[1] - 47.5) < 5


def test_perspective_crop_roi(distorted):
    center_uv = np.array([500.0, 120.0])
    image = _blob_image(distorted, center_uv + [10.0, 6.0])
    crop, virtual, rotation = perspective_crop_roi(image, distorted, center_uv, 40.0, out_size=64)
    assert crop.shape == (64, 64)
    ray = distorted.unproject(center_uv)
    np.testing.assert_allclose(virtual.project(rotation @ ray), [31.5, 31.5], atol=1e-9)
    blob_ray = distorted.unproject(center_uv + [10.0, 6.0])
    assert np.linalg.norm(_centroid(crop) - virtual.project(rotation @ blob_ray)) < 0.3
    # The ROI circle's extreme points are inside the crop and the farthest touches its edge.
    extremes = distorted.unproject(center_uv + np.array([[40.0, 0], [-40, 0], [0, 40], [0, -40]]))
    crop_uv = virtual.project(extremes @ rotation.T)
    assert np.all(virtual.in_image(crop_uv, margin=-1e-6))
    assert math.isclose(np.linalg.norm(crop_uv - 31.5, axis=1).max(), 32.0, abs_tol=1e-6)


def test_perspective_crop_rejects_bad_input(pinhole):
    image = np.zeros((480, 640), np.uint8)
    with pytest.raises(ValueError):
        perspective_crop(image, pinhole, [0.0, 0.0, -0.3], 0.1)
    with pytest.raises(ValueError):
        perspective_crop(image, pinhole, [0.0, 0.0, 0.3], 0.0)
    with pytest.raises(ValueError):
        perspective_crop(np.zeros((10, 10), np.uint8), pinhole, [0.0, 0.0, 0.3], 0.1)
