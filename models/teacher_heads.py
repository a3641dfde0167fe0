"""The trainable parts of the teacher (docs/METHOD.md section 5) on top of the cached frozen encoder
features, and the ``TeacherHeads`` module that chains them with the LSS transform:

    cached features (I, C | C', h, w)
      -> Decoder   -> pixel features (I, 64, 4h, 4w), L2-normalised      (IPV targets)
      -> Bridge    -> (I, C, h, w)                                       (back to the cached grid)
      -> DepthNet  -> depth probabilities (I, D, h, w), context (I, 64, h, w)
      -> bev_pool  -> (B, 64, 256, 256), L2-normalised over channels       (BEV targets)

``I`` counts camera images over the whole batch (6 per example); ``image_batch`` (I,) says which
example each image belongs to. ``C`` is the frozen encoder's channel count, ``in_channels`` of every
module here: 2048 for ResNet-50 (the paper's), 1280 for MobileNetV2 -- the teacher cache's
``TeacherCacheParams.encoder_channels``; ``C'`` that of its optional PCA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.frustum import N_DEPTH_BINS
from models.lss import DepthNet, bev_pool, bev_pool_cells

BEV_NORM_EPS = 1e-6  # pooled cells with a smaller norm are treated as empty (stay zero)
CAMERA_DIMS = 22


def camera_vector(intrinsics: torch.Tensor, img_aug: torch.Tensor, cam_to_ego: torch.Tensor) -> torch.Tensor:
    """(..., 22) camera-aware input of the depth net: fx, fy, cx, cy (4), the first two rows of the
    3x3 image augmentation (6), camera->ego [:3, :4] (12). Inputs (..., 3, 3), (..., 3, 3), (..., 4, 4)."""
    k = torch.stack([intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]], dim=-1)
    aug = img_aug[..., :2, :3].flatten(-2)  # (..., 6)
    ego = cam_to_ego[..., :3, :4].flatten(-2)  # (..., 12)
    dtype = torch.promote_types(torch.promote_types(k.dtype, aug.dtype), ego.dtype)
    return torch.cat([k.to(dtype), aug.to(dtype), ego.to(dtype)], dim=-1)


class Decoder(nn.Module):
    """1x1 conv C -> 64 (C = ``in_channels``), bilinear upsampling, L2 normalisation: the IPV pixel
    features.

    With ``pca = (mean (C,), components (C', C))`` the input holds PCA codes (C' channels)
    and the conv acts exactly as on the restored features ``components^T code + mean``: its
    weight and bias are composed with the basis (W components^T, W mean + b), so the C
    channels are never rebuilt and the parameter keeps its (64, C, 1, 1) shape."""

    def __init__(self, *, in_channels: int = 2048, out_channels: int = 64, upsample: int = 4) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, features: torch.Tensor, pca: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        weight, bias = self.conv.weight.flatten(1), self.conv.bias  # (64, C), (64,)
        if pca is not None:
            mean, components = (torch.as_tensor(t, dtype=weight.dtype, device=weight.device) for t in pca)
            if components.shape != (features.shape[1], weight.shape[1]) or mean.shape != (weight.shape[1],):
                raise ValueError(
                    f"PCA basis of shape mean {tuple(mean.shape)}, components {tuple(components.shape)} does not fit "
                    f"features with {features.shape[1]} channels and a conv on {weight.shape[1]}: expected mean "
                    f"({weight.shape[1]},) and components ({features.shape[1]}, {weight.shape[1]})"
                )
            bias = bias + weight @ mean
            weight = weight @ components.T  # (64, C')
        x = F.conv2d(features.to(weight.dtype), weight[:, :, None, None], bias)  # (I, 64, h, w)
        h, w = x.shape[-2:]
        x = F.interpolate(x, size=(h * self.upsample, w * self.upsample), mode="bilinear", align_corners=False)
        return F.normalize(x, dim=1)  # (I, 64, H, W)


class Bridge(nn.Module):
    """Decoder output back to an encoder-like map on the cached grid: conv 2x2/s2 64 -> 128, BN,
    ReLU, conv 3x3/s2 128 -> C, BN: (I, 64, H, W) -> (I, C, H/4, W/4), C = ``out_channels``, the
    encoder's channel count. Its BatchNorms train normally (the reference leaves them in eval mode
    by accident)."""

    def __init__(self, *, in_channels: int = 64, mid_channels: int = 128, out_channels: int = 2048) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 2, stride=2, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, pixel_features: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_features)


@dataclass
class HeadsOutput:
    pixel_features: torch.Tensor  # (I, 64, H, W), L2-normalised over channels
    depth_probs: torch.Tensor | None  # (I, D, h, w), softmax over D (None when not asked for)
    bev: torch.Tensor | None  # (B, 64, 256, 256) -- or (K, 64) at ``bev_rows`` -- L2-normalised over channels; empty cells zero


class TeacherHeads(nn.Module):
    """Decoder, bridge and depth net; ``forward`` turns cached features into the IPV pixel targets,
    the depth distribution (for the depth loss) and the BEV targets. ``in_channels``: the frozen
    encoder's channel count C (``TeacherCacheParams.encoder_channels``), whether or not the cache
    holds a PCA of it. ``bridge_channels`` (default: C, as in the reference) is the width the bridge
    maps back to and the depth net reads; ``depth_channels`` the depth net's inner width (BEVDepth's
    256). Narrower values make the heads cheaper (the CPU transfer experiment)."""

    def __init__(
        self,
        *,
        in_channels: int = 2048,
        feature_dim: int = 64,
        depth_bins: int = N_DEPTH_BINS,
        bridge_channels: int | None = None,
        depth_channels: int = 256,
    ) -> None:
        super().__init__()
        bridge_channels = bridge_channels or in_channels
        self.decoder = Decoder(in_channels=in_channels, out_channels=feature_dim)
        self.bridge = Bridge(in_channels=feature_dim, out_channels=bridge_channels)
        self.depthnet = DepthNet(
            in_channels=bridge_channels, mid_channels=depth_channels, context_channels=feature_dim, depth_bins=depth_bins, camera_dims=CAMERA_DIMS
        )

    def forward(
        self,
        features: torch.Tensor,  # (I, C | C', h, w) cached encoder features (or PCA codes)
        camera: torch.Tensor,  # (I, 22) camera_vector
        cells: torch.Tensor,  # (I, D, h, w) long, flat BEV cell of each frustum point, -1 outside
        image_batch: torch.Tensor,  # (I,) long, example of each image
        batch_size: int,
        *,
        pca: tuple[torch.Tensor, torch.Tensor] | None = None,
        lss: bool = True,
        bev_rows: torch.Tensor | None = None,
    ) -> HeadsOutput:
        """``lss=False``: the decoder only (the SLidR and PPKT baselines need no depth or BEV).
        ``bev_rows`` (K,) flat cells b * 256 * 256 + ix * 256 + iy: the BEV features at those cells
        only, (K, 64) (``bev_pool_cells``), instead of the whole grid."""
        pixel = self.decoder(features, pca)  # (I, 64, 4h, 4w)
        if not lss:
            return HeadsOutput(pixel_features=pixel, depth_probs=None, bev=None)
        x = self.bridge(pixel)  # (I, C, h, w)
        if x.shape[-2:] != cells.shape[-2:]:
            raise ValueError(f"frustum cells are on a {tuple(cells.shape[-2:])} grid, the features on {tuple(x.shape[-2:])}")
        depth, context = self.depthnet(x, camera)  # (I, D, h, w), (I, 64, h, w)
        if bev_rows is None:
            bev = bev_pool(depth, context, cells, image_batch, batch_size)  # (B, 64, 256, 256)
        else:
            bev = bev_pool_cells(depth, context, cells, image_batch, batch_size, bev_rows)  # (K, 64)
        return HeadsOutput(pixel_features=pixel, depth_probs=depth, bev=F.normalize(bev, dim=1, eps=BEV_NORM_EPS))
