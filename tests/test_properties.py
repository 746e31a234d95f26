"""Algebraic properties of the specs and the lowering."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, Global, Split, Window, dense_mask, rect_layout
from attnblocks.functional import partition_windows, unpartition_windows
from helpers import randomize_
from strategies import concrete_partitions, sizes, windows

f64 = {"atol": 1e-10, "rtol": 1e-9}


@given(part=concrete_partitions(), H=sizes, W=sizes, heads=st.integers(1, 3), B=st.integers(1, 2))
def test_partition_then_unpartition_is_identity(part, H, W, heads, B):
    layout = rect_layout(part, H, W)
    x = torch.randn(B, H, W, heads * 2)
    w = partition_windows(x, layout, heads)
    assert w.shape == (B, layout.num_windows, heads, layout.tokens, 2)
    assert torch.equal(unpartition_windows(w, layout), x)


@given(part=concrete_partitions(), H=sizes, W=sizes)
def test_every_real_token_in_exactly_one_window(part, H, W):
    layout = rect_layout(part, H, W)
    ids = torch.arange(1, H * W + 1, dtype=torch.float64).view(1, H, W, 1)
    w = partition_windows(ids, layout).flatten()
    real = w[w > 0].long()
    assert sorted(real.tolist()) == list(range(1, H * W + 1))


@given(part=concrete_partitions(), H=sizes, W=sizes)
def test_dense_mask_is_symmetric_with_self_attention(part, H, W):
    m = dense_mask(part, H, W)
    assert m.shape == (H * W, H * W)
    assert torch.equal(m, m.T)
    assert bool(m.diagonal().all())


def _pair(spec_a, spec_b, dim, heads, H, W, B=2):
    a = randomize_(spec_a.build(dim, heads).double(), seed=1)
    b = spec_b.build(dim, heads).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(B, H, W, dim, dtype=torch.float64)
    return a(x), b(x)


@given(part=concrete_partitions(), H=sizes, W=sizes, heads=st.integers(1, 3))
def test_split_one_equals_no_split(part, H, W, heads):
    ya, yb = _pair(
        Attention(partition=part), Attention(partition=part, heads=Split(1)), 2 * heads, heads, H, W
    )
    torch.testing.assert_close(ya, yb, **f64)


@given(part=concrete_partitions(), n=st.integers(2, 3), H=sizes, W=sizes)
def test_split_n_same_partition_equals_unsplit(part, n, H, W):
    heads = 2 * n
    ya, yb = _pair(
        Attention(partition=part),
        Attention(heads=Split(*[part] * n)),
        3 * heads,
        heads,
        H,
        W,
    )
    torch.testing.assert_close(ya, yb, **f64)


@given(H=sizes, W=sizes, heads=st.integers(1, 3), pad=st.sampled_from(["mask", "zeros", "error"]))
def test_window_covering_the_map_equals_global(H, W, heads, pad):
    ya, yb = _pair(
        Attention(partition=Window((H, W)), pad=pad),
        Attention(partition=Global(), pad=pad),
        2 * heads,
        heads,
        H,
        W,
    )
    torch.testing.assert_close(ya, yb, **f64)


@given(win=windows(), H=sizes, W=sizes)
def test_window_mask_matches_dense_oracle(win, H, W):
    """The einops-built window mask and the coordinate-built oracle agree token by token."""
    from attnblocks import window_mask

    lay = rect_layout(win, H, W)
    ids = partition_windows(torch.arange(H * W).view(1, H, W, 1) + 1, lay)[0, :, 0, :, 0] - 1
    allowed = window_mask(lay)
    if allowed is None:
        allowed = torch.ones(lay.num_windows, lay.tokens, lay.tokens, dtype=torch.bool)
    real = ids >= 0
    oracle = dense_mask(win, H, W)[ids.clamp(min=0)[:, :, None], ids.clamp(min=0)[:, None, :]]
    pair = real[:, :, None] & real[:, None, :]
    assert torch.equal(allowed[pair], oracle[pair])
    # a real query never attends to a padded key
    assert not bool((allowed & real[:, :, None] & ~real[:, None, :]).any())
