"""Progress bars of long-running commands: count, rate, elapsed time and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column formats bytes), and optionally the rate of the
    parts they are made of (a keyframe is six camera images)."""

    def __init__(self, unit: str, parts: tuple[int, str] | None = None) -> None:
        super().__init__()
        self.unit, self.parts = unit, parts

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text(f"- {self.unit}/s", style="progress.data.speed")
        text = f"{speed:.2f} {self.unit}/s"
        if self.parts:
            text += f" ({speed * self.parts[0]:.1f} {self.parts[1]}/s)"
        return Text(text, style="progress.data.speed")


def progress_bar(label: str, unit: str, parts: tuple[int, str] | None = None) -> Progress:
    """The progress bar every long-running command shows: count, rate and ETA."""
    return Progress(
        TextColumn(f"[bold]{label}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit, parts),
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
