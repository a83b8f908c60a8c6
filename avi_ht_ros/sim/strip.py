"""Picture strips: N rendered frames side by side with the hand skeleton overlaid.

Visible landmarks are green dots, occluded ones red crosses (x); skeleton edges are drawn
cyan between two visible landmarks and dim orange when an end is occluded. Landmarks
outside the image are not drawn. Used by ``avi-ht simulate --strip`` to eyeball a
generated sequence and its visibility ground truth.
"""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import cv2
import numpy as np

from avi_ht_ros.common.camera import PinholeCamera
from avi_ht_ros.sim.render import DEFAULT_BONE_PAIRS, RenderResult

__all__ = ["draw_strip", "strip_from_results", "VISIBLE_COLOR", "OCCLUDED_COLOR"]

VISIBLE_COLOR = (0, 220, 0)  # BGR
OCCLUDED_COLOR = (0, 0, 255)
EDGE_COLOR = (255, 255, 0)
OCCLUDED_EDGE_COLOR = (0, 140, 255)
SEPARATOR_PX = 4


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 images, got {frame.dtype}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame.copy()
    raise ValueError(f"frames must be [H, W] mono or [H, W, 3] BGR, got shape {frame.shape}")


def draw_strip(
    frames: Sequence[np.ndarray],
    landmarks: np.ndarray,
    visibility: np.ndarray,
    *,
    camera: PinholeCamera | None = None,
    edges: Sequence[tuple[int, int]] = DEFAULT_BONE_PAIRS,
    labels: Sequence[str] | None = None,
    scale: float = 1.0,
    out_path: str | os.PathLike | None = None,
) -> np.ndarray:
    """Draw ``N`` frames in a row with their skeletons; optionally save as PNG.

    Args:
        frames: ``N`` uint8 images (mono ``[H, W]`` or BGR ``[H, W, 3]``), same size.
        landmarks: ``[N, 21, 2]`` pixels, or ``[N, 21, 3]`` optical-frame points (needs ``camera``).
        visibility: ``[N, 21]``, truthy / > 0.5 = visible.
        edges: landmark pairs to connect (default: the hand skeleton).
        labels: optional text per frame (top-left corner).
        scale: resize factor applied to each frame before drawing (markers stay crisp).
        out_path: write the strip there (PNG via ``cv2.imwrite``; parent dirs created).

    Returns: the strip, BGR uint8 ``[round(H*scale), N*round(W*scale) + (N-1)*4, 3]``.
    """
    n = len(frames)
    if n == 0:
        raise ValueError("draw_strip: no frames")
    landmarks = np.asarray(landmarks, dtype=np.float64)
    visibility = np.asarray(visibility, dtype=np.float64) > 0.5
    if landmarks.ndim != 3 or landmarks.shape[0] != n or landmarks.shape[2] not in (2, 3):
        raise ValueError(f"landmarks: expected [{n}, K, 2|3], got {landmarks.shape}")
    if visibility.shape != landmarks.shape[:2]:
        raise ValueError(f"visibility: expected {landmarks.shape[:2]}, got {visibility.shape}")
    if landmarks.shape[2] == 3:
        if camera is None:
            raise ValueError("draw_strip: 3D landmarks need the camera to project them")
        landmarks = camera.project(landmarks)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: {len(labels)} for {n} frames")

    tiles = []
    for i, frame in enumerate(frames):
        tile = _to_bgr(frame)
        h, w = tile.shape[:2]
        if (h, w) != np.shape(frames[0])[:2]:
            first_h, first_w = np.shape(frames[0])[:2]
            raise ValueError(f"draw_strip: frame {i} is {w}x{h}, frame 0 is {first_w}x{first_h}")
        if scale != 1.0:
            tile = cv2.resize(tile, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        uv = landmarks[i] * scale + (scale - 1.0) * 0.5  # pixel-centre convention
        finite = np.all(np.isfinite(uv), axis=1)
        inside = finite & (uv[:, 0] >= -0.5) & (uv[:, 0] < tile.shape[1] - 0.5) & (uv[:, 1] >= -0.5) & (
            uv[:, 1] < tile.shape[0] - 0.5)
        shift = 4  # sub-pixel drawing precision (cv2 fixed point)
        points = np.zeros_like(uv, dtype=np.int64)
        points[finite] = np.rint(uv[finite] * (1 << shift)).astype(np.int64)
        thickness = max(1, round(1.5 * scale))
        for a, b in edges:
            if finite[a] and finite[b] and (inside[a] or inside[b]):
                colour = EDGE_COLOR if visibility[i, a] and visibility[i, b] else OCCLUDED_EDGE_COLOR
                cv2.line(tile, tuple(map(int, points[a])), tuple(map(int, points[b])), colour, thickness,
                         cv2.LINE_AA, shift)
        size = max(2, round(3 * scale)) << shift
        for k in np.flatnonzero(inside):
            p = tuple(map(int, points[k]))
            if visibility[i, k]:
                cv2.circle(tile, p, size, VISIBLE_COLOR, -1, cv2.LINE_AA, shift)
            else:
                cv2.line(tile, (p[0] - size, p[1] - size), (p[0] + size, p[1] + size), OCCLUDED_COLOR, thickness,
                         cv2.LINE_AA, shift)
                cv2.line(tile, (p[0] - size, p[1] + size), (p[0] + size, p[1] - size), OCCLUDED_COLOR, thickness,
                         cv2.LINE_AA, shift)
        if labels is not None and labels[i]:
            cv2.putText(tile, str(labels[i]), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, str(labels[i]), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)

    height = tiles[0].shape[0]
    separator = np.full((height, SEPARATOR_PX, 3), 255, np.uint8)
    parts = []
    for i, tile in enumerate(tiles):
        if i:
            parts.append(separator)
        parts.append(tile)
    strip = np.hstack(parts)
    if out_path is not None:
        path = pathlib.Path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), strip):
            raise OSError(f"{path}: cv2.imwrite failed (extension must be an image format, e.g. .png)")
    return strip


def strip_from_results(
    results: Sequence[RenderResult],
    out_path: str | os.PathLike | None = None,
    *,
    scale: float = 1.0,
    labels: Sequence[str] | None = None,
    edges: Sequence[tuple[int, int]] = DEFAULT_BONE_PAIRS,
) -> np.ndarray:
    """:func:`draw_strip` for renderer outputs (image, ``landmark_uv``, ``landmark_visibility``).

    Default labels show each frame's landmark occlusion ratio.
    """
    if labels is None:
        labels = [f"occ {r.occlusion_ratio:.2f}" for r in results]
    return draw_strip(
        [r.image for r in results],
        np.stack([r.landmark_uv for r in results]),
        np.stack([r.landmark_visibility for r in results]),
        edges=edges, labels=labels, scale=scale, out_path=out_path,
    )
