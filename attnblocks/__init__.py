"""attnblocks: vision-transformer attentions as a small algebra.

Partitions say which tokens attend to which, head combinators give each head group its own
partition, positional encoders add position, and lowerings run the composition fast.

>>> from attnblocks import Attention, LePE, Split, Stripe
>>> Attention(partition=Stripe(7), heads=Split(2), pe=LePE())  # CSWin's attention
Attention(partition=Stripe(7), heads=Split(2), pe=LePE())
"""

from . import (
    families,  # noqa: F401  (every partition family registers its hooks: attnblocks.hooks)
    flex,  # noqa: F401  (attnblocks.flex.mask_mod / block_mask / token_order)
    functional,  # noqa: F401  (attnblocks.functional.attention)
)
from ._errors import AttnblocksError
from .attention import Attention
from .config import from_config, to_config
from .cost import Cost, cost
from .extend import Causal, KeyIntersection, KeyUnion, RulePartition
from .heads import Split
from .introspect import dense_mask, explain
from .lowering import GroupPlan, RectLayout, rect_layout
from .masks import region_ids, window_mask
from .nn import AttentionLayer
from .partition import Dilated, Downsample, Global, Grid, Neighborhood, Partition, Stripe, Window
from .pe import CPE, AxialRoPE, ContinuousPosBias, LePE, LocalConv, PositionalEncoder, RelPosBias
from .score import Cosine, Score
from .viz import draw_pattern

__version__ = "0.1.0"

__all__ = [
    "CPE",
    "Attention",
    "AttentionLayer",
    "AttnblocksError",
    "AxialRoPE",
    "Causal",
    "ContinuousPosBias",
    "Cosine",
    "Cost",
    "Dilated",
    "Downsample",
    "Global",
    "Grid",
    "GroupPlan",
    "KeyIntersection",
    "KeyUnion",
    "LePE",
    "LocalConv",
    "Neighborhood",
    "Partition",
    "PositionalEncoder",
    "RectLayout",
    "RelPosBias",
    "RulePartition",
    "Score",
    "Split",
    "Stripe",
    "Window",
    "__version__",
    "cost",
    "dense_mask",
    "draw_pattern",
    "explain",
    "from_config",
    "rect_layout",
    "region_ids",
    "to_config",
    "window_mask",
]
