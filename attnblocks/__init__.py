"""attnblocks: vision-transformer attentions as a small algebra.

Partitions say which tokens attend to which, head combinators give each head group its own
partition, positional encoders add position, and lowerings run the composition fast.

>>> from attnblocks import Attention, LePE, Split, Stripe
>>> Attention(partition=Stripe(7), heads=Split(2), pe=LePE())  # CSWin's attention
Attention(partition=Stripe(7), heads=Split(2), pe=LePE())
"""

from . import neighborhood_runner  # noqa: F401  (registers the Dilated runner and oracle)
from ._errors import AttnblocksError
from .attention import Attention
from .heads import Split
from .lowering import GroupPlan, RectLayout, explain, rect_layout
from .masks import dense_mask, region_ids, window_mask
from .nn import AttentionLayer
from .partition import Dilated, Global, Grid, Neighborhood, Partition, Stripe, Window
from .pe import CPE, LePE, PositionalEncoder, RelPosBias

__version__ = "0.1.0"

__all__ = [
    "CPE",
    "Attention",
    "AttentionLayer",
    "AttnblocksError",
    "Dilated",
    "Global",
    "Grid",
    "GroupPlan",
    "LePE",
    "Neighborhood",
    "Partition",
    "PositionalEncoder",
    "RectLayout",
    "RelPosBias",
    "Split",
    "Stripe",
    "Window",
    "__version__",
    "dense_mask",
    "explain",
    "rect_layout",
    "region_ids",
    "window_mask",
]
