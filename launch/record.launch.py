"""The teleoperation graph plus a rosbag2 (MCAP) recording of the raw topics, for training data.

    ros2 launch avi_ht_ros record.launch.py bag:=~/avi_ht_data/session1
    ros2 launch avi_ht_ros record.launch.py camera_source:=sim sim_bag:=/path/to/seq bag:=/tmp/rec

Recorded: camera images + camera info, both gloves' samples, /tf_static (camera and IMU mounts),
ground truth when a simulator or mocap publishes it. Every launch argument of teleop.launch.py
is accepted and forwarded. Turn the recording into a dataset: `avi-ht dataset --bags <bag>`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

RECORDED_TOPICS = [
    "/head_camera/image_raw",
    "/head_camera/camera_info",
    "/right/glove/samples",
    "/left/glove/samples",
    "/right/hand_ground_truth",
    "/left/hand_ground_truth",
    "/tf_static",
]


def generate_launch_description():
    teleop = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("avi_ht_ros"), "launch",
                                                            "teleop.launch.py"])))
    record = ExecuteProcess(
        cmd=["ros2", "bag", "record", "--storage", "mcap", "--output", LaunchConfiguration("bag"),
             "--topics", *RECORDED_TOPICS],
        output="screen")
    return LaunchDescription([
        DeclareLaunchArgument("bag", default_value="avi_ht_recording",
                              description="output bag directory (must not exist)"),
        teleop,
        record,
    ])
