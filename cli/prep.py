"""``hvd prep``: the preprocessing stages that build the stores training reads."""

from __future__ import annotations

import typer

app = typer.Typer(help="Preprocessing stages: build the fingerprinted stores the training stage reads.", no_args_is_help=True)
