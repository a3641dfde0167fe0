"""MobileNetV2 (width 1.0), written here with torchvision's parameter names, so torchvision's
ImageNet checkpoint (``mobilenet_v2-b0353104.pth``, fetched by ``scripts/fetch_teacher_weights.sh``)
loads into it with every key matched (``models.checkpoints``; its ``classifier`` head is dropped).

Layout, as torchvision names it (t: expansion, c: channels, n: blocks, s: stride of the first block):

    features.0        conv 3x3/s2 3 -> 32, BN, ReLU6                       stride 2
    features.1        t=1 c=16  n=1 s=1                                    stride 2
    features.2-3      t=6 c=24  n=2 s=2                                    stride 4
    features.4-6      t=6 c=32  n=3 s=2   dilated at output stride 4       stride 8
    features.7-10     t=6 c=64  n=4 s=2   dilated at output stride <= 8    stride 16
    features.11-13    t=6 c=96  n=3 s=1
    features.14-16    t=6 c=160 n=3 s=2   dilated at output stride <= 16   stride 32
    features.17       t=6 c=320 n=1 s=1
    features.18       conv 1x1 320 -> 1280, BN, ReLU6

An inverted residual block is ``conv``: [1x1 expand, BN, ReLU6] (absent when t=1), [3x3 depthwise
(stride, dilation), BN, ReLU6], 1x1 project, BN; with the input added when the stride is 1 and the
channels do not change (never the case for the first block of a stage that changes the channels,
so replacing a stride by dilation never adds a shortcut).

Dilation, as ``models.resnet`` does it (DeepLab style): to reach output stride s, every strided
stage after s runs at stride 1; such a stage's first block keeps the dilation in force before it,
and its following blocks, and every block after it, use that dilation times the replaced stride.
E.g. at output stride 4: features.4 dilation 1, 5-6: 2, 7: 2, 8-13: 4, 14: 4, 15-17: 8.

Input: RGB in [0, 1] (B, 3, H, W), ImageNet-normalised inside. Output: the ``features`` trunk,
(B, 1280, H / s, W / s) for output stride s (each stride-2 conv rounds up: ceil at every step).
"""

from __future__ import annotations

import torch
from torch import nn

from models.resnet import IMAGENET_MEAN, IMAGENET_STD, OutputStride, frozen_teacher, initialise

__all__ = ["MobileNetV2", "frozen_teacher"]

# (expansion t, channels c, blocks n, stride s) per stage, after the stem (torchvision's table)
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
OUT_CHANNELS = 1280


def conv_bn_relu6(inp: int, out: int, *, kernel: int = 1, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """conv (no bias, 'same' padding for odd kernels) -> BN -> ReLU6, as indices 0, 1, 2."""
    padding = (kernel - 1) // 2 * dilation
    conv = nn.Conv2d(inp, out, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """(B, inp, H, W) -> (B, out, H / stride, W / stride): expand (x t), depthwise, project."""

    def __init__(self, inp: int, out: int, *, expansion: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        hidden = inp * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [conv_bn_relu6(inp, hidden)]
        layers += [
            conv_bn_relu6(hidden, hidden, kernel=3, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """The convolutional trunk of MobileNetV2 (no pooling, no classifier): (B, 3, H, W) in [0, 1]
    -> (B, 1280, H / s, W / s) for output stride s."""

    arch = "mobilenet_v2"
    out_channels = OUT_CHANNELS

    def __init__(self, *, output_stride: OutputStride = 4) -> None:
        super().__init__()
        if output_stride not in (4, 8, 16, 32):
            raise ValueError(f"output_stride must be one of 4, 8, 16, 32, not {output_stride}")
        self.output_stride = output_stride
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = [conv_bn_relu6(3, STEM_CHANNELS, kernel=3, stride=2)]
        inp, stride_so_far, dilation = STEM_CHANNELS, 2, 1
        for expansion, out, blocks, stride in STAGES:
            first_dilation = dilation  # a dilated stage's first block keeps the dilation before it
            if stride > 1 and stride_so_far >= output_stride:  # the target stride is reached: dilate instead
                dilation, stride = dilation * stride, 1
            stride_so_far *= stride
            layers.append(InvertedResidual(inp, out, expansion=expansion, stride=stride, dilation=first_dilation))
            layers += [InvertedResidual(out, out, expansion=expansion, dilation=dilation) for _ in range(1, blocks)]
            inp = out
        layers.append(conv_bn_relu6(inp, OUT_CHANNELS))
        self.features = nn.Sequential(*layers)
        # Used when no checkpoint is given. Over the fan-in, not torchvision's fan-out: that ignores
        # the depthwise groups and shrinks the activations to ~1e-9 by features.18, below float16's
        # range, so a random teacher's cache would hold zeros.
        initialise(self, mode="fan_in")

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (rgb - self.mean) / self.std  # (B, 3, H, W)
        return self.features(x)  # (B, 1280, H / s, W / s)
