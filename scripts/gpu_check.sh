#!/usr/bin/env bash
# The GPU check: builds MinkowskiEngine with CUDA and measures hvd's training stage on a GPU machine.
#
#   bash scripts/gpu_check.sh [--quick] [--python PY] [--skip-build]
#
# Made for a fresh GPU machine with no network and a time limit per command (10 minutes on ours):
# run it from the repository root, then run it again until it prints "all done". Every call goes on
# where the last one stopped (state in $HVD_GPU_STATE, default /tmp/hvd-gpu) and starts a step only
# when the step's usual time fits in what is left of the call's budget ($HVD_GPU_BUDGET seconds,
# default 540); the MinkowskiEngine build runs in the background (its own process session), so it
# goes on between calls while the machine is kept.
#
# Steps, in order (each one's log in $HVD_GPU_STATE/logs/):
#   env          nvidia-smi, Python, torch, CUDA, nvcc
#   wheels       what the machine lacks, from wheels carried in .whl/ (scripts/gpu/fetch_wheels.sh
#                fetches them where a registry is reachable), installed with pip --target
#   me-start     scripts/build_minkowski_cuda.sh in the background: MinkowskiEngine 0.5.4 + our
#                patches, for this GPU's architecture only
#   synth, prep  the GPU check's dataset (catalog source synth-gpu: one scene of the mini preset, at
#                nuScenes' 1600x900 image size) and its stores, on the cores the build leaves free
#   me-wait      waits for the build
#   tests        the GPU tests (tests/gpu: voxel order of the IPV loss on CUDA, BEV pooling autograd
#                on CUDA against the CPU, a CUDA step against a CPU step, AMP in bfloat16 and float16)
#   bench-bev    bench/bev_memory.py --device cuda
#   bench-train  bench/train.py at nuScenes shapes, batch 4: step profile at the published widths and
#                teacher cache vs teacher online (examples/s, peak GPU memory)
#   pretrain     a 200-step demo pretraining on the GPU check's data
# Every call ends by writing $OUT/summary.md (the results so far) and $OUT/logs.tar.gz ($OUT: the
# device tool's output folder; default ./gpu-check-out).
#
#   --quick       the tiny dataset and 20 pretraining steps: a rehearsal of every step, for a CPU too
#   --python PY   the Python with torch (default: $HVD_PYTHON, else python3)
#   --skip-build  use the MinkowskiEngine PY already imports, and its packages when .whl/ holds no
#                 wheels (a rehearsal with the CPU build)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
STATE=${HVD_GPU_STATE:-/tmp/hvd-gpu}
OUTDIR=${OUT:-$REPO/gpu-check-out}
BUDGET=${HVD_GPU_BUDGET:-540}
PY=${HVD_PYTHON:-python3}
QUICK="" SKIP_BUILD=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --python) PY=$2; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
T0=$(date +%s)
mkdir -p "$STATE/logs" "$OUTDIR"
PY=$(command -v "$PY") || { echo "no Python $PY" >&2; exit 2; }
CORES=$(nproc)
BUILD_JOBS=$(( CORES * 5 / 8 > 1 ? CORES * 5 / 8 : 1 ))  # the build gets most cores; data the rest
DATA_JOBS=$(( CORES - BUILD_JOBS > 1 ? CORES - BUILD_JOBS : 1 ))
if [ -n "$QUICK" ]; then
    SOURCE=synth-tiny; SYNTH=(--preset tiny --out data/synth-tiny); STEPS=20; BATCH=2
else
    SOURCE=synth-gpu; SYNTH=(--preset mini --scenes 1 --out data/synth-gpu); STEPS=200; BATCH=4
fi
export PYTHONPATH="$STATE/site:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    PREFECT_HOME="$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false HVD_CATALOG="$REPO/data_catalog.yaml"
HVD=("$PY" -m cli.main)
say() { printf '[gpu-check %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
PENDING=()

# step NAME SECONDS CMD...: run CMD once (across calls) if about SECONDS fit in the budget
step() {
    local name=$1 need=$2 start rc
    shift 2
    [ -f "$STATE/$name.done" ] && return 0
    if [ -f "$STATE/$name.failed" ] && [ -z "${HVD_GPU_RETRY:-}" ]; then return 1; fi
    if [ "$(left)" -lt "$need" ]; then
        say "$name: left for the next call (needs about $need s, $(left) s left)"
        PENDING+=("$name")
        return 1
    fi
    say "$name"
    start=$(date +%s)
    "$@" >"$STATE/logs/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%d\n' "$name" "$([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)")" "$(( $(date +%s) - start ))" >>"$STATE/steps.tsv"
    if [ $rc = 0 ]; then
        rm -f "$STATE/$name.failed"
        touch "$STATE/$name.done"
        say "$name: ok in $(( $(date +%s) - start )) s"
    else
        touch "$STATE/$name.failed"
        say "$name: FAILED (exit $rc) after $(( $(date +%s) - start )) s; the end of its log:"
        tail -25 "$STATE/logs/$name.log" | sed 's/^/    /'
    fi
    return $rc
}

env_report() {
    nvidia-smi || true
    "$PY" - <<'PY'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU", p.name, f"| {p.total_memory / 2**30:.0f} GiB | capability {p.major}.{p.minor} | {p.multi_processor_count} SMs | bf16", torch.cuda.is_bf16_supported())
else:
    print("no CUDA GPU visible to torch")
PY
    command -v nvcc && nvcc --version | tail -2
    echo "cores $CORES, build jobs $BUILD_JOBS, data jobs $DATA_JOBS"
}

install_wheels() {
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run scripts/gpu/fetch_wheels.sh where a registry is reachable, and carry .whl"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STATE/site" .whl/*.whl
    "$PY" scripts/gpu/check_deps.py "$STATE/site" || echo "(check_deps: see above; going on, the imports below decide)"
    "$PY" -c "import zarr, pyarrow, prefect, dask.distributed, pipeline, cli, models; print('hvd imports: ok; zarr', zarr.__version__, '| prefect', prefect.__version__)"
}

me_importable() {
    "$PY" -c "from models.minkowski import ME; assert ME.is_cuda_available() or '${SKIP_BUILD}'" >/dev/null 2>&1
}

start_build() {
    if [ -n "$SKIP_BUILD" ]; then me_importable && echo "using the MinkowskiEngine $PY imports"; return; fi
    if [ -f "$STATE/me/build-record.json" ]; then echo "built already"; return 0; fi
    if [ -f "$STATE/me-build.pid" ] && kill -0 "$(cat "$STATE/me-build.pid")" 2>/dev/null; then echo "running"; return 0; fi
    mkdir -p "$STATE/me"
    # its own process session: it outlives this call while the machine is kept
    setsid nohup bash scripts/build_minkowski_cuda.sh --python "$PY" --target "$STATE/site" --jobs "$BUILD_JOBS" \
        --work "$STATE/me" >"$STATE/logs/me-build.out" 2>&1 </dev/null &
    echo $! >"$STATE/me-build.pid"
    echo "started (pid $!, $BUILD_JOBS jobs); progress: $STATE/me/build.log"
}

wait_build() {
    [ -n "$SKIP_BUILD" ] && return 0
    while [ ! -f "$STATE/me/build-record.json" ]; do
        if ! kill -0 "$(cat "$STATE/me-build.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
            echo "the MinkowskiEngine build ended without a build record:"; tail -40 "$STATE/logs/me-build.out"; return 1
        fi
        if [ "$(left)" -lt 60 ]; then echo "still building"; return 3; fi
        sleep 10
    done
    cat "$STATE/me/build-record.json"
}

pretrain() {
    rm -rf "$STATE/runs/pretrain-gpu"
    # the demo preset, with epochs enough for the steps (its 2 epochs are 40 steps of one scene) and
    # data loading in worker processes
    printf 'optim: {epochs: 1000}\ndata: {num_workers: 4}\nrun: {checkpoint_every: 100, image_every: 100}\n' >"$STATE/pretrain-gpu.yaml"
    "${HVD[@]}" train pretrain --preset demo --config "$STATE/pretrain-gpu.yaml" --source "$SOURCE" --max-steps "$STEPS" \
        --out "$STATE/runs/pretrain-gpu" || return
    "$PY" bench/gpu_summary.py run "$STATE/runs/pretrain-gpu"
}

# --- the steps ----------------------------------------------------------------------------------------
step env 10 env_report
if [ -n "$SKIP_BUILD" ] && ! ls .whl/*.whl >/dev/null 2>&1; then
    touch "$STATE/wheels.done"
elif ! step wheels 90 install_wheels; then
    say "hvd cannot run without its packages: stopping here"
    "$PY" bench/gpu_summary.py summary "$STATE" "$OUTDIR/summary.md"
    exit 1
fi
step me-start 10 start_build
step synth 150 "${HVD[@]}" data synth "${SYNTH[@]}" --workers "$DATA_JOBS"
step prep 240 "${HVD[@]}" prep all --source "$SOURCE" --workers "$DATA_JOBS"
if ! [ -f "$STATE/me-wait.done" ]; then
    # waiting is worth a call's remaining time: the measurements need the build
    step me-wait 60 wait_build
    [ -f "$STATE/me-wait.done" ] || rm -f "$STATE/me-wait.failed"
    [ -f "$STATE/me/build-record.json" ] || [ -n "$SKIP_BUILD" ] || PENDING+=(me-wait)
fi
if [ -f "$STATE/me-wait.done" ]; then
    step tests 240 "$PY" -m pytest tests/gpu -q -p no:cacheprovider -rs --junitxml="$STATE/logs/tests.xml"
    step bench-bev 60 "$PY" bench/bev_memory.py
    step bench-train 180 "$PY" bench/train.py --source "$SOURCE" --batch "$BATCH" --steps 5 --published-widths --teacher
    step pretrain 240 pretrain
fi

# --- what came out of it ------------------------------------------------------------------------------
"$PY" bench/gpu_summary.py summary "$STATE" "$OUTDIR/summary.md" || say "the summary could not be written"
tar -czf "$OUTDIR/logs.tar.gz" -C "$STATE" logs steps.tsv $(cd "$STATE" && ls me/build.log me/build-record.json 2>/dev/null) 2>/dev/null
left_steps=""
for s in env wheels me-start synth prep me-wait tests bench-bev bench-train pretrain; do
    [ -f "$STATE/$s.done" ] || left_steps+=" $s"
done
if [ -z "$left_steps" ]; then
    say "all done: $OUTDIR/summary.md"
else
    say "not done yet:$left_steps; run scripts/gpu_check.sh again (failed steps rerun with HVD_GPU_RETRY=1)"
fi
