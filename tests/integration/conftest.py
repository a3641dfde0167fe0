"""Real servers for the integration tests: a Prefect server, Prefect workers, a Dask scheduler and
Dask workers, each started in its own process group on 127.0.0.1 and stopped -- with every
process it started, found through the process tree before any signal is sent -- however the test
ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the project's virtualenv: prefect, dask, hvd
LOCAL = "127.0.0.1"

# Preprocessing parameters that keep the tiny dataset's four stages to seconds (SLIC at half
# resolution, the teacher at 32x56): these tests are about where stages run, not what they compute.
FAST_PARAMS = {
    "superpixels": {"working_size": [90, 160]},
    "teacher_cache": {"input_size": [32, 56], "pca_channels": 8, "pca_images": 2},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


def local_env(**extra: str) -> dict[str, str]:
    """The test's environment (project-local PREFECT_HOME, analytics off: tests/conftest.py), with
    127.0.0.1 never sent through a proxy."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # the run logs the test reads are INFO records: an hvd command run in-process by an earlier test
    # sets PREFECT_LOGGING_LEVEL=WARNING in this process (flows.settings), which would drop them
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key, ""), LOCAL, "localhost"]))
    env.pop("PREFECT_API_URL", None)
    return {**env, **extra}


class Processes:
    """Long-running processes of one test, their output in ``logs/NAME.log``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started[name] = proc
        return proc

    def run(self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 120) -> tuple[int, str]:
        """Run a command to its end in a group of its own: (exit status, output). Past
        ``timeout`` it is stopped with everything it started (e.g. a temporary Prefect server)."""
        proc = self.start(name, args, env, cwd)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(name)
            pytest.fail(f"{' '.join(args)} did not finish within {timeout:.0f} s:\n{self.log(name)}")
        self.stop(name)  # anything it left behind in its group
        return code, (self.logs / f"{name}.log").read_text(errors="replace")

    def log(self, name: str, chars: int = 6000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def logs_tail(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name, 3000)}" for name in self.started)

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM the process's group and every descendant (a flow run or a Dask worker may sit
        in a session of its own), SIGKILL whatever is left after ``grace`` seconds."""
        proc = self.started.pop(name, None)
        if proc is None:
            return
        # an exited (reaped) process's pid may belong to another process by now: only its group
        running = proc.poll() is None
        tree = [p for p in [_process(proc.pid), *_descendants(proc.pid)] if p is not None] if running else []
        groups = ({proc.pid} | {_pgid(p.pid) for p in tree}) - {None, os.getpgid(0)}
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for group in groups:
                _signal_group(group, signum)
            for p in tree:
                try:
                    p.send_signal(signum)  # psutil refuses a pid reused by another process
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(tree, timeout=wait)
            if not alive:
                break
        for group in groups:  # anything that joined a group after the tree was listed
            _signal_group(group, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for name in reversed(list(self.started)):  # workers before the servers they talk to
            self.stop(name)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except OSError:
        pass


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5, on_timeout=lambda: ""):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{on_timeout()}")
        time.sleep(interval)


class PrefectServer:
    """``prefect server start`` on a free port of 127.0.0.1 with its own database; its scheduler
    service is off, so a deployment's cron schedule is registered but creates no runs while
    tests trigger theirs."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOCAL}:{self.port}/api"
        self.processes = Processes(root / "logs")
        env = local_env(PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}")
        args = [str(BIN / "prefect"), "server", "start", "--host", LOCAL, "--port", str(self.port), "--no-ui", "--no-scheduler", "--analytics-off"]
        self.processes.start("prefect-server", args, env, cwd=root)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server."""
        return local_env(PREFECT_API_URL=self.url, **extra)

    def api(self, method: str, path: str, **kwargs):
        import httpx

        return httpx.request(method, self.url + path, timeout=30, trust_env=False, **kwargs)

    def wait_ready(self, timeout: float = 180) -> None:
        def healthy() -> bool:
            proc = self.processes.started["prefect-server"]
            assert proc.poll() is None, f"prefect server exited:\n{self.processes.log('prefect-server')}"
            try:
                return self.api("GET", "/health").status_code == 200
            except Exception:
                return False

        wait_until(healthy, timeout, "prefect server ready", on_timeout=lambda: self.processes.log("prefect-server"))

    def stop(self) -> None:
        self.processes.stop_all()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """Started when first requested and not waited for (it takes 20-60 s: request it before
    slow fixtures and call ``wait_ready``); stopped at the end of the session at the latest."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        server.stop()
