"""``prefect.yaml`` against the flows' typed configs, ``hvd deploy``'s checks without a server,
and the ``pretrain`` flow's torchrun launch (command, streamed output, failure)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from flows import deployments
from flows.config import PrepConfig
from flows.pretrain import PretrainFailed, PretrainJob, pretrain, run_streaming, torchrun_command
from pipeline.stages import PREP_STAGES

ENV = {"COLUMNS": "200"}


def _declared() -> dict:
    return yaml.safe_load(deployments.PREFECT_FILE.read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_prefect_yaml_parameters_are_the_typed_configs():
    declared = {d.name: d for d in deployments.load()}
    assert set(declared) == {"prep-all", "pretrain"}
    prep, train = declared["prep-all"], declared["pretrain"]
    config = PrepConfig.model_validate(prep.parameters["config"])
    assert config.stages == list(PREP_STAGES)  # what `hvd prep all` runs
    assert (prep.work_pool, train.work_pool) == ("hvd-cpu", "hvd-gpu")
    assert prep.schedules and prep.schedules[0]["cron"] and not train.schedules
    assert PretrainJob.model_validate(train.parameters["job"]).nproc >= 1
    for deployment in declared.values():
        deployments.check_parameters(deployment)  # each typed config, then Prefect's own validation
        flow = deployments.load_flow(deployment)
        assert flow.validate_parameters(dict(deployment.parameters))


@pytest.mark.parametrize(
    ("deployment", "edit", "message"),
    [
        (0, lambda p: p["config"]["dask"].update(adress="tcp://x:8786"), "unknown key `dask.adress` (expected one of: address, workers"),
        (0, lambda p: p["config"].update(workers=2), "unknown key `workers`"),
        (0, lambda p: p["config"].update(batch_rows=-1), "`batch_rows`"),
        (0, lambda p: p.update(extra=1), "has no parameter 'extra'"),
        (1, lambda p: p["job"]["overrides"].update(run={"max_step": 3}), "unknown key `run.max_step`"),
        (1, lambda p: p["job"].update(preset="huge"), "unknown preset 'huge'"),
        (1, lambda p: p["job"].update(gpus=2), "unknown key `gpus`"),
    ],
)
def test_a_wrong_parameter_is_rejected_naming_it(tmp_path, deployment, edit, message):
    data = _declared()
    edit(data["deployments"][deployment]["parameters"])
    path = _write(tmp_path, data)
    chosen = deployments.load(path)[deployment]
    with pytest.raises(deployments.DeployError) as caught:
        deployments.check_parameters(chosen, path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    if "no parameter" not in message:  # Prefect itself rejects it as well
        from prefect.exceptions import ParameterTypeError

        with pytest.raises(ParameterTypeError):
            deployments.load_flow(chosen).validate_parameters(data["deployments"][deployment]["parameters"])


def test_hvd_deploy_check_validates_without_a_server(tmp_path):
    ok = CliRunner().invoke(app, ["deploy", "--check"], env=ENV)
    assert ok.exit_code == 0, ok.output
    assert "parameters of prep-all, pretrain are valid" in " ".join(ok.output.split())
    data = _declared()
    data["deployments"][0]["parameters"]["config"]["dask"]["adress"] = "tcp://x:8786"
    bad = CliRunner().invoke(app, ["deploy", "--check", "--file", str(_write(tmp_path, data))], env=ENV)
    assert bad.exit_code == 2
    assert "unknown key `dask.adress`" in " ".join(bad.output.split()) and "Traceback" not in bad.output
    unknown = CliRunner().invoke(app, ["deploy", "--check", "--name", "nope"], env=ENV)
    assert unknown.exit_code == 2 and "declares no deployment 'nope'" in " ".join(unknown.output.split())


def test_no_or_unreachable_server_is_a_clear_error():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(deployments.DeployError, match="no Prefect server configured.*PREFECT_API_URL"):
            deployments.api_url()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens on port 9
        with pytest.raises(deployments.DeployError, match="cannot reach the Prefect API at http://127.0.0.1:9/api"):
            deployments.api_url()


def test_torchrun_command():
    job = PretrainJob(nproc=4, preset="nuscenes", resume=True)
    command = torchrun_command(job, Path("/tmp/c.yaml"))
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "4" and "--standalone" in command
    assert command[command.index("-m", 3) :] == ["-m", "cli.main", "train", "pretrain", "--config", "/tmp/c.yaml", "--resume"]


def test_run_streaming_passes_every_line_and_fails_with_the_tail():
    lines: list[str] = []
    run_streaming([sys.executable, "-c", "import sys; print('one'); print('two', file=sys.stderr)"], lines.append)
    assert lines == ["one", "two"]
    with pytest.raises(PretrainFailed, match=r"exited with status 3; last output:\n.*\nboom"):
        run_streaming([sys.executable, "-c", "print('a\\nb\\nboom'); raise SystemExit(3)"], lines.append, tail_lines=2)


def test_the_training_command_ends_with_a_killed_flow_run():
    """SIGKILL of the flow run's process (no ``finally`` runs): the command it streams ends too."""
    import subprocess
    import time

    from tests.conftest import descendants, kill_all, kill_leaves_nothing

    script = (
        "import sys\n"
        "from flows.pretrain import run_streaming\n"
        "run_streaming([sys.executable, '-c', 'import time; print(\"training\", flush=True); time.sleep(120)'], lambda line: print(line, flush=True))\n"
    )
    flow_run = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    procs = []
    try:
        assert flow_run.stdout.readline().strip() == "training"
        procs = descendants(flow_run.pid)
        assert len(procs) == 2  # the command and the reaper
        time.sleep(1.0)  # the reaper lists the descendants every 0.25 s
        kill_leaves_nothing(flow_run, procs, "the flow run")
    finally:
        flow_run.kill()
        kill_all(procs)


def test_pretrain_flow_fails_when_the_training_processes_fail(tmp_path):
    """A real torchrun launch whose training command fails (no catalog): the flow raises with the
    trainer's own error message."""
    job = PretrainJob(nproc=1, overrides={"data": {"catalog": str(tmp_path / "missing.yaml")}, "run": {"out_dir": str(tmp_path / "run")}})
    with pytest.raises(PretrainFailed) as caught:
        pretrain.fn(job)
    message = " ".join(str(caught.value).split())
    assert "torch.distributed.run" in message and "no data catalog at" in message and "missing.yaml" in message


def test_deploy_help_explains_the_deployments_and_what_is_checked():
    result = CliRunner().invoke(app, ["deploy", "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for needle in ("PREFECT_API_URL", "prep-all", "hvd-cpu", "torchrun", "hvd-gpu", "typed configs", "--create-pools", "--check", "--file", "prefect worker start"):
        assert needle in out, needle
