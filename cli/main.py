"""The ``hvd`` application: one typer sub-app per command group, composed here.

Errors a user can act on (``pipeline.errors.HvdError``) are printed as one message, without a
traceback, and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from pipeline.errors import HvdError

stderr = Console(stderr=True)


def _message(exc: HvdError) -> str:
    """The error's own message. An error raised in a PyTorch DataLoader worker (a damaged store
    row met by training) arrives re-raised by torch as the same type with the worker's whole
    traceback as its message: keep what follows its last ``module.Type: `` line."""
    text = str(exc)
    if "\nOriginal Traceback" not in text:
        return text
    marker = f"\n{type(exc).__module__}.{type(exc).__qualname__}: "
    where = text.split("\n", 1)[0].removeprefix(f"Caught {type(exc).__name__} ").rstrip(".")
    return f"{text.rsplit(marker, 1)[-1].strip()} (raised {where})" if marker in text else text


class _Group(TyperGroup):
    """Prints a ``HvdError`` as one plain line and exits with status 2.

    ``typer.Exit`` rather than a ``click.ClickException`` subclass: recent typer (0.29) vendors
    its own click, so exceptions of the installed ``click`` package are not recognised (they
    escaped as a traceback), and typer's rich mode draws its own error panel instead of ``show``.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HvdError as exc:
            stderr.print(f"[bold red]error:[/] {escape(_message(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    name="hvd",
    help=(
        "HVDistill image-to-LiDAR distillation as a cached, fingerprinted pipeline.\n\n"
        "Datasets are named in data_catalog.yaml (the built-in synthetic ones, or real nuScenes). "
        "Typical use: [bold]hvd data synth[/] to generate the synthetic demo dataset, "
        "[bold]hvd prep index[/] to index it, [bold]hvd catalog show[/] to see every artifact "
        "and its store."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from cli import catalog, data, deploy, prep, show, train

    app.add_typer(data.app, name="data")
    app.add_typer(prep.app, name="prep")
    app.add_typer(train.app, name="train")
    app.add_typer(catalog.app, name="catalog")
    app.add_typer(show.app, name="show")
    app.command(name="deploy")(deploy.deploy)
    from cli.eval import eval_command
    from cli.export import export_command

    app.command("eval")(eval_command)
    app.command("export")(export_command)


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
