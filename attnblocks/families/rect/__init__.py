"""The rectangular family: windows, stripes, grids and global attention.

:mod:`.runner` (the runner and its oracle, coordinates and ``explain`` lines), :mod:`.eager`
(batched windows on strided views), :mod:`.flex` (a block mask of diagonal windows),
:mod:`.cost`. Importing this package registers their hooks.
"""

from . import cost, flex, runner  # noqa: F401  (each registers its hooks)
