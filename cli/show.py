"""``hvd show``: pictures of what hvd computes, for a person to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import CatalogOption, SourceOption
from cli.progress import console

app = typer.Typer(help="Pictures of the data as training sees it: superpixels, pairings, depth targets, teacher and student features.", no_args_is_help=True)


@app.command()
def keyframe(
    token: Annotated[Optional[str], typer.Argument(help="Sample token of the keyframe (or give --index).", show_default=False)] = None,
    index: Annotated[Optional[int], typer.Option("--index", "-i", min=0, help="The N-th keyframe of the source's index (0-based), instead of a token.", show_default=False)] = None,
    catalog: CatalogOption = None,
    source: SourceOption = None,
    run: Annotated[Optional[Path], typer.Option("--run", help="An `hvd train pretrain` run folder (or its checkpoint.pt): adds its teacher and student BEV features and one camera's predicted depth.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs. Default: pictures/<token>.", show_default=False)] = None,
    augmented: Annotated[bool, typer.Option("--augmented", help="Show the keyframe after the training stage's crop, flip and cloud transforms (the run's augmentation with --run, else the default), with the pairings drawn on the augmented views.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="With --augmented: the training seed whose draw to show. Default: the run's seed, else 0.", show_default=False)] = None,
    epoch: Annotated[int, typer.Option("--epoch", min=0, help="With --augmented: the epoch whose draw to show.")] = 0,
    camera: Annotated[str, typer.Option("--camera", help="The camera whose predicted depth is drawn (with --run).")] = "CAM_FRONT",
) -> None:
    """Write PNGs of one keyframe, read exactly as pretraining reads it from the stores (only its
    own rows need be computed: it works while `hvd prep` is still running).

    For each camera (<kind>_<CAMERA>.png): the image with its superpixel boundaries, the paired LiDAR
    points coloured by depth, the teacher features as RGB (first three principal components, one
    basis for the six cameras) and the depth-target grid. <kind>_bev.png: the LiDAR occupancy in a
    bird's-eye view and, with --run, the teacher's and the student's BEV features in one PCA basis
    (equal colours mean equal features); <kind>_depth_<CAMERA>.png: that camera's predicted depth
    beside its target. <kind> is plain (the validation view: whole image, no cloud transform) or
    augmented (--augmented: the training stage's crop, resize, flip and cloud transforms, as drawn
    for --seed and --epoch, every picture drawn at the original image size).
    """
    from pipeline.data.source import CAMERAS
    from pipeline.errors import HvdError
    from pipeline.stages import Catalog
    from pipeline.train import pictures
    from pipeline.train.augment import AugmentConfig
    from pipeline.train.pretrain import load_run
    from pipeline.train.pretrain_data import collate, open_stores
    from pipeline.train.voxelize import InputSettings
    from pipeline.viz import draw

    if (token is None) == (index is None):
        raise HvdError("give a sample token or --index N (one of them)")
    if camera not in CAMERAS:
        raise HvdError(f"--camera {camera} is not one of {', '.join(CAMERAS)}")
    cat = Catalog.load(catalog)
    from pipeline.stages.index import ensure_index

    row = pictures.find_row(ensure_index(cat, source)[0], token, index)
    stores = open_stores(cat, source, rows=[row])  # only this keyframe's rows need be done
    net, config = load_run(run, stores) if run is not None else (None, None)
    augmentation = None
    if augmented:
        augmentation = config.data.augment if config is not None and config.data.augment.enabled else AugmentConfig()
    seed = seed if seed is not None else (config.run.seed if config is not None else 0)
    view = pictures.keyframe_view(stores, row, augmentation=augmentation, seed=seed, epoch=epoch, input=config.model.input if config else InputSettings())
    folder = out or Path("pictures") / view.token
    outputs = pictures.network_outputs(net, collate([view.example])) if net is not None else None
    for stem, rgb in pictures.keyframe_pictures(view, outputs, camera=CAMERAS.index(camera)).items():
        path = draw.write_png(folder / f"{stem}.png", rgb)
        console.print(f"{path}", highlight=False)
    console.print(f"sample {view.token} (index row {row}, {'augmented: seed ' + str(seed) + ', epoch ' + str(epoch) if augmented else 'plain view'})", highlight=False)
