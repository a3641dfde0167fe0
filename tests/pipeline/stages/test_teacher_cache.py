"""The teacher cache: stored features are the encoder's output (float16 tolerance), the PCA basis
is fitted once, reported and undone on read, and the encoder (ResNet-50 or MobileNetV2) and the
weights file are part of the fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.resnet import ResNet50
from pipeline.data.sensor_data import load_image
from pipeline.errors import StoreError
from pipeline.stages import Catalog, teacher_cache
from pipeline.stages.index import ensure_index
from pipeline.store.rowstore import RowStore
from pipeline.store.runner import plan, run_local
from pipeline.store.stores import read_meta
from tests.conftest import catalog_for

SMALL = {"input_size": [64, 112]}


def _run(root, dataroot, **params):
    catalog = Catalog.load(catalog_for(root, dataroot, params={"teacher_cache": SMALL | params}, stages=True))
    summary = run_local(catalog, "teacher_cache")
    assert summary.complete and not summary.failed, summary.failed
    return catalog, summary


@pytest.fixture(scope="module")
def plain(tiny_root, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tc_plain"), tiny_root, pca_channels=None)


@pytest.fixture(scope="module")
def pca(tiny_root, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tc_pca"), tiny_root, pca_channels=32, pca_images=6)


def _encoded(catalog, row: int, cam: int) -> np.ndarray:
    params = catalog.artifact("teacher_cache").params
    index, _ = ensure_index(catalog)
    image = load_image(index.record(row)["cam_paths"][cam], params.input_size)
    return teacher_cache.encode(params, image[None])[0]


def test_cached_features_are_the_encoder_output(plain):
    catalog, summary = plain
    params = catalog.artifact("teacher_cache").params
    store = RowStore.open(catalog.artifact("teacher_cache").path)
    index, _ = ensure_index(catalog)
    assert store.array("features").shape == (8, 6, 2048, 16, 28) and str(store.array("features").dtype) == "float16"
    for row, cam in ((0, 0), (5, 3)):
        cached = teacher_cache.read(store, store.row_of(index.tokens[row]), cam, params)
        expected = _encoded(catalog, row, cam)
        np.testing.assert_allclose(cached, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    assert summary.notes == [teacher_cache.RANDOM_WEIGHTS_WARNING]


def test_pca_is_reported_and_undone_on_read(pca):
    catalog, summary = pca
    params = catalog.artifact("teacher_cache").params
    store = RowStore.open(catalog.artifact("teacher_cache").path)
    index, _ = ensure_index(catalog)
    stats = store.group.attrs["pca"]
    assert 0.5 < stats["explained_variance"] < 1.0 and 0.0 < stats["reconstruction_error"] < 0.5
    assert any("PCA 2048 -> 32" in n and f"{stats['explained_variance']:.3f}" in n for n in summary.notes)
    mean, components = store.read_shared("pca_mean"), store.read_shared("pca_components")
    np.testing.assert_allclose(components @ components.T, np.eye(32), atol=1e-4)  # orthonormal basis
    row = store.row_of(index.tokens[6])
    codes = teacher_cache.read(store, row, 2, params)
    truth = _encoded(catalog, 6, 2)
    assert codes.shape == (32, 16, 28)
    np.testing.assert_allclose(codes, teacher_cache.project(truth[None], mean, components)[0], rtol=2e-3, atol=2e-3 * np.abs(codes).max())
    restored = teacher_cache.read(store, row, 2, params, restore_channels=True)
    centred = truth - mean[:, None, None]
    error = ((restored - truth) ** 2).sum() / (centred**2).sum()
    assert restored.shape == truth.shape and error < 2 * stats["reconstruction_error"] + 0.05


def test_the_pca_basis_is_fitted_once(pca):
    catalog, _ = pca
    store = RowStore.open(catalog.artifact("teacher_cache").path)
    before = store.read_shared("pca_components").copy()
    again = plan(catalog, "teacher_cache")  # as a later run (e.g. after the dataset grew) would
    assert len(again.todo) == 0
    np.testing.assert_array_equal(RowStore.open(catalog.artifact("teacher_cache").path).read_shared("pca_components"), before)


# --- the PCA's held-out images, when the source has few keyframes -----------------------------------


@pytest.mark.parametrize(
    "keyframes, pca_images, split",
    [
        (64, 32, (32, 32)),  # enough keyframes: one camera of each of 64
        (33, 32, (32, 32)),  # fewer: 64 of the 198 images
        (8, 4, (4, 4)),
        (8, 8, (8, 8)),  # keyframes == pca_images
        (8, 32, (32, 16)),  # the tiny preset under the catalog's settings: 48 images
        (2, 8, (8, 4)),
        (1, 32, (5, 1)),  # six images: all but one fit, one measures
    ],
)
def test_the_pca_always_keeps_an_image_out_of_its_fit(keyframes, pca_images, split):
    assert teacher_cache.pca_split(keyframes, pca_images) == split


def _fit_recording(index, params) -> tuple[dict, list[str]]:
    """The PCA fit, and the image files it read, in order."""
    read = []

    def load(path, size):
        read.append(str(path))
        return load_image(path, size)

    original = teacher_cache.load_image
    teacher_cache.load_image = load
    try:
        return teacher_cache._fit_pca(index, params, np.random.default_rng(params.seed)), read
    finally:
        teacher_cache.load_image = original


class _FirstKeyframes:
    """The first ``n`` keyframes of an index (what the PCA fit reads of it)."""

    def __init__(self, index, n: int):
        self.index, self.n = index, n

    def __len__(self) -> int:
        return self.n

    def record(self, row: int) -> dict:
        assert 0 <= row < self.n
        return self.index.record(row)

    def column(self, name: str):
        return self.index.column(name)[: self.n]


class _Refusing(_FirstKeyframes):
    """An index whose rows other than ``kept`` are refused (their ``problem`` is set)."""

    def __init__(self, index, kept: set[int]):
        super().__init__(index, len(index))
        self.kept = kept

    def column(self, name: str):
        if name != "problem":
            return super().column(name)
        return np.array(["" if i in self.kept else "calibrated_sensor x: refused" for i in range(self.n)])


def test_the_pca_never_reads_a_refused_keyframe(tiny_root, tmp_path):
    """A keyframe the index refused (a path outside the dataroot, a bad calibration) is never opened,
    not even to fit the PCA basis."""
    catalog = Catalog.load(catalog_for(tmp_path, tiny_root, stages=True))
    full = ensure_index(catalog)[0]
    index = _Refusing(full, {2, 5})
    params = teacher_cache.TeacherCacheParams(input_size=(32, 56), pca_channels=8, pca_images=4)
    pca, read = _fit_recording(index, params)
    allowed = {str(p) for row in (2, 5) for p in full.record(row)["cam_paths"]}
    assert read and set(read) <= allowed and pca["images"] + pca["held_out_images"] == len(read)
    with pytest.raises(StoreError, match="no image to fit the PCA basis on"):
        _fit_recording(_Refusing(full, set()), params)


# keyframes == pca_images; fewer keyframes than pca_images; fewer images than pca_images
@pytest.mark.parametrize("keyframes, pca_images", [(8, 8), (8, 12), (1, 8)])
def test_few_keyframes_fit_on_some_images_and_measure_on_others(tiny_root, tmp_path, keyframes, pca_images):
    catalog = Catalog.load(catalog_for(tmp_path, tiny_root, stages=True))
    index = _FirstKeyframes(ensure_index(catalog)[0], keyframes)
    params = teacher_cache.TeacherCacheParams(input_size=(32, 56), pca_channels=8, pca_images=pca_images)
    pca, read = _fit_recording(index, params)
    fitted, held = teacher_cache.pca_split(keyframes, pca_images)
    assert (pca["images"], pca["held_out_images"]) == (fitted, held) and held >= 1
    assert len(read) == len(set(read)) == fitted + held  # distinct images: the measure is on unseen ones
    assert 0.0 < pca["reconstruction_error"] < 1.0 and np.isfinite(pca["explained_variance"])
    np.testing.assert_allclose(pca["components"] @ pca["components"].T, np.eye(8), atol=1e-4)
    note = teacher_cache.pca_note(pca, params, keyframes)
    assert f"on {held} held-out image(s), fitted on {fitted}" in note
    assert ("fewer than pca_images" in note) == (fitted < pca_images)
    if keyframes == 1:  # deterministic (the cheapest case to fit twice)
        again, read_again = _fit_recording(index, params)
        assert read_again == read and all(np.array_equal(pca[k], again[k]) for k in ("mean", "components"))


@pytest.mark.slow
def test_the_catalogs_tiny_settings_build_a_complete_cache(tiny_root, tmp_path):
    """``hvd prep teacher-cache`` on the tiny preset with data_catalog.yaml's own settings for it
    (the artifact's params, then source synth-tiny's): 8 keyframes, fewer than pca_images."""
    import yaml

    real = yaml.safe_load((Path(__file__).resolve().parents[3] / "data_catalog.yaml").read_text())
    source = real["sources"]["synth-tiny"] | {"dataroot": str(tiny_root)}
    spec = {"store_root": "stores", "default_source": "synth-tiny", "sources": {"synth-tiny": source}}
    spec["artifacts"] = {"index": real["artifacts"]["index"], "teacher_cache": real["artifacts"]["teacher_cache"]}
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    catalog = Catalog.load(tmp_path / "catalog.yaml")
    params = catalog.artifact("teacher_cache").params
    assert params.pca_channels and params.pca_images > 8  # what made the PCA's held-out set empty
    summary = run_local(catalog, "teacher_cache")
    assert summary.complete and not summary.failed and summary.computed == 8
    meta = read_meta(catalog.artifact("teacher_cache").path)
    assert meta.complete and meta.rows_done == meta.rows_total == 8
    store = RowStore.open(catalog.artifact("teacher_cache").path)
    fitted, held = teacher_cache.pca_split(8, params.pca_images)
    assert {k: store.group.attrs["pca"][k] for k in ("images", "held_out_images")} == {"images": fitted, "held_out_images": held}
    assert store.array("features").shape[:3] == (8, 6, params.pca_channels)
    assert any(f"{held} held-out image(s)" in note for note in summary.notes)


def test_weights_file_content_is_part_of_the_fingerprint(tiny_root, tmp_path):
    weights = tmp_path / "teacher.pth"
    torch.save(ResNet50().state_dict(), weights)
    params = {"teacher_cache": SMALL | {"weights": str(weights)}}
    first = Catalog.load(catalog_for(tmp_path / "a", tiny_root, params=params, stages=True)).artifact("teacher_cache")
    torch.manual_seed(1)
    torch.save(ResNet50().state_dict(), weights)  # other weights, same file name
    second = Catalog.load(catalog_for(tmp_path / "b", tiny_root, params=params, stages=True)).artifact("teacher_cache")
    assert first.params.weights_sha256 != second.params.weights_sha256
    assert first.fingerprint != second.fingerprint


def test_with_weights_the_stage_reports_the_checkpoint(tiny_root, tmp_path):
    weights = tmp_path / "moco.pth.tar"
    state = {f"module.encoder_q.{k}": v for k, v in ResNet50().state_dict().items()}
    torch.save({"epoch": 800, "state_dict": state}, weights)
    catalog, summary = _run(tmp_path, tiny_root, pca_channels=8, pca_images=2, weights=str(weights))
    assert summary.notes[0].startswith(f"{weights}: moco checkpoint, {len(state)} tensors loaded")
    assert read_meta(catalog.artifact("teacher_cache").path).params["weights_sha256"] == teacher_cache.file_sha256(str(weights))


def test_missing_weights_file_is_a_clear_catalog_error(tiny_root, tmp_path):
    from pipeline.errors import CatalogError

    catalog = Catalog.load(catalog_for(tmp_path, tiny_root, params={"teacher_cache": {"weights": "/nowhere/moco.pth"}}, stages=True))
    with pytest.raises(CatalogError, match="/nowhere/moco.pth"):
        catalog.artifact("teacher_cache")


# --- MobileNetV2 as the encoder -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet(tiny_root, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tc_mobilenet"), tiny_root, encoder="mobilenet_v2", pca_channels=None)


def test_mobilenet_store_holds_its_1280_channels(mobilenet):
    catalog, _ = mobilenet
    params = catalog.artifact("teacher_cache").params
    store = RowStore.open(catalog.artifact("teacher_cache").path)
    index, _ = ensure_index(catalog)
    assert params.encoder_channels == params.channels == 1280
    assert store.array("features").shape == (8, 6, 1280, 16, 28)
    cached = teacher_cache.read(store, store.row_of(index.tokens[2]), 4, params)
    expected = _encoded(catalog, 2, 4)
    assert expected.shape == (1280, 16, 28)
    np.testing.assert_allclose(cached, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_mobilenet_weights_and_pca_are_reported(tiny_root, tmp_path):
    from models.mobilenet import MobileNetV2

    weights = tmp_path / "mobilenet_v2.pth"
    state = MobileNetV2().state_dict() | {"classifier.1.weight": torch.zeros(1000, 1280), "classifier.1.bias": torch.zeros(1000)}
    torch.save(state, weights)
    catalog, summary = _run(tmp_path, tiny_root, encoder="mobilenet_v2", pca_channels=8, pca_images=2, weights=str(weights))
    assert summary.notes[0] == f"{weights}: torchvision-mobilenet_v2 checkpoint, {len(state) - 2} tensors loaded, heads dropped: classifier"
    assert summary.notes[1].startswith("PCA 1280 -> 8 channels")
    store = RowStore.open(catalog.artifact("teacher_cache").path)
    assert store.array("features").shape == (8, 6, 8, 16, 28) and store.read_shared("pca_components").shape == (8, 1280)


def test_the_encoder_is_part_of_the_fingerprint(tiny_root, tmp_path):
    fingerprints = {
        name: Catalog.load(catalog_for(tmp_path / name, tiny_root, params={"teacher_cache": SMALL | {"encoder": name}}, stages=True)).artifact("teacher_cache").fingerprint
        for name in ("resnet50", "mobilenet_v2")
    }
    assert fingerprints["resnet50"] != fingerprints["mobilenet_v2"]


def test_encoder_channels_are_the_models_and_bound_the_pca():
    from models.mobilenet import MobileNetV2

    assert teacher_cache.ENCODER_CHANNELS == {"resnet50": ResNet50.out_channels, "mobilenet_v2": MobileNetV2.out_channels}
    assert teacher_cache.TeacherCacheParams(pca_channels=2048).channels == 2048
    with pytest.raises(ValueError, match="pca_channels 2048 exceeds the 1280 channels of mobilenet_v2"):
        teacher_cache.TeacherCacheParams(encoder="mobilenet_v2", pca_channels=2048)


def test_a_missing_mobilenet_file_says_how_to_fetch_it(tmp_path):
    with pytest.raises(ValueError, match="scripts/fetch_teacher_weights.sh") as error:
        teacher_cache.TeacherCacheParams(encoder="mobilenet_v2", weights=str(tmp_path / "mobilenet_v2-b0353104.pth"))
    assert str(tmp_path / "mobilenet_v2-b0353104.pth") in str(error.value)
