"""The ``pretrain`` flow: one pretraining run launched with ``torchrun`` (one process per GPU) as a
subprocess of the flow run, its output streamed to the run's log; the flow fails when it fails.

Its parameter is a ``PretrainJob`` (the deployment's parameters, validated by Prefect): how many
processes, and the ``PretrainConfig`` as ``hvd train pretrain`` builds it (a preset, then a YAML
file, then overrides). The flow writes the resolved config to a file and runs
``python -m torch.distributed.run --standalone --nproc-per-node N -m cli.main train pretrain --config FILE``
(``torch.distributed.run`` is what the ``torchrun`` script runs, here with this interpreter).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import MissingContextError
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pipeline.errors import HvdError
from pipeline.procs import reaper
from pipeline.train import pretrain_config


class PretrainFailed(HvdError):
    """The training processes exited with an error."""


class PretrainJob(BaseModel):
    """A pretraining run: ``nproc`` processes on this machine (one per GPU), the config built from
    ``preset``, then ``config_file``, then ``overrides`` (nested keys of a PretrainConfig, e.g.
    ``{"run": {"max_steps": 100}}``), and ``resume`` to continue the run folder's checkpoint."""

    model_config = ConfigDict(extra="forbid")

    nproc: int = Field(1, ge=1, description="processes torchrun starts (one per GPU)")
    preset: str | None = Field("demo", description="demo or nuscenes (pipeline/train/pretrain_config.py)")
    config_file: str | None = Field(None, description="YAML file of a PretrainConfig, relative to the working directory")
    overrides: dict[str, Any] = Field(default_factory=dict, description="PretrainConfig keys applied last")
    resume: bool = False

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str | None) -> str | None:
        if preset is not None and preset not in pretrain_config.PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(pretrain_config.PRESETS)}")
        return preset

    @field_validator("overrides")
    @classmethod
    def _overrides_are_config_keys(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Reject an unknown key or bad value now, not in the training processes (the config
        file, which may exist only where the run happens, is checked when the run starts)."""
        try:
            pretrain_config.build(info.data.get("preset"), None, overrides)
        except HvdError as exc:
            raise ValueError(str(exc).replace(f"preset {info.data.get('preset')}: ", "", 1)) from None
        return overrides

    def config(self) -> pretrain_config.PretrainConfig:
        path = Path(self.config_file) if self.config_file else None
        if path is not None and not path.is_file():
            raise HvdError(f"pretraining config file {path.resolve()} not found")
        return pretrain_config.build(self.preset, path, self.overrides)


def torchrun_command(job: PretrainJob, config_path: Path) -> list[str]:
    """The command line of the training processes (single node, a free rendezvous port)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(job.nproc)]
    command += ["-m", "cli.main", "train", "pretrain", "--config", str(config_path)]
    return command + (["--resume"] if job.resume else [])


def run_streaming(command: list[str], log: Callable[[str], None], env: dict | None = None, tail_lines: int = 40) -> None:
    """Run ``command``, passing each output line (stdout and stderr) to ``log``; raise
    ``PretrainFailed`` with the last lines when it exits non-zero. Killed with the flow run: by the
    ``finally`` below when the run is cancelled or crashes, by the reaper when the flow run's
    process is killed outright (torchrun does not watch its parent: the trainers would run on)."""
    tail: deque[str] = deque(maxlen=tail_lines)
    with reaper():
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                log(line)
            code = proc.wait()
        finally:
            if proc.poll() is None:  # the flow run was cancelled or crashed: take the trainers down too
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if code != 0:
        raise PretrainFailed(f"{' '.join(command)} exited with status {code}; last output:\n" + "\n".join(tail))


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called as a plain function (tests)
        return logging.getLogger("hvd.pretrain")


@flow(name="pretrain", flow_run_name="pretrain x{job.nproc}", validate_parameters=True)
def pretrain(job: PretrainJob) -> dict:
    """Pretrain the student with torchrun (``job.nproc`` processes) from the stores; fails when
    any training process fails, with the end of its output in the error."""
    logger = _logger()
    config = job.config()
    with tempfile.TemporaryDirectory(prefix="hvd-pretrain-") as tmp:
        path = Path(tmp) / "config.yaml"
        pretrain_config.save(config, path)
        command = torchrun_command(job, path)
        logger.info("running %s", " ".join(command))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
        run_streaming(command, logger.info, env=env)
    return {"out_dir": config.run.out_dir, "nproc": job.nproc}
