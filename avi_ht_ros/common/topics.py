"""Topic and frame names shared by the nodes, the simulator's bags and the dataset builder.

Per-hand topics are relative names resolved in the hand's namespace (``/left`` or
``/right``); :func:`hand_topic` gives the absolute name used in bags.
"""
from __future__ import annotations

SIDES = ("left", "right")

# camera (one headset camera, shared by both hands)
CAMERA_NAMESPACE = "/head_camera"
IMAGE = f"{CAMERA_NAMESPACE}/image_raw"            # sensor_msgs/Image, mono8
CAMERA_INFO = f"{CAMERA_NAMESPACE}/camera_info"    # sensor_msgs/CameraInfo
# optional second headset camera (simulator: WorldConfig.second_camera_config), synchronized
# with the first: same stamps
CAMERA_2_NAMESPACE = "/head_camera_2"
IMAGE_2 = f"{CAMERA_2_NAMESPACE}/image_raw"        # sensor_msgs/Image, mono8
CAMERA_INFO_2 = f"{CAMERA_2_NAMESPACE}/camera_info"  # sensor_msgs/CameraInfo

# per hand, relative to /<side>
GLOVE_SAMPLES = "glove/samples"                    # avi_ht_ros/GloveSample, 200 Hz
SYNCED_FRAME = "synced_frame"                      # avi_ht_ros/SyncedFrame, one per camera frame
HAND_POSE = "hand_pose"                            # avi_ht_ros/HandPose
HAND_GROUND_TRUTH = "hand_ground_truth"            # avi_ht_ros/HandGroundTruth (simulator/mocap)
HAND_GROUND_TRUTH_2 = "hand_ground_truth_2"        # the same, in the second camera's optical frame
HAND_JOINT_STATES = "hand_joint_states"            # sensor_msgs/JointState, 22 human joints
HAND_MARKERS = "hand_markers"                      # visualization_msgs/MarkerArray
TIME_OFFSET = "glove/time_offset"                  # camera-glove offset estimate
ROBOT_JOINT_COMMANDS = "robot/joint_commands"      # sensor_msgs/JointState
ROBOT_JOINT_STATES = "robot/joint_states"          # sensor_msgs/JointState (robot_state_publisher)
ROBOT_TRAJECTORY = "robot/joint_trajectory"        # trajectory_msgs/JointTrajectory (ros2_control)
PINCH_EVENTS = "robot/pinch"

TF = "/tf"
TF_STATIC = "/tf_static"
DIAGNOSTICS = "/diagnostics"

# simulator bags: latched std_msgs/String, the world config (YAML: generator, seed, every
# WorldConfig field incl. the true camera-glove time offset); read by the dataset builder and eval
SIM_CONFIG_TOPIC = "/sim/config"

# frames (REP-103/105, see docs/ARCHITECTURE.md)
WORLD_FRAME = "world"
HEAD_FRAME = "head"
CAMERA_FRAME = "head_camera"
CAMERA_OPTICAL_FRAME = "head_camera_optical_frame"
CAMERA_2_FRAME = "head_camera_2"
CAMERA_2_OPTICAL_FRAME = "head_camera_2_optical_frame"


def hand_topic(side: str, name: str) -> str:
    """Absolute topic of a per-hand ``name`` for ``side`` ('left'/'right')."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return f"/{side}/{name}"


def hand_frame(side: str, part: str) -> str:
    """Frame id of a hand part, e.g. ``hand_frame('right', 'wrist') == 'right_wrist'``."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return f"{side}_{part}"
