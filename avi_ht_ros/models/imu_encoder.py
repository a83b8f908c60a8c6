"""IMU encoder: per-feature-row temporal transformer → per-sensor tokens (AVI-HT §3.3).

Input ``features [B, T, F, 3]`` (the window of :func:`avi_ht_ros.common.imu.imu_window_features`,
SI units) and ``valid [B, T, F]``. Steps:

1. per-signal scaling (gravity rows are unit vectors already; gyro ÷ ``gyro_scale_rad_s``;
   accel ÷ ``accel_scale_m_s2``); consecutive samples are grouped ``samples_per_token`` at a
   time (default 2: 14 samples → 7 temporal tokens of 2×3 values, see docs/MODEL.md — the
   paper's 1 gives 14 tokens of 3 values); linear → 69, plus a learned embedding of the row
   identity (which signal of which IMU), plus a sinusoidal encoding of the token's time step;
2. a 2-layer pre-norm transformer encoder (ReLU feed-forward) with self-attention *over time*, the ``F`` rows
   folded into the batch (shared weights); invalid samples are masked as keys; the last
   layer only computes the last time step's query (the only output used);
3. the last step → two-layer MLP → one ``d``-dim embedding per feature row;
4. per-sensor aggregation: mean of the valid rows of each sensor (``token_of_feature``),
   plus a learned sensor-identity embedding → ``N_s`` sensor tokens. A sensor without any
   valid row in the window is reported dead (``sensor_valid`` false); its token is just its
   identity embedding (finite, and masked out downstream).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from avi_ht_ros.models.attention import TransformerBlock, cached_for_inference, key_padding_bias, layer_norm, linear
from avi_ht_ros.models.config import ImuEncoderConfig


def sinusoidal_positional_encoding(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al. positional encoding ``[length, dim]`` (sin on even, cos on odd channels)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    encoding = torch.zeros(length, dim)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return encoding


class SensorTokens(NamedTuple):
    """Output of :class:`ImuEncoder`."""

    tokens: torch.Tensor  # [B, N_s, d]
    valid: torch.Tensor  # [B, N_s] bool: sensor had data in the window (live)
    all_live: bool | None  # True when known without a check that every sensor is live, else None


def window_all_valid(features: torch.Tensor, valid: torch.Tensor | None) -> bool:
    """Every sample of the window finite and marked valid (``valid`` None: all marked valid): the
    case in which :class:`ImuEncoder` skips its masks (the ONNX backend picks its graph by it)."""
    return bool(torch.isfinite(features).all()) and (valid is None or bool(valid.all()))


class ImuEncoder(nn.Module):
    """IMU window ``[B, T, F, 3]`` → sensor tokens ``[B, N_s, d]`` and ``sensor_valid [B, N_s]``.

    ``row_signals[f]`` ∈ {gravity, gyro, accel} and ``token_of_feature[f]`` (sensor index)
    describe the ``F`` rows; both come from :func:`avi_ht_ros.common.imu.feature_rows`, so a
    different glove or feature set is a config change.
    """

    def __init__(
        self,
        config: ImuEncoderConfig,
        row_signals: list[str],
        token_of_feature: torch.Tensor,
        num_sensors: int,
        embed_dim: int,
    ):
        super().__init__()
        token_of_feature = torch.as_tensor(token_of_feature, dtype=torch.long)
        num_features = len(row_signals)
        if token_of_feature.shape != (num_features,):
            raise ValueError(f"token_of_feature must have {num_features} entries, got {tuple(token_of_feature.shape)}")
        if token_of_feature.min() < 0 or token_of_feature.max() >= num_sensors:
            raise ValueError(f"token_of_feature entries must be sensor indices 0..{num_sensors - 1}")
        self.num_features = num_features
        self.num_sensors = num_sensors
        self.window_length = config.window_length
        self.samples_per_token = config.samples_per_token
        self.num_heads = config.num_heads
        num_tokens = config.window_length // config.samples_per_token
        scale_of_signal = {"gravity": 1.0, "gyro": 1.0 / config.gyro_scale_rad_s, "accel": 1.0 / config.accel_scale_m_s2}
        self.register_buffer("row_scale", torch.tensor([scale_of_signal[s] for s in row_signals])[:, None])  # [F, 1]
        self.register_buffer("token_of_feature", token_of_feature.clone())
        assignment = torch.zeros(num_sensors, num_features)
        assignment[token_of_feature, torch.arange(num_features)] = 1.0
        self.register_buffer("sensor_assignment", assignment)  # [N_s, F] one-hot rows
        self.register_buffer(  # [N_s, F] each sensor's rows averaged (all rows valid)
            "sensor_mean", assignment / assignment.sum(dim=1, keepdim=True).clamp(min=1.0)
        )
        # A sensor without any row in the feature set never has data: always dead.
        self.register_buffer("sensor_has_rows", assignment.sum(dim=1) > 0, persistent=False)
        self.every_sensor_has_rows = bool(self.sensor_has_rows.all())
        self.register_buffer(
            "positional_encoding", sinusoidal_positional_encoding(num_tokens, config.model_dim)
        )
        self.input_projection = nn.Linear(3 * config.samples_per_token, config.model_dim)
        self.row_embedding = nn.Parameter(0.02 * torch.randn(num_features, config.model_dim))
        self.layers = nn.ModuleList(
            TransformerBlock(
                config.model_dim, config.num_heads,
                config.feedforward_dim if index < config.num_layers - 1 or config.last_layer_feedforward else 0,
            )
            for index in range(config.num_layers)
        )
        self.output_norm = nn.LayerNorm(config.model_dim)
        self.output_mlp = nn.Sequential(
            nn.Linear(config.model_dim, config.mlp_hidden_dim), nn.ReLU(), nn.Linear(config.mlp_hidden_dim, embed_dim)
        )
        self.sensor_embedding = nn.Parameter(0.02 * torch.randn(num_sensors, embed_dim))

    def forward(
        self, features: torch.Tensor, valid: torch.Tensor | None = None
    ) -> "SensorTokens":
        """``features [B, T, F, 3]``, ``valid [B, T, F]`` (None: all valid).

        Returns ``SensorTokens(tokens [B, N_s, d], valid [B, N_s] bool, all_live)``.
        """
        b, t, f, _ = features.shape
        if t != self.window_length or f != self.num_features:
            raise ValueError(
                f"IMU window must be [B, {self.window_length}, {self.num_features}, 3], got {tuple(features.shape)}"
            )
        # Non-finite samples are invalid whatever the mask says; invalid samples carry no
        # information, so they are zeroed whatever the caller left there (NaN included).
        # The common case (everything valid) skips all masking below (same result).
        all_valid = window_all_valid(features, valid)
        if not all_valid:
            finite = torch.isfinite(features).all(dim=-1)
            valid = finite if valid is None else valid.to(torch.bool) & finite
            features = features.masked_fill(~valid[..., None], 0.0)
        # Time-major flat layout [T/p·B·F, D] (rows folded into the batch, attention over time).
        # The small raw window is rearranged before the projection so the wide activations
        # need no copy.
        tokens = t // self.samples_per_token
        rows = (features * self.row_scale).view(b, tokens, self.samples_per_token, f, 3)
        rows = rows.permute(1, 0, 3, 2, 4).reshape(tokens * b * f, -1)  # [T/p·B·F, 3p]
        token_embedding = cached_for_inference(
            self, f"_token_embedding_cache_{b}",
            (self.input_projection.bias, self.row_embedding, self.positional_encoding),
            lambda: self._token_embedding(b))
        x = torch.addmm(token_embedding, rows, self.input_projection.weight.t())  # flat [T/p·B·F, D]
        # ONNX graphs: the first layer's LayerNorm + q|k|v projection straight from the 3p-dim rows.
        # Export only (as the vision encoder's closed-form K⁻¹): eager code keeps LN + projection,
        # so every committed figure reproduces bit for bit (the tracking loop turns a change of
        # float rounding into a different track).
        first_projected = self._first_layer_joint_projection(rows, b) if torch.onnx.is_in_onnx_export() else None
        if all_valid:
            key_bias, row_valid = None, None
        else:
            key_valid = valid.reshape(b, tokens, self.samples_per_token, f).any(dim=2)  # [B, T/p, F]
            key_valid = key_valid.permute(0, 2, 1).reshape(b * f, tokens)
            row_valid = key_valid.any(dim=1)
            # A row without any valid sample would softmax over nothing (NaN); let it attend to
            # its (zero-input) steps instead — it is excluded from its sensor's token below.
            key_valid = key_valid | ~row_valid[:, None]
            key_bias = key_padding_bias(key_valid, self.num_heads, x.dtype, keep_diagonal=False)
        for index, layer in enumerate(self.layers):
            # Only the last time step is used: the last layer computes nothing else.
            x = layer.forward_flat(x, b * f, key_bias, last_query_only=index == len(self.layers) - 1,
                                   joint_projected=first_projected if index == 0 else None)[0]
        first, _, second = self.output_mlp  # x: the last time step, [B·F, D]
        hidden = torch.relu(linear(first, layer_norm(self.output_norm, x))).view(b, f, -1)  # [B, F, hidden]
        if row_valid is None:
            # Each sensor token = mean of its rows' MLP outputs + sensor embedding. The mean is
            # taken before the MLP's (linear) second layer — identical, and one op less.
            pooled = self.sensor_mean @ hidden  # [B, N_s, hidden]
            token_bias = cached_for_inference(  # second-layer bias + sensor embedding, [N_s, d]
                self, "_token_bias_cache", (self.sensor_embedding, second.bias),
                lambda: self.sensor_embedding + second.bias,
            )
            if b == 1:
                sensor_tokens = torch.addmm(token_bias, pooled[0], second.weight.t())[None]
            else:
                sensor_tokens = pooled @ second.weight.t() + token_bias
            return SensorTokens(sensor_tokens, self.sensor_has_rows.expand(b, -1), self.every_sensor_has_rows)
        row_embeddings = linear(second, hidden)  # [B, F, d]
        weights = self.sensor_assignment * row_valid.reshape(b, 1, f).to(row_embeddings.dtype)  # [B, N_s, F]
        rows_per_sensor = weights.sum(dim=-1, keepdim=True)
        sensor_tokens = weights @ row_embeddings / rows_per_sensor.clamp(min=1.0) + self.sensor_embedding
        return SensorTokens(sensor_tokens, rows_per_sensor[..., 0] > 0, None)

    def _token_embedding(self, batch_size: int) -> torch.Tensor:
        """Projection bias + row identity + time step of every token, ``[T/p·B·F, D]``."""
        return ((self.input_projection.bias + self.row_embedding + self.positional_encoding[:, None])
                .repeat(1, batch_size, 1).flatten(0, 1))

    def _first_layer_joint_projection(self, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The first layer's ``W_qkv · LN(x) + b`` for ``x = rows·W_inᵀ + e`` (``e``: each token's
        embedding), computed from the ``3p``-dim ``rows`` instead of the ``D``-dim ``x``.

        With ``A`` = ``W_in`` minus its per-column mean over the ``D`` outputs and ``ẽ`` = ``e``
        minus its mean, ``x − mean(x) = A·r + ẽ``, so ``var(x) = rᵀGr + r·u + w`` (``G = AᵀA/D``,
        ``u = 2Aᵀẽ/D``, ``w = |ẽ|²/D``) and ``W_qkv·LN(x) + b = (r·M + ẽ·P)/σ + c`` with
        ``P = diag(γ)·W_qkvᵀ``, ``M = Aᵀ·P``, ``c = W_qkv·β + b``. Per frame that is two ``[R, 3p]``
        products and a scale instead of a LayerNorm and an ``[R, D]×[D, 3D]`` product (~11× fewer
        multiply-adds). Same result up to float rounding; the factors are cached (no autograd).
        """
        layer = self.layers[0]
        norm, attention = layer.attention_norm, layer.attention
        gram, cross, offset, rows_to_qkv, token_qkv, qkv_bias = cached_for_inference(
            self, f"_first_layer_factors_{batch_size}",
            (self.input_projection.weight, self.input_projection.bias, self.row_embedding, self.positional_encoding,
             norm.weight, norm.bias, attention.query.weight, attention.query.bias, attention.key_value.weight,
             attention.key_value.bias),
            lambda: self._first_layer_factors(batch_size))
        variance = (torch.addmm(cross, rows, gram) * rows).sum(dim=1, keepdim=True) + offset  # var(x) + eps
        return torch.addmm(token_qkv, rows, rows_to_qkv) * variance.rsqrt() + qkv_bias

    def _first_layer_factors(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """The constant factors of :meth:`_first_layer_joint_projection` (float64 for the folds)."""
        layer = self.layers[0]
        norm, attention = layer.attention_norm, layer.attention
        weight = self.input_projection.weight.double()  # [D, 3p]
        dim = weight.shape[0]
        centred_weight = weight - weight.mean(dim=0, keepdim=True)
        embedding = self._token_embedding(batch_size).double()
        centred_embedding = embedding - embedding.mean(dim=1, keepdim=True)  # [R, D]
        joint_weight, joint_bias = (t.double() for t in attention._joint_projection())  # [3D, D], [3D]
        scaled = norm.weight.double()[:, None] * joint_weight.t()  # P = diag(γ) W_qkvᵀ, [D, 3D]
        factors = (
            centred_weight.t() @ centred_weight / dim,  # G [3p, 3p]
            2.0 * centred_embedding @ centred_weight / dim,  # u per token [R, 3p]
            (centred_embedding**2).sum(dim=1, keepdim=True) / dim + norm.eps,  # w + eps per token [R, 1]
            centred_weight.t() @ scaled,  # M [3p, 3D]
            centred_embedding @ scaled,  # ẽ·P per token [R, 3D]
            norm.bias.double() @ joint_weight.t() + joint_bias,  # c [3D]
        )
        return tuple(t.float() for t in factors)


class SensorDropout(nn.Module):
    """Training augmentation: mask random sensor subsets (incl. all sensors) in the IMU window.

    Per sample, with ``sample_probability`` some dropout happens: either every sensor is
    masked (``all_dead_probability``) or each sensor independently with
    ``sensor_probability``. Masking clears the validity of all the sensor's rows, so the
    encoder zeroes them and reports the sensor dead — exactly what a real dead IMU looks like.
    Only active in training mode; deterministic per ``seed`` (its own ``torch.Generator``).
    """

    def __init__(self, config, token_of_feature: torch.Tensor, num_sensors: int):
        super().__init__()
        self.enabled = config.enabled
        self.sample_probability = config.sample_probability
        self.sensor_probability = config.sensor_probability
        self.all_dead_probability = config.all_dead_probability
        self.num_sensors = num_sensors
        self.register_buffer("token_of_feature", torch.as_tensor(token_of_feature, dtype=torch.long).clone())
        self.generator = torch.Generator().manual_seed(int(config.seed))

    def sample_kept_sensors(self, batch_size: int) -> torch.Tensor:
        """``[B, N_s]`` bool: sensors kept for each sample."""
        uniform = torch.rand(batch_size, 2 + self.num_sensors, generator=self.generator)
        applies = uniform[:, 0] < self.sample_probability
        all_dead = applies & (uniform[:, 1] < self.all_dead_probability)
        dropped = applies[:, None] & (uniform[:, 2:] < self.sensor_probability)
        return ~(dropped | all_dead[:, None])

    def forward(self, valid: torch.Tensor) -> torch.Tensor:
        """``valid [B, T, F]`` → validity with the dropped sensors' rows cleared (identity in eval)."""
        if not (self.training and self.enabled):
            return valid
        kept = self.sample_kept_sensors(valid.shape[0]).to(valid.device)  # [B, N_s]
        return valid & kept[:, None, self.token_of_feature]
