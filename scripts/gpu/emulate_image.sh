#!/usr/bin/env bash
# Emulates the GPU machine's Python on this CPU machine and runs hvd there the way the GPU check
# will (issue 18), so that what breaks on Python 3.12 / numpy 2 / the image's package versions
# breaks here first, not in the GPU machine's few minutes.
#
#   scripts/gpu/fetch_wheels.sh          # first: the carried wheels, into .whl/
#   scripts/gpu/emulate_image.sh         # everything below; log in $HVD_EMU_DIR/emulate.log
#   HVD_EMU_TESTS=all scripts/gpu/emulate_image.sh                      # every test it can run
#   HVD_EMU_TESTS="tests/pipeline/store -x" scripts/gpu/emulate_image.sh   # other pytest arguments
#
# 1. A Python 3.12 virtualenv ($HVD_EMU_DIR/venv; HVD_EMU_PYTHON picks the interpreter, default
#    pyenv's 3.12) holding what the image holds and hvd touches: torch 2.11.0 (PyPI's cp312 wheel
#    is the same CUDA 13.0 build as the image's; it imports and runs on a CPU), numpy 2.5.2 and
#    the image's other packages that hvd's closure uses, at the newest versions uploaded before
#    $HVD_EMU_IMAGE_DATE (default 2026-10-15: the image has jax 0.11.2 and onnxruntime 1.30.0,
#    the newest at about that date; its numpy, torch and transformers are pinned older). Then
#    every package that scripts/gpu/image-packages.txt does not list is removed again (pip pulls
#    in pydantic for typer, for instance), so the carried wheels must bring them, as there.
#    Built once; rebuilt when that list, the date or image-packages.txt change. No MinkowskiEngine.
# 2. Installs .whl/*.whl with exactly the GPU machine's command, into $HVD_EMU_DIR/hvd-site:
#      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#          --target $SITE .whl/*.whl && export PYTHONPATH=$SITE:$PWD
# 3. From the repository root, with that PYTHONPATH and the venv's python3 first on PATH:
#    scripts/gpu/check_deps.py; hvd data synth --preset tiny; hvd catalog show and hvd prep all on
#    a catalog made from data_catalog.yaml whose source points at that data with skimage_slic
#    superpixels (no cv2.ximgproc: the image has no OpenCV contrib modules); bench/bev_memory.py
#    (one CPU measurement); hvd train pretrain
#    (expected to stop at MinkowskiEngine, which is not in this venv); then pytest on
#    $HVD_EMU_TESTS (default: a representative set, about 4 min; "all": every test module that
#    does not import MinkowskiEngine, less the slow tests and tests/integration, 18 min).
# Each step's status and time is printed as a summary at the end; exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
EMU=${HVD_EMU_DIR:-/tmp/hvd-gpu-emu}
PY312=${HVD_EMU_PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3.12}
IMAGE_DATE=${HVD_EMU_IMAGE_DATE:-2026-10-15}
SITE=$EMU/hvd-site
JOBS=${HVD_EMU_JOBS:-2}
# The test modules that import MinkowskiEngine (not in this venv): they cannot even be collected.
NEEDS_ME=(tests/cli/test_export_cli.py tests/models/test_minkowski.py tests/models/test_segmentation.py
    tests/models/test_slidr_checkpoints.py tests/models/test_student.py tests/pipeline/train/test_finetune.py
    tests/pipeline/train/test_finetune_semantickitti.py tests/pipeline/train/test_input_convention.py
    tests/pipeline/train/test_lidarseg_export.py tests/pipeline/train/test_pictures.py tests/pipeline/train/test_pretrain.py)
# HVD_EMU_TESTS=all: every other test but the slow ones and tests/integration (real Prefect and
# Dask servers, started from the virtualenv's console scripts, which --target installs elsewhere):
# 18 min on 2 busy cores. Default: a representative part of it, about 4 min (stores, stages, the
# devkit, data, training data and losses, checkpoints, the CLI; hvd prep all ran above).
QUICK_TESTS=(tests/pipeline/store tests/pipeline/stages/test_stages.py tests/pipeline/stages/test_index.py
    tests/pipeline/stages/test_depth_targets.py tests/pipeline/data tests/pipeline/synth/test_synth.py
    tests/pipeline/train/test_augment.py tests/pipeline/train/test_loop.py tests/pipeline/train/test_pretrain_data.py
    tests/pipeline/train/test_seg_metrics.py tests/pipeline/train/test_voxelize.py tests/models/test_checkpoint_loading.py
    tests/models/test_losses.py tests/cli/test_help.py tests/cli/test_catalog_cli.py)
if [ "${HVD_EMU_TESTS:-}" = all ]; then
    TEST_ARGS=(tests -m "not slow" --ignore=tests/integration "${NEEDS_ME[@]/#/--ignore=}")
elif [ -n "${HVD_EMU_TESTS:-}" ]; then
    read -ra TEST_ARGS <<<"$HVD_EMU_TESTS"  # split at whitespace
else
    TEST_ARGS=(-m "not slow" "${QUICK_TESTS[@]}")
fi
mkdir -p "$EMU"
LOG=$EMU/emulate.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
say() { printf '\n\033[1m[emulate]\033[0m %s\n' "$*"; }
SUMMARY=()
FAILED=0
step() {  # step NAME COMMAND...: runs it, records status and seconds
    local name=$1; shift
    say "$name: $*"
    local t0=$SECONDS
    "$@"
    local rc=$?
    SUMMARY+=("$(printf '%-4s %5ss  %s' "$([ $rc = 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)) "$name")")
    [ $rc = 0 ] || FAILED=1
    return $rc
}
QUIET_PIP='is ignored: it is neither a file nor a directory'

# --- 1. the image's Python -----------------------------------------------------------------------
IMAGE_PKGS=(numpy==2.5.2 torch==2.11.0 pyarrow pandas scipy scikit-image scikit-learn pillow matplotlib
    pyyaml rich click typer shellingham annotated-doc psutil tqdm tensorboard opencv-python-headless
    msgpack cloudpickle toolz fsspec jinja2 httpx httpcore h11 anyio idna certifi requests urllib3
    charset-normalizer attrs humanize prometheus-client pathspec pluggy regex sortedcontainers packaging
    pytest pytest-timeout iniconfig pygments markdown-it-py python-dateutil six uvloop typing-extensions
    imageio tifffile lazy-loader joblib threadpoolctl networkx absl-py grpcio markdown protobuf werkzeug
    colorama)
STAMP=$({ echo "$PY312 $IMAGE_DATE ${IMAGE_PKGS[*]}"; cat scripts/gpu/image-packages.txt; } | sha256sum | cut -c1-16)
VPY=$EMU/venv/bin/python3
build_venv() {
    rm -rf "$EMU/venv"
    "$PY312" -m venv "$EMU/venv" || return 1
    "$VPY" -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1" 2>&1 | grep -v "$QUIET_PIP"
    "$VPY" -m pip install -q --disable-pip-version-check --uploaded-prior-to "${IMAGE_DATE}T00:00:00Z" \
        "${IMAGE_PKGS[@]}" 2>&1 | grep -v "$QUIET_PIP"
    [ "${PIPESTATUS[0]}" = 0 ] || return 1
    # keep only what the image has
    local extra
    extra=$("$VPY" - scripts/gpu/image-packages.txt <<'PY'
import re, sys
from importlib import metadata
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
image = {norm(l.strip()) for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")} | {"pip"}
print(" ".join(sorted({d.metadata["Name"] for d in metadata.distributions() if norm(d.metadata["Name"]) not in image})))
PY
)
    if [ -n "$extra" ]; then
        say "removing what the image does not have: $extra"
        "$VPY" -m pip uninstall -q -y $extra || return 1
    fi
    "$VPY" -m pip list --format=freeze --disable-pip-version-check >"$EMU/image-freeze.txt"
    echo "$STAMP" >"$EMU/venv/.hvd-emu-stamp"
}
if [ "$(cat "$EMU/venv/.hvd-emu-stamp" 2>/dev/null)" != "$STAMP" ]; then
    step "build the image's Python 3.12 venv (packages uploaded before $IMAGE_DATE)" build_venv \
        || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }
else
    say "reusing $EMU/venv (image emulation; $(wc -l <"$EMU/image-freeze.txt") packages)"
fi
say "image emulation: $("$VPY" --version), $(grep -E '^(torch|numpy|pyarrow|scipy|scikit-image|opencv-python-headless|pandas|typer|click|rich)==' "$EMU/image-freeze.txt" | tr '\n' ' ')"

# --- 2. the carried wheels, installed as on the GPU machine --------------------------------------
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/*.whl: run scripts/gpu/fetch_wheels.sh first" >&2; exit 1; }
export PATH=$EMU/venv/bin:$PATH  # python3 is the image's, as there
rm -rf "$SITE"
install_wheels() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl 2>&1 \
        | grep -v "$QUIET_PIP"
    return "${PIPESTATUS[0]}"
}
step "install .whl/*.whl ($(ls .whl/*.whl | wc -l) wheels) with the GPU machine's command" install_wheels \
    || { printf '%s\n' "${SUMMARY[@]}"; exit 1; }
export PYTHONPATH=$SITE:$REPO
# Prefect writes its home and database here, not to ~/.prefect
export PREFECT_HOME=$EMU/prefect-home PREFECT_SERVER_ANALYTICS_ENABLED=false

# --- 3. hvd --------------------------------------------------------------------------------------
step "check_deps: every requirement met by carried + image packages" python3 scripts/gpu/check_deps.py "$SITE"
step "imports" python3 -c "
import numpy, torch, zarr, numcodecs, pydantic, prefect, prefect_dask, distributed, typer, nuscenes.nuscenes
import pipeline.stages, pipeline.store.rowstore, flows, cli.main
print('numpy', numpy.__version__, 'torch', torch.__version__, 'zarr', zarr.__version__, 'numcodecs', numcodecs.__version__,
      'prefect', prefect.__version__, 'pydantic', pydantic.__version__, 'typer', typer.__version__)"
DATA=$EMU/data/synth-tiny
rm -rf "$DATA" "$EMU/stores"
step "hvd data synth --preset tiny" python3 -m cli.main data synth --preset tiny --out "$DATA" --workers "$JOBS"
CAT=$EMU/catalog.yaml
python3 - "$REPO/data_catalog.yaml" "$CAT" "$DATA" "$EMU/stores" <<'PY'
# data_catalog.yaml with one source, emu-tiny, at the tiny data; its superpixels skimage_slic
import sys, yaml
src, out, data, stores = sys.argv[1:]
cat = yaml.safe_load(open(src))
tiny = cat["sources"]["synth-tiny"]
params = {**tiny.get("params", {}), "superpixels": {"algorithm": "skimage_slic"}}
cat["sources"] = {"emu-tiny": {**tiny, "description": "tiny, skimage_slic superpixels (GPU image emulation)", "dataroot": data, "params": params}}
cat["store_root"], cat["default_source"] = stores, "emu-tiny"
yaml.safe_dump(cat, open(out, "w"), sort_keys=False)
PY
step "hvd catalog show (before)" python3 -m cli.main catalog show --catalog "$CAT" --source emu-tiny
step "hvd prep all -j $JOBS (Prefect flow + Dask local cluster)" python3 -m cli.main prep all --catalog "$CAT" --source emu-tiny -j "$JOBS"
step "hvd catalog show (after)" python3 -m cli.main catalog show --catalog "$CAT" --source emu-tiny
step "hvd catalog verify" python3 -m cli.main catalog verify --catalog "$CAT" --source emu-tiny
step "bench/bev_memory.py --worker ours --device cpu (no MinkowskiEngine needed)" python3 bench/bev_memory.py --worker ours --device cpu
say "hvd train pretrain (expected to stop at MinkowskiEngine, which is not in this venv)"
t0=$SECONDS
python3 -m cli.main train pretrain --catalog "$CAT" --source emu-tiny --preset demo --max-steps 2 --out "$EMU/runs/pretrain" 2>&1 | tail -5
SUMMARY+=("$(printf '%-4s %5ss  %s' "rc=${PIPESTATUS[0]}" $((SECONDS - t0)) "hvd train pretrain (no MinkowskiEngine here; see its output)")")
# shellcheck disable=SC2086
step "pytest (no MinkowskiEngine)" python3 -m pytest -q -p no:cacheprovider --durations=15 "${TEST_ARGS[@]}"

say "summary (log: $LOG)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
