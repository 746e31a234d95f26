"""Run the benchmark suite: ``python -m benchmarks.run [--quick] [--cases swin,cswin]``.

For each registered case (:mod:`benchmarks.cases`): check that every implementation agrees
with attnblocks, then time forward at batch 1 and 8 and forward+backward at batch 8 (fp32,
interleaved, ratios per pass), measure peak memory of forward+backward in a fresh process per
implementation, the distance to the floor, and a resolution sweep. ``--malloc both`` runs the
whole measurement once per glibc malloc setting (each in its own process, since glibc reads
them at start-up). Results go to ``benchmarks/results/`` as markdown, JSON and a PNG chart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .cases import CASES, Case
from .floor import core_step, floor_step
from .memory import measure
from .references import Unavailable
from .timing import interleave, step

# glibc keeps large temporaries instead of mmapping and unmapping them on every call
TUNED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": "2147483647",
    "MALLOC_TRIM_THRESHOLD_": "4294967295",
    "MALLOC_TOP_PAD_": "536870912",
}
RESULTS = Path(__file__).parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int) -> dict:
    return {
        "torch": torch.__version__,
        "threads": threads,
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical CPUs)",
        "python": platform.python_version(),
        "malloc": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")} or "default",
        "load_before": os.getloadavg()[0],
    }


def check(case: Case, mods: dict, x: torch.Tensor, skipped: dict[str, str]) -> dict[str, float]:
    """Max abs difference of each implementation's forward from attnblocks'; raise if off.

    A reference whose call raises :class:`~benchmarks.references.Unavailable` is dropped from
    ``mods`` and its reason goes to ``skipped``.
    """
    with torch.no_grad():
        ref = mods["attnblocks"].eval()(x)
        diffs = {}
        for name, m in list(mods.items()):
            try:
                out = m.eval()(x)
            except Unavailable as e:
                skipped[name] = str(e)
                del mods[name]
                continue
            diffs[name] = float((out - ref).abs().max())
            impl = case.impl(name)
            if impl is not None and diffs[name] > impl.atol:
                raise RuntimeError(f"{case.name}: {name} differs from attnblocks by {diffs[name]}")
    return diffs


def _preflight(fns: dict, skipped: dict[str, str], label: str) -> None:
    """One call of each (the first warm-up); drop those that raise ``Unavailable``."""
    for name, fn in list(fns.items()):
        try:
            fn()
        except Unavailable as e:
            skipped[f"{name} ({label})"] = str(e)
            del fns[name]


def time_case(case: Case, args, hw=None, batches=None, modes=("fwd", "train")) -> dict:
    skipped: dict[str, str] = {}
    mods = case.build(hw, skipped)
    shape = hw or case.hw
    out: dict = {}
    torch.manual_seed(0)
    diffs = check(case, mods, torch.randn(1, *shape, case.dim), skipped)
    caps = {r.name: r.reps for r in case.references if r.reps is not None}
    for mode in modes:
        for B in batches or (case.batches if mode == "fwd" else case.batches[-1:]):
            x = torch.randn(B, *shape, case.dim)
            names = [n for n in mods if mode == "fwd" or n == "attnblocks" or case.impl(n).train]
            fns = {n: step(mods[n], x, mode) for n in names}
            _preflight(fns, skipped, f"{mode}{B}")
            t = interleave(fns, passes=args.passes, reps=args.reps, warmup=1, reps_for=caps)
            out[f"{mode}{B}"] = asdict(t)
    out["max_abs_diff"] = diffs  # forward at batch 1 against attnblocks, checked before timing
    if skipped:
        out["skipped"] = skipped
    return out


def floor_case(case: Case, args, batch: int) -> dict:
    H, W = case.hw
    x = torch.randn(batch, H, W, case.dim)
    fns = {}
    for label, spec in (("core", case.core_spec()), ("core+pe", case.spec())):
        fns[label] = core_step(spec.build(case.dim, case.heads), x)
    fns["floor"] = floor_step(case.core_spec().build(case.dim, case.heads), x)
    return asdict(interleave(fns, base="floor", passes=args.passes, reps=args.reps))


def measure_all(args) -> dict:
    torch.set_num_threads(args.threads)
    res = {"machine": machine(args.threads), "cases": {}}
    for name in args.cases:
        case = CASES[name]
        t0 = time.perf_counter()
        r: dict = {"title": case.title, "shape": [*case.hw, case.dim, case.heads]}
        r["growth"] = case.growth
        r["notes"] = {i.name: i.note for i in case.references if i.note}
        r["time"] = time_case(case, args)
        if case.floor:
            r["floor"] = {f"fwd{b}": floor_case(case, args, b) for b in (1, 8)}
        if not args.quick:
            r["memory"] = {}
            timed = r["time"]["train8"]["ms"]
            for impl in ["attnblocks", *(i.name for i in case.references if i.train)]:
                if impl in timed:
                    r["memory"][impl] = measure(name, impl, 8, args.threads)
            if case.sweep and name in args.sweep:
                r["sweep"] = {}
                for f in (1, 2, 4):
                    hw = (case.hw[0] * f, case.hw[1] * f)
                    t = time_case(case, args, hw, batches=(1,), modes=("fwd",))
                    r["sweep"][f"{hw[0]}x{hw[1]}"] = t["fwd1"] | {"skipped": t.get("skipped", {})}
        r["seconds"] = time.perf_counter() - t0
        res["cases"][name] = r
        print(f"  {name}: {r['seconds']:.0f} s", file=sys.stderr)
        if args.child is not None:  # partial results survive an interrupted run
            args.child.with_suffix(".partial.json").write_text(json.dumps(res))
    res["machine"]["load_after"] = os.getloadavg()[0]
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, no memory, no sweep")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    p.add_argument("--sweep", default=None, help="cases for the resolution sweep (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--malloc",
        choices=("current", "tuned", "default", "both"),
        default=None,
        help="glibc malloc settings to run under (default: both; --quick: current)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="", help="a tag for the output file names")
    p.add_argument("--passes", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.sweep = args.cases if args.sweep is None else [c for c in args.sweep.split(",") if c]
    unknown = [c for c in args.cases + args.sweep if c not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; registered: {sorted(CASES)}")
    args.malloc = args.malloc or ("current" if args.quick else "both")
    args.passes = args.passes or (3 if args.quick else 7)
    args.reps = args.reps or (3 if args.quick else 5)
    if args.child is not None or args.malloc == "current":
        res = measure_all(args)
        if args.child is not None:
            args.child.write_text(json.dumps(res))
            return
        runs = {"current": res}
    else:
        runs = {}
        settings = ("tuned", "default") if args.malloc == "both" else (args.malloc,)
        for setting in settings:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            if setting == "tuned":
                env |= TUNED_MALLOC
            env["OMP_NUM_THREADS"] = str(args.threads)
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                path = Path(f.name)
            cmd = [sys.executable, "-m", "benchmarks.run", "--child", str(path)]
            cmd += ["--cases", ",".join(args.cases), "--threads", str(args.threads)]
            cmd += ["--sweep", ",".join(args.sweep)]
            cmd += ["--passes", str(args.passes), "--reps", str(args.reps)]
            cmd += ["--quick"] if args.quick else []
            print(f"malloc {setting} ({path}):", file=sys.stderr)
            subprocess.run(cmd, env=env, check=True)
            runs[setting] = json.loads(path.read_text())
            path.unlink()
    from .report import write_report

    args.out.mkdir(parents=True, exist_ok=True)
    for path in write_report(runs, args.out, quick=args.quick, stem=args.name):
        print(path)


if __name__ == "__main__":
    main()
