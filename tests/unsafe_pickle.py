"""Checkpoint files that run code when they are unpickled: the probes of "checkpoints are data, not
code". The payload creates a marker file (``Path.touch``) instead of doing harm, so a test can tell
whether a loader executed it."""

from __future__ import annotations

from pathlib import Path

import torch


class TouchOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: any loader that runs pickled calls creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def malicious_checkpoint(path: Path, marker: Path, **entries) -> Path:
    """A ``torch.save`` file at ``path`` shaped like an hvd checkpoint (``entries`` plus a ``model``
    entry) whose ``model`` entry runs the payload when loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**entries, "model": TouchOnLoad(marker), "student": TouchOnLoad(marker)}, path)
    return path
