"""``hvd prep`` as users run it: a real process running the Prefect flows on a local Dask cluster,
killed mid-run and resumed, and failing on a bad file without losing the other keyframes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.stages import Catalog
from pipeline.store.runner import run_local
from pipeline.store.stores import read_meta
from tests.conftest import HAS_XIMGPROC, SUPERPIXELS, assert_same_stores, catalog_for, descendants, kill_all, kill_leaves_nothing

REPO = Path(__file__).resolve().parents[2]
STAGES = ("superpixels", "correspondences", "depth_targets")


def _hvd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def _env() -> dict:
    return {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def _done_rows(path: str) -> int:
    chunks = Path(path) / "done" / "c"
    return len(list(chunks.iterdir())) if chunks.exists() else 0


def test_killed_prep_all_resumes_to_the_same_stores(tiny_root, tiny_copy, tmp_path):
    reference = Catalog.load(catalog_for(tmp_path / "reference", tiny_root, stages=True))
    for name in STAGES:  # an uninterrupted run, in-process
        assert run_local(reference, name).complete
    catalog = Catalog.load(catalog_for(tmp_path / "run", tiny_copy, stages=True))
    command = _hvd("prep", "all", "--catalog", str(catalog.path), "--workers", "2", "--batch-rows", "1")

    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    first = catalog.artifact("superpixels").path
    deadline = time.monotonic() + 300
    while _done_rows(first) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no keyframe finished in time"
        time.sleep(0.02)
    procs = descendants(proc.pid)  # Dask workers, Prefect's temporary server, the reaper
    try:
        kill_leaves_nothing(proc, procs, "`hvd prep`")  # the driver alone: what it started must end by itself
    finally:
        kill_all(procs)
    killed = [read_meta(catalog.artifact(n).path) for n in STAGES]
    assert not all(m is not None and m.complete for m in killed)
    assert 2 <= killed[0].rows_done < 8

    again = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr
    assert_same_stores(catalog, reference, STAGES)

    shown = subprocess.run(_hvd("catalog", "show", "--catalog", str(catalog.path)), cwd=REPO, env=_env(), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    for name in STAGES:
        line = next(line for line in shown.stdout.splitlines() if line.lstrip("│ ").startswith(name + " "))
        assert "complete" in line and "8/8" in line and "KiB" in line, line


def test_a_missing_file_fails_its_keyframe_and_a_rerun_finishes_it(tiny_copy, tmp_path):
    catalog = Catalog.load(catalog_for(tmp_path, tiny_copy, stages=True))
    from pipeline.stages.index import ensure_index

    index, _ = ensure_index(catalog)
    record = index.record(3)
    saved = record["lidar_path"].read_bytes()
    record["lidar_path"].unlink()
    command = _hvd("prep", "correspondences", "--catalog", str(catalog.path), "--workers", "1")

    failed = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2, failed.stderr
    message = " ".join(failed.stderr.split())
    assert record["token"] in message and str(record["lidar_path"]) in message and "missing" in message
    assert "Traceback" not in failed.stderr
    meta = read_meta(catalog.artifact("correspondences").path)
    assert (meta.rows_done, meta.complete) == (7, False)

    record["lidar_path"].write_bytes(saved)
    fixed = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert fixed.returncode == 0, fixed.stderr
    assert "1 computed, 7 already done, 0 failed" in " ".join(fixed.stderr.split())
    assert read_meta(catalog.artifact("correspondences").path).complete


def test_prep_with_nothing_to_compute_starts_neither_prefect_nor_dask(tiny_stores, monkeypatch, capsys):
    """The stores are checked before Prefect or Dask start: with every store complete the command
    reports them and returns; otherwise only the stages with work go to the flow."""
    import cli.prep
    import flows.settings
    from pipeline.stages import PREP_STAGES

    class Started(Exception):
        pass

    def refuse() -> None:
        raise Started("Prefect was configured")

    monkeypatch.setattr(flows.settings, "configure_prefect", refuse)
    cli.prep._run(list(PREP_STAGES), str(tiny_stores.path), None, 1, None, 0)
    said = " ".join(capsys.readouterr().err.split())
    assert "nothing to compute" in said
    for name in PREP_STAGES:
        assert f"{name}: 0 computed, 8 already done, 0 failed of 8 keyframes" in said

    # same stores, another superpixel algorithm (or, without cv2.ximgproc, other parameters): that stage has work
    changed = Path(tiny_stores.path).with_name("changed.yaml")
    spec = yaml.safe_load(Path(tiny_stores.path).read_text())
    params = spec["artifacts"]["superpixels"].setdefault("params", {})
    params.update({"algorithm": "opencv_slico"} if HAS_XIMGPROC else {SUPERPIXELS: {"n_segments": 60}})
    changed.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert Catalog.load(changed).artifact("superpixels").path != tiny_stores.artifact("superpixels").path
    with pytest.raises(Started):
        cli.prep._run(list(PREP_STAGES), str(changed), None, 1, None, 0)
