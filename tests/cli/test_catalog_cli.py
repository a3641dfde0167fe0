"""``hvd catalog show`` and ``hvd catalog fingerprint`` against a small catalog in a tmp dir."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from pipeline.stages import Catalog
from pipeline.store.catalog import Artifact
from pipeline.store.stores import StoreMeta, utc_now, write_parquet_meta

WriteCatalog = Callable[..., Path]
TWO_ARTIFACTS = "  index:\n    stage: index\n  subset:\n    stage: index\n    inputs: [index]\n"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # locations print relative to the working directory
    monkeypatch.setenv("COLUMNS", "200")  # rich tables are not truncated
    monkeypatch.delenv("HVD_CATALOG", raising=False)
    return CliRunner()


@pytest.fixture
def catalog_path(write_catalog: WriteCatalog, small_catalog: str) -> Path:
    return write_catalog(small_catalog.replace("  index:\n    stage: index\n", TWO_ARTIFACTS))


def _write_store(
    path: str, art: Artifact | None, rows: int, done: int, fingerprint: str = ""
) -> int:
    """A parquet store of ``rows`` rows with metadata; returns its size in bytes."""
    meta = StoreMeta(
        fingerprint=fingerprint or (art.fingerprint if art else "0" * 64),
        stage="index",
        version=1,
        source="alpha",
        params={"allow_missing": False},
        inputs=art.fingerprint_inputs() if art else {},
        created=utc_now(),
        code_version="0.1.0",
        rows_total=rows,
        rows_done=done,
        complete=done == rows,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(write_parquet_meta(pa.table({"row": list(range(rows))}), meta), path)
    return os.path.getsize(path)


def _row(output: str, first_cell: str) -> str:
    """The table line whose first cell is ``first_cell``."""
    lines = [row for row in output.splitlines() if row.strip("│ ").startswith(f"{first_cell} ")]
    assert len(lines) == 1, output
    return lines[0]


def test_show_reports_complete_missing_and_other_versions(
    runner: CliRunner, catalog_path: Path
) -> None:
    index = Catalog.load(catalog_path).artifact("index")
    size = _write_store(index.path, index, rows=4, done=4)
    stale = f"{Catalog.load(catalog_path).stage_root('alpha')}/index-deadbeefdeadbeef.parquet"
    _write_store(stale, None, rows=3, done=1, fingerprint="deadbeef" * 8)

    args = ["catalog", "show", "--catalog", str(catalog_path)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = _row(result.output, "index")
    assert index.fingerprint[:12] in row and "complete" in row and "4/4" in row
    assert size < 4096 and f" {size / 4:.0f} B " in row  # bytes per row = size / rows done
    assert f"stores/alpha/index-{index.fingerprint[:16]}.parquet" in row  # relative to cwd
    assert "missing" in _row(result.output, "subset")

    other_versions = result.output.split("other versions")[1]
    stale_row = _row(other_versions, "index-deadbeefdeadbeef.parquet")
    assert "deadbeefdead" in stale_row and "partial" in stale_row and "1/3" in stale_row
    assert index.fingerprint[:16] not in other_versions


def test_show_reports_partial_stores_and_other_sources(
    runner: CliRunner, catalog_path: Path
) -> None:
    index = Catalog.load(catalog_path).artifact("index", "beta")
    _write_store(index.path, index, rows=10, done=7)
    result = runner.invoke(
        app, ["catalog", "show", "--catalog", str(catalog_path), "--all-sources"]
    )
    assert result.exit_code == 0, result.output
    alpha, beta = result.output.split("source beta")
    assert "missing" in _row(alpha, "index") and "no other versions" in alpha
    row = _row(beta, "index")
    assert "partial" in row and "7/10" in row


def test_show_flags_a_store_whose_metadata_disagrees(runner: CliRunner, catalog_path: Path) -> None:
    index = Catalog.load(catalog_path).artifact("index")
    _write_store(index.path, index, rows=2, done=2, fingerprint="1" * 64)
    result = runner.invoke(app, ["catalog", "show", "--catalog", str(catalog_path)])
    assert "mismatch" in _row(result.output, "index")
    assert "records fingerprint 111111111111" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--catalog", "missing.yaml"], "no data catalog at"),
        (["--source", "gamma"], "unknown source 'gamma'"),
    ],
)
def test_user_errors_exit_2_without_traceback(
    runner: CliRunner, catalog_path: Path, args: list[str], expected: str
) -> None:
    if "--source" in args:
        args = [*args, "--catalog", str(catalog_path)]
    result = runner.invoke(app, ["catalog", "show", *args])
    assert result.exit_code == 2
    assert "error:" in result.output and expected in result.output
    assert "Traceback" not in result.output


def test_invalid_catalog_exits_2_naming_the_key(
    runner: CliRunner, write_catalog: WriteCatalog, small_catalog: str
) -> None:
    path = write_catalog(small_catalog.replace("stage: index", "stage: index\n    prams: {}"))
    result = runner.invoke(app, ["catalog", "show", "--catalog", str(path)])
    assert result.exit_code == 2
    assert "error:" in result.output and "artifacts.index.prams" in result.output
    assert "Traceback" not in result.output


def test_fingerprint_prints_what_it_hashes(runner: CliRunner, catalog_path: Path) -> None:
    result = runner.invoke(
        app, ["catalog", "fingerprint", "subset", "--catalog", str(catalog_path), "-s", "beta"]
    )
    assert result.exit_code == 0, result.output
    subset = Catalog.load(catalog_path).artifact("subset", "beta")
    fields = dict(line.split(None, 1) for line in result.output.splitlines())
    assert fields["fingerprint"] == subset.fingerprint
    lines = result.output.splitlines()
    hashed = [line.split(None, 1)[1] for line in lines if line.startswith("hashes")]
    assert hashlib.sha256(hashed[0].encode()).hexdigest() == subset.fingerprint
    assert hashlib.sha256(hashed[1].encode()).hexdigest() == subset.source.fingerprint
    assert subset.inputs["index"].fingerprint in hashed[0]
