"""``hvd catalog``: what the catalog names, what exists on disk for it, why a store is stale, and
whether its bytes are still those that were written (``verify``)."""

from __future__ import annotations

import os

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.options import CatalogOption, SourceOption
from cli.progress import bar_updater, progress_bar
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


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=200)  # logs and pipes: keep table rows on one line
    return console


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
    split = src.split
    seeded = f" (val_fraction {split.val_fraction:g}, seed {split.seed})" if split.kind == "seeded" else ""
    if src.format == "semantickitti":
        console.print("  SemanticKITTI format: fine-tuning and evaluation only (--dataset semantickitti), read from sequences/; sequences 00-07 and 09-10 train, 08 validates; no stores")
    else:
        console.print(f"  pretraining split: {split.kind}{seeded}; fine-tuning and evaluation: the devkit's official splits where it knows the scenes")
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

    [green]complete[/] means every row was written; it does not read the rows back. [bold]hvd catalog
    verify[/] reads every row and checks it against the checksums recorded when it was written.
    """
    if all_sources and source is not None:
        raise typer.BadParameter("give either --source or --all-sources, not both")
    cat = Catalog.load(catalog)
    names = list(cat.spec.sources) if all_sources else [cat.source(source).name]
    resolved = {name: cat.artifacts(name) for name in names}  # catalog errors before any output
    console = _console()
    for name, artifacts in resolved.items():
        _show_source(console, cat, name, artifacts)
    console.print("[dim]complete = every row written; `hvd catalog verify` reads them back and checks their checksums[/]")


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


def _prep_command(art: Artifact) -> str:
    return f"hvd prep {art.stage.name.replace('_', '-')} --source {art.source.name}"


def _print_report(console: Console, art: Artifact, report, shown: int = 50) -> None:
    """One line per store, then its damaged rows (at most ``shown``) and unverifiable rows."""
    where = escape(_location(art.path))
    if report.fatal:
        console.print(f"[red]{escape(art.name)}: unreadable[/] -> {where}\n  {escape(report.fatal)}")
        return
    unit = "rows" if art.stage.suffix != ".parquet" else "table rows"
    if report.clean:
        console.print(f"[green]{escape(art.name)}: ok[/], {report.checked} {unit} verified -> {where}")
        return
    rows = report.damaged_rows()
    store_level = [f for f in report.damaged if f.row is None]
    console.print(
        f"[red]{escape(art.name)}: {len(rows)} damaged row(s)"
        + (f", {len(store_level)} damaged store-level array(s)" if store_level else "")
        + f"[/] of {report.checked} {unit} -> {where}"
    )
    if report.damaged:
        table = Table(title_justify="left", show_edge=False)
        for column in ("row", "sample token", "array", "reason"):
            table.add_column(column)
        for finding in report.damaged[:shown]:
            row = "-" if finding.row is None else str(finding.row)
            table.add_row(row, escape(finding.token or "-"), escape(finding.array), escape(finding.reason))
        console.print(table)
        if len(report.damaged) > shown:
            console.print(f"  ... and {len(report.damaged) - shown} more")
    if report.unverifiable:
        from pipeline.store.rowstore import RowStore

        tokens = RowStore.open(art.path).tokens()
        examples = ", ".join(tokens[r] for r in report.unverifiable[:3])
        console.print(
            f"[yellow]  {len(report.unverifiable)} done row(s) have no checksum (written before checksums existed, e.g. sample "
            f"{escape(examples)}): unverifiable; --repair resets them so `{_prep_command(art)}` recomputes them[/]"
        )


@app.command()
def verify(
    artifacts: Annotated[
        Optional[list[str]], typer.Argument(help="Artifacts to check (default: every artifact of the source).", show_default=False)
    ] = None,
    catalog: CatalogOption = None,
    source: SourceOption = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Mark damaged rows not done (their chunks deleted) so the next `hvd prep` recomputes only them.")
    ] = False,
) -> None:
    """Read every row of every store back and check it against the checksums recorded when it
    was written.

    Reports each damaged row by store, row, sample token, array and reason: a [bold]missing[/]
    chunk (zarr would read it as zeros), an [bold]undecodable[/] one (truncated or overwritten), a
    [bold]checksum mismatch[/] (other bytes that still decode), a missing checksum record. Rows
    written before checksums existed are [yellow]unverifiable[/]. The shared arrays (the teacher
    cache's PCA basis) are checked likewise, and the sample index is read whole.

    Exits 1 when anything is damaged or unverifiable. With [bold]--repair[/], damaged and
    unverifiable rows are marked not done (their chunks deleted) and the store incomplete, so the
    next [bold]hvd prep[/] recomputes just those rows; a damaged shared array is deleted with every
    row of its store (refitted and recomputed); an unreadable index is deleted (rebuilt by the next
    prep). A store whose token array or metadata is damaged cannot be repaired row by row: delete
    it to rebuild.
    """
    from pipeline.store.stores import _kind
    from pipeline.store.verify import repair_rows, repair_table, verify_rows, verify_table

    cat = Catalog.load(catalog)
    names = artifacts or [art.name for art in cat.artifacts(source)]
    chosen = [cat.artifact(name, source) for name in names]  # catalog errors before any output
    console = _console()
    bad, to_prep = [], []
    for art in chosen:
        if _kind(art.path) is None:
            console.print(f"[dim]{escape(art.name)}: not built, nothing to verify ({escape(_location(art.path))})[/]")
            continue
        if art.stage.suffix == ".parquet":
            report = verify_table(art.path)
        else:
            with progress_bar("verify", "row") as bar:
                report = verify_rows(art.path, on_progress=bar_updater(bar, art.name))
        _print_report(console, art, report)
        if report.clean:
            continue
        table = art.stage.suffix == ".parquet"  # an unreadable index is rebuilt; a row store's token array is not
        if not repair or (report.fatal and not table):
            bad.append(art)
            continue
        done = repair_table(report) if table else repair_rows(report)
        console.print(f"  [bold]repaired[/]: {escape(done)}")
        to_prep.append(art)
    if to_prep:
        stages = list(dict.fromkeys(a.stage.name.replace("_", "-") for a in to_prep if a.stage.suffix != ".parquet"))
        command = stages[0] if len(stages) == 1 else "all" if stages else "index"
        console.print(f"now run `hvd prep {command} --source {to_prep[0].source.name}` to recompute what was reset (only that is computed)")
    if bad:
        what = ", ".join(a.name for a in bad)
        if repair:
            console.print(f"[red]not repaired[/]: {escape(what)} (delete the store to rebuild it)")
        else:
            console.print(f"[red]damaged[/]: {escape(what)}: run `hvd catalog verify --repair --source {bad[0].source.name}`, then `hvd prep ...` as it says")
        raise typer.Exit(1)
