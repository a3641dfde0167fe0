"""hvd pipeline: dataset access, synthetic data, the sample index, stages, stores and the catalog.

Imports numpy, torch, zarr, pyarrow, nuscenes-devkit and ``models`` only -- never prefect, dask or
typer -- so the training stage runs on a GPU machine that has only those.
"""

__version__ = "0.1.0"
