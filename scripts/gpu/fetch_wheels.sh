#!/usr/bin/env bash
# Fetches the wheels the GPU machine lacks into .whl/ (git-ignored) for the issue-18 GPU check.
# Run it here, on a machine that reaches PyPI; the GPU machine has no network.
#
#   scripts/gpu/fetch_wheels.sh            # into .whl/ at the repository root
#   HVD_WHL_DIR=DIR HVD_WHL_BUDGET_MIB=45 scripts/gpu/fetch_wheels.sh
#
# - every pin of scripts/gpu/requirements.txt, as a binary wheel for CPython 3.12 on manylinux
#   x86_64 (--no-deps: requirements.txt already holds the closure; nothing is built);
# - the MinkowskiEngine 0.5.4 sdist (pip cannot download it without building it: its link is read
#   from the package index's simple page), checked against its sha256; it is built on the GPU machine;
# - removes any other wheel from the folder (two versions of one name stop the install there);
# - fails, naming them, if any pin does not resolve, and if the folder is over the budget
#   (HVD_WHL_BUDGET_MIB, default 50: the whole working tree that travels is capped at 64 MiB).
# Succeeding is the CPU-side check that the wheels resolve for Python 3.12.
# On the GPU machine they are installed with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/hvd-site .whl/*.whl && export PYTHONPATH=/tmp/hvd-site:$PWD
set -euo pipefail
cd "$(dirname "$0")/../.."

REQ=scripts/gpu/requirements.txt
DEST=${HVD_WHL_DIR:-.whl}
BUDGET_MIB=${HVD_WHL_BUDGET_MIB:-50}
PY=${PYTHON:-python3}
ME_SHA256=b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94
say() { printf '\033[1m[fetch_wheels]\033[0m %s\n' "$*"; }
die() { printf '\033[1m[fetch_wheels]\033[0m ERROR: %s\n' "$*" >&2; exit 1; }

# The GPU image is Ubuntu 24.04 (glibc 2.39): any manylinux tag up to 2_39 runs there. pip matches
# each --platform exactly, so name the ones wheels are published with.
PLATFORMS=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
    manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 \
    manylinux_2_5 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done
PIP_ARGS=(--disable-pip-version-check download --no-deps --only-binary=:all: --python-version 3.12
    --implementation cp "${PLATFORMS[@]}" -d "$DEST")

mapfile -t PINS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$REQ" | grep -v '^$')
[ "${#PINS[@]}" -gt 0 ] || die "no pins in $REQ"
for pin in "${PINS[@]}"; do
    [[ "$pin" =~ ^[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+$ ]] || die "not an exact pin name==version in $REQ: $pin"
done
mkdir -p "$DEST"

say "downloading ${#PINS[@]} wheels for CPython 3.12 manylinux x86_64 into $DEST/"
if ! "$PY" -m pip "${PIP_ARGS[@]}" -q "${PINS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); then
    # Name every pin that does not resolve, not only the first one pip stopped at.
    say "pip failed; trying the pins one by one to name those that do not resolve"
    bad=()
    for pin in "${PINS[@]}"; do
        "$PY" -m pip "${PIP_ARGS[@]}" -q "$pin" >/dev/null 2>&1 || bad+=("$pin")
    done
    [ "${#bad[@]}" -gt 0 ] || die "each pin resolves alone, but not all together: see the message of pip above"
    die "no cp312 manylinux x86_64 wheel for: ${bad[*]}"
fi

# Keep exactly the pinned wheels: one wheel per pin, nothing else.
"$PY" - "$DEST" "${PINS[@]}" <<'PY'
import os, re, sys
dest, pins = sys.argv[1], sys.argv[2:]
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
want = {}
for p in pins:
    n, v = p.split("==")
    want[norm(n)] = v
found, stale = {}, []
for f in sorted(os.listdir(dest)):
    if not f.endswith(".whl"):
        continue
    name, ver = f[:-4].split("-")[:2]
    if want.get(norm(name)) == ver:
        found.setdefault(norm(name), []).append(f)
    else:
        stale.append(f)
for f in stale:
    print(f"[fetch_wheels] removing {f}: not pinned in requirements.txt")
    os.remove(os.path.join(dest, f))
missing = sorted(set(want) - set(found))
twice = {n: fs for n, fs in found.items() if len(fs) > 1}
if missing or twice:
    sys.exit(f"[fetch_wheels] ERROR: no wheel for {missing}; several wheels for {twice}")
PY

# MinkowskiEngine's sdist (built on the GPU machine, not installed by the command above). pip
# cannot download it without building it, so take its link from the package index pip uses (its
# simple page) and check the file against the sha256 known for it.
ME_FILE="$DEST/MinkowskiEngine-0.5.4.tar.gz"
sha_ok() { [ -f "$ME_FILE" ] && echo "$ME_SHA256  $ME_FILE" | sha256sum -c --status; }
if ! sha_ok; then
    say "downloading the MinkowskiEngine 0.5.4 sdist"
    rm -f "$ME_FILE"
    INDEX=${PIP_INDEX_URL:-$("$PY" -m pip config get global.index-url 2>/dev/null \
        || "$PY" -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')}
    "$PY" - "$INDEX" "$ME_FILE.part" <<'PY' || die "could not download the MinkowskiEngine 0.5.4 sdist"
import re, sys, urllib.parse, urllib.request
index, out = sys.argv[1].rstrip("/") + "/minkowskiengine/", sys.argv[2]
page = urllib.request.urlopen(urllib.request.Request(index, headers={"Accept": "text/html"}), timeout=120).read().decode()
links = [urllib.parse.urljoin(index, h) for h in re.findall(r'href="([^"]+)"', page) if "MinkowskiEngine-0.5.4.tar.gz" in h]
if not links:
    sys.exit(f"no MinkowskiEngine-0.5.4.tar.gz on {index}")
urllib.request.urlretrieve(links[0].split("#")[0], out)
PY
    mv "$ME_FILE.part" "$ME_FILE"
    sha_ok || { rm -f "$ME_FILE"; die "MinkowskiEngine-0.5.4.tar.gz does not match sha256 $ME_SHA256"; }
fi

n_whl=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
bytes=$(find "$DEST" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
say "$n_whl wheels + MinkowskiEngine sdist in $DEST/: $mib MiB ($bytes bytes); budget $BUDGET_MIB MiB"
say "largest: $(find "$DEST" -maxdepth 1 -type f -printf '%s %f\n' | sort -rn | head -5 \
    | awk '{printf "%s (%.1f MiB)  ", $2, $1 / 1048576}')"
awk -v b="$bytes" -v m="$BUDGET_MIB" 'BEGIN {exit !(b <= m * 1048576)}' \
    || die "$DEST/ holds $mib MiB, over the $BUDGET_MIB MiB budget"
say "ok"
