"""The student's input convention (``model.input``) as data: pretraining refuses voxels its BEV head
cannot read, every checkpoint records the convention, fine-tuning takes the pretrained weights' and
refuses a contradicting one, and evaluation rebuilds the run's. Unit-level: no training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.segmentation import Pretrained, read_pretrained
from pipeline.errors import HvdError
from pipeline.train import finetune, finetune_config, pretrain_config
from pipeline.train.finetune import resolve
from pipeline.train.voxelize import SLIDR_INPUT, InputSettings

SLIDR = {"voxelization": "cylindrical", "voxel_size_m": 0.1, "intensity_divisor": 1.0}
HVD = {"voxelization": "cartesian", "voxel_size_m": 0.1, "intensity_divisor": 255.0}


def _pretraining_checkpoint(path: Path, model: dict | None) -> Path:
    """A file shaped like an ``hvd train pretrain`` checkpoint (the student's tensors and the run's
    config); ``model``: its config's ``model`` section (None: no config at all)."""
    state = {"student": {"backbone.stem.0.kernel": torch.zeros(2, 2)}}
    if model is not None:
        state["config"] = {"model": model}
    torch.save(state, path)
    return path


def _finetune(**model) -> finetune_config.FinetuneConfig:
    return finetune_config.build(None, None, {"model": model})


# --- pretraining -------------------------------------------------------------------------------------


def test_pretraining_refuses_cylindrical_voxels_with_the_bev_loss():
    with pytest.raises(HvdError, match="model.input.voxelization is cylindrical but the BEV loss is on: the BEV head needs Cartesian x, y voxels; set losses.bev: false"):
        pretrain_config.build(None, None, {"model": {"input": SLIDR}})
    with pytest.raises(HvdError, match="model.input.voxel_size_m is 0.2 but the BEV loss is on"):
        pretrain_config.build(None, None, {"model": {"input": {"voxel_size_m": 0.2}}})
    # SLidR-style IPV + depth reads the student through the inverse map only: any convention
    config = pretrain_config.build(None, None, {"model": {"input": SLIDR}, "losses": {"bev": False}})
    assert config.model.input == SLIDR_INPUT


def test_a_pretraining_checkpoint_records_its_convention(tmp_path):
    """The loop stores ``config.model_dump(mode="json")``: model.input is in it, resolved, and
    ``read_pretrained`` hands it to fine-tuning."""
    for given, expected in ((None, HVD), (SLIDR, SLIDR)):
        data = {"losses": {"bev": False}} | ({"model": {"input": given}} if given else {})
        dumped = pretrain_config.build(None, None, data).model_dump(mode="json")
        assert dumped["model"]["input"] == expected
        path = _pretraining_checkpoint(tmp_path / "pretrain.pt", dumped["model"])
        assert read_pretrained(path).input == expected
    # a checkpoint from before conventions were recorded says nothing
    assert read_pretrained(_pretraining_checkpoint(tmp_path / "old.pt", {"student_width": 1.0})).input is None


# --- fine-tuning -------------------------------------------------------------------------------------


def test_finetuning_takes_the_checkpoints_convention(tmp_path):
    slidr = _pretraining_checkpoint(tmp_path / "slidr-style.pt", {"student_width": 1.0, "input": SLIDR})
    assert resolve(_finetune(pretrained=str(slidr))).model.input == SLIDR_INPUT
    assert resolve(_finetune(pretrained=str(slidr), input=SLIDR)).model.input == SLIDR_INPUT  # the same, said again
    assert resolve(_finetune()).model.input == InputSettings()  # from scratch: hvd's default
    old = _pretraining_checkpoint(tmp_path / "old.pt", {"student_width": 1.0})
    assert resolve(_finetune(pretrained=str(old))).model.input == InputSettings()
    # a plain state dict says nothing: the given convention, else hvd's
    plain = tmp_path / "plain.pt"
    torch.save({"stem.0.kernel": torch.zeros(2, 2)}, plain)  # hvd's bare backbone names
    assert resolve(_finetune(pretrained=str(plain))).model.input == InputSettings()
    assert resolve(_finetune(pretrained=str(plain), input=SLIDR)).model.input == SLIDR_INPUT
    # a SLidR pretraining file without a config: SLidR's convention (models.slidr)
    theirs = tmp_path / "slidr.pt"
    torch.save({"model_points": {"conv0p1s1.kernel": torch.zeros(2, 2)}}, theirs)
    assert resolve(_finetune(pretrained=str(theirs))).model.input == SLIDR_INPUT


def test_finetuning_refuses_a_convention_that_contradicts_the_checkpoint(tmp_path):
    slidr = _pretraining_checkpoint(tmp_path / "slidr-style.pt", {"input": SLIDR})
    with pytest.raises(HvdError) as error:
        resolve(_finetune(pretrained=str(slidr), input={"voxelization": "cartesian", "intensity_divisor": 1.0}))
    assert str(error.value) == (
        f"model.input.voxelization is cartesian but {slidr} was trained with cylindrical voxels of 0.1 m, intensity / 1 (SLidR's convention): "
        "drop model.input to use the checkpoint's convention, or fine-tune weights trained with yours"
    )
    with pytest.raises(HvdError, match=r"model.input.voxelization is cartesian and model.input.intensity_divisor is 255 but .* was trained with cylindrical"):
        resolve(_finetune(pretrained=str(slidr), input=HVD))
    # an hvd checkpoint from before conventions were recorded was trained with hvd's default
    old = _pretraining_checkpoint(tmp_path / "old.pt", {"student_width": 1.0})
    with pytest.raises(HvdError, match=r"model.input.voxelization is cylindrical and model.input.intensity_divisor is 1 but .*old.pt was trained with cartesian voxels of 0.1 m, intensity / 255 \(hvd's default\)"):
        resolve(_finetune(pretrained=str(old), input=SLIDR))


def test_a_recorded_convention_that_is_not_one_is_refused(tmp_path):
    path = _pretraining_checkpoint(tmp_path / "odd.pt", {"input": {"voxelization": "spherical"}})
    with pytest.raises(HvdError, match=r"odd.pt: its recorded input convention .* is not valid model.input settings \(voxelization:"):
        resolve(_finetune(pretrained=str(path)))


def test_finetuning_reads_the_input_field_whatever_the_files_kind(tmp_path, monkeypatch):
    """SLidR's own files (read_pretrained kind "slidr") carry their convention in ``input`` too."""
    path = tmp_path / "slidr.pt"
    monkeypatch.setattr(finetune, "read_pretrained", lambda p: Pretrained(path=Path(p), kind="slidr", state={}, input=SLIDR))
    assert resolve(_finetune(pretrained=str(path))).model.input == SLIDR_INPUT
    with pytest.raises(HvdError, match="slidr.pt was trained with cylindrical voxels of 0.1 m, intensity / 1 \\(SLidR's convention\\)"):
        resolve(_finetune(pretrained=str(path), input=HVD))


# --- evaluation --------------------------------------------------------------------------------------


def test_evaluation_rebuilds_the_runs_convention(tmp_path):
    """A fine-tuning checkpoint holds its resolved config; ``load_model`` gives it back (a run from
    before conventions were recorded: hvd's default)."""
    from models.segmentation import SegmentationNet
    from pipeline.train.evaluate import load_model

    slidr = _pretraining_checkpoint(tmp_path / "slidr-style.pt", {"input": SLIDR})
    config = resolve(_finetune(pretrained=str(slidr), width=0.25))
    weights = SegmentationNet(width=0.25).state_dict()
    for name, saved, expected in (("new", config.model_dump(mode="json"), SLIDR_INPUT), ("old", _finetune(width=0.25).model_dump(mode="json"), InputSettings())):
        if name == "old":
            del saved["model"]["input"]
        torch.save({"model": weights, "config": saved, "step": 1}, tmp_path / f"{name}.pt")
        _, loaded, _ = load_model(tmp_path / f"{name}.pt")
        assert loaded.model.input == expected, name
