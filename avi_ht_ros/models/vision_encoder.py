"""Vision encoder: ResNet on perspective crops → feature transform layer → ConvGRU → visual token.

Follows UmeTrack (§3.1–3.2) at CPU size:

* **Perspective crops** (made by :mod:`avi_ht_ros.common.camera`): each view ``v`` is a
  96×96 mono image of a *virtual* pinhole camera with intrinsics ``K_v`` (crop pixels) and
  rotation ``R_v = R_virtual_from_camera`` (same centre as the physical camera).
* **Reference camera** (``ftl_reference``): ``view0`` (default) — as in UmeTrack, the
  virtual camera of view 0 (``R_ref = R_0``); or ``camera`` — the physical camera
  (``R_ref = I``). Every view's features are rotated into it, the head regresses the wrist
  rotation in it, and the model maps that rotation to the physical camera with ``R_refᵀ``.
* **Feature transform layer (FTL)**: a 1×1 conv lifts each feature-map cell to ``G``
  3-vectors, which are treated as directions in the crop camera: they are unprojected with
  ``K_v⁻¹`` (composed with the map from normalised crop coordinates [−1, 1] to pixels, so
  for a centred crop this scales x, y by tan(half field of view)) and rotated into the
  reference camera with ``R_ref R_vᵀ``: ``z3d = R_ref R_vᵀ K_v⁻¹ S z``. Features of different
  views thus live in one 3D space ("camera-disentangled", Remelli et al. / UmeTrack Eq. 1);
  with ``view0`` the rotation is the identity for view 0, so a crop's appearance maps to a
  pose independently of where in the image the crop was taken.
* **Multi-view fusion**: views are concatenated along channels and mixed by a 1×1 conv
  (UmeTrack's MVF); a view flagged invalid (hand not in it) contributes zeros.
* **Temporal module**: a ConvGRU over the fused map; its hidden state ``[B, C_h, h, w]`` is
  the recurrent state passed frame to frame.
* **Visual token**: flattened GRU output + crop geometry vector → 2-layer MLP → ``d``.

Crop geometry vector (``CROP_GEOMETRY_DIM`` = 15 numbers, view 0): tan of the half field
of view in x and y, the principal-point offset from the crop centre (in normalised image
units), the log of the depth prior ``z_ref`` (m), the hand scale, and ``R_0`` flattened.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from avi_ht_ros.models.attention import cached_for_inference, relu_mlp
from avi_ht_ros.models.config import VisionEncoderConfig

CROP_GEOMETRY_DIM = 15


def pinhole_inverse(K: torch.Tensor) -> torch.Tensor:
    """``K⁻¹ [..., 3, 3]`` of pinhole matrices ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``, written
    out with elementwise ops (what the ONNX export records; ``linalg_solve`` does not export)."""
    fx, skew, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([
        torch.stack([1.0 / fx, -skew / (fx * fy), (skew * cy - cx * fy) / (fx * fy)], dim=-1),
        torch.stack([zero, 1.0 / fy, -cy / fy], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    ], dim=-2)


def normalized_crop_to_ray(K_virtual: torch.Tensor, crop_size: int) -> torch.Tensor:
    """``M = K⁻¹ S`` ``[..., 3, 3]``: homogeneous normalised crop coordinates → ray in the crop camera.

    ``S`` maps normalised coordinates (−1 … 1 from the crop's outer edge to outer edge) to
    pixels in the convention of :mod:`avi_ht_ros.common.camera` (pixel ``i`` centred at
    coordinate ``i``, so a centred crop has ``c = (W − 1)/2``): ``u = (x + 1)·W/2 − ½``.
    The ray's z component is 1; for a centred crop ``M = diag(tan(½fov_x), tan(½fov_y), 1)``.

    Eager code solves the system (the operation the shipped models were trained and evaluated
    with, bit for bit); an ONNX export records :func:`pinhole_inverse` instead (equal to ~1e-7).
    """
    half = crop_size / 2.0
    S = K_virtual.new_tensor([[half, 0.0, half - 0.5], [0.0, half, half - 0.5], [0.0, 0.0, 1.0]])
    if torch.onnx.is_in_onnx_export():
        return pinhole_inverse(K_virtual) @ S
    return torch.linalg.solve(K_virtual, S.expand(K_virtual.shape[:-2] + (3, 3)))


def reference_depth(ray_from_normalized: torch.Tensor, hand_scale: torch.Tensor, hand_extent_m: float) -> torch.Tensor:
    """Depth prior ``z_ref [...]``: a hand ``hand_extent_m·scale`` wide fills the crop's field of view.

    ``ray_from_normalized`` is :func:`normalized_crop_to_ray` of view 0; its diagonal holds
    tan(half fov) in x and y.
    """
    tan_half_fov = 0.5 * (ray_from_normalized[..., 0, 0] + ray_from_normalized[..., 1, 1])
    return hand_extent_m * hand_scale / (2.0 * tan_half_fov)


def crop_geometry_vector(
    ray_from_normalized: torch.Tensor, R_virtual_from_camera: torch.Tensor, hand_scale: torch.Tensor,
    hand_extent_m: float,
) -> torch.Tensor:
    """``[B, 15]`` geometry of view 0 fed to the network (see module docstring)."""
    m = ray_from_normalized
    z_ref = reference_depth(m, hand_scale, hand_extent_m)
    return torch.cat(
        [
            m[:, 0, 0:1], m[:, 1, 1:2], m[:, 0, 2:3], m[:, 1, 2:3],
            torch.log(z_ref)[:, None], hand_scale[:, None], R_virtual_from_camera.reshape(-1, 9),
        ],
        dim=1,
    )


class VisionEncoding(NamedTuple):
    """What :class:`VisionEncoder` returns for one frame."""

    visual_token: torch.Tensor  # [B, d] F_vis*
    geometry: torch.Tensor  # [B, 15] crop geometry of view 0
    ray_from_normalized: torch.Tensor  # [B, 3, 3] M = K⁻¹S of view 0
    R_virtual_from_camera: torch.Tensor  # [B, 3, 3] view 0's crop rotation
    R_reference_from_camera: torch.Tensor  # [B, 3, 3] frame the FTL features (and the head's rotation) live in
    state: torch.Tensor  # [B, C_h, h, w] new ConvGRU state


# At inference the convolutions run on channels-last (NHWC) tensors: on one CPU thread the
# small 3×3 convolutions of a 96-px crop are ~1.4× faster than in NCHW (PyTorch's NCHW path
# for these shapes is im2col + GEMM; NHWC goes to oneDNN). Memory format changes only the
# layout, not the logical tensor: every later reshape/flatten sees the same NCHW indexing.
def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def conv(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` without the ``nn.Module`` call overhead (see :mod:`avi_ht_ros.models.attention`);
    at inference on channels-last tensors with a cached channels-last weight."""
    if torch.is_grad_enabled():
        return F.conv2d(x, module.weight, module.bias, module.stride, module.padding)
    weight = cached_for_inference(module, "_channels_last_weight_cache", (module.weight,),
                                  lambda: _channels_last(module.weight))
    return F.conv2d(_channels_last(x), weight, module.bias, module.stride, module.padding)


def _fold_batch_norm(convolution: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution's weight (channels-last, as inference runs it) and bias with ``norm`` folded in."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = norm.bias - norm.running_mean * scale
    if convolution.bias is not None:
        bias = bias + convolution.bias * scale
    return _channels_last(convolution.weight * scale[:, None, None, None]), bias


def conv_bn(convolution: nn.Conv2d, norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Convolution then batch norm. At inference (eval mode, autograd off) this is one
    convolution with the batch norm folded into its weights (cached until any of them
    changes): the same result with one op instead of two."""
    if norm.training or torch.is_grad_enabled():
        return norm(convolution(x))
    weight, bias = cached_for_inference(
        convolution, "_folded_batch_norm_cache",
        (convolution.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var),
        lambda: _fold_batch_norm(convolution, norm),
    )
    return F.conv2d(_channels_last(x), weight, bias, convolution.stride, convolution.padding)


class ResidualBlock(nn.Module):
    """ResNet basic block (two 3×3 convs, batch norm, projection shortcut when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else conv_bn(self.shortcut[0], self.shortcut[1], x)
        out = torch.relu(conv_bn(self.conv1, self.bn1, x))
        return torch.relu(conv_bn(self.conv2, self.bn2, out) + identity)


class ResNetBackbone(nn.Module):
    """Stride-2 stem + stride-2 residual stages: 96×96×1 → (96/2^(1+stages))² × C."""

    def __init__(self, config: VisionEncoderConfig):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, config.stem_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(config.stem_channels), nn.ReLU()
        )
        blocks = []
        in_channels = config.stem_channels
        for out_channels, num_blocks in zip(config.stage_channels, config.blocks_per_stage):
            blocks.append(ResidualBlock(in_channels, out_channels, stride=2))
            blocks.extend(ResidualBlock(out_channels, out_channels, stride=1) for _ in range(num_blocks - 1))
            in_channels = out_channels
        self.stages = nn.Sequential(*blocks)
        self.out_channels = in_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(conv_bn(self.stem[0], self.stem[1], images))
        for block in self.stages:
            x = block(x)
        return x


class ConvGRUCell(nn.Module):
    """Convolutional GRU (3×3 gates); ``h' = (1 − z)·h + z·tanh(W[x, r·h])``."""

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, 3, 1, 1)
        self.candidate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        update, reset = torch.sigmoid(conv(self.gates, torch.cat([x, hidden], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(conv(self.candidate, torch.cat([x, reset * hidden], dim=1)))
        return hidden + update * (candidate - hidden)


class VisionEncoder(nn.Module):
    """Crops of one frame → visual token ``[B, d]``, crop geometry ``[B, 15]`` and the new GRU state."""

    def __init__(self, config: VisionEncoderConfig, embed_dim: int):
        super().__init__()
        self.config = config
        self.num_views = config.num_views
        self.crop_size = config.crop_size
        self.backbone = ResNetBackbone(config)
        self.feature_size = config.crop_size // 2 ** (1 + len(config.stage_channels))
        self.ftl_groups = config.ftl_groups
        self.lift = nn.Conv2d(self.backbone.out_channels, 3 * config.ftl_groups, 1)
        fused_channels = 3 * config.ftl_groups
        self.view_fusion = (
            nn.Conv2d(config.num_views * fused_channels, fused_channels, 1) if config.num_views > 1 else None
        )
        # Ray direction of every feature cell in the reference camera (3 channels, CoordConv-like).
        cell_centres = (torch.arange(self.feature_size, dtype=torch.float32) + 0.5) / self.feature_size * 2.0 - 1.0
        grid_y, grid_x = torch.meshgrid(cell_centres, cell_centres, indexing="ij")
        self.register_buffer("cell_coordinates", torch.stack([grid_x, grid_y, torch.ones_like(grid_x)]))  # [3, h, w]
        self.recurrent = ConvGRUCell(fused_channels + 3, config.recurrent_channels)
        flat = config.recurrent_channels * self.feature_size**2
        self.token_mlp = nn.Sequential(
            nn.Linear(flat + CROP_GEOMETRY_DIM, 2 * embed_dim), nn.ReLU(), nn.Linear(2 * embed_dim, embed_dim)
        )

    def initial_state(self, batch_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """Zero ConvGRU hidden state ``[B, C_h, h, w]`` (start of a track)."""
        return torch.zeros(
            batch_size, self.config.recurrent_channels, self.feature_size, self.feature_size, device=device, dtype=dtype
        )

    def forward(
        self,
        crops: torch.Tensor,
        K_virtual: torch.Tensor,
        R_virtual_from_camera: torch.Tensor,
        hand_scale: torch.Tensor,
        view_valid: torch.Tensor | None,
        state: torch.Tensor | None,
    ) -> VisionEncoding:
        """``crops [B, V, H, W]`` (mono, 0…1), ``K_virtual``/``R_virtual_from_camera [B, V, 3, 3]``,
        ``hand_scale [B]``, ``view_valid [B, V]`` or None, ``state [B, C_h, h, w]`` or None."""
        b, v, height, width = crops.shape
        if v != self.num_views or height != self.crop_size or width != self.crop_size:
            raise ValueError(
                f"crops must be [B, {self.num_views}, {self.crop_size}, {self.crop_size}], got {tuple(crops.shape)}"
            )
        images = (crops.reshape(b * v, 1, height, width) - 0.5) / 0.25
        feature_map = conv(self.lift, self.backbone(images))  # [B·V, 3G, h, w]
        h = w = self.feature_size
        K_virtual = K_virtual.to(crops.dtype)
        R_virtual_from_camera = R_virtual_from_camera.to(crops.dtype)
        ray_from_normalized = normalized_crop_to_ray(K_virtual, self.crop_size)  # [B, V, 3, 3]
        if self.config.ftl_reference == "view0":
            R_reference_from_camera = R_virtual_from_camera[:, 0]
        else:  # "camera": the physical camera itself
            R_reference_from_camera = torch.eye(3, dtype=crops.dtype, device=crops.device).expand(b, 3, 3)
        reference_from_view = R_reference_from_camera[:, None] @ R_virtual_from_camera.transpose(-1, -2)
        to_reference = reference_from_view @ ray_from_normalized  # [B, V, 3, 3]: FTL
        vectors = feature_map.reshape(b, v, self.ftl_groups, 3, h * w)
        lifted = torch.einsum("bvij,bvgjn->bvgin", to_reference, vectors)
        if view_valid is not None:
            lifted = lifted * view_valid.to(lifted.dtype)[:, :, None, None, None]
        lifted = lifted.reshape(b, v * 3 * self.ftl_groups, h, w)
        fused = lifted if self.view_fusion is None else conv(self.view_fusion, lifted)
        cell_rays = (to_reference[:, 0] @ self.cell_coordinates.reshape(3, h * w)).reshape(b, 3, h, w)
        cell_rays = cell_rays / cell_rays.norm(dim=1, keepdim=True)
        if state is None:
            state = self.initial_state(b, crops.device, crops.dtype)
        new_state = self.recurrent(torch.cat([fused, cell_rays], dim=1), state)
        geometry = crop_geometry_vector(
            ray_from_normalized[:, 0], R_virtual_from_camera[:, 0], hand_scale, self.config.reference_hand_extent_m
        )
        visual_token = relu_mlp(self.token_mlp, torch.cat([new_state.flatten(1), geometry], dim=1))
        return VisionEncoding(
            visual_token=visual_token,
            geometry=geometry,
            ray_from_normalized=ray_from_normalized[:, 0],
            R_virtual_from_camera=R_virtual_from_camera[:, 0],
            R_reference_from_camera=R_reference_from_camera,
            state=new_state,
        )
