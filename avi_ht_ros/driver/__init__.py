"""Device drivers, ROS-free (thin nodes in :mod:`avi_ht_ros.nodes` wrap them).

Data glove (wire format: docs/GLOVE_PROTOCOL.md): :mod:`.protocol` (frames, stream
parser, sequence tracking), :mod:`.serial_link` (reconnecting pyserial reader),
:mod:`.clock` (device clock -> host time), :mod:`.health` (per-IMU status),
:mod:`.calibration` (IMU mounting calibration), :mod:`.sim_device` (simulated glove on a
pseudo-terminal).  Camera: :mod:`.camera_source`.
"""
