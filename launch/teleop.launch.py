"""Teleoperation graph: camera + per-hand glove driver, synchronizer, fusion, retargeting (+ RViz).

    ros2 launch avi_ht_ros teleop.launch.py                       # right hand, USB camera 0, glove on /dev/ttyACM0
    ros2 launch avi_ht_ros teleop.launch.py left:=true glove_port_left:=/dev/ttyACM1
    ros2 launch avi_ht_ros teleop.launch.py camera_source:=sim sim_bag:=/path/to/seq   # simulated sources

Per hand (namespace /right, /left): glove_driver_node, sync_node + fusion_node (in one
sync_fusion_node process unless composed:=false), retarget_node and a robot_state_publisher for
the robot hand. Parameters come from config/<executable>.yaml, with the
per-hand values overridden here.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "avi_ht_ros"


def config(name):
    return PathJoinSubstitution([FindPackageShare(PACKAGE), "config", name])


def hand_group(side, default_port, default_robot_config, default_urdf):
    enabled = LaunchConfiguration(side)
    sim_bag = LaunchConfiguration("sim_bag")
    urdf = LaunchConfiguration(f"robot_urdf_{side}")
    composed = LaunchConfiguration("composed")
    realtime_priority = LaunchConfiguration("realtime_priority")
    return [
        DeclareLaunchArgument(f"glove_port_{side}", default_value=default_port,
                              description=f"serial port of the {side} glove"),
        DeclareLaunchArgument(f"robot_config_{side}", default_value=default_robot_config,
                              description=f"retargeting config of the {side} robot hand"),
        DeclareLaunchArgument(f"robot_urdf_{side}",
                              default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "robots", default_urdf]),
                              description=f"URDF of the {side} robot hand (for robot_state_publisher)"),
        GroupAction(condition=IfCondition(enabled), actions=[
            PushRosNamespace(side),
            Node(package=PACKAGE, executable="glove_driver_node", name="glove_driver", output="screen",
                 parameters=[config("glove_driver_node.yaml"),
                             {"side": side, "serial.port": LaunchConfiguration(f"glove_port_{side}"),
                              "sim_bag": sim_bag, "sim_latency_s": LaunchConfiguration("sim_glove_latency_s"),
                              "realtime_priority": realtime_priority}]),
            # synchronizer + fusion: one process by default (frames handed over by a function call),
            # or two (composed:=false; the synchronized frames then cross DDS)
            Node(package=PACKAGE, executable="sync_fusion_node", output="screen", condition=IfCondition(composed),
                 parameters=[config("sync_node.yaml"), config("fusion_node.yaml"),
                             {"side": side, "time_offset_mode": LaunchConfiguration("time_offset_mode"),
                              "model_path": LaunchConfiguration("model_path"), "realtime_priority": realtime_priority}]),
            Node(package=PACKAGE, executable="sync_node", name="glove_camera_sync", output="screen",
                 condition=UnlessCondition(composed),
                 parameters=[config("sync_node.yaml"),
                             {"side": side, "time_offset_mode": LaunchConfiguration("time_offset_mode"),
                              "realtime_priority": realtime_priority}]),
            Node(package=PACKAGE, executable="fusion_node", name="hand_fusion", output="screen",
                 condition=UnlessCondition(composed),
                 parameters=[config("fusion_node.yaml"),
                             {"side": side, "model_path": LaunchConfiguration("model_path"),
                              "realtime_priority": realtime_priority}]),
            Node(package=PACKAGE, executable="retarget_node", name="retarget", output="screen",
                 parameters=[config("retarget_node.yaml"),
                             {"side": side, "config": LaunchConfiguration(f"robot_config_{side}"),
                              "realtime_priority": realtime_priority}]),
            Node(package="robot_state_publisher", executable="robot_state_publisher", name="robot_state_publisher",
                 namespace="robot",
                 parameters=[{"robot_description": ParameterValue(Command(["cat ", urdf]), value_type=str),
                              "frame_prefix": f"{side}_robot/"}]),
        ]),
    ]


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("right", default_value="true", description="track the right hand"),
        DeclareLaunchArgument("left", default_value="false", description="track the left hand"),
        DeclareLaunchArgument("camera_source", default_value="device",
                              description="device | video | folder | sim"),
        DeclareLaunchArgument("camera_device", default_value="0", description="OpenCV device index or path"),
        DeclareLaunchArgument("video_path", default_value="", description="video file (camera_source:=video)"),
        DeclareLaunchArgument("folder_path", default_value="", description="image folder (camera_source:=folder)"),
        DeclareLaunchArgument("calibration_file", default_value="camera_sim.yaml",
                              description="camera calibration YAML (config/ name or path)"),
        DeclareLaunchArgument("sim_bag", default_value="",
                              description="simulated camera+glove bag (`avi-ht simulate`); '' = hardware"),
        DeclareLaunchArgument("sim_glove_latency_s", default_value="0.0",
                              description="simulated glove data age (a camera-glove offset to estimate)"),
        DeclareLaunchArgument("model_path", default_value="", description="fusion model ('' = shipped)"),
        DeclareLaunchArgument("time_offset_mode", default_value="online", description="online | fixed"),
        DeclareLaunchArgument("composed", default_value="true",
                              description="synchronizer and fusion in one process (sync_fusion_node); "
                                          "false: sync_node and fusion_node as separate processes"),
        DeclareLaunchArgument("realtime_priority", default_value="30",
                              description="SCHED_FIFO priority of the camera, glove, sync/fusion and retargeting "
                                          "processes (0 = normal scheduling; README 'Real-time scheduling')"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
    ]
    camera = Node(package=PACKAGE, executable="camera_node", name="head_camera", output="screen",
                  parameters=[config("camera_node.yaml"),
                              {"source": LaunchConfiguration("camera_source"),
                               "device": LaunchConfiguration("camera_device"),
                               "video_path": LaunchConfiguration("video_path"),
                               "folder_path": LaunchConfiguration("folder_path"),
                               "calibration_file": LaunchConfiguration("calibration_file"),
                               "sim_bag": LaunchConfiguration("sim_bag"),
                               "realtime_priority": LaunchConfiguration("realtime_priority")}])
    rviz = Node(package="rviz2", executable="rviz2", name="rviz", condition=IfCondition(LaunchConfiguration("rviz")),
                arguments=["-d", PathJoinSubstitution([FindPackageShare(PACKAGE), "rviz", "avi_ht.rviz"])])
    hands = (hand_group("right", "/dev/ttyACM0", "retarget_avi_hand_16dof.yaml",
                        "avi_hand_16dof/avi_hand_16dof.urdf")
             + hand_group("left", "/dev/ttyACM1", "retarget_avi_hand_16dof_left.yaml",
                          "avi_hand_16dof/avi_hand_16dof_left.urdf"))
    return LaunchDescription(arguments + [camera] + hands + [rviz])
