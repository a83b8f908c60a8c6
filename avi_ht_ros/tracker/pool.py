"""``avi-ht pool``: several ``avi-ht eval`` results (e.g. fresh seeds of one benchmark) side by side and pooled.

One draw of the held-out benchmark puts a few hand tracks in each occlusion bin (the default
draw: two tracks carry 349 of the 354 frames of its 75–100 % bin), so a bin's reduction
varies a lot from draw to draw. This reads the ``metrics.json`` of each draw and prints, per
draw and pooled over all of them, a method's MKPE and F.MKPE against the reference method,
overall and per occlusion bin, and its MKPE.T against an articulation baseline (IMU-only).
Pooled figures are frame-weighted means of the per-draw means, i.e. the mean over every frame
of every draw (each metric here is a per-frame mean).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.tracker.metrics import relative_reduction


@dataclasses.dataclass
class _Sums:
    frames: int = 0
    weighted: dict = dataclasses.field(default_factory=dict)

    def add(self, frames: int, values: dict[str, float]) -> None:
        self.frames += frames
        for key, value in values.items():
            self.weighted[key] = self.weighted.get(key, 0.0) + value * frames

    def mean(self, key: str) -> float:
        return self.weighted[key] / self.frames if self.frames else float("nan")


@dataclasses.dataclass(frozen=True)
class Draw:
    """What one ``metrics.json`` contributes: per-bin and overall means of the compared methods."""
    name: str
    frames: int
    overall: dict[str, dict[str, float]]            # method -> metric -> value
    bins: dict[str, dict[str, dict[str, float]]]    # bin -> method -> metric (+ "frames")


def load_draw(path: str | pathlib.Path, method: str, reference: str, articulation: str | None) -> Draw:
    path = pathlib.Path(path)
    try:
        metrics = json.loads(path.read_text())
        overall, bins = metrics["overall"], metrics["occlusion_bins"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(path), f"not an `avi-ht eval` metrics.json ({exc})") from exc
    needed = {method: ("mkpe_mm", "f_mkpe_mm", "mkpe_t_mm"), reference: ("mkpe_mm", "f_mkpe_mm")}
    if articulation:
        needed[articulation] = ("mkpe_t_mm",)
    for name, keys in needed.items():
        if name not in overall or name not in bins:
            raise ConfigError(str(path), f"has no method {name!r} (methods: {sorted(overall)})")
        missing = [key for key in keys if overall[name].get(key) is None]
        if missing:
            raise ConfigError(str(path), f"method {name!r} has no {missing}")
    frames = sum(int(b["frames"]) for b in bins[method].values())
    per_bin = {label: {name: bins[name][label] for name in (method, reference)} for label in bins[method]}
    source = metrics.get("source") if isinstance(metrics.get("source"), dict) else {}
    if "first_seed" in source:      # a generated benchmark: named by its seeds
        draw_name = f"seeds {source['first_seed']}–{source.get('last_seed', source['first_seed'])}"
    else:
        draw_name = path.parent.name if path.name == "metrics.json" else path.stem
    return Draw(draw_name, frames, {name: {key: float(overall[name][key]) for key in keys}
                                    for name, keys in needed.items()}, per_bin)


def _change(value: float, reference: float, key: str = "mkpe_mm") -> float:
    """Signed change vs the reference in percent (negative = lower error): the report's
    error reduction (:func:`relative_reduction`) with the sign of a change."""
    return -relative_reduction({key: value}, {key: reference}, (key,))[key]


def _bin_cell(value: float, reference: float, frames: int) -> str:
    return f"{value:.1f} / {reference:.1f} ({_change(value, reference):+.1f} %, {frames})"


def pool_table(draws: list[Draw], method: str, reference: str, articulation: str | None) -> str:
    """Markdown: one row per draw and a pooled row."""
    if not draws:
        raise ConfigError("avi-ht pool", "no metrics.json given")
    labels = list(draws[0].bins)
    for draw in draws[1:]:
        if list(draw.bins) != labels:
            raise ConfigError(draw.name, f"occlusion bins {list(draw.bins)} differ from {labels}")
    header = (["draw", f"MKPE {method} / {reference}", "F.MKPE Δ"] + [f"MKPE {label}" for label in labels]
              + ([f"MKPE.T {method} / {articulation}"] if articulation else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    pooled_overall = {name: _Sums() for name in (method, reference, articulation) if name}
    pooled_bins = {label: {name: _Sums() for name in (method, reference)} for label in labels}

    def row(name, m, r, fm, fr, bin_cells, t_m=None, t_a=None):
        cells = [name, f"{m:.2f} / {r:.2f} ({_change(m, r):+.1f} %)", f"{_change(fm, fr, 'f_mkpe_mm'):+.1f} %"] + bin_cells
        if articulation:
            cells.append(f"{t_m:.2f} / {t_a:.2f}")
        return "| " + " | ".join(cells) + " |"

    for draw in draws:
        for name in pooled_overall:
            pooled_overall[name].add(draw.frames, draw.overall[name])
        bin_cells = []
        for label in labels:
            m, r = draw.bins[label][method], draw.bins[label][reference]
            frames = int(m["frames"])
            pooled_bins[label][method].add(frames, {"mkpe_mm": m["mkpe_mm"]})
            pooled_bins[label][reference].add(frames, {"mkpe_mm": r["mkpe_mm"]})
            bin_cells.append(_bin_cell(m["mkpe_mm"], r["mkpe_mm"], frames))
        o = draw.overall
        lines.append(row(draw.name, o[method]["mkpe_mm"], o[reference]["mkpe_mm"], o[method]["f_mkpe_mm"],
                         o[reference]["f_mkpe_mm"], bin_cells, o[method]["mkpe_t_mm"],
                         o[articulation]["mkpe_t_mm"] if articulation else None))
    bin_cells = []
    for label in labels:
        m, r = pooled_bins[label][method], pooled_bins[label][reference]
        bin_cells.append(_bin_cell(m.mean("mkpe_mm"), r.mean("mkpe_mm"), m.frames))
    pm, pr = pooled_overall[method], pooled_overall[reference]
    lines.append(row(f"**pooled, {len(draws)} draws, {pm.frames} frames**", pm.mean("mkpe_mm"), pr.mean("mkpe_mm"),
                     pm.mean("f_mkpe_mm"), pr.mean("f_mkpe_mm"), bin_cells, pm.mean("mkpe_t_mm"),
                     pooled_overall[articulation].mean("mkpe_t_mm") if articulation else None))
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metrics", nargs="+", help="metrics.json files of `avi-ht eval` runs (one per draw)")
    parser.add_argument("--method", default="avi_ht", help="the method compared (default avi_ht)")
    parser.add_argument("--reference", default="vision_only", help="the baseline of the reductions (default vision_only)")
    parser.add_argument("--articulation", default="imu_only",
                        help="the method compared on MKPE.T ('' for none; default imu_only)")
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")


def run(args: argparse.Namespace) -> int:
    articulation = args.articulation or None
    draws = [load_draw(path, args.method, args.reference, articulation) for path in args.metrics]
    table = pool_table(draws, args.method, args.reference, articulation)
    print(table, end="")
    if args.out:
        pathlib.Path(args.out).write_text(table)
    return 0
