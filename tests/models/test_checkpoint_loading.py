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


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"], ids=["numpy1", "numpy2"])
def test_an_old_numpy_random_state_loads_under_either_numpy(tmp_path, module):
    """A checkpoint of an earlier version holds numpy's random state as an array, which numpy
    pickles through ``_reconstruct``: named ``numpy.core.multiarray`` by numpy 1 and
    ``numpy._core.multiarray`` by numpy 2. Either loads under either numpy (a CPU run's checkpoint
    on the numpy 2 of a GPU machine), without numpy's deprecation warning for ``numpy.core``."""
    import re
    import warnings

    import numpy as np

    path = tmp_path / "old.pt"
    state = np.random.RandomState(5).get_state()
    with open(path, "wb") as f:  # a plain pickle (protocol 2): each global is a line of text
        torch.save({"rng": {"numpy": state}}, f, _use_new_zipfile_serialization=False)
    data, n = re.subn(rb"cnumpy\.(_?)core\.multiarray\n_reconstruct\n", b"c" + module.encode() + b"\n_reconstruct\n", path.read_bytes())
    assert n >= 1
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        loaded = load_checkpoint(path)["rng"]["numpy"]
    assert loaded[0] == state[0] and np.array_equal(loaded[1], state[1]) and loaded[1].dtype == np.uint32
