"""Summaries for scripts/gpu_check.sh: of a pretraining run, and of a whole GPU check so far.

    python bench/gpu_summary.py run RUN_DIR             # a pretraining run's losses and speed
    python bench/gpu_summary.py summary STATE OUT.md    # every step's result so far, one Markdown file

``summary`` reads what the check left in its state folder (steps.tsv, logs/, me/build-record.json)
and works on a partial check too: the steps not run yet are named as such.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

NUSCENES_PRETRAIN_EXAMPLES = 24_000  # SLidR's 600 pretraining scenes, ~40 keyframes each (docs/METHOD.md)
STEPS = ("env", "wheels", "me-start", "synth", "prep", "me-wait", "tests", "bench-bev", "bench-train", "pretrain")


def run_summary(run_dir: Path) -> str:
    """Losses at the start and the end of a pretraining run and its steady examples/s (TensorBoard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    losses = [t for t in scalars if t.split("/", 1)[-1] in ("ipv", "bev", "depth", "total")]
    if not losses:
        raise SystemExit(f"{run_dir}: no loss scalars in its TensorBoard log")
    lines = [f"pretraining run {run_dir}: {len(scalars[losses[0]])} logged steps (last step {scalars[losses[0]][-1].step})", "", "| loss | mean of the first 10 logged | mean of the last 10 logged |", "|---|---|---|"]
    for tag in sorted(losses):
        values = [e.value for e in scalars[tag]]
        lines.append(f"| {tag} | {statistics.fmean(values[:10]):.4f} | {statistics.fmean(values[-10:]):.4f} |")
    speed = next((scalars[t] for t in scalars if t.endswith("examples_per_s")), [])
    if len(speed) > 5:
        steady = [e.value for e in speed[5:]]  # the first steps warm up (cuDNN autotuning, allocator)
        wall = speed[-1].wall_time - speed[0].wall_time
        lines += ["", f"examples/s (median of logged steps after the 5th): {statistics.median(steady):.2f}; {wall:.0f} s from the first logged step to the last"]
    return "\n".join(lines)


def _log(state: Path, name: str, limit: int = 120) -> str | None:
    path = state / "logs" / f"{name}.log"
    if not path.exists():
        return None
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) > limit:
        lines = [f"... ({len(lines) - limit} earlier lines in logs.tar.gz)"] + lines[-limit:]
    return "\n".join(lines)


def _tests(state: Path) -> list[str]:
    path = state / "logs" / "tests.xml"
    if not path.exists():
        return []
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    out = [f"{counts['tests']} tests: {counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped", ""]
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            bad = case.find(kind)
            if bad is not None:
                message = (bad.get("message") or "").splitlines()[0][:300] if bad.get("message") else ""
                out.append(f"- {kind.upper()} {case.get('name')}: {message}")
    return out


def _epoch_estimate(bench: str) -> list[str]:
    """One nuScenes pretraining epoch on one GPU from bench/train.py's cache-vs-teacher table."""
    out = []
    for label, pattern in (("teacher features from the cache (hvd)", r"ours: teacher features read from the cache \| ([0-9.]+) \| ([0-9.]+) MiB"), ("teacher run online every step (the reference's way)", r"reference: frozen teacher on the raw images every step \| ([0-9.]+) \| ([0-9.]+) MiB")):
        m = re.search(pattern, bench)
        if m:
            rate, peak = float(m.group(1)), float(m.group(2))
            hours = NUSCENES_PRETRAIN_EXAMPLES / rate / 3600 if rate > 0 else float("inf")
            out.append(f"| {label} | {rate:.2f} | {peak / 1024:.1f} GiB | {hours:.2f} h |")
    if out:
        out = ["| pretraining step, batch 4 | examples/s | peak GPU memory | one nuScenes epoch (24,000 examples), one GPU |", "|---|---|---|---|"] + out
    return out


def summary(state: Path, out: Path) -> None:
    done = {}
    steps_file = state / "steps.tsv"
    if steps_file.exists():
        for line in steps_file.read_text().splitlines():
            name, result, seconds = line.split("\t")
            done[name] = (result, seconds)  # the last attempt counts
    md = [f"# GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "", "| step | result | seconds |", "|---|---|---|"]
    md += [f"| {s} | {done[s][0] if s in done else 'not run yet'} | {done[s][1] if s in done else ''} |" for s in STEPS]
    env = _log(state, "env")
    if env:
        md += ["", "## Machine", "", "```", env, "```"]
    record = state / "me" / "build-record.json"
    if record.exists():
        r = json.loads(record.read_text())
        md += ["", "## MinkowskiEngine build", "", f"{r['seconds']} s with {r['jobs']} jobs for architecture {r['arch']}: MinkowskiEngine {r['minkowskiengine']}, torch {r['torch']} (CUDA {r['torch_cuda']}), nvcc {r['nvcc']}, BLAS {r['blas']}; patches {', '.join(r['patches'])}.", "", r["check"]]
    elif (state / "logs" / "me-build.out").exists():
        md += ["", "## MinkowskiEngine build (not finished)", "", "```", (state / "logs" / "me-build.out").read_text(errors="replace")[-3000:], "```"]
    tests = _tests(state)
    if tests:
        md += ["", "## GPU tests", ""] + tests
    bench_train = _log(state, "bench-train", limit=200)
    if bench_train:
        estimate = _epoch_estimate(bench_train)
        if estimate:
            md += ["", "## nuScenes epoch estimate", ""] + estimate
        md += ["", "## bench/train.py", "", bench_train]
    for name, title in (("bench-bev", "bench/bev_memory.py"), ("pretrain", "200-step demo pretraining")):
        text = _log(state, name, limit=60)
        if text:
            md += ["", f"## {title}", "", "```", text, "```"]
    failed = [s for s in STEPS if s in done and done[s][0] != "ok"]
    for name in failed:
        if name not in ("bench-bev", "pretrain"):
            md += ["", f"## {name} failed: the end of its log", "", "```", _log(state, name, limit=40) or "(no log)", "```"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="a pretraining run's losses and speed")
    r.add_argument("run_dir", type=Path)
    s = sub.add_parser("summary", help="the GPU check's results so far, as Markdown")
    s.add_argument("state", type=Path)
    s.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.what == "run":
        print(run_summary(args.run_dir))
    else:
        summary(args.state, args.out)


if __name__ == "__main__":
    sys.exit(main())
