"""Backends as a choice: ``dense`` (the oracle) and ``flex`` equal ``eager`` for every spec."""

import dataclasses

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Grid,
    LePE,
    Partition,
    RelPosBias,
    Split,
    Window,
    zoo,
)
from attnblocks.backends.dense import register_dense_encoder, window_coords
from attnblocks.encoders import EncoderModule
from attnblocks.families.rect.runner import RectRunner
from attnblocks.runners import register_runner
from helpers import oracle_forward, randomize_
from strategies import concrete_partitions, divisible_maps

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

small = st.integers(1, 9)
encoders = st.sampled_from(
    [None, LePE(), RelPosBias(size=9), (LePE(), RelPosBias(size=9)), LePE(kernel=5)]
)


def _twin(layer, backend):
    """The same layer (same weights) on another backend."""
    spec = dataclasses.replace(layer.spec, backend=backend)
    twin = spec.build(layer.dim, layer.num_heads).to(next(layer.parameters()).dtype)
    twin.load_state_dict(layer.state_dict())
    return twin


@st.composite
def layers(draw, pads=("mask",)):
    parts = draw(st.lists(concrete_partitions(max_size=5), min_size=1, max_size=3))
    hg, d = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    pe = draw(encoders)
    pad = draw(st.sampled_from(pads))
    heads = Split(*parts) if len(parts) > 1 else None
    part = None if len(parts) > 1 else parts[0]
    n = len(parts)
    spec = Attention(partition=part, heads=heads, pe=pe, pad=pad)
    return randomize_(spec.build(n * hg * d, n * hg).double(), std=0.5, seed=draw(small))


@settings(max_examples=15)
@given(layer=layers(), H=small, W=small, B=st.integers(1, 2))
def test_dense_equals_eager_float64(layer, H, W, B):
    x = torch.randn(B, H, W, layer.dim, dtype=torch.float64, requires_grad=True)
    dense = _twin(layer, "dense")
    y, yd = layer(x), dense(x)
    torch.testing.assert_close(yd, y, atol=1e-10, rtol=1e-9)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *layer.parameters()], g)
    grads_d = torch.autograd.grad(yd, [x, *dense.parameters()], g)
    for a, b in zip(grads_d, grads):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-8)


@settings(max_examples=10)  # eager FlexAttention is slow: ~0.4 s a call
@given(layer=layers(pads=("mask", "zeros", "timm")), H=small, W=small)
def test_flex_equals_eager_float64(layer, H, W):
    x = torch.randn(2, H, W, layer.dim, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(_twin(layer, "flex")(x), layer(x), atol=1e-10, rtol=1e-9)


@given(part=concrete_partitions(max_size=5), H=small, W=small)
def test_dense_without_encoders_is_the_oracle(part, H, W):
    layer = randomize_(Attention(partition=part, backend="dense").build(4, 2).double())
    x = torch.randn(1, H, W, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), oracle_forward(layer, x), atol=1e-12, rtol=1e-12)


def test_auto_is_eager_on_cpu():
    layer = randomize_(zoo.swin(3, 1).build(8, 2))
    x = torch.randn(1, 7, 5, 8)
    assert layer.spec.backend == "auto"
    torch.testing.assert_close(layer(x), _twin(layer, "eager")(x), atol=0, rtol=0)


def test_window_coords_of_a_shifted_window():
    co = window_coords(Window(2, shift=1), 3, 3)
    assert co.window.tolist() == [3, 2, 2, 1, 0, 0, 1, 0, 0]
    assert co.pos[4].tolist() == [0, 0]


# --- errors -----------------------------------------------------------------------------------


def test_flex_with_grad_on_cpu_raises():
    layer = zoo.swin(3, 1).build(8, 2)
    flex = _twin(layer, "flex")
    with pytest.raises(AttnblocksError, match=r"backend='flex' cannot run Window\(3, shift=1.*CPU"):
        flex(torch.randn(1, 6, 6, 8))
    with torch.no_grad():
        assert flex(torch.randn(1, 6, 6, 8)).isfinite().all()


def test_flex_dropout_in_training_raises():
    layer = Attention(partition=Window(2), attn_drop=0.1, backend="flex").build(4, 1)
    with torch.no_grad(), pytest.raises(AttnblocksError, match=r"no attention dropout.*0.1"):
        layer(torch.randn(1, 4, 4, 4))


def test_unknown_backend_raises():
    with pytest.raises(AttnblocksError, match=r"backend must be one of .* got 'fast'"):
        Attention(partition=Window(7), backend="fast")


def test_dense_with_padding_tokens_raises():
    with pytest.raises(AttnblocksError, match=r"backend='dense'.*pad='mask' or 'error', got pad="):
        Attention(partition=Window(7), pad="zeros", backend="dense")


def test_dense_with_pad_error_raises_on_indivisible_map():
    layer = Attention(partition=Window(3), pe=LePE(), pad="error", backend="dense").build(4, 1)
    with pytest.raises(AttnblocksError, match=r"Window\(3\) cannot partition a 4x6 token map"):
        layer(torch.randn(1, 4, 6, 4))


@dataclasses.dataclass(frozen=True, repr=False)
class _Odd(Partition):
    pass


register_runner(_Odd)(RectRunner)


def test_partition_without_lowering_raises():
    layer = Attention(partition=_Odd(), backend="flex").build(4, 1)
    with torch.no_grad(), pytest.raises(AttnblocksError, match=r"'flex' has no lowering for _Odd"):
        layer(torch.randn(1, 2, 2, 4))


class _Bias(EncoderModule):
    def bias(self, group, layout):
        return torch.zeros(group.num_heads, layout.tokens, layout.tokens)


def test_encoder_without_dense_form_raises():
    layer = Attention(partition=Window(2), backend="dense").build(4, 1)
    layer.pe.append(_Bias())
    with pytest.raises(AttnblocksError, match="encoder _Bias has no dense form"):
        layer(torch.randn(1, 2, 2, 4))
    register_dense_encoder(_Bias, bias=lambda m, g, co: torch.zeros(1, 4, 4))
    assert layer(torch.randn(1, 2, 2, 4)).shape == (1, 2, 2, 4)


def test_relpos_table_too_small_raises_on_dense():
    layer = Attention(partition=Window(4), pe=RelPosBias(size=2), backend="dense").build(4, 1)
    with pytest.raises(AttnblocksError, match=r"table for 2x2 windows, but Window.4. makes 4x4"):
        layer(torch.randn(1, 4, 4, 4))


@given(case=divisible_maps(), heads=st.integers(1, 2), split=st.booleans())
@example(case=(Grid((1, 2)), 1, 8), heads=1, split=False)  # an identity-order rule once wrong
@example(case=(Grid((2, 1)), 8, 1), heads=1, split=False)
def test_eager_equals_dense_on_divisible_and_thin_maps(case, heads, split):
    """The ordered fast path (unpadded maps: token permutations, identity orders) on
    rectangular grids and windows, one-row and one-column maps: equal to the dense oracle."""
    part, H, W = case
    spec = Attention(heads=Split(part, part)) if split else Attention(partition=part)
    n = 2 if split else 1
    layer = randomize_(spec.build(4 * n * heads, n * heads).double(), std=0.5)
    x = torch.randn(2, H, W, layer.dim, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(_twin(layer, "dense")(x), layer(x), atol=1e-10, rtol=1e-9)


@st.composite
def attn_drop_specs(draw):
    spec = draw(
        st.sampled_from(
            [
                zoo.swin(3, shift=1),
                zoo.cswin(2),
                zoo.maxvit_grid(2),
                zoo.pvtv2(2),
                zoo.shunted(4),
                zoo.nat(3),
                zoo.dilateformer(3, (1, 2)),
                Attention(heads=Split(Window(3, shift=1), Grid((2, 1))), pe=LePE()),
            ]
        )
    )
    return spec, draw(st.sampled_from([0.1, 0.5, 0.9]))


@settings(max_examples=10)
@given(case=attn_drop_specs(), H=st.integers(4, 8), W=st.integers(4, 8))
def test_attention_dropout_is_off_in_eval(case, H, W):
    """``attn_drop > 0`` in ``eval()`` gives exactly ``attn_drop = 0`` (with grad recorded and
    without)."""
    spec, p = case
    layer = randomize_(dataclasses.replace(spec, attn_drop=p).build(8, 2).double()).eval()
    plain = randomize_(spec.build(8, 2).double()).eval()
    x = torch.randn(2, H, W, 8, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(x), plain(x), atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain(x), atol=0, rtol=0)


def _zero_padded_windows(layer, x, wh: int, ww: int) -> torch.Tensor:
    """An independent ``pad="zeros"`` reference: q, k, v zero-padded to whole windows, every
    window attended with a plain softmax over all its slots (padded ones included)."""
    B, H, W, C = x.shape
    h = layer.num_heads
    d = C // h
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    full = x.new_zeros(B, Hp, Wp, 3, h, d)
    full[:, :H, :W] = layer.qkv(x).view(B, H, W, 3, h, d)
    out = x.new_zeros(B, Hp, Wp, h, d)
    for i in range(0, Hp, wh):
        for j in range(0, Wp, ww):
            q, k, v = full[:, i : i + wh, j : j + ww].reshape(B, wh * ww, 3, h, d).unbind(2)
            a = torch.einsum("bqhd,bkhd->bhqk", q, k) * layer.scale
            o = torch.einsum("bhqk,bkhd->bqhd", a.softmax(-1), v)
            out[:, i : i + wh, j : j + ww] = o.reshape(B, wh, ww, h, d)
    return layer.proj(out[:, :H, :W].reshape(B, H, W, C))


@given(wh=st.integers(1, 5), ww=st.integers(1, 5), H=small, W=small, heads=st.integers(1, 2))
def test_pad_zeros_matches_a_zero_padded_reference(wh, ww, H, W, heads):
    layer = Attention(partition=Window((wh, ww)), pad="zeros").build(4 * heads, heads)
    layer = randomize_(layer.double(), std=0.5)
    x = torch.randn(2, H, W, layer.dim, dtype=torch.float64)
    with torch.no_grad():
        want = _zero_padded_windows(layer, x, wh, ww)
        torch.testing.assert_close(layer(x), want, atol=1e-10, rtol=1e-9)
