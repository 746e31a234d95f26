"""A short device benchmark: ``python -m benchmarks.gpu --device cuda --dtype bf16 --out DIR``.

Per case (stage-1 shapes of the Tiny models, 56x56 map), the layer on each backend it has
(``eager``; ``eager`` compiled, forward only; ``flex`` compiled with inductor), forward
without gradient and forward+backward, median milliseconds; and the attention core alone on
``(B, H, W, heads, D)``
tensors against the anchors where installed: ``attnblocks.functional.attention`` (eager),
FlexAttention compiled with the exported ``attnblocks.flex.block_mask``, NATTEN's fused
``na2d`` (neighbourhood cases) and dense SDPA over all tokens (the unmasked upper bound).
Ratios are to the eager layer / the eager core. Writes ``gpu.json`` and ``gpu.md`` to
``--out`` after every case (a run cut short keeps the cases it finished). ``--quick`` (small
map, few repetitions) is what the CPU test runs.

``auto``'s CUDA rule (``attnblocks.backends.registry.AUTO_FLEX_ON_CUDA``, off: unmeasured)
would run ``flex`` instead of ``eager`` inside ``torch.compile``, on CUDA, without a graph.
What decides it is the forward without gradient of the compiled flex layer against the
compiled eager layer, per case: the ``auto_rule`` section of the output (``flex / eager``,
both compiled; below 1 where the rule would win). Uncompiled, ``auto`` is ``eager`` by that
rule, so it has no row of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from attnblocks import Attention, zoo
from attnblocks.flex import block_mask
from attnblocks.functional import attention

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# name: (spec, dim, heads, neighbourhood kernel/dilation for the NATTEN anchor or None)
CASES: dict[str, tuple[Attention, int, int, tuple[int, int] | None]] = {
    "swin": (zoo.swin(7, shift=3), 96, 3, None),
    "cswin": (zoo.cswin(7), 64, 2, None),
    "maxvit_grid": (zoo.maxvit_grid(7), 64, 2, None),
    "nat": (zoo.nat(7, rpb=False), 64, 2, (7, 1)),
    "dinat": (zoo.dinat(7, 2, rpb=False), 64, 2, (7, 2)),
    "pvtv2": (zoo.pvtv2(8), 64, 1, None),
}
FLEX = {"swin", "cswin", "maxvit_grid", "nat", "dinat", "pvtv2"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """Median wall time of ``fn`` in ms, the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _layer_fns(spec, dim, heads, backend, x, compile_: bool):
    layer = dataclasses.replace(spec, backend=backend).build(dim, heads)
    layer = layer.to(device=x.device, dtype=x.dtype)
    run = torch.compile(layer) if compile_ else layer

    def fwd():
        with torch.no_grad():
            return run(x)

    xg = x.detach().requires_grad_(True)

    def train():
        run(xg).float().sum().backward()

    return fwd, train


def _core_fns(name, spec, heads, d, q, compile_: bool, device):
    """The attention core on q, k, v: attnblocks and the anchors."""
    H, W = q.shape[1:3]
    part, split = spec.partition, spec.heads
    fns = {"core eager": lambda: attention(q, q, q, part, heads=split, backend="eager")}
    qt = q.flatten(1, 2).transpose(1, 2)  # (B, h, N, d)
    fns["sdpa dense"] = lambda: F.scaled_dot_product_attention(qt, qt, qt)
    if split is None and spec.partition is not None and name != "pvtv2":
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention) if compile_ else flex_attention
        bm = block_mask(part, (H, W), device=device)
        fns["flex+export"] = lambda: flex(qt, qt, qt, block_mask=bm)
    na = CASES[name][3]
    if na is not None:
        try:
            from natten.functional import na2d
        except ImportError:
            pass
        else:
            fns["natten na2d"] = lambda: na2d(q, q, q, kernel_size=na[0], dilation=na[1])
    return fns


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="14x14 map, batch 1, one call each")
    p.add_argument("--no-compile", action="store_true", help="flex without torch.compile")
    p.add_argument("--out", default=None, help="folder for gpu.json and gpu.md")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    size, batch = (14, 1) if args.quick else (56, args.batch)
    warmup, reps = (0, 1) if args.quick else (3, 10)
    compile_ = not args.no_compile
    info = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "map": [size, size],
        "batch": batch,
        "compile": compile_,
    }
    rows: list[tuple] = []
    warnings.simplefilter("ignore")  # uncompiled flex: unfused
    result: dict = {}
    for name in args.cases.split(","):
        spec, dim, heads, _ = CASES[name]
        x = torch.randn(batch, size, size, dim, device=device, dtype=dtype)
        # (label, backend, compiled, modes): the compiled eager layer is the twin the auto rule
        # weighs compiled flex against (forward, no gradient)
        runs = [("layer eager", "eager", False, ("fwd", "fwd+bwd"))]
        if compile_:
            runs.append(("layer eager compiled", "eager", True, ("fwd",)))
        if name in FLEX:
            bwd = () if device.type == "cpu" else ("fwd+bwd",)  # no CPU backward
            runs.append(("layer flex", "flex", compile_, ("fwd", *bwd)))
        base = {}
        for label, backend, comp, modes in runs:
            fwd, train = _layer_fns(spec, dim, heads, backend, x, comp)
            for mode in modes:
                ms = median_ms(fwd if mode == "fwd" else train, device, warmup, reps)
                base.setdefault(mode, ms)
                rows.append((name, label, mode, ms, ms / base[mode]))
        d = dim // heads
        q = torch.randn(batch, size, size, heads, d, device=device, dtype=dtype)
        core = None
        for impl, fn in _core_fns(name, spec, heads, d, q, compile_, device).items():
            with torch.no_grad():
                ms = median_ms(fn, device, warmup, reps)
            core = core or ms
            rows.append((name, impl, "fwd", ms, ms / core))
        result, text = _write(rows, info, args, size, batch, compile_)
        print(f"{name}: done", flush=True)
    print(text)
    return result


def auto_rule(rows: list[tuple]) -> dict[str, float]:
    """Per case, compiled flex / compiled eager layer forward without gradient: what decides
    ``AUTO_FLEX_ON_CUDA`` (below 1: the rule would win)."""
    fwd = {(c, i): ms for c, i, m, ms, _ in rows if m == "fwd"}
    return {
        c: fwd[(c, "layer flex")] / fwd[(c, "layer eager compiled")]
        for c in dict.fromkeys(r[0] for r in rows)
        if (c, "layer flex") in fwd and (c, "layer eager compiled") in fwd
    }


def _write(
    rows: list[tuple], info: dict, args, size: int, batch: int, compile_: bool
) -> tuple[dict, str]:
    """``gpu.json`` and ``gpu.md`` of the rows so far (written to ``--out``), and the text."""
    rule = auto_rule(rows)
    result = {
        "machine": info,
        "rows": [dict(zip(("case", "impl", "mode", "ms", "ratio"), r)) for r in rows],
        "auto_rule": rule,
    }
    lines = [
        f"# Device benchmark: {info['device']}, {args.dtype}, {size}x{size} map, batch {batch}",
        "",
        f"torch {info['torch']}; flex compiled: {compile_}. Median ms; ratio to the first row of "
        "the case and mode (the eager layer, the eager core).",
        "",
        "| case | implementation | mode | ms | ratio |",
        "|---|---|---|---:|---:|",
    ]
    lines += [f"| {c} | {i} | {m} | {ms:.3f} | {r:.2f} |" for c, i, m, ms, r in rows]
    if rule:
        lines += [
            "",
            "## auto_rule: compiled flex / compiled eager, forward without gradient",
            "",
            "What decides `AUTO_FLEX_ON_CUDA` (below 1: `auto` would win by picking flex).",
            "",
            "| case | flex / eager (compiled) |",
            "|---|---:|",
        ]
        lines += [f"| {c} | {r:.2f} |" for c, r in rule.items()]
    text = "\n".join(lines)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=2))
        (out / "gpu.md").write_text(text + "\n")
    return result, text


if __name__ == "__main__":
    main()
