#!/usr/bin/env bash
# The CPU-side check of our MinkowskiEngine patches: compiles every CUDA source of MinkowskiEngine
# 0.5.4, patched, with nvcc 13.0 for one architecture, on a machine without a GPU or CUDA toolkit.
#
#   scripts/minkowski/compile_check.sh [--arch 9.0] [--work DIR] [--unpatched]
#
# CUDA 13.0's compiler, headers and the math libraries' headers come from NVIDIA's pip wheels
# (nvidia-cuda-nvcc, -cccl, -crt, -runtime, nvvm, cublas, cusparse, curand, cusolver, cufft, nvtx,
# nvrtc; about 1 GB, downloaded once into the work folder); torch's headers from the project's
# virtualenv (a CPU build: scripts/build_minkowski_cuda.sh --compile-only supplies the one header only
# CUDA builds have). Objects only: a CPU torch has no libtorch_cuda to link against, so linking and
# running wait for a GPU machine (scripts/gpu_check.sh). With --unpatched, the same without our
# patches: it fails, listing the errors each patch is there for.
#
# About 35-45 minutes on 2 cores (each of the 21 sources takes nvcc 1-5 minutes).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
ARCH=9.0 WORK="${TMPDIR:-/tmp}/hvd-minkowski-compile-check" UNPATCHED=""
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --unpatched) UNPATCHED=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
PY=${HVD_PYTHON:-$HERE/.venv/bin/python}
[ -x "$PY" ] || { echo "no Python with torch at $PY: run make setup (or set HVD_PYTHON)" >&2; exit 1; }
mkdir -p "$WORK/wheels"

# CUDA 13.0 as pip wheels: the versions torch 2.11+cu130 (the GPU machine's) was built with
TOOLKIT=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96
         nvidia-nvvm==13.0.88 nvidia-cublas==13.1.1.3 nvidia-cusparse==12.6.3.3 nvidia-curand==10.4.0.35
         nvidia-cusolver==12.0.4.66 nvidia-cufft==12.0.0.61 nvidia-nvtx==13.0.85 nvidia-cuda-nvrtc==13.0.88)
CUDA_HOME="$WORK/toolkit/nvidia/cu13"
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "[compile-check] fetching CUDA 13.0 as pip wheels into $WORK/wheels" >&2
    "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_27_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$WORK/wheels" "${TOOLKIT[@]}"
    for w in "$WORK"/wheels/nvidia_*.whl; do
        "$PY" -m zipfile -e "$w" "$WORK/toolkit"
    done
    chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/*
    ln -sfn lib "$CUDA_HOME/lib64"  # where torch's extension builder looks
fi
"$CUDA_HOME/bin/nvcc" --version | tail -1 >&2

ARGS=(--compile-only --python "$PY" --arch "$ARCH" --work "$WORK/build" --jobs "$(nproc)")
if [ -n "$UNPATCHED" ]; then
    # the same build with an empty patch folder
    mkdir -p "$WORK/no-patches/scripts/minkowski/patches"
    cp -r "$HERE/scripts/build_minkowski_cuda.sh" "$WORK/no-patches/scripts/"
    cp -r "$HERE/scripts/minkowski/blas-shim" "$WORK/no-patches/scripts/minkowski/"
    CUDA_HOME="$CUDA_HOME" bash "$WORK/no-patches/scripts/build_minkowski_cuda.sh" "${ARGS[@]}"
else
    CUDA_HOME="$CUDA_HOME" bash "$HERE/scripts/build_minkowski_cuda.sh" "${ARGS[@]}"
fi
