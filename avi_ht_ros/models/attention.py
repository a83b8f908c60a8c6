"""Multi-head attention on sequence-first tensors, written for small CPU batches.

Both the IMU encoder (14/p time steps × 23 feature rows) and the fusion (13 tokens) run
attention on tiny tensors where each PyTorch op costs more in overhead and copies than in
arithmetic. :class:`SequenceFirstAttention` therefore works on ``[S, N, D]`` tensors and
orders the projection's output channels head-major, so that queries, keys and values are
*views* ``[N·H, S, d_h]`` fed straight to ``bmm``/``baddbmm`` (BLAS takes the strided
matrices as they are): one op for ``KQᵀ·scale + bias``, one softmax (over a leading axis,
see below), one ``bmm`` with the values and a single copy back to ``[S, N, D]``. Mathematically it is standard multi-head
scaled dot-product attention; only the (learned, arbitrary) order of projection channels
differs from ``nn.MultiheadAttention``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SequenceFirstAttention(nn.Module):
    """Multi-head attention ``[Sq, N, D] × [S, N, D] → [Sq, N, D]`` with an additive logit bias.

    Logits are computed **key-major**, ``[N·H, S, Sq]`` (``K Qᵀ``), and the softmax runs over
    the leading key axis of a ``[S, N·H, Sq]`` view: PyTorch's CPU softmax over a short *last*
    axis (7 keys in the IMU encoder) is ~7× slower than over a leading axis. ``bias`` is
    key-major too: ``[N·H, S, Sq or 1]`` (e.g. the transposed kinematic prior plus ``−inf``
    for masked keys; every query column must keep one finite entry), or None. Returns the
    output and the attention probabilities as a ``[N·H, Sq, S]`` view (rows sum to 1).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.query = nn.Linear(dim, dim)  # output channels: (head, head_dim)
        self.key_value = nn.Linear(dim, 2 * dim)  # output channels: (head, key|value, head_dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("_zero", torch.zeros(1, 1, 1), persistent=False)

    def _joint_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Query, key and value weights as one ``[3D, D]`` projection, rows ordered (head, q|k|v, d_h)."""
        heads, head_dim = self.num_heads, self.head_dim
        weight = torch.cat([self.query.weight.view(heads, 1, head_dim, -1),
                            self.key_value.weight.view(heads, 2, head_dim, -1)], dim=1)
        bias = torch.cat([self.query.bias.view(heads, 1, head_dim), self.key_value.bias.view(heads, 2, head_dim)], dim=1)
        return weight.flatten(0, 2), bias.flatten()

    def _single_query_projections(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head products for :meth:`_attend_single_query`: query→key-space ``[H·D, D]`` (scaled)
        with its bias ``[H·D]``, and head-space→output ``[D, H·D]`` with its bias ``[D]``."""
        heads, head_dim = self.num_heads, self.head_dim
        w_q = self.query.weight.view(heads, head_dim, -1)  # [H, dh, D]
        w_k, w_v = self.key_value.weight.view(heads, 2, head_dim, -1).unbind(1)  # [H, dh, D] each
        b_q = self.query.bias.view(heads, head_dim, 1)
        b_v = self.key_value.bias.view(heads, 2, head_dim)[:, 1]  # [H, dh]
        query_to_key = self.scale * w_k.transpose(1, 2) @ torch.cat([w_q, b_q], dim=2)  # [H, D, D+1]
        w_o = self.out.weight.view(-1, heads, head_dim).transpose(0, 1)  # [H, D_out, dh]
        head_to_out = (w_o @ w_v).transpose(0, 1).flatten(1)  # [D_out, H·D]
        out_bias = self.out.bias + (w_o @ b_v[..., None]).sum(dim=0)[:, 0]
        return query_to_key[..., :-1].flatten(0, 1), query_to_key[..., -1].flatten(), head_to_out, out_bias

    def _attend_single_query(
        self, query_source: torch.Tensor, key_source: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One query per sequence, computed in the *input* space of the keys: no key/value projection
        of the ``S`` key tokens at all. Per head, ``q·(W_k h_j + b_k) = (W_kᵀ q)·h_j + const`` (the
        constant cancels in the softmax) and ``Σ_j a_j (W_v h_j + b_v) = W_v Σ_j a_j h_j + b_v``
        (``Σ_j a_j = 1``); ``W_kᵀ W_q`` and ``W_o W_v`` are folded per head. Same result as the
        general path up to float rounding; the folded query/output projections are H times wider,
        so it pays when the keys outnumber the heads (IMU encoder: 7 keys, 3 heads, width 69 —
        ≈ 2.5× fewer multiply-adds than projecting every key)."""
        n, dim = query_source.shape
        s = key_source.shape[0] // n
        heads = self.num_heads
        query_to_key, query_bias, head_to_out, out_bias = cached_for_inference(
            self, "_single_query_cache", (self.query.weight, self.query.bias, self.key_value.weight,
                                          self.key_value.bias, self.out.weight, self.out.bias),
            self._single_query_projections)
        query_in_key_space = F.linear(query_source, query_to_key, query_bias).view(n, heads, dim)  # [N, H, D]
        keys = key_source.view(s, n, dim).transpose(0, 1)  # [N, S, D] view
        key_bias = self._zero if bias is None else bias.view(n, heads, s).transpose(1, 2)  # [N, S, H]
        logits = torch.baddbmm(key_bias, keys, query_in_key_space.transpose(1, 2))  # [N, S, H]
        attention = logits.softmax(dim=1)
        attended = torch.bmm(attention.transpose(1, 2), keys)  # [N, H, D]: Σ_j a_j h_j per head
        output = F.linear(attended.view(n, heads * dim), head_to_out, out_bias)
        return output, attention.transpose(1, 2).reshape(n * heads, 1, s)

    def forward(
        self, query_source: torch.Tensor, key_source: torch.Tensor, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[Sq, N, D]`` queries × ``[S, N, D]`` keys → ``([Sq, N, D], attention [N·H, Sq, S])``
        (the same tensor passed twice = self-attention with one joint projection)."""
        sq, n, dim = query_source.shape
        output, attention = self.forward_flat(query_source.reshape(sq * n, dim), key_source.reshape(-1, dim), n,
                                              bias, self_attention=query_source is key_source)
        return output.view(sq, n, dim), attention

    def forward_flat(
        self, query_source: torch.Tensor | None, key_source: torch.Tensor | None, batch: int,
        bias: torch.Tensor | None = None, self_attention: bool = False, joint_projected: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on sequence-major *flat* tensors: ``query_source [Sq·N, D]``, ``key_source
        [S·N, D]`` (row ``s·N + n``), ``batch`` = N; returns ``[Sq·N, D]``. ``self_attention``: the
        two are the same tokens (queries, keys and values from one projection). Callers that keep
        their token stream flat (the IMU encoder, the fusion) export to ONNX graphs without the
        reshapes that 3-D operands put around every matrix product. ``joint_projected``: the
        self-attention's joint projection ``[S·N, 3D]`` of the key source (rows ordered as
        :meth:`_joint_projection`'s), computed by the caller; the sources are then not needed."""
        n = batch
        heads = n * self.num_heads
        if joint_projected is None and self_attention:  # one projection for q, k and v
            weight, joint_bias = cached_for_inference(
                self, "_joint_projection_cache", (self.query.weight, self.query.bias, self.key_value.weight,
                                                  self.key_value.bias), self._joint_projection)
            joint_projected = F.linear(key_source, weight, joint_bias)
        if joint_projected is not None:
            # split along the last axis (not unbind): one ONNX Split, no Squeeze per part
            return self._attend(joint_projected.view(-1, heads, 3 * self.head_dim).split(self.head_dim, dim=2),
                                n, bias)
        if query_source.shape[0] == n:
            return self._attend_single_query(query_source, key_source, bias)
        q = linear(self.query, query_source).view(-1, heads, self.head_dim)
        k, v = linear(self.key_value, key_source).view(-1, heads, 2 * self.head_dim).split(self.head_dim, dim=2)
        return self._attend((q, k, v), n, bias)

    def _attend(self, qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor], n: int, bias: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected ``q [Sq, N·H, dh]``, ``k, v [S, N·H, dh]`` → flat output ``[Sq·N, D]``, attention."""
        q, k, v = qkv
        sq = q.shape[0]
        q_t = q.permute(1, 2, 0)  # [N·H, dh, Sq]
        k, v = k.transpose(0, 1), v.transpose(0, 1)  # [N·H, S, dh] views
        # logits = K Qᵀ·scale + bias in one op (a zero when there is no bias)
        logits = torch.baddbmm(self._zero if bias is None else bias, k, q_t, alpha=self.scale)  # [N·H, S, Sq]
        attention = logits.permute(1, 0, 2).softmax(dim=0).permute(1, 2, 0)  # [N·H, Sq, S]
        attended = torch.bmm(attention, v).transpose(0, 1).reshape(sq * n, self.num_heads * self.head_dim)
        return linear(self.out, attended), attention


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on ``[S, N, D]``: ``x + Attn(LN(x))``, then ``+ FFN(LN(·))`` (ReLU).

    ``feedforward_dim = 0`` gives an attention-only layer (``x + Attn(LN(x))``). With
    ``last_query_only`` only the last position is computed (query, residual, feed-forward)
    while keys/values still cover the whole sequence: exactly the last row of the full
    block, much cheaper — the IMU encoder only uses its last time step.
    """

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SequenceFirstAttention(dim, num_heads)
        self.has_feedforward = feedforward_dim > 0
        if self.has_feedforward:
            self.feedforward_norm = nn.LayerNorm(dim)
            self.feedforward = nn.Sequential(
                nn.Linear(dim, feedforward_dim), nn.ReLU(), nn.Linear(feedforward_dim, dim)
            )

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, last_query_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [S, N, D]``, key-major ``bias [N·H, S, S or 1]`` or None. Returns ``(x', attention
        [N·H, S or 1, S])`` (attention rows = queries)."""
        s, n, dim = x.shape
        x, attention = self.forward_flat(x.reshape(s * n, dim), n, bias, last_query_only)
        return x.view(-1, n, dim), attention

    def forward_flat(
        self, x: torch.Tensor, batch: int, bias: torch.Tensor | None = None, last_query_only: bool = False,
        joint_projected: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on a sequence-major flat stream ``x [S·N, D]`` (``batch`` = N), returning
        ``[S·N or N, D]`` (see :meth:`SequenceFirstAttention.forward_flat`). ``joint_projected``:
        the attention's joint q|k|v projection of ``LN(x)``, when the caller has a cheaper way to
        it (the IMU encoder's first layer); every query is then computed."""
        h = query_source = None
        if joint_projected is None:
            h = layer_norm(self.attention_norm, x)
            if last_query_only:
                x, query_source = x[-batch:], h[-batch:]
            else:
                query_source = h
        attended, attention = self.attention.forward_flat(query_source, h, batch, bias, self_attention=not last_query_only,
                                                          joint_projected=joint_projected)
        x = x + attended
        if self.has_feedforward:
            x = x + relu_mlp(self.feedforward, layer_norm(self.feedforward_norm, x))
        return x, attention


def cached_for_inference(module: nn.Module, name: str, sources: tuple[torch.Tensor, ...], compute):
    """``compute()``, cached on ``module`` while autograd is off (inference), keyed on the identity
    and version counter of ``sources`` (the parameters it is derived from): an optimiser step,
    ``load_state_dict`` or ``.to()`` invalidates it. With autograd on it is always recomputed."""
    if torch.is_grad_enabled():
        return compute()
    key = tuple((id(t), t._version) for t in sources)
    entry = module.__dict__.get(name)
    if entry is None or entry[0] != key:
        entry = (key, compute())
        module.__dict__[name] = entry
    return entry[1]


# Functional calls of the parameter-holding modules. On the tiny tensors of one frame the
# ``nn.Module.__call__`` machinery costs about as much as the op itself (~5 µs per call on
# the target CPU), so the per-frame hot paths (IMU encoder, fusion) call these instead.
# Parameters, state-dict names and results are exactly those of the modules.

def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, module.weight, module.bias)


def layer_norm(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def relu_mlp(module: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``Sequential(Linear, ReLU, Linear)`` applied functionally."""
    first, _, second = module
    return linear(second, torch.relu(linear(first, x)))


def key_padding_bias(key_valid: torch.Tensor, num_heads: int, dtype: torch.dtype, keep_diagonal: bool) -> torch.Tensor:
    """Key-major additive bias ``[N·H, S, 1 or S]`` from ``key_valid [N, S]``: 0 usable, −inf masked.

    With ``keep_diagonal`` every token may still attend to itself (``[N·H, S_key, S_query]``),
    so no softmax is ever empty even when all keys are masked; callers ignore such queries.
    """
    n, s = key_valid.shape
    keep = key_valid[:, :, None]
    if keep_diagonal:
        steps = torch.arange(s, device=key_valid.device)
        keep = keep | (steps[:, None] == steps[None, :])  # the diagonal (not torch.eye: bool EyeLike has no ONNX Runtime kernel)
    bias = torch.zeros(keep.shape, dtype=dtype, device=key_valid.device).masked_fill(~keep, float("-inf"))
    return bias.repeat_interleave(num_heads, dim=0)
