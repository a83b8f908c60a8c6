"""Glove protocol v1: encoding, decoding, streaming parser robustness, sequence tracking."""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avi_ht_ros.driver.protocol import (
    FULL_SCALE_COUNT,
    HAND_LEFT,
    HAND_RIGHT,
    HEADER_SIZE,
    INVALID_COUNT,
    MAX_FRAME_SIZE,
    MAX_SENSOR_COUNT,
    SEQUENCE_MODULUS,
    SYNC,
    FrameError,
    FrameParser,
    GloveFrame,
    SequenceTracker,
    decode_frame,
    encode_frame,
    encode_stream,
    frame_size,
)

ACCEL_SCALE = 16.0 * 9.80665 / 32768.0
GYRO_SCALE = math.radians(2000.0) / 32768.0
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_frame(sequence: int, sensor_count: int = 12, seed: int = 0, handedness: int = HAND_RIGHT) -> GloveFrame:
    rng = np.random.default_rng(seed + 7919 * sequence)
    return GloveFrame.from_counts(
        handedness=handedness,
        sequence=sequence % SEQUENCE_MODULUS,
        device_time_us=1_000_000 + 5000 * sequence,
        accel_scale=ACCEL_SCALE,
        gyro_scale=GYRO_SCALE,
        accel_counts=rng.integers(-FULL_SCALE_COUNT, FULL_SCALE_COUNT + 1, (sensor_count, 3)),
        gyro_counts=rng.integers(-FULL_SCALE_COUNT, FULL_SCALE_COUNT + 1, (sensor_count, 3)),
        sensor_flags=rng.integers(0, 16, sensor_count),
    )


def assert_same_frame(a: GloveFrame, b: GloveFrame) -> None:
    assert (a.handedness, a.sequence, a.device_time_us) == (b.handedness, b.sequence, b.device_time_us)
    assert (a.accel_scale, a.gyro_scale) == (b.accel_scale, b.gyro_scale)
    np.testing.assert_array_equal(a.accel_counts, b.accel_counts)
    np.testing.assert_array_equal(a.gyro_counts, b.gyro_counts)
    np.testing.assert_array_equal(a.sensor_flags, b.sensor_flags)
    np.testing.assert_array_equal(a.accel, b.accel)
    np.testing.assert_array_equal(a.gyro, b.gyro)


def with_crc(body: bytes) -> bytes:
    """Re-seal a modified frame body (everything before the CRC) with a correct CRC."""
    return body + struct.pack("<I", zlib.crc32(body[2:]))


def feed_in_chunks(parser: FrameParser, data: bytes, cuts: list[int]) -> list[GloveFrame]:
    out: list[GloveFrame] = []
    start = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        out += parser.feed(data[start:cut])
        start = cut
    return out


def assert_bytes_accounted(parser: FrameParser) -> None:
    s = parser.stats
    assert s.bytes_received == s.bytes_in_frames + s.bytes_discarded + parser.buffered_bytes
    assert parser.buffered_bytes < MAX_FRAME_SIZE


# ------------------------------------------------------------------ layout and round trip


def test_layout_matches_the_documented_table():
    frame = GloveFrame.from_counts(
        handedness=HAND_LEFT,
        sequence=0x01020304,
        device_time_us=0x1122334455667788,
        accel_scale=0.5,
        gyro_scale=0.25,
        accel_counts=[[1, -2, 3]],
        gyro_counts=[[-32767, 32767, INVALID_COUNT]],
        sensor_flags=[0x05],
    )
    expected_body = (
        b"\xa5\x8e"  # sync
        + b"\x01"  # version
        + b"\x0d\x00"  # payload_length 13
        + b"\x01"  # sensor_count
        + b"\x00"  # handedness left
        + b"\x00"  # reserved
        + b"\x04\x03\x02\x01"  # sequence
        + b"\x88\x77\x66\x55\x44\x33\x22\x11"  # device_time_us
        + struct.pack("<ff", 0.5, 0.25)
        + struct.pack("<6h", 1, -2, 3, -32767, 32767, -32768)
        + b"\x05"
    )
    assert encode_frame(frame) == with_crc(expected_body)
    assert HEADER_SIZE == 28
    assert frame_size(12) == 188 == len(encode_frame(make_frame(0)))
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the documented CRC variant


frame_strategy = st.integers(1, MAX_SENSOR_COUNT).flatmap(
    lambda n: st.builds(
        lambda hand, seq, t, sa, sg, acc, gyr, flags: GloveFrame.from_counts(
            handedness=hand,
            sequence=seq,
            device_time_us=t,
            accel_scale=sa,
            gyro_scale=sg,
            accel_counts=np.array(acc).reshape(n, 3),
            gyro_counts=np.array(gyr).reshape(n, 3),
            sensor_flags=flags,
        ),
        st.sampled_from([HAND_LEFT, HAND_RIGHT]),
        st.integers(0, SEQUENCE_MODULUS - 1),
        st.integers(0, (1 << 64) - 1),
        st.floats(2.0**-20, 1.0, width=32),
        st.floats(2.0**-20, 1.0, width=32),
        st.lists(st.integers(INVALID_COUNT, FULL_SCALE_COUNT), min_size=3 * n, max_size=3 * n),
        st.lists(st.integers(INVALID_COUNT, FULL_SCALE_COUNT), min_size=3 * n, max_size=3 * n),
        st.lists(st.integers(0, 255), min_size=n, max_size=n),
    )
)


@FUZZ
@given(frame_strategy)
def test_round_trip_is_exact_in_counts(frame):
    decoded = decode_frame(encode_frame(frame))
    assert_same_frame(decoded, frame)
    invalid = frame.accel_counts == INVALID_COUNT
    assert np.isnan(decoded.accel[invalid]).all()
    np.testing.assert_array_equal(decoded.accel[~invalid], frame.accel_counts[~invalid] * decoded.accel_scale)
    assert decoded.accel.dtype == np.float64 and decoded.accel_counts.dtype == np.int16


@FUZZ
@given(
    st.integers(1, MAX_SENSOR_COUNT).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(-15.9 * 9.81, 15.9 * 9.81), min_size=3 * n, max_size=3 * n),
            st.lists(st.floats(-34.0, 34.0), min_size=3 * n, max_size=3 * n),
        )
    )
)
def test_si_round_trip_within_one_count(values):
    accel = np.array(values[0]).reshape(-1, 3)
    gyro = np.array(values[1]).reshape(-1, 3)
    frame = GloveFrame.from_si(
        handedness=HAND_RIGHT, sequence=1, device_time_us=2, accel=accel, gyro=gyro,
        accel_scale=ACCEL_SCALE, gyro_scale=GYRO_SCALE,
    )
    decoded = decode_frame(encode_frame(frame))
    assert np.all(np.abs(decoded.accel - accel) <= decoded.accel_scale)
    assert np.all(np.abs(decoded.gyro - gyro) <= decoded.gyro_scale)


def test_from_si_saturates_and_marks_non_finite_invalid():
    accel = np.array([[1e6, -1e6, np.nan], [np.inf, 0.0, 9.81]])
    frame = GloveFrame.from_si(
        handedness=HAND_RIGHT, sequence=0, device_time_us=0, accel=accel, gyro=np.zeros((2, 3)),
        accel_scale=ACCEL_SCALE, gyro_scale=GYRO_SCALE,
    )
    np.testing.assert_array_equal(frame.accel_counts[0], [FULL_SCALE_COUNT, -FULL_SCALE_COUNT, INVALID_COUNT])
    assert frame.accel_counts[1, 0] == INVALID_COUNT
    assert np.isnan(frame.accel[0, 2]) and np.isnan(frame.accel[1, 0])
    with pytest.raises(ValueError):
        frame.accel_counts[0, 0] = 1  # frames are immutable


@pytest.mark.parametrize(
    "kwargs",
    [
        {"handedness": 2},
        {"sequence": SEQUENCE_MODULUS},
        {"device_time_us": -1},
        {"accel_scale": 0.0},
        {"gyro_scale": float("nan")},
        {"accel_counts": np.zeros((0, 3))},
        {"accel_counts": np.zeros((33, 3)), "gyro_counts": np.zeros((33, 3))},
        {"gyro_counts": np.full((12, 3), 40000)},
        {"sensor_flags": np.full(12, 256)},
    ],
)
def test_frame_construction_rejects_what_cannot_be_sent(kwargs):
    base = dict(
        handedness=HAND_RIGHT, sequence=0, device_time_us=0, accel_scale=ACCEL_SCALE, gyro_scale=GYRO_SCALE,
        accel_counts=np.zeros((12, 3)), gyro_counts=np.zeros((12, 3)), sensor_flags=None,
    )
    base.update(kwargs)
    with pytest.raises(ValueError):
        GloveFrame.from_counts(**base)


# ------------------------------------------------------------------ decode_frame errors


def corrupted_variants() -> dict[str, bytes]:
    good = encode_frame(make_frame(3))
    body = bytearray(good[:-4])
    variants = {}
    wrong_sync = bytearray(good)
    wrong_sync[1] ^= 0xFF
    variants["sync"] = bytes(wrong_sync)
    version = bytearray(body)
    version[2] = 2
    variants["version"] = with_crc(bytes(version))
    count = bytearray(body)
    count[5] = 13  # length still says 12 sensors
    variants["length"] = with_crc(bytes(count))
    hand = bytearray(body)
    hand[6] = 2
    variants["header"] = with_crc(bytes(hand))
    scale = bytearray(body)
    scale[20:24] = struct.pack("<f", float("inf"))
    variants["header_scale"] = with_crc(bytes(scale))
    crc = bytearray(good)
    crc[100] ^= 0x10
    variants["crc"] = bytes(crc)
    return variants


@pytest.mark.parametrize("name", ["sync", "version", "length", "header", "header_scale", "crc"])
def test_decode_frame_names_the_failed_check(name):
    data = corrupted_variants()[name]
    with pytest.raises(FrameError) as info:
        decode_frame(data)
    assert info.value.reason == name.split("_")[0]


def test_decode_frame_rejects_wrong_total_length():
    good = encode_frame(make_frame(1))
    for data in (good[:-1], good + b"\x00", b"", SYNC):
        with pytest.raises(FrameError):
            decode_frame(data)


def test_parser_counts_each_rejection_reason_and_keeps_the_next_frame():
    variants = corrupted_variants()
    parser = FrameParser(track_sequence=False)
    frames = []
    for name in ["version", "length", "header", "header_scale", "crc"]:
        frames += parser.feed(variants[name])
        frames += parser.feed(encode_frame(make_frame(10 + len(frames))))
    s = parser.stats
    assert (s.version_errors, s.length_errors, s.header_errors, s.crc_errors) == (1, 1, 2, 1)
    assert len(frames) == 5 and s.frames_ok == 5
    assert_bytes_accounted(parser)


# ------------------------------------------------------------------ stream parser


def test_parser_byte_by_byte_and_whole_stream_agree():
    frames = [make_frame(i, sensor_count=1 + i % MAX_SENSOR_COUNT) for i in range(40)]
    data = encode_stream(frames)
    whole = FrameParser().feed(data)
    parser = FrameParser()
    single = [f for i in range(len(data)) for f in parser.feed(data[i : i + 1])]
    for decoded in (whole, single):
        assert [f.sequence for f in decoded] == list(range(40))
        for got, sent in zip(decoded, frames):
            assert_same_frame(got, sent)
    assert parser.stats.bytes_discarded == 0 and parser.stats.resyncs == 0
    assert parser.stats.bytes_in_frames == len(data)


@FUZZ
@given(st.lists(st.integers(0, 20_000), max_size=30))
def test_parser_handles_any_chunking(cuts):
    frames = [make_frame(i) for i in range(25)]
    data = encode_stream(frames)
    parser = FrameParser()
    decoded = feed_in_chunks(parser, data, cuts)
    assert [f.sequence for f in decoded] == list(range(25))
    assert parser.stats.frames_ok == 25 and parser.stats.bytes_discarded == 0
    assert_bytes_accounted(parser)


@FUZZ
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_parser_survives_random_bytes(garbage, cuts):
    parser = FrameParser()
    decoded = feed_in_chunks(parser, garbage, cuts)
    assert decoded == []  # a random byte string never carries a valid CRC-32 frame
    assert parser.stats.frames_ok == 0
    assert_bytes_accounted(parser)


@FUZZ
@given(
    st.binary(min_size=1, max_size=600),
    st.integers(0, 8),
    st.integers(1, 8),
    st.lists(st.integers(0, 10_000), max_size=25),
    st.integers(1, MAX_SENSOR_COUNT),
)
def test_parser_recovers_every_frame_around_garbage(garbage, frames_before, frames_after, cuts, sensor_count):
    before = [make_frame(i, sensor_count) for i in range(frames_before)]
    after = [make_frame(frames_before + i, sensor_count) for i in range(frames_after)]
    parser = FrameParser()
    decoded = feed_in_chunks(parser, encode_stream(before) + garbage + encode_stream(after), cuts)
    # Resync within one frame: the first intact frame after the garbage is not lost.
    assert [f.sequence for f in decoded] == list(range(frames_before + frames_after))
    for got, sent in zip(decoded, before + after):
        assert_same_frame(got, sent)
    assert parser.stats.frames_ok == frames_before + frames_after
    assert_bytes_accounted(parser)
    assert parser.stats.bytes_discarded == len(garbage)
    assert parser.stats.resyncs == 1


CORRUPTIONS = ["none", "bit_flip", "truncate", "garbage_before", "cut_middle", "bad_crc", "duplicate", "swap"]


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(CORRUPTIONS), st.integers(0, 10**6), st.binary(min_size=1, max_size=40)),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.integers(0, 10_000), max_size=25),
)
def test_parser_delivers_exactly_the_intact_frames_of_a_corrupted_stream(plan, cuts):
    """Random corruptions of a valid stream: every frame whose bytes arrive untouched is
    delivered once, in order; duplicates and late frames are dropped; nothing raises."""
    stream = bytearray()
    arrivals: list[int] = []  # sequence numbers of the intact frames, in stream order
    held: tuple[bytes, int] | None = None
    for sequence, (kind, position, garbage) in enumerate(plan):
        data = bytearray(encode_frame(make_frame(sequence, seed=position % 97)))
        if kind == "bit_flip":
            bit = position % (8 * len(data))
            data[bit // 8] ^= 1 << (bit % 8)
        elif kind == "truncate":
            data = data[: 1 + position % (len(data) - 1)]
        elif kind == "garbage_before":
            stream += garbage
        elif kind == "cut_middle":
            start = 1 + position % (len(data) - 2)
            del data[start : start + 1 + position % 20]
        elif kind == "bad_crc":
            data[-1 - position % 4] ^= 0x01 + position % 255
        intact = kind in ("none", "garbage_before", "duplicate", "swap")
        if kind == "swap" and held is None:
            held = (bytes(data), sequence)  # goes out after the next frame
            continue
        stream += data
        if intact:
            arrivals.append(sequence)
        if held is not None:
            stream += held[0]
            arrivals.append(held[1])
            held = None
        if kind == "duplicate":
            stream += data
            arrivals.append(sequence)
    if held is not None:
        stream += held[0]
        arrivals.append(held[1])
    expected = []  # what a receiver that drops duplicates and late frames delivers
    for sequence in arrivals:
        if not expected or sequence > expected[-1]:
            expected.append(sequence)
    parser = FrameParser()
    decoded = feed_in_chunks(parser, bytes(stream), cuts)
    assert [f.sequence for f in decoded] == expected
    assert_bytes_accounted(parser)
    tracker = parser.sequence.stats
    assert parser.stats.frames_ok == tracker.frames_accepted + tracker.duplicates + tracker.out_of_order


def test_frame_hidden_behind_a_fake_header_is_found():
    """Garbage ending in a plausible header (sync, version, length, count, handedness)
    whose announced frame would swallow the real one: the real frame still comes out."""
    real = encode_frame(make_frame(5))
    fake_header = real[:HEADER_SIZE]  # perfectly valid header, no body
    parser = FrameParser()
    decoded = parser.feed(b"\x00\x11" + fake_header + real)
    assert [f.sequence for f in decoded] == [5]
    assert parser.stats.crc_errors == 1 and parser.stats.resyncs == 1


def test_truncated_frame_followed_by_valid_frames():
    frames = [encode_frame(make_frame(i)) for i in range(4)]
    parser = FrameParser()
    decoded = parser.feed(frames[0] + frames[1][:50] + frames[2] + frames[3])
    assert [f.sequence for f in decoded] == [0, 2, 3]
    assert parser.stats.bytes_discarded == 50
    assert parser.sequence.stats.gaps == 1 and parser.sequence.stats.frames_missing == 1


def test_buffer_stays_bounded_under_endless_noise():
    rng = np.random.default_rng(1)
    parser = FrameParser()
    for _ in range(50):
        parser.feed(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        assert parser.buffered_bytes < MAX_FRAME_SIZE
    # Noise made of sync bytes and plausible headers must not grow the buffer either.
    header = encode_frame(make_frame(0))[:HEADER_SIZE]
    for _ in range(100):
        parser.feed(header)
    assert parser.buffered_bytes < MAX_FRAME_SIZE
    assert_bytes_accounted(parser)


def test_reset_buffer_counts_the_partial_frame_as_discarded():
    parser = FrameParser()
    parser.feed(encode_frame(make_frame(0))[:100])
    parser.reset_buffer()
    assert parser.buffered_bytes == 0 and parser.stats.bytes_discarded == 100
    assert [f.sequence for f in parser.feed(encode_frame(make_frame(1)))] == [1]


# ------------------------------------------------------------------ sequence tracking


def test_sequence_tracker_classifies_steps():
    tracker = SequenceTracker(reorder_window=8)
    accepted = [s for s in [10, 11, 11, 13, 12, 14, 20, 19, 21] if tracker.accept(s)]
    assert accepted == [10, 11, 13, 14, 20, 21]
    stats = tracker.stats
    assert (stats.duplicates, stats.out_of_order, stats.gaps, stats.frames_missing) == (1, 2, 2, 6)
    assert stats.frames_accepted == 6 and stats.resets == 0


def test_sequence_tracker_wraps_and_detects_reset():
    tracker = SequenceTracker(reorder_window=8)
    top = SEQUENCE_MODULUS - 2
    assert [tracker.accept(s) for s in [top, top + 1, 0, 1]] == [True] * 4
    assert tracker.stats.gaps == 0
    assert tracker.accept(SEQUENCE_MODULUS - 1) is False  # 2 behind across the wrap: late
    assert tracker.accept(3) and tracker.last_gap == 1
    # Device reboot: counter restarts far behind the last accepted number.
    assert tracker.accept(100_000) and tracker.stats.gaps == 2
    assert tracker.accept(0) and tracker.stats.resets == 1
    assert tracker.accept(1) and not tracker.accept(0)


def test_parser_drops_duplicates_and_late_frames():
    order = [0, 1, 1, 2, 4, 3, 5, 5, 8, 6, 9]
    parser = FrameParser()
    decoded = parser.feed(encode_stream(make_frame(i) for i in order))
    assert [f.sequence for f in decoded] == [0, 1, 2, 4, 5, 8, 9]
    s = parser.sequence.stats
    assert (s.duplicates, s.out_of_order, s.gaps, s.frames_missing) == (2, 2, 2, 3)
    assert parser.stats.frames_ok == len(order)


def test_parser_without_sequence_tracking_delivers_everything():
    order = [3, 3, 1]
    parser = FrameParser(track_sequence=False)
    assert [f.sequence for f in parser.feed(encode_stream(make_frame(i) for i in order))] == order
    assert parser.sequence is None
