"""attnblocks: vision-transformer attentions as a small algebra.

Partitions say which tokens attend to which, head combinators give each head group its own
partition, positional encoders add position, and lowerings run the composition fast.

>>> from attnblocks import Attention, LePE, Split, Stripe
>>> Attention(partition=Stripe(7), heads=Split(2), pe=LePE())  # CSWin's attention
Attention(partition=Stripe(7), heads=Split(2), pe=LePE())
"""

from ._errors import AttnblocksError
from .attention import Attention
from .config import from_config, to_config
from .cost import Cost, cost
from .heads import Split
from .lowering import GroupPlan, RectLayout, explain, rect_layout
from .masks import dense_mask, region_ids, window_mask
from .nn import AttentionLayer
from .partition import Global, Grid, Partition, Stripe, Window
from .pe import LePE, PositionalEncoder, RelPosBias

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "AttentionLayer",
    "AttnblocksError",
    "Cost",
    "Global",
    "Grid",
    "GroupPlan",
    "LePE",
    "Partition",
    "PositionalEncoder",
    "RectLayout",
    "RelPosBias",
    "Split",
    "Stripe",
    "Window",
    "__version__",
    "cost",
    "dense_mask",
    "explain",
    "from_config",
    "rect_layout",
    "region_ids",
    "to_config",
    "window_mask",
]
