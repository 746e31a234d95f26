"""Slices vs tiles lowering of sliding-window attention, plus the algorithms they replace.

Run: ``MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=4294967295
MALLOC_TOP_PAD_=536870912 python benchmarks/neighborhood.py`` (allocator settings as in the
perf notes; the script prints whether they are set). Implementations of one case are
interleaved in one process; the table gives the median ms per call of each and is meant to be
read as ratios within a row. ``fw``: forward under ``no_grad``; ``tr``: forward + backward.

Baselines: ``unfold`` is DilateFormer's algorithm (``nn.Unfold`` of K and V, ``k*k`` copies);
``dense`` is masked SDPA over all ``N x N`` pairs with the oracle mask (what NAT reduces to
without a neighbourhood kernel).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from attnblocks import Dilated, Neighborhood, dense_mask
from attnblocks.families.sliding.kernels import slices_attention, tiles_attention
from attnblocks.families.sliding.plan import offset_plan
from attnblocks.masks import mask_value


def unfold_attention(qkv, k, r, heads, scale):
    """DilateFormer's unfold algorithm (zeros border), rewritten to back-propagate."""
    B, H, W, _, c = qkv.shape
    d = c // heads
    q, kk, v = (qkv[..., i, :].permute(0, 3, 1, 2) for i in range(3))
    pad = r * (k - 1) // 2
    ku = F.unfold(kk, k, dilation=r, padding=pad).view(B, heads, d, k * k, H * W)
    vu = F.unfold(v, k, dilation=r, padding=pad).view(B, heads, d, k * k, H * W)
    qh = q.reshape(B, heads, d, 1, H * W)
    a = ((qh * ku).sum(2) * scale).softmax(dim=2)  # (B, h, k*k, N)
    out = (a.unsqueeze(2) * vu).sum(3)  # (B, h, d, N)
    return out.reshape(B, c, H, W).permute(0, 2, 3, 1)


def dense_attention(qkv, mask, heads, scale):
    B, H, W, _, c = qkv.shape
    t = qkv.reshape(B, H * W, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=mask, scale=scale)
    return o.permute(0, 2, 1, 3).reshape(B, H, W, c)


def measure(fns, qkv, train, reps):
    times = {name: [] for name in fns}
    for _ in range(reps + 1):
        for name, fn in fns.items():
            x = qkv.detach().requires_grad_(train)
            t0 = time.perf_counter()
            if train:
                fn(x).sum().backward()
            else:
                with torch.no_grad():
                    fn(x)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t[1:]) * 1e3 for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tile", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    H = W = args.size
    malloc = "MALLOC_MMAP_THRESHOLD_" in os.environ
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, "
        f"{H}x{W}, batch {args.batch}, tile {args.tile}, malloc tuned: {malloc}"
    )
    cases = [
        (Dilated(3), 1, 24),
        (Dilated(3, dilation=2), 1, 24),
        (Dilated(3, dilation=3), 1, 24),
        (Dilated(3, border="mask"), 1, 24),
        (Neighborhood(3), 1, 24),
        (Dilated(5), 2, 16),
        (Neighborhood(5), 2, 16),
        (Neighborhood(7), 2, 32),
        (Neighborhood(7, dilation=2), 2, 32),
    ]
    print(f"{'partition':30s} {'n':>4s} {'mode':4s}  times in ms (median)")
    for part, heads, d in cases:
        c = heads * d
        qkv = torch.randn(args.batch, H, W, 3, c)
        scale = d**-0.5
        op = offset_plan(part, H, W)
        fns = {
            "slices": lambda x, p=part, h=heads, s=scale: slices_attention(x, p, h, s),
            "tiles": lambda x, p=part, h=heads, s=scale: tiles_attention(
                x, p, h, s, tile=args.tile
            ),
        }
        if part.border == "zeros":
            k, r = part.kernel, part.dilation
            fns["unfold"] = lambda x, k=k, r=r, h=heads, s=scale: unfold_attention(x, k, r, h, s)
        else:
            allowed = dense_mask(part, H, W)
            mask = torch.zeros(allowed.shape).masked_fill_(~allowed, mask_value(torch.float32))
            fns["dense"] = lambda x, m=mask, h=heads, s=scale: dense_attention(x, m, h, s)
        for train in (False, True):
            res = measure(fns, qkv, train, args.reps)
            cells = "  ".join(f"{k} {v:7.2f}" for k, v in res.items())
            print(f"{part!r:30s} {len(op.offsets):4d} {'tr' if train else 'fw':4s}  {cells}")


if __name__ == "__main__":
    main()
