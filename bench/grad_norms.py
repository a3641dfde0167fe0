"""Where each pretraining loss sends its gradient: on a few batches of a source, the norm of each
weighted loss's gradient in every parameter group (student backbone, student heads, decoder, bridge,
depth net), at initialisation or from a pretraining checkpoint; and, from a finished transfer
experiment, how far each pretraining run moved its backbone.

This is the measurement behind the depth-loss fix: with the BCE summed over the 118 bins the depth
loss's gradient in the teacher heads was ~100x the IPV gradient in the student, and a global clip
scaled the student's step to nothing; at the reference's mean reduction they are of one order.

    .venv/bin/python bench/grad_norms.py [--source synth-transfer] [--checkpoint RUN/checkpoint.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def experiment_parser(description: str) -> argparse.ArgumentParser:
    """The options shared by the loss-measurement benches: the source and the transfer experiment's widths."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default=str(REPO / "data_catalog.yaml"))
    parser.add_argument("--source", default="synth-transfer")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--student-width", type=float, default=0.5)
    parser.add_argument("--bridge-channels", type=int, default=256)
    parser.add_argument("--depth-channels", type=int, default=64)
    return parser


def experiment_setup(args):
    """(config, dataset, make_net): ``make_net(checkpoint or None)`` builds the HVDistill net in train
    mode, seeded, with a pretraining checkpoint's student and heads when given."""
    import torch

    from models.checkpoints import load_checkpoint
    from pipeline.stages import Catalog
    from pipeline.train import pretrain_config
    from pipeline.train.pretrain import build_net
    from pipeline.train.pretrain_data import PretrainDataset, open_stores

    network = {"student_width": args.student_width, "bridge_channels": args.bridge_channels, "depth_channels": args.depth_channels}
    config = pretrain_config.build(None, None, {"data": {"catalog": args.catalog, "source": args.source, "batch_size": 2}, "model": network})
    stores = open_stores(Catalog.load(args.catalog), args.source)

    def make_net(checkpoint: Path | None):
        torch.manual_seed(0)
        net = build_net(config, stores).train()
        if checkpoint is not None:
            state = load_checkpoint(checkpoint)
            net.student.load_state_dict(state["student"])
            net.heads.load_state_dict(state["heads"])
        return net

    return config, PretrainDataset(stores, config.data, seed=0), make_net


def main() -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, help="an HVDistill pretraining checkpoint to measure instead of the initialisation")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "transfer", help="a transfer experiment's run folders (moved.json)")
    args = parser.parse_args()

    import torch

    from pipeline.train.loop import group_grad_norms
    from pipeline.train.pretrain_data import collate

    config, dataset, make_net = experiment_setup(args)
    net = make_net(args.checkpoint)
    groups = net.parameter_groups()
    weights = config.losses.model_dump()
    sums: dict = {}
    for b in range(args.batches):
        parts = net(collate([dataset[2 * b], dataset[2 * b + 1]]), torch.Generator().manual_seed(b))
        for name, loss in parts.items():
            weighted = weights[f"{name}_weight"] * loss
            net.zero_grad()
            weighted.backward(retain_graph=True)
            entry = sums.setdefault(name, {"weighted_loss": 0.0} | {g: 0.0 for g in groups})
            entry["weighted_loss"] += float(weighted.detach()) / args.batches
            for group, norm in group_grad_norms(groups).items():
                entry[group] += norm / args.batches
    result = {"gradient norm per parameter group of each weighted loss (mean over batches)": sums}
    moved = {p.parent.name: json.loads(p.read_text())["backbone_moved"] for p in sorted(args.runs.glob("pretrain-*/moved.json"))}
    if moved:
        result["backbone moved (relative L2 from the initialisation)"] = moved
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
