"""Catalog loading: clear errors, path resolution, and fingerprints that follow what matters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.errors import CatalogError, SourceError
from pipeline.stages import Catalog

WriteCatalog = Callable[..., Path]
OVERRIDE = "split: {kind: seeded}\n    params:\n      index: {%s: true}"


def _error(path: Path) -> str:
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    return str(info.value)


def test_unknown_key_names_the_file_and_the_dotted_path(
    write_catalog: WriteCatalog, small_catalog: str
) -> None:
    path = write_catalog(
        small_catalog.replace("version: v1.0-mini\n", "spilt: x\n    version: v1.0-mini\n", 1)
    )
    message = _error(path)
    assert str(path) in message
    assert "unknown key `sources.alpha.spilt`" in message
    assert "split" in message.split("expected one of:")[1]


def test_yaml_syntax_error_names_the_line(write_catalog: WriteCatalog, small_catalog: str) -> None:
    text = small_catalog.replace("default_source: alpha", "default_source: alpha\n  oops: [1")
    message = _error(write_catalog(text))
    assert "catalog.yaml:3:" in message
    assert "YAML syntax error" in message


def test_duplicate_keys_are_refused(write_catalog: WriteCatalog, small_catalog: str) -> None:
    assert "duplicate key 'alpha'" in _error(
        write_catalog(small_catalog.replace("  beta:", "  alpha:"))
    )


def test_missing_file_says_how_to_get_one(tmp_path: Path) -> None:
    message = _error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "--catalog" in message


def test_load_without_a_path_reads_hvd_catalog(
    write_catalog: WriteCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_catalog()
    monkeypatch.setenv("HVD_CATALOG", str(path))
    assert Catalog.load().path == path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("default_source: alpha", "default_source: gamma", "default_source 'gamma'"),
        ("stage: index", "stage: indx", "unknown stage 'indx'"),
        ("stage: index", "stage: index\n    inputs: [index]", "cycle: index -> index"),
        ("stage: index", "stage: index\n    inputs: [sp]", "'sp' is not an artifact"),
        (
            "split: {kind: seeded}",
            OVERRIDE.replace("index", "idx") % "a",
            "sources.beta.params.idx",
        ),
        ("val_fraction: 0.25", "val_fraction: 1.5", "sources.alpha.split.val_fraction"),
        ("  index:\n", "  source:\n", "'source' is reserved"),
    ],
)
def test_inconsistent_catalogs_are_refused(
    write_catalog: WriteCatalog, small_catalog: str, old: str, new: str, expected: str
) -> None:
    assert old in small_catalog
    assert expected in _error(write_catalog(small_catalog.replace(old, new)))


def test_unknown_source_and_artifact_list_the_known_ones(write_catalog: WriteCatalog) -> None:
    catalog = Catalog.load(write_catalog())
    with pytest.raises(CatalogError, match="unknown source 'gamma'.*alpha, beta"):
        catalog.source("gamma")
    with pytest.raises(CatalogError, match="unknown artifact 'teacher'.*index"):
        catalog.artifact("teacher")


def test_paths_resolve_against_the_catalog_directory(
    write_catalog: WriteCatalog, small_catalog: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_catalog(small_catalog.replace("data/beta", "~/nus"), name="conf/catalog.yaml")
    catalog = Catalog.load(path)
    assert catalog.source("alpha").dataroot == tmp_path / "conf" / "data" / "alpha"
    assert catalog.source("beta").dataroot == tmp_path / "home" / "nus"
    assert catalog.store_root == str(tmp_path / "conf" / "stores")
    assert catalog.stage_root("beta") == f"{tmp_path}/conf/stores/beta"


def test_url_store_root_is_kept(write_catalog: WriteCatalog, small_catalog: str) -> None:
    catalog = Catalog.load(write_catalog(small_catalog.replace("stores", "s3://bucket/hvd/")))
    assert catalog.artifact("index").path.startswith("s3://bucket/hvd/alpha/index-")


def test_artifact_path_contains_the_fingerprint(write_catalog: WriteCatalog) -> None:
    catalog = Catalog.load(write_catalog())
    art = catalog.artifact("index")
    assert art.source.name == "alpha"
    assert len(art.fingerprint) == 64
    assert art.path == f"{catalog.stage_root('alpha')}/index-{art.fingerprint[:16]}.parquet"
    assert art.fingerprint_inputs() == {"source": art.source.fingerprint}
    assert catalog.artifact("index", "beta").fingerprint != art.fingerprint


def test_source_overrides_change_fingerprint_and_path(
    write_catalog: WriteCatalog, small_catalog: str
) -> None:
    plain = Catalog.load(write_catalog()).artifact("index", "beta")
    text = small_catalog.replace("split: {kind: seeded}", OVERRIDE % "allow_missing")
    changed = Catalog.load(write_catalog(text, name="o.yaml")).artifact("index", "beta")
    assert plain.params.allow_missing is False and changed.params.allow_missing is True
    assert changed.fingerprint != plain.fingerprint
    assert changed.path != plain.path and changed.fingerprint[:16] in changed.path


def test_bad_override_names_file_source_artifact_and_key(
    write_catalog: WriteCatalog, small_catalog: str
) -> None:
    path = write_catalog(small_catalog.replace("split: {kind: seeded}", OVERRIDE % "allow_mising"))
    catalog = Catalog.load(path)
    catalog.artifact("index", "alpha")  # the other source is unaffected
    with pytest.raises(CatalogError) as info:
        catalog.artifact("index", "beta")
    for part in (
        str(path),
        "'beta'",
        "'index'",
        "`allow_mising`",
        "expected one of: allow_missing",
    ):
        assert part in str(info.value)


def test_synth_manifest_identity_changes_the_fingerprints(
    write_catalog: WriteCatalog, tmp_path: Path
) -> None:
    path = write_catalog()
    plain = Catalog.load(path).artifact("index")
    assert plain.source.synth is None
    seen = {plain.source.fingerprint, plain.fingerprint}
    manifest = tmp_path / "data" / "alpha" / "synth" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    for seed in (0, 1):
        manifest.write_text(json.dumps({"identity": {"preset": "tiny", "seed": seed}, "frames": 8}))
        art = Catalog.load(path).artifact("index")
        assert art.source.synth == {"preset": "tiny", "seed": seed}
        seen |= {art.source.fingerprint, art.fingerprint}
    assert len(seen) == 6  # three datasets, each with its own source and index fingerprint
    manifest.write_text(json.dumps({"frames": 8}))
    with pytest.raises(SourceError, match="identity"):
        Catalog.load(path).source("alpha")


def test_artifacts_come_in_dependency_order(
    write_catalog: WriteCatalog, small_catalog: str
) -> None:
    early = "  early:\n    stage: index\n"
    text = small_catalog + "  late:\n    stage: index\n    inputs: [early]\n" + early
    catalog = Catalog.load(write_catalog(text))
    names = [art.name for art in catalog.artifacts()]
    assert names.index("early") < names.index("late")
    late = catalog.artifact("late")
    assert late.inputs["early"] is catalog.artifact("early")
    assert late.fingerprint_inputs()["early"] == catalog.artifact("early").fingerprint
    # an input's params reach every artifact downstream
    changed = text.replace(early, early + "    params: {allow_missing: true}\n")
    other = Catalog.load(write_catalog(changed, name="c2.yaml")).artifact("late")
    assert other.params == late.params and other.fingerprint != late.fingerprint


def test_repository_catalog_loads() -> None:
    catalog = Catalog.load(Path(__file__).resolve().parents[3] / "data_catalog.yaml")
    assert catalog.spec.default_source == "synth-demo"
    expected = {"synth-tiny", "synth-demo", "synth-transfer", "synth-mini", "synth-gpu", "nuscenes", "nuscenes-mini", "synth-kitti-tiny", "synth-kitti-demo", "semantickitti"}
    assert set(catalog.spec.sources) == expected
    assert catalog.source("nuscenes").split.kind == "slidr"
    # the GPU check's source: the GPU image has no cv2.ximgproc, so the reference's SLIC
    assert catalog.artifact("superpixels", "synth-gpu").params.algorithm == "skimage_slic"
    assert catalog.artifact("superpixels", "synth-demo").params.algorithm == "opencv_slic"
    assert {name for name in expected if catalog.source(name).format == "semantickitti"} == {"synth-kitti-tiny", "synth-kitti-demo", "semantickitti"}
    names = [art.name for art in catalog.artifacts("nuscenes")]
    assert set(names) == {"index", "superpixels", "correspondences", "depth_targets", "teacher_cache"}
    assert names.index("correspondences") < names.index("depth_targets")  # inputs first
