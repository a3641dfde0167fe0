"""Teacher heads, depth net and BEV pooling: the PCA-composed decoder equals the decoder on restored
features, shapes, the camera vector's layout, the chunked ``bev_pool`` equals the materialising
reference in value and gradient, and its peak memory at the nuScenes shapes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.frustum import BEV_SIZE, N_DEPTH_BINS, frustum_cells
from models.lss import DepthNet, bev_pool, bev_pool_cells, bev_pool_reference
from models.teacher_heads import Bridge, Decoder, TeacherHeads, camera_vector

REPO = Path(__file__).resolve().parents[2]


def _camera_ring(n: int, hw: tuple[int, int]):
    """Identity image augmentations, intrinsics, camera -> LiDAR of ``n`` outward cameras, 1.8 m up."""
    f = 0.8 * hw[1]
    k = torch.tensor([[f, 0, (hw[1] - 1) / 2], [0, f, (hw[0] - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    axes = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64)  # camera x right, y down, z forward
    mats = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    for i in range(n):
        c, s = math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)
        mats[i, :3, :3] = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64) @ axes
        mats[i, 2, 3] = 1.8
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1), k.repeat(n, 1, 1), mats


def _random_pool_inputs(seed: int, *, images=3, bins=5, h=4, w=6, channels=7, dtype=torch.float64):
    """Small inputs with colliding cells, some off the grid (-1), images of two examples."""
    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(images, bins, h, w, generator=gen, dtype=dtype).softmax(1).requires_grad_()
    context = torch.randn(images, channels, h, w, generator=gen, dtype=dtype).requires_grad_()
    palette = torch.tensor([0, 1, 256, 257, 128 * 256 + 128, BEV_SIZE * BEV_SIZE - 1, 4242, 9000])
    cells = palette[torch.randint(len(palette), (images, bins, h, w), generator=gen)]
    cells[torch.rand(cells.shape, generator=gen) < 0.3] = -1
    return depth, context, cells, torch.tensor([0, 1, 1]), 2


# --- decoder, bridge, depth net, camera vector ----------------------------------------------------


def test_decoder_with_pca_equals_decoder_on_restored_features():
    torch.manual_seed(0)
    decoder = Decoder()
    components = torch.linalg.qr(torch.randn(2048, 16)).Q.T  # (16, 2048), orthonormal rows
    mean = torch.randn(2048)
    codes = torch.randn(2, 16, 5, 7)
    restored = torch.einsum("kc,ikhw->ichw", components, codes) + mean[:, None, None]  # (2, 2048, 5, 7)

    composed = decoder(codes, pca=(mean, components))
    explicit = decoder(restored)
    assert composed.shape == explicit.shape == (2, 64, 20, 28)
    assert torch.allclose(composed, explicit, atol=1e-5)
    assert decoder.conv.weight.shape == (64, 2048, 1, 1)
    # the composed conv trains the same parameter the same way
    upstream = torch.randn_like(explicit)
    g_composed = torch.autograd.grad((composed * upstream).sum(), decoder.conv.weight)[0]
    g_explicit = torch.autograd.grad((explicit * upstream).sum(), decoder.conv.weight)[0]
    assert torch.allclose(g_composed, g_explicit, atol=1e-4, rtol=1e-4)


def test_decoder_rejects_a_basis_that_does_not_fit():
    with pytest.raises(ValueError, match="components"):
        Decoder()(torch.randn(1, 8, 3, 3), pca=(torch.zeros(2048), torch.zeros(16, 2048)))


def test_module_shapes():
    torch.manual_seed(0)
    pixel = Decoder()(torch.randn(3, 2048, 7, 9))
    assert pixel.shape == (3, 64, 28, 36)
    assert torch.allclose(pixel.norm(dim=1), torch.ones(3, 28, 36), atol=1e-5)
    assert Bridge()(pixel).shape == (3, 2048, 7, 9)  # back on the cached grid, odd sizes too
    depth, context = DepthNet()(torch.randn(3, 2048, 7, 9), torch.randn(3, 22))
    assert depth.shape == (3, N_DEPTH_BINS, 7, 9) and context.shape == (3, 64, 7, 9)
    assert torch.allclose(depth.sum(1), torch.ones(3, 7, 9), atol=1e-5) and (depth >= 0).all()


def test_camera_vector_layout():
    k = torch.tensor([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    aug = torch.tensor([[0.5, 0.1, -3], [0.2, 0.6, 7], [0, 0, 1]])
    ego = torch.arange(16.0).view(4, 4)
    expected = [500, 510, 320, 240, 0.5, 0.1, -3, 0.2, 0.6, 7] + list(range(12))
    assert camera_vector(k, aug, ego).tolist() == pytest.approx(expected)
    batched = camera_vector(k.expand(2, 3, 3), aug.expand(2, 3, 3), ego.expand(2, 4, 4))
    assert batched.shape == (2, 22) and batched[1].tolist() == pytest.approx(expected)


# --- BEV pooling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bins_per_chunk", [2, 8])
def test_bev_pool_equals_reference_in_value_and_gradient(bins_per_chunk):
    depth, context, cells, image_batch, b = _random_pool_inputs(0)
    ours = bev_pool(depth, context, cells, image_batch, b, bins_per_chunk=bins_per_chunk)
    ref = bev_pool_reference(depth, context, cells, image_batch, b)
    assert ours.shape == ref.shape == (2, 7, BEV_SIZE, BEV_SIZE) and ours.dtype == torch.float64
    assert torch.allclose(ours, ref, atol=1e-12)
    assert ours.abs().sum() > 0 and ours[1].abs().sum() > 0  # both examples received points

    upstream = torch.randn_like(ours)
    g_ours = torch.autograd.grad(ours, (depth, context), upstream)
    g_ref = torch.autograd.grad(ref, (depth, context), upstream)
    for a, r in zip(g_ours, g_ref):
        assert torch.allclose(a, r, atol=1e-12)
    # off-grid frustum points get no depth gradient
    assert (g_ours[0][cells < 0] == 0).all() and (g_ours[0][cells >= 0] != 0).any()


def test_bev_pool_gradcheck():
    depth, context, cells, image_batch, b = _random_pool_inputs(1, images=3, bins=3, h=2, w=3, channels=2)
    flat = (image_batch.view(-1, 1, 1, 1) * BEV_SIZE**2 + cells)[cells >= 0].unique()
    watched = torch.cat([flat, torch.tensor([BEV_SIZE**2 + 17])])  # the occupied cells and an empty one

    def pooled(d, c):
        return bev_pool(d, c, cells, image_batch, b, bins_per_chunk=2).permute(1, 0, 2, 3).reshape(2, -1)[:, watched]

    assert torch.autograd.gradcheck(pooled, (depth, context))


@pytest.mark.parametrize("points_per_chunk", [7, 1 << 20])
def test_bev_pool_cells_equals_the_grid_at_those_cells(points_per_chunk):
    """Pooling at a list of cells -- some reached by frustum points, one empty, in any order, cells of
    both examples -- equals the dense grid read at those cells, in value and in both gradients."""
    depth, context, cells, image_batch, b = _random_pool_inputs(3)
    reached = (image_batch.view(-1, 1, 1, 1) * BEV_SIZE**2 + cells)[cells >= 0].unique()
    rows = torch.cat([reached[torch.randperm(len(reached), generator=torch.Generator().manual_seed(0))][: len(reached) // 2], torch.tensor([BEV_SIZE**2 + 5])])
    assert (rows >= BEV_SIZE**2).sum() > 1 and (rows < BEV_SIZE**2).sum() > 0
    ours = bev_pool_cells(depth, context, cells, image_batch, b, rows, points_per_chunk=points_per_chunk)
    dense = bev_pool(depth, context, cells, image_batch, b).permute(0, 2, 3, 1).reshape(-1, context.shape[1])[rows]
    assert ours.shape == (len(rows), 7) and torch.allclose(ours, dense, atol=1e-12)
    assert (ours[-1] == 0).all() and (ours[:-1].abs().sum(1) > 0).all()
    upstream = torch.randn_like(ours)
    for a, r in zip(torch.autograd.grad(ours, (depth, context), upstream), torch.autograd.grad(dense, (depth, context), upstream)):
        assert torch.allclose(a, r, atol=1e-12)
    assert bev_pool_cells(depth, context, cells, image_batch, b, rows[:0]).shape == (0, 7)
    with pytest.raises(ValueError, match="rows"):
        bev_pool_cells(depth, context, cells, image_batch, b, torch.tensor([2 * BEV_SIZE**2]))


def test_bev_pool_cells_gradcheck():
    depth, context, cells, image_batch, b = _random_pool_inputs(1, images=3, bins=3, h=2, w=3, channels=2)
    rows = (image_batch.view(-1, 1, 1, 1) * BEV_SIZE**2 + cells)[cells >= 0].unique()
    assert torch.autograd.gradcheck(lambda d, c: bev_pool_cells(d, c, cells, image_batch, b, rows, points_per_chunk=4), (depth, context))


def test_bev_pool_rejects_mismatched_shapes():
    depth, context, cells, image_batch, b = _random_pool_inputs(2)
    with pytest.raises(ValueError, match="cells"):
        bev_pool(depth, context, cells[:, :2], image_batch, b)
    with pytest.raises(ValueError, match="image_batch"):
        bev_pool(depth, context, cells, image_batch[:2], b)


# --- the whole head -------------------------------------------------------------------------------


def test_teacher_heads_end_to_end():
    torch.manual_seed(0)
    hw, stride = (32, 48), 4
    img_aug, k, cam_to_lidar = _camera_ring(3, hw)
    cells = frustum_cells(hw, stride, img_aug, k, cam_to_lidar)  # (3, 118, 8, 12)
    image_batch = torch.tensor([0, 0, 1])
    heads = TeacherHeads()
    out = heads(torch.randn(3, 2048, 8, 12), camera_vector(k, img_aug, cam_to_lidar).float(), cells, image_batch, 2)

    assert out.pixel_features.shape == (3, 64, 32, 48)
    assert out.depth_probs.shape == (3, N_DEPTH_BINS, 8, 12)
    assert out.bev.shape == (2, 64, BEV_SIZE, BEV_SIZE)
    occupied = torch.zeros(2, BEV_SIZE * BEV_SIZE, dtype=torch.bool)
    for i, b in enumerate(image_batch.tolist()):
        occupied[b, cells[i][cells[i] >= 0]] = True
    occupied = occupied.view(2, BEV_SIZE, BEV_SIZE)
    assert occupied[0].sum() > 100 and occupied[1].sum() > 100
    norms = out.bev.norm(dim=1)
    assert torch.allclose(norms[occupied], torch.ones(int(occupied.sum())), atol=1e-5)
    assert (out.bev.permute(0, 2, 3, 1)[~occupied] == 0).all()

    (out.bev.sum() + out.pixel_features.sum() + out.depth_probs[:, 0].sum()).backward()
    for module in (heads.decoder, heads.bridge, heads.depthnet.reduce, heads.depthnet.context_conv, heads.depthnet.depth_mlp):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("pca_channels", [None, 16])
def test_teacher_heads_take_the_encoder_channels(pca_channels):
    """MobileNetV2's 1280 channels (or a PCA of them): every module is built for C = in_channels."""
    torch.manual_seed(0)
    hw, stride = (16, 24), 4
    img_aug, k, cam_to_lidar = _camera_ring(2, hw)
    cells = frustum_cells(hw, stride, img_aug, k, cam_to_lidar)  # (2, 118, 4, 6)
    heads = TeacherHeads(in_channels=1280)
    pca = None if pca_channels is None else (torch.randn(1280), torch.linalg.qr(torch.randn(1280, pca_channels)).Q.T)
    features = torch.randn(2, pca_channels or 1280, 4, 6)
    out = heads(features, camera_vector(k, img_aug, cam_to_lidar).float(), cells, torch.tensor([0, 1]), 2, pca=pca)
    assert heads.decoder.conv.weight.shape == (64, 1280, 1, 1)
    assert heads.bridge(out.pixel_features).shape == (2, 1280, 4, 6)
    assert heads.depthnet.reduce[0].in_channels == 1280
    assert out.pixel_features.shape == (2, 64, 16, 24) and out.depth_probs.shape == (2, N_DEPTH_BINS, 4, 6)


def test_bev_pool_peak_memory_at_nuscenes_shapes():
    """One forward + backward at I=6, D=118, 56x104, C=64 in a fresh process: the lifted tensor
    alone would be ~1.06 GB in fp32."""
    done = subprocess.run(
        [sys.executable, "bench/bev_memory.py", "--worker", "ours", "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < result["peak_bytes"] < 1.0e9, result
    assert 0.3 < result["valid_fraction"] < 1.0, result  # a realistic rig: most, not all, points on the grid
