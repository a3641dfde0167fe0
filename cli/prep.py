"""``hvd prep``: the preprocessing stages that build the stores training reads."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.options import CatalogOption, SourceOption

app = typer.Typer(help="Preprocessing stages: build the fingerprinted stores the training stage reads.", no_args_is_help=True)
console = Console(stderr=True)


def progress_bar(label: str, unit: str) -> Progress:
    """The progress bar every long-running command shows: count, rate of progress and ETA."""
    return Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


def bar_updater(bar: Progress, description: str):
    """An ``on_progress(done, total)`` callback that adds its task to ``bar`` on first use, so
    nothing is drawn when there is nothing to do."""
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    return update


@app.command()
def index(
    catalog: CatalogOption = None,
    source: SourceOption = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild even if the index is up to date.")] = False,
) -> None:
    """Build the sample index: one row per keyframe with paths, timestamps, calibration and split.

    Reads the dataset through nuscenes-devkit and checks every file a keyframe needs (LiDAR sweep,
    lidarseg labels, six images): a missing or truncated file is reported by name and sample token.
    Every other stage runs this automatically; it is rebuilt only when the dataset's tables change.
    """
    from pipeline.catalog import Catalog
    from pipeline.index import ensure_index

    cat = Catalog.load(catalog)
    start = time.monotonic()
    with progress_bar("index", "scenes") as bar:
        idx, built = ensure_index(cat, source, rebuild=rebuild, on_progress=bar_updater(bar, "index"))
    counts = {s: int((idx.splits == s).sum()) for s in ("train", "val")}
    excluded = len(idx) - sum(counts.values())
    dropped = idx.meta.extra.get("dropped", [])
    verb = f"built in {time.monotonic() - start:.1f} s" if built else "up to date"
    console.print(
        f"index of [bold]{idx.meta.source}[/]: {len(idx)} keyframes ({counts['train']} train, {counts['val']} val"
        + (f", {excluded} outside pretraining" if excluded else "")
        + f") -> {idx.path} ({verb})",
        highlight=False,
    )
    if dropped:
        console.print(f"[yellow]warning:[/] {len(dropped)} keyframe(s) skipped for missing or truncated files (allow_missing)")
