"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

CatalogOption = Annotated[
    Optional[Path],
    typer.Option(
        "--catalog",
        envvar="HVD_CATALOG",
        help="The data catalog (sources and artifacts). Default: ./data_catalog.yaml.",
        show_default=False,
    ),
]
SourceOption = Annotated[
    Optional[str],
    typer.Option(
        "--source",
        "-s",
        help="Which dataset of the catalog to work on. Default: the catalog's default_source.",
        show_default=False,
    ),
]
