"""How much each HVDistill loss can teach the student, measured on real batches of a source: for the
IPV and BEV contrastive losses, the number of matched pairs, the chance level of the NCE (ln N), the
loss, how often the student's feature retrieves its own target among all N (top-1, chance 1/N), and
how distinct the targets are (the cosine of each target to its nearest *other* target; a target with
a near-twin is a false negative for its cell); for the depth net, how well it predicts the LiDAR depth
of the labelled cells; and in the student backbone, the gradient norm of the weighted IPV and BEV
losses and the cosine between the two gradients.

Run on the initialisation and on the end of pretraining runs (the transfer experiment's
``runs/transfer/pretrain-HVDistill-s*``), it says whether the BEV and depth losses carry a signal the
IPV loss does not already give the student (docs/RESULTS.md).

    .venv/bin/python bench/bev_signal.py [--source synth-transfer] [--checkpoint RUN/checkpoint.pt ...]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def retrieval(k, q) -> dict:
    """Top-1 retrieval of each row of q by the same row of k, and how distinct the rows of q are."""
    import torch
    import torch.nn.functional as F

    k, q = F.normalize(k.float(), dim=1), F.normalize(q.float(), dim=1)
    n = len(k)
    retrieved = torch.argmax(k @ q.T, dim=1)
    top1 = float((retrieved == torch.arange(n)).float().mean())
    twins = q @ q.T
    off_diagonal = (twins.sum() - twins.diagonal().sum()) / (n * (n - 1))
    # retrieving a target's twin counts as right here: how well the student tells apart the targets that differ
    top1_up_to_twins = float(((q[retrieved] * q).sum(1) > 0.99).float().mean())
    twins.fill_diagonal_(-2.0)
    nearest = twins.max(dim=1).values
    return {
        "pairs": n,
        "chance_nce": math.log(n),
        "top1": top1,
        "top1_chance": 1.0 / n,
        "top1_up_to_twins_above_0.99": top1_up_to_twins,
        "target_mean_pairwise_cos": float(off_diagonal),
        "target_nearest_other_cos_median": float(nearest.median()),
        "targets_with_a_twin_above_0.95": float((nearest > 0.95).float().mean()),
    }


def measure(net, dataset, collate, batches: int, weights: dict) -> dict:
    import torch

    from models import frustum
    from models.losses import bev_matched_loss, info_nce, ipv_pairs
    from pipeline.train.loop import group_grad_norms

    backbone = list(net.student.backbone.parameters())
    rows: list[dict] = []
    for b in range(batches):
        batch = collate([dataset[2 * b], dataset[2 * b + 1]])
        out, point_features, heads = net.outputs(batch, lss=True, bev=True)
        pairs = (batch["pair_point"], batch["pair_image"], batch["pair_pixel"])

        # IPV: the superpixel means the loss contrasts
        k, q = ipv_pairs(point_features, heads.pixel_features, batch["superpixels"], batch["sp_count"], *pairs)
        ipv = info_nce(k, q, temperature=net.losses.temperature)
        row = {"ipv": {"loss": float(ipv.detach())} | retrieval(k.detach(), q.detach())}

        # BEV: the student's columns that some frustum point reaches, at most bev_matches drawn
        seen = heads.bev.norm(dim=1) > 0
        s_bev, t_bev = out.bev_features[seen], heads.bev[seen]
        generator = torch.Generator().manual_seed(b)
        chosen = torch.randperm(len(s_bev), generator=generator)[: net.losses.bev_matches]
        bev = bev_matched_loss(s_bev, t_bev, max_matches=net.losses.bev_matches, generator=torch.Generator().manual_seed(b), temperature=net.losses.temperature)
        row["bev"] = {"loss": float(bev.detach()), "student_columns": len(out.bev_index), "columns_reached": int(seen.sum())}
        row["bev"] |= retrieval(s_bev[chosen].detach(), t_bev[chosen].detach())

        # depth: the predicted distribution against the LiDAR depth of the labelled cells
        target = batch["depth_target"]
        probs = heads.depth_probs.detach()
        labelled = target > 0
        centres = frustum.depth_bins() + frustum.DEPTH_STEP_M / 2
        expected = (probs * centres.view(1, -1, 1, 1)).sum(1)
        argmax_depth = centres[probs.argmax(1)]
        t = target[labelled]
        row["depth"] = {
            "labelled_cells": int(labelled.sum()),
            "mae_expected_m": float((expected[labelled] - t).abs().mean()),
            "argmax_within_1m": float(((argmax_depth[labelled] - t).abs() <= 1.0).float().mean()),
            "mae_of_predicting_the_median_m": float((t - t.median()).abs().mean()),
        }

        # the student backbone's gradient from each weighted loss
        grads = {}
        for name, loss in (("ipv", weights["ipv_weight"] * ipv), ("bev", weights["bev_weight"] * bev)):
            net.zero_grad()
            loss.backward(retain_graph=True)
            grads[name] = torch.cat([p.grad.flatten() for p in backbone if p.grad is not None])
            row[name]["backbone_grad_norm"] = group_grad_norms({"b": backbone})["b"]
        row["backbone_grad_cos_ipv_bev"] = float(torch.nn.functional.cosine_similarity(grads["ipv"], grads["bev"], dim=0))
        net.zero_grad()
        rows.append(row)
    return _mean(rows)


def _mean(rows: list[dict]):
    first = rows[0]
    if isinstance(first, dict):
        return {key: _mean([r[key] for r in rows]) for key in first}
    return sum(rows) / len(rows)


def main() -> None:
    from grad_norms import experiment_parser, experiment_setup  # bench/ is this script's folder

    parser = experiment_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, nargs="*", default=[], help="HVDistill pretraining checkpoints to measure, after the initialisation")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()

    from pipeline.train.pretrain_data import collate

    config, dataset, make_net = experiment_setup(args)
    weights = config.losses.model_dump()
    results = {}
    for checkpoint in [None, *args.checkpoint]:
        net = make_net(checkpoint)
        name = "initialisation" if checkpoint is None else checkpoint.parent.name
        results[name] = measure(net, dataset, collate, args.batches, weights)
        print(name, json.dumps(results[name], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
