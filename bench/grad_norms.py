"""Where each pretraining loss sends its gradient: the norm, on one batch, of each weighted loss's
gradient in the student and in the teacher heads, and the update a global gradient-norm clip leaves
the student. Explains why HVDistill's student barely moves in the short transfer runs.

    .venv/bin/python bench/grad_norms.py [--source synth-transfer] [--clip 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default=str(Path(__file__).resolve().parents[1] / "data_catalog.yaml"))
    parser.add_argument("--source", default="synth-transfer")
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--runs", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "transfer", help="also: how far each pretraining run of the transfer experiment moved its backbone")
    args = parser.parse_args()

    import torch

    from pipeline import pretrain_config
    from pipeline.catalog import Catalog
    from pipeline.pretrain_data import PretrainDataset, collate, open_stores
    from pipeline.train_pretrain import PretrainNet, loss_config

    config = pretrain_config.build(None, None, {"data": {"catalog": args.catalog, "source": args.source, "batch_size": 2}})
    stores = open_stores(Catalog.load(args.catalog), args.source)
    dataset = PretrainDataset(stores, config.data, seed=0)
    teacher = stores.artifacts["teacher_cache"].params
    cache = stores.open()["teacher_cache"]
    pca = (torch.from_numpy(cache.read_shared("pca_mean")), torch.from_numpy(cache.read_shared("pca_components"))) if teacher.pca_channels else None
    torch.manual_seed(0)
    net = PretrainNet(loss_config(config.losses), tuple(teacher.input_size), teacher.output_stride, pca).train()
    parts = net(collate([dataset[0], dataset[1]]), torch.Generator().manual_seed(0))

    def norm(module) -> float:
        return float(sum((p.grad.detach() ** 2).sum() for p in module.parameters() if p.grad is not None) ** 0.5)

    result = {}
    for name, loss in parts.items():
        weighted = getattr(config.losses, f"{name}_weight") * loss
        net.zero_grad()
        weighted.backward(retain_graph=True)
        result[name] = {"weighted_loss": float(weighted.detach()), "student": norm(net.student), "heads": norm(net.heads)}
    for methods, names in (("SLidR (IPV)", ["ipv"]), ("HVDistill (IPV + BEV + depth)", list(parts))):
        net.zero_grad()
        sum(getattr(config.losses, f"{n}_weight") * parts[n] for n in names).backward(retain_graph=True)
        total = (norm(net.student) ** 2 + norm(net.heads) ** 2) ** 0.5
        scale = min(1.0, args.clip / total)
        result[methods] = {"global_norm": total, "clip_scale": scale, "student_step_norm_per_lr": norm(net.student) * scale}
    result["backbone moved (relative L2 from the initialisation)"] = displacement(args.runs)
    print(json.dumps(result, indent=1))


def displacement(runs: Path) -> dict:
    """For each ``pretrain-<method>-s<seed>`` run: |backbone - its initialisation| / |initialisation|
    (the initialisation is rebuilt from the seed, as ``train_pretrain`` creates the student first)."""
    import torch

    from models.student import Student

    out = {}
    for checkpoint in sorted(runs.glob("pretrain-*-s*/checkpoint.pt")):
        seed = int(checkpoint.parent.name.rsplit("-s", 1)[1])
        torch.manual_seed(seed)
        init = Student().state_dict()
        trained = torch.load(checkpoint, map_location="cpu", weights_only=False)["student"]
        keys = [k for k in init if k.startswith("backbone.") and init[k].is_floating_point() and "running" not in k]
        moved = sum(float(((trained[k] - init[k]) ** 2).sum()) for k in keys) ** 0.5
        out[checkpoint.parent.name] = moved / sum(float((init[k] ** 2).sum()) for k in keys) ** 0.5
    return out


if __name__ == "__main__":
    main()
