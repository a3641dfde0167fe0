"""hvd pipeline, in layers whose imports point one way: ``train`` -> ``stages`` -> ``store``,
``data``.

- ``data``: reading nuScenes-format datasets (devkit access, sensor files, splits, classes,
  geometry);
- ``store``: the catalog, fingerprints, store metadata, row stores and the stage runner;
- ``stages``: one module per stage (index, superpixels, correspondences, depth targets, teacher
  cache) and the table of them;
- ``train``: the datasets that read the stores, augmentation, the training loops, evaluation;
- ``synth``: the synthetic nuScenes-format world;
- ``errors``: the errors a user can act on, raised by every layer.

Imports numpy, torch, zarr, pyarrow, nuscenes-devkit and ``models`` only -- never prefect, dask or
typer -- so the training stage runs on a GPU machine that has only those. docs/DESIGN.md describes
the layout.
"""

__version__ = "0.1.0"
