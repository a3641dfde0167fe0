"""Checks that hvd's dependencies are met on the GPU machine, by the carried wheels and the image together.

Run from the repository root after the wheels are installed, with the same PYTHONPATH hvd runs with:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/hvd-site .whl/*.whl && export PYTHONPATH=/tmp/hvd-site:$PWD
    python3 scripts/gpu/check_deps.py /tmp/hvd-site

The wheels are installed with --no-deps, so pip checks nothing. This walks hvd's requirements
(pyproject.toml: dependencies and the dev extra) and every requirement of every distribution
installed in the site folder, for this interpreter (markers, extras), and looks each one up as
Python imports it (the first distribution of that name on sys.path: a carried wheel shadows the
image's copy). Prints what is missing or at a version outside the requirement, and exits 1 if
anything is, except the known exceptions below. Also lists the image packages the carried
wheels shadow, and any carried wheel that nothing requires.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# (requirer, requirement name): why an unmet requirement is accepted.
KNOWN = {
    ("nuscenes-devkit", "numpy"): "its metadata pins numpy<2; what hvd uses of it runs on numpy 2 (scripts/gpu/emulate_image.sh)",
    ("hvd", "opencv-contrib-python-headless"): "cv2.ximgproc is only needed by the superpixel algorithms opencv_slic/opencv_slico; "
    "the GPU check uses skimage_slic (source synth-gpu)",
    ("hvd", "pyarrow"): "pyproject's pyarrow<25 only keeps numpy 1 installable here (pyarrow 25+ needs numpy 2, the devkit pins "
    "numpy<2); with the image's numpy 2 its pyarrow is fine (scripts/gpu/emulate_image.sh runs hvd on pyarrow 26)",
    ("nuscenes-devkit", "shapely"): "imported only by the devkit's map expansion and scripts, not by what hvd imports",
    ("nuscenes-devkit", "pycocotools"): "imported only by the devkit's detection-eval scripts, not by what hvd imports",
}


def installed(name: str):
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def main(site: str, pyproject: str = "pyproject.toml") -> int:
    site_path = Path(site).resolve()
    if str(site_path) not in {str(Path(p).resolve()) for p in sys.path if p}:
        print(f"warning: {site_path} is not on sys.path (set PYTHONPATH as hvd runs with)")
    carried = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site_path)])}
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    roots = [("hvd", r) for r in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])]
    env = default_environment()

    todo = [(who, Requirement(r)) for who, r in roots]
    for name, dist in carried.items():
        todo += [(name, Requirement(r)) for r in dist.requires or []]
    problems, accepted, needed, seen, walked = [], [], set(), set(), set()
    while todo:
        who, req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        needed.add(name)
        key = (who, name, str(req.specifier))
        if key in seen:
            continue
        seen.add(key)
        dist = installed(req.name)
        bad = None
        if dist is None:
            bad = f"{who} needs {req}: not installed"
        elif req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            bad = f"{who} needs {req}: {dist.version} found ({where(dist, site_path)})"
        if bad:
            if (who, name) in KNOWN:
                accepted.append(f"{bad} -- {KNOWN[(who, name)]}")
            else:
                problems.append(bad)
        if dist is None:
            continue
        # the requirements of what is reached, once per distribution and extra (httpx[http2]: h2)
        for extra in ("",) + tuple(sorted(req.extras)):
            if (name, extra) in walked:
                continue
            walked.add((name, extra))
            for r in map(Requirement, dist.requires or []):
                if r.marker is None or r.marker.evaluate({**env, "extra": extra}):
                    if extra and (r.marker is None or not _mentions_extra(r)):
                        continue  # the base requirements are walked with extra ""
                    r.marker = None
                    todo.append((name, r))

    shadowed = []
    for name, dist in sorted(carried.items()):
        others = [d for d in metadata.distributions(name=name) if Path(str(d.locate_file(""))).resolve() != site_path]
        if others:
            shadowed.append(f"{name} {dist.version} (image: {', '.join(sorted({d.version for d in others}))})")
    unused = sorted(set(carried) - needed)

    print(f"{len(carried)} distributions in {site_path}; {len(needed)} requirement names checked")
    if shadowed:
        print("carried, shadowing the image's copy: " + "; ".join(shadowed))
    if unused:
        print("carried but required by nothing checked: " + ", ".join(unused))
    for line in accepted:
        print("accepted: " + line)
    for line in problems:
        print("UNMET: " + line)
    print("ok: every requirement is met" if not problems else f"{len(problems)} unmet requirement(s)")
    return 1 if problems else 0


def _mentions_extra(req: Requirement) -> bool:
    return "extra" in str(req.marker)


def where(dist, site_path: Path) -> str:
    loc = Path(str(dist.locate_file(""))).resolve()
    return "carried" if loc == site_path else f"image, {loc}"


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
