"""Child processes that do not outlive the command that started them.

A command killed with SIGKILL -- or SIGTERM, whose default action is the same: no Python code of
the command runs -- cannot stop its children, so they must notice on their own. Left alone, a
``ProcessPoolExecutor`` worker finishes the task it holds, then waits for more forever, holding
its memory; so does the multiprocessing resource tracker, which ends only once every process
holding its pipe (the parent and the workers) has ended. Two mechanisms, for two kinds of child:

- ``worker_pool`` / ``exit_with_parent``, for the worker processes we start: each worker's
  initializer starts a daemon thread that ends the worker (``os._exit``) within ``POLL_S`` of its
  parent's death, which it sees as its parent process id changing (a re-parented process gets
  init's, or a sub-reaper's). A thread rather than Linux's ``PR_SET_PDEATHSIG``: that signal
  follows the parent *thread* that started the worker, and ``ProcessPoolExecutor`` starts workers
  from whichever thread submits (and, with ``max_tasks_per_child``, from its management thread), so
  a worker would be killed when that thread ends while the parent lives on.
- ``reaper``, for children started by code we do not control (``hvd prep``: Prefect's temporary
  API server): a small watcher process, started first, lists the command's descendants every
  ``POLL_S``; once the command has ended, however it ended, it sends what is left SIGTERM, then
  SIGKILL after ``GRACE_S``. It runs as its own script (``python -I procs.py``: nothing of the
  project is imported) in its own session, so neither Ctrl-C nor a signal to the command's process
  group ends it before it has done its work. Needs ``psutil`` (a dependency of Dask's
  ``distributed``).

Worker pools' tasks must therefore leave nothing half-done that a re-run would not redo: a worker
may end at any point of a task (``pipeline.synth.generate`` writes every file atomically).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context

POLL_S = 0.25  # how often a worker checks its parent, and the reaper lists descendants
GRACE_S = 2.0  # between the reaper's SIGTERM and SIGKILL
ORPHANED_EXIT = 70  # a worker's exit status when it ended because its parent had gone


def exit_with_parent(parent_pid: int) -> None:
    """In a child process: end it within ``POLL_S`` once ``parent_pid``, its parent, has ended.

    ``parent_pid`` is given by the parent (``os.getpid()`` there) rather than read here, so a parent
    that died before this ran is noticed too. Meant as a pool's ``initializer``."""
    if os.getppid() != parent_pid:
        os._exit(ORPHANED_EXIT)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(POLL_S)
        os._exit(ORPHANED_EXIT)

    threading.Thread(target=watch, name="hvd-exit-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that end with this one, even when it is killed."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),))


@contextmanager
def reaper():
    """While inside, a watcher process ends this process's descendants once it has ended (any
    way: returned, raised, killed). Leaving the block early lets the watcher go without acting."""
    watcher = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield watcher
    finally:
        try:
            watcher.stdin.write(b"done\n")
            watcher.stdin.close()
        except OSError:  # it has gone already
            pass
        watcher.wait()


def _descendants(parent, known: dict[int, object], me: int) -> None:
    import psutil

    try:
        children = parent.children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        if child.pid != me:
            known[child.pid] = child  # a pid re-used since the last look: the new process


def _running(proc) -> bool:
    """Running, and not a zombie (an orphan's zombie lingers where init does not reap it)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait(procs: list, timeout: float) -> list:
    """Those of ``procs`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (procs := [p for p in procs if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return procs


def _end(known: dict[int, object]) -> None:
    """SIGTERM every process in ``known`` still running (psutil checks it is the same process, not a
    re-used pid), with its own descendants; SIGKILL those left after ``GRACE_S``."""
    import psutil

    procs = [p for p in known.values() if _running(p)]
    for p in list(procs):
        try:
            procs += p.children(recursive=True)
        except psutil.Error:
            pass
    for signal_them in ("terminate", "kill"):
        for p in procs:
            try:
                getattr(p, signal_them)()
            except psutil.Error:
                pass
        procs = _wait(procs, GRACE_S)


def _reap(parent_pid: int) -> None:
    """The watcher: list the parent's descendants until the parent ends or stdin says ``done``
    (its end closes when the parent ends), then end those left unless told ``done``."""
    import select
    import signal

    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if os.getppid() != parent_pid:  # gone already (its pid may be another process's now)
            return
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        return
    me, known, said = os.getpid(), {}, b""
    while _running(parent):
        _descendants(parent, known, me)
        ready, _, _ = select.select([sys.stdin.buffer], [], [], POLL_S)
        if ready:
            chunk = os.read(sys.stdin.fileno(), 64)
            said += chunk
            if not chunk or said.startswith(b"done"):
                break
    if said.startswith(b"done"):
        return
    _descendants(parent, known, me)  # a last look, should the parent still be a zombie with children
    _end(known)


if __name__ == "__main__":
    _reap(int(sys.argv[1]))
