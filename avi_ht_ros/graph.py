"""Start the node graph as separate processes, without ``ros2 launch``.

``ros2 launch avi_ht_ros sim.launch.py`` is how a ROS 2 install starts the
graph. Where ``launch`` is not available (ROS from PyPI wheels) the demo, the
graph benchmark and the integration test start the *same installed
executables* with the *same parameter files* here: one process per node,
real DDS traffic between them. :func:`sim_graph` mirrors ``sim.launch.py``
(a static test checks they name the same executables and parameter files).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import time

from avi_ht_ros.common.errors import AviHtError
from avi_ht_ros.common.paths import share_path

#: what a node process does on this signal: print every thread's stack to stderr and run on
#: (``avi_ht_ros.nodes.base.run_node``); :meth:`GraphProcesses.stop` sends it to a hung node
STACK_DUMP_SIGNAL = signal.SIGUSR1


@dataclasses.dataclass(frozen=True)
class NodeProcessSpec:
    executable: str
    name: str | None          # node name remap; None for a process running several nodes (their own names)
    namespace: str = ""
    parameters: tuple[tuple[str, object], ...] = ()
    prefix: tuple[str, ...] = ()  # command the executable runs under, e.g. ("taskset", "-c", "1") (launch_ros: prefix=)

    @property
    def label(self) -> str:
        """``namespace/name`` (the executable's name where the nodes keep their own)."""
        return f"{self.namespace}/{self.name or self.executable}"

    def command(self) -> list[str]:
        from avi_ht_ros.nodes.params_cli import config_files

        args = [*self.prefix, str(executable_path(self.executable)), "--ros-args"]
        if self.name:
            args += ["-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:=/{self.namespace}"]
        for name in config_files(self.executable):
            args += ["--params-file", str(share_path("config", name))]
        for key, value in self.parameters:
            args += ["-p", f"{key}:={_ros_value(value)}"]
        return args


def _ros_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_value(v) for v in value) + "]"
    return repr(value)


def executable_path(executable: str) -> pathlib.Path:
    """``lib/avi_ht_ros/<executable>`` of the installed package (what ``ros2 run`` starts)."""
    from ament_index_python.packages import get_package_prefix

    path = pathlib.Path(get_package_prefix("avi_ht_ros")) / "lib" / "avi_ht_ros" / executable
    if not path.is_file():
        raise AviHtError(f"{path}: executable not installed (run scripts/setup_env.sh)")
    return path


def sim_graph(sim_bag: str | os.PathLike, side: str = "right", model_path: str = "", glove_latency_s: float = 0.03,
              extra: dict[str, dict[str, object]] | None = None, composed: bool = True) -> list[NodeProcessSpec]:
    """The nodes of ``sim.launch.py`` for one hand (``extra``: more parameters per node executable;
    ``composed``: the sync and fusion nodes in one ``sync_fusion_node`` process, as the launch files
    start them by default, else as two processes)."""
    extra = extra or {}
    bag = str(sim_bag)

    def params(executable: str, **values) -> dict:
        values.update(extra.get(executable, {}))
        return values

    sync = params("sync_node", side=side)
    fusion = params("fusion_node", side=side, model_path=model_path)
    if composed:
        shared = {k: sync[k] for k in sync.keys() & fusion.keys() if sync[k] != fusion[k]}
        if shared:
            raise AviHtError(f"sync_fusion_node: sync and fusion parameters differ in {sorted(shared)}")
        tracking = [NodeProcessSpec("sync_fusion_node", None, side, tuple({**sync, **fusion}.items()))]
    else:
        tracking = [NodeProcessSpec("sync_node", "glove_camera_sync", side, tuple(sync.items())),
                    NodeProcessSpec("fusion_node", "hand_fusion", side, tuple(fusion.items()))]
    return [
        NodeProcessSpec("camera_node", "head_camera", "", tuple(params("camera_node", source="sim",
                                                                       sim_bag=bag).items())),
        NodeProcessSpec("glove_driver_node", "glove_driver", side,
                        tuple(params("glove_driver_node", side=side, sim_bag=bag,
                                     sim_latency_s=glove_latency_s).items())),
        *tracking,
        NodeProcessSpec("retarget_node", "retarget", side,
                        tuple(params("retarget_node", side=side,
                                     config="retarget_avi_hand_16dof.yaml" if side == "right"
                                     else "retarget_avi_hand_16dof_left.yaml").items())),
    ]


class GraphProcesses:
    """The graph's processes: started together, stopped with SIGINT (clean rclpy shutdown)."""

    def __init__(self, specs: list[NodeProcessSpec], log_dir: str | os.PathLike, env: dict | None = None):
        self.specs = specs
        self.log_dir = pathlib.Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        self.processes: list[subprocess.Popen] = []

    def start(self) -> "GraphProcesses":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            log = open(self.log_dir / f"{spec.namespace or 'global'}_{spec.name or spec.executable}.log", "w")
            self.processes.append(subprocess.Popen(spec.command(), stdout=log, stderr=subprocess.STDOUT,
                                                   env=self.env, start_new_session=True))
        return self

    def failed(self) -> list[str]:
        """Nodes that exited (a node of the graph never exits on its own)."""
        return [f"{s.label} (exit {p.returncode}, log {self.log_dir})"
                for s, p in zip(self.specs, self.processes) if p.poll() is not None]

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGINT to every node; one still running ``timeout_s`` later is asked for its threads' stacks
        (they go to its log) and killed (exit code -9). Returns the exit codes by label."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        codes = {}
        for spec, process in zip(self.specs, self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # hung: every thread's stack into its log first (base.STACK_DUMP_SIGNAL), then kill
                process.send_signal(STACK_DUMP_SIGNAL)
                try:
                    process.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            codes[spec.label] = process.returncode
        return codes

    def __enter__(self) -> "GraphProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
