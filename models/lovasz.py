"""Lovasz-softmax (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU per class,
averaged over the classes present in the batch. Written from the paper's definition."""

from __future__ import annotations

import torch


def lovasz_gradient(fg_sorted: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovasz extension of the Jaccard loss at the errors sorted in decreasing
    order; ``fg_sorted`` (P,) is 1 where the sorted point belongs to the class."""
    gts = fg_sorted.sum()
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(jaccard) > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """``probs`` (P, C) softmax probabilities, ``labels`` (P,) in [0, C) or ``ignore_index``. The
    mean over the classes present of <sorted |fg - p_c|, Lovasz gradient>; 0 when nothing is labelled."""
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if len(labels) == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(labels).tolist():
        fg = (labels == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_gradient(fg[order])))
    return torch.stack(losses).mean()
