"""``avi-ht bench graph``: the live node graph on a simulated scenario — latency, rates, drops, CPU.

The real node processes of ``sim.launch.py`` (:func:`avi_ht_ros.graph.sim_graph`: simulated
camera at 60 Hz, simulated glove at 200 Hz through its serial protocol over a
pseudo-terminal, synchronizer, fusion, retargeting) run in their own ROS domain; an
in-process probe (:class:`avi_ht_ros.nodes.graph_probe.GraphProbe`) receives the camera
infos, synchronized frames, hand poses, joint commands and glove samples. After start-up
and ``--warmup`` seconds, ``--duration`` seconds are measured:

* latency per stage and end to end (camera acquisition stamp → hand pose / joint command
  received; :func:`avi_ht_ros.live_stats.stage_latencies`), p50/p90/p99/max;
* rates (camera, glove, synchronized frames, poses, commands) and the frames that produced
  no pose, with the synchronizer's and the fusion node's own drop counters;
* CPU % (of one core, from ``/proc/<pid>/stat``), RSS and scheduling policy (``realtime_priority``)
  of every node process.

``--runs N`` repeats the whole measurement on a freshly started graph and also prints every
stage's latency over all runs' frames pooled, with each run's p99 beside it. ``--baseline
NODE:NAME=VALUE`` adds as many runs of a baseline (those settings changed), alternating with
them, and prints both pooled and the ratios, e.g. ``--runs 5 --duration 120 --baseline
retarget_node:realtime_priority=0 ...`` for what real-time scheduling gives.

``--glove-latency`` defaults to 0 here: the synchronizer must wait for the glove sample of a
frame's instant, so any glove data age adds to the end-to-end latency by construction
(``avi-ht demo`` runs with one, to show the online offset estimate).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import pathlib
import shlex
import sys
import tempfile
import time

import numpy as np

from avi_ht_ros.common import topics
from avi_ht_ros.common.config_file import yaml_assignment
from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.models.config import INFERENCE_BACKENDS
from avi_ht_ros.live_stats import (STAGES, ProcessSampler, format_table, latency_stats, load_average,
                                   read_latency_log, stage_latencies)

DEFAULT_SCENARIO_SEED = 5001
DEFAULT_SCENARIO_DURATION_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the first poses before measuring")
    parser.add_argument("--model", default=None, help="fusion checkpoint (default: the shipped models/avi_ht.pt)")
    parser.add_argument("--scenario", default=None, metavar="BAG", help="an `avi-ht simulate` bag to replay "
                        "(default: a cached 10 s medium-occlusion scenario, seed 5001)")
    parser.add_argument("--side", choices=topics.SIDES, default="right", help="gloved hand (default right)")
    parser.add_argument("--inference-backend", choices=INFERENCE_BACKENDS, default="auto",
                        help="fusion_node's inference_backend (default auto, the node's default; torch for an A/B)")
    parser.add_argument("--param", action="append", default=[], metavar="NODE:NAME=VALUE",
                        help="set a node parameter for an A/B, e.g. retarget_node:command_on_pose=false "
                        "(VALUE read as YAML; repeatable; checked by the node like any parameter)")
    parser.add_argument("--prefix", action="append", default=[], metavar="EXECUTABLE=COMMAND",
                        help="run a node process under COMMAND, like launch_ros's prefix= (e.g. "
                        "'sync_fusion_node=taskset -c 1' to give it a core of its own; repeatable; the executable "
                        "names of the layout run: sync_fusion_node, or sync_node and fusion_node with --separate-sync)")
    parser.add_argument("--separate-sync", action="store_true",
                        help="run sync_node and fusion_node as two processes (the synchronized frames cross DDS; "
                        "default: one sync_fusion_node process, as the launch files start them)")
    parser.add_argument("--glove-latency", type=float, default=0.0,
                        help="simulated glove data age, s (adds to the latency by construction; default 0)")
    parser.add_argument("--startup-timeout", type=float, default=240.0, help="longest wait for the first poses, s")
    parser.add_argument("--runs", type=int, default=1, help="measure N times, each on a freshly started graph, "
                        "and also print the latencies of all runs' frames pooled (a p99 over 20 s rests on 12 "
                        "frames; default 1)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NODE:NAME=VALUE",
                        help="also measure a baseline: the same graph with these parameter settings (on top of "
                        "--param), --runs times, alternating with the runs as given (the baseline first in odd "
                        "pairs, second in even ones); prints both pooled and their ratios (repeatable; e.g. "
                        "retarget_node:command_on_pose=false)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def node_parameter_overrides(settings: list[str], executables: list[str]) -> dict[str, dict[str, object]]:
    """``["retarget_node:command_on_pose=false", ...]`` → ``{"retarget_node": {"command_on_pose": False}}``
    (values read as YAML, an empty one is ``""``); a malformed entry or an executable not in ``executables`` is a
    :class:`ConfigError` (a wrong parameter name or value is refused by the node at start-up)."""
    expected = f"NODE:NAME=VALUE with NODE one of {', '.join(executables)}"
    overrides: dict[str, dict[str, object]] = {}
    for setting in settings:
        executable, _, assignment = setting.partition(":")
        if executable not in executables:
            raise ConfigError("--param", f"expected {expected}, got {setting!r}")
        name, value = yaml_assignment(assignment, "--param", expected)
        overrides.setdefault(executable, {})[name] = value
    return overrides


def process_prefixes(settings: list[str], executables: list[str]) -> dict[str, tuple[str, ...]]:
    """``--prefix EXECUTABLE=COMMAND`` entries as ``{executable: argv}``; a malformed entry, an
    executable not in the graph or an empty command is a :class:`ConfigError`."""
    prefixes: dict[str, tuple[str, ...]] = {}
    for setting in settings:
        executable, _, command = setting.partition("=")
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise ConfigError("--prefix", f"{setting!r}: {exc}") from None
        if executable.strip() not in executables or not argv:
            raise ConfigError("--prefix", f"expected EXECUTABLE=COMMAND with EXECUTABLE one of "
                                          f"{', '.join(executables)}, got {setting!r}")
        prefixes[executable.strip()] = argv
    return prefixes


def _delta(end: dict | None, start: dict | None, key: str) -> float:
    try:
        return float((end or {}).get(key, "nan")) - float((start or {}).get(key, 0) if start else 0)
    except (TypeError, ValueError):
        return float("nan")


def published_latencies(logs: dict[str, str], window: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{stage: latencies ms}`` from the nodes' latency logs (:class:`~avi_ht_ros.live_stats.LatencyLog`)
    of the frames stamped in ``window`` (ns, half-open); a log the node did not write is left out with a
    warning (the other figures stand)."""
    out = {}
    for stage, path in logs.items():
        if not path:
            continue
        try:
            stamps, published = read_latency_log(path)
        except (OSError, ValueError) as exc:
            print(f"[bench graph] no {stage} figures: {exc}", file=sys.stderr)
            continue
        inside = (stamps >= window[0]) & (stamps < window[1])
        out[stage] = (published[inside] - stamps[inside]) / 1e6
    return out


def run(args: argparse.Namespace) -> int:
    from avi_ht_ros import demo
    from avi_ht_ros.graph import sim_graph

    if args.duration <= 0 or args.warmup < 0 or args.runs < 1:
        raise ConfigError("bench graph", "need --duration > 0, --warmup >= 0 and --runs >= 1")
    if not 0.0 <= args.glove_latency <= 0.5:
        raise ConfigError("--glove-latency", f"must be in [0, 0.5] s, got {args.glove_latency}")
    composed = not args.separate_sync
    # --param names the node executables (sync_node, fusion_node), composed into one process or not
    executables = [spec.executable for spec in sim_graph("", args.side, composed=False)]
    extra = node_parameter_overrides(args.param, executables)
    prefixes = process_prefixes(args.prefix, [spec.executable for spec in sim_graph("", args.side, composed=composed)])
    model = demo.check_checkpoint(args.model or demo.default_model("avi_ht.pt"), "--model")
    progress = not args.no_progress
    if args.scenario:
        bag = pathlib.Path(args.scenario).resolve()
    else:
        bag, _ = demo.scenario_bag(DEFAULT_SCENARIO_DURATION_S, DEFAULT_SCENARIO_SEED, "medium", args.side,
                                   progress=progress)
    scenario = demo.scenario_info(bag)
    domain_id = demo.choose_domain_id()
    env = demo.graph_environment(domain_id)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    baseline = node_parameter_overrides(args.baseline, executables) if args.baseline else None
    schedule = run_schedule(args.runs, baseline is not None)
    measured: dict[bool, list] = {False: [], True: []}   # by "is a baseline run"
    for index, is_baseline in enumerate(schedule):
        settings = copy.deepcopy(extra)
        for executable, values in (baseline or {}).items() if is_baseline else ():
            settings[executable] = {**settings.get(executable, {}), **values}
        title = f"run {index + 1} of {len(schedule)}" + (" (baseline)" if is_baseline else "")
        if len(schedule) > 1:
            print(f"[bench graph] {title}", file=sys.stderr)
        measured[is_baseline].append(_measure(args, bag, scenario, model, composed, settings, prefixes, domain_id,
                                              env))
        if len(schedule) > 1:
            print(title)
        print(format_result(measured[is_baseline][-1][0]))
        if len(schedule) > 1:
            print()
    results = [result for result, _ in measured[False]]
    output: dict = results[0]
    if len(schedule) > 1:
        pooled = pooled_latencies([stages for _, stages in measured[False]])
        print(format_pooled(pooled, results, "as given" if baseline else ""))
        output = {"runs": results, "pooled_latency_ms": pooled, "latency_labels": results[0]["latency_labels"]}
    if baseline:
        baseline_results = [result for result, _ in measured[True]]
        baseline_pooled = pooled_latencies([stages for _, stages in measured[True]])
        print()
        print(format_pooled(baseline_pooled, baseline_results, "baseline: " + " ".join(args.baseline)))
        ratios = latency_ratios(pooled, baseline_pooled)
        print()
        print(format_ratios(ratios, results[0]["latency_labels"]))
        output.update(baseline_settings=list(args.baseline), baseline_runs=baseline_results,
                      baseline_pooled_latency_ms=baseline_pooled, ratios=ratios)
        results = results + baseline_results
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(_plain(output), indent=2))
    return 0 if all(code == 0 for result in results for code in result["exit_codes"].values()) else 1


def run_schedule(runs: int, with_baseline: bool) -> list[bool]:
    """Which of the runs are baseline runs, in order: ``runs`` runs as given, and with a baseline as
    many baseline runs, in pairs whose order alternates (baseline first, then second, ...), so a
    drift of the machine's pace over the session weighs on both alike."""
    if not with_baseline:
        return [False] * runs
    return [is_baseline for pair in range(runs) for is_baseline in ((True, False) if pair % 2 == 0 else (False, True))]


def latency_ratios(pooled: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]) -> dict[str, dict]:
    """``{stage: {"p50": as given / baseline, "p99": ...}}`` for the stages both have."""
    def ratio(a: float, b: float) -> float:
        return a / b if b and np.isfinite(a) and np.isfinite(b) else float("nan")

    return {name: {q: ratio(stats[q], baseline[name][q]) for q in ("p50", "p99")}
            for name, stats in pooled.items() if name in baseline}


def format_ratios(ratios: dict[str, dict], labels: dict[str, str]) -> str:
    rows = [[labels.get(name, name), _f(r["p50"], "{:.3f}"), _f(r["p99"], "{:.3f}")] for name, r in ratios.items()]
    return format_table(["latency, as given / baseline", "p50 ratio", "p99 ratio"], rows)


def pooled_latencies(runs: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Latency statistics of every stage over the frames of all ``runs`` (per-frame arrays, ms)."""
    names = [name for name in runs[0] if all(name in stages for stages in runs)]
    return {name: latency_stats(np.concatenate([np.asarray(stages[name], np.float64) for stages in runs]))
            for name in names}


def format_pooled(pooled: dict[str, dict[str, float]], results: list[dict], title: str = "") -> str:
    """The pooled latency table with each run's p99 beside it (``title``: which runs these are)."""
    labels = results[0]["latency_labels"]
    header = ["latency (ms), all runs", "n", "p50", "p90", "p99", "max", "p99 per run"]
    rows = [[labels[k], str(v["n"]), _f(v["p50"]), _f(v["p90"]), _f(v["p99"]), _f(v["max"]),
             " ".join(_f(r["latency_ms"][k]["p99"]) for r in results)] for k, v in pooled.items()]
    return (f"{len(results)} runs of {results[0]['duration_s']:.0f} s pooled" + (f" ({title})" if title else "")
            + "\n\n" + format_table(header, rows))


def _measure(args, bag, scenario, model, composed, extra, prefixes, domain_id, env) -> tuple[dict, dict]:
    """One run: start the graph, measure, stop it. Returns (result, per-frame latencies ms by stage)."""
    from tqdm import tqdm

    from avi_ht_ros import demo
    from avi_ht_ros.graph import GraphProcesses, sim_graph
    from avi_ht_ros.nodes.graph_probe import GraphProbe

    progress = not args.no_progress
    logs = pathlib.Path(tempfile.mkdtemp(prefix="avi_ht_bench_graph_"))
    # with the sync node in the fusion process, a probe subscribed to the synchronized frames would make
    # the sync node build and send them (~300 kB each) for the probe alone: no sync stage then
    probe = GraphProbe(args.side, timing=True, synced_frames=not composed)
    fusion = {"hand_scale": round(scenario.hand_scales[args.side], 4)} if args.side in scenario.hand_scales else {}
    fusion["inference_backend"] = args.inference_backend
    # the nodes log when they published each frame's pose and command (unless --param names other files)
    fusion["latency_log"] = str(logs / "fusion_latency.csv")
    extra["fusion_node"] = {**fusion, **extra.get("fusion_node", {})}
    extra["retarget_node"] = {"latency_log": str(logs / "retarget_latency.csv"), **extra.get("retarget_node", {})}
    specs = [dataclasses.replace(spec, prefix=prefixes.get(spec.executable, ()))
             for spec in sim_graph(bag, args.side, model_path=model, glove_latency_s=args.glove_latency, extra=extra,
                                   composed=composed)]
    graph = GraphProcesses(specs, logs, env)

    def check() -> None:
        if graph.failed():
            raise demo.DemoFailed(f"node(s) exited: {', '.join(graph.failed())}")

    codes: dict[str, int] = {}
    try:
        started = time.monotonic()
        graph.start()
        print(f"[bench graph] {len(graph.specs)} node processes (ROS_DOMAIN_ID {domain_id}, logs {logs}); "
              f"scenario {bag} ({scenario.duration_s:.1f} s loop)", file=sys.stderr)
        if not probe.spin_until(lambda: len(probe.poses) >= 10, args.startup_timeout, check):
            raise demo.DemoFailed(f"no hand poses within {args.startup_timeout:.0f} s (logs: {logs})")
        startup_s = time.monotonic() - started
        probe.spin_until(lambda: False, args.warmup, check)
        before = {name: {**status.values, "_receive_ns": status.receive_ns}
                  for name, status in probe.diagnostics.items()}
        probe.clear()
        sampler = ProcessSampler({s.executable: p.pid for s, p in zip(graph.specs, graph.processes)}).start()
        t0_ns = time.time_ns()
        bar = tqdm(total=args.duration, desc="bench graph", unit="s", disable=not progress, file=sys.stderr,
                   mininterval=0.5, dynamic_ncols=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s")
        shown = [0.0]

        def tick() -> None:
            elapsed = (time.time_ns() - t0_ns) / 1e9
            if elapsed - shown[0] >= 0.5:
                bar.update(min(elapsed, args.duration) - shown[0])
                shown[0] = min(elapsed, args.duration)

        try:
            probe.spin_until(lambda: time.time_ns() - t0_ns >= args.duration * 1e9, args.duration + 5.0, check, tick)
        finally:
            bar.close()
        measured_s = (time.time_ns() - t0_ns) / 1e9
        usage = sampler.sample()
        probe.recording = False
        probe.spin_for(1.2)                      # the next diagnostics (1 Hz) close the interval
        after = {name: {**status.values, "_receive_ns": status.receive_ns}
                 for name, status in probe.diagnostics.items()}
        load = load_average()
    finally:
        codes = graph.stop(timeout_s=20.0)
        probe.close()

    window = (t0_ns, t0_ns + int(measured_s * 1e9))
    in_window = lambda stamps: {s: r for s, r in stamps.items() if window[0] <= s < window[1]}   # noqa: E731
    poses, synced, infos = in_window(probe.poses), in_window(probe.synced), in_window(probe.camera_infos)
    gloves = in_window(probe.glove)
    stages = stage_latencies(poses, synced, None, np.asarray(probe.command_receive_ns, np.int64))
    # the camera's own share (the probe takes the small camera info, not the image, to spare the CPU)
    stages = {"camera_info": np.array([infos[s] - s for s in sorted(infos)], np.float64) / 1e6,
              # the glove's share: a frame waits for the glove sample nearest its stamp
              "glove": np.array([r - s for s, r in sorted(gloves.items())], np.float64) / 1e6, **stages}
    stages.update(published_latencies({"pose_published": extra["fusion_node"]["latency_log"],
                                       "command_published": extra["retarget_node"]["latency_log"]}, window))
    latency = {name: latency_stats(values) for name, values in stages.items()}
    expected_frames = int(round(measured_s * 1e9 / scenario.frame_period_ns))
    camera_stamps = set(infos)

    def diag(kind: str, table: dict) -> dict | None:
        found = [v for name, v in table.items() if kind in name]
        return found[0] if found else None

    sync_end, sync_start = diag("glove/camera sync", after), diag("glove/camera sync", before)
    fusion_end, fusion_start = diag("hand fusion", after), diag("hand fusion", before)
    camera_end, camera_start = diag(": camera", after), diag(": camera", before)
    # node counters come once a second: their deltas cover the interval between two diagnostics,
    # which brackets the measured window; rates are taken over that interval
    diag_interval_s = _delta(camera_end, camera_start, "_receive_ns") / 1e9
    camera_published = _delta(camera_end, camera_start, "frames")
    result = {
        "duration_s": measured_s, "startup_s": startup_s, "scenario": str(bag), "model": model,
        "glove_latency_s": args.glove_latency, "ros_domain_id": domain_id, "load_average": list(load),
        "processes_layout": "sync_fusion_node (one process)" if composed else "sync_node + fusion_node",
        "prefixes": {executable: " ".join(argv) for executable, argv in prefixes.items()},
        "latency_ms": latency, "latency_labels": {k: STAGES[k] for k in latency},
        "rates_hz": {"camera": camera_published / diag_interval_s if np.isfinite(camera_published)
                     and diag_interval_s > 0 else len(infos) / measured_s,
                     "camera_nominal": 1e9 / scenario.frame_period_ns,
                     "glove": len(gloves) / measured_s,
                     # composed: the sync node's own count (nothing to receive), over its diagnostics interval
                     "synced_frames": len(synced) / measured_s if not composed else
                     _delta(sync_end, sync_start, "published") / (_delta(sync_end, sync_start, "_receive_ns") / 1e9),
                     "poses": len(poses) / measured_s, "joint_commands": len(probe.command_receive_ns) / measured_s},
        "frames": {"expected": expected_frames,
                   "node_counter_interval_s": diag_interval_s,
                   "camera_published": camera_published * measured_s / diag_interval_s
                   if diag_interval_s > 0 else float("nan"),
                   "camera_info_received_by_probe": len(infos),
                   "poses": len(poses),
                   "without_pose": max(expected_frames - len(poses), 0),
                   "sync_dropped": _delta(sync_end, sync_start, "frames_dropped_no_imu")
                   + _delta(sync_end, sync_start, "frames_dropped_too_few"),
                   "sync_partial_windows": _delta(sync_end, sync_start, "frames_partial"),
                   "fusion_skipped_stale": _delta(fusion_end, fusion_start, "dropped_frames"),
                   # frames whose vision half ran while they waited for their glove window
                   "fusion_vision_prefetched": _delta(fusion_end, fusion_start, "vision_prefetched"),
                   "poses_of_received_camera_frames": len(camera_stamps & set(poses))},
        "fusion_node_reported": {k: (fusion_end or {}).get(k) for k in ("input_latency_ms_p50", "input_latency_ms_p99",
                                                                          "latency_ms_p50", "latency_ms_p99",
                                                                          "inference_ms_p50", "inference_ms_p99",
                                                                          "inference_backend")},
        "processes": {name: {"cpu_percent": u.cpu_percent, "rss_mb": u.rss_mb, "peak_rss_mb": u.peak_rss_mb,
                             "scheduling": u.scheduling}
                      for name, u in usage.items()},
        "exit_codes": codes,
    }
    return result, stages


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _f(value, pattern: str = "{:.2f}") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return pattern.format(number) if np.isfinite(number) else "n/a"


def format_result(result: dict) -> str:
    rates, frames = result["rates_hz"], result["frames"]
    lines = [f"avi-ht bench graph: {result['duration_s']:.1f} s measured after {result['startup_s']:.1f} s start-up; "
             f"camera {rates['camera_nominal']:.0f} Hz + glove 200 Hz (simulated, serial protocol over a pty), "
             f"glove data age {1e3 * result['glove_latency_s']:.0f} ms; sync + fusion: {result['processes_layout']}; "
             + "".join(f"{e} under '{c}'; " for e, c in result.get("prefixes", {}).items()) +
             f"load average "
             + " ".join(f"{x:.2f}" for x in result["load_average"]), ""]
    rows = [[result["latency_labels"][k], str(v["n"]), _f(v["p50"]), _f(v["p90"]), _f(v["p99"]), _f(v["max"])]
            for k, v in result["latency_ms"].items()]
    lines += [format_table(["latency (ms)", "n", "p50", "p90", "p99", "max"], rows), ""]
    reported = result["fusion_node_reported"]
    lines += [f"fusion_node itself (last 600 frames): camera stamp -> synchronized frame in the node p50 "
              f"{_f(reported.get('input_latency_ms_p50'))} / p99 {_f(reported.get('input_latency_ms_p99'))} ms, "
              f"-> pose published p50 {_f(reported['latency_ms_p50'])} / p99 {_f(reported['latency_ms_p99'])}"
              f" ms, inference p50 {_f(reported['inference_ms_p50'])} / p99 {_f(reported['inference_ms_p99'])} ms"
              f" ({reported.get('inference_backend') or 'backend not reported'})", ""]
    pose_share = rates["poses"] / rates["camera"] if rates["camera"] else float("nan")
    lines += [f"rates (Hz): camera {_f(rates['camera'], '{:.1f}')}, glove {_f(rates['glove'], '{:.1f}')}, "
              f"synced frames {_f(rates['synced_frames'], '{:.1f}')}, poses {_f(rates['poses'], '{:.1f}')} "
              f"({_f(100 * pose_share, '{:.0f}')} % of the camera rate), joint commands "
              f"{_f(rates['joint_commands'], '{:.1f}')}",
              f"frames: {frames['expected']} expected, {frames['poses']} poses, {frames['without_pose']} without a "
              f"pose; node counters over {_f(frames['node_counter_interval_s'], '{:.1f}')} s: sync dropped "
              f"{_f(frames['sync_dropped'], '{:.0f}')}, partial windows {_f(frames['sync_partial_windows'], '{:.0f}')}"
              f", fusion skipped stale frames {_f(frames['fusion_skipped_stale'], '{:.0f}')}, vision half run "
              f"while waiting for the glove {_f(frames['fusion_vision_prefetched'], '{:.0f}')}", ""]
    processes = result["processes"]
    rows = [[name, _f(v["cpu_percent"], "{:.1f}"), _f(v["rss_mb"], "{:.0f}"), _f(v["peak_rss_mb"], "{:.0f}"),
             v.get("scheduling") or "?"] for name, v in processes.items()]
    rows.append(["total", _f(sum(v["cpu_percent"] for v in processes.values()), "{:.1f}"),
                 _f(sum(v["rss_mb"] for v in processes.values()), "{:.0f}"), "", ""])
    lines += [format_table(["node process", "CPU % (one core)", "RSS MB", "peak RSS MB", "scheduling"], rows)]
    bad = {k: v for k, v in result["exit_codes"].items() if v != 0}
    lines += ["", "clean shutdown (every node exited 0 on SIGINT)" if not bad else f"exit codes: {bad}"]
    return "\n".join(lines)
