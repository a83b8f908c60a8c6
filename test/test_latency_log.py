"""The nodes' per-frame latency log (parameter ``latency_log``), without ROS: written, read back, and
what happens to bad files and failing writes."""
from __future__ import annotations

import numpy as np
import pytest

from avi_ht_ros.live_stats import LATENCY_LOG_HEADER, LatencyLog, read_latency_log


def test_a_latency_log_reads_back_what_was_recorded(tmp_path):
    log = LatencyLog(tmp_path / "log.csv")
    frames = [(1_000_000_000 + k * 16_666_667, 1_000_000_000 + k * 16_666_667 + 7_000_000 + k) for k in range(50)]
    for stamp, published in frames:
        assert log.record(stamp, published) is None
    log.close()
    stamps, published = read_latency_log(tmp_path / "log.csv")
    assert stamps.dtype == np.int64 and stamps.tolist() == [s for s, _ in frames]
    assert published.tolist() == [p for _, p in frames]
    assert log.records == 50
    log.record(1, 2)   # after close: ignored, not an error
    empty = LatencyLog(tmp_path / "empty.csv")
    empty.close()
    assert read_latency_log(tmp_path / "empty.csv")[0].shape == (0,)


def test_a_cut_off_last_line_is_skipped_other_damage_is_an_error(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(f"{LATENCY_LOG_HEADER}\n10,20\n30,4")        # a node killed mid-write
    assert read_latency_log(path)[0].tolist() == [10, 30]
    path.write_text(f"{LATENCY_LOG_HEADER}\n10,20\n30\n50,60\n")
    with pytest.raises(ValueError, match=r"log.csv:3"):
        read_latency_log(path)
    path.write_text("stamp,published\n10,20\n")
    with pytest.raises(ValueError, match="not a latency log"):
        read_latency_log(path)


def test_a_failing_write_disables_the_log_once_and_never_raises(tmp_path):
    log = LatencyLog(tmp_path / "log.csv")
    log.record(1, 2)

    class FullDisk:
        def write(self, _text):
            raise OSError(28, "No space left on device")

        def close(self):
            raise OSError(28, "No space left on device")

    log._file = FullDisk()
    error = log.record(3, 4)
    assert isinstance(error, OSError) and log.error is error
    assert log.record(5, 6) is None and log.records == 1    # reported once; later frames are not logged
    log.close()


def test_the_nodes_refuse_a_latency_log_they_cannot_write(tmp_path):
    from avi_ht_ros.common.errors import ConfigError
    from avi_ht_ros.nodes.base import open_latency_log

    assert open_latency_log("") is None
    with pytest.raises(ConfigError, match="latency_log"):
        open_latency_log(str(tmp_path / "no_such_directory" / "log.csv"))
    log = open_latency_log(str(tmp_path / "log.csv"))
    log.close()
