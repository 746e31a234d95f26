"""The union's fast eager lowering against its generic (dense) lowering, on one layer.

Run: ``python benchmarks/union_lowering.py [--quick]``. Each case is ``p | rest`` with the two
key sets disjoint (so :class:`~attnblocks.extend.UnionRunner` merges partial attentions by
log-sum-exp); ``generic`` is the same layer with the union's plan forced to the dense
lowering. Implementations are interleaved in one process (:mod:`benchmarks.timing`); read the
ratio ``generic / fast`` (above 1: the fast lowering is faster). ``fwd``: eval under
``no_grad``; ``train``: forward + backward. Float32, batch 8, CPU threads as set.
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch

from attnblocks import Attention, Neighborhood, RulePartition, Window, dense_mask, extend
from attnblocks.extend import union_plan
from benchmarks.timing import interleave, step


class Lattice(RulePartition):
    """Global tokens every ``step`` rows and columns, outside the query's ``base`` set."""

    step: int = 4
    base: object = None

    def oracle(self, H, W):
        y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        on = ((y % self.step == 0) & (x % self.step == 0)).reshape(1, -1).expand(H * W, -1)
        return (on & ~dense_mask(self.base, H, W)).numpy()


class RowBeyond(RulePartition):
    """The query's row outside its ``w``-wide column block."""

    w: int = 7

    def allows(self, q, k):
        return (q[0] == k[0]) & (q[1] // self.w != k[1] // self.w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    passes, reps = (2, 2) if args.quick else (5, 5)
    H = W = 28
    C, heads, B = 64, 2, 8
    cases = {
        "Window(7) | lattice/4": Window(7) | Lattice(4, Window(7)),
        "Neighborhood(7) | lattice/4": Neighborhood(7) | Lattice(4, Neighborhood(7)),
        "Window(7) | row beyond": Window(7) | RowBeyond(7),
    }
    print(f"{H}x{W} map, C={C}, {heads} heads, batch {B}, float32, {torch.get_num_threads()} thr")
    print(f"{'case':32s} {'mode':6s} {'fast ms':>9s} {'generic ms':>11s} {'generic/fast':>13s}")
    for name, part in cases.items():
        assert union_plan(part, H, W) == "disjoint"
        layer = Attention(partition=part).build(C, heads)
        x = torch.randn(B, H, W, C)
        for mode in ("fwd", "train"):
            fast = step(layer, x, mode)

            def generic(fast=fast):
                with mock.patch("attnblocks.extend.union_plan", lambda *a: None):
                    fast()

            kinds = {extend._part_kind(p, H, W) for p in part.parts}
            t = interleave({"fast": fast, "generic": generic}, "fast", passes, reps)
            print(
                f"{name:32s} {mode:6s} {t.ms['fast']:9.2f} {t.ms['generic']:11.2f} "
                f"{t.ratio['generic']:13.2f}  {'generic' if 'dense' in kinds else 'fast'} runs"
            )


if __name__ == "__main__":
    main()
