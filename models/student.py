"""The LiDAR student: MinkUNet34C (Res16UNet34C of MinkowskiEngine / SLidR) with the two HVDistill
heads (docs/METHOD.md section 5).

- ``final_1``: 1x1 conv 96 -> 64 (+ bias), L2-normalised per voxel: the point features of the
  image-to-point-voxel (IPV) loss.
- ``bev_head``: three kernel = stride convs (2,2,8), (2,2,5), (1,1,2) on ``final_1``'s normalised
  output, total stride (4, 4, 80) voxels = 0.4 m x 0.4 m x 8 m; then (ours) the z cells of each BEV
  column are averaged, so every occupied column of the 256 x 256 grid has exactly one feature,
  L2-normalised: the student side of the BEV loss.

Sparse tensors have coordinates (batch, x, y, z) in 0.1 m voxels (``pipeline.train.voxelize``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.frustum import BEV_SIZE, voxel_bev_cell
from models.minkowski import ME

LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)
PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
INIT_DIM = 32
D = 3  # spatial dimension


def conv(c_in: int, c_out: int, *, kernel_size, stride=1, bias: bool = False) -> ME.MinkowskiConvolution:
    return ME.MinkowskiConvolution(c_in, c_out, kernel_size=kernel_size, stride=stride, bias=bias, dimension=D)


def conv_bn_relu(c_in: int, c_out: int, *, kernel_size, stride, bn_momentum: float) -> nn.Sequential:
    return nn.Sequential(
        conv(c_in, c_out, kernel_size=kernel_size, stride=stride),
        ME.MinkowskiBatchNorm(c_out, momentum=bn_momentum),
        ME.MinkowskiReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """3^3 conv -> BN -> ReLU -> 3^3 conv -> BN, plus the input (1x1 conv + BN when the width
    changes), then ReLU. Stride 1: output coordinates are the input's."""

    def __init__(self, c_in: int, c_out: int, *, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = conv(c_in, c_out, kernel_size=3)
        self.bn1 = ME.MinkowskiBatchNorm(c_out, momentum=bn_momentum)
        self.conv2 = conv(c_out, c_out, kernel_size=3)
        self.bn2 = ME.MinkowskiBatchNorm(c_out, momentum=bn_momentum)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = None
        if c_in != c_out:
            self.downsample = nn.Sequential(conv(c_in, c_out, kernel_size=1), ME.MinkowskiBatchNorm(c_out, momentum=bn_momentum))

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def blocks(c_in: int, c_out: int, n: int, *, bn_momentum: float) -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(c_in if i == 0 else c_out, c_out, bn_momentum=bn_momentum) for i in range(n)])


class Up(nn.Module):
    """Transposed conv kernel 2 stride 2 + BN + ReLU, concatenation with the encoder output at the
    new stride (the skip), then blocks. Upsampling lands on the skip's existing coordinates."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, n_blocks: int, *, bn_momentum: float) -> None:
        super().__init__()
        self.up = nn.Sequential(
            ME.MinkowskiConvolutionTranspose(c_in, c_out, kernel_size=2, stride=2, bias=False, dimension=D),
            ME.MinkowskiBatchNorm(c_out, momentum=bn_momentum),
            ME.MinkowskiReLU(inplace=True),
        )
        self.blocks = blocks(c_out + c_skip, c_out, n_blocks, bn_momentum=bn_momentum)

    def forward(self, x: ME.SparseTensor, skip: ME.SparseTensor) -> ME.SparseTensor:
        return self.blocks(ME.cat(self.up(x), skip))


def planes(width: float = 1.0) -> tuple[int, tuple[int, ...]]:
    """(init dim, planes) of a MinkUNet34C whose every width is scaled by ``width`` (1.0: the
    published network; smaller: a narrower student of the same depth, for CPU experiments)."""
    if not width > 0:
        raise ValueError(f"student width must be > 0, got {width}")
    return max(1, round(INIT_DIM * width)), tuple(max(1, round(p * width)) for p in PLANES)


class MinkUNet34C(nn.Module):
    """(M, in_channels) at stride 1 -> (M, 96 * width) at stride 1 on the same coordinates, same row order.

    Encoder: 3^3 stem to 32, then four times [2^3 conv stride 2 + BN + ReLU, blocks] with
    32, 64, 128, 256 planes (strides 2, 4, 8, 16). Decoder: four times [transposed conv to
    256, 128, 96, 96 planes, concatenation with the encoder output at stride 8, 4, 2, 1, 2 blocks].
    ``width`` scales every one of these widths (parameter names stay the same).
    """

    def __init__(self, in_channels: int = 1, *, bn_momentum: float = 0.05, width: float = 1.0) -> None:
        super().__init__()
        init_dim, planes_ = planes(width)
        self.out_channels = planes_[-1]
        self.stem = conv_bn_relu(in_channels, init_dim, kernel_size=3, stride=1, bn_momentum=bn_momentum)
        widths = (init_dim, *planes_[:4])  # encoder output widths at strides 1, 2, 4, 8, 16
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(widths[i], widths[i], kernel_size=2, stride=2, bn_momentum=bn_momentum),
                blocks(widths[i], widths[i + 1], LAYERS[i], bn_momentum=bn_momentum),
            )
            for i in range(4)
        )
        ups, c_in = [], widths[4]
        for i in range(4):
            c_out, c_skip = planes_[4 + i], widths[3 - i]
            ups.append(Up(c_in, c_skip, c_out, LAYERS[4 + i], bn_momentum=bn_momentum))
            c_in = c_out
        self.up = nn.ModuleList(ups)

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        skips = [self.stem(x)]  # encoder outputs at strides 1, 2, 4, 8, 16; the last one feeds the decoder
        for down in self.down:
            skips.append(down(skips[-1]))
        out = skips.pop()
        for up in self.up:
            out = up(out, skips.pop())
        return out


@dataclass(frozen=True)
class StudentConfig:
    in_channels: int = 1  # LiDAR intensity
    feature_dim: int = 64
    bn_momentum: float = 0.05
    width: float = 1.0  # scales the backbone's widths (1.0: MinkUNet34C as published)


@dataclass
class StudentOutput:
    voxel_features: torch.Tensor  # (M, feature_dim) L2-normalised, row i <-> x.C[i]
    bev_index: torch.Tensor  # (K, 3) long [batch, ix, iy], sorted, unique, 0 <= ix, iy < 256
    bev_features: torch.Tensor  # (K, feature_dim) L2-normalised, one row per occupied in-range column


def collapse_z(bev: ME.SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the z cells of every BEV column of ``bev`` (coordinates in input voxel units) ->
    (K, 3) [batch, ix, iy] of the in-range columns, sorted, and their (K, C) mean features."""
    batch, xy = bev.C[:, 0].long(), bev.C[:, 1:3].long()  # (R,), (R, 2)
    ixy = voxel_bev_cell(xy)
    keep = ((ixy >= 0) & (ixy < BEV_SIZE)).all(dim=1)
    key = (batch[keep] * BEV_SIZE + ixy[keep, 0]) * BEV_SIZE + ixy[keep, 1]  # (R',)
    feats = bev.F[keep]  # (R', C)
    columns, column = torch.unique(key, return_inverse=True)  # (K,), (R',)
    total = feats.new_zeros(len(columns), feats.shape[1]).index_add_(0, column, feats)
    count = torch.bincount(column, minlength=len(columns)).to(feats.dtype)  # (K,) z cells, >= 1
    index = torch.stack([columns // (BEV_SIZE * BEV_SIZE), columns // BEV_SIZE % BEV_SIZE, columns % BEV_SIZE], dim=1)
    return index, total / count.unsqueeze(1)


class Student(nn.Module):
    """Backbone + ``final_1`` + ``bev_head``. The BEV columns are restricted to the 256 x 256 grid
    in x, y only: every z of the sweep is averaged into its column (z cells of 8 m from z = 0)."""

    def __init__(self, config: StudentConfig = StudentConfig()) -> None:
        super().__init__()
        self.config = config
        c, m = config.feature_dim, config.bn_momentum
        self.backbone = MinkUNet34C(config.in_channels, bn_momentum=m, width=config.width)
        self.final_1 = conv(self.backbone.out_channels, c, kernel_size=1, bias=True)
        # Our choice: a ReLU after each of the first two BNs (without a non-linearity the three convs
        # compose to little more than one linear map of the 0.4 x 0.4 x 8 m cell).
        self.bev_head = nn.Sequential(
            conv_bn_relu(c, c, kernel_size=[2, 2, 8], stride=[2, 2, 8], bn_momentum=m),
            conv_bn_relu(c, c, kernel_size=[2, 2, 5], stride=[2, 2, 5], bn_momentum=m),
            conv(c, c, kernel_size=[1, 1, 2], stride=[1, 1, 2]),
        )  # tensor stride (4, 4, 80)

    def forward(self, x: ME.SparseTensor) -> StudentOutput:
        voxels = self.final_1(self.backbone(x))  # (M, c), rows of x
        voxels = ME.SparseTensor(
            F.normalize(voxels.F, dim=1),
            coordinate_map_key=voxels.coordinate_map_key,
            coordinate_manager=voxels.coordinate_manager,
        )
        bev_index, bev_features = collapse_z(self.bev_head(voxels))
        return StudentOutput(voxel_features=voxels.F, bev_index=bev_index, bev_features=F.normalize(bev_features, dim=1))


def sparse_input(coords: list[torch.Tensor], feats: list[torch.Tensor]) -> ME.SparseTensor:
    """One sparse tensor of a batch: ``coords[b]`` (M_b, 3) integer voxels, unique within each item
    (``pipeline.train.voxelize``), ``feats[b]`` (M_b, C) or (M_b,). Coordinates become (sum M_b, 4)
    [batch, x, y, z]. Row i is voxel i of item 0, then of item 1, ...: the IPV loss relies on it
    (``voxel_features[inverse]``). MinkowskiEngine keeps the input order of unique coordinates on the
    CPU (tested) and, by its stable compaction, on a GPU, where it inserts them through a hash map
    (tests/gpu); the first call on each kind of device checks it and refuses to go on otherwise."""
    if len(coords) != len(feats):
        raise ValueError(f"{len(coords)} coordinate arrays but {len(feats)} feature arrays")
    for b, (c, f) in enumerate(zip(coords, feats)):
        if len(c) != len(f):
            raise ValueError(f"batch item {b}: {len(c)} voxels but {len(f)} feature rows")
    batched = ME.utils.batched_coordinates([torch.as_tensor(c).int() for c in coords])  # (M, 4) int32
    features = torch.cat([torch.as_tensor(f).float().reshape(len(f), -1) for f in feats])  # (M, C)
    x = ME.SparseTensor(features, coordinates=batched.to(features.device))
    if features.device.type not in _ROW_ORDER_CHECKED:
        if not torch.equal(x.C.cpu(), batched):
            raise RuntimeError(
                f"MinkowskiEngine {ME.__version__} on {features.device.type} reordered the voxels of a sparse tensor; "
                "the IPV loss would pair points with the wrong voxels. Build MinkowskiEngine with scripts/build_minkowski_cuda.sh "
                "and run tests/gpu."
            )
        _ROW_ORDER_CHECKED.add(features.device.type)
    return x


_ROW_ORDER_CHECKED: set[str] = set()  # device types on which sparse_input's row order was verified


def backbone_state_dict(student: Student) -> dict[str, torch.Tensor]:
    """The backbone's weights only (no heads), keyed as in ``MinkUNet34C``, for fine-tuning."""
    return {k: v.detach().clone() for k, v in student.backbone.state_dict().items()}
