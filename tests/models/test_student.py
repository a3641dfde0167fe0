"""The student: MinkUNet34C's size and coordinates, unit-norm voxel features, one BEV feature per
occupied column, gradients to the stem, train and eval modes. Small clouds: a forward pass of a
few thousand voxels takes seconds on a 2-core CPU."""

import numpy as np
import pytest
import torch

from models.frustum import BEV_SIZE, voxel_bev_cell
from models.minkowski import ME
from models.student import MinkUNet34C, Student, StudentConfig, backbone_state_dict, collapse_z, sparse_input
from pipeline.train.voxelize import voxelize

# ME 0.5.4 instantiates its autograd Functions, which torch 2.x deprecates; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")


def random_batch(n_points: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two items: points in [-51.2, 51.2)^2 x [-5, 3) (z cells on both sides of 0, so columns have
    two z rows in the BEV head), plus, in item 1, a few points outside the 256 x 256 grid."""
    rng = np.random.default_rng(seed)
    coords, feats = [], []
    for b in range(2):
        xyz = np.c_[rng.uniform(-51.2, 51.2, (n_points, 2)), rng.uniform(-5.0, 3.0, n_points)]
        if b == 1:
            xyz = np.r_[xyz, [[55.0, 0.0, 0.0], [-60.0, 10.0, 1.0], [3.0, 51.25, -1.0], [-51.3, -51.3, 0.5]]]
        v = voxelize(xyz)
        coords.append(torch.from_numpy(v.coords))
        feats.append(torch.from_numpy(rng.uniform(0, 1, (len(v), 1))).float())  # intensity of the first point
    return coords, feats


@pytest.fixture(scope="module")
def run():
    """One train-mode forward of a seeded student on 2 x 1500 points, with the backbone's and the
    BEV head's raw outputs captured."""
    torch.manual_seed(0)
    student = Student()
    coords, feats = random_batch(1500, seed=0)
    x = sparse_input(coords, feats)
    seen = {}
    student.backbone.register_forward_hook(lambda m, i, o: seen.update(backbone=o))
    student.bev_head.register_forward_hook(lambda m, i, o: seen.update(bev=o))
    out = student(x)
    return dict(student=student, coords=coords, feats=feats, x=x, out=out, **seen)


def test_backbone_parameter_count():
    # 37,842,976 = MinkUNet34C with a 3^3 stem from 1 channel. Most of it is the stride-16 stage:
    # 2^3 conv 128->128 (131k) + 6 blocks of 256 (27 * 256 * 256 per 3^3 conv, ~20.4M) = 20.5M; the
    # decoder's first stage (transposed 2^3 256->256, blocks on 384 -> 256) adds 8.6M. ME's example
    # MinkUNet34C (5^3 stem from 3 channels, 20 classes) counts 37,856,052 = this + 12000 - 864 + 1940.
    n = sum(p.numel() for p in MinkUNet34C(in_channels=1).parameters())
    assert 37_840_000 <= n <= 37_846_000, n


def test_batch_norms_use_momentum_005():
    bns = [m for m in Student().modules() if isinstance(m, ME.MinkowskiBatchNorm)]
    assert len(bns) > 60
    assert {m.bn.momentum for m in bns} == {0.05}


def test_sparse_input_keeps_row_order(run):
    x, coords, feats = run["x"], run["coords"], run["feats"]
    batched = torch.cat([torch.nn.functional.pad(c, (1, 0), value=b) for b, c in enumerate(coords)])
    assert torch.equal(x.C, batched.int())
    assert torch.equal(x.F, torch.cat(feats))


def test_backbone_output_on_input_coordinates(run):
    y, x = run["backbone"], run["x"]
    assert y.tensor_stride == [1, 1, 1]
    assert y.F.shape == (len(x.C), 96)
    assert torch.equal(y.C, x.C)


def test_voxel_features_unit_norm(run):
    v = run["out"].voxel_features
    assert v.shape == (len(run["x"].C), 64)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(len(v)))


def test_one_bev_feature_per_occupied_column(run):
    out, x = run["out"], run["x"]
    assert run["bev"].tensor_stride == [4, 4, 80]
    index = out.bev_index
    assert index.dtype == torch.long and index.shape == (len(out.bev_features), 3)
    assert len(torch.unique(index, dim=0)) == len(index)  # no duplicate (batch, ix, iy)
    cells = torch.cat([x.C[:, :1].long(), voxel_bev_cell(x.C[:, 1:3].long())], dim=1)
    cells = cells[((cells[:, 1:] >= 0) & (cells[:, 1:] < BEV_SIZE)).all(dim=1)]
    assert len(cells) < len(x.C)  # the out-of-grid points were there and are dropped
    assert {tuple(r) for r in index.tolist()} == {tuple(r) for r in cells.tolist()}
    assert len(run["bev"].C) > len(index)  # some columns had two z cells and were collapsed
    torch.testing.assert_close(out.bev_features.norm(dim=1), torch.ones(len(index)))


def test_collapse_z_averages_the_z_cells_of_a_column():
    # Tensor stride (4, 4, 80): coordinates are multiples of it, in 0.1 m voxels.
    c = torch.tensor(
        [
            [0, -4, 8, -80],  # batch 0, cell (127, 130), lower z cell
            [0, -4, 8, 0],  # same column, upper z cell
            [1, -4, 8, 0],  # same (ix, iy), other batch item
            [0, 512, 0, 0],  # ix = 256: outside the grid
            [0, -512, -512, 0],  # (0, 0): the grid's first cell
        ],
        dtype=torch.int32,
    )
    f = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [9.0, 9.0], [0.0, 7.0]])
    bev = ME.SparseTensor(f, coordinates=c, tensor_stride=[4, 4, 80])
    index, mean = collapse_z(bev)
    assert index.tolist() == [[0, 0, 0], [0, 127, 130], [1, 127, 130]]
    torch.testing.assert_close(mean, torch.tensor([[0.0, 7.0], [2.0, 1.0], [5.0, 5.0]]))


def test_gradients_reach_the_stem(run):
    student, out = run["student"], run["out"]
    g = torch.Generator().manual_seed(1)
    loss = (out.voxel_features * torch.randn(out.voxel_features.shape, generator=g)).sum() + (
        out.bev_features * torch.randn(out.bev_features.shape, generator=g)
    ).sum()
    loss.backward()
    stem_kernel = student.backbone.stem[0].kernel
    assert stem_kernel.grad is not None and stem_kernel.grad.abs().sum() > 0
    bev_kernel = student.bev_head[0][0].kernel  # reached only through the BEV features
    assert bev_kernel.grad is not None and bev_kernel.grad.abs().sum() > 0


def test_train_and_eval_modes():
    torch.manual_seed(0)
    student = Student(StudentConfig())
    x = sparse_input(*random_batch(200, seed=1))
    bn = student.backbone.stem[1].bn
    before = bn.running_mean.clone()
    student.train()
    trained = student(x)
    assert not torch.equal(bn.running_mean, before)  # train mode updates the statistics
    student.eval()
    with torch.no_grad():
        stats = bn.running_mean.clone()
        a, b = student(x), student(x)
    assert torch.equal(bn.running_mean, stats)  # eval mode does not
    torch.testing.assert_close(a.voxel_features, b.voxel_features)
    assert torch.equal(a.bev_index, trained.bev_index)
    torch.testing.assert_close(a.bev_features.norm(dim=1), torch.ones(len(a.bev_index)))


def test_backbone_state_dict_holds_the_backbone_only():
    student = Student()
    state = backbone_state_dict(student)
    assert state and not any(k.startswith(("final_1", "bev_head")) for k in state)
    fresh = MinkUNet34C(in_channels=1)
    fresh.load_state_dict(state, strict=True)
    key = "stem.0.kernel"
    assert torch.equal(fresh.state_dict()[key], student.backbone.stem[0].kernel)
    state[key].add_(1.0)  # a copy: editing it leaves the student alone
    assert not torch.equal(state[key], student.backbone.stem[0].kernel)


def test_sparse_input_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="batch item 0: 3 voxels but 2 feature rows"):
        sparse_input([torch.zeros(3, 3, dtype=torch.int32)], [torch.zeros(2, 1)])


def test_narrower_student_keeps_the_names_and_scales_the_widths():
    """width 0.5: every plane halved (the published 32 ... 96 -> 16 ... 48), same parameter names,
    so a narrow checkpoint loads into a narrow model by name and shape exactly like a full one."""
    full, narrow = MinkUNet34C(), MinkUNet34C(width=0.5)
    assert narrow.out_channels == 48 and full.out_channels == 96
    assert list(full.state_dict()) == list(narrow.state_dict())
    assert narrow.stem[0].kernel.shape[-1] == 16 and narrow.up[3].blocks[0].conv1.kernel.shape[-1] == 48
    ratio = sum(p.numel() for p in narrow.parameters()) / sum(p.numel() for p in full.parameters())
    assert 0.2 < ratio < 0.3  # convolutions scale with width^2
    assert Student(StudentConfig(width=0.5)).final_1.kernel.shape == (48, 64)
    with pytest.raises(ValueError, match="width"):
        MinkUNet34C(width=0.0)


def test_sparse_input_refuses_a_backend_that_reorders_voxels(monkeypatch):
    """The first call per device type checks that row i is input voxel i (the IPV loss indexes by it):
    a MinkowskiEngine that hands the rows back in another order is refused, naming the device."""
    import models.student as student

    class Reordering:  # what a backend that sorts or hashes without keeping the order would return
        def __init__(self, features, coordinates):
            self.F, self.C = features.flip(0), coordinates.flip(0)

    monkeypatch.setattr(student, "_ROW_ORDER_CHECKED", set())
    monkeypatch.setattr(student.ME, "SparseTensor", Reordering)
    coords = [torch.tensor([[0, 0, 0], [1, 0, 0], [0, 2, 0]])]
    with pytest.raises(RuntimeError, match="on cpu reordered the voxels"):
        student.sparse_input(coords, [torch.ones(3, 1)])
    assert student._ROW_ORDER_CHECKED == set()
