"""The teacher encoder: torchvision-compatible parameters, dilation by output stride, and the
checkpoint formats users have, each round-tripped: random weights saved the way the publisher saves
them load into ours and give the outputs of an independent forward pass over those weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.checkpoints import CheckpointError, load_encoder_weights
from models.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet50, frozen_teacher

BLOCKS = (3, 4, 6, 3)
DILATE = {4: (True, True, True), 8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


def _random_backbone(seed: int) -> dict[str, torch.Tensor]:
    """torchvision-named ResNet-50 trunk weights, with non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in ResNet50().state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            state[key] = torch.randn(value.shape, generator=g) * 0.1
        elif key.startswith("bn") or ".bn" in key or "downsample.1" in key:
            state[key] = torch.rand(value.shape, generator=g) * 0.5 + 0.5
        else:  # conv weights, He-scaled so activations stay finite through 50 layers
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def _reference_forward(sd: dict, rgb: torch.Tensor, output_stride: int) -> torch.Tensor:
    """ResNet-50 (torchvision v1.5 semantics) computed straight from a state dict."""

    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    x = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    dilation = 1
    for stage, blocks in enumerate(BLOCKS):
        stride, previous = (1 if stage == 0 else 2), dilation
        if stage and DILATE[output_stride][stage - 1]:
            dilation, stride = dilation * stride, 1
        for b in range(blocks):
            p = f"layer{stage + 1}.{b}"
            s, d = (stride, previous) if b == 0 else (1, dilation)
            out = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"]), p + ".bn1"))
            out = F.relu(bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=s, padding=d, dilation=d), p + ".bn2"))
            out = bn(F.conv2d(out, sd[p + ".conv3.weight"]), p + ".bn3")
            shortcut = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), p + ".downsample.1") if b == 0 else x
            x = F.relu(out + shortcut)
    return x


def _heads(prefix: str, seed: int, kind: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    match kind:
        case "torchvision":
            return {prefix + "fc.weight": r(1000, 2048), prefix + "fc.bias": r(1000)}
        case "moco_v1":
            return {prefix + "fc.weight": r(128, 2048), prefix + "fc.bias": r(128)}
        case "moco_v2":
            return {prefix + "fc.0.weight": r(2048, 2048), prefix + "fc.0.bias": r(2048), prefix + "fc.2.weight": r(128, 2048), prefix + "fc.2.bias": r(128)}
        case "swav" | "deepcluster":
            heads = {prefix + "projection_head.0.weight": r(2048, 2048), prefix + "projection_head.0.bias": r(2048)}
            heads |= {prefix + f"projection_head.1.{n}": r(2048) for n in ("weight", "bias", "running_mean")}
            heads |= {prefix + "projection_head.1.running_var": r(2048).abs(), prefix + "projection_head.1.num_batches_tracked": torch.tensor(5)}
            heads |= {prefix + "projection_head.3.weight": r(128, 2048), prefix + "projection_head.3.bias": r(128)}
            if kind == "swav":
                return heads | {prefix + "prototypes.weight": r(3000, 128)}
            return heads | {prefix + f"prototypes.prototypes{i}.weight": r(3000, 128) for i in range(3)}
    raise AssertionError(kind)


def _publisher_checkpoints(backbone: dict) -> dict[str, tuple[object, str]]:
    """Each format as its publisher saves it: (object saved with torch.save, expected format)."""
    prefixed = lambda p, sd: {p + k: v for k, v in sd.items()}  # noqa: E731
    key_encoder = _random_backbone(99)  # MoCo's momentum encoder: must not be the one loaded
    moco_extras = {"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {
        "torchvision": (backbone | _heads("", 1, "torchvision"), "torchvision"),
        "moco_v1": ({"epoch": 200, "arch": "resnet50", "state_dict": prefixed("module.encoder_q.", backbone) | _heads("module.encoder_q.", 2, "moco_v1") | prefixed("module.encoder_k.", key_encoder) | moco_extras, "optimizer": {"state": {}, "param_groups": []}}, "moco"),
        "moco_v2": ({"epoch": 800, "arch": "resnet50", "state_dict": prefixed("module.encoder_q.", backbone) | _heads("module.encoder_q.", 3, "moco_v2") | prefixed("module.encoder_k.", key_encoder) | moco_extras, "optimizer": {"state": {}, "param_groups": []}}, "moco"),
        "swav": (prefixed("module.", backbone) | _heads("module.", 4, "swav"), "swav"),
        "deepcluster_v2": (prefixed("module.", backbone) | _heads("module.", 5, "deepcluster"), "swav"),
        "dino": (dict(backbone), "torchvision"),
        "dino_full": ({"teacher": prefixed("backbone.", backbone) | {"head.mlp.0.weight": torch.randn(8, 2048)}, "student": prefixed("module.backbone.", key_encoder), "epoch": 100}, "dino-full"),
        "model_wrapped": ({"model": dict(backbone)}, "torchvision (model)"),
    }


@pytest.fixture(scope="module")
def backbone():
    return _random_backbone(7)


@pytest.fixture(scope="module")
def rgb():
    return torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", ["torchvision", "moco_v1", "moco_v2", "swav", "deepcluster_v2", "dino", "dino_full", "model_wrapped"])
def test_every_checkpoint_format_round_trips(name, backbone, rgb, tmp_path):
    saved, expected_format = _publisher_checkpoints(backbone)[name]
    path = tmp_path / f"{name}.pth"
    torch.save(saved, path)
    model = frozen_teacher(ResNet50(output_stride=4))
    report = load_encoder_weights(model, path)
    assert report.format == expected_format
    assert report.loaded == len(backbone) and not report.missing and not report.unexpected
    with torch.no_grad():
        ours = model(rgb)
        reference = _reference_forward(backbone, rgb, 4)
    assert ours.shape == (2, 2048, 16, 24)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_strides_match_torchvision_dilation(output_stride, backbone, rgb, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(backbone, path)
    model = frozen_teacher(ResNet50(output_stride=output_stride))
    load_encoder_weights(model, path)
    with torch.no_grad():
        ours = model(rgb)
    assert ours.shape[-2:] == (64 // output_stride, 96 // output_stride)
    torch.testing.assert_close(ours, _reference_forward(backbone, rgb, output_stride), rtol=1e-4, atol=1e-4)


def test_nuscenes_input_gives_the_method_grid():
    with torch.no_grad():
        out = frozen_teacher(ResNet50(output_stride=4))(torch.rand(1, 3, 224, 416))
    assert out.shape == (1, 2048, 56, 104)


def test_mismatched_keys_are_listed_or_allowed(backbone, tmp_path):
    broken = dict(backbone)
    del broken["layer3.2.conv2.weight"]
    broken["layer5.0.conv1.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as error:
        load_encoder_weights(ResNet50(), path)
    assert "layer3.2.conv2.weight" in str(error.value) and "layer5.0.conv1.weight" in str(error.value) and str(path) in str(error.value)
    report = load_encoder_weights(ResNet50(), path, allow_mismatch=True)
    assert report.missing == ["layer3.2.conv2.weight"] and report.unexpected == ["layer5.0.conv1.weight"]


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable PyTorch checkpoint"):
        load_encoder_weights(ResNet50(), path)
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder_weights(ResNet50(), tmp_path / "missing.pth")


def test_teacher_is_frozen_and_in_eval_mode():
    model = frozen_teacher(ResNet50())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert "mean" not in model.state_dict()  # normalisation constants are not checkpoint keys
