"""Interleaved timing: every implementation of a case runs in each pass, ratios per pass.

The allocator and the machine's load move absolute times more than the kernels do (see
``perf-notes.md``), so implementations are interleaved in one process (rotating the order each
pass), each timed as the median of ``reps`` calls after warm-up, and a ratio is taken within
each pass; the reported ratio is the median over passes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Timing", "interleave", "step"]


@dataclass
class Timing:
    """Median milliseconds per implementation and median per-pass ratio ``t(name) / t(base)``."""

    ms: dict[str, float]
    ratio: dict[str, float]


def step(module: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """One call of ``module`` on ``x``: ``"fwd"`` (eval, no grad) or ``"train"`` (fwd+bwd).

    Training takes gradients of the input and every parameter with ``autograd.grad``, so
    nothing accumulates between calls.
    """
    if mode == "fwd":
        module.eval()

        def run() -> None:
            with torch.no_grad():
                module(x)

        return run
    module.train()
    xg = x.detach().clone().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    g = torch.randn_like(x)

    def run_train() -> None:
        y = module(xg)
        torch.autograd.grad(y, [xg, *params], g, allow_unused=True)

    return run_train


def _median_ms(fn: Callable[[], None], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def interleave(
    fns: dict[str, Callable[[], None]],
    base: str = "attnblocks",
    passes: int = 5,
    reps: int = 5,
    warmup: int = 2,
    reps_for: dict[str, int] | None = None,
) -> Timing:
    """Time ``fns`` interleaved; ratios are ``t(name) / t(base)`` (above 1: ``base`` is faster).

    ``reps_for`` caps the calls per pass of very slow implementations (seconds per call); those
    get no warm-up here (the caller has already run them once).
    """
    names = list(fns)
    reps_for = reps_for or {}
    for name in names:
        for _ in range(0 if name in reps_for else warmup):
            fns[name]()
    per: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for p in range(passes):
        order = names[p % len(names) :] + names[: p % len(names)]
        now = {n: _median_ms(fns[n], min(reps, reps_for.get(n, reps))) for n in order}
        for n in names:
            per[n].append(now[n])
            ratios[n].append(now[n] / now[base])
    return Timing(
        {n: statistics.median(v) for n, v in per.items()},
        {n: statistics.median(v) for n, v in ratios.items()},
    )
