"""Pretraining losses: hand-computed cases for every loss, the IPV loss against a dense one-hot
reference, the per-image superpixel offsets (true counts, no aliasing), sampling bounds and seeds,
float32 depth loss under half precision, and the loss switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.frustum import N_DEPTH_BINS
from models.losses import (
    LossConfig,
    bev_loss,
    depth_loss,
    info_nce,
    ipv_loss,
    ppkt_loss,
    segment_mean,
    total,
)


def nce_by_hand(logits: list[list[float]]) -> float:
    """Mean over rows of logsumexp(row) - row[i], in plain python."""
    return sum(math.log(sum(math.exp(x) for x in row)) - row[i] for i, row in enumerate(logits)) / len(logits)


def orthogonal_loss(m: int) -> float:
    """NCE at temperature 1 of m distinct one-hot rows with k = q: each row's logits are one 1 and m-1 zeros."""
    return math.log(math.e + m - 1) - 1


# --- info_nce, segment_mean -------------------------------------------------------------------------------


def test_info_nce_hand_2x2():
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # k q^T = [[1, 1], [0, 1]]; / 0.5 -> [[2, 2], [0, 2]]
    # row 0: log(e^2 + e^2) - 2 = log 2; row 1: log(e^0 + e^2) - 2
    expected = (math.log(2.0) + math.log(1.0 + math.exp(2.0)) - 2.0) / 2
    assert info_nce(k, q, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(k, q, temperature=0.5).item() == pytest.approx(nce_by_hand([[2, 2], [0, 2]]), rel=1e-6)


def test_info_nce_default_temperature_and_shape_check():
    k = torch.eye(2)
    # log(1 + e^{-1/0.07}) ~ 6.2e-7: at float32 resolution of the ~14.3 logits, hence the absolute tolerance
    assert info_nce(k, k).item() == pytest.approx(math.log1p(math.exp(-1 / 0.07)), abs=2e-6)
    assert info_nce(k, k.flip(0)).item() == pytest.approx(math.log1p(math.exp(1 / 0.07)), rel=1e-6)
    with pytest.raises(ValueError, match="same"):
        info_nce(torch.zeros(3, 2), torch.zeros(2, 2))


def test_segment_mean_hand_with_empty_segments():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], requires_grad=True)
    segment = torch.tensor([2, 0, 2, 0])
    means, counts = segment_mean(values, segment, 4)
    expected = torch.tensor([[5.0, 6.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])  # seg 0: rows 1, 3; seg 2: rows 0, 2
    torch.testing.assert_close(means, expected)
    assert counts.tolist() == [2, 0, 2, 0]
    assert counts.dtype == torch.long
    means.sum().backward()
    torch.testing.assert_close(values.grad, torch.full((4, 2), 0.5))  # each row counts 1/2 in its mean


# --- IPV ----------------------------------------------------------------------------------------------------


def dense_ipv(point_features, pixel_features, superpixels, offsets, pair_point, pair_image, pair_pixel, temperature):
    """Reference: one-hot membership matrices (segments x pixels, segments x pairings) and matrix
    products for the means, with the given per-image id offsets (I,)."""
    n_images, channels, height, width = pixel_features.shape
    ids = superpixels + offsets.view(-1, 1, 1)  # (I, H, W)
    segments = torch.arange(int(ids.max()) + 1)
    member_pixels = (segments[:, None] == ids.flatten()[None, :]).to(pixel_features.dtype)  # (S, I*H*W)
    pixels = pixel_features.permute(0, 2, 3, 1).reshape(-1, channels)
    q = member_pixels @ pixels / member_pixels.sum(1, keepdim=True).clamp(min=1)
    pair_ids = ids[pair_image, pair_pixel[:, 0], pair_pixel[:, 1]]
    member_pairs = (segments[:, None] == pair_ids[None, :]).to(point_features.dtype)  # (S, P)
    k = member_pairs @ point_features[pair_point] / member_pairs.sum(1, keepdim=True).clamp(min=1)
    keep = member_pairs.sum(1) > 0
    logits = k[keep] @ q[keep].T / temperature
    return -torch.log_softmax(logits, dim=1).diagonal().mean()


def true_offsets(counts):
    return torch.cumsum(counts, 0) - counts


def test_ipv_hand_case():
    # image 0: ids [[0, 0], [1, 1]], 2 segments; image 1: ids [[0, 1], [0, 1]], 3 segments (id 2 unused)
    superpixels = torch.tensor([[[0, 0], [1, 1]], [[0, 1], [0, 1]]])
    counts = torch.tensor([2, 3])
    pixel_features = torch.tensor(
        [
            [[[1.0, 3.0], [0.0, 0.0]], [[0.0, 2.0], [5.0, 5.0]]],  # image 0: channel 0, channel 1
            [[[2.0, 0.0], [4.0, 1.0]], [[1.0, 1.0], [-1.0, 3.0]]],  # image 1
        ]
    )
    point_features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, -1.0]])
    pair_point = torch.tensor([0, 1, 2, 3])
    pair_image = torch.tensor([0, 0, 1, 1])
    pair_pixel = torch.tensor([[0, 0], [0, 1], [1, 0], [0, 1]])  # (row, col)
    # segments with pairings: image 0 id 0 (points 0, 1), image 1 id 0 (point 2), image 1 id 1 (point 3);
    # image 0 id 1 has no pairing and is dropped, image 1 id 2 has no pixel.
    k = [(0.5, 0.5), (0.0, 1.0), (1.0, -1.0)]
    q = [((1 + 3) / 2, (0 + 2) / 2), ((2 + 4) / 2, (1 - 1) / 2), ((0 + 1) / 2, (1 + 3) / 2)]  # (2, 1), (3, 0), (0.5, 2)
    logits = [[ki[0] * qj[0] + ki[1] * qj[1] for qj in q] for ki in k]
    assert logits == [[1.5, 1.5, 1.25], [1.0, 0.0, 2.0], [1.0, 3.0, -1.5]]
    loss = ipv_loss(point_features, pixel_features, superpixels, counts, pair_point, pair_image, pair_pixel, temperature=1.0)
    assert loss.item() == pytest.approx(nce_by_hand(logits), rel=1e-6)


def random_ipv_inputs(seed: int, n_images: int = 4, height: int = 5, width: int = 6, channels: int = 8):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(3, 9, (n_images,), generator=g)
    # ids drawn below count - 2: some ids unused and every true count larger than max id + 1
    superpixels = torch.stack([torch.randint(0, int(c) - 2, (height, width), generator=g) for c in counts])
    n_points, n_pairs = 30, 60
    point_features = F.normalize(torch.randn(n_points, channels, generator=g, dtype=torch.float64), dim=1)
    pixel_features = F.normalize(torch.randn(n_images, channels, height, width, generator=g, dtype=torch.float64), dim=1)
    pair_point = torch.randint(0, n_points, (n_pairs,), generator=g)
    pair_image = torch.randint(0, n_images, (n_pairs,), generator=g)
    pair_pixel = torch.stack([torch.randint(0, height, (n_pairs,), generator=g), torch.randint(0, width, (n_pairs,), generator=g)], 1)
    return point_features, pixel_features, superpixels, counts, pair_point, pair_image, pair_pixel


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ipv_matches_dense_reference_with_gradients(seed):
    pts, pix, sp, counts, pp, pi, px = random_ipv_inputs(seed)
    assert (counts > sp.amax(dim=(1, 2)) + 1).all()
    pts_a, pix_a = pts.clone().requires_grad_(), pix.clone().requires_grad_()
    pts_b, pix_b = pts.clone().requires_grad_(), pix.clone().requires_grad_()
    ours = ipv_loss(pts_a, pix_a, sp, counts, pp, pi, px, temperature=0.07)
    ref = dense_ipv(pts_b, pix_b, sp, true_offsets(counts), pp, pi, px, 0.07)
    assert abs(ours.item() - ref.item()) < 1e-6
    ours.backward()
    ref.backward()
    torch.testing.assert_close(pts_a.grad, pts_b.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(pix_a.grad, pix_b.grad, atol=1e-6, rtol=0)
    # gradients reach both sides: every paired point, and pixels
    assert (pts_a.grad[pp].abs().sum(1) > 0).all()
    unpaired = torch.ones(len(pts), dtype=torch.bool)
    unpaired[pp] = False
    assert (pts_a.grad[unpaired] == 0).all()
    assert pix_a.grad.abs().sum() > 0


def test_ipv_offsets_by_true_counts_do_not_alias():
    # image 0: ids 0 (top-left) and 1; only id 0 is paired. image 1: ids 0 (top row) and 1, both paired.
    superpixels = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [1, 1]]])
    counts = torch.tensor([2, 2])
    g = torch.Generator().manual_seed(0)
    pix = F.normalize(torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64), dim=1)
    pts = F.normalize(torch.randn(3, 3, generator=g, dtype=torch.float64), dim=1)
    pp, pi = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1])
    px = torch.tensor([[0, 0], [0, 1], [1, 0]])
    sp = superpixels
    ours = ipv_loss(pts, pix, sp, counts, pp, pi, px, temperature=0.07)
    # same value as the dense reference with the true offsets, or any offset that separates the images
    assert abs(ours.item() - dense_ipv(pts, pix, sp, torch.tensor([0, 2]), pp, pi, px, 0.07).item()) < 1e-9
    assert abs(ours.item() - dense_ipv(pts, pix, sp, torch.tensor([0, 100]), pp, pi, px, 0.07).item()) < 1e-9
    # a constant offset smaller than the ids (the reference's 150 against SLIC ids >= 150), or offsets
    # from the largest *paired* id + 1, merge image 0's id 1 with image 1's id 0 and change the loss
    constant = torch.tensor([0, 1])
    paired_max = torch.tensor([0, 0 + 1])  # image 0's largest paired id is 0
    for aliasing in (constant, paired_max):
        assert abs(ours.item() - dense_ipv(pts, pix, sp, aliasing, pp, pi, px, 0.07).item()) > 1e-3
    # unused ids (larger true counts) change nothing
    assert ipv_loss(pts, pix, sp, torch.tensor([7, 4]), pp, pi, px).item() == pytest.approx(ours.item(), abs=1e-12)


def test_ipv_rejects_ids_outside_the_counts():
    pts, pix, sp, counts, pp, pi, px = random_ipv_inputs(0)
    bad = sp.clone()
    bad[2, 0, 0] = counts[2]
    with pytest.raises(ValueError, match=r"image\(s\) \[2\]"):
        ipv_loss(pts, pix, bad, counts, pp, pi, px)


def test_ipv_fewer_than_two_superpixels_is_a_zero_with_graph():
    pts, pix, sp, counts, pp, pi, px = random_ipv_inputs(1)
    pts.requires_grad_()
    pix.requires_grad_()
    loss = ipv_loss(pts, pix, sp, counts, pp[:1], pi[:1], px[:1])  # one pairing: one superpixel
    assert loss.item() == 0.0
    loss.backward()
    assert pts.grad is not None and pix.grad is not None


# --- BEV ----------------------------------------------------------------------------------------------------


def test_bev_hand_case_matching_and_swapped_features():
    teacher = torch.zeros(2, 2, 3, 4)  # (B, C, X, Y), X != Y
    teacher[0, :, 1, 3] = torch.tensor([1.0, 0.0])
    teacher[1, :, 2, 0] = torch.tensor([0.0, 1.0])
    teacher[0, :, 2, 0] = torch.tensor([1.0, 0.0])  # decoy: right cell, wrong batch
    index = torch.tensor([[0, 1, 3], [1, 2, 0]])  # [b, ix, iy]
    matching = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / 0.5: each row log(e^2 + e^0) - 2
    assert bev_loss(index, matching, teacher, temperature=0.5).item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    swapped = matching.flip(0)  # each row's positive now scores 0 and a negative 2
    assert bev_loss(index, swapped, teacher, temperature=0.5).item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)


def orthogonal_bev(k: int):
    """k occupied cells of a 1 x (k/5) x 5 grid; cell i holds e_i in both student and teacher."""
    teacher = torch.eye(k).view(1, k, k // 5, 5)  # teacher[0, c, ix, iy] = 1 iff c == 5 ix + iy
    cells = torch.arange(k)
    index = torch.stack([torch.zeros_like(cells), cells // 5, cells % 5], 1)
    return index, torch.eye(k), teacher


def test_bev_subsampling_respects_max_matches():
    index, student, teacher = orthogonal_bev(20)
    # the loss of m distinct orthogonal matches reveals m (duplicates from replacement would change it too)
    g = torch.Generator().manual_seed(0)
    assert bev_loss(index, student, teacher, max_matches=5, generator=g, temperature=1.0).item() == pytest.approx(orthogonal_loss(5), rel=1e-6)
    assert bev_loss(index, student, teacher, max_matches=100, temperature=1.0).item() == pytest.approx(orthogonal_loss(20), rel=1e-6)


def test_bev_subsampling_is_reproducible_with_a_seeded_generator():
    g = torch.Generator().manual_seed(3)
    teacher = F.normalize(torch.randn(2, 4, 8, 8, generator=g), dim=1)
    index = torch.stack([torch.randint(0, 2, (50,), generator=g), torch.randint(0, 8, (50,), generator=g), torch.randint(0, 8, (50,), generator=g)], 1)
    student = F.normalize(torch.randn(50, 4, generator=g), dim=1)

    def run(seed):
        return bev_loss(index, student, teacher, max_matches=8, generator=torch.Generator().manual_seed(seed)).item()

    assert run(0) == run(0)
    assert run(0) != run(1)
    assert math.isfinite(bev_loss(index, student, teacher, max_matches=8).item())  # no generator: global RNG


def test_bev_gradient_reaches_student_only_for_sampled_rows():
    index, student, teacher = orthogonal_bev(20)
    student = (student + 0.1).requires_grad_()
    bev_loss(index, student, teacher, max_matches=6, generator=torch.Generator().manual_seed(0)).backward()
    assert int((student.grad.abs().sum(1) > 0).sum()) == 6


# --- depth ------------------------------------------------------------------------------------------------


def hand_probs() -> torch.Tensor:
    """(D,) 0.5 in bin 2, 0.25 in bin 3, the remaining 0.25 spread over the other 116 bins."""
    p = torch.full((N_DEPTH_BINS,), 0.25 / 116)
    p[2], p[3] = 0.5, 0.25
    return p


# BCE of one labelled cell, summed over its 118 bins; the loss is the mean over cells x bins
HAND_BCE = -(math.log(0.5) + math.log(1 - 0.25) + 116 * math.log(1 - 0.25 / 116))
UNIFORM_BCE = -(math.log(1 / 118) + 117 * math.log(1 - 1 / 118))


def test_depth_hand_case_one_labelled_cell():
    probs = torch.full((1, N_DEPTH_BINS, 1, 2), 1 / N_DEPTH_BINS)
    probs[0, :, 0, 0] = hand_probs()
    target = torch.tensor([[[2.3, 0.0]]])  # bin floor((2.3 - 1) / 0.5) = 2; second cell unlabelled
    # the mean over 1 labelled cell x 118 bins: ~0.0138, where summing over the bins gave ~1.63
    assert depth_loss(probs, target).item() == pytest.approx(HAND_BCE / 118, rel=1e-5)
    assert 60 * depth_loss(probs, target).item() == pytest.approx(60 * HAND_BCE / 118, rel=1e-5)


def test_depth_averages_labelled_cells_and_ignores_the_rest():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, N_DEPTH_BINS, 2, 3, generator=g), dim=1)
    probs[0, :, 0, 0] = hand_probs()
    probs[1, :, 1, 2] = 1 / N_DEPTH_BINS
    # labelled: 2.3 m (bin 2) and 59.9 m (bin 117); no target, below 1 m, and at/over 60 m are ignored
    target = torch.tensor([[[2.3, 0.0, 0.9], [60.0, 75.0, 0.0]], [[0.0, 0.5, 0.0], [0.0, 61.0, 59.9]]])
    probs[1, :, 1, 2] = 0.0
    probs[1, 117, 1, 2] = 1.0  # a confident, correct prediction: only the clamp's eps remains
    confident = -N_DEPTH_BINS * math.log(1 - 1e-6)
    expected = (HAND_BCE + confident) / (2 * N_DEPTH_BINS)
    assert depth_loss(probs, target).item() == pytest.approx(expected, rel=1e-4)
    probs[1, :, 1, 2] = 1 / N_DEPTH_BINS
    assert depth_loss(probs, target).item() == pytest.approx((HAND_BCE + UNIFORM_BCE) / (2 * N_DEPTH_BINS), rel=1e-5)
    # the ignored cells' predictions do not matter
    unlabelled = torch.ones(2, 2, 3, dtype=torch.bool)
    unlabelled[0, 0, 0] = unlabelled[1, 1, 2] = False
    other = probs.clone()
    other.permute(0, 2, 3, 1)[unlabelled] = torch.softmax(torch.randn(int(unlabelled.sum()), N_DEPTH_BINS, generator=g), dim=1)
    assert depth_loss(other, target).item() == pytest.approx(depth_loss(probs, target).item(), rel=1e-6)


def test_depth_equals_an_independent_formula_on_random_inputs():
    """-1/(M D) sum over labelled cells m and bins j of [y log p + (1 - y) log(1 - p)], y the one-hot
    of floor((d - 1) / 0.5), written out with plain loops over cells; and the reference's call."""
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(2 * torch.randn(3, N_DEPTH_BINS, 4, 5, generator=g), dim=1).double()
    target = 70 * torch.rand(3, 4, 5, generator=g, dtype=torch.float64)  # some < 1 m and >= 60 m: ignored
    target[0, 0] = 0.0
    total_bce, cells = 0.0, 0
    for i in range(3):
        for y in range(4):
            for x in range(5):
                d = float(target[i, y, x])
                if not (1.0 <= d < 60.0):
                    continue
                j = math.floor((d - 1.0) / 0.5)
                for b in range(N_DEPTH_BINS):
                    p = min(max(float(probs[i, b, y, x]), 1e-6), 1 - 1e-6)
                    total_bce -= math.log(p) if b == j else math.log(1 - p)
                cells += 1
    assert 0 < cells < 60
    assert depth_loss(probs, target).item() == pytest.approx(total_bce / (cells * N_DEPTH_BINS), rel=1e-5)
    # the reference: F.binary_cross_entropy(pred[fg], onehot[fg], reduction="mean")
    fg = (target >= 1.0) & (target < 60.0)
    onehot = torch.nn.functional.one_hot(((target - 1.0) / 0.5).floor().long().clamp(0, N_DEPTH_BINS - 1), N_DEPTH_BINS).double()
    pred = probs.permute(0, 2, 3, 1).clamp(1e-6, 1 - 1e-6)
    reference = torch.nn.functional.binary_cross_entropy(pred[fg], onehot[fg], reduction="mean")
    assert depth_loss(probs, target).item() == pytest.approx(reference.item(), rel=1e-5)


def test_depth_no_labelled_cell_is_a_zero_with_graph():
    probs = torch.softmax(torch.randn(1, N_DEPTH_BINS, 2, 2), dim=1).requires_grad_()
    loss = depth_loss(probs, torch.tensor([[[0.0, 0.3], [60.5, 0.0]]]))
    assert loss.item() == 0.0
    loss.backward()
    assert probs.grad is not None and (probs.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_depth_is_float32_for_half_inputs_and_under_autocast(dtype):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(2, N_DEPTH_BINS, 4, 4, generator=g), dim=1)
    probs[0, :, 0, 0] = 0.0
    probs[0, 5, 0, 0] = 1.0  # exact 0 and 1: the log needs the clamp
    probs[0, :, 0, 1] = 0.0
    probs[0, 7, 0, 1] = 1.0  # exact 1 in the wrong bin: log(0) without the clamp
    target = torch.zeros(2, 4, 4)
    target[0, 0, :2] = 1.0 + 0.5 * 5.2  # bin 5
    target[1, 2:, 1:3] = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    half = probs.to(dtype).requires_grad_()
    reference = depth_loss(half.detach().float(), target)
    for run in (lambda: depth_loss(half, target.to(dtype)), lambda: depth_loss(half, target)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = run()
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(half.grad).all()
    assert depth_loss(half, target).item() == pytest.approx(reference.item(), rel=1e-6)


def test_depth_rejects_wrong_bin_count():
    with pytest.raises(ValueError, match="118"):
        depth_loss(torch.rand(1, 64, 2, 2), torch.zeros(1, 2, 2))


# --- PPKT ------------------------------------------------------------------------------------------------


def test_ppkt_hand_case_indexes_row_col_of_the_right_image():
    pix = torch.zeros(2, 2, 2, 3)  # (I, C, H, W), H != W
    pix[1, :, 0, 2] = torch.tensor([1.0, 0.0])
    pix[0, :, 1, 1] = torch.tensor([0.0, 1.0])
    pix[0, :, 0, 2] = torch.tensor([0.0, 1.0])  # decoy: right pixel, wrong image
    pts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pair_point, pair_image, pair_pixel = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([[0, 2], [1, 1]])
    loss = ppkt_loss(pts, pix, pair_point, pair_image, pair_pixel, temperature=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)  # logits I / 0.5


def orthogonal_pairs(n: int = 12):
    """n pairings j: point j (feature e_j) with pixel (j // 4, j % 4) of one image (feature e_j)."""
    pix = torch.eye(n).view(1, n, n // 4, 4)
    j = torch.arange(n)
    return torch.eye(n), pix, j, torch.zeros_like(j), torch.stack([j // 4, j % 4], 1)


def test_ppkt_samples_at_most_n_pairs_and_is_reproducible():
    pts, pix, pp, pi, px = orthogonal_pairs()
    g = torch.Generator().manual_seed(0)
    assert ppkt_loss(pts, pix, pp, pi, px, n_pairs=5, generator=g, temperature=1.0).item() == pytest.approx(orthogonal_loss(5), rel=1e-6)
    assert ppkt_loss(pts, pix, pp, pi, px, n_pairs=4096, temperature=1.0).item() == pytest.approx(orthogonal_loss(12), rel=1e-6)

    g = torch.Generator().manual_seed(1)
    pts = F.normalize(torch.randn(12, 12, generator=g), dim=1)

    def run(seed):
        return ppkt_loss(pts, pix, pp, pi, px, n_pairs=4, generator=torch.Generator().manual_seed(seed)).item()

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_ppkt_all_pairs_equals_info_nce_on_them():
    g = torch.Generator().manual_seed(2)
    pts = F.normalize(torch.randn(10, 4, generator=g), dim=1).requires_grad_()
    pix = F.normalize(torch.randn(3, 4, 5, 6, generator=g), dim=1).requires_grad_()
    pp, pi = torch.randint(0, 10, (9,), generator=g), torch.randint(0, 3, (9,), generator=g)
    px = torch.stack([torch.randint(0, 5, (9,), generator=g), torch.randint(0, 6, (9,), generator=g)], 1)
    loss = ppkt_loss(pts, pix, pp, pi, px, n_pairs=9)
    q = torch.stack([pix[i, :, r, c] for i, (r, c) in zip(pi.tolist(), px.tolist())])
    torch.testing.assert_close(loss, info_nce(pts[pp], q))
    loss.backward()
    assert pts.grad.abs().sum() > 0 and pix.grad.abs().sum() > 0


# --- config -------------------------------------------------------------------------------------------------


LOSSES = {"ipv": torch.tensor(1.0), "bev": torch.tensor(2.0), "depth": torch.tensor(3.0), "ppkt": torch.tensor(100.0)}


def test_presets_and_weights():
    assert LossConfig.hvdistill() == LossConfig()
    assert LossConfig().weights() == {"ipv": 1.0, "bev": 0.25, "depth": 60.0}
    assert LossConfig.slidr().weights() == {"ipv": 1.0}
    assert LossConfig.ppkt_baseline().weights() == {"ppkt": 1.0}
    for preset in (LossConfig.hvdistill(), LossConfig.slidr(), LossConfig.ppkt_baseline()):
        preset.validate()


def test_total_sums_the_enabled_losses_with_their_weights():
    assert total(LOSSES, LossConfig.hvdistill()).item() == pytest.approx(1.0 + 0.25 * 2.0 + 60.0 * 3.0)
    assert total(LOSSES, LossConfig.slidr()).item() == pytest.approx(1.0)
    assert total(LOSSES, LossConfig.ppkt_baseline()).item() == pytest.approx(100.0)
    assert total(LOSSES, LossConfig(bev=False, ipv_weight=2.0, depth_weight=0.5)).item() == pytest.approx(2.0 + 1.5)
    assert total({"ipv": LOSSES["ipv"]}, LossConfig.slidr()).item() == pytest.approx(1.0)  # disabled ones need not exist
    with pytest.raises(KeyError, match="depth"):
        total({"ipv": LOSSES["ipv"], "bev": LOSSES["bev"]}, LossConfig.hvdistill())


def test_validate_rejects_no_loss_and_negative_weights():
    with pytest.raises(ValueError, match="at least one"):
        LossConfig(ipv=False, bev=False, depth=False, ppkt=False).validate()
    with pytest.raises(ValueError, match="bev_weight"):
        LossConfig(bev_weight=-0.1).validate()
    with pytest.raises(ValueError, match="temperature"):
        LossConfig(temperature=0.0).validate()
