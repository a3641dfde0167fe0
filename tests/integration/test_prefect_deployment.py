"""The ``prep-all`` deployment on a real Prefect server: ``hvd deploy`` registers what
``prefect.yaml`` declares, a process worker runs it on the tiny dataset, and after the dataset
grows a second run computes only the new keyframes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flows.config import DaskConfig, PrepConfig
from pipeline.stages import PREP_STAGES, Catalog
from pipeline.store.stores import read_meta
from pipeline.synth import PRESETS
from pipeline.synth.generate import generate
from tests.conftest import catalog_for
from tests.integration.conftest import BIN, FAST_PARAMS, REPO, wait_until

pytestmark = pytest.mark.timeout(600)  # every wait inside is bounded too; the fixtures stop every process

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _row_chunks(catalog: Catalog) -> dict[str, int]:
    """mtime (ns) of every per-row chunk file of every store (not the driver's token list)."""
    chunks = {}
    for name in PREP_STAGES:
        root = Path(catalog.artifact(name).path)
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and "c" in rel.parts and rel.parts[0] not in ("token", "shared"):
                chunks[f"{name}/{rel}"] = path.stat().st_mtime_ns
    return chunks


def _row_of(key: str) -> int:
    parts = key.split("/")
    return int(parts[parts.index("c") + 1])


def test_prep_all_deployment_runs_on_a_worker_and_picks_up_new_scenes(prefect_server, processes, tiny_copy, tmp_path):
    server = prefect_server  # requested first: it boots while the data is generated
    catalog = Catalog.load(catalog_for(tmp_path / "site", tiny_copy, params=FAST_PARAMS, stages=True))
    server.wait_ready()
    env = server.env(PREFECT_WORKER_QUERY_SECONDS="1")

    code, out = processes.run("work-pool-create", [str(BIN / "prefect"), "work-pool", "create", "hvd-cpu", "--type", "process"], env)
    assert code == 0, out
    processes.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "hvd-cpu", "--name", "test-worker"], env)

    # hvd deploy: a missing work pool is named; --create-pools makes it; both deployments register
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import deployments

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        assert deployments.api_url() == server.url
        with pytest.raises(deployments.DeployError) as missing:
            deployments.check_pools(["hvd-cpu", "hvd-gpu"])
    message = str(missing.value)
    assert "'hvd-gpu'" in message and "'hvd-cpu'" not in message and "prefect work-pool create hvd-gpu" in message
    code, out = processes.run("hvd-deploy", [str(BIN / "hvd"), "deploy", "--create-pools"], env, timeout=180)
    out = " ".join(out.split())
    assert code == 0, out
    assert "created process work pool 'hvd-gpu'" in out
    assert "registered prep/prep-all on work pool 'hvd-cpu' (cron 0 2 * * * UTC)" in out and "registered pretrain/pretrain" in out

    declared = {d.name: d for d in deployments.load()}
    deployment = server.api("GET", "/deployments/name/prep/prep-all").json()
    assert deployment["work_pool_name"] == "hvd-cpu" and deployment["parameters"] == declared["prep-all"].parameters
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [declared["prep-all"].schedules[0]["cron"]]
    assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert server.api("GET", "/deployments/name/pretrain/pretrain").json()["work_pool_name"] == "hvd-gpu"

    config = PrepConfig(catalog=str(catalog.path), source="tiny", stages=list(PREP_STAGES), dask=DaskConfig(workers=1))
    wrong = config.model_dump(mode="json")
    wrong["dask"]["adress"] = "tcp://127.0.0.1:1"
    refused = server.api("POST", f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"config": wrong}})
    assert refused.status_code == 409 and "adress" in refused.text  # Prefect checks the typed config's schema

    def run_and_wait() -> dict[str, str]:
        """Trigger prep-all with this site's catalog; wait for the run; its summary line per stage."""
        response = server.api("POST", f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"config": config.model_dump(mode="json")}})
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]

        def finished():
            state = server.api("GET", f"/flow_runs/{run_id}").json()
            return state if state["state_type"] in TERMINAL else None

        state = wait_until(finished, 300, "prep-all flow run finished", interval=1, on_timeout=processes.logs_tail)
        assert state["state_type"] == "COMPLETED", f"{state['state']}\n{processes.log('worker')}"

        def summaries():
            logs, page = [], 200
            while True:  # every page: task runs on the Dask workers log to this run too
                batch = server.api("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": page, "offset": len(logs)}).json()
                logs += batch
                if len(batch) < page:
                    break
            lines = {log["message"].split(":")[0]: log["message"] for log in logs if " computed, " in log["message"]}
            return lines if len(lines) == len(PREP_STAGES) else None

        return wait_until(summaries, 120, "per-stage summaries in the run's log", on_timeout=processes.logs_tail)

    def check_run(computed: int, done: int) -> None:
        """Trigger a run; every stage computed ``computed`` keyframes, skipped ``done``, and is complete."""
        lines, total = run_and_wait(), computed + done
        for name in PREP_STAGES:
            assert lines[name].startswith(f"{name}: {computed} computed, {done} already done, 0 failed of {total} keyframes"), lines[name]
            meta = read_meta(catalog.artifact(name).path)
            assert meta.complete and meta.rows_done == meta.rows_total == total

    check_run(computed=8, done=0)
    before = _row_chunks(catalog)
    assert {_row_of(k) for k in before} == set(range(8))

    generate(tiny_copy, replace(PRESETS["tiny"], n_scenes=3), seed=0, workers=1)  # a third scene: 4 keyframes
    check_run(computed=4, done=8)
    after = _row_chunks(catalog)
    assert {k: after.get(k) for k in before} == before  # no chunk of an old row was written again
    assert {_row_of(k) for k in set(after) - set(before)} == {8, 9, 10, 11}

    processes.stop_all()  # the worker first, then the server, without waiting for the session's end
    server.stop()
