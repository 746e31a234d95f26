"""Forward time of the backends on one shape, interleaved in one process, as ratios to eager.

    python benchmarks/backends.py [--hw 28 28] [--compile]

Prints the device, thread count, torch version and allocator settings with the numbers.
``--compile`` adds ``torch.compile`` of the eager and flex lowerings (inference only; the first
compiled flex call takes seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
import warnings

import torch

from attnblocks import zoo

warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hw", type=int, nargs=2, default=(28, 28))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = zoo.swin(7, shift=3)
    ref = base.build(96, 3).eval()
    runs = {}
    for backend in ("eager", "flex", "dense"):
        layer = dataclasses.replace(base, backend=backend).build(96, 3).eval()
        layer.load_state_dict(ref.state_dict())
        runs[backend] = layer
    if args.compile:
        runs["eager+compile"] = torch.compile(runs["eager"], fullgraph=True)
        runs["flex+compile"] = torch.compile(runs["flex"], fullgraph=True)
    x = torch.randn(args.batch, *args.hw, 96)
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm up (and compile)
            fn(x)
        for _ in range(args.reps):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)
    mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, MALLOC_MMAP_THRESHOLD_={mmap}"
    )
    H, W = args.hw
    print(f"# zoo.swin(7, shift=3), dim 96, 3 heads, x: ({args.batch}, {H}, {W}, 96)")
    eager = min(times["eager"])
    for name, ts in times.items():
        print(f"{name:>14}: {1e3 * min(ts):8.2f} ms  ({min(ts) / eager:5.2f}x eager)")


if __name__ == "__main__":
    main()
