"""Video Swin's 3-D shifted-window attention: torchvision's ``ShiftedWindowAttention3d``
against ``Attention(partition=Window((t, h, w), shift=...), pe=RelPosBias())`` on
``(B, T, H, W, C)``, weights copied by :func:`attnblocks.convert.from_torchvision`, at drawn
shapes: maps the window does not divide and maps smaller than the window included."""

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, AttnblocksError, RelPosBias, Window
from attnblocks.convert import from_torchvision

video = pytest.importorskip("torchvision.models.video.swin_transformer")


def _torchvision(window, shift, heads, dim, qkv_bias=True, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = video.ShiftedWindowAttention3d(dim, list(window), list(shift), heads, qkv_bias)
    module = module.double().eval()
    with torch.no_grad():  # away from the initial values, which hide mistakes (a zero table)
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


def _check(theirs, ours, x):
    want, got = theirs(x), ours(x)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    if x.shape[0]:
        g = torch.randn_like(want)
        (gw,) = torch.autograd.grad(want, x, g)
        (gg,) = torch.autograd.grad(got, x, g)
        torch.testing.assert_close(gg, gw, atol=1e-10, rtol=0)


@st.composite
def configs(draw):
    window = tuple(draw(st.integers(1, 4)) for _ in range(3))
    shift = tuple(draw(st.integers(0, w - 1)) for w in window)
    heads = draw(st.integers(1, 3))
    dim = heads * draw(st.sampled_from([1, 2, 4]))
    thw = tuple(draw(st.integers(1, 7)) for _ in range(3))
    return window, shift, heads, dim, thw, draw(st.integers(0, 2)), draw(st.booleans())


@given(configs())
def test_equals_torchvision_3d(config):
    window, shift, heads, dim, thw, batch, qkv_bias = config
    theirs = _torchvision(window, shift, heads, dim, qkv_bias, seed=sum(thw))
    ours = from_torchvision(theirs)
    x = torch.randn(batch, *thw, dim, dtype=torch.float64, requires_grad=True)
    _check(theirs, ours, x)


@pytest.mark.parametrize("thw", [(4, 14, 14), (8, 7, 7), (3, 9, 11), (10, 16, 15), (2, 3, 2)])
def test_video_swin_window_equals_torchvision(thw):
    """Video Swin-T's own attention, window (8, 7, 7) and shift (4, 3, 3), the spec written
    by hand (no converter) and the weights copied by name."""
    theirs = _torchvision((8, 7, 7), (4, 3, 3), 3, 24, seed=1)
    spec = Attention(
        partition=Window((8, 7, 7), shift=(4, 3, 3), clamp="timm"),
        pe=RelPosBias(index="torchvision"),
        pad="torchvision",
    )
    ours = spec.build(24, 3, dtype=torch.float64)
    state = theirs.state_dict()
    state["pe.0.tables.0"] = state.pop("relative_position_bias_table")
    del state["relative_position_index"]
    ours.load_state_dict(state)
    x = torch.randn(2, *thw, 24, dtype=torch.float64, requires_grad=True)
    _check(theirs, ours, x)


def test_torchvision_index_differs_only_where_a_trailing_axis_shrinks():
    """``RelPosBias(index="torchvision")`` is torchvision's reading of a shrunk window; the exact
    index agrees with it where only time shrinks and differs where height or width does."""
    theirs = _torchvision((4, 3, 3), (2, 1, 1), 2, 8)
    tv = from_torchvision(theirs)
    exact = dataclasses.replace(tv.spec, pe=(RelPosBias(),)).build(8, 2, dtype=torch.float64)
    exact.load_state_dict(tv.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 2, 6, 6, 8, dtype=torch.float64)  # time shrinks to 2
        torch.testing.assert_close(exact(x), tv(x), atol=1e-10, rtol=0)
        x = torch.randn(1, 5, 2, 6, 8, dtype=torch.float64)  # height shrinks to 2
        assert not torch.allclose(exact(x), tv(x))
        torch.testing.assert_close(tv(x), theirs(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("backend", ["dense", "flex"])
def test_other_backends_equal_torchvision_3d(backend):
    """The dense and FlexAttention lowerings of the same 3-D spec, where they apply (forward;
    masking the padded keys, ``pad="mask"``, on a map the window divides, which is then the
    same attention as torchvision's)."""
    theirs = _torchvision((2, 3, 3), (1, 1, 1), 2, 8, seed=3)
    tv = from_torchvision(theirs)
    spec = dataclasses.replace(tv.spec, backend=backend, pad="mask")
    layer = spec.build(8, 2, dtype=torch.float64)
    layer.load_state_dict(tv.state_dict())
    x = torch.randn(2, 4, 6, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), theirs(x), atol=1e-10, rtol=0)


def test_from_torchvision_3d_reads_the_module():
    theirs = video.ShiftedWindowAttention3d(16, [8, 7, 7], [4, 3, 3], 2, attention_dropout=0.1)
    layer = from_torchvision(theirs)
    assert layer.spec.partition == Window((8, 7, 7), shift=(4, 3, 3), clamp="timm")
    assert layer.spec.attn_drop == pytest.approx(0.1)
    assert layer.pe[0].tables[0].shape == (15 * 13 * 13, 2)
    with pytest.raises(AttnblocksError, match="3-D"):
        layer(torch.randn(1, 7, 7, 16))  # a 2-D map for a 3-D window
