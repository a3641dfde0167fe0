"""LSS depth transform of the teacher (BEVDepth-style, docs/METHOD.md section 5) and BEV pooling.

``DepthNet``: (I, 2048, h, w) features and (I, 22) camera vectors -> a softmax distribution over
the D = 118 depth bins and a 64-channel context per feature cell.

``bev_pool``: sums depth[d] * context over every frustum point (image, bin d, cell y, x) into the
BEV cell it falls in (``models.frustum.frustum_cells``), per example. The lifted tensor
(I, D, h, w, C) -- about 1.06 GB in fp32 for one nuScenes example -- is never built, neither for
the forward pass nor for the backward pass: both walk the depth bins in chunks.
``bev_pool_reference`` builds it, for tests and benchmarks.

``bev_pool_cells``: the same sums at a given list of cells only -- the cells the BEV loss reads (the
student's occupied columns). Frustum points that fall elsewhere are never touched, and no dense
(B, C, 256, 256) grid is built or copied: on the transfer experiment's data this is several times
faster than pooling the whole grid (``bench/train.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.frustum import BEV_SIZE, N_DEPTH_BINS

BEV_CELLS = BEV_SIZE * BEV_SIZE
BINS_PER_CHUNK = 8  # nuScenes: one chunk's (points, C) block is ~70 MB in fp32


# --- depth net -----------------------------------------------------------------------------------


def _conv_bn_relu(cin: int, cout: int, kernel: int, *, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, identity shortcut: conv3x3-BN-ReLU-conv3x3-BN (+x), ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + x, inplace=True)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 and three 3x3 convs (dilations 6, 12, 18) and a global
    average-pool branch, each BN + ReLU; concatenated, 1x1 conv back, BN, ReLU, dropout."""

    def __init__(self, channels: int, *, dilations: tuple[int, ...] = (6, 12, 18), dropout: float = 0.5) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(channels, channels, 1)] + [_conv_bn_relu(channels, channels, 3, dilation=d) for d in dilations])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(channels, channels, 1))
        self.project = _conv_bn_relu(channels * (len(dilations) + 2), channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])  # (I, C, 1, 1) -> (I, C, h, w)
        return self.dropout(self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1)))


class SEGate(nn.Module):
    """Camera-conditioned channel gate: x * sigmoid(conv1x1(camera embedding))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(embedding[:, :, None, None]))  # (I, C, h, w) * (I, C, 1, 1)


def _mlp(cin: int, cmid: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cmid), nn.ReLU(inplace=True), nn.Linear(cmid, cmid))


class DepthNet(nn.Module):
    """BEVDepth's camera-aware depth net. The reference's last 3x3 conv of the depth branch is
    mmcv's deformable conv; ours is a plain conv (docs/METHOD.md section 5)."""

    def __init__(
        self,
        *,
        in_channels: int = 2048,
        mid_channels: int = 256,
        context_channels: int = 64,
        depth_bins: int = N_DEPTH_BINS,
        camera_dims: int = 22,
        aspp_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.camera_bn = nn.BatchNorm1d(camera_dims)
        self.context_mlp, self.context_se = _mlp(camera_dims, mid_channels), SEGate(mid_channels)
        self.depth_mlp, self.depth_se = _mlp(camera_dims, mid_channels), SEGate(mid_channels)
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.depth_conv = nn.Sequential(
            BasicBlock(mid_channels),
            BasicBlock(mid_channels),
            BasicBlock(mid_channels),
            ASPP(mid_channels, dropout=aspp_dropout),
            nn.Conv2d(mid_channels, mid_channels, 3, padding=1),  # deformable in the reference
            nn.Conv2d(mid_channels, depth_bins, 1),
        )

    def forward(self, x: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (I, 2048, h, w), camera (I, 22) -> depth_probs (I, D, h, w), context (I, 64, h, w)."""
        x = self.reduce(x)  # (I, 256, h, w)
        cam = self.camera_bn(camera.to(self.camera_bn.weight.dtype))  # (I, 22), normalised in the parameter dtype
        context = self.context_conv(self.context_se(x, self.context_mlp(cam)))
        logits = self.depth_conv(self.depth_se(x, self.depth_mlp(cam)))  # (I, D, h, w)
        return logits.softmax(dim=1), context


# --- BEV pooling ---------------------------------------------------------------------------------


def _check(depth_probs: torch.Tensor, context: torch.Tensor, cells: torch.Tensor, image_batch: torch.Tensor) -> None:
    i, _, h, w = depth_probs.shape
    if cells.shape != depth_probs.shape:
        raise ValueError(f"cells {tuple(cells.shape)} must have the shape of depth_probs {tuple(depth_probs.shape)} (I, D, h, w)")
    if context.dim() != 4 or context.shape[0] != i or context.shape[-2:] != (h, w):
        raise ValueError(f"context {tuple(context.shape)} must be (I, C, h, w) = ({i}, C, {h}, {w}) like depth_probs")
    if image_batch.shape != (i,):
        raise ValueError(f"image_batch {tuple(image_batch.shape)} must hold one example index per image ({i},)")


def _targets(cells: torch.Tensor, image_batch: torch.Tensor, outside: int) -> torch.Tensor:
    """(I, k, h, w) row of each frustum point in the (B * 256 * 256 [+ 1], C) grid; ``outside``
    where the point is off the grid."""
    rows = image_batch.view(-1, 1, 1, 1) * BEV_CELLS + cells
    return torch.where(cells >= 0, rows, torch.full_like(rows, outside))


class _BEVPool(torch.autograd.Function):
    """Depth x context splatting, one chunk of depth bins at a time. The grid is accumulated
    channels-last, (B * 256 * 256 + 1, C), so each frustum point adds one contiguous row
    (index_add_ along dim 0); the last row collects the off-grid points and is dropped. Only the
    inputs are saved; the backward pass gathers the gradient rows of one chunk at a time."""

    @staticmethod
    def forward(ctx, depth, context, cells, image_batch, batch_size, bins_per_chunk):
        acc = torch.promote_types(torch.promote_types(depth.dtype, context.dtype), torch.float32)
        outside = batch_size * BEV_CELLS  # an extra row that collects off-grid points, dropped
        with torch.autocast(depth.device.type, enabled=False):
            pixels = context.to(acc).permute(0, 2, 3, 1).unsqueeze(1).contiguous()  # (I, 1, h, w, C)
            grid = pixels.new_zeros(outside + 1, pixels.shape[-1])  # (B*256*256 + 1, C)
            for d0 in range(0, depth.shape[1], bins_per_chunk):
                rows = _targets(cells[:, d0 : d0 + bins_per_chunk], image_batch, outside)  # (I, k, h, w)
                lifted = pixels * depth[:, d0 : d0 + bins_per_chunk, :, :, None].to(acc)  # (I, k, h, w, C): one chunk
                grid.index_add_(0, rows.reshape(-1), lifted.reshape(-1, lifted.shape[-1]))
        ctx.save_for_backward(depth, context, cells, image_batch)
        ctx.batch_size, ctx.bins_per_chunk = batch_size, bins_per_chunk
        return grid[:outside].view(batch_size, BEV_SIZE, BEV_SIZE, -1).permute(0, 3, 1, 2).contiguous()  # (B, C, 256, 256)

    @staticmethod
    def backward(ctx, grad_bev):
        depth, context, cells, image_batch = ctx.saved_tensors
        b, k = ctx.batch_size, ctx.bins_per_chunk
        acc = torch.promote_types(torch.promote_types(depth.dtype, context.dtype), torch.float32)
        grad_depth = grad_context = None
        with torch.autocast(depth.device.type, enabled=False):
            grad = grad_bev.to(acc).permute(0, 2, 3, 1).reshape(b * BEV_CELLS, -1)  # (B*256*256, C)
            grad = torch.cat([grad, grad.new_zeros(1, grad.shape[1])])  # last row: off the grid
            pixels = context.to(acc).permute(0, 2, 3, 1).unsqueeze(1).contiguous()  # (I, 1, h, w, C)
            if ctx.needs_input_grad[0]:
                grad_depth = torch.empty(depth.shape, dtype=acc, device=depth.device)
            if ctx.needs_input_grad[1]:
                grad_pixels = torch.zeros_like(pixels)
            for d0 in range(0, depth.shape[1], k):
                index = _targets(cells[:, d0 : d0 + k], image_batch, b * BEV_CELLS)  # (I, k, h, w)
                rows = grad.index_select(0, index.reshape(-1)).view(*index.shape, -1)  # (I, k, h, w, C): one chunk
                if grad_depth is not None:
                    grad_depth[:, d0 : d0 + k] = (rows * pixels).sum(-1)
                if ctx.needs_input_grad[1]:
                    grad_pixels += (rows * depth[:, d0 : d0 + k, :, :, None].to(acc)).sum(1, keepdim=True)
            if ctx.needs_input_grad[1]:
                grad_context = grad_pixels.squeeze(1).permute(0, 3, 1, 2).to(context.dtype).contiguous()
            if grad_depth is not None:
                grad_depth = grad_depth.to(depth.dtype)
        return grad_depth, grad_context, None, None, None, None


def bev_pool(
    depth_probs: torch.Tensor,  # (I, D, h, w)
    context: torch.Tensor,  # (I, C, h, w)
    cells: torch.Tensor,  # (I, D, h, w) long, ix * 256 + iy, -1 off the grid
    image_batch: torch.Tensor,  # (I,) long, example of each image
    batch_size: int,
    *,
    bins_per_chunk: int = BINS_PER_CHUNK,
) -> torch.Tensor:
    """(B, C, 256, 256): BEV[b, :, ix, iy] = sum over the frustum points of example b's images that
    fall in (ix, iy) of depth_probs[i, d, y, x] * context[i, :, y, x]. Accumulates in float32 (or
    float64 for float64 inputs); memory grows with one chunk of depth bins, not with D."""
    _check(depth_probs, context, cells, image_batch)
    return _BEVPool.apply(depth_probs, context, cells, image_batch, batch_size, bins_per_chunk)


class _BEVPoolCells(torch.autograd.Function):
    """Sums depth x context of the selected frustum points into K output rows, in blocks of
    ``points_per_chunk`` points; saves only the inputs and the (row, frustum point, pixel) lists."""

    @staticmethod
    def forward(ctx, depth, context, out_row, frustum, pixel, n_rows, points_per_chunk):
        acc = torch.promote_types(torch.promote_types(depth.dtype, context.dtype), torch.float32)
        with torch.autocast(depth.device.type, enabled=False):
            pixels = context.to(acc).permute(0, 2, 3, 1).reshape(-1, context.shape[1])  # (I*h*w, C)
            weights = depth.to(acc).reshape(-1)  # (I*D*h*w,)
            out = pixels.new_zeros(n_rows, pixels.shape[1])  # (K, C)
            for a in range(0, len(out_row), points_per_chunk):
                b = a + points_per_chunk
                out.index_add_(0, out_row[a:b], pixels[pixel[a:b]] * weights[frustum[a:b], None])
        ctx.save_for_backward(depth, context, out_row, frustum, pixel)
        ctx.points_per_chunk = points_per_chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        depth, context, out_row, frustum, pixel = ctx.saved_tensors
        acc = torch.promote_types(torch.promote_types(depth.dtype, context.dtype), torch.float32)
        grad_depth = grad_context = None
        with torch.autocast(depth.device.type, enabled=False):
            grad_out = grad_out.to(acc)
            pixels = context.to(acc).permute(0, 2, 3, 1).reshape(-1, context.shape[1])  # (I*h*w, C)
            weights = depth.to(acc).reshape(-1)
            grad_weights = torch.zeros_like(weights) if ctx.needs_input_grad[0] else None
            grad_pixels = torch.zeros_like(pixels) if ctx.needs_input_grad[1] else None
            for a in range(0, len(out_row), ctx.points_per_chunk):
                b = a + ctx.points_per_chunk
                rows = grad_out[out_row[a:b]]  # (n, C)
                if grad_weights is not None:  # each frustum point is listed once: plain assignment
                    grad_weights[frustum[a:b]] = (rows * pixels[pixel[a:b]]).sum(1)
                if grad_pixels is not None:
                    grad_pixels.index_add_(0, pixel[a:b], rows * weights[frustum[a:b], None])
            if grad_weights is not None:
                grad_depth = grad_weights.view(depth.shape).to(depth.dtype)
            if grad_pixels is not None:
                i, c, h, w = context.shape
                grad_context = grad_pixels.view(i, h, w, c).permute(0, 3, 1, 2).to(context.dtype).contiguous()
        return grad_depth, grad_context, None, None, None, None, None


def bev_pool_cells(
    depth_probs: torch.Tensor,  # (I, D, h, w)
    context: torch.Tensor,  # (I, C, h, w)
    cells: torch.Tensor,  # (I, D, h, w) long, ix * 256 + iy, -1 off the grid
    image_batch: torch.Tensor,  # (I,) long, example of each image
    batch_size: int,
    rows: torch.Tensor,  # (K,) long, distinct flat cells b * 256 * 256 + ix * 256 + iy
    *,
    points_per_chunk: int = 1 << 20,
) -> torch.Tensor:
    """(K, C): row k equals ``bev_pool(...)[b, :, ix, iy]`` of cell ``rows[k]``; cells no frustum
    point reaches are zero. Only the frustum points that fall in those cells are visited."""
    _check(depth_probs, context, cells, image_batch)
    n_cells = batch_size * BEV_CELLS
    if rows.dim() != 1 or (len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_cells)):
        raise ValueError(f"rows must be a (K,) list of flat cells in 0..{n_cells - 1}")
    with torch.no_grad():
        lookup = torch.full((n_cells + 1,), -1, dtype=torch.long, device=cells.device)  # cell -> output row
        lookup[rows.to(cells.device)] = torch.arange(len(rows), device=cells.device)
        target = torch.where(cells >= 0, image_batch.view(-1, 1, 1, 1).to(cells.device) * BEV_CELLS + cells, torch.full_like(cells, n_cells))
        out_row = lookup[target.reshape(-1)]  # (I*D*h*w,)
        frustum = torch.nonzero(out_row >= 0).squeeze(1)  # the frustum points that count
        out_row = out_row[frustum]
        i, d, h, w = cells.shape
        pixel = frustum // (d * h * w) * (h * w) + frustum % (h * w)  # row of (image, y, x) in the (I*h*w, C) context
    return _BEVPoolCells.apply(depth_probs, context, out_row, frustum, pixel, len(rows), points_per_chunk)


def bev_pool_reference(depth_probs, context, cells, image_batch, batch_size) -> torch.Tensor:
    """``bev_pool`` the naive way: materialise the lifted (I, D, h, w, C) tensor and scatter it."""
    _check(depth_probs, context, cells, image_batch)
    lifted = depth_probs.unsqueeze(-1) * context.permute(0, 2, 3, 1).unsqueeze(1)  # (I, D, h, w, C)
    keep = cells >= 0
    rows = (image_batch.view(-1, 1, 1, 1) * BEV_CELLS + cells)[keep]
    grid = lifted.new_zeros(batch_size * BEV_CELLS, lifted.shape[-1]).index_add(0, rows, lifted[keep])
    return grid.view(batch_size, BEV_SIZE, BEV_SIZE, -1).permute(0, 3, 1, 2)
