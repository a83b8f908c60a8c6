"""Hand-pose networks: AVI-HT (vision + IMU fusion), its baselines, losses and checkpoints.

ROS-free (torch, numpy, scipy). Entry points: :func:`avi_ht_ros.models.factory.build_model`,
:func:`avi_ht_ros.models.checkpoint.load_checkpoint`, :class:`avi_ht_ros.models.interface.ModelInputs`
/ :class:`~avi_ht_ros.models.interface.ModelOutputs`. Architecture, shapes and deviations
from the paper: docs/MODEL.md.
"""
