"""Peak memory of one forward+backward, measured in a fresh process.

``python -m benchmarks.memory CASE IMPL BATCH`` builds the case, runs two training steps and
prints JSON with two numbers:

- ``tensor_mib``: the peak of live tensor bytes during a second step, from the memory timeline
  of ``torch.profiler.profile(profile_memory=True)``, above what was live before it;
- ``rss_mib``: the resident-set high-water mark during the first step above the RSS before it
  (the kernel's peak is reset through ``/proc/self/clear_refs``; ``null`` where unavailable).

:func:`measure` runs it in a subprocess with the same environment (so malloc settings apply).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

__all__ = ["measure"]


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _tensor_peak(prof) -> int:
    """Peak bytes of tensors created during the profile (the profiler's memory timeline)."""
    from torch.profiler._memory_profiler import Action

    live = peak = 0
    for _, action, _, size in sorted(prof._memory_profile().timeline, key=lambda r: r[0]):
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def _child(case_name: str, impl: str, batch: int) -> dict:
    from .cases import CASES
    from .timing import step

    torch.manual_seed(0)
    case = CASES[case_name]
    module = case.build()[impl]
    x = torch.randn(batch, *case.hw, case.dim)
    run = step(module, x, "train")
    rss0 = _status("VmRSS")
    ok = _reset_peak()
    run()  # the first step: RSS high-water (freed heap is reused by later steps, so not theirs)
    rss = (_status("VmHWM") - rss0) / 2**20 if ok else None
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(
        activities=cpu, profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        run()
    return {"tensor_mib": _tensor_peak(prof) / 2**20, "rss_mib": rss}


def measure(case: str, impl: str, batch: int, threads: int) -> dict:
    """Peak memory of ``impl``'s forward+backward on ``case`` at ``batch``, in a fresh process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "benchmarks.memory", case, impl, str(batch), str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    name, impl_name, b, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(t)
    print(json.dumps(_child(name, impl_name, b)))
