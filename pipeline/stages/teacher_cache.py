"""The teacher cache: the frozen image encoder's output for every camera image, computed once and
read by training instead of running the teacher on every step (docs/METHOD.md section 5).

Each full image is resized to ``input_size`` and encoded by the chosen ``encoder``, dilated to
``output_stride``: a ResNet-50 (``models.resnet``, 2048 channels) with the user's self-supervised
weights, or a MobileNetV2 (``models.mobilenet``, 1280 channels) with torchvision's ImageNet weights
(``scripts/fetch_teacher_weights.sh``). The (C, h, w) features, C = ``encoder_channels``, are
stored as float16 (or bfloat16 bits), one chunk per image, optionally projected to
``pca_channels`` with a PCA basis fitted once on a sample of images and kept in the store's
``shared`` group (``pca_mean``, ``pca_components``). Without weights, a seeded random initialisation
stands in: for trying the pipeline, not for results.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from pipeline.data.sensor_data import load_image
from pipeline.errors import StoreError
from pipeline.store.rowstore import ArraySpec, RowStore
from pipeline.store.stage import StageInfo

VERSION = 1
N_CAMERAS = 6
ENCODER_CHANNELS = {"resnet50": 2048, "mobilenet_v2": 1280}
MOBILENET_WEIGHTS = "mobilenet_v2-b0353104.pth"  # torchvision's file, as scripts/fetch_teacher_weights.sh saves it
RANDOM_WEIGHTS_WARNING = "teacher weights: RANDOM initialisation (no checkpoint given) -- these features are for trying the pipeline, not for results"


class TeacherCacheParams(BaseModel):
    """``encoder``: the frozen image network. ``weights``: a checkpoint for it -- for ``resnet50``
    a torchvision, MoCo, SwAV, DeepCluster-v2 or DINO file; for ``mobilenet_v2`` torchvision's
    ImageNet file -- its sha256 part of the fingerprint; None: random initialisation from ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: Literal["resnet50", "mobilenet_v2"] = "resnet50"
    weights: str | None = None
    allow_mismatch: bool = False
    seed: int = 0
    input_size: tuple[int, int] = (224, 416)
    output_stride: Literal[4, 8, 16, 32] = 4
    pca_channels: int | None = Field(None, ge=1)
    pca_images: int = Field(32, ge=2)
    dtype: Literal["float16", "bfloat16"] = "float16"

    @model_validator(mode="after")
    def _check(self) -> TeacherCacheParams:
        if self.weights is not None and not os.path.isfile(self.weights):
            raise ValueError(missing_weights_message(self.weights, self.encoder))
        if self.pca_channels is not None and self.pca_channels > self.encoder_channels:
            raise ValueError(f"pca_channels {self.pca_channels} exceeds the {self.encoder_channels} channels of {self.encoder}: choose at most {self.encoder_channels}")
        return self

    @computed_field
    @cached_property
    def weights_sha256(self) -> str | None:
        """Hashed once per params object, when the fingerprint needs it (workers never do)."""
        return None if self.weights is None else file_sha256(self.weights)

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_size[0] // self.output_stride, self.input_size[1] // self.output_stride

    @property
    def encoder_channels(self) -> int:
        """Channels of the encoder's output: 2048 (ResNet-50) or 1280 (MobileNetV2)."""
        return ENCODER_CHANNELS[self.encoder]

    @property
    def channels(self) -> int:
        """Channels stored per image: the PCA's, else the encoder's."""
        return self.pca_channels or self.encoder_channels


STAGE = StageInfo(
    name="teacher_cache",
    version=VERSION,
    params=TeacherCacheParams,
    suffix=".zarr",
    description="frozen image-encoder features per camera image (ResNet-50: 2048, MobileNetV2: 1280 channels; float16, optional PCA)",
)


def reads(params: TeacherCacheParams) -> tuple[str, ...]:
    """The input files a row is computed from: a changed image makes its row stale."""
    return ("cams",)


def missing_weights_message(path: str, encoder: str = "resnet50") -> str:
    """What to do when the weights file is not there."""
    text = f"teacher weights {path} not found (give an absolute path, or one relative to where hvd runs)"
    if encoder == "mobilenet_v2" or os.path.basename(path) == MOBILENET_WEIGHTS:
        text += f"; torchvision's MobileNetV2 weights are fetched by scripts/fetch_teacher_weights.sh (into data/weights/{MOBILENET_WEIGHTS})"
    return text


def file_sha256(path: str) -> str:
    """sha256 of a weights file (read in full: a size or timestamp cannot prove the content)."""
    if not os.path.isfile(path):
        raise ValueError(missing_weights_message(path))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def specs(params: TeacherCacheParams, index) -> dict[str, ArraySpec]:
    h, w = params.grid
    dtype = "float16" if params.dtype == "float16" else "uint16"  # bfloat16 kept as its bits
    return {"features": ArraySpec((N_CAMERAS, params.channels, h, w), dtype, chunk=(1, params.channels, h, w))}


# --- the encoder, once per process -----------------------------------------------------------------


@lru_cache(maxsize=2)
def encoder(params: TeacherCacheParams):
    """(frozen encoder on its device, load report or None)."""
    import torch

    from models.checkpoints import load_encoder_weights
    from models.mobilenet import MobileNetV2
    from models.resnet import ResNet50, frozen_teacher

    torch.manual_seed(params.seed)
    match params.encoder:
        case "resnet50":
            model = ResNet50(output_stride=params.output_stride)
        case "mobilenet_v2":
            model = MobileNetV2(output_stride=params.output_stride)
    report = load_encoder_weights(model, params.weights, allow_mismatch=params.allow_mismatch) if params.weights else None
    model = frozen_teacher(model)
    if torch.cuda.is_available():
        model = model.cuda()
    return model.to(memory_format=torch.channels_last), report


_CPU_ENCODE = threading.Lock()


def encode(params: TeacherCacheParams, images: np.ndarray) -> np.ndarray:
    """(B, C, h, w) float32 features (C = ``encoder_channels``) of (B, H, W, 3) uint8 images
    already at ``input_size``. Channels-last everywhere; float16 autocast on a GPU; float32 on the
    CPU, where channels-last is 1.3x faster than NCHW and bfloat16 would exceed float16 storage
    precision (bench/teacher.py, measured with ResNet-50).

    On the CPU the network runs on one thread: its convolutions round differently with another
    thread count, and the cache must not depend on where it was computed. Dask workers run one
    thread each (distributed starts them with OMP_NUM_THREADS=1, and so does the driver once it
    has started a local cluster), while a driver fitting the PCA for a remote cluster, or an
    in-process run, would otherwise use every core: a PCA basis fitted there differed in the last
    bits, and so did every row. Throughput comes from one worker process per core instead."""
    import torch

    model, _ = encoder(params)
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        if torch.cuda.is_available():
            x = x.cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16):
                out = model(x)
        else:
            with _CPU_ENCODE:  # the thread count is per process: one encode at a time changes it
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    out = model(x.contiguous(memory_format=torch.channels_last))
                finally:
                    torch.set_num_threads(threads)
    return out.float().contiguous().cpu().numpy()


def _to_storage(features: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return features.astype(np.float16)
    import torch

    return torch.from_numpy(features).to(torch.bfloat16).view(torch.uint16).numpy()


def _from_storage(stored: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return stored.astype(np.float32)
    import torch

    return torch.from_numpy(stored.astype(np.uint16)).view(torch.bfloat16).float().numpy()


def _images(record: dict, params: TeacherCacheParams) -> np.ndarray:
    return np.stack([load_image(path, params.input_size) for path in record["cam_paths"]])


# --- PCA ------------------------------------------------------------------------------------------


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, C', h, w) coordinates in the PCA basis (C the encoder's channels)."""
    return np.einsum("kc,bchw->bkhw", components, features - mean[None, :, None, None], optimize=True)


def restore(codes: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(..., C', h, w) -> (..., C, h, w): the PCA reconstruction (C the encoder's channels)."""
    return np.einsum("kc,...khw->...chw", components, codes, optimize=True) + mean[:, None, None]


def pca_split(keyframes: int, pca_images: int) -> tuple[int, int]:
    """(images the basis is fitted on, images measuring it) for a source of ``keyframes``: with at
    least 2 * ``pca_images`` keyframes, ``pca_images`` each (one camera of a keyframe each); with
    fewer, the distinct images of all cameras are drawn from, 2 * ``pca_images`` or as many as
    there are, and the fit takes ``pca_images`` of them or all but one, so that at least one image
    always measures the basis (a keyframe has six)."""
    if keyframes < 1:
        raise ValueError("no keyframes to fit the PCA basis on")
    total = 2 * pca_images if keyframes >= 2 * pca_images else min(2 * pca_images, keyframes * N_CAMERAS)
    fitted = min(pca_images, total - 1)
    return fitted, total - fitted


def _fit_pca(index, params: TeacherCacheParams, rng: np.random.Generator) -> dict:
    """Basis from the images of ``pca_split`` (a random subset of each one's feature vectors), and
    its quality on the others: explained variance and reconstruction error. Deterministic in
    ``rng``; with enough keyframes, 2 * ``pca_images`` random keyframes, one random camera each."""
    eligible = np.flatnonzero(np.asarray(index.column("problem")) == "")  # never a keyframe the index refused
    if not len(eligible):
        raise StoreError(f"every keyframe of {getattr(index, 'path', 'the index')} is refused by the index: no image to fit the PCA basis on (`hvd prep index` lists why)")
    fitted, held = pca_split(len(eligible), params.pca_images)
    one_per_keyframe = len(eligible) >= 2 * params.pca_images
    if one_per_keyframe:
        rows = rng.choice(len(eligible), size=fitted + held, replace=False)
    else:
        images = rng.choice(len(eligible) * N_CAMERAS, size=fitted + held, replace=False)
    samples = []
    for i in range(fitted + held):
        row, cam = (int(rows[i]), int(rng.integers(N_CAMERAS))) if one_per_keyframe else divmod(int(images[i]), N_CAMERAS)
        record = index.record(int(eligible[row]))
        feats = encode(params, load_image(record["cam_paths"][cam], params.input_size)[None])[0]
        vectors = feats.reshape(feats.shape[0], -1).T
        samples.append(vectors[rng.choice(len(vectors), size=min(len(vectors), 1024), replace=False)].astype(np.float64))
    fit, held_out = np.concatenate(samples[:fitted]), np.concatenate(samples[fitted:])
    mean = fit.mean(axis=0)
    cov = np.cov(fit - mean, rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][: params.pca_channels]
    components = vectors[:, order].T  # (C', C), orthonormal rows
    centred = held_out - mean
    residual = centred - (centred @ components.T) @ components
    error = float((residual**2).sum() / (centred**2).sum())
    return {
        "mean": mean.astype(np.float32),
        "components": components.astype(np.float32),
        "explained_variance": float(values[order].sum() / values.sum()),
        "reconstruction_error": error,
        "images": fitted,
        "held_out_images": held,
    }


def pca_note(stats: dict, params: TeacherCacheParams, keyframes: int) -> str:
    """What the stage reports about its PCA basis (``stats``: the store's ``pca`` attributes)."""
    note = (
        f"PCA {params.encoder_channels} -> {params.pca_channels} channels: explained variance {stats['explained_variance']:.3f}, "
        f"relative reconstruction error {stats['reconstruction_error']:.3f} on "
    )
    if "held_out_images" not in stats:  # a basis fitted before the counts were recorded
        return note + "held-out images"
    note += f"{stats['held_out_images']} held-out image(s), fitted on {stats['images']}"
    if stats["images"] < params.pca_images:
        note += f" (fewer than pca_images {params.pca_images}: {keyframes} keyframe(s) have {keyframes * N_CAMERAS} images)"
    return note


def prepare(store: RowStore, params: TeacherCacheParams, index) -> list[str]:
    """Driver side, before any row: fit and store the PCA basis once (never refitted, so rows
    added later share it); return notes for the user."""
    _, report = encoder(params)
    notes = [report.summary() if report else RANDOM_WEIGHTS_WARNING]
    if params.pca_channels:
        if not store.has_shared("pca_components"):
            pca = _fit_pca(index, params, np.random.default_rng(params.seed))
            store.write_shared("pca_mean", pca["mean"])
            store.write_shared("pca_components", pca["components"])
            store.group.attrs["pca"] = {k: pca[k] for k in ("explained_variance", "reconstruction_error", "images", "held_out_images")}
        notes.append(pca_note(store.group.attrs["pca"], params, len(index)))
    return notes


def compute(record: dict, params: TeacherCacheParams, inputs=None, store: RowStore | None = None) -> dict[str, np.ndarray]:
    features = encode(params, _images(record, params))
    if params.pca_channels:
        features = project(features, store.read_shared("pca_mean"), store.read_shared("pca_components"))
    return {"features": _to_storage(features, params.dtype)}


# --- reading it back ------------------------------------------------------------------------------


def read(store: RowStore, row: int, cam: int, params: TeacherCacheParams, restore_channels: bool = False) -> np.ndarray:
    """(C, h, w) float32 cached features of one camera image of a store row; with
    ``restore_channels`` the PCA is undone to the encoder's ``encoder_channels``."""
    stored = store.read_entry("features", row, cam)  # verified against the row's checksum
    features = _from_storage(stored, params.dtype)
    if params.pca_channels and restore_channels:
        features = restore(features, store.read_shared("pca_mean"), store.read_shared("pca_components"))
    return features
