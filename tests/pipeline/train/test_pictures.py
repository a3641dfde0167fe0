"""Pictures of a keyframe as training reads it (``hvd show keyframe``) and the images pretraining
logs: the plain view is the camera image with the example's own pairings in their depth colours,
a flipped augmented view is the mirror of the plain one at the pairings, and TensorBoard receives
exactly the teacher/student BEV and depth pictures of the checkpointed networks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.frustum import DEPTH_MAX_M, DEPTH_MIN_M
from pipeline.data.sensor_data import load_image
from pipeline.train import pictures, pretrain_config
from pipeline.train.augment import AugmentConfig
from pipeline.train.pretrain import load_run, train
from pipeline.train.pretrain_data import collate, open_stores
from pipeline.viz import draw

FLIP_ONLY = AugmentConfig(
    rotation_deg=0, scale=(1, 1), translation_std_m=0, flip_x=0, flip_y=0, drop_cuboids=False, crop_retries=0, flip_horizontal=1
)


@pytest.fixture(scope="module")
def stores(tiny_stores):
    return open_stores(tiny_stores, "tiny")


@pytest.fixture(scope="module")
def plain(stores):
    return pictures.keyframe_view(stores, 0)


def _drawn_nearest(cam: pictures.CameraView) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) and depths of the nearest pairing at each pixel pairings fall on."""
    pix = np.round(cam.pair_uv[:, ::-1]).astype(int)
    order = np.argsort(cam.pair_depth)
    _, first = np.unique(pix[order], axis=0, return_index=True)
    return pix[order][first], cam.pair_depth[order][first]


def test_the_plain_view_is_the_camera_image_with_its_pairings_in_their_depth_colours(stores, plain):
    record = stores.index.record(0)
    for c in (0, 3):
        cam = plain.cameras[c]
        np.testing.assert_array_equal(cam.image, load_image(record["cam_paths"][c]))
        stored = stores.open()["superpixels"].read("labels", 0)[c]  # at the algorithm's working size
        (big_h, big_w), (h, w) = cam.image.shape[:2], stored.shape
        rows, cols = ((np.arange(big_h) + 0.5) * h / big_h).astype(int), ((np.arange(big_w) + 0.5) * w / big_w).astype(int)
        at_image_size = stored[rows][:, cols]  # each image pixel takes the cell its centre falls in
        assert cam.labels.shape == (big_h, big_w) and (draw.boundaries(cam.labels) == draw.boundaries(at_image_size)).all()
        assert len(cam.pair_uv) > 100
        picture = pictures.points_picture(cam, radius=0)
        pix, depth = _drawn_nearest(cam)
        want = draw.colours(depth, DEPTH_MIN_M, DEPTH_MAX_M)
        np.testing.assert_array_equal(picture[pix[:, 0], pix[:, 1]], want)
        away = np.ones(cam.image.shape[:2], bool)
        away[pix[:, 0], pix[:, 1]] = False
        np.testing.assert_array_equal(picture[away], cam.image[away])


def test_a_flipped_augmented_view_mirrors_the_plain_one_at_the_pairings(stores, plain):
    flipped = pictures.keyframe_view(stores, 0, augmentation=FLIP_ONLY, seed=3)
    assert flipped.augmented and not plain.augmented
    for c in range(6):
        a, b = plain.cameras[c], flipped.cameras[c]
        w = a.image.shape[1]
        assert np.abs(b.image.astype(int) - a.image[:, ::-1].astype(int)).max() <= 1
        # the same pairings, mirrored: u -> W - 1 - u
        np.testing.assert_allclose(np.sort(b.pair_uv[:, 0]), np.sort(w - 1 - a.pair_uv[:, 0]), atol=1e-3)
        pa, pb = pictures.points_picture(a, radius=0), pictures.points_picture(b, radius=0)
        pix, _ = _drawn_nearest(b)
        np.testing.assert_array_equal(pb[pix[:, 0], pix[:, 1]], pa[pix[:, 0], w - 1 - pix[:, 1]])
        # superpixels and teacher features are mirrored with the image
        np.testing.assert_array_equal(b.labels, np.unique(a.labels[:, ::-1], return_inverse=True)[1].reshape(a.labels.shape))
        np.testing.assert_allclose(b.features, a.features[:, :, ::-1], atol=1e-5)
        np.testing.assert_array_equal(b.depth_target, a.depth_target[:, ::-1])


def test_keyframe_pictures_and_the_tensorboard_images_of_a_run(tiny_stores, stores, tmp_path):
    """One step, images every step: TensorBoard holds the teacher/student BEV and depth pictures,
    equal to those drawn again from the checkpoint (written at the same step) on the same example;
    ``hvd show``'s pictures with --run colour the student's occupied columns."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = {
        "data": {"catalog": str(tiny_stores.path), "source": "tiny", "batch_size": 1, "num_workers": 0, "max_examples": 1, "augment": {"enabled": False}},
        "model": {"student_width": 0.25, "bridge_channels": 16, "depth_channels": 16},
        "optim": {"lr": 0.1, "epochs": 10},
        "run": {"out_dir": str(tmp_path / "run"), "max_steps": 1, "checkpoint_every": 1, "image_every": 1},
    }
    config = pretrain_config.build(None, None, data)
    train(config, catalog=tiny_stores)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"pretrain/bev_teacher_vs_student", "pretrain/depth_prediction_vs_target"}
    net, _ = load_run(tmp_path / "run", stores)
    view = pictures.keyframe_view(stores, int(stores.index.rows("train")[0]))  # the run's one example
    outputs = pictures.network_outputs(net, collate([view.example]))
    again = pictures.network_pictures(outputs, view.example["depth_target"][0])
    for tag, rgb in again.items():
        (logged,) = events.Images(f"pretrain/{tag}")
        assert logged.step == 1
        image = np.asarray(Image.open(io.BytesIO(logged.encoded_image_string)).convert("RGB"))
        assert image.shape == rgb.shape
        assert (np.abs(image.astype(int) - rgb.astype(int)).max(axis=2) > 2).mean() < 0.001, tag

    shown = pictures.keyframe_pictures(view, outputs)
    assert set(shown) == {f"plain_{name}" for name in pictures.CAMERAS} | {"plain_bev", "plain_depth_CAM_FRONT"}
    teacher, student = pictures.bev_feature_pictures(outputs["bev_index"], outputs["student"], outputs["teacher"])
    painted = (student.reshape(-1, 3) != draw.EMPTY).any(axis=1).reshape(student.shape[:2])
    want = np.zeros_like(painted)
    want[255 - outputs["bev_index"][:, 1], outputs["bev_index"][:, 0]] = True
    assert want.sum() > 100 and (painted <= want).all() and painted.sum() >= 0.99 * want.sum()
    # the BEV file holds occupancy, teacher and student side by side, the student's at 2 x 2 pixels a cell
    bev = shown["plain_bev"]
    x0 = 2 * (2 * 256 + 4)  # after two panels and their gaps
    np.testing.assert_array_equal(bev[draw.TITLE_HEIGHT :, x0 : x0 + 512][::2, ::2], student)


def test_show_keyframe_writes_the_augmented_pictures_and_names_an_unknown_sample(tiny_stores, stores, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    def show(*args: str):
        return CliRunner().invoke(app, ["show", "keyframe", *args, "--catalog", str(tiny_stores.path), "--source", "tiny", "--out", str(tmp_path / "p")], env={"COLUMNS": "200"})

    result = show("--index", "1", "--augmented", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted([f"augmented_{c}.png" for c in pictures.CAMERAS] + ["augmented_bev.png"])
    # the file's first panel is the augmented view (training's default augmentation, seed 5) with its superpixel boundaries
    cam = pictures.keyframe_view(stores, 1, augmentation=AugmentConfig(), seed=5).cameras[2]
    written = np.asarray(Image.open(tmp_path / "p" / f"augmented_{cam.name}.png").convert("RGB"))
    h, w = cam.image.shape[:2]
    np.testing.assert_array_equal(written[draw.TITLE_HEIGHT : draw.TITLE_HEIGHT + h, :w], draw.draw_boundaries(cam.image, cam.labels))

    result = show("no-such-token")
    assert result.exit_code == 2 and "sample no-such-token is not in the index" in result.output
