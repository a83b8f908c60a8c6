"""The simulated camera and glove replay the same instant of a bag whose glove stream outlasts the frames.

``avi-ht simulate`` writes glove samples 0.5 s before the first and after the last frame. Both
simulated sources loop on the wall clock; they must loop over the same span (the camera's),
or every frame would be paired with IMU data of another instant of the world.
"""
from __future__ import annotations

import numpy as np

from avi_ht_ros.common import topics
from avi_ht_ros.driver.camera_source import SimBagSource
from avi_ht_ros.driver.sim_glove import BagGloveSource
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import BagWriter

NS = 1_000_000_000
FRAME_NS = 16_666_667
GLOVE_NS = 5_000_000
START_NS = 1_700_000_000 * NS


def _bag(path, frames: int = 60, lead_s: float = 0.5):
    glove_topic = topics.hand_topic("right", topics.GLOVE_SAMPLES)
    frame_stamps = START_NS + np.arange(frames) * FRAME_NS
    lead = int(lead_s * NS)
    glove_stamps = np.arange(START_NS - lead, int(frame_stamps[-1]) + lead, GLOVE_NS)
    image = np.zeros((4, 4), np.uint8)
    info = {"width": 4, "height": 4, "k": np.eye(3), "p": np.hstack([np.eye(3), np.zeros((3, 1))])}
    events = sorted([(int(s), 0) for s in frame_stamps] + [(int(s), 1) for s in glove_stamps])
    with BagWriter(path) as bag:
        for stamp, kind in events:
            if kind == 0:
                bag.write(topics.IMAGE, convert.IMAGE, stamp, convert.image_msg(stamp, "cam", image))
                bag.write(topics.CAMERA_INFO, convert.CAMERA_INFO, stamp, convert.camera_info_msg(stamp, "cam", info))
            else:
                # the gyro x encodes the stamp, so a sample tells which instant it belongs to
                gyro = np.full((12, 3), (stamp - START_NS) / NS, np.float32)
                bag.write(glove_topic, convert.GLOVE_SAMPLE, stamp, convert.glove_sample_msg(
                    stamp, "right", [f"imu{i}" for i in range(12)], np.zeros((12, 3)), gyro, np.zeros(12),
                    0, 0))
    return frame_stamps


def test_glove_replays_the_instant_the_camera_shows(tmp_path):
    frame_stamps = _bag(tmp_path / "bag")
    loop_ns = int(frame_stamps[-1] - frame_stamps[0]) + FRAME_NS
    for wall_ns in (10 * loop_ns + 3 * FRAME_NS, 123 * NS + 7, 10 * loop_ns + loop_ns - FRAME_NS // 2):
        camera = SimBagSource(str(tmp_path / "bag"), topics.IMAGE, clock_ns=lambda: wall_ns)
        frame = next(camera.frames())
        glove = BagGloveSource(tmp_path / "bag", "right", clock_ns=lambda: wall_ns)
        _, gyro, _, _ = next(glove)
        glove_instant_ns = START_NS + int(round(float(gyro[0, 0]) * NS))
        # the next sample and the next frame due: the same instant of the loop (up to a frame period)
        gap = (glove_instant_ns - frame.extras["bag_stamp_ns"] + loop_ns // 2) % loop_ns - loop_ns // 2
        assert abs(gap) <= FRAME_NS, (wall_ns, glove_instant_ns, frame.extras["bag_stamp_ns"])


def test_glove_wraps_with_the_camera_loop(tmp_path):
    frame_stamps = _bag(tmp_path / "bag")
    loop_ns = int(frame_stamps[-1] - frame_stamps[0]) + FRAME_NS
    now = [50 * loop_ns + loop_ns - 20 * GLOVE_NS]      # 20 samples before the loop ends
    glove = BagGloveSource(tmp_path / "bag", "right", clock_ns=lambda: now[0])
    instants = []
    for _ in range(40):
        _, gyro, _, _ = next(glove)
        instants.append(START_NS + int(round(float(gyro[0, 0]) * NS)))
        now[0] += GLOVE_NS
    steps = np.diff(instants)
    wrap = int(np.argmin(steps))
    assert steps[wrap] < -(loop_ns // 2), "the glove did not restart with the camera loop"
    assert instants[wrap + 1] - START_NS < 2 * GLOVE_NS     # ... at the first frame's instant
    assert np.all(np.abs(np.delete(steps, wrap) - GLOVE_NS) < 1000) and glove.resyncs == 0   # float32 gyro
