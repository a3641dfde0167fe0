"""ResNet-50, written here with torchvision's parameter names, so torchvision, MoCo, SwAV,
DeepCluster-v2 and DINO checkpoints load into it (``models.checkpoints``).

The teacher of HVDistill is the encoder with its later stages dilated instead of strided: output
stride 4 dilates layer2, layer3 and layer4 (3 x 224 x 416 -> 2048 x 56 x 104); 8, 16 and 32 dilate
fewer. Dilation follows torchvision's rule: a dilated stage's first block keeps the previous
dilation, the following blocks use the new one. Input: RGB in [0, 1], ImageNet-normalised inside.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OutputStride = Literal[4, 8, 16, 32]
Encoder = TypeVar("Encoder", bound=nn.Module)
_DILATE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True), 4: (True, True, True)}


def initialise(model: nn.Module, *, mode: Literal["fan_in", "fan_out"]) -> None:
    """He-normal conv weights over each conv's fan-in or fan-out, BatchNorm as the identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1, with a projected shortcut when the shape changes."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50(nn.Module):
    """The convolutional trunk of ResNet-50 (no pooling, no classifier): (B, 3, H, W) in [0, 1]
    -> (B, 2048, H / s, W / s) for output stride s."""

    arch = "resnet50"
    out_channels = 2048

    def __init__(self, *, output_stride: OutputStride = 4) -> None:
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"output_stride must be one of {sorted(_DILATE)}, not {output_stride}")
        self.output_stride = output_stride
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes, self._dilation = 64, 1
        dilate = _DILATE[output_stride]
        self.layer1 = self._stage(64, 3, stride=1, dilate=False)
        self.layer2 = self._stage(128, 4, stride=2, dilate=dilate[0])
        self.layer3 = self._stage(256, 6, stride=2, dilate=dilate[1])
        self.layer4 = self._stage(512, 3, stride=2, dilate=dilate[2])
        initialise(self, mode="fan_out")  # torchvision's (used when no checkpoint is given)

    def _stage(self, planes: int, blocks: int, *, stride: int, dilate: bool) -> nn.Sequential:
        previous = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self._inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        layers = [Bottleneck(self._inplanes, planes, stride=stride, dilation=previous, downsample=downsample)]
        self._inplanes = out
        layers += [Bottleneck(out, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (rgb - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def frozen_teacher(encoder: Encoder) -> Encoder:
    """The encoder (``ResNet50`` or ``models.mobilenet.MobileNetV2``) as a teacher: eval mode
    (BatchNorm uses its running statistics), no gradients."""
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
