"""Fingerprints: what an artifact *is*, as one sha256 over its stage, version, params and inputs.

A store's path contains its fingerprint, so two parameter sets never share a store and a stale store
is recognised by its name alone. For that the hash must depend only on *values*: never on dict
insertion order, ``PYTHONHASHSEED``, the container type (tuple vs list), the numpy scalar type or
the platform's path separator. ``canonical`` maps every value we accept to one JSON form and refuses
the rest (NaN has no equality, so it cannot be part of an identity).

Whether ``6`` and ``6.0`` are the same parameter is decided earlier, by the typed pydantic model
that validates the params: hashing keeps ints and floats apart, as JSON does.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from pydantic import BaseModel


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON values (dict with str keys, list, str, int, float, bool, None).

    Pydantic models become their JSON dump, dataclasses their field dict, numpy scalars and arrays
    Python numbers and nested lists, paths POSIX strings, tuples and sets lists (sets sorted), and
    ``-0.0`` becomes ``0.0``. Raises ``ValueError`` for NaN or infinity and ``TypeError`` for values
    that have no canonical form (non-str dict keys, arbitrary objects).
    """
    if isinstance(obj, BaseModel):
        return canonical(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return canonical({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, enum.Enum):
        return canonical(obj.value)
    if isinstance(obj, np.ndarray):
        return canonical(obj.tolist())
    if isinstance(obj, np.generic):
        return canonical(obj.item())
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} cannot be fingerprinted: params must be finite numbers")
        return 0.0 if obj == 0.0 else float(obj)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(
                    f"dict key {key!r} is not a str: fingerprinted mappings need str keys"
                )
            out[key] = canonical(obj[key])
        return dict(sorted(out.items()))
    if isinstance(obj, (list, tuple)):
        return [canonical(item) for item in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((canonical(item) for item in obj), key=canonical_json)
    raise TypeError(f"cannot fingerprint a value of type {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    """The canonical form of ``obj`` as compact, key-sorted, ASCII-only JSON: the bytes we hash."""
    return json.dumps(
        canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def fingerprint_document(
    stage: str, version: int, params: Any, inputs: Mapping[str, str]
) -> dict[str, Any]:
    """The canonical document a fingerprint hashes (shown by ``hvd catalog fingerprint``)."""
    return canonical({"stage": stage, "version": version, "params": params, "inputs": dict(inputs)})


def fingerprint(stage: str, version: int, params: Any, inputs: Mapping[str, str]) -> str:
    """sha256 hex of a stage's identity: its name, ``VERSION``, params and its inputs' fingerprints.

    ``inputs`` maps an input's role (an artifact name, or ``"source"``) to that input's fingerprint,
    so a change anywhere upstream changes every fingerprint downstream.
    """
    document = fingerprint_document(stage, version, params, inputs)
    return hashlib.sha256(canonical_json(document).encode("ascii")).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """sha256 hex of a file's bytes, read in chunks (model weights can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
