"""Fingerprints depend on values only, and on every value that defines an artifact."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import numpy as np
import pytest
from pydantic import BaseModel

from pipeline.store.fingerprint import canonical, canonical_json, fingerprint, sha256_file

REPO = Path(__file__).resolve().parents[3]

PARAMS = {"size": [224, 416], "classes": {"car", "road", "pole", "tree"}, "scale": 0.5}
INPUTS = {"source": "a" * 64, "superpixels": "b" * 64}

_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pipeline.store.fingerprint import fingerprint
params = {"size": [224, 416], "classes": {"car", "road", "pole", "tree"}, "scale": 0.5}
print(fingerprint("teacher-cache", 3, params, {"superpixels": "b" * 64, "source": "a" * 64}))
"""


def _fingerprint_in_child(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(REPO)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_identical_across_processes_with_different_hash_seeds() -> None:
    # The set in PARAMS iterates in a hash-seed-dependent order; the fingerprint must not.
    here = fingerprint("teacher-cache", 3, PARAMS, INPUTS)
    assert _fingerprint_in_child("0") == here
    assert _fingerprint_in_child("4242") == here


def test_independent_of_dict_key_order() -> None:
    forward = {"a": 1, "b": {"x": 1.5, "y": [1, 2]}, "c": None}
    backward = {"c": None, "b": {"y": [1, 2], "x": 1.5}, "a": 1}
    assert list(forward) != list(backward)
    assert fingerprint("s", 1, forward, {"p": "1", "q": "2"}) == fingerprint(
        "s", 1, backward, {"q": "2", "p": "1"}
    )


@pytest.mark.parametrize(
    "changed",
    [
        dict(stage="teacher-cache-v2"),
        dict(version=4),
        dict(params={**PARAMS, "scale": 0.25}),
        dict(params={**PARAMS, "size": [224, 417]}),
        dict(params={**PARAMS, "classes": {"car", "road", "pole"}}),
        dict(params={**PARAMS, "extra": False}),
        dict(inputs={**INPUTS, "superpixels": "c" * 64}),
        dict(inputs={**INPUTS, "depth-targets": "d" * 64}),
    ],
)
def test_changes_with_every_part_of_the_identity(changed: dict) -> None:
    base = dict(stage="teacher-cache", version=3, params=PARAMS, inputs=INPUTS)
    assert fingerprint(**{**base, **changed}) != fingerprint(**base)


def test_canonical_forms_of_equivalent_values_agree() -> None:
    assert canonical((1, 2, (3,))) == [1, 2, [3]]
    assert canonical({"v": np.float32(0.5), "n": np.int64(7), "b": np.bool_(True)}) == {
        "b": True,
        "n": 7,
        "v": 0.5,
    }
    assert canonical(np.arange(4).reshape(2, 2)) == [[0, 1], [2, 3]]
    assert canonical(Path("a/b/c.txt")) == "a/b/c.txt"
    assert canonical(PureWindowsPath(r"a\b")) == "a/b"
    assert canonical_json(-0.0) == canonical_json(0.0) == "0.0"
    # ints and floats stay apart: the typed params model decides which one a field holds
    assert canonical_json(6) != canonical_json(6.0)


def test_models_and_dataclasses_hash_like_their_fields() -> None:
    class Params(BaseModel):
        size: tuple[int, int] = (224, 416)
        name: str = "dino"

    @dataclasses.dataclass(frozen=True)
    class Same:
        name: str = "dino"
        size: tuple[int, int] = (224, 416)

    as_dict = {"name": "dino", "size": [224, 416]}
    assert canonical_json(Params()) == canonical_json(Same()) == canonical_json(as_dict)
    assert canonical_json(Params(name="dinov2")) != canonical_json(as_dict)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("nan"), [1.0, -np.inf]])
def test_canonical_rejects_non_finite_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        canonical({"x": bad})


@pytest.mark.parametrize("bad", [{1: "a"}, {("a",): 1}, object()])
def test_canonical_rejects_values_without_a_canonical_form(bad: object) -> None:
    with pytest.raises(TypeError):
        canonical(bad)


def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    data = bytes(range(256)) * 41  # 10496 bytes: not a multiple of the chunk size
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_size=1000) == expected
    assert sha256_file(str(path)) == expected
