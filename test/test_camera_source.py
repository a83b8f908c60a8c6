"""Camera sources: stamps are acquisition times, pacing is real time, bad input is an error."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.driver.camera_source import (NS, ImageFolderSource, SimBagSource, VideoFileSource, sim_loop_time,
                                             to_mono8)
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagWriter


class FakeClock:
    """Deterministic time for pacing tests (the sources take the clock as a parameter)."""

    def __init__(self, t0=1_000 * NS):
        self.t = t0
        self.sleeps = []

    def now(self):
        return self.t

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.t += int(seconds * NS)


def test_image_folder_paced_at_rate_and_skips_unreadable(tmp_path):
    for k in range(5):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), np.full((20, 30, 3), k * 40, np.uint8))
    (tmp_path / "004.png").write_bytes(b"not an image")
    clock = FakeClock()
    source = ImageFolderSource(str(tmp_path), fps=50.0, clock_ns=clock.now, sleep=clock.sleep)
    frames = [source.next_frame() for _ in range(5)]
    assert frames[-1] is None and source.unreadable == 1
    stamps = [f.stamp_ns for f in frames[:4]]
    assert np.all(np.diff(stamps) == NS // 50)
    assert frames[1].image.shape == (20, 30) and frames[1].image.dtype == np.uint8
    assert frames[2].image[0, 0] == 80
    assert clock.t >= stamps[-1]  # waited until each frame was due


def test_video_file_source(tmp_path):
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for k in range(6):
        writer.write(np.full((24, 32, 3), 30 * k, np.uint8))
    writer.release()
    clock = FakeClock()
    frames = list(VideoFileSource(str(path), clock_ns=clock.now, sleep=clock.sleep).frames())
    assert len(frames) == 6 and frames[1].stamp_ns - frames[0].stamp_ns == NS // 25


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        ImageFolderSource(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no images"):
        ImageFolderSource(str(tmp_path))
    with pytest.raises(ConfigError, match="video file not found"):
        VideoFileSource(str(tmp_path / "x.mp4"))


def test_to_mono8_variants():
    assert to_mono8(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5)
    assert to_mono8(np.full((4, 5), 65535, np.uint16)).max() == 255
    assert to_mono8(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5)


def test_sim_loop_time_is_shared_by_independent_processes():
    # two processes at the same wall time agree; wall time wraps onto the bag
    assert sim_loop_time(5 * NS, 10 * NS, 123 * NS + 7) == (12, 5 * NS + 3 * NS + 7)


def test_sim_bag_source_loops_on_the_wall_clock(tmp_path):
    bag = tmp_path / "sim"
    with BagWriter(bag) as writer:
        for k in range(30):
            stamp = 2 * NS + k * NS // 60
            writer.write("/head_camera/image_raw", convert.IMAGE, stamp,
                         convert.image_msg(stamp, "head_camera_optical_frame", np.full((4, 4), k, np.uint8)))
    clock = FakeClock(t0=1000 * NS + NS // 4)  # 0.25 s into a 0.5 s loop
    source = SimBagSource(str(bag), "/head_camera/image_raw", clock_ns=clock.now, sleep=clock.sleep)
    assert abs(source.duration_ns - NS // 2) < 1_000_000  # 30 frames at 60 Hz
    frames = [source.next_frame() for _ in range(40)]
    stamps = np.array([f.stamp_ns for f in frames])
    assert np.all(np.diff(stamps) > 0)
    assert abs(stamps[0] - clock_start(clock)) < NS // 30
    values = [int(f.image[0, 0]) for f in frames]
    assert 0 in values[1:] and values == sorted(values[: values.index(0, 1)]) + values[values.index(0, 1):]


def clock_start(clock):
    return clock.t - int(sum(clock.sleeps) * NS)
