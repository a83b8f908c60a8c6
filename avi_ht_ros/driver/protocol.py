"""Glove binary protocol v1: frame encoding, decoding and a resynchronizing stream parser.

The wire format is specified in ``docs/GLOVE_PROTOCOL.md``; the constants below are the
single source of truth for the layout.  Summary (all little-endian)::

    offset  size  field
    0       2     sync            0xA5 0x8E
    2       1     version         1
    3       2     payload_length  uint16, bytes of the sensor block = 13 * N
    5       1     sensor_count    N, 1..32
    6       1     handedness      0 left, 1 right (GloveSample.HAND_*)
    7       1     reserved        sent as 0, ignored
    8       4     sequence        uint32, +1 per frame, wraps at 2**32
    12      8     device_time_us  uint64, device clock at acquisition, microseconds
    20      4     accel_scale     float32, m/s^2 per count (finite, > 0)
    24      4     gyro_scale      float32, rad/s per count (finite, > 0)
    28      13*N  sensors         per sensor: int16 ax ay az gx gy gz, uint8 flags
    28+13N  4     crc32           CRC-32/ISO-HDLC (zlib.crc32) of bytes [2, 28+13N)

Nothing here imports rclpy: the ROS node maps :class:`GloveFrame` to ``GloveSample``.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Iterable

import numpy as np

from avi_ht_ros.common.errors import AviHtError

# --------------------------------------------------------------------------- layout

SYNC = b"\xa5\x8e"
"""Frame start marker; see GLOVE_PROTOCOL.md for why these two bytes."""
PROTOCOL_VERSION = 1

HAND_LEFT = 0
HAND_RIGHT = 1

MIN_SENSOR_COUNT = 1
MAX_SENSOR_COUNT = 32
REFERENCE_SENSOR_COUNT = 12

_HEADER = struct.Struct("<2sBHBBBIQff")
HEADER_SIZE = _HEADER.size  # 28
_CRC = struct.Struct("<I")
CRC_SIZE = _CRC.size  # 4
CRC_START = len(SYNC)  # the CRC covers everything after the sync bytes

SENSOR_RECORD_DTYPE = np.dtype([("accel", "<i2", (3,)), ("gyro", "<i2", (3,)), ("flags", "u1")])
SENSOR_RECORD_SIZE = SENSOR_RECORD_DTYPE.itemsize  # 13

# Offsets of the fields the parser checks before the whole frame has arrived.
_VERSION_OFFSET = 2
_LENGTH_FIELD = struct.Struct("<H")
_LENGTH_OFFSET = 3
_SENSOR_COUNT_OFFSET = 5
_EARLY_CHECK_SIZE = _SENSOR_COUNT_OFFSET + 1  # sync, version, length, sensor count

MAX_FRAME_SIZE = HEADER_SIZE + MAX_SENSOR_COUNT * SENSOR_RECORD_SIZE + CRC_SIZE

# Raw counts.  -32768 is reserved: "no value" (out of protocol for data), so the
# symmetric data range is +-32767 and full scale is reached at +-32767.
INVALID_COUNT = -32768
FULL_SCALE_COUNT = 32767

# Per-sensor flag bits (device's own statement about each IMU).
SENSOR_FLAG_NOT_RESPONDING = 0x01  # IMU did not answer on the glove bus -> DEAD
SENSOR_FLAG_NOT_UPDATED = 0x02  # values re-sent from the previous read -> STALE
SENSOR_FLAG_SATURATED = 0x04  # IMU reported an internal overflow -> SATURATED
SENSOR_FLAG_DATA_ERROR = 0x08  # bus/self-test error on this read -> INVALID
SENSOR_FLAGS_RESERVED = 0xF0  # must be 0; set bits make the sensor INVALID

SEQUENCE_MODULUS = 1 << 32


def frame_size(sensor_count: int) -> int:
    """Total bytes of a v1 frame carrying ``sensor_count`` IMUs (188 for 12)."""
    return HEADER_SIZE + sensor_count * SENSOR_RECORD_SIZE + CRC_SIZE


def payload_length(sensor_count: int) -> int:
    """Value of the ``payload_length`` header field for ``sensor_count`` IMUs."""
    return sensor_count * SENSOR_RECORD_SIZE


# --------------------------------------------------------------------------- errors


class FrameError(AviHtError):
    """A byte string is not one valid v1 frame.

    ``reason`` is the stats counter the parser increments for it: ``"sync"``,
    ``"version"``, ``"length"``, ``"header"`` or ``"crc"``.
    """

    def __init__(self, reason: str, problem: str):
        super().__init__(f"glove frame ({reason}): {problem}")
        self.reason = reason
        self.problem = problem


# --------------------------------------------------------------------------- frame


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class GloveFrame:
    """One decoded glove frame: every IMU at one acquisition instant.

    Arrays are read-only.  ``accel``/``gyro`` are the counts times the frame's
    scale factors (float64, m/s^2 and rad/s, IMU frame); counts equal to
    :data:`INVALID_COUNT` are carried as NaN there.
    """

    handedness: int
    sequence: int
    device_time_us: int
    accel_scale: float  # m/s^2 per count
    gyro_scale: float  # rad/s per count
    accel_counts: np.ndarray  # (N, 3) int16
    gyro_counts: np.ndarray  # (N, 3) int16
    sensor_flags: np.ndarray  # (N,) uint8
    accel: np.ndarray  # (N, 3) float64, m/s^2
    gyro: np.ndarray  # (N, 3) float64, rad/s
    version: int = PROTOCOL_VERSION

    @property
    def sensor_count(self) -> int:
        return int(self.accel_counts.shape[0])

    @classmethod
    def from_counts(
        cls,
        *,
        handedness: int,
        sequence: int,
        device_time_us: int,
        accel_scale: float,
        gyro_scale: float,
        accel_counts,
        gyro_counts,
        sensor_flags=None,
    ) -> "GloveFrame":
        """Build a frame from raw counts; SI values are derived.  Raises ``ValueError``
        for anything that cannot be put on the wire (shapes, ranges, scales)."""
        accel_counts = np.array(accel_counts, dtype=np.int64)
        gyro_counts = np.array(gyro_counts, dtype=np.int64)
        if accel_counts.ndim != 2 or accel_counts.shape[1] != 3:
            raise ValueError(f"accel_counts must be (N, 3), got {accel_counts.shape}")
        sensor_count = accel_counts.shape[0]
        if gyro_counts.shape != accel_counts.shape:
            raise ValueError(f"gyro_counts shape {gyro_counts.shape} != accel_counts {accel_counts.shape}")
        if not MIN_SENSOR_COUNT <= sensor_count <= MAX_SENSOR_COUNT:
            raise ValueError(f"sensor count {sensor_count} outside {MIN_SENSOR_COUNT}..{MAX_SENSOR_COUNT}")
        for name, counts in (("accel_counts", accel_counts), ("gyro_counts", gyro_counts)):
            if counts.min() < INVALID_COUNT or counts.max() > FULL_SCALE_COUNT:
                raise ValueError(f"{name} outside int16")
        if sensor_flags is None:
            sensor_flags = np.zeros(sensor_count, dtype=np.int64)
        sensor_flags = np.array(sensor_flags, dtype=np.int64).reshape(-1)
        if sensor_flags.shape != (sensor_count,) or sensor_flags.min() < 0 or sensor_flags.max() > 0xFF:
            raise ValueError(f"sensor_flags must be {sensor_count} values in 0..255")
        _check_header_values(handedness, sequence, device_time_us, accel_scale, gyro_scale)
        # Store the scales as the float32 the wire carries, so decode(encode(f)) == f.
        accel_scale = float(np.float32(accel_scale))
        gyro_scale = float(np.float32(gyro_scale))
        accel_i16 = accel_counts.astype(np.int16)
        gyro_i16 = gyro_counts.astype(np.int16)
        return cls(
            handedness=int(handedness),
            sequence=int(sequence),
            device_time_us=int(device_time_us),
            accel_scale=accel_scale,
            gyro_scale=gyro_scale,
            accel_counts=_read_only(accel_i16),
            gyro_counts=_read_only(gyro_i16),
            sensor_flags=_read_only(sensor_flags.astype(np.uint8)),
            accel=_read_only(counts_to_si(accel_i16, accel_scale)),
            gyro=_read_only(counts_to_si(gyro_i16, gyro_scale)),
        )

    @classmethod
    def from_si(
        cls,
        *,
        handedness: int,
        sequence: int,
        device_time_us: int,
        accel,
        gyro,
        accel_scale: float,
        gyro_scale: float,
        sensor_flags=None,
    ) -> "GloveFrame":
        """Quantize SI values the way glove firmware does (see :func:`si_to_counts`)."""
        accel_scale = float(np.float32(accel_scale))
        gyro_scale = float(np.float32(gyro_scale))
        _check_scale("accel_scale", accel_scale)
        _check_scale("gyro_scale", gyro_scale)
        return cls.from_counts(
            handedness=handedness,
            sequence=sequence,
            device_time_us=device_time_us,
            accel_scale=accel_scale,
            gyro_scale=gyro_scale,
            accel_counts=si_to_counts(accel, accel_scale),
            gyro_counts=si_to_counts(gyro, gyro_scale),
            sensor_flags=sensor_flags,
        )


def counts_to_si(counts: np.ndarray, scale: float) -> np.ndarray:
    """Raw counts -> SI (float64); :data:`INVALID_COUNT` becomes NaN."""
    values = counts.astype(np.float64) * scale
    values[counts == INVALID_COUNT] = np.nan
    return values


def si_to_counts(values, scale: float) -> np.ndarray:
    """SI -> counts as glove firmware does: round to nearest, clip to +-FULL_SCALE_COUNT
    (saturation), non-finite -> :data:`INVALID_COUNT`."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    counts = np.full(values.shape, INVALID_COUNT, dtype=np.int64)
    counts[finite] = np.clip(np.rint(values[finite] / scale), -FULL_SCALE_COUNT, FULL_SCALE_COUNT)
    return counts


def _check_scale(name: str, scale: float) -> None:
    if not (np.isfinite(scale) and scale > 0.0):
        raise ValueError(f"{name} must be finite and > 0 as float32, got {scale!r}")


def _check_header_values(handedness, sequence, device_time_us, accel_scale, gyro_scale) -> None:
    if handedness not in (HAND_LEFT, HAND_RIGHT):
        raise ValueError(f"handedness must be {HAND_LEFT} or {HAND_RIGHT}, got {handedness!r}")
    if not 0 <= sequence < SEQUENCE_MODULUS:
        raise ValueError(f"sequence {sequence} outside uint32")
    if not 0 <= device_time_us < 1 << 64:
        raise ValueError(f"device_time_us {device_time_us} outside uint64")
    _check_scale("accel_scale", float(np.float32(accel_scale)))
    _check_scale("gyro_scale", float(np.float32(gyro_scale)))


# --------------------------------------------------------------------------- encode / decode


def encode_frame(frame: GloveFrame) -> bytes:
    """Serialize ``frame`` (its raw counts, flags and scales) into one v1 frame."""
    records = np.empty(frame.sensor_count, dtype=SENSOR_RECORD_DTYPE)
    records["accel"] = frame.accel_counts
    records["gyro"] = frame.gyro_counts
    records["flags"] = frame.sensor_flags
    header = _HEADER.pack(
        SYNC,
        PROTOCOL_VERSION,
        payload_length(frame.sensor_count),
        frame.sensor_count,
        frame.handedness,
        0,
        frame.sequence,
        frame.device_time_us,
        frame.accel_scale,
        frame.gyro_scale,
    )
    body = header + records.tobytes()
    return body + _CRC.pack(zlib.crc32(memoryview(body)[CRC_START:]))


def _early_header_problem(data, start: int) -> tuple[str, str] | None:
    """Check version, length and sensor count of a candidate frame at ``data[start:]``
    (needs :data:`_EARLY_CHECK_SIZE` bytes).  Returns (reason, problem) or None."""
    version = data[start + _VERSION_OFFSET]
    if version != PROTOCOL_VERSION:
        return "version", f"version {version}, expected {PROTOCOL_VERSION}"
    (length,) = _LENGTH_FIELD.unpack_from(data, start + _LENGTH_OFFSET)
    sensor_count = data[start + _SENSOR_COUNT_OFFSET]
    if not MIN_SENSOR_COUNT <= sensor_count <= MAX_SENSOR_COUNT:
        return "length", f"sensor_count {sensor_count} outside {MIN_SENSOR_COUNT}..{MAX_SENSOR_COUNT}"
    if length != payload_length(sensor_count):
        return "length", f"payload_length {length} != 13 * sensor_count ({sensor_count})"
    return None


def _full_header_problem(header: tuple) -> tuple[str, str] | None:
    """Check the remaining header fields of an unpacked header tuple."""
    _, _, _, _, handedness, _, _, _, accel_scale, gyro_scale = header
    if handedness not in (HAND_LEFT, HAND_RIGHT):
        return "header", f"handedness {handedness} is neither {HAND_LEFT} nor {HAND_RIGHT}"
    for name, scale in (("accel_scale", accel_scale), ("gyro_scale", gyro_scale)):
        if not (np.isfinite(scale) and scale > 0.0):
            return "header", f"{name} {scale!r} is not finite and > 0"
    return None


def _decode_checked(data, start: int, header: tuple) -> GloveFrame:
    """Build the frame at ``data[start:]`` whose header and CRC were already checked."""
    _, version, _, sensor_count, handedness, _, sequence, device_time_us, accel_scale, gyro_scale = header
    records = np.frombuffer(data, dtype=SENSOR_RECORD_DTYPE, count=sensor_count, offset=start + HEADER_SIZE)
    accel_counts = records["accel"].astype(np.int16)  # native-endian copies
    gyro_counts = records["gyro"].astype(np.int16)
    flags = records["flags"].copy()
    return GloveFrame(
        handedness=handedness,
        sequence=sequence,
        device_time_us=device_time_us,
        accel_scale=float(accel_scale),
        gyro_scale=float(gyro_scale),
        accel_counts=_read_only(accel_counts),
        gyro_counts=_read_only(gyro_counts),
        sensor_flags=_read_only(flags),
        accel=_read_only(counts_to_si(accel_counts, accel_scale)),
        gyro=_read_only(counts_to_si(gyro_counts, gyro_scale)),
        version=version,
    )


def decode_frame(data: bytes) -> GloveFrame:
    """Decode exactly one complete frame; raises :class:`FrameError` naming the failed check.

    Checks run in the parser's order: sync, version, length, header fields, CRC.
    """
    data = bytes(data)
    if len(data) < _EARLY_CHECK_SIZE or data[: len(SYNC)] != SYNC:
        raise FrameError("sync", f"does not start with the sync bytes {SYNC.hex()}")
    problem = _early_header_problem(data, 0)
    if problem is not None:
        raise FrameError(*problem)
    size = frame_size(data[_SENSOR_COUNT_OFFSET])
    if len(data) != size:
        raise FrameError("length", f"{len(data)} bytes, header announces a {size}-byte frame")
    header = _HEADER.unpack_from(data, 0)
    problem = _full_header_problem(header)
    if problem is not None:
        raise FrameError(*problem)
    (crc_sent,) = _CRC.unpack_from(data, size - CRC_SIZE)
    crc_computed = zlib.crc32(memoryview(data)[CRC_START : size - CRC_SIZE])
    if crc_sent != crc_computed:
        raise FrameError("crc", f"CRC {crc_sent:#010x} != computed {crc_computed:#010x}")
    return _decode_checked(data, 0, header)


# --------------------------------------------------------------------------- sequence tracking


@dataclasses.dataclass
class SequenceStats:
    """What :class:`SequenceTracker` saw.  ``gaps`` counts gap events, ``frames_missing``
    the sequence numbers skipped in them."""

    frames_accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    gaps: int = 0
    frames_missing: int = 0
    resets: int = 0


class SequenceTracker:
    """Accepts frames whose sequence number moves forward (mod 2**32).

    Duplicates (same number as the last accepted) and out-of-order frames (up to
    ``reorder_window`` behind it) are dropped and counted.  A forward step of more
    than one is a gap: counted and reported, the frame is accepted.  A step further
    back than ``reorder_window`` means the device restarted its counter (reboot):
    the tracker re-locks on that frame and counts a reset.
    """

    def __init__(self, reorder_window: int = 64):
        if not 0 < reorder_window < SEQUENCE_MODULUS // 2:
            raise ValueError(f"reorder_window {reorder_window} outside 1..2**31-1")
        self.reorder_window = reorder_window
        self.stats = SequenceStats()
        self.last_sequence: int | None = None
        self.last_gap: int = 0  # missing frames before the most recently accepted one

    def accept(self, sequence: int) -> bool:
        """True if a frame with this sequence number should be delivered."""
        self.last_gap = 0
        if self.last_sequence is None:
            self.last_sequence = sequence
            self.stats.frames_accepted += 1
            return True
        step = (sequence - self.last_sequence) % SEQUENCE_MODULUS
        if step == 0:
            self.stats.duplicates += 1
            return False
        if step >= SEQUENCE_MODULUS // 2:  # behind the last accepted frame
            if SEQUENCE_MODULUS - step <= self.reorder_window:
                self.stats.out_of_order += 1
                return False
            self.stats.resets += 1
        elif step > 1:
            self.last_gap = step - 1
            self.stats.gaps += 1
            self.stats.frames_missing += step - 1
        self.last_sequence = sequence
        self.stats.frames_accepted += 1
        return True

    def reset(self) -> None:
        """Forget the last sequence number (the next frame is accepted as a fresh start)."""
        self.last_sequence = None
        self.last_gap = 0


# --------------------------------------------------------------------------- stream parser


@dataclasses.dataclass
class ParserStats:
    """Byte and frame accounting of a :class:`FrameParser`.

    Invariant: ``bytes_received == bytes_in_frames + bytes_discarded + parser.buffered_bytes``.
    Every rejected candidate frame (``version_errors + length_errors + header_errors +
    crc_errors``) discards exactly its first byte; garbage between frames is discarded too.
    ``frames_ok`` counts frames that passed every check, before sequence tracking.
    """

    bytes_received: int = 0
    bytes_in_frames: int = 0
    bytes_discarded: int = 0
    frames_ok: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    version_errors: int = 0
    header_errors: int = 0
    resyncs: int = 0

    @property
    def frames_rejected(self) -> int:
        return self.crc_errors + self.length_errors + self.version_errors + self.header_errors


class FrameParser:
    """Streaming parser: bytes in arbitrary chunks -> decoded, in-sequence frames.

    After any failed check it discards one byte and searches for the sync bytes
    again from the next position, so a frame starting inside garbage or inside a
    rejected frame is never skipped.  Candidate frames are vetted on their first
    6 bytes (version, length, sensor count) and 28 bytes (handedness, scales)
    before waiting for the rest, so a false sync in garbage costs little.  Nothing
    raised by bad input escapes :meth:`feed`.
    """

    # Compact the buffer once this many consumed bytes sit at its front.
    _COMPACT_THRESHOLD = 4096

    def __init__(self, track_sequence: bool = True, reorder_window: int = 64):
        self.stats = ParserStats()
        self.sequence: SequenceTracker | None = SequenceTracker(reorder_window) if track_sequence else None
        self._buffer = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buffer
        self._hunting = False  # bytes were discarded since the last good frame
        self.last_error: FrameError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet consumed (a partial frame or a sync candidate)."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> list[GloveFrame]:
        """Consume ``data``; return the frames completed by it (sequence-filtered if tracking)."""
        self.stats.bytes_received += len(data)
        self._buffer += data
        frames: list[GloveFrame] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                break
            if self.sequence is None or self.sequence.accept(frame.sequence):
                frames.append(frame)
        if self._pos >= self._COMPACT_THRESHOLD or self._pos == len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0
        return frames

    def reset_buffer(self) -> None:
        """Drop buffered bytes (counted as discarded), e.g. after the link reconnected."""
        self._discard(self.buffered_bytes)
        del self._buffer[:]
        self._pos = 0

    def _discard(self, count: int) -> None:
        if count > 0:
            self.stats.bytes_discarded += count
            self._pos += count
            self._hunting = True

    def _reject(self, reason: str, problem: str) -> None:
        setattr(self.stats, f"{reason}_errors", getattr(self.stats, f"{reason}_errors") + 1)
        self.last_error = FrameError(reason, problem)
        self._discard(1)

    def _next_frame(self) -> GloveFrame | None:
        """Return the next valid frame in the buffer, or None when more bytes are needed."""
        buffer = self._buffer
        while True:
            sync_at = buffer.find(SYNC, self._pos)
            if sync_at < 0:
                # Keep a trailing first sync byte: it may start a header in the next chunk.
                keep = 1 if len(buffer) > self._pos and buffer[-1] == SYNC[0] else 0
                self._discard(len(buffer) - keep - self._pos)
                return None
            self._discard(sync_at - self._pos)
            start = self._pos
            available = len(buffer) - start
            if available < _EARLY_CHECK_SIZE:
                return None
            problem = _early_header_problem(buffer, start)
            if problem is not None:
                self._reject(*problem)
                continue
            if available < HEADER_SIZE:
                return None
            header = _HEADER.unpack_from(buffer, start)
            problem = _full_header_problem(header)
            if problem is not None:
                self._reject(*problem)
                continue
            size = frame_size(header[3])
            if available < size:
                inner = self._complete_frame_within(start, size)
                if inner is None:
                    return None
                # Frames never overlap: a complete valid frame starting inside the announced
                # extent makes this candidate a false one (a plausible header in garbage);
                # rejecting it now delivers that frame without waiting for bytes it never needed.
                self._reject("length", f"announced {size}-byte frame overlaps a complete frame at +{inner - start}")
                continue
            (crc_sent,) = _CRC.unpack_from(buffer, start + size - CRC_SIZE)
            with memoryview(buffer) as view:
                crc_computed = zlib.crc32(view[start + CRC_START : start + size - CRC_SIZE])
            if crc_sent != crc_computed:
                self._reject("crc", f"CRC {crc_sent:#010x} != computed {crc_computed:#010x}")
                continue
            frame = _decode_checked(buffer, start, header)
            self._pos = start + size
            self.stats.frames_ok += 1
            self.stats.bytes_in_frames += size
            if self._hunting:
                self.stats.resyncs += 1
                self._hunting = False
            return frame

    def _complete_frame_within(self, start: int, size: int) -> int | None:
        """Start of a complete frame passing every check that begins inside ``[start + 1,
        start + size)`` of the buffer, or None."""
        buffer = self._buffer
        at = buffer.find(SYNC, start + 1, start + size)
        while at >= 0:
            available = len(buffer) - at
            if available >= HEADER_SIZE and _early_header_problem(buffer, at) is None:
                header = _HEADER.unpack_from(buffer, at)
                inner_size = frame_size(header[3])
                if _full_header_problem(header) is None and available >= inner_size:
                    (crc_sent,) = _CRC.unpack_from(buffer, at + inner_size - CRC_SIZE)
                    with memoryview(buffer) as view:
                        if zlib.crc32(view[at + CRC_START : at + inner_size - CRC_SIZE]) == crc_sent:
                            return at
            at = buffer.find(SYNC, at + 1, start + size)
        return None


def encode_stream(frames: Iterable[GloveFrame]) -> bytes:
    """Concatenate the encodings of ``frames`` (test and simulation helper)."""
    return b"".join(encode_frame(frame) for frame in frames)
