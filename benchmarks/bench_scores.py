"""What the score and position variants cost on CPU, against timm's SwinV2 window attention.

Implementations of one case are interleaved in one process; ratios are taken within each pass
and the median is reported. Prints device, threads, torch version and allocator settings.

Run from the repository root:
    PYTHONPATH=. python benchmarks/bench_scores.py [--batch 2] [--size 56] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from attnblocks import Attention, AxialRoPE, RelPosBias, Window, zoo
from attnblocks.convert import load_timm_swinv2


def _time(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--window", type=int, default=7)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    M, s, C, h = a.window, a.window // 2, a.dim, a.heads
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(
        f"device={platform.processor() or platform.machine()} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} malloc={malloc or 'default'}"
    )
    print(f"x: ({a.batch}, {a.size}, {a.size}, {C}), heads={h}, window={M}, shift={s}, fp32")

    layers = {
        "swin v1 (dot + RelPosBias)": zoo.swin(M, s).build(C, h),
        "swinv2 (Cosine + CPB + qv)": zoo.swinv2(M, s).build(C, h),
        "window + AxialRoPE": Attention(partition=Window(M, shift=s), pe=AxialRoPE()).build(C, h),
        "window + RelPosBias + RoPE": Attention(
            partition=Window(M, shift=s), pe=(RelPosBias(), AxialRoPE())
        ).build(C, h),
    }
    try:
        from timm.models.swin_transformer_v2 import SwinTransformerV2Block

        block = SwinTransformerV2Block(C, (a.size, a.size), h, window_size=M, shift_size=s)
        load_timm_swinv2(layers["swinv2 (Cosine + CPB + qv)"], block)
        timm_fn = block._attn
    except ImportError:
        timm_fn = None
    x = torch.randn(a.batch, a.size, a.size, C)
    fns = {k: v for k, v in layers.items()}
    if timm_fn is not None:
        fns["timm SwinV2 _attn"] = timm_fn
    base = "swin v1 (dot + RelPosBias)"
    for mode in ("forward", "train (fwd+bwd)"):
        ratios: dict[str, list[float]] = {k: [] for k in fns}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(a.passes):
            for name, fn in fns.items():
                if mode == "forward":

                    def run(fn=fn):
                        with torch.no_grad():
                            fn(x)
                else:
                    xg = x.clone().requires_grad_(True)

                    def run(fn=fn, xg=xg):
                        fn(xg).sum().backward()

                times[name].append(_time(run, a.reps))
            for name in fns:
                ratios[name].append(times[name][-1] / times[base][-1])
        print(f"\n{mode}:")
        for name in fns:
            med = statistics.median(times[name])
            print(f"  {name:30s} {med:8.2f} ms   x{statistics.median(ratios[name]):.2f} of v1")


if __name__ == "__main__":
    main()
