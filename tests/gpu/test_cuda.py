"""What only a CUDA GPU can show: skipped without one; scripts/gpu_check.sh runs them on a GPU machine.

Each compares the CUDA result with the CPU result the rest of the suite checks, on the same inputs
and weights: the row order MinkowskiEngine gives a sparse tensor on the GPU (the IPV loss indexes
the student's voxel features by the input voxel order), the student and a whole pretraining step,
the BEV pooling and its gradient, and mixed precision (bfloat16, and float16 with gradient scaling).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _float32_is_float32():
    """TF32 matmuls/convolutions would blur a CPU-vs-CUDA comparison by ~1e-3; these compare float32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp(min=1e-30))


def _shuffled_unique_voxels(seed: int, n: int = 20000, items: int = 2) -> list[torch.Tensor]:
    """Unique voxels per item in no sorted order, about a nuScenes sweep's count."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(items):
        c = torch.randint(-500, 500, (n, 3), generator=g).unique(dim=0)
        out.append(c[torch.randperm(len(c), generator=g)])
    return out


def test_minkowski_engine_is_built_with_cuda():
    from models.minkowski import ME

    assert ME.is_cuda_available(), "MinkowskiEngine was built without CUDA: scripts/build_minkowski_cuda.sh"


def test_sparse_input_keeps_the_voxel_order_on_cuda():
    """The IPV loss reads ``voxel_features[inverse]`` (point -> input voxel row): that needs row i of
    the sparse tensor to be input voxel i. MinkowskiEngine inserts coordinates through a hash map on
    the GPU; this checks that the rows still come out in input order there."""
    from models.student import sparse_input

    coords = _shuffled_unique_voxels(0)
    feats = [torch.randn(len(c), 4) for c in coords]
    x = sparse_input(coords, [f.to(CUDA) for f in feats])  # as pretraining calls it: coordinates on the CPU
    batched = torch.cat([F.pad(c, (1, 0), value=b) for b, c in enumerate(coords)]).int()
    assert x.C.device.type == "cuda"
    assert torch.equal(x.C.cpu(), batched)
    assert torch.equal(x.F.cpu(), torch.cat(feats))


def test_student_on_cuda_equals_the_cpu():
    """Same weights and input: the voxel features row for row (so the point -> voxel lookup of the IPV
    loss reads the same rows), the BEV columns and features, and the backbone's gradient."""
    from models.student import Student, sparse_input

    torch.manual_seed(0)
    coords = _shuffled_unique_voxels(1, n=6000)
    feats = [torch.rand(len(c), 1) for c in coords]
    cpu = Student()
    gpu = copy.deepcopy(cpu).to(CUDA)
    out = {}
    for name, net, device in (("cpu", cpu, torch.device("cpu")), ("cuda", gpu, CUDA)):
        o = net(sparse_input(coords, [f.to(device) for f in feats]))
        (o.voxel_features[:, 0].sum() + o.bev_features[:, 0].sum()).backward()
        grads = torch.cat([p.grad.flatten().cpu() for p in net.backbone.parameters()])
        out[name] = (o, grads)
    (oc, gc), (og, gg) = out["cpu"], out["cuda"]
    assert og.voxel_features.shape == oc.voxel_features.shape
    assert _relative(og.voxel_features, oc.voxel_features) < 1e-4
    assert torch.equal(og.bev_index.cpu(), oc.bev_index)
    assert _relative(og.bev_features, oc.bev_features) < 1e-4
    assert _relative(gg, gc) < 1e-3


def _pool_inputs(seed: int, *, images=3, bins=5, h=4, w=6, channels=7):
    """Small float64 pooling inputs with colliding cells, some off the grid (-1), two examples."""
    from models.frustum import BEV_SIZE

    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(images, bins, h, w, generator=gen, dtype=torch.float64).softmax(1)
    context = torch.randn(images, channels, h, w, generator=gen, dtype=torch.float64)
    palette = torch.tensor([0, 1, 256, 257, 128 * 256 + 128, BEV_SIZE * BEV_SIZE - 1, 4242, 9000])
    cells = palette[torch.randint(len(palette), (images, bins, h, w), generator=gen)]
    cells[torch.rand(cells.shape, generator=gen) < 0.3] = -1
    return depth, context, cells, torch.tensor([0, 1, 1]), 2


@pytest.mark.parametrize("pool", ["grid", "cells"])
def test_bev_pooling_on_cuda_equals_the_cpu_in_value_and_gradient(pool):
    from models.frustum import BEV_SIZE
    from models.lss import bev_pool, bev_pool_cells

    depth, context, cells, image_batch, b = _pool_inputs(0)
    rows = torch.cat([(image_batch.view(-1, 1, 1, 1) * BEV_SIZE**2 + cells)[cells >= 0].unique(), torch.tensor([BEV_SIZE**2 + 5])])

    def run(device):
        d, c = depth.to(device).requires_grad_(), context.to(device).requires_grad_()
        args = (d, c, cells.to(device), image_batch.to(device), b)
        out = bev_pool(*args, bins_per_chunk=2) if pool == "grid" else bev_pool_cells(*args, rows.to(device), points_per_chunk=7)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(device)
        return (out, *torch.autograd.grad(out, (d, c), upstream))

    for on_gpu, on_cpu in zip(run(CUDA), run("cpu")):
        assert on_gpu.device.type == "cuda"
        assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-12)
    assert run("cpu")[0].abs().sum() > 0


def test_bev_pooling_gradcheck_on_cuda():
    from models.frustum import BEV_SIZE
    from models.lss import bev_pool_cells

    depth, context, cells, image_batch, b = _pool_inputs(1, images=3, bins=3, h=2, w=3, channels=2)
    rows = (image_batch.view(-1, 1, 1, 1) * BEV_SIZE**2 + cells)[cells >= 0].unique().to(CUDA)
    cells, image_batch = cells.to(CUDA), image_batch.to(CUDA)

    def pooled(d, c):
        return bev_pool_cells(d, c, cells, image_batch, b, rows, points_per_chunk=5)

    assert torch.autograd.gradcheck(pooled, (depth.to(CUDA).requires_grad_(), context.to(CUDA).requires_grad_()))


# --- a whole pretraining step -------------------------------------------------------------------------


def _data(catalog, out: Path, **run) -> dict:
    return {
        "data": {"catalog": str(catalog.path), "source": "tiny", "batch_size": 2, "num_workers": 0, "max_examples": 2, "augment": {"enabled": False}},
        "optim": {"lr": 0.1, "epochs": 100},
        "run": {"out_dir": str(out), **run},
    }


def test_pretraining_step_on_cuda_equals_the_cpu(tiny_stores, tmp_path):
    """IPV, BEV and depth losses and every parameter group's gradient norm, same weights and batch."""
    from models.losses import total
    from pipeline.train import pretrain_config
    from pipeline.train.pretrain import build_net
    from pipeline.train.pretrain_data import PretrainDataset, collate, open_stores

    config = pretrain_config.build(None, None, _data(tiny_stores, tmp_path / "run"))
    stores = open_stores(tiny_stores, config.data.source)
    batch = collate([PretrainDataset(stores, config.data)[i] for i in range(2)])
    torch.manual_seed(0)
    cpu = build_net(config, stores)
    gpu = copy.deepcopy(cpu).to(CUDA)
    result = {}
    for name, net in (("cpu", cpu), ("cuda", gpu)):
        parts = net(batch, torch.Generator().manual_seed(0))  # one CPU generator: the same sampled BEV matches
        total(parts, net.losses).backward()
        norms = {g: float(torch.cat([p.grad.flatten() for p in ps if p.grad is not None]).norm()) for g, ps in net.parameter_groups().items()}
        result[name] = ({k: float(v) for k, v in parts.items()}, norms)
    (loss_cpu, norm_cpu), (loss_gpu, norm_gpu) = result["cpu"], result["cuda"]
    assert set(loss_cpu) == {"ipv", "bev", "depth"}
    for k in loss_cpu:
        assert abs(loss_gpu[k] - loss_cpu[k]) <= 1e-3 * abs(loss_cpu[k]), (k, loss_cpu[k], loss_gpu[k])
    for g in norm_cpu:
        assert norm_cpu[g] > 0 and abs(norm_gpu[g] - norm_cpu[g]) <= 1e-2 * norm_cpu[g], (g, norm_cpu[g], norm_gpu[g])


def test_depth_loss_stays_float32_under_autocast():
    from models.losses import depth_loss

    probs = torch.rand(2, 118, 4, 5, device=CUDA).softmax(1)
    target = torch.rand(2, 4, 5, device=CUDA) * 50
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = depth_loss(probs.bfloat16(), target)
    assert loss.dtype == torch.float32
    assert abs(float(loss) - float(depth_loss(probs, target))) < 1e-2 * float(depth_loss(probs, target))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_pretraining(tiny_stores, tmp_path, monkeypatch, dtype):
    """run.amp on CUDA: autocast in bfloat16 (float16 with gradient scaling where bfloat16 is not
    supported, forced here); the first step's losses are those of float32 within 5 %, ten steps on one
    keyframe lower every loss, and the student's backbone moves."""
    from pipeline.train import pretrain_config
    from pipeline.train.loop import autocast_dtype
    from pipeline.train.pretrain import build_net, train
    from pipeline.train.pretrain_data import open_stores

    if dtype == "float16":
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(True, CUDA) == getattr(torch, dtype)
    results = {}
    for name, amp in (("fp32", False), (dtype, True)):
        data = _data(tiny_stores, tmp_path / name, max_steps=10, checkpoint_every=10, amp=amp)
        data["data"]["max_examples"] = data["data"]["batch_size"] = 1
        config = pretrain_config.build(None, None, data)
        initial = build_net(config, open_stores(tiny_stores, config.data.source)).student.backbone.state_dict()
        results[name] = train(config, catalog=tiny_stores)
        trained = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True, map_location="cpu")["student"]
        keys = [k for k in initial if initial[k].is_floating_point() and "running" not in k]
        moved = sum(float(((trained[f"backbone.{k}"] - initial[k]) ** 2).sum()) for k in keys) ** 0.5
        assert moved > 1e-3 * sum(float((initial[k] ** 2).sum()) for k in keys) ** 0.5, name
    fp32, amp = results["fp32"], results[dtype]
    for k in ("ipv", "bev", "depth"):
        assert abs(amp["first"][k] - fp32["first"][k]) <= 0.05 * abs(fp32["first"][k]), (k, fp32["first"][k], amp["first"][k])
        assert amp["last"][k] < amp["first"][k], (k, amp["first"][k], amp["last"][k])
