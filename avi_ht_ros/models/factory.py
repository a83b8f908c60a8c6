"""Build a model from its config: ``model: {type: avi_ht | vision_only | imu_only, ...}``.

The glove config (``model.glove_config``) decides the sensor count ``N_s``, the hop-distance
matrix of the kinematic prior and the hand-back IMU; ``model.imu_encoder.feature_set``
decides the ``F`` feature rows and which sensor token each row feeds. A different glove is
therefore a config change. The hop matrix and row→sensor map are stored as buffers, so a
checkpoint carries them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import HandModel, default_hand_model
from avi_ht_ros.common.imu import feature_rows
from avi_ht_ros.common.paths import config_path
from avi_ht_ros.models.avi_ht import AviHtModel
from avi_ht_ros.models.baselines import ImuOnlyModel, VisionOnlyModel
from avi_ht_ros.models.config import ModelConfig
from avi_ht_ros.models.interface import HandPoseModel


@dataclass(frozen=True)
class SensorLayout:
    """What the IMU side of a model needs to know about the glove and the feature rows."""

    hop_distance: np.ndarray  # [N_s, N_s] hop counts between sensor sites
    row_signals: tuple[str, ...]  # [F] gravity / gyro / accel
    token_of_feature: np.ndarray  # [F] sensor index of each feature row
    hand_back_index: int  # sensor on the palm (-1 if none)

    @property
    def num_sensors(self) -> int:
        return int(self.hop_distance.shape[0])

    @property
    def num_features(self) -> int:
        return len(self.row_signals)


def hand_back_sensor_index(glove: GloveModel) -> int:
    """Index of the glove's single IMU on the ``palm`` bone, or -1 if it has none."""
    on_palm = [i for i, site in enumerate(glove.sites) if site.bone == "palm"]
    if len(on_palm) > 1:
        raise ConfigError(glove.source, f"more than one IMU on the palm ({[glove.sites[i].name for i in on_palm]}); "
                                        "the hand-back sensor is ambiguous")
    return on_palm[0] if on_palm else -1


def sensor_layout(glove: GloveModel, feature_set: str) -> SensorLayout:
    """Hop distances, row signals and row→sensor map for ``glove`` and ``feature_set``."""
    hand_back = hand_back_sensor_index(glove)
    if feature_set == "gravity+finger_gyro" and hand_back < 0:
        raise ConfigError(glove.source, "feature set 'gravity+finger_gyro' needs a hand-back IMU (bone: palm)")
    rows = feature_rows(feature_set, glove.num_sensors, max(hand_back, 0))
    return SensorLayout(
        hop_distance=glove.hop_distance_matrix().astype(np.float32),
        row_signals=tuple(r.signal for r in rows),
        token_of_feature=np.array([r.sensor for r in rows], dtype=np.int64),
        hand_back_index=hand_back,
    )


def load_glove(config: ModelConfig) -> GloveModel:
    """The glove named by ``config.glove_config`` (a path, or a name under ``config/``)."""
    return GloveModel.from_yaml(config_path(config.glove_config))


def build_model(
    config: ModelConfig, glove: GloveModel | None = None, hand_model: HandModel | None = None
) -> HandPoseModel:
    """The network ``config.type`` names, randomly initialised (CPU, float32, train mode)."""
    config.validate("model")
    hand_model = hand_model or default_hand_model()
    if config.type == "vision_only":
        return VisionOnlyModel(config, hand_model)
    layout = sensor_layout(glove or load_glove(config), config.imu_encoder.feature_set)
    model_class = AviHtModel if config.type == "avi_ht" else ImuOnlyModel
    return model_class(config, hand_model, layout.hop_distance, list(layout.row_signals), layout.token_of_feature)
