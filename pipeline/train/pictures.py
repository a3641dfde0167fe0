"""What a keyframe looks like to hvd, as pictures (``hvd show keyframe``) and the few pictures
pretraining sends to TensorBoard.

A keyframe is read exactly as training reads it: ``PretrainDataset`` gives the example (with the
validation view, or with the training augmentation drawn from a seed and an epoch), and each camera
is drawn in a *view* of the original image's size: the original image itself for the validation
view, or the augmented image (crop, resize, flip through the example's ``img_aug``) scaled back up
to that size. The pairings, superpixels, teacher features and depth targets drawn on a view are the
example's own, so an augmented picture shows the geometry contract: the pairings land on the same
image content as in the plain view.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.frustum import BEV_SIZE, DEPTH_MAX_M, DEPTH_MIN_M, DEPTH_STEP_M, bev_cell, depth_bins
from pipeline.data.sensor_data import load_image
from pipeline.data.source import CAMERAS
from pipeline.errors import HvdError
from pipeline.store.rowstore import RowStore
from pipeline.train import augment
from pipeline.train.augment import AugmentConfig
from pipeline.train.pretrain_data import DataConfig, PretrainDataset, Stores, collate
from pipeline.train.voxelize import InputSettings
from pipeline.viz import draw

BEV_SCALE = 2  # BEV pictures: 2 x 2 pixels per 0.4 m cell


@dataclass
class CameraView:
    """One camera of an example, drawn at the original image's size."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8: the view
    labels: np.ndarray  # (H, W): superpixel ids of the view
    pair_uv: np.ndarray  # (M, 2) pairings in view pixels (u = column, v = row)
    pair_depth: np.ndarray  # (M,) camera depth of each pairing, m
    features: np.ndarray  # (C, h, w) teacher features on the training grid
    depth_target: np.ndarray  # (h, w) minimum depth per cell, 0: none
    matrix: np.ndarray  # (3, 3) original pixels -> view pixels


@dataclass
class KeyframeView:
    token: str
    row: int
    augmented: bool
    example: dict  # the ``PretrainDataset`` example
    cameras: list[CameraView]


def find_row(index, token: str | None = None, position: int | None = None) -> int:
    """The index row of a sample token, or of the ``position``-th keyframe of the index."""
    if token is not None:
        try:
            return index.tokens.index(token)
        except ValueError:
            raise HvdError(f"sample {token} is not in the index {index.path} ({len(index)} keyframes)") from None
    if position is None or not 0 <= position < len(index):
        raise HvdError(f"--index {position} is outside the index {index.path}: it has keyframes 0 to {len(index) - 1}")
    return int(position)


def view_scale(out_hw, image_hw) -> np.ndarray:
    """3x3 map from an (h, w) augmented image to one of the original (H, W) size, pixel centres
    kept at integers: u'' + 0.5 = (u' + 0.5) W / w. For the validation view it undoes the resize."""
    sx, sy = image_hw[1] / out_hw[1], image_hw[0] / out_hw[0]
    return np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])


def warp(image: np.ndarray, matrix: np.ndarray, size_hw) -> np.ndarray:
    """The image seen through ``matrix`` (original pixels -> output pixels), bilinear, at ``size_hw``;
    the identity returns the image itself."""
    if tuple(size_hw) == image.shape[:2] and np.allclose(matrix, np.eye(3), atol=1e-9):
        return image
    grid = augment.sample_grid(matrix, image.shape[:2], size_hw)
    out = augment.resample_features(image.transpose(2, 0, 1).astype(np.float32), grid)
    return np.clip(np.round(out.transpose(1, 2, 0)), 0, 255).astype(np.uint8)


def keyframe_view(
    stores: Stores,
    row: int,
    *,
    augmentation: AugmentConfig | None = None,
    seed: int = 0,
    epoch: int = 0,
    input: InputSettings = InputSettings(),
) -> KeyframeView:
    """The example training reads for index ``row`` (the validation view, or ``augmentation`` as
    drawn for (``seed``, ``epoch``)) and its six camera views."""
    record = stores.index.record(row)
    if record["problem"]:
        raise HvdError(f"sample {record['token']} is refused by the index ({record['problem']}): it has no stores to show")
    config = DataConfig(split=record["split"], augment=augmentation or AugmentConfig(enabled=False), num_workers=0)
    dataset = PretrainDataset(stores, config, seed=seed, input=input)
    dataset.set_epoch(epoch)
    example = dataset[int(np.flatnonzero(dataset.rows == row)[0])]
    sp = RowStore.open(stores.paths["superpixels"])
    labels = sp.read("labels", sp.row_of(record["token"]))
    cameras = []
    for c, name in enumerate(CAMERAS):
        image = load_image(record["cam_paths"][c])
        image_hw = image.shape[:2]
        scale = view_scale(dataset.out_hw, image_hw)
        matrix = scale @ example["img_aug"][c]
        mine = example["pair_cam"] == c
        view_labels, _ = augment.resample_labels(labels[c], augment.sample_grid(matrix, image_hw, image_hw))
        cameras.append(
            CameraView(
                name=name,
                image=warp(image, matrix, image_hw),
                labels=view_labels,
                pair_uv=augment.apply_image_matrix(scale, example["pair_uv"][mine].astype(np.float64)),
                pair_depth=example["pair_depth"][mine],
                features=example["features"][c],
                depth_target=example["depth_target"][c],
                matrix=matrix,
            )
        )
    return KeyframeView(record["token"], row, augmentation is not None and augmentation.enabled, example, cameras)


# --- pictures of a keyframe -------------------------------------------------------------------------


def depth_label(what: str) -> str:
    return f"{what} (colour: depth {DEPTH_MIN_M:g}-{DEPTH_MAX_M:g} m)"


def points_picture(cam: CameraView, radius: int = 1) -> np.ndarray:
    """The view with its pairings coloured by depth (``draw.colours`` from 1 to 60 m)."""
    return draw.draw_points(cam.image, cam.pair_uv, cam.pair_depth, DEPTH_MIN_M, DEPTH_MAX_M, radius=radius)


def grid_over_image(cam: CameraView, grid_rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A (h, w) grid picture blown up to the view, over the darkened view where a cell is empty."""
    size = cam.image.shape[:2]
    big, mask = draw.resize_nearest(grid_rgb, size), draw.resize_nearest(valid[..., None], size)[..., 0]
    out = draw.blend(cam.image, np.zeros_like(cam.image), 0.6)
    out[mask] = big[mask]
    return out


def camera_picture(cam: CameraView, feature_rgb: np.ndarray) -> np.ndarray:
    """2 x 2 panels of one camera: superpixel boundaries, pairings by depth, teacher features (PCA),
    depth targets."""
    size = cam.image.shape[:2]
    target = draw.value_grid(cam.depth_target, DEPTH_MIN_M, DEPTH_MAX_M)
    panels = [
        draw.titled(draw.draw_boundaries(cam.image, cam.labels), f"{cam.name}: superpixels ({len(np.unique(cam.labels))})"),
        draw.titled(points_picture(cam), depth_label(f"{len(cam.pair_uv)} paired LiDAR points")),
        draw.titled(draw.resize_nearest(feature_rgb, size), f"teacher features, first 3 principal components ({cam.features.shape[0]} channels)"),
        draw.titled(grid_over_image(cam, target, cam.depth_target > 0), depth_label(f"depth targets, {cam.depth_target.shape[0]}x{cam.depth_target.shape[1]} grid")),
    ]
    bar = draw.colour_bar(DEPTH_MIN_M, DEPTH_MAX_M, size[1], "depth m")
    return draw.stacked([draw.side_by_side(panels[:2]), draw.side_by_side(panels[2:]), bar])


def bev_cells(points: np.ndarray) -> np.ndarray:
    """(N, 2) BEV cells (ix, iy) of the cloud's points on the 256 x 256 grid (those inside it)."""
    cells = bev_cell(torch.from_numpy(np.asarray(points, dtype=np.float64))).numpy()
    return cells[cells[:, 0] >= 0]


def big_bev(rgb: np.ndarray) -> np.ndarray:
    return draw.resize_nearest(rgb, (BEV_SCALE * rgb.shape[0], BEV_SCALE * rgb.shape[1]))


def occupancy_picture(points: np.ndarray) -> np.ndarray:
    return draw.titled(big_bev(draw.occupancy(bev_cells(points), BEV_SIZE)), "LiDAR occupancy, 0.4 m cells, forward up")


def bev_feature_pictures(bev_index: np.ndarray, student: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(teacher, student) BEV feature pictures of one example: the student's features (K, C) at its
    occupied columns ``bev_index`` (K, 2) = (ix, iy), the teacher's pooled features at the same
    columns (zero where no frustum point reached), coloured in ONE PCA basis fitted on both."""
    seen = np.linalg.norm(teacher, axis=1) > 0
    t_rgb, s_rgb = draw.pca_colours([teacher[seen], student])
    return draw.bev_canvas(bev_index[seen], t_rgb, BEV_SIZE), draw.bev_canvas(bev_index, s_rgb, BEV_SIZE)


def expected_depth(probs: np.ndarray) -> np.ndarray:
    """(h, w) expected depth in m of a (D, h, w) distribution over the depth bins (bin centres)."""
    centres = depth_bins(dtype=torch.float64).numpy() + DEPTH_STEP_M / 2
    return np.tensordot(centres, np.asarray(probs, dtype=np.float64), axes=1)


def depth_pair_picture(probs: np.ndarray, target: np.ndarray, size_hw=None, name: str = "") -> np.ndarray:
    """The predicted (expected) depth beside its target grid, one colour scale."""
    pred = draw.value_grid(expected_depth(probs), DEPTH_MIN_M, DEPTH_MAX_M, valid=np.ones(target.shape, bool))
    want = draw.value_grid(target, DEPTH_MIN_M, DEPTH_MAX_M)
    size_hw = size_hw or (4 * target.shape[0], 4 * target.shape[1])
    prefix = f"{name}: " if name else ""
    panels = [draw.titled(draw.resize_nearest(pred, size_hw), f"{prefix}predicted depth (expectation)"), draw.titled(draw.resize_nearest(want, size_hw), f"{prefix}depth target (min per cell)")]
    row = draw.side_by_side(panels)
    return draw.stacked([row, draw.colour_bar(DEPTH_MIN_M, DEPTH_MAX_M, row.shape[1], "depth m")])


# --- a pretraining run's networks ------------------------------------------------------------------------


@torch.no_grad()
def network_outputs(net, batch: dict) -> dict:
    """Of example 0 of a batch, in evaluation mode (no BatchNorm statistics or random state change):
    the student's occupied BEV columns, its and the teacher's BEV features there, and the depth
    distribution of each of its cameras."""
    training = net.training
    net.eval()
    try:
        out, _, heads = net.outputs(batch, lss=True, bev=True)
    finally:
        net.train(training)
    first = out.bev_index[:, 0] == 0
    n_cams = int((batch["image_batch"] == 0).sum())
    return {
        "bev_index": out.bev_index[first, 1:].cpu().numpy(),
        "student": out.bev_features[first].float().cpu().numpy(),
        "teacher": heads.bev[first].float().cpu().numpy(),
        "depth_probs": heads.depth_probs[:n_cams].float().cpu().numpy(),
    }


def training_pictures(net, batch: dict, camera: int = 0) -> dict[str, np.ndarray]:
    """The pictures pretraining logs: teacher vs student BEV features of the batch's first example
    (when the BEV loss trains them) and one camera's predicted depth vs its target (when the depth
    loss trains it)."""
    if not (net.losses.bev or net.losses.depth):
        return {}
    pictures = network_pictures(network_outputs(net, batch), batch["depth_target"][camera].numpy(), camera)
    wanted = {"bev_teacher_vs_student": net.losses.bev, "depth_prediction_vs_target": net.losses.depth}
    return {tag: rgb for tag, rgb in pictures.items() if wanted[tag]}


def network_pictures(outputs: dict, depth_target: np.ndarray, camera: int = 0) -> dict[str, np.ndarray]:
    """Teacher vs student BEV features and ``camera``'s predicted depth vs its target grid, from
    ``network_outputs``."""
    teacher, student = bev_feature_pictures(outputs["bev_index"], outputs["student"], outputs["teacher"])
    return {
        "bev_teacher_vs_student": draw.side_by_side([draw.titled(teacher, "teacher BEV (PCA)"), draw.titled(student, "student BEV (same basis)")]),
        "depth_prediction_vs_target": depth_pair_picture(outputs["depth_probs"][camera], depth_target, name=CAMERAS[camera]),
    }


def keyframe_pictures(view: KeyframeView, outputs: dict | None = None, camera: int = 0) -> dict[str, np.ndarray]:
    """Every picture of ``hvd show keyframe``, by file stem: one per camera, the BEV (occupancy; with
    a run's ``network_outputs`` on ``view.example``, also the teacher's and student's BEV features
    and ``camera``'s predicted depth)."""
    kind = "augmented" if view.augmented else "plain"
    pictures = {}
    features = draw.feature_images([cam.features for cam in view.cameras])  # one basis for the six cameras
    for cam, rgb in zip(view.cameras, features):
        pictures[f"{kind}_{cam.name}"] = camera_picture(cam, rgb)
    bev = [occupancy_picture(view.example["points"])]
    if outputs is not None:
        teacher, student = bev_feature_pictures(outputs["bev_index"], outputs["student"], outputs["teacher"])
        bev += [draw.titled(big_bev(teacher), "teacher BEV features (PCA, shared basis)"), draw.titled(big_bev(student), "student BEV features (same basis)")]
        cam = view.cameras[camera]
        pictures[f"{kind}_depth_{cam.name}"] = depth_pair_picture(outputs["depth_probs"][camera], cam.depth_target, cam.image.shape[:2], name=cam.name)
    pictures[f"{kind}_bev"] = draw.side_by_side(bev)
    return pictures
