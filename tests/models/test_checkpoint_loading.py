"""``models.checkpoints.load_checkpoint``, the one door every checkpoint hvd reads goes through: a
file whose pickle would call Python code is refused without running it, an unreadable file is one
line naming it, and plain weights load."""

from __future__ import annotations

import pytest
import torch

from models.checkpoints import CheckpointError, load_checkpoint
from pipeline.errors import HvdError
from tests.unsafe_pickle import malicious_checkpoint


def test_the_probe_runs_code_under_an_unsafe_loader(tmp_path):
    """The control: loading the crafted file the old way (``weights_only=False``) creates the marker,
    so a marker that stays absent elsewhere means the payload was refused, not that it was inert."""
    path = malicious_checkpoint(tmp_path / "evil.pt", tmp_path / "control-marker")
    torch.load(path, weights_only=False)
    assert (tmp_path / "control-marker").exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy-pickle"])
def test_code_in_a_checkpoint_is_refused_without_running(tmp_path, zipped):
    path, marker = tmp_path / "evil.pt", tmp_path / "marker"
    if zipped:
        malicious_checkpoint(path, marker)
    else:
        from tests.unsafe_pickle import TouchOnLoad

        with open(path, "wb") as f:
            torch.save({"model": TouchOnLoad(marker)}, f, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert not marker.exists()
    assert isinstance(error.value, HvdError) and "\n" not in message
    assert message.startswith(f"{path}: refused to load: it holds Python objects other than tensors")
    assert "getattr" in message  # Path.touch pickles as getattr(Path, "touch"): the names are listed


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"step: 3\nlr: 0.1\n", "not a torch.save file; it starts with b'step: 3"),
        (b"", "the file is empty"),
        ("truncated", "a zip archive, truncated, corrupt or not written by torch.save"),
    ],
    ids=["text", "empty", "truncated"],
)
def test_unreadable_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "checkpoint.pt"
    if content == "truncated":
        torch.save({"w": torch.ones(1000)}, path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: not a loadable PyTorch checkpoint (") and expected in str(error.value)
    assert "\n" not in str(error.value)


def test_weights_and_plain_data_load(tmp_path):
    path = tmp_path / "weights.pt"
    state = {"model": {"w": torch.arange(3.0)}, "step": 7, "config": {"lr": 0.1, "name": None}, "rng": [(1, 2), torch.zeros(2)]}
    torch.save(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0)) and loaded["step"] == 7 and loaded["config"] == {"lr": 0.1, "name": None}
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "absent.pt")
