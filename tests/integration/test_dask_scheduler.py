"""``hvd prep all --dask-address`` against a real ``dask scheduler`` and two ``dask worker``
processes started elsewhere, set up as on a cluster: the workers run in another working directory
(where the catalog's relative dataset path means nothing) and write the stores at an fsspec URL
(``file://`` standing in for ``s3://``). The stores are bit for bit those of a local run."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from pipeline.stages import PREP_STAGES, Catalog
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import run_local
from tests.conftest import assert_same_stores, catalog_for
from tests.integration.conftest import BIN, FAST_PARAMS, LOCAL, free_port, local_env

pytestmark = pytest.mark.timeout(600)  # every wait inside is bounded too; the fixture stops every process


def test_prep_all_on_an_external_dask_cluster_matches_a_local_run(processes, tiny_root, tmp_path):
    cluster_dir, driver_dir = tmp_path / "cluster", tmp_path / "driver"
    cluster_dir.mkdir()
    address = f"tcp://{LOCAL}:{free_port()}"
    env = local_env()
    processes.start("scheduler", [str(BIN / "dask"), "scheduler", "--host", LOCAL, "--port", address.rsplit(":", 1)[1], "--no-dashboard"], env, cwd=cluster_dir)
    for i in (1, 2):
        worker = [str(BIN / "dask"), "worker", address, "--host", LOCAL, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"]
        processes.start(f"worker-{i}", worker, env, cwd=cluster_dir)

    # the local reference, in this process, while the cluster starts
    reference = Catalog.load(catalog_for(tmp_path / "reference", tiny_root, params=FAST_PARAMS, stages=True))
    for name in PREP_STAGES:
        assert run_local(reference, name).complete

    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
        assert set(client.run(os.getcwd).values()) == {str(cluster_dir)}
        transitions = client.run(lambda dask_worker: dask_worker.state.transition_counter)

    # a relative catalog path for the driver, a relative dataset path in it, stores at a URL
    objects = f"file://{tmp_path / 'objects'}"
    catalog_for(driver_dir, Path(os.path.relpath(tiny_root, driver_dir)), params=FAST_PARAMS, stages=True, store_root=objects)
    command = [str(BIN / "hvd"), "prep", "all", "--catalog", "catalog.yaml", "--dask-address", address]
    code, out = processes.run("hvd-prep", command, env, cwd=driver_dir, timeout=420)
    out = " ".join(out.split())
    assert code == 0, out + "\n" + processes.logs_tail()
    for name in PREP_STAGES:
        assert f"{name}: 8 computed, 0 already done, 0 failed of 8 keyframes" in out, out

    with Client(address, timeout="60s") as client:
        after = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert all(after[w] > transitions[w] for w in transitions), (transitions, after)  # both workers computed rows
    for name in ("worker-1", "worker-2"):  # and reported to the driver's Prefect API, not a server of their own
        tree = psutil.Process(processes.started[name].pid).children(recursive=True)
        assert not [p for p in tree if "uvicorn" in " ".join(p.cmdline())]

    catalog = Catalog.load(driver_dir / "catalog.yaml")
    assert catalog.artifact("index").path.startswith(objects) and (tmp_path / "objects" / "tiny").is_dir()
    assert_same_stores(catalog, reference, PREP_STAGES)
    for name in PREP_STAGES:  # one row per chunk: concurrent workers never write the same chunk
        group = RowStore.open(catalog.artifact(name).path).group
        assert all(group[key].chunks[0] == 1 for key in group.array_keys() if key != "token"), name
