"""Pretraining losses (docs/METHOD.md section 6): InfoNCE, the image-plane superpixel loss (IPV,
SLidR), the BEV cell loss, the LSS depth loss and the PPKT point-pixel baseline, plus
``LossConfig``, which switches each on or off and weighs them.

All contrastive losses are NCE(k, q) = CrossEntropy(k q^T / tau, targets = diagonal): row i of ``k``
(student) is pulled towards row i of ``q`` (teacher) and away from the other rows of ``q``.
Pure torch: indices are plain long tensors, segment means use ``index_add``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.frustum import N_DEPTH_BINS, depth_bin_index

DEPTH_PROB_EPS = 1e-6  # depth probabilities are clamped to [eps, 1 - eps] before the log


# --- helpers -------------------------------------------------------------------------------------------


def _zero(*tensors: Tensor) -> Tensor:
    """A float32 zero that keeps the autograd graph of ``tensors`` (so DDP sees every parameter used)."""
    return sum(t.float().sum() for t in tensors) * 0.0


def _sample_rows(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor | None:
    """Indices of ``k`` of ``n`` rows drawn without replacement, or None when ``n <= k`` (keep all)."""
    if n <= k:
        return None
    rng_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=rng_device)[:k].to(device)


def info_nce(k: Tensor, q: Tensor, *, temperature: float = 0.07) -> Tensor:
    """NCE(k, q): mean cross-entropy of the logits k q^T / tau (S, S) with targets 0..S-1. k, q: (S, C)."""
    if k.dim() != 2 or k.shape != q.shape:
        raise ValueError(f"info_nce needs k and q of the same (S, C) shape, got {tuple(k.shape)} and {tuple(q.shape)}")
    logits = (k / temperature) @ q.T  # (S, S); scaling the (S, C) side first saves a pass over S^2 logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = torch.arange(len(k), device=k.device)
    return F.cross_entropy(logits, targets)


def segment_mean(values: Tensor, segment: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """Mean of the rows of ``values`` (M, C) per segment id ``segment`` (M,) in 0..n_segments-1:
    (means (n_segments, C), counts (n_segments,) long). Empty segments: mean 0, count 0."""
    sums = values.new_zeros(n_segments, values.shape[1]).index_add(0, segment, values)
    counts = torch.zeros(n_segments, dtype=torch.long, device=values.device).index_add(
        0, segment, torch.ones_like(segment, dtype=torch.long)
    )
    return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), counts


# --- image plane (SLidR) ---------------------------------------------------------------------------------


def ipv_loss(point_features: Tensor, pixel_features: Tensor, *args, temperature: float = 0.07) -> Tensor:
    """SLidR superpixel loss: NCE between the pairs of ``ipv_pairs`` (same arguments)."""
    k, q = ipv_pairs(point_features, pixel_features, *args)
    if len(k) < 2:
        return _zero(point_features, pixel_features)
    return info_nce(k, q, temperature=temperature)


def ipv_pairs(
    point_features: Tensor,  # (N, C) student, per point
    pixel_features: Tensor,  # (I, C, H, W) teacher decoder output, per image
    superpixels: Tensor,  # (I, H, W) long, dense ids 0..count-1 per image
    superpixel_counts: Tensor,  # (I,) long, true number of superpixels per image
    pair_point: Tensor,  # (P,) long into point_features
    pair_image: Tensor,  # (P,) long into images
    pair_pixel: Tensor,  # (P, 2) long (row, col)
) -> tuple[Tensor, Tensor]:
    """The superpixel pairs the IPV loss contrasts, (k, q) each (S, C): k_s = mean point feature over
    the pairings in superpixel s, q_s = mean pixel feature over the pixels of s, over every
    superpixel of every image that has a pairing.
    Ids are made global by offsetting each image by the cumulative true counts, so no two images'
    superpixels can share an id whatever the ids are (docs/METHOD.md section 2, "ours")."""
    n_images, channels, height, width = pixel_features.shape
    superpixels = superpixels.long()
    counts = superpixel_counts.long().to(superpixels.device)
    if superpixels.shape != (n_images, height, width) or counts.shape != (n_images,):
        raise ValueError(
            f"ipv_loss: superpixels {tuple(superpixels.shape)} and counts {tuple(counts.shape)} do not match "
            f"pixel features {tuple(pixel_features.shape)}; expected ({n_images}, {height}, {width}) and ({n_images},)"
        )
    bad = (superpixels.amax(dim=(1, 2)) >= counts) | (superpixels.amin(dim=(1, 2)) < 0)
    if bool(bad.any()):
        images = torch.nonzero(bad).flatten().tolist()
        raise ValueError(
            f"ipv_loss: superpixel ids of image(s) {images} lie outside 0..count-1 (counts {counts.tolist()}); "
            "relabel each map to a dense range and pass its true number of segments"
        )
    offsets = torch.cumsum(counts, 0) - counts  # (I,) first global id of each image
    n_segments = int(counts.sum())
    global_ids = superpixels + offsets.view(-1, 1, 1)  # (I, H, W)

    # q: mean decoder feature over all pixels of each superpixel
    pixels = pixel_features.permute(0, 2, 3, 1).reshape(-1, channels)  # (I*H*W, C)
    q, _ = segment_mean(pixels, global_ids.flatten(), n_segments)  # (n_segments, C)

    # k: mean point feature over the pairings whose pixel lies in the superpixel
    row, col = pair_pixel[:, 0], pair_pixel[:, 1]
    pair_segment = global_ids[pair_image, row, col]  # (P,)
    k, k_counts = segment_mean(point_features[pair_point], pair_segment, n_segments)

    keep = k_counts > 0
    return k[keep], q[keep]


# --- bird's-eye view --------------------------------------------------------------------------------------


def bev_loss(
    student_index: Tensor,  # (K, 3) long [batch, ix, iy] of occupied in-range BEV columns
    student_features: Tensor,  # (K, C)
    teacher_bev: Tensor,  # (B, C, X, Y)
    *,
    max_matches: int = 4096,
    generator: torch.Generator | None = None,
    temperature: float = 0.07,
) -> Tensor:
    """NCE between the student's BEV column features and the teacher's BEV features at the same
    (b, ix, iy); at most ``max_matches`` columns, drawn without replacement with ``generator``
    (docs/METHOD.md section 6, "ours": the reference's K^2 logits do not fit at K ~ 50k)."""
    if len(student_index) != len(student_features):
        raise ValueError(f"bev_loss: {len(student_index)} indices but {len(student_features)} feature rows")
    b, ix, iy = student_index.unbind(1)
    teacher = teacher_bev.permute(0, 2, 3, 1)[b, ix, iy]  # (K, C)
    return bev_matched_loss(student_features, teacher, max_matches=max_matches, generator=generator, temperature=temperature)


def bev_matched_loss(
    student_features: Tensor,  # (K, C) one row per BEV cell
    teacher_features: Tensor,  # (K, C) the teacher's features at the same cells
    *,
    max_matches: int = 4096,
    generator: torch.Generator | None = None,
    temperature: float = 0.07,
) -> Tensor:
    """``bev_loss`` on rows already paired cell by cell (the teacher pooled at the student's cells
    only, ``models.lss.bev_pool_cells``): the same draw of at most ``max_matches`` rows, the same NCE."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"bev_matched_loss: student {tuple(student_features.shape)} and teacher {tuple(teacher_features.shape)} rows differ")
    if len(student_features) < 2:
        return _zero(student_features, teacher_features)
    chosen = _sample_rows(len(student_features), max_matches, generator, student_features.device)
    k, q = (student_features, teacher_features) if chosen is None else (student_features[chosen], teacher_features[chosen])
    return info_nce(k, q, temperature=temperature)


# --- depth ------------------------------------------------------------------------------------------------


def depth_loss(depth_probs: Tensor, target_depth_m: Tensor) -> Tensor:
    """Binary cross-entropy between the depth distribution ``depth_probs`` (I, D, h, w) (softmax over
    D = 118 bins) and the one-hot bin of ``target_depth_m`` (I, h, w) metres (0 = no target), on the
    labelled cells only, **averaged over labelled cells x bins** -- the reference's
    ``F.binary_cross_entropy(pred[fg], onehot[fg], reduction='mean')`` (docs/METHOD.md section 6;
    the weight 60 is applied by ``total``). Summing over the bins instead (BEVDepth's convention) is
    118x larger and, at weight 60, drowns the student's gradient. Always float32, autocast or
    not."""
    n_images, n_bins, h, w = depth_probs.shape
    if n_bins != N_DEPTH_BINS or target_depth_m.shape != (n_images, h, w):
        raise ValueError(
            f"depth_loss: probabilities {tuple(depth_probs.shape)} and targets {tuple(target_depth_m.shape)} "
            f"do not match; expected (I, {N_DEPTH_BINS}, h, w) and (I, h, w)"
        )
    with torch.autocast(device_type=depth_probs.device.type, enabled=False):
        target_bin = depth_bin_index(target_depth_m.float())  # (I, h, w), -1 = unlabelled
        labelled = target_bin >= 0
        if not bool(labelled.any()):
            return _zero(depth_probs)
        probs = depth_probs.float().permute(0, 2, 3, 1)[labelled]  # (M, D)
        probs = probs.clamp(DEPTH_PROB_EPS, 1.0 - DEPTH_PROB_EPS)
        one_hot = F.one_hot(target_bin[labelled], n_bins).float()  # (M, D)
        return F.binary_cross_entropy(probs, one_hot, reduction="mean")  # over M x D


# --- PPKT baseline ----------------------------------------------------------------------------------------


def ppkt_loss(
    point_features: Tensor,  # (N, C)
    pixel_features: Tensor,  # (I, C, H, W)
    pair_point: Tensor,  # (P,) long
    pair_image: Tensor,  # (P,) long
    pair_pixel: Tensor,  # (P, 2) long (row, col)
    *,
    n_pairs: int = 4096,
    generator: torch.Generator | None = None,
    temperature: float = 0.07,
) -> Tensor:
    """PPKT: NCE between the point and pixel features of up to ``n_pairs`` random pairings."""
    if len(pair_point) < 2:
        return _zero(point_features, pixel_features)
    chosen = _sample_rows(len(pair_point), n_pairs, generator, point_features.device)
    if chosen is not None:
        pair_point, pair_image, pair_pixel = pair_point[chosen], pair_image[chosen], pair_pixel[chosen]
    k = point_features[pair_point]  # (P', C)
    q = pixel_features.permute(0, 2, 3, 1)[pair_image, pair_pixel[:, 0], pair_pixel[:, 1]]  # (P', C)
    return info_nce(k, q, temperature=temperature)


# --- configuration ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossConfig:
    """Which losses are on and their weights (docs/METHOD.md: beta = 1, alpha = 0.25, eta = 60)."""

    ipv: bool = True
    bev: bool = True
    depth: bool = True
    ppkt: bool = False
    ipv_weight: float = 1.0
    bev_weight: float = 0.25
    depth_weight: float = 60.0
    ppkt_weight: float = 1.0
    temperature: float = 0.07
    bev_matches: int = 4096
    ppkt_pairs: int = 4096

    # Presets. The PPKT one cannot be called ``ppkt``: that name is the switch field above.
    @classmethod
    def hvdistill(cls) -> LossConfig:
        """HVDistill as published: IPV + BEV + depth."""
        return cls(ipv=True, bev=True, depth=True, ppkt=False)

    @classmethod
    def slidr(cls) -> LossConfig:
        """SLidR baseline: the superpixel (IPV) loss only."""
        return cls(ipv=True, bev=False, depth=False, ppkt=False)

    @classmethod
    def ppkt_baseline(cls) -> LossConfig:
        """PPKT baseline: random point-pixel pairs only."""
        return cls(ipv=False, bev=False, depth=False, ppkt=True)

    def weights(self) -> dict[str, float]:
        """Weight of each enabled loss, by key ("ipv", "bev", "depth", "ppkt")."""
        all_losses = {
            "ipv": (self.ipv, self.ipv_weight),
            "bev": (self.bev, self.bev_weight),
            "depth": (self.depth, self.depth_weight),
            "ppkt": (self.ppkt, self.ppkt_weight),
        }
        return {name: weight for name, (on, weight) in all_losses.items() if on}

    def validate(self) -> None:
        if not (self.ipv or self.bev or self.depth or self.ppkt):
            raise ValueError("LossConfig: every loss is switched off; enable at least one of ipv, bev, depth, ppkt")
        weights = {"ipv": self.ipv_weight, "bev": self.bev_weight, "depth": self.depth_weight, "ppkt": self.ppkt_weight}
        for name, weight in weights.items():
            if not weight >= 0:
                raise ValueError(f"LossConfig: {name}_weight must be >= 0, got {weight}")
        if not self.temperature > 0:
            raise ValueError(f"LossConfig: temperature must be > 0, got {self.temperature}")
        if self.bev_matches < 2 or self.ppkt_pairs < 2:
            raise ValueError(f"LossConfig: bev_matches and ppkt_pairs must be >= 2, got {self.bev_matches}, {self.ppkt_pairs}")


def total(losses: dict[str, Tensor], config: LossConfig) -> Tensor:
    """Weighted sum of the enabled losses in ``losses`` (keys "ipv", "bev", "depth", "ppkt"); the
    disabled ones are ignored, a missing enabled one is an error."""
    weights = config.weights()
    missing = sorted(set(weights) - set(losses))
    if missing:
        raise KeyError(f"total: enabled loss(es) {missing} were not computed (got {sorted(losses)})")
    if not weights:
        raise ValueError("total: no loss is enabled in the config")
    return sum(weight * losses[name] for name, weight in weights.items())
