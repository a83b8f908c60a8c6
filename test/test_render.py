"""Hand/scene renderer: geometry, depth order, visibility ground truth, determinism, strips."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from avi_ht_ros.common.camera import PinholeCamera
from avi_ht_ros.sim.render import (
    OCCLUDED_OBJECT,
    OCCLUDED_SELF,
    OUT_OF_VIEW,
    VISIBLE,
    Box,
    Cylinder,
    HandGeometry,
    HandRenderer,
    RenderConfig,
    Sphere,
)
from avi_ht_ros.sim.strip import OCCLUDED_COLOR, VISIBLE_COLOR, draw_strip, strip_from_results

# Open right hand at rest in its wrist frame (x distal, y radial, z dorsal), m, MediaPipe order:
# the reference hand of avi_ht_ros.common.hand_model, fixed here so these tests stand alone.
REST_HAND = np.array([
    [0.000, 0.000, 0.000],
    [0.028, 0.022, -0.012], [0.061, 0.052, -0.023], [0.086, 0.071, -0.026], [0.108, 0.087, -0.029],
    [0.088, 0.024, -0.002], [0.129, 0.026, -0.002], [0.153, 0.028, -0.002], [0.174, 0.029, -0.002],
    [0.090, 0.004, 0.000], [0.135, 0.004, 0.000], [0.163, 0.004, 0.000], [0.185, 0.004, 0.000],
    [0.084, -0.015, -0.003], [0.126, -0.018, -0.003], [0.153, -0.020, -0.003], [0.175, -0.021, -0.003],
    [0.077, -0.032, -0.008], [0.110, -0.037, -0.008], [0.128, -0.040, -0.008], [0.147, -0.043, -0.008],
])
# Palm towards the camera, fingers up: hand x -> image up (-y), hand y -> image right, dorsal z -> away.
PALM_TO_CAMERA = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
INDEX_TIP, PINKY_TIP, MIDDLE_TIP = 8, 20, 12

CLEAN = RenderConfig(  # no noise, no tone curve, no vignetting/blur: pixel values follow the shading exactly
    background=False, gamma_range=(1.0, 1.0), exposure_range=(1.0, 1.0), read_noise_dn_range=(0.0, 0.0),
    shot_noise_gain_range=(0.0, 0.0), vignetting_range=(0.0, 0.0), optical_blur_sigma_px=0.0,
    ambient_range=(0.2, 0.2), light_range=(0.6, 0.6), hand_albedo_range=(0.5, 0.5),
    light_reference_distance_m=0.3,
)


def hand_at(rotation=PALM_TO_CAMERA, wrist=(0.0, 0.08, 0.40)):
    return REST_HAND @ np.asarray(rotation).T + np.asarray(wrist)


def in_front(point, distance):
    """The point ``distance`` nearer to the camera on the ray through ``point``."""
    point = np.asarray(point, float)
    return point * (1.0 - distance / np.linalg.norm(point))


@pytest.fixture(scope="module")
def camera():
    return PinholeCamera(640, 480, 300.0, 300.0, 319.5, 239.5, camera_name="head_camera")


@pytest.fixture(scope="module")
def clean(camera):
    return HandRenderer(camera, CLEAN, seed=0)


@pytest.fixture(scope="module")
def textured(camera):
    return HandRenderer(camera, RenderConfig(), seed=4)


def test_output_types_and_shapes(textured):
    result = textured.render(hand_at(), [Sphere([0.05, 0.0, 0.3], 0.02)], frame_index=0)
    assert result.image.shape == (480, 640) and result.image.dtype == np.uint8
    assert result.depth.shape == (480, 640) and result.depth.dtype == np.float32
    assert result.hand_mask.dtype == bool and result.hand_amodal_mask.shape == (480, 640)
    assert result.landmark_uv.shape == (21, 2) and result.landmark_visibility.shape == (21,)
    assert result.landmark_occlusion.dtype == np.int8
    assert 0.0 <= result.occlusion_ratio <= 1.0 and 0.0 <= result.object_pixel_occlusion_ratio <= 1.0
    assert result.image.std() > 10, "background clutter and shading give a non-flat image"


def test_open_hand_facing_camera_is_fully_visible(clean):
    result = clean.render(hand_at(), frame_index=0)
    assert result.landmark_visibility.all(), result.landmark_occlusion
    assert (result.landmark_occlusion == VISIBLE).all()
    assert result.occlusion_ratio == 0.0 and result.object_pixel_occlusion_ratio == 0.0
    # The hand is where the landmarks project, and it is the nearest thing there.
    uv = np.rint(result.landmark_uv).astype(int)
    assert result.hand_mask[uv[:, 1], uv[:, 0]].all()
    assert np.array_equal(result.hand_mask, result.hand_amodal_mask)
    assert 3000 < result.hand_mask.sum() < 60000
    # Depth under the palm centre is the palm's front surface, about half a palm thickness in front.
    palm_center = hand_at()[[0, 5, 17]].mean(axis=0)
    u, v = np.rint(clean.camera.project(palm_center)).astype(int)
    assert palm_center[2] - 0.016 < result.depth[v, u] < palm_center[2] - 0.008


def test_sphere_in_front_of_fingertip_occludes_it(clean):
    landmarks = hand_at()
    free = clean.render(landmarks, frame_index=0)
    blocker = Sphere(in_front(landmarks[INDEX_TIP], 0.05), 0.01)
    blocked = clean.render(landmarks, [blocker], frame_index=0)
    assert free.landmark_visibility[INDEX_TIP] and not blocked.landmark_visibility[INDEX_TIP]
    assert blocked.landmark_occlusion[INDEX_TIP] == OCCLUDED_OBJECT
    assert blocked.landmark_visibility[PINKY_TIP] and blocked.landmark_visibility[0]
    assert blocked.occlusion_ratio > free.occlusion_ratio
    assert blocked.occlusion_ratio == pytest.approx((~blocked.landmark_visibility).mean())
    assert 0.0 < blocked.object_pixel_occlusion_ratio < 0.3
    # Visible hand mask = amodal mask minus what the object covers.
    assert not (blocked.hand_mask & ~blocked.hand_amodal_mask).any()
    covered = (blocked.hand_amodal_mask & ~blocked.hand_mask).sum() / blocked.hand_amodal_mask.sum()
    assert covered == pytest.approx(blocked.object_pixel_occlusion_ratio)
    # Behind the hand the same sphere hides nothing.
    behind = clean.render(landmarks, [Sphere(in_front(landmarks[INDEX_TIP], -0.05), 0.01)], frame_index=0)
    assert behind.landmark_visibility.all()


def test_more_occluders_raise_the_occlusion_ratio(clean):
    landmarks = hand_at()
    ratios = []
    objects = []
    for tip in (INDEX_TIP, MIDDLE_TIP, PINKY_TIP):
        objects.append(Cylinder(in_front(landmarks[tip], 0.04), [1.0, 0.0, 0.0], 0.008, 0.008))
        ratios.append(clean.render(landmarks, objects, frame_index=0).occlusion_ratio)
    assert ratios[0] < ratios[1] < ratios[2]


def test_self_occlusion_hand_seen_from_the_thumb_side(clean):
    # Rotate the palm-facing hand 90 deg about its long axis: the camera looks at the radial
    # side, the index finger in front of the middle, ring and pinky fingers.
    quarter = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # hand y -> away, z -> left
    result = clean.render(hand_at(quarter), frame_index=0)
    assert result.landmark_visibility[[4, 8]].all()  # thumb and index tips face the camera
    pinky = [18, 19, 20]
    assert (result.landmark_occlusion[pinky] == OCCLUDED_SELF).all()
    assert result.object_pixel_occlusion_ratio == 0.0


def test_joint_seen_through_its_own_bone_is_visible(clean):
    """Back of the hand to the camera, fingers pointing 55 deg away: each PIP/DIP lies behind
    the surface of its own phalanges (not behind anything else) and must count as visible."""
    a = math.radians(55)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])
    back_to_camera = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    result = clean.render(hand_at(tilt @ back_to_camera, wrist=(0.0, 0.10, 0.35)), frame_index=0)
    fingers = list(range(5, 21))
    assert result.landmark_visibility[fingers].all(), result.landmark_occlusion


def test_left_hand_is_the_mirror_image(clean):
    """Landmarks mirrored through the image centre column (a left hand) render mirrored."""
    right = hand_at(wrist=(0.0, 0.08, 0.40))
    left = right * [-1.0, 1.0, 1.0]
    mask_right = clean.render(right, frame_index=0).hand_mask
    result_left = clean.render(left, frame_index=0)
    mirrored = mask_right[:, ::-1]
    iou = (mirrored & result_left.hand_mask).sum() / (mirrored | result_left.hand_mask).sum()
    assert iou > 0.99
    assert result_left.landmark_visibility.all()


def test_out_of_view_landmarks(clean):
    landmarks = hand_at(wrist=(0.0, 0.08, 0.40)) + [0.45, 0.0, 0.0]  # fingers off the right edge
    result = clean.render(landmarks, frame_index=0)
    outside = ~clean.camera.in_image(result.landmark_uv)
    assert outside.any() and (~outside).any()
    assert (result.landmark_occlusion[outside] == OUT_OF_VIEW).all()
    assert not result.landmark_visibility[outside].any()
    behind = clean.render(hand_at(wrist=(0.0, 0.08, -0.40)), frame_index=0)
    assert (behind.landmark_occlusion == OUT_OF_VIEW).all() and behind.occlusion_ratio == 1.0
    assert not behind.hand_mask.any()


def _center_pixel(camera, point):
    u, v = np.rint(camera.project(np.asarray(point, float))).astype(int)
    return v, u


def test_primitive_depths_are_exact(clean):
    camera = clean.camera
    far_hand = hand_at(wrist=(0.0, 0.08, 3.0)) + [0.5, 0.0, 0.0]  # keep the hand out of the way
    cases = [
        (Sphere([0.0, 0.0, 0.5], 0.05), [0.0, 0.0, 0.5], 0.45),
        (Box([0.05, 0.05, 0.6], [0.03, 0.02, 0.04]), [0.05, 0.05, 0.6], 0.56),
        # A cube turned 45 deg about y shows its front edge at z - half * sqrt(2).
        (Box([0.0, 0.0, 0.6], [0.03, 0.03, 0.03], rotation=cv2.Rodrigues(np.array([0.0, math.pi / 4, 0.0]))[0]),
         [0.0, 0.0, 0.6], 0.6 - 0.03 * math.sqrt(2)),
        (Cylinder([0.0, 0.0, 0.5], [1.0, 0.0, 0.0], 0.02, 0.1), [0.0, 0.0, 0.5], 0.48),  # side on
        (Cylinder([0.0, 0.0, 0.5], [0.0, 0.0, 1.0], 0.02, 0.1), [0.0, 0.0, 0.5], 0.40),  # looking at the cap
    ]
    for obj, point, expected in cases:
        result = clean.render(far_hand, [obj], frame_index=0)
        v, u = _center_pixel(camera, point)
        ray = camera.unproject(np.array([u, v], float))
        # The pixel ray passes within a pixel of the point; allow for that slope.
        assert result.depth[v, u] == pytest.approx(expected, abs=2e-3), obj
        assert np.isfinite(ray).all()
    empty = clean.render(far_hand, [Sphere([0.0, 0.0, 0.5], 0.05)], frame_index=0)
    assert np.isinf(empty.depth[5, 5])  # background has no depth


def test_nearer_object_wins_regardless_of_order(clean):
    far_hand = hand_at(wrist=(0.0, 0.08, 3.0)) + [0.5, 0.0, 0.0]
    near = Sphere([0.0, 0.0, 0.4], 0.04, albedo=0.9)
    far = Box([0.0, 0.0, 0.5], [0.08, 0.08, 0.02], albedo=0.1)
    a = clean.render(far_hand, [near, far], frame_index=0)
    b = clean.render(far_hand, [far, near], frame_index=0)
    assert np.array_equal(a.depth, b.depth) and np.array_equal(a.image, b.image)
    v, u = _center_pixel(clean.camera, [0.0, 0.0, 0.4])
    assert a.depth[v, u] == pytest.approx(0.36, abs=1e-4)
    # Bright near sphere in the middle, dark box around it.
    off_v, off_u = _center_pixel(clean.camera, [0.06, 0.0, 0.48])
    assert a.depth[off_v, off_u] == pytest.approx(0.48, abs=1e-4)
    assert int(a.image[v, u]) > int(a.image[off_v, off_u]) + 100


def test_lambert_shading_centre_brighter_than_limb(clean):
    far_hand = hand_at(wrist=(0.0, 0.08, 3.0)) + [0.5, 0.0, 0.0]
    result = clean.render(far_hand, [Sphere([0.0, 0.0, 0.3], 0.05, albedo=0.6)], frame_index=0)
    v, u = _center_pixel(clean.camera, [0.0, 0.0, 0.3])
    radius_px = 300 * 0.05 / math.sqrt(0.3**2 - 0.05**2)
    limb_u = int(u + 0.95 * radius_px)
    # Facing the head light at the reference distance-ish: albedo * (ambient + light * falloff).
    falloff = (0.3 / 0.25) ** 2
    assert result.image[v, u] == pytest.approx(255 * 0.6 * (0.2 + 0.6 * falloff), abs=2)
    assert int(result.image[v, u]) > int(result.image[v, limb_u]) + 40


def test_occluder_partly_behind_the_camera_is_handled(clean):
    result = clean.render(hand_at(), [Box([0.0, 0.3, 0.0], [0.5, 0.05, 0.5])], frame_index=0)
    assert np.isfinite(result.depth).any()
    assert result.landmark_visibility[INDEX_TIP]


def test_deterministic_per_seed(camera):
    landmarks = hand_at()
    objects = [Sphere([0.03, 0.0, 0.35], 0.02, texture_amplitude=0.3)]
    a = HandRenderer(camera, seed=5).render(landmarks, objects, frame_index=3)
    b = HandRenderer(camera, seed=5).render(landmarks, objects, frame_index=3)
    c = HandRenderer(camera, seed=6).render(landmarks, objects, frame_index=3)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    renderer = HandRenderer(camera, seed=5)
    first = renderer.render(landmarks, objects, frame_index=0)
    second = renderer.render(landmarks, objects, frame_index=1)
    again = renderer.render(landmarks, objects, frame_index=0)
    assert np.array_equal(first.image, again.image)
    noise = first.image.astype(int) - second.image.astype(int)
    assert 1.0 < noise.std() < 30.0  # fresh sensor noise per frame, same scene
    assert np.array_equal(first.depth, second.depth)
    np.testing.assert_array_equal(renderer.background, HandRenderer(camera, seed=5).background)


def test_distorted_camera_renders_where_it_projects():
    camera = PinholeCamera(320, 240, 150.0, 150.0, 159.5, 119.5, distortion=[-0.12, 0.02, 0.0, 0.0, 0.0])
    renderer = HandRenderer(camera, CLEAN, seed=0)
    far_hand = hand_at(wrist=(0.0, 0.08, 3.0)) + [2.0, 0.0, 0.0]
    center = np.array([0.2, 0.12, 0.4])  # towards the corner, where distortion is strong
    assert camera.in_image(camera.project(center), margin=10)
    result = renderer.render(far_hand, [Sphere(center, 0.02)], frame_index=0)
    u, v = np.rint(camera.project(center)).astype(int)
    assert result.depth[v, u] == pytest.approx(0.4 - 0.02 * 0.4 / np.linalg.norm(center), abs=2e-3)
    ys, xs = np.nonzero(result.depth < 1.0)  # the sphere (the hand is 3 m away)
    assert abs(xs.mean() - camera.project(center)[0]) < 1.0 and abs(ys.mean() - camera.project(center)[1]) < 1.0


def test_hand_size_scales_the_radii(clean):
    small = clean.render(hand_at(), frame_index=0).hand_mask.sum()
    landmarks = hand_at()
    big_hand = (landmarks - landmarks[0]) * 1.3 + landmarks[0]
    big = clean.render(big_hand, frame_index=0).hand_mask.sum()
    thin = clean.render(landmarks, hand=HandGeometry(scale_with_hand=False, palm_half_thickness=0.006,
                                                     bone_radii=[0.004] * 21), frame_index=0).hand_mask.sum()
    assert big > 1.5 * small and thin < 0.8 * small


def test_invalid_input(clean):
    with pytest.raises(ValueError):
        clean.render(np.zeros((20, 3)))
    with pytest.raises(ValueError):
        clean.render(hand_at(), [Sphere([0.0, 0.0, 0.4], -0.1)])
    with pytest.raises(ValueError):
        clean.render(hand_at(), [Box([0.0, 0.0, 0.4], [0.1, 0.1, 0.1], rotation=np.ones((3, 3)))])
    with pytest.raises(ValueError):
        clean.render(hand_at(), hand=HandGeometry(bone_radii=[0.01, 0.01]))


# -- strips ----------------------------------------------------------------------------------------


def test_strip_marks_visible_and_occluded_landmarks(clean, tmp_path):
    landmarks = hand_at()
    results = [
        clean.render(landmarks, frame_index=0),
        clean.render(landmarks, [Sphere(in_front(landmarks[INDEX_TIP], 0.05), 0.01)], frame_index=1),
    ]
    path = tmp_path / "strips" / "strip.png"
    strip = strip_from_results(results, path)
    assert strip.shape == (480, 2 * 640 + 4, 3) and strip.dtype == np.uint8
    assert np.array_equal(cv2.imread(str(path)), strip)
    u, v = np.rint(results[0].landmark_uv[INDEX_TIP]).astype(int)
    assert tuple(strip[v, u]) == VISIBLE_COLOR  # green dot, frame 0
    x_centre = strip[v, 644 + u]  # frame 1: red cross centred on the hidden tip
    assert tuple(x_centre) == OCCLUDED_COLOR


def test_draw_strip_with_3d_landmarks_and_scale(clean):
    landmarks = hand_at()
    frames = [np.zeros((480, 640), np.uint8)] * 3
    visibility = np.ones((3, 21))
    strip = draw_strip(frames, np.stack([landmarks] * 3), visibility, camera=clean.camera, scale=0.5,
                       labels=["a", "b", "c"])
    assert strip.shape == (240, 3 * 320 + 2 * 4, 3)
    assert (strip[..., 1] > 200).sum() > 100  # green landmark dots drawn
    with pytest.raises(ValueError):
        draw_strip(frames, np.stack([landmarks] * 3), visibility)  # 3D without a camera
    with pytest.raises(ValueError):
        draw_strip(frames, np.zeros((2, 21, 2)), visibility)
