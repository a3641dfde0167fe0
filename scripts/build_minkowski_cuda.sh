#!/usr/bin/env bash
# Builds MinkowskiEngine 0.5.4 with CUDA, for this machine's GPU architecture only, and installs it.
#
#   scripts/build_minkowski_cuda.sh [--python PY] [--target DIR] [--arch 9.0] [--jobs N]
#                                   [--sdist FILE] [--work DIR]
#
#   --python PY    the Python whose torch (a CUDA build) MinkowskiEngine is built against
#                  (default: $HVD_PYTHON, else .venv/bin/python when it exists, else python3)
#   --target DIR   install into DIR (pip --target; put DIR on PYTHONPATH) instead of PY's site-packages
#   --arch X.Y     CUDA compute capability to build for (default: the first visible GPU's, read with
#                  torch.cuda.get_device_capability; 9.0 for H100/H200). Several: "8.0;9.0"
#   --jobs N       parallel compiler processes (default: all cores; each nvcc needs ~2-4 GB of memory)
#   --sdist FILE   MinkowskiEngine-0.5.4.tar.gz (default: .whl/ when carried there, else downloaded
#                  from PyPI); its sha256 is checked either way
#   --work DIR     where to unpack and build (default: ${TMPDIR:-/tmp}/hvd-minkowski-cuda)
#   --blas WHICH   system | scipy-openblas32 | auto (default: auto, as below)
#   --compile-only compile every source to an object file and stop (no link, no install): the CPU-side
#                  check of the patches, which works with a CPU torch and a CUDA toolkit without a GPU
#                  (needs --arch; scripts/minkowski/compile_check.sh sets it up)
#
# MinkowskiEngine 0.5.4 (2021, unmaintained) does not compile unpatched with CUDA 12 or 13: the
# patches in scripts/minkowski/patches/ are applied in order, each with a comment on why. They were
# checked on the CPU with nvcc 13.0 (scripts/minkowski/compile_check.sh compiles every CUDA source).
#
# BLAS (MinkowskiEngine's CPU maths, linked into the CUDA build too): a system CBLAS (Debian/Ubuntu:
# libopenblas-dev) when the compiler finds <cblas.h>; else the scipy-openblas32 wheel (installed,
# or carried in .whl/), whose "scipy_"-prefixed symbols scripts/minkowski/blas-shim/cblas.h maps.
#
# Writes <work>/build.log, <work>/build-record.json (versions, arch, patches, seconds) and the wheel
# <work>/dist/MinkowskiEngine-0.5.4-*.whl, which pip can install again without rebuilding.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
ME_VERSION=0.5.4
ME_SHA256=b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94
ME_URL=https://files.pythonhosted.org/packages/21/5c/c543c4bc5fbe73ac3e38465b3da4f24a61f7a4ac5baec867e582e94aa551/MinkowskiEngine-0.5.4.tar.gz
say() { printf '\033[1m[build-minkowski-cuda]\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

PY=${HVD_PYTHON:-}
[ -n "$PY" ] || { [ -x "$HERE/.venv/bin/python" ] && PY="$HERE/.venv/bin/python"; } || PY=python3
BLAS_CHOICE=auto COMPILE_ONLY="" TARGET="" ARCH="${TORCH_CUDA_ARCH_LIST:-}" JOBS="" SDIST="" WORK="${TMPDIR:-/tmp}/hvd-minkowski-cuda"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PY=$2; shift 2 ;;
        --target) TARGET=$2; shift 2 ;;
        --arch) ARCH=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        --sdist) SDIST=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --compile-only) COMPILE_ONLY=1; shift ;;
        --blas) BLAS_CHOICE=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
JOBS=${JOBS:-$(nproc)}
case "$BLAS_CHOICE" in system|scipy-openblas32|auto) ;; *) die "--blas takes system, scipy-openblas32 or auto, not $BLAS_CHOICE" ;; esac
START=$(date +%s)

# --- 1. torch with CUDA, and nvcc -------------------------------------------------------------------
PY=$(command -v "$PY") || die "no Python at $PY (--python)"
read -r TORCH TORCH_CUDA < <("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda or "none")') \
    || die "$PY cannot import torch"
[ "$TORCH_CUDA" != none ] || [ -n "$COMPILE_ONLY" ] || die "$PY has torch $TORCH, a CPU-only build: MinkowskiEngine's CUDA build needs a CUDA torch (scripts/setup.sh builds the CPU MinkowskiEngine)"
CUDA_HOME=${CUDA_HOME:-${CUDA_PATH:-}}
if [ -z "$CUDA_HOME" ]; then
    if command -v nvcc >/dev/null; then CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    elif [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
    else die "nvcc not found: install the CUDA toolkit matching torch's CUDA $TORCH_CUDA, or set CUDA_HOME"; fi
fi
[ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc at $CUDA_HOME/bin/nvcc (CUDA_HOME)"
NVCC_VERSION=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
[ "${NVCC_VERSION%%.*}" = "${TORCH_CUDA%%.*}" ] || [ -n "$COMPILE_ONLY" ] \
    || die "nvcc $NVCC_VERSION ($CUDA_HOME) and torch's CUDA $TORCH_CUDA differ in their major version; the extension would not load"
if [ -z "$ARCH" ]; then
    ARCH=$("$PY" -c 'import torch; c = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None; print("%d.%d" % c if c else "")')
    [ -n "$ARCH" ] || die "no GPU visible to torch: name the architecture to build for with --arch (e.g. 9.0 for H100/H200, 8.0 for A100)"
fi
say "torch $TORCH (CUDA $TORCH_CUDA), nvcc $NVCC_VERSION at $CUDA_HOME, architecture $ARCH, $JOBS jobs"
# CUDA 13 keeps thrust/cub/libcu++ in include/cccl, which nvcc searches by itself but the host
# compiler (MinkowskiEngine's .cpp sources include thrust) does not
HOST_CPATH=""
[ -d "$CUDA_HOME/include/cccl" ] && HOST_CPATH="$CUDA_HOME/include/cccl"

# --- 2. the source, patched -------------------------------------------------------------------------
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
if [ -z "$SDIST" ]; then
    SDIST="$HERE/.whl/MinkowskiEngine-$ME_VERSION.tar.gz"
    if [ ! -f "$SDIST" ]; then
        SDIST="$WORK/MinkowskiEngine-$ME_VERSION.tar.gz"
        [ -f "$SDIST" ] || { say "downloading $ME_URL"; curl -fsSL -o "$SDIST.part" "$ME_URL" && mv "$SDIST.part" "$SDIST"; } \
            || die "could not download the MinkowskiEngine sdist; pass --sdist FILE"
    fi
fi
[ -f "$SDIST" ] || die "no sdist at $SDIST"
echo "$ME_SHA256  $SDIST" | sha256sum -c --status || die "$SDIST is not MinkowskiEngine $ME_VERSION's sdist (sha256 differs)"
SRC="$WORK/MinkowskiEngine-$ME_VERSION"
rm -rf "$SRC"
tar -xzf "$SDIST" -C "$WORK"
PATCHES=()
shopt -s nullglob
for p in "$HERE"/scripts/minkowski/patches/*.patch; do
    # patch(1) when present; else git apply, kept from treating an enclosing repository as the tree
    if command -v patch >/dev/null; then
        patch -d "$SRC" -p1 --forward --batch --quiet <"$p" || die "patch $(basename "$p") does not apply to MinkowskiEngine $ME_VERSION"
    else
        GIT_CEILING_DIRECTORIES="$WORK" git -C "$SRC" apply -p1 "$p" || die "patch $(basename "$p") does not apply to MinkowskiEngine $ME_VERSION"
    fi
    PATCHES+=("$(basename "$p")")
    say "applied $(basename "$p")"
done

# --- 3. BLAS ----------------------------------------------------------------------------------------
BLAS_ARGS=(--blas=openblas)
LDFLAGS=${LDFLAGS:-}
system_blas() { echo '#include <cblas.h>' | ${CXX:-c++} -x c++ -E - >/dev/null 2>&1 && { ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so '; }; }
if [ "$BLAS_CHOICE" = system ] || { [ "$BLAS_CHOICE" = auto ] && system_blas; }; then
    system_blas || die "--blas system: no <cblas.h> and libopenblas.so here (Debian/Ubuntu: apt-get install libopenblas-dev)"
    BLAS="system OpenBLAS"
else
    # scipy-openblas32: installed in PY, or carried as a wheel (unpacked next to the build)
    SCIPY_BLAS=$("$PY" -c 'import scipy_openblas32, os; print(os.path.dirname(scipy_openblas32.__file__))' 2>/dev/null || true)
    if [ -z "$SCIPY_BLAS" ]; then
        WHEEL=$(ls "$HERE"/.whl/scipy_openblas32-*.whl 2>/dev/null | head -1 || true)
        if [ -n "$WHEEL" ]; then
            # installed where MinkowskiEngine goes, so that the library it links stays where its rpath says
            "$PY" -m pip install -q --no-index --no-deps --no-compile ${TARGET:+--target "$TARGET" --upgrade} "$WHEEL" >/dev/null
            SCIPY_BLAS=$(PYTHONPATH="${TARGET:+$TARGET:}${PYTHONPATH:-}" "$PY" -c 'import scipy_openblas32, os; print(os.path.dirname(scipy_openblas32.__file__))')
        fi
    fi
    [ -n "$SCIPY_BLAS" ] && [ -f "$SCIPY_BLAS/include/cblas.h" ] \
        || die "no BLAS: install libopenblas-dev (apt-get install libopenblas-dev), or pip install scipy-openblas32, or carry its wheel in .whl/"
    mkdir -p "$WORK/blas-link"
    ln -sfn "$SCIPY_BLAS/lib/libscipy_openblas.so" "$WORK/blas-link/libopenblas.so"
    BLAS_ARGS+=("--blas_include_dirs=$HERE/scripts/minkowski/blas-shim,$SCIPY_BLAS/include")
    LDFLAGS="$LDFLAGS -L$WORK/blas-link -Wl,-rpath,$SCIPY_BLAS/lib"
    BLAS="scipy-openblas32 ($SCIPY_BLAS)"
fi
say "BLAS: $BLAS"

# MinkowskiEngine's setup.py runs "pip uninstall MinkowskiEngine -y" first: the pip on its PATH skips
# that (an installed MinkowskiEngine, a CPU build say, stays until the new wheel replaces it).
mkdir -p "$WORK/bin"
printf '#!/bin/sh\n[ "$1" = uninstall ] && exit 0\nexec "%s" -m pip "$@"\n' "$PY" >"$WORK/bin/pip"
chmod +x "$WORK/bin/pip"

if [ -n "$COMPILE_ONLY" ]; then
    # A CPU torch knows no CUDA_HOME and lacks the one header its CUDA builds generate
    # (c10/cuda/impl/cuda_cmake_macros.h): supply both, compile every object, report, stop.
    mkdir -p "$WORK/torch-shim/c10/cuda/impl"
    printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$WORK/torch-shim/c10/cuda/impl/cuda_cmake_macros.h"
    say "compiling every source for architecture $ARCH, no link (log: $WORK/build.log)"
    (
        cd "$SRC"
        rm -rf build
        export PATH="$WORK/bin:$CUDA_HOME/bin:$(dirname "$PY"):$PATH" CUDA_HOME TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" \
            CPATH="$WORK/torch-shim${HOST_CPATH:+:$HOST_CPATH}${CPATH:+:$CPATH}" NVCC_APPEND_FLAGS="-I$WORK/torch-shim"
        "$PY" - build_ext --force_cuda --cuda_home="$CUDA_HOME" "${BLAS_ARGS[@]}" <<'PY' || true
import os, runpy, sys
import torch.utils.cpp_extension as cpp_extension
cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"]  # a CPU torch sets none
sys.argv[0] = "setup.py"
runpy.run_path("setup.py", run_name="__main__")
PY
        # setup.py stops at the first failing object (or at the link, which a CPU torch cannot do):
        # compile the rest too, so that one run lists every failure
        NINJA_DIR=$(dirname "$(find build -name build.ninja | head -1)")
        ninja -C "$NINJA_DIR" -k 0 -j "$JOBS" || true
    ) >"$WORK/build.log" 2>&1
    NINJA_FILE=$(find "$SRC/build" -name build.ninja | head -1)
    [ -n "$NINJA_FILE" ] || { tail -30 "$WORK/build.log" >&2; die "setup.py did not get as far as writing build.ninja; see $WORK/build.log"; }
    TOTAL=0 BUILT=0 FAILED=()
    while read -r obj; do
        TOTAL=$((TOTAL + 1))
        if [ -s "$obj" ]; then BUILT=$((BUILT + 1)); else FAILED+=("$(basename "$obj")"); fi
    done < <(sed -n 's/^build \([^:]*\.o\): .*/\1/p' "$NINJA_FILE")
    grep -E "error[: ]" "$WORK/build.log" | grep -v "^FAILED" | sort | uniq -c | sort -rn | head -20 >&2 || true
    say "compiled $BUILT of $TOTAL objects with nvcc $NVCC_VERSION for architecture $ARCH in $(( $(date +%s) - START )) s${FAILED:+; failed: ${FAILED[*]}}"
    [ "$BUILT" = "$TOTAL" ] && [ "$TOTAL" -gt 0 ]
    exit
fi

# --- 4. build a wheel, install it -------------------------------------------------------------------
say "compiling with $JOBS jobs (log: $WORK/build.log; the 21 objects took 40 minutes with 2 jobs on a 2-core VM)"
(
    cd "$SRC"
    export PATH="$WORK/bin:$CUDA_HOME/bin:$(dirname "$PY"):$PATH" CUDA_HOME TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$JOBS" LDFLAGS
    [ -z "$HOST_CPATH" ] || export CPATH="$HOST_CPATH${CPATH:+:$CPATH}"
    "$PY" setup.py bdist_wheel --dist-dir "$WORK/dist" --force_cuda --cuda_home="$CUDA_HOME" "${BLAS_ARGS[@]}"
) >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; die "the build failed; whole log: $WORK/build.log"; }
WHEEL=$(ls -t "$WORK"/dist/MinkowskiEngine-"$ME_VERSION"-*.whl | head -1)
INSTALL=("$PY" -m pip install -q --no-index --no-deps --no-compile --force-reinstall)
[ -z "$TARGET" ] || INSTALL+=(--target "$TARGET" --upgrade)
"${INSTALL[@]}" "$WHEEL" >/dev/null
SECONDS_TAKEN=$(( $(date +%s) - START ))

# --- 5. check it: the CUDA backend loads and a sparse convolution runs on the GPU --------------------
CHECK=$(PYTHONPATH="${TARGET:+$TARGET:}$HERE${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'PY'
import torch

from models.minkowski import ME  # hvd's one import of MinkowskiEngine (its Python 3.10+ alias)
assert ME.is_cuda_available(), "MinkowskiEngine was built without CUDA"
line = f"MinkowskiEngine {ME.__version__}, CUDA {ME.cuda_version()}"
if torch.cuda.is_available():
    coords = torch.randint(0, 20, (2000, 3), dtype=torch.int32)
    coords = torch.cat([torch.zeros(2000, 1, dtype=torch.int32), coords], 1).unique(dim=0)
    feats = torch.randn(len(coords), 8)
    conv = ME.MinkowskiConvolution(8, 16, kernel_size=3, dimension=3)
    out_cpu = conv(ME.SparseTensor(feats, coords))
    conv = conv.cuda()
    out_gpu = conv(ME.SparseTensor(feats.cuda(), coords.cuda()))
    out_gpu.F.sum().backward()

    def by_coordinate(t):  # the GPU may order output points differently
        c = t.C.cpu().long()
        key = ((c[:, 0] * 64 + c[:, 1]) * 64 + c[:, 2]) * 64 + c[:, 3]
        return t.F.detach().cpu()[key.argsort()]

    err = (by_coordinate(out_gpu) - by_coordinate(out_cpu)).abs().max().item()
    assert err < 1e-4, f"GPU and CPU convolutions differ by {err}"
    line += f"; 3x3x3 convolution on {len(coords)} points: GPU == CPU (max abs diff {err:.1e}), backward ran"
print(line)
PY
) || die "the installed MinkowskiEngine does not work (see above)"
say "$CHECK"

"$PY" - "$WORK/build-record.json" <<PY
import json, sys
json.dump({"minkowskiengine": "$ME_VERSION", "torch": "$TORCH", "torch_cuda": "$TORCH_CUDA", "nvcc": "$NVCC_VERSION",
           "arch": "$ARCH", "jobs": $JOBS, "blas": "$BLAS", "patches": "${PATCHES[*]}".split(),
           "seconds": $SECONDS_TAKEN, "wheel": "$WHEEL", "installed_to": "${TARGET:-site-packages}",
           "check": """$CHECK"""}, open(sys.argv[1], "w"), indent=1)
PY
say "built and installed in ${SECONDS_TAKEN} s: $WHEEL"
