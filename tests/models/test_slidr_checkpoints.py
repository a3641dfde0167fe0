"""SLidR / HVDistill checkpoints in and out (models.slidr).

The reference here is written in the test from the published architecture (Res16UNet34C of SLidR's
``model/res16unet.py``: module names, widths, forward order), with SLidR's attribute names, and
shares nothing with hvd's network code: a file saved from it must load into hvd's network tensor for
tensor and give the same outputs; hvd's export must load back into it with ``strict=True``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from models.checkpoints import load_checkpoint
from models.minkowski import ME
from models.segmentation import SegmentationNet, load_pretrained, read_pretrained
from models.slidr import name_map
from models.student import Student, sparse_input
from pipeline.errors import HvdError

# SLidR's Res16UNet34C, as published
S_LAYERS = (2, 3, 4, 6, 2, 2, 2, 2)
S_PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
S_INIT_DIM = 32
MOMENTUM = 0.05


def _conv(c_in, c_out, k, s=1, bias=False):
    return ME.MinkowskiConvolution(c_in, c_out, kernel_size=k, stride=s, bias=bias, dimension=3)


def _bn(c):
    return ME.MinkowskiBatchNorm(c, momentum=MOMENTUM)


class SBasicBlock(nn.Module):
    """SLidR's BasicBlock (``model/modules/resnet_block.py``): conv1, norm1, conv2, norm2, downsample."""

    def __init__(self, inplanes, planes, downsample=None):
        super().__init__()
        self.conv1, self.norm1 = _conv(inplanes, planes, 3), _bn(planes)
        self.conv2, self.norm2 = _conv(planes, planes, 3), _bn(planes)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += residual
        return self.relu(out)


class SLidRNet(nn.Module):
    """Res16UNet34C with SLidR's names; heads: SLidR's ``final`` or HVDistill's ``final_1`` + ``final_2``."""

    def __init__(self, heads="slidr"):
        super().__init__()
        self.inplanes = S_INIT_DIM
        self.conv0p1s1, self.bn0 = _conv(1, S_INIT_DIM, 3), _bn(S_INIT_DIM)
        self.conv1p1s2, self.bn1 = _conv(self.inplanes, self.inplanes, 2, 2), _bn(self.inplanes)
        self.block1 = self._make_layer(S_PLANES[0], S_LAYERS[0])
        self.conv2p2s2, self.bn2 = _conv(self.inplanes, self.inplanes, 2, 2), _bn(self.inplanes)
        self.block2 = self._make_layer(S_PLANES[1], S_LAYERS[1])
        self.conv3p4s2, self.bn3 = _conv(self.inplanes, self.inplanes, 2, 2), _bn(self.inplanes)
        self.block3 = self._make_layer(S_PLANES[2], S_LAYERS[2])
        self.conv4p8s2, self.bn4 = _conv(self.inplanes, self.inplanes, 2, 2), _bn(self.inplanes)
        self.block4 = self._make_layer(S_PLANES[3], S_LAYERS[3])
        self.convtr4p16s2, self.bntr4 = self._convtr(S_PLANES[4]), _bn(S_PLANES[4])
        self.inplanes = S_PLANES[4] + S_PLANES[2]
        self.block5 = self._make_layer(S_PLANES[4], S_LAYERS[4])
        self.convtr5p8s2, self.bntr5 = self._convtr(S_PLANES[5]), _bn(S_PLANES[5])
        self.inplanes = S_PLANES[5] + S_PLANES[1]
        self.block6 = self._make_layer(S_PLANES[5], S_LAYERS[5])
        self.convtr6p4s2, self.bntr6 = self._convtr(S_PLANES[6]), _bn(S_PLANES[6])
        self.inplanes = S_PLANES[6] + S_PLANES[0]
        self.block7 = self._make_layer(S_PLANES[6], S_LAYERS[6])
        self.convtr7p2s2, self.bntr7 = self._convtr(S_PLANES[7]), _bn(S_PLANES[7])
        self.inplanes = S_PLANES[7] + S_INIT_DIM
        self.block8 = self._make_layer(S_PLANES[7], S_LAYERS[7])
        self.relu = ME.MinkowskiReLU(inplace=True)
        if heads == "slidr":
            self.final = _conv(S_PLANES[7], 64, 1, bias=True)
        else:
            self.final_1 = _conv(S_PLANES[7], 64, 1, bias=True)
            self.final_2 = nn.Sequential(
                _conv(64, 64, [2, 2, 8], [2, 2, 8], bias=True), _bn(64), _conv(64, 64, [2, 2, 5], [2, 2, 5], bias=True), _bn(64), _conv(64, 64, [1, 1, 2], [1, 1, 2], bias=True)
            )

    def _convtr(self, planes):
        return ME.MinkowskiConvolutionTranspose(self.inplanes, planes, kernel_size=2, stride=2, bias=False, dimension=3)

    def _make_layer(self, planes, n):
        downsample = nn.Sequential(_conv(self.inplanes, planes, 1), _bn(planes)) if self.inplanes != planes else None
        layers = [SBasicBlock(self.inplanes, planes, downsample)]
        self.inplanes = planes
        layers += [SBasicBlock(planes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def features(self, x):
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        out_b1p2 = self.block1(self.relu(self.bn1(self.conv1p1s2(out_p1))))
        out_b2p4 = self.block2(self.relu(self.bn2(self.conv2p2s2(out_b1p2))))
        out_b3p8 = self.block3(self.relu(self.bn3(self.conv3p4s2(out_b2p4))))
        out = self.block4(self.relu(self.bn4(self.conv4p8s2(out_b3p8))))
        out = self.block5(ME.cat(self.relu(self.bntr4(self.convtr4p16s2(out))), out_b3p8))
        out = self.block6(ME.cat(self.relu(self.bntr5(self.convtr5p8s2(out))), out_b2p4))
        out = self.block7(ME.cat(self.relu(self.bntr6(self.convtr6p4s2(out))), out_b1p2))
        return self.block8(ME.cat(self.relu(self.bntr7(self.convtr7p2s2(out))), out_p1))

    def forward(self, x):
        """(backbone features, the normalised per-voxel features of ``normalize_features``)."""
        features = self.features(x)
        final = self.final if hasattr(self, "final") else self.final_1
        return features.F, F.normalize(final(features).F, dim=1)


def student_outputs(student: Student, x: ME.SparseTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hvd's backbone features and normalised ``final_1`` features (eval mode)."""
    features = student.eval().backbone(x)
    return features.F, F.normalize(student.final_1(features).F, dim=1)


def randomised(net: nn.Module, seed: int) -> nn.Module:
    """Every weight and BatchNorm statistic drawn at random (scaled to keep activations finite)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("kernel"):
            fan_in = value.numel() // value.shape[-1]  # (kernel volume, in, out) or (in, out)
            state[key] = torch.randn(value.shape, generator=g) / fan_in**0.5
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.randint(1, 1000, (), generator=g)
        else:  # conv and BN biases, running means
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
    net.load_state_dict(state)
    return net.eval()


@pytest.fixture(scope="module")
def slidr_net() -> SLidRNet:
    return randomised(SLidRNet("slidr"), 1)


@pytest.fixture(scope="module")
def hvdistill_net() -> SLidRNet:
    return randomised(SLidRNet("hvdistill"), 2)


@pytest.fixture(scope="module")
def sparse() -> ME.SparseTensor:
    g = torch.Generator().manual_seed(0)
    coords = [torch.randint(0, 20, (120, 3), generator=g).unique(dim=0), torch.randint(0, 20, (80, 3), generator=g).unique(dim=0)]
    return sparse_input(coords, [255 * torch.rand(len(c), 1, generator=g) for c in coords])


SLIDR_CONFIG = {"cylindrical_coordinates": True, "voxel_size": 0.1, "model_n_out": 64, "normalize_features": True, "bn_momentum": 0.05, "kernel_size": 3, "model_points": "minkunet"}


def test_name_map_covers_both_networks_one_to_one(slidr_net, hvdistill_net):
    student_state = Student().state_dict()
    student_keys = set(student_state)
    slidr, hvdistill = name_map("slidr"), name_map("hvdistill")
    assert set(slidr) == set(slidr_net.state_dict()) and len(slidr) == 374
    assert len(set(slidr.values())) == len(slidr) and set(slidr.values()) == {k for k in student_keys if not k.startswith("bev_head.")}
    biases = {"final_2.0.bias", "final_2.2.bias", "final_2.4.bias"}
    assert set(hvdistill) == set(hvdistill_net.state_dict()) - biases
    assert set(hvdistill.values()) == student_keys
    theirs_state = hvdistill_net.state_dict()
    assert all(theirs_state[theirs].shape == student_state[ours].shape for theirs, ours in hvdistill.items())


def _wrapped(state: dict, config=SLIDR_CONFIG) -> dict:
    return {"model_points": state, "model_images": {}, "epoch": 50, "config": config}


def test_slidr_pretraining_checkpoint_loads_every_backbone_tensor_and_gives_slidr_outputs(slidr_net, sparse, tmp_path):
    path = tmp_path / "minkunet_slidr.pt"
    torch.save(_wrapped(slidr_net.state_dict()), path)
    pretrained = read_pretrained(path)
    assert pretrained.kind == "slidr"
    assert pretrained.input == {"voxelization": "cylindrical", "voxel_size_m": 0.1, "intensity_divisor": 1.0}

    net = SegmentationNet()
    report = load_pretrained(net, pretrained)
    backbone = [k for k in net.state_dict() if k.startswith("backbone.")]
    assert sorted(report.loaded) == sorted(backbone) and report.mismatched == []
    assert sorted(report.missing) == ["head.bias", "head.kernel"]
    assert sorted(report.unused) == ["final_1.bias", "final_1.kernel"]  # SLidR's `final`: a pretraining head

    student = Student()
    report = load_pretrained(student, pretrained)
    assert sorted(report.loaded) == sorted(name_map("slidr").values()) and report.unused == []
    with torch.no_grad():
        for ours, theirs in zip(student_outputs(student, sparse), slidr_net(sparse)):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layout",
    ["plain", "module", "lightning"],
)
def test_plain_and_prefixed_slidr_state_dicts(slidr_net, tmp_path, layout):
    state = slidr_net.state_dict()
    content = {
        "plain": state,
        "module": _wrapped({f"module.{k}": v for k, v in state.items()}),
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}},  # SLidR's downstream checkpoint
    }[layout]
    path = tmp_path / f"{layout}.pt"
    torch.save(content, path)
    pretrained = read_pretrained(path)
    assert pretrained.kind == "slidr"
    assert pretrained.input == {"voxelization": "cylindrical", "voxel_size_m": 0.1, "intensity_divisor": 1.0}  # from config or SLidR's default
    net = SegmentationNet()
    report = load_pretrained(net, pretrained)
    assert len(report.loaded) == 372 and report.mismatched == []
    loaded = net.state_dict()
    for theirs, ours in name_map("slidr").items():
        if ours.startswith("backbone."):
            assert torch.equal(loaded[ours], state[theirs]), theirs


def test_hvdistill_checkpoint_maps_its_heads(hvdistill_net, sparse, tmp_path):
    path = tmp_path / "hvdistill.pt"
    torch.save(_wrapped(hvdistill_net.state_dict(), SLIDR_CONFIG | {"cylindrical_coordinates": False}), path)
    pretrained = read_pretrained(path)
    assert pretrained.kind == "hvdistill"
    assert pretrained.input == {"voxelization": "cartesian", "voxel_size_m": 0.1, "intensity_divisor": 1.0}
    student = Student()
    report = load_pretrained(student, pretrained)
    assert sorted(report.loaded) == sorted(student.state_dict()) and report.mismatched == [] and report.missing == []
    assert sorted(report.unused) == ["final_2.0.bias", "final_2.2.bias", "final_2.4.bias"]  # hvd's BEV head has no biases
    assert torch.equal(student.bev_head[1][1].bn.running_var, hvdistill_net.final_2[3].bn.running_var)
    assert torch.equal(student.bev_head[2].kernel, hvdistill_net.final_2[4].kernel)
    with torch.no_grad():
        for ours, theirs in zip(student_outputs(student, sparse), hvdistill_net(sparse)):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    net = SegmentationNet()
    assert len(load_pretrained(net, pretrained).loaded) == 372
    # without a config: HVDistill's own default (cartesian), SLidR's is cylindrical
    torch.save(hvdistill_net.state_dict(), path)
    assert read_pretrained(path).input["voxelization"] == "cartesian"


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1), "fc.bias": torch.zeros(10)}}, path)
    with pytest.raises(HvdError, match=r"resnet.pt: neither hvd's nor SLidR's/HVDistill's MinkUNet .*first names: layer1.0.conv1.weight, fc.bias"):
        read_pretrained(path)


def test_export_round_trip_loads_strictly_into_slidr(tmp_path, monkeypatch):
    from cli.main import app
    from pipeline.train.pretrain_config import PretrainConfig

    student = randomised(Student(), 3)
    run = tmp_path / "run"
    run.mkdir()
    config = PretrainConfig().model_dump(mode="json")
    torch.save({"student": student.state_dict(), "heads": {}, "step": 40, "epoch": 2, "config": config}, run / "checkpoint.pt")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["export", str(run), "--format", "slidr", "--out", str(tmp_path / "slidr.pt")])
    assert result.exit_code == 0, result.output
    assert f"wrote 374 tensors (SLidR names, epoch 2) to {tmp_path / 'slidr.pt'}" in result.output

    exported = load_checkpoint(tmp_path / "slidr.pt")  # weights_only: tensors and plain data
    assert set(exported) == {"model_points", "epoch", "config"} and exported["epoch"] == 2
    assert exported["config"]["cylindrical_coordinates"] is False and exported["config"]["voxel_size"] == 0.1
    assert exported["config"]["intensity_divisor"] == 255.0 and exported["config"]["hvd"]["step"] == 40
    reference = SLidRNet("slidr")
    reference.load_state_dict(exported["model_points"], strict=True)
    theirs_state, ours_state = reference.state_dict(), student.state_dict()
    for theirs, ours in name_map("slidr").items():
        assert torch.equal(theirs_state[theirs], ours_state[ours]), theirs

    back = read_pretrained(tmp_path / "slidr.pt")  # and hvd reads its own export back
    assert back.kind == "slidr" and back.input == {"voxelization": "cartesian", "voxel_size_m": 0.1, "intensity_divisor": 255.0}
    assert set(back.state) == set(name_map("slidr").values())
    assert all(torch.equal(back.state[ours], ours_state[ours]) for ours in back.state)
