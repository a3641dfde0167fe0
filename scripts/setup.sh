#!/usr/bin/env bash
# Sets up everything hvd needs in a project-local virtualenv (.venv), on a fresh machine or an
# existing one. Safe to re-run: each step checks whether it is already done.
#
#   1. a Python 3.10-3.12 virtualenv in .venv (HVD_VENV overrides)
#   2. torch, CPU build, pinned (HVD_TORCH overrides) -- installed first so that no other package
#      pulls the multi-GB CUDA build; every later install is constrained to it
#   3. hvd itself (editable) with its dependencies, constrained by constraints.txt, then OpenCV's
#      contrib wheel over nuscenes-devkit's OpenCV at the same version (cv2.ximgproc)
#   4. MinkowskiEngine 0.5.4 built CPU-only against OpenBLAS (Debian's libopenblas-dev, installed
#      with apt-get when missing; about 8 minutes on 2 cores, then cached by pip); where torch sees a
#      CUDA GPU, built with CUDA instead by scripts/build_minkowski_cuda.sh (HVD_MINKOWSKI=cpu|cuda
#      overrides the choice)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${HVD_VENV:-.venv}
TORCH=${HVD_TORCH:-2.13.0}
ME_VERSION=0.5.4
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- 1. virtualenv -------------------------------------------------------------------------------
pick_python() {
    for cand in "${HVD_PYTHON:-}" python3.11 python3.12 python3.10 python3; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
            echo "$cand"; return 0
        fi
    done
    echo "hvd needs Python 3.10, 3.11 or 3.12 (set HVD_PYTHON to its path)" >&2
    return 1
}
if [ ! -x "$VENV/bin/python" ]; then
    PY=$(pick_python)
    say "creating virtualenv $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)
if ! "$VPY" -c 'import sys, pip; sys.exit(0 if int(pip.__version__.split(".")[0]) >= 24 else 1)'; then
    say "upgrading pip (needed to pass build options to MinkowskiEngine)"
    "${PIP[@]}" install -q --upgrade "pip>=24"
fi

# --- 2. torch, CPU build -------------------------------------------------------------------------
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH' else 1)" 2>/dev/null; then
    say "installing torch==$TORCH (CPU build)"
    "${PIP[@]}" install -q "torch==$TORCH"
fi
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$("$VPY" -c 'import torch; print(torch.__version__)')" >"$CONSTRAINTS"
cat constraints.txt >>"$CONSTRAINTS"

# --- 3. hvd and its dependencies -----------------------------------------------------------------
say "installing hvd and its dependencies (constrained to the installed torch)"
"${PIP[@]}" install -q -c "$CONSTRAINTS" -e ".[dev]" "setuptools>=78,<80" wheel ninja 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
"$VPY" -c "import pipeline, cli, zarr, nuscenes" >/dev/null

# --- 3b. OpenCV's contrib modules ----------------------------------------------------------------
# nuscenes-devkit needs opencv-python-headless; the superpixel algorithms opencv_slic / opencv_slico
# need cv2.ximgproc, which only opencv-contrib-python-headless has. Both wheels install the same cv2
# package, the contrib one a superset: whichever pip installed last wins, so (re)install the contrib
# wheel last, at the version of the installed opencv-python-headless, until cv2.ximgproc imports.
ximgproc_ok() { "$VPY" -c "import cv2; cv2.ximgproc.createSuperpixelSLIC" >/dev/null 2>&1; }
if ! ximgproc_ok; then
    CV=$("$VPY" -c "from importlib.metadata import version; print(version('opencv-python-headless'))" 2>/dev/null \
        || sed -n 's/^opencv-contrib-python-headless==//p' constraints.txt)
    say "installing opencv-contrib-python-headless==$CV over opencv-python-headless (for cv2.ximgproc)"
    "${PIP[@]}" install -q --no-deps --force-reinstall "opencv-contrib-python-headless==$CV" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    ximgproc_ok || { echo "cv2.ximgproc does not import after installing opencv-contrib-python-headless==$CV" >&2; exit 1; }
fi

# --- 4. MinkowskiEngine ---------------------------------------------------------------------------
ME_BUILD=${HVD_MINKOWSKI:-auto}
case "$ME_BUILD" in
    cpu|cuda) ;;
    auto) ME_BUILD=$("$VPY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")') ;;
    *) echo "HVD_MINKOWSKI is cpu, cuda or auto, not $ME_BUILD" >&2; exit 1 ;;
esac
me_ok() {
    "$VPY" - "$ME_BUILD" <<'PY' >/dev/null 2>&1
import collections, collections.abc, sys
collections.Sequence = collections.abc.Sequence  # MinkowskiEngine 0.5.4 predates Python 3.10
import MinkowskiEngine
assert sys.argv[1] == "cpu" or MinkowskiEngine.is_cuda_available()
PY
}
if ! me_ok && [ "$ME_BUILD" = cuda ]; then
    say "building MinkowskiEngine $ME_VERSION with CUDA (scripts/build_minkowski_cuda.sh)"
    bash scripts/build_minkowski_cuda.sh --python "$VPY"
    me_ok || { echo "MinkowskiEngine with CUDA does not import after the build" >&2; exit 1; }
fi
if ! me_ok; then
    if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
        say "installing Debian's libopenblas-dev (needed to build MinkowskiEngine)"
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get install -y -q libopenblas-dev >/dev/null \
            || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libopenblas-dev >/dev/null; }
    fi
    say "building MinkowskiEngine $ME_VERSION CPU-only (about 8 minutes on 2 cores; cached by pip afterwards)"
    # numpy.distutils (used by its setup.py) needs the standard library's distutils, not setuptools'.
    SETUPTOOLS_USE_DISTUTILS=stdlib MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" install -q --no-deps \
        --no-build-isolation \
        --config-settings="--build-option=--cpu_only" \
        --config-settings="--build-option=--blas=openblas" \
        "MinkowskiEngine==$ME_VERSION" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    me_ok || { echo "MinkowskiEngine did not build; see the output above" >&2; exit 1; }
fi
say "ready: $("$VPY" -c 'import torch; print("torch", torch.__version__)'), MinkowskiEngine $ME_VERSION ($ME_BUILD)"
