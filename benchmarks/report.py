"""Write the measured results as markdown tables, JSON and a PNG chart.

``python -m benchmarks.report OUT.png results-a.json [results-b.json ...]`` redraws one
combined chart from committed results (no benchmarking): the docs' chart per device is
``python -m benchmarks.report docs/img/ratios-cpu.png benchmarks/results/results-2threads.json
benchmarks/results/results-2threads-windows.json benchmarks/results/results-2threads-sliding.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["combined_chart", "markdown", "write_report"]

MODES = (("fwd1", "fwd b1"), ("fwd8", "fwd b8"), ("train8", "fwd+bwd b8"))


def modes(r: dict) -> list[tuple[str, str]]:
    """The timed modes of one case's results, ``(key, label)``: :data:`MODES` for the cases
    timed at batches 1 and 8, else those its ``batches`` gave (``fwd1``, ``fwd2``, ``train2``)."""
    keys = [k for k in r["time"] if k.startswith(("fwd", "train"))]
    if all(k in keys for k, _ in MODES):
        return list(MODES)
    return [(k, f"fwd b{k[3:]}" if k.startswith("fwd") else f"fwd+bwd b{k[5:]}") for k in keys]


def _tag(m: dict) -> str:
    malloc = m["malloc"]
    if isinstance(malloc, dict):
        malloc = ", ".join(f"{k}={v}" for k, v in malloc.items())
    return (
        f"torch {m['torch']}, {m['threads']} threads, {m['cpu']}, Python {m['python']}; "
        f"malloc: {malloc}; load average {m['load_before']:.1f} before, "
        f"{m['load_after']:.1f} after"
    )


def _case_table(r: dict) -> list[str]:
    t, ms_ = r["time"], modes(r)
    head = "| implementation | " + " | ".join(f"{label} ms | ratio" for _, label in ms_)
    mem = "memory" in r
    head += " | peak tensors MiB | peak RSS MiB |" if mem else " |"
    cols = 2 * len(ms_) + (2 if mem else 0)
    lines = [head, "|---" * (cols + 1) + "|"]
    for name in t["fwd1"]["ms"]:
        cells = [name]
        for key, _ in ms_:
            ms, ratio = t[key]["ms"].get(name), t[key]["ratio"].get(name)
            cells += ["-", "-"] if ms is None else [f"{ms:.2f}", f"{ratio:.2f}"]
        if mem:
            m = r["memory"].get(name)
            rss = None if m is None else m["rss_mib"]
            cells += ["-" if m is None else f"{m['tensor_mib']:.0f}"]
            cells += ["-" if rss is None else f"{rss:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(run: dict, setting: str) -> str:
    """One run (one malloc setting) as markdown."""
    out = [f"## malloc: {setting}", "", _tag(run["machine"]), ""]
    out += [
        "Ratios are `t(implementation) / t(attnblocks)`, the median over interleaved passes: "
        "above 1 means attnblocks is faster. Memory: forward+backward at batch 8, fresh process.",
        "",
    ]
    for name, r in run["cases"].items():
        out += [f"### {name}: {r['title']}", "", *_case_table(r), ""]
        notes = [f"- `{impl}`: {note}" for impl, note in r.get("notes", {}).items()]
        notes += [
            f"- `{impl}` not measured: {why}" for impl, why in r["time"].get("skipped", {}).items()
        ]
        out += [*notes, ""] if notes else []
    floors = {n: r["floor"] for n, r in run["cases"].items() if "floor" in r}
    if floors:
        out += _floor_table(floors)
    sweeps = {n: r for n, r in run["cases"].items() if "sweep" in r}
    if sweeps:
        out += ["", *_sweep_table(sweeps)]
    return "\n".join(out) + "\n"


def _floor_table(floors: dict) -> list[str]:
    out = ["### Distance to the floor (forward, no grad)", ""]
    out += [
        "`core`: what the layer does besides its qkv and output projections (token gathers, "
        "masks, attention; `benchmarks/floor.py`), partition only; "
        "`core+pe`: with its positional encoder; `floor`: one SDPA call on q, k, v already laid "
        "out in groups. Values are `t / t(floor)`.",
        "",
        "| case | b1 core | b1 core+pe | b8 core | b8 core+pe | b8 floor ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, fl in floors.items():
        f1, f8 = fl["fwd1"]["ratio"], fl["fwd8"]["ratio"]
        out.append(
            f"| {name} | {f1['core']:.2f} | {f1['core+pe']:.2f} | {f8['core']:.2f} | "
            f"{f8['core+pe']:.2f} | {fl['fwd8']['ms']['floor']:.2f} |"
        )
    out += ["", "Only for rectangular partitions (windows, stripes, grids)."]
    return out


def _sweep_table(cases: dict) -> list[str]:
    """Per case and map: attnblocks ms, its growth over the first map against the theory."""
    from .cases import GROWTH

    out = ["### Resolution sweep (forward, batch 1): attnblocks ms, growth and ratios", ""]
    out += [
        "`growth`: attnblocks' time over its time at the first map; `theory`: the token count's "
        "growth raised to the case's `law` (`N`: windows, neighbourhoods; `N*sqrt(N)`: "
        "stripes; `N*N/r^2`: downsampled keys).",
        "",
        "| case | law | map | attnblocks ms | growth | theory | ratios |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in cases.items():
        law = r.get("growth", "N")
        first = None
        for hw, t in r["sweep"].items():
            ms = t["ms"]["attnblocks"]
            rows, cols = (int(v) for v in hw.split("x"))
            n = rows * cols
            first = first or (ms, n)
            theory = (n / first[1]) ** GROWTH[law]
            parts = [f"{k} {v:.2f}" for k, v in t["ratio"].items() if k != "attnblocks"]
            parts += [f"{k} not run" for k in t.get("skipped", {})]
            out.append(
                f"| {name} | {law} | {hw} | {ms:.2f} | {ms / first[0]:.1f}x | {theory:.0f}x | "
                f"{', '.join(parts) or '-'} |"
            )
    return out


def _bars(ax, run: dict) -> int:
    """One row per case and mode, one bar per reference, from 1 (parity) to the ratio on a log
    axis: the ratios span 0.9x to 100x, and a linear axis flattens everything under the
    largest. Returns the number of rows."""
    import matplotlib as mpl

    rows, colors = [], {}
    cycle = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    for cname, r in run["cases"].items():
        for key, label in modes(r):
            refs = {k: v for k, v in r["time"][key]["ratio"].items() if k != "attnblocks"}
            if refs:
                rows.append((f"{cname}, {label}", refs))
    for y, (_, refs) in enumerate(rows):
        h = 0.8 / len(refs)
        for j, (impl, ratio) in enumerate(refs.items()):
            color = colors.setdefault(impl, cycle[len(colors) % len(cycle)])
            ax.barh(y - 0.4 + (j + 0.5) * h, ratio - 1, h, left=1, color=color)
            ax.text(
                ratio * (1.02 if ratio >= 1 else 0.98),
                y - 0.4 + (j + 0.5) * h,
                f"{ratio:.2f}",
                va="center",
                ha="left" if ratio >= 1 else "right",
                fontsize=7.5,
            )
    ratios = [v for _, refs in rows for v in refs.values()]
    ax.set_xscale("log")
    ax.set_xlim(min(0.8, min(ratios) * 0.9), max(ratios) * 1.6)
    ticks = [
        t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200) if min(ratios) / 2 < t < max(ratios) * 2
    ]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("t(reference) / t(attnblocks), log scale: right of 1, attnblocks is faster")
    ax.grid(axis="x", which="both", lw=0.3, alpha=0.5)
    handles = [mpl.patches.Patch(color=c, label=k) for k, c in colors.items()]
    ax.legend(handles=handles, fontsize=9, loc="upper right")
    return len(rows)


def _chart(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(runs)
    rows = max(sum(len(modes(r)) for r in run["cases"].values()) for run in runs.values())
    fig, axes = plt.subplots(n, 1, figsize=(9, (0.9 + 0.28 * rows) * n), squeeze=False)
    for ax, (setting, run) in zip(axes[:, 0], runs.items()):
        _bars(ax, run)
        m = run["machine"]
        ax.set_title(
            f"malloc {setting}: torch {m['torch']}, {m['threads']} threads, {m['cpu']}", fontsize=9
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def combined_chart(files: list[Path], path: Path, setting: str = "tuned") -> None:
    """One chart of several result files' cases (one malloc setting): a later file's case
    replaces an earlier one's. For the docs: one chart per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, machine = {}, None
    for f in files:
        run = json.loads(Path(f).read_text())[setting]
        cases.update(run["cases"])
        machine = run["machine"]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * len(MODES) * len(cases)))
    _bars(ax, {"cases": cases})
    ax.set_title(
        f"torch {machine['torch']}, {machine['threads']} threads, {machine['cpu']}, "
        f"malloc {setting}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(runs: dict, out: Path, quick: bool = False, stem: str = "") -> list[Path]:
    """Write ``results.md``, ``results.json`` and ``ratios.png`` (``quick-*`` when quick).

    ``stem`` is inserted into the names (``results-1thread.md``) to keep runs apart.
    """
    prefix = "quick-" if quick else ""
    stem = f"-{stem}" if stem else ""
    md = out / f"{prefix}results{stem}.md"
    title = "# attnblocks benchmark results" + (" (quick mode)" if quick else "")
    md.write_text(title + "\n\n" + "\n".join(markdown(r, s) for s, r in runs.items()))
    js = out / f"{prefix}results{stem}.json"
    js.write_text(json.dumps(runs, indent=1))
    png = out / f"{prefix}ratios{stem}.png"
    _chart(runs, png)
    return [md, js, png]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Redraw one chart from result JSON files.")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="results-*.json, later ones win")
    parser.add_argument("--malloc", default="tuned", help="the malloc setting to draw")
    args = parser.parse_args()
    combined_chart(args.results, args.out, args.malloc)
    print(args.out)
