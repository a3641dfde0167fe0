"""``hvd export``: what it writes and says, and what it refuses (one line, exit status 2).

The student weights here are stand-ins of the right names (only the two tensors the export checks
for width have real shapes): the tensor-for-tensor round trip through a SLidR network lives in
tests/models/test_slidr_checkpoints.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from models.checkpoints import load_checkpoint
from models.slidr import name_map


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _student() -> dict[str, torch.Tensor]:
    """Every tensor name of hvd's Student; stand-in values except the stem and ``final_1`` kernels."""
    state = {ours: torch.zeros(1) for ours in name_map("hvdistill").values()}
    state["backbone.stem.0.kernel"] = torch.zeros(27, 1, 32)
    state["final_1.kernel"] = torch.zeros(96, 64)
    return state


def _run(tmp_path: Path, *, model: dict | None = None, student: dict | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    config = {"model": model if model is not None else {"student_width": 1.0}}
    torch.save({"student": student or _student(), "heads": {}, "step": 12, "epoch": 1, "config": config}, run / "checkpoint.pt")
    return run


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    return errors[0]


def test_export_writes_slidr_layout_next_to_the_run_by_default(runner, tmp_path):
    run = _run(tmp_path)
    result = runner.invoke(app, ["export", str(run), "--format", "slidr"])
    assert result.exit_code == 0, result.output
    path = run / "checkpoint-slidr.pt"
    assert f"wrote 374 tensors (SLidR names, epoch 1) to {path}" in result.output
    assert "input: cartesian voxels of 0.1 m, intensity / 255" in result.output
    assert "not exported: 13 tensors of bev_head" in result.output
    exported = load_checkpoint(path)
    assert list(exported["model_points"])[:2] == ["conv0p1s1.kernel", "bn0.bn.weight"]
    assert set(exported["model_points"]) == set(name_map("slidr"))
    config = exported["config"]
    assert config["cylindrical_coordinates"] is False and config["voxel_size"] == 0.1 and config["model_n_out"] == 64
    assert config["hvd"]["checkpoint"] == str(run / "checkpoint.pt") and config["hvd"]["step"] == 12


def test_export_records_the_runs_input_convention(runner, tmp_path):
    run = _run(tmp_path, model={"student_width": 1.0, "input": {"voxelization": "cylindrical", "voxel_size_m": 0.1, "intensity_divisor": 1.0}})
    result = runner.invoke(app, ["export", str(run / "checkpoint.pt"), "--out", str(tmp_path / "out" / "s.pt")])
    assert result.exit_code == 0, result.output
    config = load_checkpoint(tmp_path / "out" / "s.pt")["config"]
    assert config["cylindrical_coordinates"] is True and config["intensity_divisor"] == 1.0
    assert "input: cylindrical voxels of 0.1 m, intensity / 1" in result.output


def test_export_refuses_a_narrowed_student(runner, tmp_path):
    run = _run(tmp_path, model={"student_width": 0.25})
    line = _one_line_error(runner.invoke(app, ["export", str(run)]))
    assert line.startswith(f"error: {run / 'checkpoint.pt'}: the student is narrowed (model.student_width 0.25); SLidR's MinkUNet34C has fixed widths")
    assert not (run / "checkpoint-slidr.pt").exists()


def test_export_refuses_what_is_not_a_pretraining_checkpoint(runner, tmp_path):
    path = tmp_path / "finetune.pt"
    torch.save({"model": {"backbone.stem.0.kernel": torch.zeros(1)}, "config": {}}, path)
    line = _one_line_error(runner.invoke(app, ["export", str(path)]))
    assert line == f"error: {path} is not a checkpoint of `hvd train pretrain` (no student weights): give a pretraining run folder or its checkpoint.pt"
    student = _student()
    del student["backbone.up.3.blocks.1.bn2.bn.running_var"]
    run = _run(tmp_path, student=student)
    line = _one_line_error(runner.invoke(app, ["export", str(run)]))
    assert "the student is not hvd's MinkUNet34C (1 tensors of SLidR's network absent from the state dict, e.g. backbone.up.3.blocks.1.bn2.bn.running_var)" in line


def test_unknown_format_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(app, ["export", str(_run(tmp_path)), "--format", "onnx"])
    assert result.exit_code == 2 and "onnx" in result.output
