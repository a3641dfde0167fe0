"""``hvd eval`` and ``hvd train`` refuse what they must not trust, as one line and exit status 2: a
checkpoint that would run code or is not a checkpoint at all, and run configs with numbers no
training can use."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from tests.unsafe_pickle import malicious_checkpoint


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _one_line_error(result) -> str:
    """The error line of a command that failed as a user error: exit 2, no traceback, one line
    (what precedes it can only be an import's warning, e.g. MinkowskiEngine's CPU-only notice)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit)), result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    return errors[0]


def test_eval_refuses_a_checkpoint_that_would_run_code(runner, tmp_path):
    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "run" / "checkpoint.pt", marker, config={}, step=1)
    line = _one_line_error(runner.invoke(app, ["eval", str(tmp_path / "run")]))
    assert f"{path}: refused to load: it holds Python objects other than tensors" in line
    assert not marker.exists()


def test_eval_of_a_text_file_names_it(runner, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("step 7 looked good\n")
    line = _one_line_error(runner.invoke(app, ["eval", str(path)]))
    assert line == f"error: {path}: not a loadable PyTorch checkpoint (not a torch.save file; it starts with b'step 7 looke')"


@pytest.mark.parametrize(
    "command, section, change, expected",
    [
        ("pretrain", "optim", {"lr": -0.1}, "`optim.lr`: Input should be greater than or equal to 0 (got -0.1)"),  # 0: bench/transfer.py's random+BN
        ("finetune", "optim", {"lr": 0}, "`optim.lr`: Input should be greater than 0 (got 0)"),
        ("pretrain", "optim", {"lr": float("nan")}, "`optim.lr`: Input should be a finite number (got nan)"),
        ("pretrain", "optim", {"weight_decay": -1}, "`optim.weight_decay`: Input should be greater than or equal to 0 (got -1)"),
        ("pretrain", "optim", {"momentum": 1.0}, "`optim.momentum`: Input should be less than 1 (got 1.0)"),
        ("pretrain", "losses", {"depth_weight": -60}, "`losses.depth_weight`: Input should be greater than or equal to 0 (got -60)"),
        ("pretrain", "losses", {"temperature": float("inf")}, "`losses.temperature`: Input should be a finite number (got inf)"),
        ("pretrain", "losses", {"ipv": False, "bev": False, "depth": False}, "`losses`: Value error, no loss is switched on"),
        ("pretrain", "data", {"augment": {"flip_x": 1.5}}, "`data.augment.flip_x`: Input should be less than or equal to 1 (got 1.5)"),
        ("pretrain", "run", {"seed": -1}, "`run.seed`: Input should be greater than or equal to 0 (got -1)"),
        ("finetune", "optim", {"head_lr": float("nan")}, "`optim.head_lr`: Input should be a finite number (got nan)"),
        ("finetune", "optim", {"dampening": -0.5}, "`optim.dampening`: Input should be greater than or equal to 0 (got -0.5)"),
    ],
)
def test_train_refuses_unusable_numbers_in_the_config(runner, tmp_path, command, section, change, expected):
    """YAML's ``.nan`` and ``.inf`` read as floats; each bad value is named with its key and file."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({section: change}))
    assert (".nan" in config.read_text()) == any(v != v for v in change.values() if isinstance(v, float))
    line = _one_line_error(runner.invoke(app, ["train", command, "--config", str(config)]))
    assert line.startswith(f"error: {config}: {expected}"), line
