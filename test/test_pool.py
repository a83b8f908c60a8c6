"""``avi-ht pool``: per-draw and pooled (frame-weighted) comparison of `avi-ht eval` results."""
from __future__ import annotations

import json

import pytest

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.tracker import pool


def _metrics(path, seed, bins, overall_t=(3.0, 2.5)):
    """bins: label -> (frames, mkpe fusion, mkpe vision); overall means are the frame-weighted ones."""
    frames = sum(f for f, _, _ in bins.values())

    def mean(column):  # 0: fusion, 1: vision-only
        return sum(f * (a, v)[column] for f, a, v in bins.values()) / frames

    metrics = {
        "source": {"first_seed": seed, "last_seed": seed + 5},
        "overall": {"avi_ht": {"mkpe_mm": mean(0), "f_mkpe_mm": 1.1 * mean(0), "mkpe_t_mm": overall_t[0]},
                    "vision_only": {"mkpe_mm": mean(1), "f_mkpe_mm": 1.2 * mean(1), "mkpe_t_mm": 15.0},
                    "imu_only": {"mkpe_mm": None, "f_mkpe_mm": None, "mkpe_t_mm": overall_t[1]}},
        "occlusion_bins": {name: {label: {"frames": f, "mkpe_mm": (a if name == "avi_ht" else v)}
                                  for label, (f, a, v) in bins.items()}
                           for name in ("avi_ht", "vision_only", "imu_only")},
    }
    path.mkdir()
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path / "metrics.json"


def test_pooled_row_is_the_mean_over_every_frame_of_every_draw(tmp_path):
    first = _metrics(tmp_path / "a", 100, {"0-50%": (100, 10.0, 20.0), "50-100%": (300, 30.0, 40.0)})
    second = _metrics(tmp_path / "b", 200, {"0-50%": (300, 20.0, 20.0), "50-100%": (100, 50.0, 50.0)}, (4.0, 3.5))
    draws = [pool.load_draw(p, "avi_ht", "vision_only", "imu_only") for p in (first, second)]
    assert [d.name for d in draws] == ["seeds 100–105", "seeds 200–205"] and draws[0].frames == 400
    table = pool.pool_table(draws, "avi_ht", "vision_only", "imu_only")
    pooled = table.strip().splitlines()[-1]
    # bin 0-50 %: (100*10 + 300*20)/400 = 17.5 vs 20.0; bin 50-100 %: (300*30 + 100*50)/400 = 35.0 vs 42.5
    assert "17.5 / 20.0 (-12.5 %, 400)" in pooled and "35.0 / 42.5 (-17.6 %, 400)" in pooled
    # overall: fusion (25 + 27.5)/2 = 26.25 vs vision (35 + 27.5)/2 = 31.25; MKPE.T (3.0 + 4.0)/2 vs (2.5 + 3.5)/2
    assert "26.25 / 31.25 (-16.0 %)" in pooled and "3.50 / 3.00" in pooled and "800 frames" in pooled
    assert len(table.strip().splitlines()) == 2 + 2 + 1


def test_a_missing_method_or_bad_file_is_a_clear_error(tmp_path):
    good = _metrics(tmp_path / "a", 1, {"0-100%": (10, 1.0, 2.0)})
    with pytest.raises(ConfigError, match="no method 'ekf'"):
        pool.load_draw(good, "avi_ht", "ekf", None)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not an `avi-ht eval` metrics.json"):
        pool.load_draw(bad, "avi_ht", "vision_only", None)
    other = _metrics(tmp_path / "b", 2, {"0-25%": (10, 1.0, 2.0)})
    draws = [pool.load_draw(p, "avi_ht", "vision_only", None) for p in (good, other)]
    with pytest.raises(ConfigError, match="occlusion bins"):
        pool.pool_table(draws, "avi_ht", "vision_only", None)


def test_the_command_prints_and_writes_the_table(tmp_path, capsys):
    from avi_ht_ros import cli

    first = _metrics(tmp_path / "a", 1, {"0-100%": (10, 1.0, 2.0)})
    out = tmp_path / "pooled.md"
    assert cli.main(["pool", str(first), "--articulation", "", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "MKPE.T" not in printed and "1.00 / 2.00 (-50.0 %)" in printed
