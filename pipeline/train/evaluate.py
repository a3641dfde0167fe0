"""``hvd eval``: per-point predictions of a fine-tuned model through the voxel inverse map, scored
against the lidarseg labels of the validation scenes (docs/METHOD.md section 8: the ignore class
excluded, no test-time augmentation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from models.checkpoints import load_checkpoint
from models.segmentation import SegmentationNet
from models.student import sparse_input
from pipeline.errors import HvdError
from pipeline.store.config_file import describe_validation_error
from pipeline.train import seg_metrics
from pipeline.train.finetune_config import FinetuneConfig
from pipeline.train.seg_data import SegDataset, seg_collate, select_rows
from pipeline.train.voxelize import InputSettings


def load_model(checkpoint: Path) -> tuple[SegmentationNet, FinetuneConfig, dict]:
    """The model of an ``hvd train finetune`` checkpoint, its config (``model.input`` set: the input
    convention the model was trained with) and the checkpoint's position."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "checkpoint.pt"
    if not checkpoint.is_file():
        raise HvdError(f"checkpoint {checkpoint} does not exist (an `hvd train finetune` run folder or its checkpoint.pt)")
    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise HvdError(f"{checkpoint} is not an `hvd train finetune` checkpoint (no model and config)")
    try:
        config = FinetuneConfig.model_validate(state["config"])
    except ValidationError as exc:
        raise HvdError(describe_validation_error(exc, FinetuneConfig, f"{checkpoint} (its config)")) from None
    if config.model.input is None:  # a run from before input conventions were recorded: hvd's default then
        config = config.model_copy(update={"model": config.model.model_copy(update={"input": InputSettings()})})
    net = SegmentationNet(bn_momentum=config.model.bn_momentum, width=config.model.width or 1.0)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise HvdError(f"{checkpoint}: its model does not fit the segmentation network of its config ({str(exc).splitlines()[0]})") from None
    return net, config, {"step": state.get("step"), "path": str(checkpoint)}


@torch.no_grad()
def predict(net: SegmentationNet, batch: dict, device: torch.device) -> np.ndarray:
    """Per-point class predictions 1..16 of a batch (points of example 0 first)."""
    logits = net(sparse_input(batch["coords"], [f.to(device) for f in batch["feats"]]))
    return (logits.argmax(dim=1)[batch["inverse"].to(device)] + 1).cpu().numpy()


def evaluate(
    checkpoint: Path,
    *,
    catalog=None,
    source: str | None = None,
    split: str = "val",
    max_examples: int | None = None,
    batch_size: int = 1,
    num_workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The segmentation report (``pipeline.train.seg_metrics.report``) of a checkpoint on a split,
    with what was evaluated; ``catalog``: the one the run was trained with unless given."""
    from pipeline.stages.index import ensure_index

    net, config, where = load_model(checkpoint)
    if catalog is None:
        from pipeline.stages import Catalog

        catalog = Catalog.load(config.data.catalog)
    source = source or config.data.source
    index, _ = ensure_index(catalog, source)
    rows, scenes = select_rows(index, split, 1.0, max_examples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device).eval()
    dataset = SegDataset(index, rows, augment=False, input=config.model.input)  # fed as in training
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=seg_collate, num_workers=num_workers)
    matrix = np.zeros((seg_metrics.N_CLASSES, seg_metrics.N_CLASSES), dtype=np.int64)
    done = 0
    for batch in loader:
        matrix += seg_metrics.confusion(batch["labels"].numpy(), predict(net, batch, device))
        done += batch["size"]
        if on_progress:
            on_progress(done, len(rows))
    result = seg_metrics.report(matrix)
    result.update({"checkpoint": where["path"], "step": where["step"], "source": source, "split": split, "keyframes": len(rows), "scenes": scenes})
    return result


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
