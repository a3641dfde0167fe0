"""The downstream model: loading pretrained weights by name and shape (what loads, what does not),
and the Lovasz-softmax loss against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from models.lovasz import lovasz_softmax
from models.segmentation import SegmentationNet, load_pretrained
from models.student import Student
from pipeline.errors import HvdError


@pytest.fixture(scope="module")
def student() -> Student:
    torch.manual_seed(1)
    return Student()


def test_pretraining_checkpoint_loads_the_backbone_only(student, tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"student": student.state_dict(), "heads": {}, "step": 7}, path)
    torch.manual_seed(2)
    net = SegmentationNet()
    head_before = net.head.kernel.detach().clone()
    report = load_pretrained(net, path)

    backbone_keys = [k for k in net.state_dict() if k.startswith("backbone.")]
    assert sorted(report.loaded) == sorted(backbone_keys)
    assert sorted(report.missing) == ["head.bias", "head.kernel"]
    assert report.mismatched == []
    assert report.unused and all(k.startswith(("final_1.", "bev_head.")) for k in report.unused)
    assert {k.split(".")[0] for k in report.unused} == {"final_1", "bev_head"}
    for key in backbone_keys:
        assert torch.equal(net.state_dict()[key], student.state_dict()[key]), key
    assert torch.equal(net.head.kernel, head_before)  # the new head keeps its initialisation
    assert "head" in report.summary() and "final_1" in report.summary()


def test_ddp_prefix_bare_backbone_and_shape_mismatch(student, tmp_path):
    state = {f"module.{k}": v for k, v in student.backbone.state_dict().items()}  # a DDP-saved bare backbone
    stem = "stem.0.kernel"
    state[f"module.{stem}"] = torch.zeros(5, 5)  # another shape: must not load
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": state}, path)
    net = SegmentationNet()
    report = load_pretrained(net, path)
    assert report.mismatched == [f"backbone.{stem}"]
    assert f"backbone.{stem}" not in report.loaded
    assert len(report.loaded) == len(student.backbone.state_dict()) - 1
    assert torch.equal(net.backbone.down[0][0][0].kernel, student.backbone.down[0][0][0].kernel)


def test_unusable_files_are_refused(tmp_path):
    with pytest.raises(HvdError, match="do not exist"):
        load_pretrained(SegmentationNet(), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HvdError, match="junk.pt: not a loadable PyTorch checkpoint"):
        load_pretrained(SegmentationNet(), tmp_path / "junk.pt")


def test_lovasz_hand_computed():
    # 3 points, 2 classes. Class 0: errors (0.1, 0.6, 0.3), sorted 0.6 (fg), 0.3 (bg), 0.1 (fg);
    # Jaccard losses of the growing prefixes 1/2, 2/3, 1 -> gradient (1/2, 1/6, 1/3) -> 0.38333.
    # Class 1: errors (0.1, 0.6, 0.3), sorted 0.6 (bg), 0.3 (fg), 0.1 (bg); prefixes 1/2, 1, 1
    # -> gradient (1/2, 1/2, 0) -> 0.45. Mean 0.416667.
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    labels = torch.tensor([0, 0, 1])
    assert lovasz_softmax(probs, labels).item() == pytest.approx((0.3 + 0.05 + 0.1 / 3 + 0.45) / 2, abs=1e-6)
    # an ignored point changes nothing
    probs_i = torch.cat([probs, torch.tensor([[0.5, 0.5]])])
    assert lovasz_softmax(probs_i, torch.tensor([0, 0, 1, -100])).item() == pytest.approx(lovasz_softmax(probs, labels).item())


def test_lovasz_is_one_minus_iou_on_hard_predictions():
    """At one-hot probabilities the Lovasz extension equals the Jaccard loss: mean over the classes
    present of 1 - IoU."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (200,), generator=g)
    pred = torch.where(torch.rand(200, generator=g) < 0.6, labels, torch.randint(0, 5, (200,), generator=g))
    probs = torch.nn.functional.one_hot(pred, 5).float()
    expected = []
    for c in labels.unique():
        inter = ((pred == c) & (labels == c)).sum().item()
        union = ((pred == c) | (labels == c)).sum().item()
        expected.append(1 - inter / union)
    assert lovasz_softmax(probs, labels).item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert lovasz_softmax(torch.nn.functional.one_hot(labels, 5).float(), labels).item() == pytest.approx(0.0, abs=1e-7)


def test_head_on_dense_features_equals_the_sparse_head():
    from models.student import sparse_input

    torch.manual_seed(0)
    net = SegmentationNet().eval()
    coords = [torch.randint(0, 40, (300, 3)).unique(dim=0), torch.randint(0, 40, (200, 3)).unique(dim=0)]
    x = sparse_input(coords, [torch.rand(len(c), 1) for c in coords])
    with torch.no_grad():
        torch.testing.assert_close(net.head_logits(net.backbone(x).F), net(x), rtol=1e-5, atol=1e-5)
