"""The sliding family: :class:`~attnblocks.Dilated` and :class:`~attnblocks.Neighborhood`.

:mod:`.plan` (offsets, tiles, bias indices, the oracle and coordinates), :mod:`.runner` (the
runner and its choice of strategy, *slices* or *tiles*), :mod:`.kernels` (the two eager
strategies), :mod:`.flex` (a block mask in sub-grid-major order), :mod:`.cost`. Importing this
package registers their hooks.
"""

from . import cost, flex, runner  # noqa: F401  (each registers its hooks)
