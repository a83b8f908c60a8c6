"""The simulated glove of the live simulation: a bag's IMU stream, sent as hardware would.

:class:`BagGloveSource` feeds :class:`~avi_ht_ros.driver.sim_device.SimulatedGlove`
(protocol frames through a pseudo-terminal) with the IMU samples an
``avi-ht simulate`` bag recorded for one hand, at the instant of the synthetic
world the wall clock points to (:func:`~avi_ht_ros.driver.camera_source.sim_loop_time`),
so it stays consistent with a simulated camera replaying the same bag in
another process. Both loop over the *camera's* time span: the bag's glove
stream reaches beyond the frames (``avi-ht simulate`` writes 0.5 s more at each
end), and looping over the glove span instead would pair each frame with IMU
data from another instant of the world. ``latency_s`` makes each transmitted
sample that much older than its transmission — a camera–glove time offset the
synchronizer must estimate.
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.imu import ImuStatus
from avi_ht_ros.common.topics import CAMERA_INFO, GLOVE_SAMPLES, hand_topic
from avi_ht_ros.driver.camera_source import sim_loop_time
from avi_ht_ros.driver.protocol import (HAND_LEFT, HAND_RIGHT, SENSOR_FLAG_DATA_ERROR, SENSOR_FLAG_NOT_RESPONDING,
                                        SENSOR_FLAG_NOT_UPDATED, SENSOR_FLAG_SATURATED)
from avi_ht_ros.driver.sim_device import SimulatedGlove
from avi_ht_ros.io import convert
from avi_ht_ros.io.bag import read_messages

FLAG_OF_STATUS = np.array([0, SENSOR_FLAG_NOT_UPDATED, SENSOR_FLAG_SATURATED, SENSOR_FLAG_NOT_RESPONDING,
                           SENSOR_FLAG_DATA_ERROR], np.uint8)
assert [int(s) for s in ImuStatus] == [0, 1, 2, 3, 4]


class BagGloveSource:
    """Sample source for :class:`SimulatedGlove` replaying one hand's IMU stream of a bag."""

    def __init__(self, bag: str | pathlib.Path, side: str, latency_s: float = 0.0, clock_ns=time.time_ns):
        stamps, accel, gyro, status = [], [], [], []
        for message in read_messages(bag, [hand_topic(side, GLOVE_SAMPLES)]):
            s, a, g, st = convert.glove_arrays_from_msg(message.msg)
            stamps.append(s)
            accel.append(a)
            gyro.append(g)
            status.append(st)
        if len(stamps) < 2:
            raise ConfigError(str(bag), f"no {side} glove samples on {hand_topic(side, GLOVE_SAMPLES)}")
        self.side = side
        self.stamps = np.asarray(stamps, np.int64)
        self.accel = np.asarray(accel, np.float64)
        self.gyro = np.asarray(gyro, np.float64)
        self.flags = FLAG_OF_STATUS[np.asarray(status, np.uint8)]
        self.period_ns = int(np.median(np.diff(self.stamps)))
        # The loop the simulated camera replays (SimBagSource: first frame, frame span + one
        # period); the glove's own span if the bag has no frames.
        frames = np.array([convert.stamp_ns_of(m.msg.header.stamp) for m in read_messages(bag, [CAMERA_INFO])],
                          np.int64)
        if frames.size >= 2:
            self.start_ns = int(frames.min())
            self.duration_ns = int(frames.max() - frames.min()) + int(np.median(np.diff(np.sort(frames))))
        else:
            self.start_ns = int(self.stamps[0])
            self.duration_ns = int(self.stamps[-1] - self.stamps[0]) + self.period_ns
        self._loop_first = int(np.searchsorted(self.stamps, self.start_ns))
        self._loop_end = max(int(np.searchsorted(self.stamps, self.start_ns + self.duration_ns)),
                             self._loop_first + 1)
        self.latency_ns = int(latency_s * 1e9)
        self.clock_ns = clock_ns
        self.resyncs = 0
        self._index: int | None = None

    def _index_now(self) -> int:
        _, bag_now = sim_loop_time(self.start_ns, self.duration_ns, self.clock_ns() - self.latency_ns)
        index = int(np.searchsorted(self.stamps, bag_now))   # the next sample due
        return index if index < self._loop_end else self._loop_first

    def __iter__(self):
        return self

    def __next__(self):
        """(accel, gyro, None, flags) of the next sample; follows the wall clock, resyncing if it drifts."""
        target = self._index_now()
        if self._index is None:
            self._index = target
        else:
            self._index += 1
            if self._index >= self._loop_end:   # the camera loop restarts: so does the glove
                self._index = self._loop_first
            lag = abs(int(self.stamps[self._index]) - int(self.stamps[target]))
            if lag > 4 * self.period_ns and lag < self.duration_ns - 4 * self.period_ns:
                self._index = target  # the sender fell behind/ahead of the world: jump, counted
                self.resyncs += 1
        i = self._index
        return self.accel[i], self.gyro[i], None, self.flags[i]

    def start_device(self, clock_drift_ppm: float = 0.0, **kwargs) -> SimulatedGlove:
        """A started :class:`SimulatedGlove` sending this stream at the bag's rate."""
        device = SimulatedGlove(self, sensor_count=self.accel.shape[1], rate_hz=1e9 / self.period_ns,
                                handedness=HAND_LEFT if self.side == "left" else HAND_RIGHT,
                                clock_drift_ppm=clock_drift_ppm, **kwargs)
        return device.start()
