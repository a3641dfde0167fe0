"""``hvd deploy``: register the Prefect deployments of ``prefect.yaml`` (scheduled preprocessing,
pretraining) with a Prefect server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.progress import console


def deploy(
    name: Annotated[
        Optional[list[str]],
        typer.Option("--name", "-n", help="Deployment to register (repeatable): prep-all, pretrain. Default: every one in the file.", show_default=False),
    ] = None,
    prefect_file: Annotated[
        Optional[Path],
        typer.Option("--file", "-f", help="The deployments file (e.g. a copy with your own pools, catalog and scheduler). Its entrypoints are files of this checkout. Default: prefect.yaml at the repository root.", show_default=False),
    ] = None,
    create_pools: Annotated[
        bool, typer.Option("--create-pools", help="Create missing work pools as process pools (one machine; create Kubernetes pools yourself).")
    ] = False,
    check: Annotated[bool, typer.Option("--check", help="Only validate the file's parameters against the flows' configs; no server needed.")] = False,
) -> None:
    """Register the deployments of prefect.yaml with the Prefect server at PREFECT_API_URL.

    prep-all runs every `hvd prep all` stage nightly on the work pool hvd-cpu (only keyframes not
    yet done are computed, so new scenes are picked up incrementally); pretrain runs torchrun with
    the configured number of processes on the work pool hvd-gpu. Their parameters (the catalog, the
    Dask scheduler, the pretraining config) are checked against the flows' typed configs first:
    an unknown key or a bad value is an error naming it. The server must answer and the work pools
    must exist (--create-pools makes process pools). Then start a worker per pool
    (`prefect worker start --pool hvd-cpu`) and trigger runs with `prefect deployment run prep/prep-all`
    or wait for the schedule.
    """
    from flows.settings import configure_prefect

    configure_prefect()
    from flows import deployments

    path = Path(prefect_file).resolve() if prefect_file else deployments.PREFECT_FILE
    if not path.is_file():
        raise deployments.DeployError(f"no deployments file at {path}")
    chosen = deployments.load(path, name)
    for d in chosen:
        deployments.check_parameters(d, path)
    console.print(f"{path}: parameters of {', '.join(d.name for d in chosen)} are valid", highlight=False)
    if check:
        return
    url = deployments.api_url()
    created = deployments.check_pools([d.work_pool for d in chosen], create=create_pools)
    for pool in created:
        console.print(f"created process work pool {pool!r}", highlight=False)
    deployments.register(path, [d.name for d in chosen])
    for d in chosen:
        flow = deployments.load_flow(d)
        when = ", ".join(f"cron {s['cron']} {s.get('timezone', 'UTC')}" for s in d.schedules if "cron" in s) or "on demand"
        console.print(f"registered {flow.name}/{d.name} on work pool {d.work_pool!r} ({when}) at {url}", highlight=False)
    pools = " ".join(dict.fromkeys(d.work_pool for d in chosen))
    console.print(f"next: start a worker per pool (`prefect worker start --pool NAME` for {pools}); run one now with `prefect deployment run FLOW/DEPLOYMENT`", highlight=False)
