"""The whole graph on simulated sources: camera and glove replay a synthetic scenario end to end.

    ros2 launch avi_ht_ros sim.launch.py                 # generates the default scenario on first use
    ros2 launch avi_ht_ros sim.launch.py sim_bag:=/path/to/seq rviz:=false

The simulated glove speaks the binary glove protocol through a pseudo-terminal, so the driver's
serial path runs as with hardware. Without sim_bag, the default demo scenario (20 s, heavy
occlusion phases, seed 7) is generated once into ~/.cache/avi_ht_ros/sim with `avi-ht simulate`.
"""
import os
import pathlib

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction,
                            RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

DEFAULT_SCENARIO = pathlib.Path(os.path.expanduser("~/.cache/avi_ht_ros/sim/demo"))
DEFAULT_SEED = 7


def _graph(context, sim_bag):
    return [IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("avi_ht_ros"), "launch",
                                                            "teleop.launch.py"])),
        launch_arguments={"camera_source": "sim", "sim_bag": str(sim_bag),
                          "sim_glove_latency_s": LaunchConfiguration("sim_glove_latency_s"),
                          "rviz": LaunchConfiguration("rviz"), "model_path": LaunchConfiguration("model_path"),
                          "composed": LaunchConfiguration("composed"),
                          "realtime_priority": LaunchConfiguration("realtime_priority"),
                          "right": "true", "left": "false"}.items())]


def _start(context):
    given = LaunchConfiguration("sim_bag").perform(context)
    if given:
        return _graph(context, given)
    bag = DEFAULT_SCENARIO / f"seq_{DEFAULT_SEED}"
    if bag.exists():
        return _graph(context, bag)
    simulate = ExecuteProcess(cmd=["avi-ht", "simulate", "--out", str(DEFAULT_SCENARIO), "--sequences", "1",
                                   "--duration", "20", "--seed", str(DEFAULT_SEED), "--occlusion", "heavy"],
                              output="screen")
    return [simulate, RegisterEventHandler(OnProcessExit(target_action=simulate,
                                                         on_exit=lambda event, ctx: _graph(ctx, bag)))]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("sim_bag", default_value="", description="scenario bag ('' = default demo)"),
        DeclareLaunchArgument("sim_glove_latency_s", default_value="0.03",
                              description="glove data age: a camera-glove offset the synchronizer estimates"),
        DeclareLaunchArgument("model_path", default_value="", description="fusion model ('' = shipped)"),
        DeclareLaunchArgument("composed", default_value="true",
                              description="synchronizer and fusion in one process (false: two processes)"),
        DeclareLaunchArgument("realtime_priority", default_value="30",
                              description="SCHED_FIFO priority of the node processes (0 = normal scheduling)"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
        OpaqueFunction(function=_start),
    ])
