"""AVI-HT: adaptive vision-IMU fusion hand tracking for ROS 2.

The Python package shares its name with the ROS package, whose rosidl build
generates ``avi_ht_ros.msg`` into the install space.  ``extend_path`` merges
every ``avi_ht_ros`` directory on ``sys.path`` (the source tree and the
install space), so importing from a source checkout never hides the
generated messages.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
