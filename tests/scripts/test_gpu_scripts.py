"""The GPU scripts' CPU-side checks: the MinkowskiEngine patches apply to its 0.5.4 source and do what
they say, the CUDA build refuses what cannot work with a clear message, and the GPU check's summary
reads its state folder right (the nuScenes epoch estimate included)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PATCHES = sorted((REPO / "scripts" / "minkowski" / "patches").glob("*.patch"))
ME_SDIST_SHA256 = "b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94"


def _script_value(name: str) -> str:
    for line in (REPO / "scripts" / "build_minkowski_cuda.sh").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} not in build_minkowski_cuda.sh")


@pytest.fixture(scope="module")
def me_source(tmp_path_factory) -> Path:
    """MinkowskiEngine 0.5.4's sdist (carried in .whl/, else from PyPI), unpacked."""
    assert _script_value("ME_SHA256") == ME_SDIST_SHA256
    sdist = REPO / ".whl" / "MinkowskiEngine-0.5.4.tar.gz"
    work = tmp_path_factory.mktemp("me")
    if not sdist.exists():
        try:
            with urllib.request.urlopen(_script_value("ME_URL"), timeout=60) as response:
                data = response.read()
        except OSError as e:
            pytest.skip(f"MinkowskiEngine's sdist is neither in .whl/ nor downloadable ({e})")
        sdist = work / "MinkowskiEngine-0.5.4.tar.gz"
        sdist.write_bytes(data)
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == ME_SDIST_SHA256
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    return work / "MinkowskiEngine-0.5.4"


def test_every_patch_says_why_before_its_diff():
    assert [p.name for p in PATCHES] == ["0001-thrust-includes.patch", "0002-thrust-unary-function.patch", "0003-nvtx3-from-toolkit.patch", "0004-cuda13-prefetch-location.patch", "0005-shared-ptr-without-adl.patch", "0006-spmm-include-order.patch"]
    for patch in PATCHES:
        text = patch.read_text()
        comment = text[: text.index("\n--- a/")]
        assert "Why:" in comment and "nvcc" in comment and len(comment.split()) > 40, patch.name


def test_patches_apply_to_minkowski_engine_0_5_4_and_fix_what_they_name(me_source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(me_source, src)
    for patch in PATCHES:
        # as scripts/build_minkowski_cuda.sh applies them, outside any repository
        run = subprocess.run(["git", "apply", "-p1", "--verbose", str(patch)], cwd=src, capture_output=True, text=True, env=os.environ | {"GIT_CEILING_DIRECTORIES": str(tmp_path)})
        assert run.returncode == 0, (patch.name, run.stderr)
    s = src / "src"
    assert "thrust::unary_function" not in (s / "coordinate_map_functors.cuh").read_text()
    ranges = (s / "3rdparty" / "cudf" / "detail" / "nvtx" / "ranges.hpp").read_text()
    assert "#include <nvtx3/nvtx3.hpp>" in ranges and "domain_thread_range" not in ranges
    gpu = (s / "coordinate_map_gpu.cu").read_text()
    assert "#include <thrust/remove.h>" in gpu and "#include <thrust/unique.h>" in gpu
    cum = (s / "3rdparty" / "concurrent_unordered_map.cuh").read_text()
    assert "#include <thrust/execution_policy.h>" in cum
    assert "cudaMemLocation location{}" in cum and cum.count("prefetch_to_device(") == 4  # the helper and its three calls
    assert "std::shared_ptr<map_type>(map.release(), deleter)" in (s / "coordinate_map_gpu.cuh").read_text()
    spmm = (s / "spmm.cu").read_text()
    assert "#include <thrust/sort.h>" in spmm and "#include <thrust/reduce.h>" in spmm
    assert spmm.index("#include <torch/extension.h>") < spmm.index("#include <ATen/cuda/CUDAUtils.h>")
    # a second application fails: the patches are not empty and the tree really changed
    again = subprocess.run(["git", "apply", "--check", "-p1", str(PATCHES[0])], cwd=src, capture_output=True, text=True, env=os.environ | {"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert again.returncode != 0


def test_the_cuda_build_refuses_a_cpu_torch_by_name():
    pytest.importorskip("torch")
    import torch

    if torch.version.cuda:
        pytest.skip("this torch is a CUDA build")
    run = subprocess.run(["bash", str(REPO / "scripts" / "build_minkowski_cuda.sh"), "--python", sys.executable], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"torch {torch.__version__}, a CPU-only build" in run.stderr


def test_the_cuda_build_refuses_an_unknown_blas():
    run = subprocess.run(["bash", str(REPO / "scripts" / "build_minkowski_cuda.sh"), "--blas", "mkl"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "--blas takes system, scipy-openblas32 or auto, not mkl" in run.stderr


def _gpu_summary():
    spec = importlib.util.spec_from_file_location("gpu_summary", REPO / "bench" / "gpu_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_summary_of_a_partial_check(tmp_path):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    (state / "steps.tsv").write_text("env\tok\t3\nwheels\tok\t41\ntests\tFAILED (exit 1)\t50\ntests\tok\t47\nbench-train\tok\t95\n")
    (state / "logs" / "env.log").write_text("GPU NVIDIA H200 | 140 GiB | capability 9.0\n")
    (state / "logs" / "bench-train.log").write_text(
        "| training step | examples/s | peak memory | \n|---|---|---|\n"
        "| reference: frozen teacher on the raw images every step | 2.500 | 30720 MiB |\n"
        "| ours: teacher features read from the cache | 10.000 | 20480 MiB |\n"
    )
    (state / "logs" / "tests.xml").write_text(
        '<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="0">'
        '<testcase name="test_a"/><testcase name="test_b"/>'
        '<testcase name="test_order"><failure message="assert False&#10;more">trace</failure></testcase>'
        "</testsuite></testsuites>"
    )
    out = tmp_path / "out" / "summary.md"
    _gpu_summary().summary(state, out)
    md = out.read_text()
    assert "| tests | ok | 47 |" in md  # the last attempt counts
    assert "| pretrain | not run yet |  |" in md and "| synth | not run yet |  |" in md
    assert "3 tests: 2 passed, 1 failed, 0 errors, 0 skipped" in md and "- FAILURE test_order: assert False" in md
    # 24,000 examples at 10 examples/s = 0.67 h; at 2.5 examples/s = 2.67 h
    assert "| teacher features from the cache (hvd) | 10.00 | 20.0 GiB | 0.67 h |" in md
    assert "| teacher run online every step (the reference's way) | 2.50 | 30.0 GiB | 2.67 h |" in md
    assert "GPU NVIDIA H200" in md


def test_gpu_check_help_lists_its_steps():
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--help"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    for step in _gpu_summary().STEPS:
        assert f"  {step}" in run.stdout or f" {step} " in run.stdout or f"{step}," in run.stdout, step
