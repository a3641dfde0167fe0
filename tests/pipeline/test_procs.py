"""Child processes end with the command that started them: a worker pool's workers (and the
multiprocessing resource tracker) within seconds of their parent being killed, and what the reaper
watched, once its parent has ended -- unless the parent left the reaper's block itself."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import descendants, kill_all, kill_leaves_nothing

REPO = Path(__file__).resolve().parents[2]


def _parent(code: str) -> subprocess.Popen:
    """A Python process running ``code`` (from the repository root), its stdout a pipe."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_end_with_their_killed_parent(sig):
    parent = _parent(
        """
        import time
        from pipeline.procs import worker_pool

        pool = worker_pool(2)
        for _ in range(2):
            pool.submit(time.sleep, 120)
        time.sleep(120)
        """
    )
    procs = []
    try:

        def workers_watching() -> bool:  # both workers started, their watchdog thread running
            workers = [p for p in descendants(parent.pid) if "spawn_main" in " ".join(p.cmdline())]
            return len(workers) == 2 and all(w.num_threads() >= 2 for w in workers)

        _wait_for(workers_watching, "two pool workers")
        procs = descendants(parent.pid)  # the workers and the resource tracker
        assert len(procs) == 3, [p.cmdline() for p in procs]
        kill_leaves_nothing(parent, procs, "the parent", sig)
        assert parent.returncode == -sig
    finally:
        parent.kill()
        kill_all(procs)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_reaper_ends_what_its_killed_parent_left(sig):
    # the sleeper, in a session of its own, escapes a signal to the parent's process group
    parent = _parent(
        """
        import subprocess, sys, time
        from pipeline.procs import reaper

        with reaper():
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
            print(sleeper.pid, flush=True)
            time.sleep(120)
        """
    )
    procs = []
    try:
        sleeper = psutil.Process(int(parent.stdout.readline()))
        procs = descendants(parent.pid)
        assert sleeper in procs and len(procs) == 2  # and the reaper
        time.sleep(1.0)  # the reaper lists the descendants every 0.25 s
        kill_leaves_nothing(parent, procs, "the parent", sig)
    finally:
        parent.kill()
        kill_all(procs)


def test_the_reaper_stands_down_when_its_block_ends():
    parent = _parent(
        """
        import subprocess, sys, time
        from pipeline.procs import reaper

        with reaper() as watcher:
            kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            time.sleep(1.0)
        print(kept.pid, watcher.pid, watcher.returncode, flush=True)
        """
    )
    kept = None
    try:
        kept_pid, watcher_pid, watcher_status = parent.stdout.readline().split()
        kept = psutil.Process(int(kept_pid))
        assert parent.wait(10) == 0
        assert watcher_status == "0" and not psutil.pid_exists(int(watcher_pid))
        time.sleep(3.0)  # longer than the reaper would take to end it
        assert kept.is_running() and kept.status() != psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
        kill_all([kept] if kept else [])
