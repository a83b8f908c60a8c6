"""Coverage-guided fuzzing of the glove frame parser with atheris (libFuzzer).

    (atheris is pinned in requirements/base.txt)
    python test/fuzz_glove_parser.py -runs=1000000 CORPUS_DIR

The input bytes are fed to a :class:`~avi_ht_ros.driver.protocol.FrameParser` in chunks
whose sizes come from the input's first bytes, and to ``decode_frame``. Any exception other
than ``FrameError`` from ``decode_frame``, any exception from ``feed``, a frame that does
not re-encode to bytes present in the input, or broken byte accounting is a crash.
``test_reliability_glove_stream.py`` runs this with seed frames in the corpus.
"""
from __future__ import annotations

import sys

import atheris
import numpy  # noqa: F401 - imported first: not instrumented, coverage is the parser's
from avi_ht_ros.common import errors  # noqa: F401

with atheris.instrument_imports(include=["avi_ht_ros.driver.protocol"]):
    from avi_ht_ros.driver import protocol


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    chunk_sizes = [provider.ConsumeIntInRange(1, 600) for _ in range(provider.ConsumeIntInRange(0, 4))]
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    parser = protocol.FrameParser()
    start, k, frames = 0, 0, []
    while start < len(stream):
        size = chunk_sizes[k % len(chunk_sizes)] if chunk_sizes else len(stream)
        frames += parser.feed(stream[start:start + size])
        start += size
        k += 1
    stats = parser.stats
    if stats.bytes_received != stats.bytes_in_frames + stats.bytes_discarded + parser.buffered_bytes:
        raise AssertionError("bytes not accounted")
    if parser.buffered_bytes >= protocol.MAX_FRAME_SIZE:
        raise AssertionError("buffer grew beyond one frame")
    for frame in frames:
        if protocol.encode_frame(frame) not in stream:
            raise AssertionError("a delivered frame is not in the input")
    try:
        protocol.decode_frame(stream)
    except protocol.FrameError:
        pass


def seed_streams() -> list[bytes]:
    """Valid frames and streams for the corpus (libFuzzer cannot invent a CRC-32 on its own)."""
    import numpy as np

    seeds = []
    for n in (1, 3, 12, 32):
        rng = np.random.default_rng(n)
        frames = [protocol.GloveFrame.from_counts(
            handedness=protocol.HAND_RIGHT, sequence=i, device_time_us=5000 * i, accel_scale=0.0048,
            gyro_scale=0.001, accel_counts=rng.integers(-32767, 32768, (n, 3)),
            gyro_counts=rng.integers(-32767, 32768, (n, 3)), sensor_flags=rng.integers(0, 16, n)) for i in range(4)]
        seeds.append(b"\x00" + protocol.encode_stream(frames))
        seeds.append(b"\x02\x40\x10" + protocol.encode_stream(frames[:2]) + b"\xa5\x8e\x01" + protocol.encode_frame(
            frames[3]))
    return seeds


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
