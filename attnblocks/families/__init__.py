"""The partition families, one home each: the plan, runner, eager kernel, flex lowering and
cost of a family live together, and each registers its own hooks with :mod:`attnblocks.hooks`.

- :mod:`.rect`: windows, stripes, grids, global attention.
- :mod:`.sliding`: dilated and neighbourhood sliding windows.
- :mod:`.reduced`: downsampled keys and values.

Rule partitions and key-set unions / intersections are :mod:`attnblocks.extend`; the
generic dense backend is :mod:`attnblocks.backends.dense`, the kernels the families share
:mod:`attnblocks.kernels`.
"""

from . import rect, reduced, sliding  # noqa: F401  (each registers its hooks)
