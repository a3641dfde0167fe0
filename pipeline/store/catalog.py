"""The data catalog: named sources and artifacts, as written by people in ``data_catalog.yaml``.

Loading turns the YAML into typed specs (unknown keys are errors, reported by file and dotted key
path) and resolves them into ``Source`` and ``Artifact`` objects whose fingerprints say what each
artifact *is* and whose paths say where its store lives. Nothing machine-written goes into the
catalog: completion and provenance live in each store's own metadata (``pipeline.store.stores``).

Which stages an artifact may name, and what each one is, comes from a ``StageTable``: the catalog
names no stage itself. ``pipeline.stages.Catalog`` is this class bound to hvd's stages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import CatalogError, SourceError
from pipeline.store.config_file import describe_validation_error, read_yaml
from pipeline.store.fingerprint import fingerprint, fingerprint_document
from pipeline.store.stage import StageInfo, StageTable

DEFAULT_CATALOG = "data_catalog.yaml"
SYNTH_MANIFEST = Path("synth") / "manifest.json"
SOURCE_VERSION = 1  # bump when the meaning of a source fingerprint changes
SEMANTICKITTI_VERSION = "semantickitti"  # the version a SemanticKITTI source reports


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(_Spec):
    """How scenes are split for pretraining (``pipeline.data.splits``). ``official``: the devkit's
    train (mini_train) scenes train, its val (mini_val) scenes validate. ``slidr``: nuScenes'
    official train scenes minus SLidR's 100 'parametrize' scenes train, those 100 validate.
    ``seeded``: a seeded random draw per scene name (``val_fraction``, ``seed``), for datasets whose
    scene names the devkit does not know. Fine-tuning and evaluation always use the devkit's splits
    where it knows the scenes."""

    kind: Literal["official", "slidr", "seeded"]
    val_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 0


class SourceSpec(_Spec):
    """A dataset: nuScenes-format (the default) or, with ``format: semantickitti``, a SemanticKITTI
    ``dataroot`` holding ``sequences/`` (fine-tuning and evaluation only; its split is the standard
    one by sequence, so it takes no ``version`` or ``split``). ``params`` overrides artifact params
    for this source only, keyed by artifact name (e.g. a smaller teacher input size for a tiny
    synthetic set)."""

    format: Literal["nuscenes", "semantickitti"] = "nuscenes"
    dataroot: str
    version: str
    split: SplitSpec
    description: str = ""
    params: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _semantickitti_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "semantickitti":
            return {"version": SEMANTICKITTI_VERSION, "split": {"kind": "official"}, **data}
        return data


class ArtifactSpec(_Spec):
    """A derived dataset: which stage makes it, from which other artifacts, with which params."""

    stage: str
    inputs: list[str] = []
    params: dict[str, Any] = {}
    description: str = ""


class CatalogSpec(_Spec):
    """The whole ``data_catalog.yaml``."""

    store_root: str = "stores"
    default_source: str
    sources: dict[str, SourceSpec]
    artifacts: dict[str, ArtifactSpec]


@dataclass(frozen=True)
class Source:
    """A resolved source. Its fingerprint covers name, version, split and -- for generated data --
    the generator's identity, so regenerating with another seed makes every store stale; it does not
    cover ``dataroot``, so moving the data keeps the stores valid."""

    name: str
    dataroot: Path
    version: str
    split: SplitSpec
    fingerprint: str
    synth: dict[str, Any] | None = field(default=None, hash=False)
    format: str = "nuscenes"  # or "semantickitti"

    def fingerprint_document(self) -> dict[str, Any]:
        """What ``fingerprint`` hashes."""
        identity = _source_identity(self.name, self.version, self.split, self.synth, self.format)
        return fingerprint_document("source", SOURCE_VERSION, identity, {})


@dataclass(frozen=True)
class Artifact:
    """An artifact of one source: validated params, resolved inputs, fingerprint, store path."""

    name: str
    stage: StageInfo
    source: Source
    params: BaseModel = field(hash=False)
    inputs: dict[str, Artifact] = field(hash=False)
    fingerprint: str
    path: str

    def fingerprint_inputs(self) -> dict[str, str]:
        """The fingerprints this artifact depends on, by role: ``source`` and each input's name."""
        upstream = {name: dep.fingerprint for name, dep in self.inputs.items()}
        return {"source": self.source.fingerprint, **upstream}

    def fingerprint_document(self) -> dict[str, Any]:
        """What ``fingerprint`` hashes (``hvd catalog fingerprint`` prints it)."""
        return fingerprint_document(
            self.stage.name, self.stage.version, self.params, self.fingerprint_inputs()
        )


def _source_identity(
    name: str, version: str, split: SplitSpec, synth: dict[str, Any] | None, format: str = "nuscenes"
) -> dict[str, Any]:
    identity = {"name": name, "version": version, "split": split, "synth": synth}
    return identity if format == "nuscenes" else {**identity, "format": format}  # nuScenes fingerprints unchanged


def _is_url(path: str) -> bool:
    return "://" in path


def _resolve_local(path: str, base: Path) -> Path:
    """``path`` with ``~`` expanded, made absolute against ``base`` (the catalog's directory)."""
    expanded = Path(path).expanduser()
    return Path(os.path.normpath(expanded if expanded.is_absolute() else base / expanded))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, recursively for nested mappings (so a source can change one
    field of a nested params block without restating the rest)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_synth_identity(dataroot: Path) -> dict[str, Any] | None:
    """The generator identity recorded by ``hvd data synth``; None for data not made here."""
    manifest = dataroot / SYNTH_MANIFEST
    if not manifest.is_file():
        return None
    try:
        identity = json.loads(manifest.read_text()).get("identity")
    except (OSError, ValueError, AttributeError) as exc:
        raise SourceError(f"{manifest} is unreadable ({exc}); regenerate the dataset") from exc
    if not isinstance(identity, dict):
        raise SourceError(f"{manifest} has no 'identity' object; regenerate the dataset")
    return identity


class Catalog:
    """A loaded, checked catalog. Sources and artifacts are resolved on demand (a source's
    fingerprint reads its dataset's manifest) and cached for the life of the object.

    ``stages`` is set by the subclass that binds the catalog to a table of stages
    (``pipeline.stages.Catalog``); this class cannot be loaded on its own."""

    stages: ClassVar[StageTable]

    def __init__(self, path: Path, spec: CatalogSpec) -> None:
        if not hasattr(self, "stages"):
            raise TypeError("a catalog needs its stage table: load pipeline.stages.Catalog")
        self.path = path
        self.spec = spec
        root = spec.store_root
        self.store_root: str = (
            root.rstrip("/") if _is_url(root) else str(_resolve_local(root, path.parent))
        )
        self._order = self._check()
        self._sources: dict[str, Source] = {}
        self._artifacts: dict[tuple[str, str], Artifact] = {}

    @classmethod
    def load(cls, path: Path | str | None = None) -> Catalog:
        """Read and check a catalog: ``path``, else ``$HVD_CATALOG``, else ./data_catalog.yaml."""
        chosen = Path(
            path if path is not None else os.environ.get("HVD_CATALOG") or DEFAULT_CATALOG
        )
        chosen = Path(os.path.abspath(chosen.expanduser()))
        if not chosen.exists():
            raise CatalogError(
                f"no data catalog at {chosen}: run hvd from the directory holding "
                "data_catalog.yaml (the repository root), or pass --catalog FILE "
                "(or set HVD_CATALOG)"
            )
        data = read_yaml(chosen, CatalogError)
        try:
            spec = CatalogSpec.model_validate(data)
        except ValidationError as exc:
            raise CatalogError(describe_validation_error(exc, CatalogSpec, str(chosen))) from None
        return cls(chosen, spec)

    # --- names -----------------------------------------------------------------------------------

    def _source_name(self, name: str | None) -> str:
        name = self.spec.default_source if name is None else name
        if name not in self.spec.sources:
            known = ", ".join(self.spec.sources)
            raise CatalogError(f"unknown source {name!r} in {self.path}; known sources: {known}")
        return name

    def _artifact_spec(self, name: str) -> ArtifactSpec:
        if name not in self.spec.artifacts:
            known = ", ".join(self.spec.artifacts)
            raise CatalogError(
                f"unknown artifact {name!r} in {self.path}; known artifacts: {known}"
            )
        return self.spec.artifacts[name]

    def _check(self) -> list[str]:
        """Cross-references the schema cannot express; returns artifact names, inputs first."""
        where = str(self.path)
        sources, artifacts = self.spec.sources, self.spec.artifacts
        if self.spec.default_source not in sources:
            raise CatalogError(
                f"{where}: default_source {self.spec.default_source!r} is not among the sources "
                f"({', '.join(sources)})"
            )
        if "source" in artifacts:
            raise CatalogError(f"{where}: 'source' is reserved and cannot name an artifact")
        for name, art in artifacts.items():
            if art.stage not in self.stages.names:
                raise CatalogError(
                    f"{where}: artifacts.{name}.stage: unknown stage {art.stage!r} "
                    f"(known stages: {', '.join(self.stages.names)})"
                )
            for dep in art.inputs:
                if dep not in artifacts:
                    raise CatalogError(
                        f"{where}: artifacts.{name}.inputs: {dep!r} is not an artifact "
                        f"(known artifacts: {', '.join(artifacts)})"
                    )
        for src_name, src in sources.items():
            for art_name in src.params:
                if art_name not in artifacts:
                    raise CatalogError(
                        f"{where}: sources.{src_name}.params.{art_name}: no artifact of that name "
                        f"(known artifacts: {', '.join(artifacts)})"
                    )
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, trail: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                cycle = " -> ".join([*trail[trail.index(name) :], name])
                raise CatalogError(f"{where}: artifact inputs form a cycle: {cycle}")
            state[name] = "visiting"
            for dep in artifacts[name].inputs:
                visit(dep, [*trail, name])
            state[name] = "done"
            order.append(name)

        for name in artifacts:
            visit(name, [])
        return order

    # --- resolution ------------------------------------------------------------------------------

    def source(self, name: str | None = None) -> Source:
        """The source ``name`` (default: the catalog's ``default_source``)."""
        name = self._source_name(name)
        if name not in self._sources:
            spec = self.spec.sources[name]
            dataroot = _resolve_local(spec.dataroot, self.path.parent)
            synth = _read_synth_identity(dataroot)
            identity = _source_identity(name, spec.version, spec.split, synth, spec.format)
            fp = fingerprint("source", SOURCE_VERSION, identity, {})
            self._sources[name] = Source(name, dataroot, spec.version, spec.split, fp, synth, spec.format)
        return self._sources[name]

    def artifact(self, name: str, source: str | None = None) -> Artifact:
        """Artifact ``name`` of ``source``, with its inputs resolved recursively."""
        self._artifact_spec(name)
        return self._build(name, self.source(source))

    def artifacts(self, source: str | None = None) -> list[Artifact]:
        """Every artifact of ``source``, inputs before the artifacts that read them."""
        src = self.source(source)
        return [self._build(name, src) for name in self._order]

    def stage_root(self, source: str | None = None) -> str:
        """The directory (or URL prefix) holding every store of ``source``."""
        return f"{self.store_root}/{self._source_name(source)}"

    def _build(self, name: str, src: Source) -> Artifact:
        key = (src.name, name)
        if key not in self._artifacts:
            spec = self.spec.artifacts[name]
            stage = self.stages.info(spec.stage)
            inputs = {dep: self._build(dep, src) for dep in spec.inputs}
            params = self._params(name, spec, stage, src)
            upstream = {"source": src.fingerprint, **{d: a.fingerprint for d, a in inputs.items()}}
            fp = fingerprint(stage.name, stage.version, params, upstream)
            path = f"{self.stage_root(src.name)}/{name}-{fp[:16]}{stage.suffix}"
            self._artifacts[key] = Artifact(name, stage, src, params, inputs, fp, path)
        return self._artifacts[key]

    def _params(self, name: str, spec: ArtifactSpec, stage: StageInfo, src: Source) -> BaseModel:
        """The artifact's params merged with the source's overrides, validated by the stage."""
        overrides = self.spec.sources[src.name].params.get(name, {})
        try:
            return stage.params.model_validate(_merge(spec.params, overrides))
        except ValidationError as exc:
            where = (
                f"{self.path}: artifact {name!r} of source {src.name!r} "
                f"(artifacts.{name}.params merged with sources.{src.name}.params.{name})"
            )
            raise CatalogError(describe_validation_error(exc, stage.params, where)) from None
