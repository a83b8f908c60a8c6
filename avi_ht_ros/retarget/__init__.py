"""ROS-free retargeting core: human hand landmarks -> robot hand joint commands.

Modules (docs/RETARGETING.md describes the config schema, costs and safety behaviour):

* :mod:`~avi_ht_ros.retarget.kinematics` — robot hand FK and frame Jacobians (pinocchio),
  mimic/driven joint coupling;
* :mod:`~avi_ht_ros.retarget.config` — YAML config -> validated dataclasses;
* :mod:`~avi_ht_ros.retarget.optimizer` — vector / position / DexPilot retargeting with
  uncertainty weighting (projected Levenberg-Marquardt);
* :mod:`~avi_ht_ros.retarget.safety` — velocity/acceleration limits, watchdog, gating,
  pinch events (explicit timestamps, no clock);
* :mod:`~avi_ht_ros.retarget.bench` — benchmark against dex-retargeting
  (``avi-ht bench retarget``).

Nothing is imported here, so ``import avi_ht_ros.retarget.safety`` stays light.
"""
