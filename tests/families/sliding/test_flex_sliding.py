"""FlexAttention lowerings of sliding windows and downsampled keys against the dense oracle."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Downsample,
    LePE,
    LocalConv,
    Neighborhood,
    Split,
)
from attnblocks.families.sliding.flex import subgrid_order
from helpers import oracle_forward, randomize_

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@st.composite
def sliding_cases(draw):
    """A masked or shifted ``Dilated`` (one or two head groups) and a map it fits."""
    border = draw(st.sampled_from(["mask", "shift"]))
    r = draw(st.integers(1, 3))
    k = draw(st.sampled_from([3, 5] if border == "mask" else [3, 4, 5]))
    two = draw(st.booleans())
    r2 = draw(st.integers(1, 3))
    lo = 1 if border == "mask" else k * max(r, r2 if two else 1)
    H, W = draw(st.integers(lo, lo + 6)), draw(st.integers(lo, lo + 6))
    if two:
        spec = Attention(partition=Dilated(k, dilation=(r, r2), border=border), heads=Split(2))
    else:
        spec = Attention(partition=Dilated(k, dilation=r, border=border))
    return spec, H, W


def _twin(layer, backend):
    twin = dataclasses.replace(layer.spec, backend=backend).build(layer.dim, layer.num_heads)
    twin.load_state_dict(layer.state_dict())
    return twin


@settings(max_examples=12)  # eager FlexAttention traces its mask per map size: ~0.5 s a call
@given(case=sliding_cases(), seed=st.integers(0, 9))
def test_flex_sliding_equals_the_dense_oracle(case, seed):
    """float32, atol 1e-5 (flex on CPU computes in the input dtype)."""
    spec, H, W = case
    n = spec.heads.count if spec.heads else 1
    layer = randomize_(dataclasses.replace(spec, backend="flex").build(4 * n, 2 * n), seed=seed)
    x = torch.randn(1, H, W, 4 * n, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), oracle_forward(layer, x), atol=1e-5, rtol=1e-5)


def test_flex_sliding_on_tiny_maps():
    layer = randomize_(Attention(partition=Dilated(5, border="mask"), backend="flex").build(4, 2))
    for H, W in ((1, 1), (1, 7), (6, 1)):
        x = torch.randn(1, H, W, 4)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), oracle_forward(layer, x), atol=1e-5, rtol=1e-5)


def test_subgrid_order_makes_each_subgrid_contiguous():
    perm, inverse, y, x = subgrid_order(7, 5, 3, torch.device("cpu"))
    assert sorted(perm.tolist()) == list(range(35))
    assert (perm[inverse] == torch.arange(35)).all()
    grid = (y % 3) * 3 + x % 3
    assert (grid.diff() >= 0).all()  # sub-grids one after another, each contiguous
    assert ((y * 5 + x) == perm).all()


@settings(max_examples=6)
@given(ratio=st.integers(1, 4), H=st.integers(4, 9), W=st.integers(4, 9), local=st.booleans())
def test_flex_downsample_equals_eager(ratio, H, W, local):
    """float32, atol 1e-5; the keys are all reduced tokens, so FlexAttention runs unmasked."""
    part = Downsample((ratio, 1), act="gelu")
    spec = Attention(partition=part, heads=Split(2), pe=LocalConv() if local else None)
    eager = randomize_(spec.build(8, 4))
    x = torch.randn(1, H, W, 8)
    with torch.no_grad():
        torch.testing.assert_close(_twin(eager, "flex")(x), eager(x), atol=1e-5, rtol=1e-5)


# --- errors -----------------------------------------------------------------------------------


def test_flex_zero_border_raises():
    layer = Attention(partition=Dilated(3, dilation=2), backend="flex").build(4, 1)
    with (
        torch.no_grad(),
        pytest.raises(
            AttnblocksError,
            match=r"backend='flex' cannot run Dilated\(3, dilation=2\): border='zeros'.*"
            r"backend='eager'.*border='mask'",
        ),
    ):
        layer(torch.randn(1, 6, 6, 4))


def test_flex_sliding_with_grad_on_cpu_raises():
    layer = Attention(partition=Neighborhood(3), backend="flex").build(4, 1)
    with pytest.raises(
        AttnblocksError, match=r"cannot run Neighborhood\(3\) with gradients on CPU"
    ):
        layer(torch.randn(1, 6, 6, 4))


def test_flex_downsample_with_grad_on_cpu_raises():
    layer = Attention(partition=Downsample(2), backend="flex").build(4, 1)
    with pytest.raises(AttnblocksError, match=r"cannot run Downsample\(2\) with gradients on CPU"):
        layer(torch.randn(1, 6, 6, 4))


def test_flex_sliding_dropout_raises():
    spec = Attention(partition=Neighborhood(3), attn_drop=0.2, backend="flex")
    with torch.no_grad(), pytest.raises(AttnblocksError, match=r"no attention dropout.*0.2"):
        spec.build(4, 1)(torch.randn(1, 6, 6, 4))


def test_flex_sliding_with_window_encoder_raises():
    layer = Attention(partition=Neighborhood(3), pe=LePE(), backend="flex").build(4, 1)
    with (
        torch.no_grad(),
        pytest.raises(
            AttnblocksError,
            match=r"LePEModule adds per-window .* Neighborhood\(3\) \(head group 0\)",
        ),
    ):
        layer(torch.randn(1, 6, 6, 4))


def test_flex_shift_on_a_small_map_raises():
    layer = Attention(partition=Neighborhood(3, dilation=2), backend="flex").build(4, 1)
    with torch.no_grad(), pytest.raises(AttnblocksError, match=r"cannot fit its window on a 5x8"):
        layer(torch.randn(1, 5, 8, 4))
