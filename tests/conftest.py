"""Fixtures shared across the test packages."""

from __future__ import annotations

import hashlib
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# Prefect must never write to ~/.prefect or phone home from tests (subprocesses inherit these).
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parents[1] / ".prefect" / "tests"))
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

SMALL_CATALOG = """\
store_root: stores
default_source: alpha
sources:
  alpha:
    dataroot: data/alpha
    version: v1.0-mini
    split: {kind: seeded, val_fraction: 0.25, seed: 0}
  beta:
    dataroot: data/beta
    version: v1.0-mini
    split: {kind: seeded}
artifacts:
  index:
    stage: index
"""


@pytest.fixture
def write_catalog(tmp_path: Path) -> Callable[..., Path]:
    """Writes a catalog (default: two sources, one ``index`` artifact) under ``tmp_path``."""

    def write(text: str = SMALL_CATALOG, name: str = "catalog.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def small_catalog() -> str:
    """The text ``write_catalog`` writes by default, for tests that edit it first."""
    return SMALL_CATALOG


# --- the tiny synthetic dataset, generated once per test session -------------------------------------


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic dataset (seed 0), generated once with two worker processes.
    Read-only: tests that damage files work on a copy (``tiny_copy``)."""
    from pipeline.synth import PRESETS
    from pipeline.synth.generate import generate

    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate(root, PRESETS["tiny"], seed=0, workers=2)
    return root


@pytest.fixture(scope="session")
def kitti_tiny_root(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic world (seed 0) in SemanticKITTI's format: sequences 00 (train) and 08
    (val), 16 frames each, generated once by ``hvd data synth --format semantickitti`` run in this
    process (its world stays cached for tests that re-render frames). Read-only."""
    from typer.testing import CliRunner

    from cli.main import app

    root = tmp_path_factory.mktemp("synth") / "kitti-tiny"
    args = ["data", "synth", "--format", "semantickitti", "--preset", "tiny", "--seed", "0", "--workers", "1", "--out", str(root)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "sequences 00, 08, 32 frames of 64 beams" in result.output, result.output
    return root


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    dest = tmp_path / "tiny"
    shutil.copytree(tiny_root, dest)
    return dest


def _has_ximgproc() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "ximgproc")


# OpenCV's contrib modules (cv2.ximgproc, package opencv-contrib-python-headless), which the
# superpixel algorithms opencv_slic (the catalog's default) and opencv_slico need. The GPU machine's
# image has OpenCV without them: there the tests' stores use skimage_slic, and the tests of the
# OpenCV algorithms themselves are skipped.
HAS_XIMGPROC = _has_ximgproc()
needs_ximgproc = pytest.mark.skipif(not HAS_XIMGPROC, reason="needs OpenCV's contrib modules (cv2.ximgproc): opencv-contrib-python-headless")
# The superpixel algorithm of the tests' stores: the catalog's default where it can run, else the
# reference's skimage_slic; HVD_TEST_SUPERPIXELS=skimage_slic runs the suite on it anywhere.
SUPERPIXELS = os.environ.get("HVD_TEST_SUPERPIXELS") or ("opencv_slic" if HAS_XIMGPROC else "skimage_slic")

STAGE_ARTIFACTS = {
    "superpixels": {"stage": "superpixels", "inputs": ["index"], **({} if SUPERPIXELS == "opencv_slic" else {"params": {"algorithm": SUPERPIXELS}})},
    "correspondences": {"stage": "correspondences", "inputs": ["index"]},
    "depth_targets": {"stage": "depth_targets", "inputs": ["index"]},
    "teacher_cache": {"stage": "teacher_cache", "inputs": ["index"], "params": {"input_size": [64, 112], "pca_channels": 16, "pca_images": 4}},
}


def catalog_for(
    root: Path, dataroot: Path, version: str = "v1.0-mini", params: dict | None = None, stages: bool = False, store_root: str = "stores"
) -> Path:
    """A catalog with one source ``tiny`` at ``dataroot`` (per-artifact ``params`` overrides) and
    stores under ``root/stores`` (or ``store_root``); ``stages`` adds the preprocessing artifacts."""
    import yaml

    source = {"dataroot": str(dataroot), "version": version, "split": {"kind": "seeded", "val_fraction": 0.25, "seed": 0}}
    if params:
        source["params"] = params
    artifacts = {"index": {"stage": "index"}, **(STAGE_ARTIFACTS if stages else {})}
    spec = {"store_root": store_root, "default_source": "tiny", "sources": {"tiny": source}, "artifacts": artifacts}
    path = root / "catalog.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def store_arrays(path: str) -> dict:
    """Every array of a row store, read in full (``shared/`` arrays under ``shared/NAME``)."""
    from pipeline.store.rowstore import SHARED, RowStore

    store = RowStore.open(path)
    arrays = {name: store.group[name][:] for name in store.group.array_keys()}
    if SHARED in store.group:
        arrays |= {f"{SHARED}/{name}": store.group[SHARED][name][:] for name in store.group[SHARED].array_keys()}
    return arrays


def assert_same_stores(actual, expected, names) -> None:
    """The stores of artifacts ``names`` hold the same arrays, bit for bit, in two catalogs (or
    the same catalog's paths vs. another's), and both are complete."""
    import numpy as np

    from pipeline.store.stores import read_meta

    for name in names:
        got, want = store_arrays(actual.artifact(name).path), store_arrays(expected.artifact(name).path)
        assert got.keys() == want.keys(), name
        for key in want:
            assert got[key].dtype == want[key].dtype, f"{name}/{key}"
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}/{key}")
        assert read_meta(actual.artifact(name).path).complete, name


@pytest.fixture(scope="session")
def tiny_stores(tiny_root, tmp_path_factory):
    """A catalog over the tiny dataset with every preprocessing store built (in-process)."""
    from pipeline.stages import PREP_STAGES, Catalog
    from pipeline.store.runner import run_local

    catalog = Catalog.load(catalog_for(tmp_path_factory.mktemp("stores"), tiny_root, stages=True))
    for name in PREP_STAGES:
        summary = run_local(catalog, name)
        assert summary.complete, summary.failed
    return catalog


# --- processes a command leaves behind ---------------------------------------------------------------


def descendants(pid: int) -> list:
    """Every live descendant of process ``pid`` (``psutil.Process`` objects: each remembers its
    creation time, so a re-used pid is never mistaken for it)."""
    import psutil

    return psutil.Process(pid).children(recursive=True)


def still_running(procs: list, within: float = 5.0) -> list:
    """Those of ``procs`` still running after up to ``within`` seconds (a zombie has ended: where
    init does not reap orphans, their zombies linger)."""
    import time

    import psutil

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + within
    while (procs := [p for p in procs if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return procs


def kill_all(procs: list) -> None:
    """SIGKILL whatever of ``procs`` is left (a failed test must not leave them either)."""
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def kill_leaves_nothing(proc, procs: list, what: str, sig: int = 9) -> None:
    """Send ``proc`` (a ``subprocess.Popen``) ``sig`` (SIGKILL by default), wait for it, and assert
    that none of ``procs`` (its descendants, listed before) is running 5 s later."""
    proc.send_signal(sig)
    proc.wait(10)
    left = still_running(procs, within=5.0)
    assert not left, f"still running 5 s after {what} was killed: {[p.cmdline() for p in left]}"

