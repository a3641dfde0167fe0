"""The MobileNetV2 teacher: torchvision's state dict layout, written here from torchvision's layer
table (not from our model), loads with every key matched and gives the output of an independent
functional forward over those weights; dilation by output stride; the other architecture's weights
are a clear error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import CheckpointError, load_encoder_weights
from models.mobilenet import MobileNetV2, frozen_teacher
from models.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50

# torchvision's MobileNetV2 table: (expansion t, channels c, blocks n, first stride s)
TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _blocks() -> list[tuple[int, int, int, int, int]]:
    """(t, inp, out, stride, first-of-stage) per inverted residual block, features.1 to features.17."""
    blocks, inp = [], 32
    for t, c, n, s in TABLE:
        for i in range(n):
            blocks.append((t, inp, c, s if i == 0 else 1, i == 0))
            inp = c
    return blocks


def _plan(output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of each block's depthwise conv: once the target stride is reached, a
    stride-2 stage runs at stride 1; its first block keeps the old dilation, the rest double it."""
    plan, reached, dilation = [], 2, 1
    for _, _, _, stride, first in _blocks():
        if first and stride == 2 and reached >= output_stride:
            plan.append((1, dilation))
            dilation *= 2
        else:
            plan.append((stride, dilation))
            reached *= stride
    return plan


def _torchvision_state(seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-named MobileNetV2 checkpoint with random weights, non-trivial BatchNorm
    statistics and the ImageNet classifier."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, shape: tuple[int, ...]) -> None:
        fan_in = shape[1] * shape[2] * shape[3]
        state[name] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5

    def bn(prefix: str, n: int) -> None:
        state.update({
            f"{prefix}.weight": torch.rand(n, generator=g) * 0.5 + 0.5,
            f"{prefix}.bias": torch.randn(n, generator=g) * 0.1,
            f"{prefix}.running_mean": torch.randn(n, generator=g) * 0.1,
            f"{prefix}.running_var": torch.rand(n, generator=g) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(1000),
        })

    conv("features.0.0.weight", (32, 3, 3, 3))
    bn("features.0.1", 32)
    for i, (t, inp, out, _, _) in enumerate(_blocks(), start=1):
        p, hidden, k = f"features.{i}.conv", inp * t, 0
        if t != 1:  # 1x1 expansion
            conv(f"{p}.0.0.weight", (hidden, inp, 1, 1))
            bn(f"{p}.0.1", hidden)
            k = 1
        conv(f"{p}.{k}.0.weight", (hidden, 1, 3, 3))  # depthwise
        bn(f"{p}.{k}.1", hidden)
        conv(f"{p}.{k + 1}.weight", (out, hidden, 1, 1))  # linear projection
        bn(f"{p}.{k + 2}", out)
    conv("features.18.0.weight", (1280, 320, 1, 1))
    bn("features.18.1", 1280)
    state["classifier.1.weight"] = torch.randn(1000, 1280, generator=g) * 0.01
    state["classifier.1.bias"] = torch.zeros(1000)
    return state


def _reference_forward(sd: dict, rgb: torch.Tensor, plan: list[tuple[int, int]]) -> torch.Tensor:
    """MobileNetV2's trunk computed straight from a state dict with torch.nn.functional."""

    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    x = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = F.relu6(bn(F.conv2d(x, sd["features.0.0.weight"], stride=2, padding=1), "features.0.1"))
    for i, ((t, inp, out, _, _), (stride, dilation)) in enumerate(zip(_blocks(), plan, strict=True), start=1):
        p, y, k = f"features.{i}.conv", x, 0
        if t != 1:
            y, k = F.relu6(bn(F.conv2d(y, sd[f"{p}.0.0.weight"]), f"{p}.0.1")), 1
        y = F.conv2d(y, sd[f"{p}.{k}.0.weight"], stride=stride, padding=dilation, dilation=dilation, groups=inp * t)
        y = F.relu6(bn(y, f"{p}.{k}.1"))
        y = bn(F.conv2d(y, sd[f"{p}.{k + 1}.weight"]), f"{p}.{k + 2}")
        x = x + y if stride == 1 and inp == out else y
    return F.relu6(bn(F.conv2d(x, sd["features.18.0.weight"]), "features.18.1"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = _torchvision_state(7)
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2.pth"
    torch.save(state, path)
    return state, path


@pytest.fixture(scope="module")
def rgb():
    return torch.rand(2, 3, 64, 112, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("output_stride", [4, 8, 16, 32])
def test_torchvision_weights_load_and_match_a_functional_forward(output_stride, checkpoint, rgb):
    state, path = checkpoint
    model = frozen_teacher(MobileNetV2(output_stride=output_stride))
    report = load_encoder_weights(model, path)
    assert report.format == "torchvision-mobilenet_v2"
    assert sorted(report.dropped_heads) == ["classifier.1.bias", "classifier.1.weight"]
    assert report.loaded == len(state) - 2 and not report.missing and not report.unexpected
    assert report.summary() == f"{path}: torchvision-mobilenet_v2 checkpoint, {len(state) - 2} tensors loaded, heads dropped: classifier"
    with torch.no_grad():
        ours = model(rgb)
        reference = _reference_forward(state, rgb, _plan(output_stride))
    assert ours.shape == (2, 1280, -(-64 // output_stride), -(-112 // output_stride))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_names_are_torchvision_s_exactly(checkpoint):
    state, _ = checkpoint
    trunk = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    MobileNetV2().load_state_dict(trunk, strict=True)
    assert "mean" not in MobileNetV2().state_dict()  # normalisation constants are not checkpoint keys


def test_output_grid_and_stride_32_is_the_plain_network(checkpoint, rgb):
    state, path = checkpoint
    shapes = {}
    for output_stride in (4, 8, 16, 32):
        model = frozen_teacher(MobileNetV2(output_stride=output_stride))
        assert model.out_channels == 1280
        with torch.no_grad():
            shapes[output_stride] = tuple(model(rgb[:1]).shape[1:])
    assert shapes == {4: (1280, 16, 28), 8: (1280, 8, 14), 16: (1280, 4, 7), 32: (1280, 2, 4)}
    plain = [(stride, 1) for _, _, _, stride, _ in _blocks()]  # torchvision's strides, no dilation
    assert _plan(32) == plain
    model = frozen_teacher(MobileNetV2(output_stride=32))
    load_encoder_weights(model, path)
    with torch.no_grad():
        torch.testing.assert_close(model(rgb), _reference_forward(state, rgb, plain), rtol=1e-5, atol=1e-5)


def test_dilation_rule_at_output_stride_4():
    """Written out by hand: features.4 keeps dilation 1, 5-7 use 2, 8-14 use 4, 15-17 use 8."""
    expected = {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 2} | {i: 4 for i in range(8, 15)} | {15: 8, 16: 8, 17: 8}
    model = MobileNetV2(output_stride=4)
    depthwise = {i: model.features[i].conv[-3][0] for i in range(1, 18)}
    assert {i: conv.dilation[0] for i, conv in depthwise.items()} == expected
    assert [i for i, conv in depthwise.items() if conv.stride[0] == 2] == [2]  # only the stride-4 stage still strides
    assert _plan(4) == [(depthwise[i].stride[0], depthwise[i].dilation[0]) for i in range(1, 18)]


def test_older_files_without_batchnorm_counters_load(checkpoint, tmp_path):
    state, _ = checkpoint
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    report = load_encoder_weights(MobileNetV2(), path)
    assert not report.missing and report.format == "torchvision-mobilenet_v2"


def test_the_other_architecture_is_a_clear_error(checkpoint, tmp_path):
    _, mobilenet_path = checkpoint
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(ResNet50(), mobilenet_path, allow_mismatch=True)
    message = str(error.value)
    assert str(mobilenet_path) in message and "MobileNetV2 weights" in message and "encoder: mobilenet_v2" in message
    resnet_path = tmp_path / "resnet50.pth"
    torch.save(ResNet50().state_dict() | {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, resnet_path)
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(MobileNetV2(), resnet_path)
    message = str(error.value)
    assert str(resnet_path) in message and "ResNet-50 weights" in message and "encoder: resnet50" in message


def test_teacher_is_frozen_and_in_eval_mode():
    model = frozen_teacher(MobileNetV2())
    assert isinstance(model, MobileNetV2) and not model.training and not any(p.requires_grad for p in model.parameters())
    assert ResNet50.out_channels == 2048 and MobileNetV2.out_channels == 1280


def test_random_initialisation_keeps_a_float16_sized_signal():
    """Without a checkpoint the trunk's output must survive the cache's float16 storage."""
    torch.manual_seed(0)
    with torch.no_grad():
        out = frozen_teacher(MobileNetV2())(torch.rand(1, 3, 64, 112))
    assert 0.1 < out.std() < 10 and (out.half() != 0).float().mean() > 0.2
