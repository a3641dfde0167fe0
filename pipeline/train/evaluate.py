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
from pipeline.train.downstream import CLASSES, n_classes, open_split
from pipeline.train.finetune_config import FinetuneConfig
from pipeline.train.seg_data import seg_collate
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
    net = SegmentationNet(n_classes(config.data.dataset), bn_momentum=config.model.bn_momentum, width=config.model.width or 1.0)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise HvdError(f"{checkpoint}: its model does not fit the segmentation network of its config ({str(exc).splitlines()[0]})") from None
    return net, config, {"step": state.get("step"), "path": str(checkpoint)}


@torch.no_grad()
def predict(net: SegmentationNet, batch: dict, device: torch.device) -> np.ndarray:
    """Per-point class predictions 1..C of a batch (points of example 0 first)."""
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
    export: Path | None = None,
) -> dict:
    """The segmentation report (``pipeline.train.seg_metrics.report``) of a checkpoint on a split,
    with what was evaluated; ``catalog``: the one the run was trained with unless given. The dataset
    (nuScenes or SemanticKITTI) is the run's own (``data.dataset`` of its config). ``export``: also
    write the predictions in the nuScenes-lidarseg submission layout there (``Submission``)."""
    net, config, where = load_model(checkpoint)
    if catalog is None:
        from pipeline.stages import Catalog

        catalog = Catalog.load(config.data.catalog)
    source = source or config.data.source
    if export is not None and config.data.dataset != "nuscenes":
        raise HvdError(f"--export writes the nuScenes-lidarseg submission layout; {where['path']} was fine-tuned on {config.data.dataset}")
    data = open_split(catalog, config.data, split, max_examples=max_examples, input=config.model.input, source=source)  # fed as in training
    rows, scenes, dataset = data.rows, data.scenes, data.dataset
    submission = Submission.open(export, data.index, rows, max_examples) if export is not None else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=seg_collate, num_workers=num_workers)
    classes = CLASSES[config.data.dataset]
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    done = 0
    for batch in loader:
        predictions = predict(net, batch, device)
        matrix += seg_metrics.confusion(batch["labels"].numpy(), predictions, len(classes))
        if submission is not None:
            submission.add(batch["tokens"], np.split(predictions, np.cumsum(batch["points_per_example"])[:-1]))
        done += batch["size"]
        if on_progress:
            on_progress(done, len(rows))
    result = seg_metrics.report(matrix, classes)
    result.update({"checkpoint": where["path"], "step": where["step"], "dataset": config.data.dataset, "source": source, "split": split, "split_source": data.split_source, "keyframes": len(rows), "scenes": scenes})
    if submission is not None:
        result["export"] = submission.finish()
    return result


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


SUBMISSION_META = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}


class Submission:
    """Predictions in the nuScenes-lidarseg submission layout, which the devkit's ``LidarSegEval``
    and ``validate_submission`` read: ``DIR/lidarseg/<eval set>/<lidar sample_data token>_lidarseg.bin``
    (uint8, one evaluation class 1..16 per point, in the order of the points in the sweep's file)
    and ``DIR/<eval set>/submission.json`` (the meta flags), written last: a folder without it is
    an interrupted export. The devkit scores every keyframe of every scene of its split, so the
    export needs the whole official split: no ``--max-examples``, no scene missing."""

    def __init__(self, root: Path, eval_set: str, lidar_token: dict[str, str], expected: int) -> None:
        self.root, self.eval_set, self.lidar_token, self.expected, self.written = Path(root), eval_set, lidar_token, expected, 0
        self.bins = self.root / "lidarseg" / eval_set

    @classmethod
    def open(cls, root: Path, index, rows, max_examples: int | None) -> "Submission":
        from pipeline.data.splits import official_scenes

        if max_examples is not None:
            raise HvdError("--export writes a submission of the whole split; the devkit scores every keyframe of it, so drop --max-examples")
        names = sorted(set(np.asarray(index.column("official_split"))[rows].tolist()))
        if len(names) != 1 or not names[0]:
            raise HvdError(f"--export needs the devkit's official splits, but the scenes of {index.path} are not in them (split names {names}); the devkit's LidarSegEval cannot score them")
        eval_set = names[0]
        have = set(np.asarray(index.column("scene"))[rows].tolist())
        missing = [scene for scene in official_scenes(eval_set) if scene not in have]
        if missing:
            raise HvdError(f"--export: the devkit scores every scene of {eval_set}, and {len(missing)} of them {'is' if len(missing) == 1 else 'are'} not in {index.path} ({', '.join(missing[:5])}); the submission would not evaluate")
        tokens = index.tokens
        lidar = index.column("lidar_token")
        self = cls(root, eval_set, {tokens[r]: str(lidar[r]) for r in rows}, len(rows))
        stale = self.root / eval_set / "submission.json"
        stale.unlink(missing_ok=True)  # until this export is complete
        self.bins.mkdir(parents=True, exist_ok=True)
        return self

    def add(self, sample_tokens: list[str], predictions: list[np.ndarray]) -> None:
        for token, pred in zip(sample_tokens, predictions):
            if len(pred) and (pred.min() < 1 or pred.max() > 16):
                raise HvdError(f"sample {token}: predictions outside the evaluation classes 1..16")
            path = self.bins / f"{self.lidar_token[token]}_lidarseg.bin"
            tmp = path.with_suffix(".tmp")
            pred.astype(np.uint8).tofile(tmp)
            tmp.replace(path)
            self.written += 1

    def finish(self) -> dict:
        """Write submission.json (last) and say what was written."""
        if self.written != self.expected:
            raise HvdError(f"--export wrote {self.written} of {self.expected} keyframes of {self.eval_set}")
        meta = self.root / self.eval_set / "submission.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"meta": SUBMISSION_META}, indent=1))
        return {"folder": str(self.root), "eval_set": self.eval_set, "keyframes": self.written, "submission": str(meta)}
