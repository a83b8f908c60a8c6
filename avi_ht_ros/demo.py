"""``avi-ht demo``: the whole system on the simulated camera and glove, recorded and reported.

1. **Scenario**: a synthetic egocentric camera + 12-IMU glove sequence (default 20 s, heavy
   occlusion phases, right hand, seed 5000 — outside the training seeds 0–99 and the
   held-out benchmark seeds 100000+), simulated once and cached under
   ``~/.cache/avi_ht_ros/scenarios`` (keyed by the world config, the seed and the simulator's
   sources), or ``--scenario BAG``.
2. **Live graph**: ``recorder_node`` first, then the real node processes of ``sim.launch.py``
   (:func:`avi_ht_ros.graph.sim_graph`: simulated camera, the simulated glove through its
   serial protocol over a pseudo-terminal with ``--glove-latency`` of data age, synchronizer
   with the online offset estimate, fusion with ``--model``, retargeting to the shipped robot
   hand), talking over DDS in their own ROS domain. The simulated sources loop over the
   scenario on the wall clock; once the graph produces poses the demo waits for the next
   loop start and runs one whole scenario (the *window*), then stops every node with SIGINT
   (the recorder last: it writes everything it received).
3. **Report** (:mod:`avi_ht_ros.demo_report`): the recorded bag is read back; the live fusion
   output is scored against the ground truth; the vision-only model (``--baseline-model``)
   and the fusion model are run offline through the same tracker code on the recorded
   frames and glove samples; latencies, the time offset, message counts, figures and a
   picture strip go to ``report.md`` / ``report.json`` in ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import os
import pathlib
import sys
import time

import numpy as np

from avi_ht_ros.common import topics
from avi_ht_ros.common.errors import AviHtError, ConfigError

DEFAULT_SEED = 5000
DEFAULT_DURATION_S = 20.0
DEFAULT_OCCLUSION = "heavy"
DEFAULT_GLOVE_LATENCY_S = 0.02   # < the synchronizer's max_wait_s (30 ms): frames wait for their glove data
RECORDER_DRAIN_S = 1.0      # the window's last frames still travel through the graph


def demo_topics(side: str, composed: bool = True) -> tuple[str, ...]:
    """What the demo records: the raw streams plus every stage's output (the synchronized frames
    only from a separate sync node: in ``sync_fusion_node`` they are a function call, and
    subscribing to them would make the sync node build ~300 kB per frame for the recorder alone)."""
    hand = [topics.GLOVE_SAMPLES, *([] if composed else [topics.SYNCED_FRAME]), topics.HAND_POSE,
            topics.HAND_GROUND_TRUTH, topics.TIME_OFFSET, topics.ROBOT_JOINT_COMMANDS, topics.PINCH_EVENTS]
    return (topics.IMAGE, topics.CAMERA_INFO, *(topics.hand_topic(side, name) for name in hand),
            topics.TF, topics.TF_STATIC, topics.DIAGNOSTICS)


# ==========================================================================================
# Scenario
# ==========================================================================================

def cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return pathlib.Path(base) / "avi_ht_ros" / "scenarios"


def _simulator_digest(config) -> str:
    """Digest of everything that shapes a simulated bag: the simulator's sources and the config files it reads."""
    from avi_ht_ros.common.paths import config_path

    package = pathlib.Path(__file__).resolve().parent
    files = [*(package / "sim").glob("*.py"), *(package / "common").glob("*.py"),
             package / "io" / "convert.py", package / "io" / "messages.py"]
    files += [config_path(name) for name in (config.camera_config, config.glove_config, config.imu_noise_config)]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def world_config(duration_s: float, occlusion: str, side: str):
    from avi_ht_ros.sim.world import load_world_config

    return load_world_config().with_occlusion(occlusion).replace(duration_s=float(duration_s), sides=(side,))


def scenario_bag(duration_s: float = DEFAULT_DURATION_S, seed: int = DEFAULT_SEED,
                 occlusion: str = DEFAULT_OCCLUSION, side: str = "right", directory: pathlib.Path | None = None,
                 progress: bool = True) -> tuple[pathlib.Path, bool]:
    """The simulated scenario bag (simulated now, or reused from the cache); ``(path, reused)``."""
    import yaml

    from avi_ht_ros.sim.world import SequenceSimulator

    config = world_config(duration_s, occlusion, side)
    if directory is None:
        key = hashlib.sha256(yaml.safe_dump({"world": config.to_dict(), "seed": seed}).encode()
                             + _simulator_digest(config).encode()).hexdigest()[:16]
        directory = cache_root() / f"{seed}-{key}"
    path = pathlib.Path(directory) / f"seq_{seed}"
    if (path / "metadata.yaml").is_file():
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    with tqdm(total=config.num_frames, unit="frame", desc="simulate scenario", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        SequenceSimulator(config, seed).write_bag(path, progress=bar.update)
    return path, False


@dataclasses.dataclass(frozen=True)
class ScenarioInfo:
    path: str
    seed: int
    world: dict                 # the bag's /sim/config world
    loop_start_ns: int          # the simulated sources loop over [start, start + duration)
    loop_duration_ns: int
    frame_period_ns: int
    frames: int
    hand_scales: dict           # side -> the simulated hand's size (1 = reference hand)

    @property
    def duration_s(self) -> float:
        return self.loop_duration_ns / 1e9


def scenario_info(bag: str | os.PathLike) -> ScenarioInfo:
    """The loop the simulated camera replays (as :class:`~avi_ht_ros.driver.camera_source.SimBagSource`)."""
    import yaml

    from avi_ht_ros.io.bag import read_messages, read_serialized
    from avi_ht_ros.live_stats import header_stamp_ns

    stamps = np.array(sorted(header_stamp_ns(raw) for _, _, _, raw in read_serialized(bag, [topics.CAMERA_INFO])),
                      np.int64)
    if stamps.size < 2:
        raise AviHtError(f"{bag}: not a simulated scenario (no {topics.CAMERA_INFO})")
    from avi_ht_ros.sim.world import SIM_CONFIG_TOPIC

    doc = {}
    for message in read_messages(bag, [SIM_CONFIG_TOPIC]):
        doc = yaml.safe_load(message.msg.data) or {}
    scales = {}
    for side in topics.SIDES:     # the hand size is constant over a sequence: the first message tells
        for message in read_messages(bag, [topics.hand_topic(side, topics.HAND_GROUND_TRUTH)]):
            scales[side] = float(message.msg.pose.hand_scale)
            break
    period = int(np.median(np.diff(stamps)))
    return ScenarioInfo(str(bag), int(doc.get("seed", -1)), dict(doc.get("world", {})), int(stamps[0]),
                        int(stamps[-1] - stamps[0]) + period, period, int(stamps.size), scales)


# ==========================================================================================
# The live run
# ==========================================================================================

def choose_domain_id() -> int:
    """ROS_DOMAIN_ID of the run: the environment's, else one of our own (no cross-talk)."""
    if os.environ.get("ROS_DOMAIN_ID", "").strip():
        return int(os.environ["ROS_DOMAIN_ID"])
    return 1 + os.getpid() % 100


def graph_environment(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")
    return env


def default_model(name: str) -> str:
    from avi_ht_ros.common.paths import share_path

    try:
        return str(share_path("models", name))
    except ConfigError:
        return str(pathlib.Path("models") / name)    # named in the error below


def check_checkpoint(path: str, option: str) -> str:
    if not pathlib.Path(path).is_file():
        raise ConfigError(option, f"{path}: no such checkpoint (the shipped models/avi_ht.pt and "
                                  f"models/vision_only.pt come from `avi-ht train`, docs/TRAINING.md; "
                                  f"or pass --model/--baseline-model)")
    return str(pathlib.Path(path).resolve())


@dataclasses.dataclass
class LiveRun:
    recorded_bag: str
    window_start_ns: int
    window_end_ns: int
    domain_id: int
    exit_codes: dict[str, int]
    startup_s: float
    waited_s: float
    wall_s: float
    cpu: dict[str, dict]            # per node over the window: cpu_percent, rss_mb, peak_rss_mb
    log_dir: str
    live_pose_count: int


class DemoFailed(AviHtError):
    pass


def run_live(scenario: ScenarioInfo, side: str, model: str, out: pathlib.Path, glove_latency_s: float,
             startup_timeout_s: float = 240.0, progress: bool = True, log=print, composed: bool = True) -> LiveRun:
    """Recorder + graph, one scenario loop recorded; every process stopped before returning."""
    from tqdm import tqdm

    from avi_ht_ros.graph import GraphProcesses, NodeProcessSpec, sim_graph
    from avi_ht_ros.io.recorder import LATCHED_TOPICS, RAW_TOPICS
    from avi_ht_ros.live_stats import ProcessSampler

    domain_id = choose_domain_id()
    env = graph_environment(domain_id)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)          # the probe in this process joins the same domain
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from avi_ht_ros.nodes.graph_probe import GraphProbe

    bag = out / "recording"
    logs = out / "logs"
    started = time.monotonic()
    probe = GraphProbe(side)
    recorder = GraphProcesses([NodeProcessSpec("recorder_node", "recorder", "", (
        ("output", str(bag)), ("topics", list(demo_topics(side, composed)))))], logs, env)
    # the fusion node gets the user's hand size, as a user calibrates it once (the offline runs get the same)
    fusion = {"hand_scale": round(scenario.hand_scales[side], 4)} if side in scenario.hand_scales else {}
    graph = GraphProcesses(sim_graph(scenario.path, side, model_path=model, glove_latency_s=glove_latency_s,
                                     extra={"fusion_node": fusion}, composed=composed), logs, env)
    codes: dict[str, int] = {}

    def check() -> None:
        failed = recorder.failed() + graph.failed()
        if failed:
            raise DemoFailed(f"node(s) exited: {', '.join(failed)}")

    try:
        recorder.start()
        log(f"[demo] ROS_DOMAIN_ID={domain_id}; recorder -> {bag}")
        if not probe.spin_until(lambda: probe.status("rosbag2 recorder") is not None, 60.0, check):
            raise DemoFailed(f"the recorder did not come up within 60 s (log: {logs})")
        graph.start()
        log(f"[demo] graph started: {', '.join(s.executable for s in graph.specs)} (logs: {logs})")
        bar = tqdm(total=None, desc="graph start-up (import, load model, discovery)", unit="pose", mininterval=1.0,
                   disable=not progress, file=sys.stderr, dynamic_ncols=True, bar_format="{desc}: {elapsed}")
        try:
            if not probe.spin_until(lambda: len(probe.poses) >= 10, startup_timeout_s, check,
                                    tick=lambda: bar.update(0)):
                raise DemoFailed(f"no hand poses within {startup_timeout_s:.0f} s (logs: {logs})")
        finally:
            bar.close()
        # every raw stream subscribed by the recorder before the window is chosen (its discovery
        # runs on a timer: a starved machine may subscribe camera info or ground truth later)
        raw = (set(RAW_TOPICS) - set(LATCHED_TOPICS)) & set(demo_topics(side, composed))

        def recorder_has_raw_topics() -> bool:
            status = probe.status("rosbag2 recorder")
            return status is not None and not raw & set(str(status.values.get("waiting_for", "")).split(","))

        if not probe.spin_until(recorder_has_raw_topics, 60.0, check):
            log(f"[demo] warning: the recorder still waits for some of {sorted(raw)} (see the report's loss checks)")
        startup_s = time.monotonic() - started
        # one whole scenario: from the next loop start (both simulated sources loop on the wall clock)
        # (live stamp of the scenario's first frame = loop index x loop duration: sim_loop_time)
        now = time.time_ns()
        loop = scenario.loop_duration_ns
        start_ns = -(-now // loop) * loop
        end_ns = start_ns + loop
        waited_s = max(0.0, (start_ns - now) / 1e9)
        log(f"[demo] graph up after {startup_s:.1f} s; the scenario restarts in {waited_s:.1f} s, "
            f"then runs {loop / 1e9:.1f} s")
        probe.spin_until(lambda: time.time_ns() >= start_ns, waited_s + 5.0, check)
        sampler = ProcessSampler({s.executable: p.pid for s, p in zip(graph.specs, graph.processes)}
                                 | {"recorder_node": recorder.processes[0].pid}).start()
        poses_before = len(probe.poses)
        bar = tqdm(total=round(loop / 1e9, 1), desc="live run", unit="s", disable=not progress, file=sys.stderr,
                   mininterval=0.5, dynamic_ncols=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s "
                                                  "[{elapsed}<{remaining}{postfix}]")
        shown = [0.0]

        def tick() -> None:
            elapsed = min(max(time.time_ns() - start_ns, 0) / 1e9, loop / 1e9)
            if elapsed - shown[0] >= 0.2:
                bar.update(elapsed - shown[0])
                shown[0] = elapsed
                fusion = probe.status("hand fusion")
                bar.set_postfix_str(f"poses {len(probe.poses) - poses_before}"
                                    + (f", fusion {fusion.values.get('rate_hz', '?')} Hz, dropped "
                                       f"{fusion.values.get('dropped_frames', '?')}" if fusion else ""), refresh=False)

        try:
            probe.spin_until(lambda: time.time_ns() >= end_ns + RECORDER_DRAIN_S * 1e9,
                             loop / 1e9 + RECORDER_DRAIN_S + 5.0, check, tick)
            bar.update(max(0.0, loop / 1e9 - shown[0]))
        finally:
            bar.close()
        usage = sampler.sample()
        live_poses = sum(1 for s in probe.poses if start_ns <= s < end_ns)
    finally:
        codes.update(graph.stop(timeout_s=20.0))
        codes.update({f"recorder ({k})": v for k, v in recorder.stop(timeout_s=180.0).items()})
        probe.close()
    cpu = {name: {"cpu_percent": u.cpu_percent, "rss_mb": u.rss_mb, "peak_rss_mb": u.peak_rss_mb}
           for name, u in usage.items()}
    return LiveRun(str(bag), start_ns, end_ns, domain_id, codes, startup_s, waited_s, time.monotonic() - started,
                   cpu, str(logs), live_poses)


# ==========================================================================================
# Command line
# ==========================================================================================

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="report folder (default out/demo-<date>-<time>; must not exist)")
    parser.add_argument("--model", default=None, help="fusion checkpoint (default: the shipped models/avi_ht.pt)")
    parser.add_argument("--baseline-model", default=None,
                        help="vision-only checkpoint compared offline (default: the shipped models/vision_only.pt)")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="scenario length, s (default 20)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="scenario seed (default 5000)")
    parser.add_argument("--occlusion", choices=("low", "medium", "heavy"), default=DEFAULT_OCCLUSION,
                        help="occluder preset (default heavy)")
    parser.add_argument("--side", choices=topics.SIDES, default="right", help="gloved hand (default right)")
    parser.add_argument("--scenario", default=None, metavar="BAG",
                        help="replay this `avi-ht simulate` bag instead (--duration/--seed/--occlusion ignored)")
    parser.add_argument("--no-cache", action="store_true",
                        help="simulate the scenario into the report folder instead of the cache")
    parser.add_argument("--glove-latency", type=float, default=DEFAULT_GLOVE_LATENCY_S,
                        help="age of the simulated glove's data at transmission, s: a camera-glove offset the "
                             "synchronizer estimates online (default 0.02)")
    parser.add_argument("--startup-timeout", type=float, default=240.0, help="longest wait for the first poses, s")
    parser.add_argument("--strip-frames", type=int, default=8, help="frames in the picture strip (default 8)")
    parser.add_argument("--video", action="store_true", help="also write demo.mp4 (camera view with overlays)")
    parser.add_argument("--separate-sync", action="store_true",
                        help="run sync_node and fusion_node as two processes (default: one sync_fusion_node, as the "
                        "launch files start them)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from avi_ht_ros import demo_report

    wall_start = time.monotonic()
    progress = not args.no_progress
    if args.duration < 2.0:
        raise ConfigError("--duration", f"must be >= 2 s, got {args.duration}")
    if not 0.0 <= args.glove_latency <= 0.5:
        raise ConfigError("--glove-latency", f"must be in [0, 0.5] s, got {args.glove_latency}")
    model = check_checkpoint(args.model or default_model("avi_ht.pt"), "--model")
    baseline = check_checkpoint(args.baseline_model or default_model("vision_only.pt"), "--baseline-model")
    out = pathlib.Path(args.out or pathlib.Path("out") / datetime.datetime.now().strftime("demo-%Y%m%d-%H%M%S"))
    if out.exists() and any(out.iterdir()):
        raise ConfigError("--out", f"{out}: exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()

    print(f"[demo] report folder {out}")
    t0 = time.monotonic()
    if args.scenario:
        bag, reused = pathlib.Path(args.scenario).resolve(), True
    else:
        bag, reused = scenario_bag(args.duration, args.seed, args.occlusion, args.side,
                                   out / "scenario" if args.no_cache else None, progress)
    scenario = scenario_info(bag)
    simulate_s = time.monotonic() - t0
    print(f"[demo] scenario {bag} ({'reused' if reused else f'simulated in {simulate_s:.0f} s'}): "
          f"{scenario.frames} frames, {scenario.duration_s:.1f} s, seed {scenario.seed}, "
          f"occlusion {args.occlusion if not args.scenario else 'as recorded'}")
    if args.side not in scenario.world.get("sides", [args.side]):
        raise ConfigError("--side", f"the scenario has no {args.side} hand (sides {scenario.world.get('sides')})")

    live = run_live(scenario, args.side, model, out, args.glove_latency, args.startup_timeout, progress,
                    composed=not args.separate_sync)
    bad = {name: code for name, code in live.exit_codes.items() if code != 0}
    print(f"[demo] graph stopped ({'clean' if not bad else f'exit codes {bad}'}); analysing the recording")
    timing = {"simulate_s": simulate_s, "scenario_reused": reused, "graph_startup_s": live.startup_s,
              "wait_for_scenario_start_s": live.waited_s, "live_wall_s": live.wall_s}
    report = demo_report.write_report(out, scenario, live, side=args.side, model=model, baseline_model=baseline,
                                      glove_latency_s=args.glove_latency, timing=timing,
                                      strip_frames=args.strip_frames, video=args.video, progress=progress,
                                      wall_start=wall_start)
    print(demo_report.summary_text(report))
    return 0 if not bad and not report["recording"]["write_error"] else 1


if __name__ == "__main__":  # python -m avi_ht_ros.demo ...
    parser = argparse.ArgumentParser(prog="avi-ht demo")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
