"""Model, loss and training hyper-parameters as dataclasses, loaded from YAML with validation.

One YAML file describes one experiment (``config/model_<type>.yaml``)::

    model:      # ModelConfig   — which network (``type``) and its widths
    loss:       # LossConfig    — loss terms and weights
    training:   # TrainingConfig — optimiser / schedule (paper §5 "Implementation Details")

Every section and key is optional (defaults below); unknown keys, wrong types and
out-of-range values raise :class:`~avi_ht_ros.common.errors.ConfigError` naming the file and
the dotted key, e.g. ``config/model_avi_ht.yaml: model.fusion.num_heads: must divide ...``.

Defaults follow the AVI-HT paper where it states a value (IMU encoder 3→69, 14-step
window, 2 transformer layers, 12 sensor tokens, 96×96 mono crops, Adam lr 7.89e-4,
weight decay 1e-6, β1 0.9, ε 1e-8, ×0.1 at epoch 30 of 40, batch 48) and are our CPU-sized
choices otherwise (see docs/MODEL.md).
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import typing
from dataclasses import dataclass, field


from avi_ht_ros.common.config_file import load_yaml_mapping
from avi_ht_ros.common.errors import ConfigError

INFERENCE_BACKENDS = ("auto", "torch", "onnxruntime")
"""Runtimes of a network's per-frame inference (:mod:`avi_ht_ros.models.onnx_backend`): ``torch``
(the reference), ``onnxruntime`` (exported at start-up, checked against PyTorch), ``auto``
(ONNX Runtime when installed and its check passes, else PyTorch)."""

MODEL_TYPES = ("avi_ht", "vision_only", "imu_only")
"""``model.type`` values understood by :func:`avi_ht_ros.models.factory.build_model`."""

LANDMARK_NLL_KINDS = ("laplace", "gaussian")
FTL_REFERENCES = ("view0", "camera")
JOINT_ANGLE_LOSS_KINDS = ("l1", "smooth_l1")


def _require(condition: bool, where: str, problem: str) -> None:
    if not condition:
        raise ConfigError(where, problem)


@dataclass
class ImuEncoderConfig:
    """Transformer over the 14-sample IMU window, one sequence per feature row (paper §3.3)."""

    feature_set: str = "gravity+finger_gyro"
    """Named row set of :func:`avi_ht_ros.common.imu.feature_rows` (default: the paper's 23 rows)."""
    window_length: int = 14
    """IMU samples per frame window (paper: 14 at 200 Hz)."""
    samples_per_token: int = 2
    """Consecutive samples per temporal token (paper: 1). 2 halves the encoder's cost on CPU
    (7 tokens of 2×3 values instead of 14 of 3) with every sample still seen; see docs/MODEL.md."""
    model_dim: int = 69
    """Width of the per-row temporal transformer (paper: linear 3 → 69)."""
    num_heads: int = 3
    num_layers: int = 2
    feedforward_dim: int = 69
    mlp_hidden_dim: int = 128
    """Hidden width of the two-layer MLP after the last time step."""
    last_layer_feedforward: bool = True
    """Give the last transformer layer its own feed-forward. The shipped configs set false:
    the paper's two-layer MLP right after the last step then plays that role (one
    feed-forward less per frame). The default true keeps checkpoints written before this
    option loadable."""
    gyro_scale_rad_s: float = 4.0
    """Gyro rows are divided by this before the input projection (rad/s → O(1))."""
    accel_scale_m_s2: float = 9.81
    """Specific-force rows (feature sets with accel) are divided by this."""

    def validate(self, where: str) -> None:
        from avi_ht_ros.common.imu import FEATURE_SETS

        _require(self.feature_set in FEATURE_SETS, f"{where}.feature_set",
                 f"unknown feature set {self.feature_set!r}; known: {sorted(FEATURE_SETS)}")
        for name in ("window_length", "samples_per_token", "model_dim", "num_heads", "num_layers", "feedforward_dim",
                     "mlp_hidden_dim"):
            _require(getattr(self, name) >= 1, f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _require(self.window_length % self.samples_per_token == 0, f"{where}.samples_per_token",
                 f"must divide window_length={self.window_length}, got {self.samples_per_token}")
        _require(self.model_dim % self.num_heads == 0, f"{where}.num_heads",
                 f"must divide model_dim={self.model_dim}, got {self.num_heads}")
        for name in ("gyro_scale_rad_s", "accel_scale_m_s2"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value > 0, f"{where}.{name}", f"must be > 0, got {value}")


@dataclass
class VisionEncoderConfig:
    """Small ResNet on 96×96 mono crops + feature transform layer + ConvGRU (UmeTrack-style)."""

    num_views: int = 1
    """Crops per frame (1 = one headset camera; 2 = stereo pair, shared weights)."""
    crop_size: int = 96
    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (32, 64, 176)
    """Output channels of the stride-2 residual stages after the stride-2 stem."""
    blocks_per_stage: tuple[int, ...] = (1, 2, 2)
    ftl_groups: int = 32
    """Number of 3-vectors each feature-map cell is lifted to by the feature transform layer."""
    recurrent_channels: int = 64
    """Hidden channels of the ConvGRU carried from frame to frame."""
    reference_hand_extent_m: float = 0.2
    """Depth prior: a hand of scale 1 spanning the crop's field of view is this wide (m)."""
    ftl_reference: str = "view0"
    """Frame the feature transform layer rotates features into and the wrist rotation is
    regressed in: ``view0`` (UmeTrack: the virtual camera of view 0) or ``camera`` (the
    physical camera)."""

    def validate(self, where: str) -> None:
        _require(self.num_views in (1, 2), f"{where}.num_views", f"must be 1 or 2, got {self.num_views}")
        _require(len(self.stage_channels) >= 1, f"{where}.stage_channels", "needs at least one stage")
        _require(len(self.stage_channels) == len(self.blocks_per_stage), f"{where}.blocks_per_stage",
                 f"needs one entry per stage ({len(self.stage_channels)}), got {len(self.blocks_per_stage)}")
        downsample = 2 ** (1 + len(self.stage_channels))
        _require(self.crop_size >= downsample and self.crop_size % downsample == 0, f"{where}.crop_size",
                 f"must be a positive multiple of {downsample} (stem + {len(self.stage_channels)} stride-2 stages), "
                 f"got {self.crop_size}")
        for name in ("stem_channels", "ftl_groups", "recurrent_channels"):
            _require(getattr(self, name) >= 1, f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _require(all(c >= 1 for c in self.stage_channels), f"{where}.stage_channels", "channels must be >= 1")
        _require(all(b >= 1 for b in self.blocks_per_stage), f"{where}.blocks_per_stage", "blocks must be >= 1")
        _require(self.ftl_reference in FTL_REFERENCES, f"{where}.ftl_reference",
                 f"must be one of {FTL_REFERENCES}, got {self.ftl_reference!r}")
        _require(math.isfinite(self.reference_hand_extent_m) and self.reference_hand_extent_m > 0,
                 f"{where}.reference_hand_extent_m", f"must be > 0, got {self.reference_hand_extent_m}")


@dataclass
class FusionConfig:
    """Hierarchical cross-sensor attention (paper §3.3, Eq. 1)."""

    num_heads: int = 4
    feedforward_dim: int = 0
    """Feed-forward width after each attention level; 0 (default) = attention-only layers, as
    the paper defines both levels (Eq. 1 and "a standard self-attention layer")."""
    kinematic_alpha: float = 1.0
    """α of the kinematic prior mask M_ij = −α·hop(i, j) (initial value when learnable)."""
    learnable_alpha: bool = True
    alpha_per_head: bool = True
    """One α per attention head (heads can specialise in near/far sensors) or one shared α."""
    vision_token_hop: float = 0.0
    """Hop count used for the visual token's row and column of M (0 = no prior either way)."""

    def validate(self, where: str) -> None:
        _require(self.num_heads >= 1, f"{where}.num_heads", f"must be >= 1, got {self.num_heads}")
        _require(self.feedforward_dim >= 0, f"{where}.feedforward_dim", f"must be >= 0, got {self.feedforward_dim}")
        _require(math.isfinite(self.kinematic_alpha) and self.kinematic_alpha >= 0, f"{where}.kinematic_alpha",
                 f"must be >= 0, got {self.kinematic_alpha}")
        _require(not (self.learnable_alpha and self.kinematic_alpha == 0), f"{where}.kinematic_alpha",
                 "a learnable α is parametrised as softplus(raw) and must start > 0")
        _require(math.isfinite(self.vision_token_hop) and self.vision_token_hop >= 0, f"{where}.vision_token_hop",
                 f"must be >= 0, got {self.vision_token_hop}")


@dataclass
class HeadConfig:
    """Regression head: 22 bounded joint angles, 6D wrist rotation, wrist translation, log σ."""

    hidden_dim: int = 128
    log_sigma_init_m: float = -4.6
    """Initial per-landmark log σ (σ in metres; −4.6 ≈ 1 cm)."""
    log_sigma_min_m: float = -9.2
    """Lower clamp of log σ (≈ 0.1 mm) so the NLL cannot diverge."""
    log_sigma_max_m: float = 0.0
    """Upper clamp of log σ (1 m)."""
    aligned_sigma: bool = False
    """Also predict a per-landmark σ of the *wrist-aligned* landmarks (articulation apart from
    the global wrist pose; ``log_sigma_aligned``), used by ``loss.wrist_aligned_landmark_nll_weight``.
    Models with a wrist pose only; a separate output layer, so checkpoints without it warm-start."""

    def validate(self, where: str) -> None:
        _require(self.hidden_dim >= 1, f"{where}.hidden_dim", f"must be >= 1, got {self.hidden_dim}")
        _require(self.log_sigma_min_m < self.log_sigma_max_m, f"{where}.log_sigma_min_m",
                 f"must be < log_sigma_max_m ({self.log_sigma_min_m} >= {self.log_sigma_max_m})")
        _require(self.log_sigma_min_m <= self.log_sigma_init_m <= self.log_sigma_max_m, f"{where}.log_sigma_init_m",
                 f"must lie in [{self.log_sigma_min_m}, {self.log_sigma_max_m}], got {self.log_sigma_init_m}")


@dataclass
class SensorDropoutConfig:
    """Training-time augmentation: mask random IMU subsets so missing sensors degrade gracefully."""

    enabled: bool = True
    sample_probability: float = 0.5
    """Probability that a training sample gets any sensor dropout at all."""
    sensor_probability: float = 0.25
    """Given dropout, probability that each sensor is masked independently."""
    all_dead_probability: float = 0.05
    """Given dropout, probability that every sensor is masked (glove off / unplugged)."""
    seed: int = 0

    def validate(self, where: str) -> None:
        for name in ("sample_probability", "sensor_probability", "all_dead_probability"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{where}.{name}", f"must be a probability in [0, 1], got {value}")


@dataclass
class ModelConfig:
    """Which network and its widths. ``type`` picks AVI-HT or one of the baselines."""

    type: str = "avi_ht"
    embed_dim: int = 64
    """Shared token width d of the visual token and the sensor tokens."""
    glove_config: str = "glove_12imu.yaml"
    """Glove description (sensor count, hop distances, hand-back IMU) under ``config/``."""
    imu_encoder: ImuEncoderConfig = field(default_factory=ImuEncoderConfig)
    vision_encoder: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    sensor_dropout: SensorDropoutConfig = field(default_factory=SensorDropoutConfig)

    @property
    def uses_vision(self) -> bool:
        return self.type in ("avi_ht", "vision_only")

    @property
    def uses_imu(self) -> bool:
        return self.type in ("avi_ht", "imu_only")

    def validate(self, where: str) -> None:
        _require(self.type in MODEL_TYPES, f"{where}.type", f"unknown model type {self.type!r}; known: {MODEL_TYPES}")
        _require(self.embed_dim >= 1, f"{where}.embed_dim", f"must be >= 1, got {self.embed_dim}")
        _require(self.embed_dim % self.fusion.num_heads == 0, f"{where}.fusion.num_heads",
                 f"must divide embed_dim={self.embed_dim}, got {self.fusion.num_heads}")
        _require(bool(self.glove_config), f"{where}.glove_config", "must name a glove config file")
        self.imu_encoder.validate(f"{where}.imu_encoder")
        self.vision_encoder.validate(f"{where}.vision_encoder")
        self.fusion.validate(f"{where}.fusion")
        self.head.validate(f"{where}.head")
        self.sensor_dropout.validate(f"{where}.sensor_dropout")


@dataclass
class LossConfig:
    """Loss terms and weights (see :mod:`avi_ht_ros.models.losses`)."""

    landmark_nll_weight: float = 1.0
    landmark_nll_kind: str = "laplace"
    """``laplace``: ‖Δ‖/σ + 3 log σ (UmeTrack-style); ``gaussian``: ‖Δ‖²/(2σ²) + 3 log σ."""
    length_unit_m: float = 0.001
    """Lengths inside the losses are expressed in this unit (default mm). For the NLL this only
    shifts the value by a constant (3·log unit per landmark), so its minimum over typical errors
    stays positive; the L1/maxMSE terms scale with it."""
    joint_angle_weight: float = 1.0
    joint_angle_kind: str = "smooth_l1"
    joint_angle_smooth_l1_beta_rad: float = 0.05
    wrist_translation_weight: float = 0.0
    """L1 on the wrist translation (length unit); UmeTrack's λ_w term. Landmarks already carry it."""
    temporal_velocity_weight: float = 0.0
    """Clips only: L1 between predicted and true frame-to-frame landmark displacements."""
    temporal_acceleration_weight: float = 0.0
    """Clips only: UmeTrack Eq. 6, L1 of predicted joint-angle and wrist-translation acceleration."""
    max_mse_weight: float = 0.0
    """Deformer maxMSE on landmarks (Σ‖Δ‖⁴/Σ‖Δ‖²), emphasises the worst landmarks."""
    wrist_aligned_landmark_weight: float = 0.0
    """L1 (length unit) between the landmarks in the *predicted* wrist frame and the true ones in
    the true wrist frame (the MKPE.T error). Supervises articulation apart from the global wrist
    pose, whose error dominates the camera-frame NLL (large σ, weak articulation gradient).
    Ignored by root-relative models, whose NLL is already wrist-aligned."""
    wrist_aligned_landmark_nll_weight: float = 0.0
    """NLL (``landmark_nll_kind``) of the same wrist-aligned landmarks under their own predicted σ
    (``model.head.aligned_sigma``): the articulation term adapts its weight like the IMU-only
    model's root-relative NLL does, instead of inheriting the camera-frame σ (set by the wrist
    position, ~25× larger). Ignored by root-relative models."""
    wrist_aligned_temporal_velocity_weight: float = 0.0
    """Clips only: ``temporal_velocity`` on the wrist-aligned landmarks (the MKPE.T frame):
    penalises articulation jitter alone — the camera-frame term is dominated by the wrist's
    motion. (A root-relative model's landmarks are wrist-aligned already: then it equals
    ``temporal_velocity``.)"""

    def validate(self, where: str) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_weight"):
                value = getattr(self, f.name)
                _require(math.isfinite(value) and value >= 0, f"{where}.{f.name}", f"must be >= 0, got {value}")
        _require(self.landmark_nll_kind in LANDMARK_NLL_KINDS, f"{where}.landmark_nll_kind",
                 f"must be one of {LANDMARK_NLL_KINDS}, got {self.landmark_nll_kind!r}")
        _require(self.joint_angle_kind in JOINT_ANGLE_LOSS_KINDS, f"{where}.joint_angle_kind",
                 f"must be one of {JOINT_ANGLE_LOSS_KINDS}, got {self.joint_angle_kind!r}")
        _require(math.isfinite(self.length_unit_m) and self.length_unit_m > 0, f"{where}.length_unit_m",
                 f"must be > 0, got {self.length_unit_m}")
        _require(self.joint_angle_smooth_l1_beta_rad > 0, f"{where}.joint_angle_smooth_l1_beta_rad",
                 f"must be > 0, got {self.joint_angle_smooth_l1_beta_rad}")


@dataclass
class TrainingConfig:
    """Optimiser and schedule, paper §5 "Implementation Details"."""

    learning_rate: float = 7.89e-4
    weight_decay: float = 1e-6
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    epochs: int = 40
    lr_decay_epochs: tuple[int, ...] = (30,)
    lr_decay_factor: float = 0.1
    batch_size: int = 48
    clip_length: int = 4
    """Frames per training clip; the recurrent state is carried through a clip (1 = single frames)."""
    frozen_modules: tuple[str, ...] = ()
    """Top-level parts of the model kept as they are (warm start) while the rest trains, e.g.
    ``[vision_encoder]`` to adapt only the glove side to a new glove: no gradient, not in the
    optimiser, batch-norm statistics and dropout in inference mode. Names are the model's children
    (``vision_encoder``, ``imu_encoder``, ``fusion``, ``head``); checked when the model is built."""

    def validate(self, where: str) -> None:
        _require(len(set(self.frozen_modules)) == len(self.frozen_modules), f"{where}.frozen_modules",
                 f"names must be distinct, got {list(self.frozen_modules)}")
        for name in ("learning_rate", "eps", "lr_decay_factor"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value > 0, f"{where}.{name}", f"must be > 0, got {value}")
        _require(self.weight_decay >= 0, f"{where}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"{where}.{name}", f"must be in [0, 1), got {value}")
        for name in ("epochs", "batch_size", "clip_length"):
            _require(getattr(self, name) >= 1, f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _require(list(self.lr_decay_epochs) == sorted(set(self.lr_decay_epochs)), f"{where}.lr_decay_epochs",
                 f"must be strictly increasing, got {list(self.lr_decay_epochs)}")
        _require(all(0 < e <= self.epochs for e in self.lr_decay_epochs), f"{where}.lr_decay_epochs",
                 f"must lie in 1..epochs={self.epochs}, got {list(self.lr_decay_epochs)}")


@dataclass
class ExperimentConfig:
    """One YAML file: the model, its loss and its training schedule."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self, where: str) -> None:
        self.model.validate(f"{where}model")
        self.loss.validate(f"{where}loss")
        if self.loss.wrist_aligned_landmark_nll_weight > 0 and self.model.type != "imu_only":
            _require(self.model.head.aligned_sigma, f"{where}loss.wrist_aligned_landmark_nll_weight",
                     "needs model.head.aligned_sigma: true (the σ of the wrist-aligned landmarks)")
        self.training.validate(f"{where}training")


# --------------------------------------------------------------------------------------
# dict <-> dataclass with type checking
# --------------------------------------------------------------------------------------

T = typing.TypeVar("T")


def _convert(value, annotation, where: str):
    """Check/convert one YAML value against a (simple) dataclass field annotation."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return dataclass_from_dict(annotation, value, where)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"must be a list, got {type(value).__name__} {value!r}")
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, f"must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(where, f"must be finite, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config annotation {annotation!r}")


def _key(where: str, name: str) -> str:
    """Dotted key path: ``model`` + ``fusion`` → ``model.fusion``; ``"f.yaml: "`` + ``model`` → ``f.yaml: model``."""
    if not where or where.endswith(": "):
        return f"{where}{name}"
    return f"{where}.{name}"


def dataclass_from_dict(cls: type[T], data, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types.

    Missing keys keep their defaults. ``where`` prefixes every error (file and dotted key).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(where.rstrip(": ") or cls.__name__, f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(_key(where, str(unknown[0])), f"unknown key; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], _key(where, name))
    return cls(**kwargs)


def config_to_dict(config) -> dict:
    """A config dataclass as plain dicts/lists/str/int/float/bool (YAML- and weights_only-safe)."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def model_config_from_dict(data: dict, where: str = "model") -> ModelConfig:
    """Validated :class:`ModelConfig` from a plain dict (e.g. stored in a checkpoint)."""
    config = dataclass_from_dict(ModelConfig, data, where)
    config.validate(where)
    return config


def load_experiment_config(path: str | pathlib.Path) -> ExperimentConfig:
    """Read and validate an experiment YAML (``model`` / ``loss`` / ``training`` sections).

    A bare name such as ``model_avi_ht.yaml`` is looked up under the package's ``config/``.
    """
    from avi_ht_ros.common.paths import config_path

    where = str(path)
    data = load_yaml_mapping(config_path(where), where)
    config = dataclass_from_dict(ExperimentConfig, data, f"{where}: ")
    config.validate(f"{where}: ")
    return config
