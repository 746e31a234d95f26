"""MaxViT block and grid attention: equal to timm 1.0's ``maxxvit.PartitionAttentionCl``
(weights copied in), to the plain grid loop, and Grid is a transposed Window."""

import pytest
import torch
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, AttnblocksError, Grid, Window, dense_mask, zoo
from attnblocks.convert import load_timm_maxvit
from helpers import randomize_
from references.plain import grid_attention

maxxvit = pytest.importorskip("timm.models.maxxvit")


def _timm_block(C, d, G, kind, rel_pos, head_first, seed):
    cfg = maxxvit.MaxxVitTransformerCfg(
        dim_head=d, window_size=(G, G), rel_pos_type=rel_pos, head_first=head_first
    )
    block = maxxvit.PartitionAttentionCl(C, kind, cfg).double()
    return randomize_(block, seed=seed)


@given(
    G=st.integers(1, 4),
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    heads=st.integers(1, 3),
    d=st.integers(1, 4),
    B=st.integers(1, 2),
    kind=st.sampled_from(["block", "grid"]),
    rel_pos=st.sampled_from(["bias", "bias_tf"]),
    head_first=st.booleans(),
    fused=st.booleans(),
)
def test_equals_timm_partition_attention(G, n, heads, d, B, kind, rel_pos, head_first, fused):
    """timm requires the map to divide into the partition; 'bias_tf' is the TF ports' table."""
    C = heads * d
    block = _timm_block(C, d, G, kind, rel_pos, head_first, seed=G * 10 + heads)
    block.attn.fused_attn = fused
    spec = zoo.maxvit_block(G) if kind == "block" else zoo.maxvit_grid(G)
    layer = load_timm_maxvit(spec.build(C, heads).double(), block)
    x = torch.randn(B, n[0] * G, n[1] * G, C, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), block._partition_attn(x), atol=1e-10, rtol=1e-9)


@given(G=st.integers(1, 3), n=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_grid_equals_plain_loop(G, n):
    layer = randomize_(Attention(partition=Grid(G)).build(6, 2).double())
    H, W = n[0] * G, n[1] * G
    x = torch.randn(1, H, W, 6, dtype=torch.float64)
    q, k, v = rearrange(layer.qkv(x), "b y x (three h d) -> three b h y x d", three=3, h=2)
    o = rearrange(grid_attention(q, k, v, G), "b h y x d -> b y x (h d)")
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.proj(o), atol=1e-10, rtol=1e-9)


def _transpose(H: int, W: int, G: int) -> torch.Tensor:
    """Token permutation ``perm`` with ``perm[n'] = n``: the grid's token sets become windows.

    Row ``r = g * (H/G) + i`` (set ``i``, position ``g`` in it) goes to row ``i * G + g``.
    """
    idx = torch.arange(H * W).view(H, W)
    return rearrange(idx, "(g1 i) (g2 j) -> (i g1 j g2)", g1=G, g2=G)


@given(G=st.integers(1, 5), n=st.tuples(st.integers(1, 4), st.integers(1, 4)))
def test_grid_is_transposed_window_dense_mask(G, n):
    H, W = n[0] * G, n[1] * G
    perm = _transpose(H, W, G)
    grid, window = dense_mask(Grid(G), H, W), dense_mask(Window(G), H, W)
    assert torch.equal(grid[perm][:, perm], window)
    if G > 1 and max(n) > 1:  # the permutation is not the identity: the test has teeth
        assert not torch.equal(grid, window)


@given(
    G=st.integers(1, 4),
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    heads=st.integers(1, 2),
    B=st.integers(1, 2),
)
def test_grid_is_transposed_window_outputs(G, n, heads, B):
    """With the same weights (relative bias included: offsets inside a grid set are the
    offsets inside the window it becomes), grid(x) == untranspose(window(transpose(x)))."""
    H, W, C = n[0] * G, n[1] * G, 3 * heads
    grid = randomize_(zoo.maxvit_grid(G).build(C, heads).double(), seed=G)
    window = zoo.maxvit_block(G).build(C, heads).double()
    window.load_state_dict(grid.state_dict())
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    perm = _transpose(H, W, G)
    xt = x.reshape(B, H * W, C)[:, perm].view(B, H, W, C)
    with torch.no_grad():
        back = torch.empty(B, H * W, C, dtype=torch.float64)
        back[:, perm] = window(xt).reshape(B, H * W, C)
        torch.testing.assert_close(grid(x), back.view(B, H, W, C), atol=1e-10, rtol=1e-9)


def test_grid_pads_and_masks_non_divisible_maps():
    """Beyond timm (which asserts divisibility): the grid spreads over the padded map."""
    layer = zoo.maxvit_grid(3).build(8, 2)
    assert layer(torch.randn(1, 7, 5, 8)).shape == (1, 7, 5, 8)
    with pytest.raises(AttnblocksError, match="Grid\\(3\\) cannot partition a 7x5 token map"):
        zoo.maxvit_grid(3, pad="error").build(8, 2)(torch.randn(1, 7, 5, 8))


def test_gradcheck_grid_rel_pos_bias():
    layer = randomize_(zoo.maxvit_grid(2).build(4, 2).double())
    x = torch.randn(1, 4, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_converter_errors():
    block = _timm_block(8, 4, 2, "grid", "bias", True, seed=0)
    with pytest.raises(AttnblocksError, match=r"2 heads of 4 channels, .* built with 4 heads of 2"):
        load_timm_maxvit(zoo.maxvit_grid(2).build(8, 4), block)
    mlp = _timm_block(8, 4, 2, "block", "mlp", True, seed=0)
    with pytest.raises(AttnblocksError, match="relative position type RelPosMlp is not supported"):
        load_timm_maxvit(zoo.maxvit_block(2).build(8, 2), mlp)
    with pytest.raises(AttnblocksError, match="has no RelPosBias encoder"):
        load_timm_maxvit(Attention(partition=Grid(2)).build(8, 2), block)
