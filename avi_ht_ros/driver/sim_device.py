"""A simulated glove that speaks the v1 protocol through a pseudo-terminal.

The driver opens the pty slave (or a stable symlink to it) with pyserial exactly as it
would open a USB serial device, so the whole transport path is exercised.  The device
samples on its own clock: frame ``k`` carries ``device_time_us = device_time_offset_us +
round(k * 1e6 / rate_hz)`` and is written at host time ``start + k / rate_hz / (1 +
drift)`` -- a device crystal ``clock_drift_ppm`` fast runs its 200 Hz slightly fast
in host time.

Faults (:class:`FaultConfig`, probabilities per frame, deterministic per seed): garbage
bytes before a frame, truncation, a bit flip, a wrong CRC, dropped frames (sequence
gaps), duplicated frames, swapped frame pairs, plus :meth:`SimulatedGlove.unplug` /
:meth:`SimulatedGlove.replug` which close the pty and create a new one (new
``/dev/pts/N``; the optional ``link_path`` symlink is re-pointed, so a reconnecting
driver can reopen the same name), optionally rebooting the device (sequence and
device clock restart at 0).

Run standalone: ``python -m avi_ht_ros.driver.sim_device --link /tmp/glove``.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import math
import os
import threading
import time
import tty
from typing import Callable, Iterator, Union

import numpy as np

from avi_ht_ros.common.imu import GRAVITY_MAGNITUDE
from avi_ht_ros.common.params import param, validate_params
from avi_ht_ros.driver.protocol import (
    HAND_RIGHT,
    REFERENCE_SENSOR_COUNT,
    SEQUENCE_MODULUS,
    GloveFrame,
    encode_frame,
)

LOGGER = logging.getLogger(__name__)

# Count scales of the reference glove (config/glove_12imu.yaml: +-16 g, +-2000 deg/s,
# 16-bit; equal to its ImuSpec.accel_resolution / gyro_resolution). g = 9.80665 (datasheet).
REFERENCE_ACCEL_SCALE = 16.0 * 9.80665 / 32768.0  # m/s^2 per count
REFERENCE_GYRO_SCALE = math.radians(2000.0) / 32768.0  # rad/s per count

SampleResult = tuple  # (accel (N,3), gyro (N,3)[, device_time_us or None[, sensor_flags (N,)]])
SampleSource = Union[Callable[[float], SampleResult], Iterator[SampleResult]]


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Per-frame fault probabilities of the simulated link (validated on construction)."""

    garbage_probability: float = param(0.0, "chance of random bytes before a frame", range=(0.0, 1.0))
    garbage_max_bytes: int = param(64, "longest garbage burst", range=(1, 65536), unit="B")
    truncate_probability: float = param(0.0, "chance a frame is cut short", range=(0.0, 1.0))
    bit_flip_probability: float = param(0.0, "chance of one flipped bit in a frame", range=(0.0, 1.0))
    bad_crc_probability: float = param(0.0, "chance of a wrong CRC", range=(0.0, 1.0))
    drop_probability: float = param(0.0, "chance a frame is never sent (sequence gap)", range=(0.0, 1.0))
    duplicate_probability: float = param(0.0, "chance a frame is sent twice", range=(0.0, 1.0))
    reorder_probability: float = param(0.0, "chance a frame is held back and sent after the next one",
                                       range=(0.0, 1.0))

    def __post_init__(self):
        validate_params(self)


@dataclasses.dataclass
class SimDeviceStats:
    frames_generated: int = 0
    frames_written_intact: int = 0  # complete, uncorrupted first copies written to the pty
    frames_dropped: int = 0
    frames_lost_unplugged: int = 0
    frames_lost_overflow: int = 0  # pty buffer full (nobody reading)
    garbage_insertions: int = 0
    truncations: int = 0
    bit_flips: int = 0
    bad_crcs: int = 0
    duplicates: int = 0
    reorders: int = 0
    bytes_written: int = 0
    unplugs: int = 0
    replugs: int = 0


class StaticPoseSource:
    """Sample source for a glove at rest: each IMU reads g along its ``up`` vector plus
    white noise, and its gyro bias plus white noise."""

    def __init__(
        self,
        sensor_count: int = REFERENCE_SENSOR_COUNT,
        *,
        up_vectors=None,
        gyro_bias=None,
        accel_noise_m_s2: float = 0.02,
        gyro_noise_rad_s: float = 0.002,
        gravity_m_s2: float = GRAVITY_MAGNITUDE,
        seed: int | np.random.Generator = 0,
    ):
        up = np.tile([0.0, 0.0, 1.0], (sensor_count, 1)) if up_vectors is None else np.asarray(up_vectors, float)
        self.gravity_accel = gravity_m_s2 * up / np.linalg.norm(up, axis=1, keepdims=True)
        self.gyro_bias = np.zeros((sensor_count, 3)) if gyro_bias is None else np.asarray(gyro_bias, float)
        self.accel_noise = accel_noise_m_s2
        self.gyro_noise = gyro_noise_rad_s
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def __call__(self, device_time_s: float) -> tuple[np.ndarray, np.ndarray]:
        shape = self.gravity_accel.shape
        accel = self.gravity_accel + self.rng.normal(0.0, self.accel_noise, shape)
        gyro = self.gyro_bias + self.rng.normal(0.0, self.gyro_noise, shape)
        return accel, gyro


class SimulatedGlove:
    """Glove simulator writing protocol frames to a pty at ``rate_hz``; see module docstring.

    ``sample_source`` is either a callable ``f(device_time_s) -> (accel, gyro)`` or an
    iterator of ``(accel, gyro)``; either may add a third element, the device time in
    microseconds (None: the simulated device clock), and a fourth, the (N,) per-sensor
    flag bytes (``SENSOR_FLAG_*``).  ``accel``/``gyro`` are (N, 3) arrays in SI units;
    values beyond full scale saturate, non-finite ones go out as the reserved invalid
    count.  A source that raises (other than StopIteration) stops the simulation,
    logged.
    """

    def __init__(
        self,
        sample_source: SampleSource,
        *,
        sensor_count: int = REFERENCE_SENSOR_COUNT,
        rate_hz: float = 200.0,
        handedness: int = HAND_RIGHT,
        accel_scale: float = REFERENCE_ACCEL_SCALE,
        gyro_scale: float = REFERENCE_GYRO_SCALE,
        device_time_offset_us: int = 1_000_000,
        clock_drift_ppm: float = 0.0,
        start_sequence: int = 0,
        faults: FaultConfig = FaultConfig(),
        link_path: str | os.PathLike | None = None,
        reboot_on_replug: bool = False,
        seed: int | np.random.Generator = 0,
    ):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz {rate_hz} <= 0")
        if clock_drift_ppm <= -1e6:
            raise ValueError(f"clock_drift_ppm {clock_drift_ppm} must be > -1e6")
        self.sample_source = sample_source
        self.sensor_count = sensor_count
        self.rate_hz = rate_hz
        self.handedness = handedness
        self.accel_scale = accel_scale
        self.gyro_scale = gyro_scale
        self.device_time_offset_us = int(device_time_offset_us)
        self.clock_drift_ppm = clock_drift_ppm
        self.faults = faults
        self.link_path = os.fspath(link_path) if link_path is not None else None
        self.reboot_on_replug = reboot_on_replug
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.stats = SimDeviceStats()
        self.intact_sequences: collections.deque[int] = collections.deque(maxlen=100_000)
        self.source_exhausted = False

        self._sequence = start_sequence % SEQUENCE_MODULUS
        self._frames_since_boot = 0
        self._held_back: bytes | None = None  # frame delayed by a reorder fault
        self._raw_queue: list[bytes] = []
        self._lock = threading.Lock()
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self.slave_path: str | None = None
        self._replug_at: float | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._create_pty()

    # ------------------------------------------------------------------ pty

    @property
    def port_path(self) -> str:
        """The name a driver should open: the stable symlink if configured, else the slave."""
        return self.link_path if self.link_path is not None else self.slave_path

    @property
    def plugged_in(self) -> bool:
        return self._master_fd is not None

    def _create_pty(self) -> None:
        master_fd, slave_fd = os.openpty()
        # Raw mode before any byte is written: a cooked line discipline would buffer
        # until newline, translate CR and echo bytes back.
        tty.setraw(slave_fd)
        os.set_blocking(master_fd, False)
        self._master_fd, self._slave_fd = master_fd, slave_fd  # keep the slave open: the pty lives on
        self.slave_path = os.ttyname(slave_fd)
        if self.link_path is not None:
            temporary = f"{self.link_path}.{os.getpid()}.tmp"
            if os.path.lexists(temporary):
                os.unlink(temporary)
            os.symlink(self.slave_path, temporary)
            os.replace(temporary, self.link_path)

    def _close_pty(self) -> None:
        for fd in (self._master_fd, self._slave_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master_fd = self._slave_fd = None
        if self.link_path is not None and os.path.lexists(self.link_path):
            os.unlink(self.link_path)

    def unplug(self, replug_after_s: float | None = None) -> None:
        """Close the pty (the driver sees the device vanish).  The device keeps sampling;
        frames generated meanwhile are lost.  With ``replug_after_s`` it plugs itself back."""
        with self._lock:
            if self._master_fd is None:
                return
            self._close_pty()
            self._held_back = None
            self.stats.unplugs += 1
            self._replug_at = None if replug_after_s is None else time.monotonic() + replug_after_s

    def replug(self) -> None:
        """Create a new pty (new slave name, same ``link_path``); reboot if configured."""
        with self._lock:
            self._replug_at = None
            if self._master_fd is not None:
                return
            if self.reboot_on_replug:
                self._sequence = 0
                self._frames_since_boot = 0
                self.device_time_offset_us = 0
            self._create_pty()
            self.stats.replugs += 1

    def queue_raw_bytes(self, data: bytes) -> None:
        """Write ``data`` verbatim before the next frame (e.g. a hand-made corrupt frame)."""
        with self._lock:
            self._raw_queue.append(bytes(data))

    # ------------------------------------------------------------------ run

    def start(self) -> "SimulatedGlove":
        if self._thread is None or not self._thread.is_alive():
            self._stop_event.clear()
            self._thread = threading.Thread(target=self._run, name="sim-glove", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop writing and remove the pty (and symlink)."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        with self._lock:
            self._close_pty()

    def __enter__(self) -> "SimulatedGlove":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        host_period_s = 1.0 / self.rate_hz / (1.0 + self.clock_drift_ppm * 1e-6)
        start = time.monotonic()
        frame_index = 0
        while not self._stop_event.is_set():
            delay = start + frame_index * host_period_s - time.monotonic()
            if delay > 0 and self._stop_event.wait(delay):
                break
            if self._replug_at is not None and time.monotonic() >= self._replug_at:
                self.replug()
            try:
                frame = self.next_frame()
            except StopIteration:
                self.source_exhausted = True
                break
            except Exception:  # noqa: BLE001 - a bad sample source ends the simulation, visibly
                LOGGER.exception("simulated glove: sample source failed; stopping")
                self.source_exhausted = True
                break
            self._send(frame)
            frame_index += 1

    def next_frame(self) -> GloveFrame:
        """Generate the next frame from the sample source and advance the device state."""
        device_time_us = self.device_time_offset_us + int(round(self._frames_since_boot * 1e6 / self.rate_hz))
        if callable(self.sample_source):
            sample = self.sample_source(device_time_us * 1e-6)
        else:
            sample = next(self.sample_source)
        accel, gyro = np.asarray(sample[0], dtype=np.float64), np.asarray(sample[1], dtype=np.float64)
        if accel.shape != (self.sensor_count, 3) or gyro.shape != (self.sensor_count, 3):
            raise ValueError(f"sample source gave accel {accel.shape}, gyro {gyro.shape}; need ({self.sensor_count}, 3)")
        if len(sample) > 2 and sample[2] is not None:
            device_time_us = int(sample[2])
        sensor_flags = sample[3] if len(sample) > 3 else None
        frame = GloveFrame.from_si(
            handedness=self.handedness,
            sequence=self._sequence,
            device_time_us=device_time_us,
            accel=accel,
            gyro=gyro,
            accel_scale=self.accel_scale,
            gyro_scale=self.gyro_scale,
            sensor_flags=sensor_flags,
        )
        self._sequence = (self._sequence + 1) % SEQUENCE_MODULUS
        self._frames_since_boot += 1
        self.stats.frames_generated += 1
        return frame

    def _send(self, frame: GloveFrame) -> None:
        """Apply the configured faults to one frame and write the result."""
        faults, rng = self.faults, self.rng
        encoded = bytearray(encode_frame(frame))
        with self._lock:
            if self._master_fd is None:
                self.stats.frames_lost_unplugged += 1
                return
            chunks: list[tuple[bytes, int | None]] = [(raw, None) for raw in self._raw_queue]
            self._raw_queue.clear()
            if rng.random() < faults.drop_probability:
                self.stats.frames_dropped += 1
                self._write(chunks)
                return
            if rng.random() < faults.garbage_probability:
                size = int(rng.integers(1, faults.garbage_max_bytes + 1))
                chunks.append((rng.integers(0, 256, size, dtype=np.uint8).tobytes(), None))
                self.stats.garbage_insertions += 1
            intact = True
            if rng.random() < faults.bit_flip_probability:
                bit = int(rng.integers(0, 8 * len(encoded)))
                encoded[bit // 8] ^= 1 << (bit % 8)
                self.stats.bit_flips += 1
                intact = False
            if rng.random() < faults.bad_crc_probability:
                encoded[-1] ^= 0x5A
                self.stats.bad_crcs += 1
                intact = False
            if rng.random() < faults.truncate_probability:
                encoded = encoded[: int(rng.integers(1, len(encoded)))]
                self.stats.truncations += 1
                intact = False
            sequence = frame.sequence if intact else None
            if self._held_back is None and rng.random() < faults.reorder_probability:
                self._held_back = bytes(encoded)
                self.stats.reorders += 1
                self._write(chunks)
                return
            chunks.append((bytes(encoded), sequence))
            if self._held_back is not None:
                chunks.append((self._held_back, None))  # arrives late: the receiver drops it
                self._held_back = None
            if rng.random() < faults.duplicate_probability:
                chunks.append((bytes(encoded), None))
                self.stats.duplicates += 1
            self._write(chunks)

    def _write(self, chunks: list[tuple[bytes, int | None]]) -> None:
        """Write chunks to the pty master (lock held); a full buffer drops the rest of a chunk.
        Chunks tagged with a sequence number count as intact frames when written whole."""
        for data, sequence in chunks:
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._master_fd, data[written:])
            except BlockingIOError:
                pass
            except OSError as error:  # pty torn down under us
                LOGGER.debug("simulated glove: write failed: %s", error)
            self.stats.bytes_written += written
            if sequence is not None:
                if written == len(data):
                    self.stats.frames_written_intact += 1
                    self.intact_sequences.append(sequence)
                else:
                    self.stats.frames_lost_overflow += 1


def main(argv: list[str] | None = None) -> None:
    """Run a simulated glove at rest until interrupted (for trying the driver by hand)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link", help="stable symlink to the pty slave (e.g. /tmp/glove)")
    parser.add_argument("--rate", type=float, default=200.0, help="frames per second")
    parser.add_argument("--sensors", type=int, default=REFERENCE_SENSOR_COUNT)
    parser.add_argument("--drift-ppm", type=float, default=0.0)
    parser.add_argument("--garbage", type=float, default=0.0, help="garbage probability per frame")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    glove = SimulatedGlove(
        StaticPoseSource(args.sensors, seed=args.seed),
        sensor_count=args.sensors,
        rate_hz=args.rate,
        clock_drift_ppm=args.drift_ppm,
        faults=FaultConfig(garbage_probability=args.garbage),
        link_path=args.link,
        seed=args.seed,
    )
    print(f"simulated glove on {glove.port_path} ({glove.slave_path}); Ctrl-C to stop", flush=True)
    with glove:
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
