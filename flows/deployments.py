"""Registering the deployments of ``prefect.yaml`` with a Prefect server (``hvd deploy``).

Before anything reaches the server, each deployment's parameters are validated against the typed
config of its flow (``PrepConfig``, ``PretrainJob``: unknown keys are errors), since Prefect itself
checks them only when a run is created. Then the API must answer and every work pool named must
exist (``create_pools`` makes missing ones as process pools); the registration itself is
``prefect deploy`` on the file, so what is registered is exactly what ``prefect.yaml`` declares.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.errors import HvdError
from pipeline.store.config_file import describe_validation_error, read_yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "prefect.yaml"


class DeployError(HvdError):
    """``prefect.yaml`` is invalid, or the server or a work pool is not there."""


@dataclass(frozen=True)
class Deployment:
    """One entry of ``prefect.yaml``'s ``deployments``."""

    name: str
    entrypoint: str
    work_pool: str
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[dict] = field(default_factory=list)


def load(path: Path = PREFECT_FILE, names: list[str] | None = None) -> list[Deployment]:
    """The deployments declared in ``path`` (those named in ``names``, all if None)."""
    data = read_yaml(path, DeployError)
    entries = data.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise DeployError(f"{path}: no `deployments` list")
    found: list[Deployment] = []
    for i, entry in enumerate(entries):
        where = f"{path}: deployments[{i}]"
        if not isinstance(entry, dict):
            raise DeployError(f"{where} is not a mapping")
        missing = [k for k in ("name", "entrypoint") if not entry.get(k)]
        pool = (entry.get("work_pool") or {}).get("name")
        if missing or not pool:
            raise DeployError(f"{where}: missing " + ", ".join(f"`{k}`" for k in [*missing, *([] if pool else ["work_pool.name"])]))
        found.append(Deployment(entry["name"], entry["entrypoint"], pool, entry.get("parameters") or {}, entry.get("schedules") or []))
    if names:
        unknown = [n for n in names if n not in {d.name for d in found}]
        if unknown:
            raise DeployError(f"{path} declares no deployment {', '.join(map(repr, unknown))}; it declares: {', '.join(d.name for d in found)}")
        found = [d for d in found if d.name in names]
    return found


def load_flow(deployment: Deployment, root: Path = REPO):
    """The flow object of a deployment's ``path/to/file.py:function`` entrypoint (relative to
    this checkout, wherever the deployments file is)."""
    from prefect.flows import load_flow_from_entrypoint

    file, _, function = deployment.entrypoint.partition(":")
    path = root / file
    if not function or not path.is_file():
        raise DeployError(f"deployment {deployment.name!r}: entrypoint {deployment.entrypoint!r} is not FILE.py:FLOW under {root}")
    return load_flow_from_entrypoint(f"{path}:{function}")


def check_parameters(deployment: Deployment, path: Path = PREFECT_FILE) -> None:
    """Validate the declared parameters as the flow will: each against its typed config (with
    the key path of any problem), then all of them through Prefect's own validation."""
    flow = load_flow(deployment)
    hints = typing.get_type_hints(flow.fn)
    names = [p for p in flow.parameters.properties]
    where = f"{path}: deployment {deployment.name!r}"
    unknown = [k for k in deployment.parameters if k not in names]
    if unknown:
        raise DeployError(f"{where}: flow {flow.name!r} has no parameter {', '.join(map(repr, unknown))} (its parameters: {', '.join(names)})")
    for name, value in deployment.parameters.items():
        model = hints.get(name)
        if isinstance(model, type) and issubclass(model, BaseModel):
            try:
                model.model_validate(value)
            except ValidationError as exc:
                raise DeployError(describe_validation_error(exc, model, f"{where}, parameters.{name}")) from None
    from prefect.exceptions import ParameterTypeError

    try:
        flow.validate_parameters(dict(deployment.parameters))
    except ParameterTypeError as exc:
        raise DeployError(f"{where}: {exc}") from None


def api_url() -> str:
    """The configured Prefect API, checked to answer."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise DeployError(
            "no Prefect server configured: start one (`prefect server start`) and set "
            "PREFECT_API_URL=http://HOST:4200/api, or log in to Prefect Cloud (`prefect cloud login`)"
        )
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise DeployError(f"cannot reach the Prefect API at {url} ({type(problem).__name__}: {problem}); is the server running?")
    return url


def check_pools(pools: list[str], create: bool = False) -> list[str]:
    """Fail naming each missing work pool (or create it as a process pool); returns those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    missing: list[str] = []
    with get_client(sync_client=True) as client:
        for pool in dict.fromkeys(pools):
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                missing.append(pool)
        if missing and not create:
            hints = "; ".join(f"`prefect work-pool create {p} --type process`" for p in missing)
            raise DeployError(
                f"work pool(s) {', '.join(map(repr, missing))} do not exist on {client.api_url}: create them ({hints}, "
                "or --type kubernetes for a cluster), or run `hvd deploy --create-pools` to create process pools"
            )
        if missing:
            from prefect.workers.process import ProcessWorker

            template = ProcessWorker.get_default_base_job_template()
            for pool in missing:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
    return missing


def register(path: Path, names: list[str]) -> str:
    """``prefect deploy`` on ``path`` for the named deployments, run from this checkout: the
    entrypoints are its files, and the build step records it as the runs' working directory.
    (``flows.prefect_compat`` is the Prefect CLI with one client call fixed for this server.)
    Returns its output."""
    command = [sys.executable, "-m", "flows.prefect_compat", "--no-prompt", "deploy", "--prefect-file", str(path)]
    for name in names:
        command += ["--name", name]
    env = {**os.environ, "PREFECT_CLI_PROMPT": "false", "COLUMNS": "160"}
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"`prefect deploy` did not finish within {exc.timeout:.0f} s; is the server at PREFECT_API_URL responding?") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise DeployError(f"`prefect deploy` failed (status {proc.returncode}):\n{output}")
    return output
