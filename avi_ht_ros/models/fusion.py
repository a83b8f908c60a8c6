"""Hierarchical cross-sensor attention (AVI-HT §3.3, Eq. 1).

Level 1 — ``Z = [F_vis*, s_1 … s_Ns]`` (``[B, 1+N_s, d]``), multi-head self-attention with
the additive kinematic prior on the logits::

    A = softmax(Q Kᵀ/√d_k + M + mask),   M_ij = −α_h · hop(i, j)

``hop`` is the glove's sensor-site hop-count matrix on the hand skeleton graph; the visual
token's row and column use ``vision_token_hop`` (default 0: the camera is not a site on the
skeleton, so the prior neither favours nor penalises any sensor for it, and sensors are not
pushed away from vision). ``α_h ≥ 0`` is one value per head (or shared), fixed or learned
through a softplus. Dead sensors are removed as *keys* (−inf; a row always keeps its own
diagonal so no softmax is empty); their own query rows are computed but never used.
``a_vis`` = row 0 of ``A`` averaged over heads, restricted to the sensor columns: per-sensor
importance, sums to ≤ 1 (the rest is the visual token's attention to itself), exactly 0 for
dead sensors.

Level 2 — ``Z' = [F̃_vis*, s̄]`` with ``s̄`` the mean of the *live* level-1 sensor tokens;
if no sensor is live ``s̄`` is a learned "no IMU" token and is masked as a key, so the visual
token attends only to itself. ``vision_weight`` = attention paid to the visual token, averaged
over heads and over both query rows (the share of the pooled representation's attention mass
drawn from vision; 1 when every sensor is dead). The two output tokens are mean-pooled into
the ``d``-dim hand representation.

Both levels are pre-norm attention layers ``x + Attn(LN(x))`` (optionally followed by a
ReLU feed-forward, ``FusionConfig.feedforward_dim > 0``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avi_ht_ros.models.attention import TransformerBlock, cached_for_inference, key_padding_bias, layer_norm
from avi_ht_ros.models.config import FusionConfig


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class KinematicPrior(nn.Module):
    """``M = −α_h · hop`` over ``[vision?, sensors…]`` tokens; α per head or shared, fixed or learned."""

    def __init__(self, hop_distance: torch.Tensor, config: FusionConfig, with_vision_token: bool):
        super().__init__()
        hop_distance = torch.as_tensor(hop_distance, dtype=torch.float32)
        n = hop_distance.shape[0]
        if hop_distance.shape != (n, n):
            raise ValueError(f"hop distance matrix must be square, got {tuple(hop_distance.shape)}")
        if with_vision_token:
            full = torch.full((n + 1, n + 1), float(config.vision_token_hop))
            full[0, 0] = 0.0
            full[1:, 1:] = hop_distance
            hop_distance = full
        self.register_buffer("token_hops", hop_distance)  # [N_tokens, N_tokens]
        num_alphas = config.num_heads if config.alpha_per_head else 1
        self.learnable = config.learnable_alpha
        if config.learnable_alpha:
            self.raw_alpha = nn.Parameter(torch.full((num_alphas,), _inverse_softplus(config.kinematic_alpha)))
        else:
            self.register_buffer("fixed_alpha", torch.full((num_alphas,), float(config.kinematic_alpha)))

    @property
    def alpha(self) -> torch.Tensor:
        """α per head (``[H]``, or ``[1]`` when shared)."""
        return F.softplus(self.raw_alpha) if self.learnable else self.fixed_alpha

    def forward(self) -> torch.Tensor:
        """Logit bias ``[H or 1, N_tokens, N_tokens]`` (query rows, key columns)."""
        return -self.alpha[:, None, None] * self.token_hops

    def key_major(self, batch_size: int, num_heads: int) -> torch.Tensor:
        """The bias for :class:`SequenceFirstAttention`: key-major, per batch element and head,
        ``[B·H, N_tokens(key), N_tokens(query)]``; cached during inference until α changes."""
        n = self.token_hops.shape[0]
        alpha = self.raw_alpha if self.learnable else self.fixed_alpha
        return cached_for_inference(
            self, f"_key_major_cache_{batch_size}", (alpha, self.token_hops),
            lambda: self().transpose(-1, -2).expand(batch_size, num_heads, n, n).reshape(batch_size * num_heads, n, n),
        )


class HierarchicalCrossSensorFusion(nn.Module):
    """Visual token + sensor tokens → hand representation ``[B, d]`` (+ attention diagnostics)."""

    def __init__(self, embed_dim: int, hop_distance: torch.Tensor, config: FusionConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.prior = KinematicPrior(hop_distance, config, with_vision_token=True)
        self.level1 = TransformerBlock(embed_dim, config.num_heads, config.feedforward_dim)
        self.level2 = TransformerBlock(embed_dim, config.num_heads, config.feedforward_dim)
        self.missing_imu_token = nn.Parameter(torch.zeros(embed_dim))
        self.output_norm = nn.LayerNorm(embed_dim)

    def forward(
        self, visual_token: torch.Tensor, sensor_tokens: torch.Tensor, sensor_valid: torch.Tensor,
        all_live: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``visual_token [B, d]``, ``sensor_tokens [B, N_s, d]``, ``sensor_valid [B, N_s]``;
        ``all_live`` = ``bool(sensor_valid.all())`` when the caller already knows it.

        Returns ``(hand_representation [B, d], imu_attention [B, N_s], vision_weight [B],
        level1_attention [B, 1+N_s, 1+N_s])`` (attentions averaged over heads).
        """
        b, num_sensors, dim = sensor_tokens.shape
        heads = self.num_heads
        n = 1 + num_sensors
        # flat sequence-major token stream [(1+N_s)·B, d]: the B visual tokens, then sensor 0 of
        # each batch element, ... (for B = 1 the transpose is the identity and is left out)
        sensor_rows = sensor_tokens.reshape(-1, dim) if b == 1 else sensor_tokens.transpose(0, 1).reshape(-1, dim)
        tokens = torch.cat([visual_token, sensor_rows], dim=0)
        if all_live is None:
            all_live = bool(sensor_valid.all())  # the common case skips the masks (same result)
        bias1 = self.prior.key_major(b, heads)  # [B·H, n_key, n_query]
        if not all_live:
            key_valid = torch.cat([sensor_valid.new_ones(b, 1), sensor_valid], dim=1)
            bias1 = bias1 + key_padding_bias(key_valid, heads, tokens.dtype, keep_diagonal=True)
        tokens, attention1 = self.level1.forward_flat(tokens, b, bias1)
        level1_attention = attention1.view(b, heads, n, n).mean(dim=1)
        imu_attention = level1_attention[:, 0, 1:]

        sensor_outputs = tokens[b:].view(num_sensors, b, dim)
        if all_live:
            imu_summary, bias2 = sensor_outputs.mean(dim=0), None
        else:
            live = sensor_valid.transpose(0, 1).to(tokens.dtype)[..., None]  # [N_s, B, 1]
            live_count = live.sum(dim=0)  # [B, 1]
            any_live = live_count > 0
            mean_sensor = (sensor_outputs * live).sum(dim=0) / live_count.clamp(min=1.0)
            imu_summary = torch.where(any_live, mean_sensor, self.missing_imu_token)
            # The visual key is always valid, so no row is empty without the diagonal
            # exemption: with no live sensor both rows attend to vision only (vision_weight = 1).
            bias2 = key_padding_bias(torch.cat([any_live.new_ones(b, 1), any_live], dim=1), heads, tokens.dtype,
                                     keep_diagonal=False)
        pair = torch.cat([tokens[:b], imu_summary], dim=0)  # flat [2·B, d]
        pair, attention2 = self.level2.forward_flat(pair, b, bias2)
        vision_weight = attention2.view(b, heads, 2, 2)[..., 0].mean(dim=(1, 2))
        hand = layer_norm(self.output_norm, pair.view(2, b, dim).mean(dim=0))
        return hand, imu_attention, vision_weight, level1_attention


class SensorOnlyFusion(nn.Module):
    """IMU-only baseline: level-1 attention over the sensor tokens (same kinematic prior), masked mean."""

    def __init__(self, embed_dim: int, hop_distance: torch.Tensor, config: FusionConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.prior = KinematicPrior(hop_distance, config, with_vision_token=False)
        self.level1 = TransformerBlock(embed_dim, config.num_heads, config.feedforward_dim)
        self.missing_imu_token = nn.Parameter(torch.zeros(embed_dim))
        self.output_norm = nn.LayerNorm(embed_dim)

    def forward(self, sensor_tokens: torch.Tensor, sensor_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(hand_representation [B, d], level1_attention [B, N_s, N_s])``."""
        b, n, _ = sensor_tokens.shape
        heads = self.num_heads
        bias = self.prior.key_major(b, heads) + key_padding_bias(sensor_valid, heads, sensor_tokens.dtype,
                                                                 keep_diagonal=True)  # key-major
        tokens, attention = self.level1(sensor_tokens.transpose(0, 1), bias)  # [N_s, B, d]
        live = sensor_valid.transpose(0, 1).to(tokens.dtype)[..., None]
        live_count = live.sum(dim=0)
        pooled = (tokens * live).sum(dim=0) / live_count.clamp(min=1.0)
        pooled = torch.where(live_count > 0, pooled, self.missing_imu_token)
        return layer_norm(self.output_norm, pooled), attention.view(b, heads, n, n).mean(dim=1)
