"""``hvd catalog``: what the catalog names, what exists on disk for it, and why a store is stale."""

from __future__ import annotations

import os

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import CatalogOption, SourceOption
from pipeline.errors import StoreError
from pipeline.stages import PREP_STAGES, Catalog
from pipeline.store.catalog import Artifact
from pipeline.store.fingerprint import canonical_json
from pipeline.store.stores import StoreMeta, disk_usage, list_stores, read_meta

CAMERAS_PER_ROW = 6

app = typer.Typer(
    help="Inspect the data catalog: artifacts, their fingerprints and their stores on disk.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

STATUS_STYLE = {
    "complete": "green",
    "partial": "yellow",
    "missing": "dim",
    "mismatch": "red",
    "unreadable": "red",
}


def _human(n_bytes: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    if n_bytes < 1024:
        return f"{n_bytes:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n_bytes /= 1024
        if n_bytes < 1024:
            return f"{n_bytes:.1f} {unit}"
    return f"{n_bytes / 1024:.1f} TiB"


def _location(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read)."""
    text = str(path)
    if "://" in text:
        return text
    try:
        return str(Path(text).relative_to(Path.cwd()))
    except ValueError:
        return text


def _inspect(path: str, expected: str | None) -> tuple[str, StoreMeta | None, str | None]:
    """(status, metadata, problem) of the store at ``path``; ``expected`` is the fingerprint the
    catalog implies (None for stores that are listed as other versions)."""
    try:
        meta = read_meta(path)
    except StoreError as exc:
        return "unreadable", None, str(exc)
    if meta is None:
        return "missing", None, None
    if expected is not None and meta.fingerprint != expected:
        problem = f"{path} records fingerprint {meta.fingerprint[:12]}, expected {expected[:12]}"
        return "mismatch", meta, problem
    return ("complete" if meta.complete else "partial"), meta, None


def _cells(path: str, status: str, meta: StoreMeta | None) -> list[str]:
    """status, rows done/total, size, bytes per row (keyframe) and per camera image: the columns
    both tables share."""
    size = disk_usage(path) if status != "missing" else 0
    rows = f"{meta.rows_done}/{meta.rows_total}" if meta else "-"
    per_row = _human(size / meta.rows_done) if meta and meta.rows_done else "-"
    per_image = "-"
    if meta and meta.rows_done and meta.stage in PREP_STAGES:  # six camera images per keyframe
        per_image = _human(size / meta.rows_done / CAMERAS_PER_ROW)
    return [
        f"[{STATUS_STYLE[status]}]{status}[/]",
        rows,
        _human(size) if status != "missing" else "-",
        per_row,
        per_image,
    ]


def _show_source(console: Console, catalog: Catalog, name: str, artifacts: list[Artifact]) -> None:
    """The artifacts table of source ``name``, then every other store found in its directory."""
    src = catalog.source(name)
    console.print(
        f"[bold]source {escape(name)}[/]  {escape(src.version)}  "
        f"dataroot {escape(_location(src.dataroot))}  fingerprint {src.fingerprint[:12]}"
    )
    if not src.dataroot.exists():
        console.print("  [yellow]dataroot not found[/]: generate the data or fix its dataroot")

    table = Table(title=f"artifacts of {escape(name)}", title_justify="left")
    for column in ("artifact", "stage", "v", "fingerprint", "status", "rows done/total"):
        table.add_column(column)
    for column in ("size", "bytes/row", "bytes/image"):
        table.add_column(column, justify="right")
    table.add_column("location")
    problems: list[str] = []
    for art in artifacts:
        status, meta, problem = _inspect(art.path, art.fingerprint)
        if problem:
            problems.append(problem)
        table.add_row(
            escape(art.name),
            escape(art.stage.name),
            str(art.stage.version),
            art.fingerprint[:12],
            *_cells(art.path, status, meta),
            escape(_location(art.path)),
        )
    console.print(table)

    stage_root = catalog.stage_root(name)
    current = {art.path for art in artifacts}
    others = [path for path in list_stores(stage_root) if path not in current]
    if not others:
        console.print(f"[dim]no other versions in {escape(_location(stage_root))}[/]\n")
    else:
        old = Table(
            title=f"other versions in {escape(_location(stage_root))} "
            "(match no current fingerprint)",
            title_justify="left",
        )
        for column in ("store", "stage", "fingerprint", "status", "rows done/total"):
            old.add_column(column)
        for column in ("size", "bytes/row", "bytes/image"):
            old.add_column(column, justify="right")
        old.add_column("created")
        for path in others:
            status, meta, problem = _inspect(path, None)
            if problem:
                problems.append(problem)
            old.add_row(
                escape(Path(path).name),
                escape(meta.stage) if meta else "?",
                meta.fingerprint[:12] if meta else "?",
                *_cells(path, status, meta),
                escape(meta.created) if meta else "?",
            )
        console.print(old)
    for problem in problems:
        console.print(f"[red]problem:[/] {escape(problem)}")


@app.command()
def show(
    catalog: CatalogOption = None,
    source: SourceOption = None,
    all_sources: Annotated[
        bool, typer.Option("--all-sources", help="Show every source of the catalog.")
    ] = False,
) -> None:
    """List the artifacts of a source and the state of their stores.

    One row per artifact: stage and stage version, fingerprint (first 12 hex digits), status
    ([green]complete[/], [yellow]partial[/] = a run was interrupted or rows were added, or missing),
    rows done/total, size on disk, bytes per row and location.

    Stores under the source's store directory that match no current fingerprint (built with other
    params, code or data) are listed below as [bold]other versions[/], so nothing on disk is hidden;
    delete them by hand when no longer needed.
    """
    if all_sources and source is not None:
        raise typer.BadParameter("give either --source or --all-sources, not both")
    cat = Catalog.load(catalog)
    names = list(cat.spec.sources) if all_sources else [cat.source(source).name]
    resolved = {name: cat.artifacts(name) for name in names}  # catalog errors before any output
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=200)  # logs and pipes: keep table rows on one line
    for name, artifacts in resolved.items():
        _show_source(console, cat, name, artifacts)


@app.command("fingerprint")
def fingerprint_cmd(
    artifact: Annotated[str, typer.Argument(help="An artifact of the catalog, e.g. index.")],
    catalog: CatalogOption = None,
    source: SourceOption = None,
) -> None:
    """Print an artifact's full fingerprint and the canonical JSON it is the sha256 of.

    Useful to see why a store is stale: compare the params and input fingerprints with those
    recorded in the store's metadata. The source's own fingerprint and JSON are printed too, since
    every artifact depends on them (they change when a synthetic dataset is regenerated).
    """
    art = Catalog.load(catalog).artifact(artifact, source)
    typer.echo(f"artifact     {art.name} (source {art.source.name}, stage {art.stage.name})")
    typer.echo(f"store        {_location(art.path)}")
    typer.echo(f"fingerprint  {art.fingerprint}")
    typer.echo(f"hashes       {canonical_json(art.fingerprint_document())}")
    typer.echo(f"source       {art.source.fingerprint}")
    typer.echo(f"hashes       {canonical_json(art.source.fingerprint_document())}")
