"""pip install of the ROS-free core and the ``avi-ht`` tool (e.g. on a training machine).

On a ROS 2 machine the package is built by colcon from CMakeLists.txt instead
(ament_cmake: messages + these same Python sources + these same executables).
CONSOLE_SCRIPTS must equal AVI_HT_EXECUTABLES in CMakeLists.txt
(test/test_package_static.py checks it).
"""
import glob

from setuptools import find_packages, setup

CONSOLE_SCRIPTS = [
    "avi-ht=avi_ht_ros.cli:main",
    "camera_node=avi_ht_ros.nodes.camera_node:main",
    "sync_node=avi_ht_ros.nodes.sync_node:main",
    "glove_driver_node=avi_ht_ros.nodes.glove_driver_node:main",
    "retarget_node=avi_ht_ros.nodes.retarget_node:main",
    "fusion_node=avi_ht_ros.nodes.fusion_node:main",
    "sync_fusion_node=avi_ht_ros.nodes.sync_fusion_node:main",
    "recorder_node=avi_ht_ros.nodes.recorder_node:main",
]

DATA_DIRS = ("msg", "config", "launch", "rviz", "robots", "models")

setup(
    name="avi_ht_ros",
    version="0.1.0",
    description="AVI-HT: adaptive vision-IMU fusion hand tracking for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["avi_ht_ros", "avi_ht_ros.*"]),
    data_files=[
        (f"share/avi_ht_ros/{directory}", sorted(f for f in glob.glob(f"{directory}/**/*", recursive=True)
                                                  if not f.endswith("/") and "." in f.rsplit("/", 1)[-1]))
        for directory in DATA_DIRS
    ],
    install_requires=[
        "numpy", "scipy", "PyYAML", "torch", "rosbags", "vqf", "opencv-python-headless",
        "pyserial", "tqdm", "matplotlib", "pin", "dex-retargeting", "onnxruntime", "onnx",
    ],
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
