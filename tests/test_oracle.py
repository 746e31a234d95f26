"""The fast lowering equals dense masked attention built from the oracle mask."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, Split, Stripe
from helpers import oracle_forward
from strategies import concrete_partitions, sizes


@given(
    part=concrete_partitions(),
    H=sizes,
    W=sizes,
    B=st.integers(1, 2),
    heads=st.integers(1, 4),
    d=st.integers(1, 5),
)
def test_fast_equals_oracle_float64(part, H, W, B, heads, d):
    layer = Attention(partition=part).build(heads * d, heads).double()
    x = torch.randn(B, H, W, heads * d, dtype=torch.float64)
    torch.testing.assert_close(layer(x), oracle_forward(layer, x), atol=1e-10, rtol=1e-9)


@given(
    parts=st.lists(concrete_partitions(), min_size=1, max_size=3),
    H=sizes,
    W=sizes,
    hg=st.integers(1, 2),
    d=st.integers(1, 4),
)
def test_hybrid_split_equals_oracle(parts, H, W, hg, d):
    n = len(parts)
    layer = Attention(heads=Split(*parts)).build(n * hg * d, n * hg).double()
    x = torch.randn(1, H, W, n * hg * d, dtype=torch.float64)
    torch.testing.assert_close(layer(x), oracle_forward(layer, x), atol=1e-10, rtol=1e-9)


@given(width=st.integers(1, 8), H=sizes, W=sizes, groups=st.sampled_from([2, 4]))
def test_generic_stripe_fp32(width, H, W, groups):
    layer = Attention(partition=Stripe(width), heads=Split(groups)).build(8 * groups, 2 * groups)
    x = torch.randn(2, H, W, 8 * groups)
    torch.testing.assert_close(layer(x), oracle_forward(layer, x), atol=1e-5, rtol=1e-5)
