"""Downsample specs, LocalConv, and hybrids of reduced-key groups with window/stripe/grid groups
against a plain per-group oracle."""

import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    Downsample,
    Global,
    LePE,
    LocalConv,
    Split,
    Stripe,
    Window,
    explain,
    zoo,
)
from attnblocks.backends import dense_attention
from attnblocks.masks import partition_oracle
from helpers import randomize_
from references import plain
from strategies import concrete_partitions

TOL = {"atol": 1e-10, "rtol": 1e-9}


def plain_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """Each head group on its own, densely: reduced keys with the plain loop conv and norm for
    Downsample groups, the coordinate-built oracle mask for the others. ``x: (B, H, W, C)``."""
    B, H, W, _ = x.shape
    q = plain._linear(x, layer.q.weight, layer.q.bias)
    kv, rest = None, 0
    if layer.kv is not None:
        kv, rest = plain._linear(x, layer.kv.weight, layer.kv.bias), layer.kv.out_features // 2
    outs, r0 = [], 0
    for g, runner, own in zip(layer.groups, layer.runners, layer.own_kv):
        (c0, c1), c, h = g.channels, g.dim, g.num_heads

        def heads(t, h=h, d=c // h):
            return t.reshape(B, -1, h, d).transpose(1, 2)

        if own:
            red = x
            if g.partition.reduces:
                red = plain._strided_patch_conv(x, runner.sr.weight, runner.sr.bias)
                red = plain._layer_norm(red, runner.norm.weight, runner.norm.bias)
                red = plain._gelu_exact(red) if g.partition.act else red
            kvg = plain._linear(red, runner.kv.weight, runner.kv.bias)
            k, v = kvg[..., :c], kvg[..., c:]
            allowed = torch.ones(H * W, k.shape[1] * k.shape[2], dtype=torch.bool)
        else:
            k, v = kv[..., r0 : r0 + c], kv[..., rest + r0 : rest + r0 + c]
            allowed = torch.from_numpy(partition_oracle(g.partition, H, W))
            r0 += c
        o = dense_attention(heads(q[..., c0:c1]), heads(k), heads(v), allowed, layer.scale)
        outs.append(o.transpose(1, 2).reshape(B, H, W, c))
    return plain._linear(torch.cat(outs, dim=-1), layer.proj.weight, layer.proj.bias)


def downsamples(max_ratio: int):
    return st.builds(
        Downsample,
        st.integers(1, max_ratio),
        act=st.sampled_from([None, "gelu"]),
        conv1x1=st.booleans(),
    )


@given(data=st.data(), H=st.integers(1, 12), W=st.integers(1, 12), hg=st.integers(1, 2))
def test_hybrid_equals_plain_per_group(data, H, W, hg):
    r = min(H, W, 4)
    parts = data.draw(st.lists(st.one_of(concrete_partitions(6), downsamples(r)), max_size=2))
    parts.insert(data.draw(st.integers(0, len(parts))), data.draw(downsamples(r)))
    n, d = len(parts), data.draw(st.integers(1, 3))
    layer = randomize_(Attention(heads=Split(*parts)).build(n * hg * d, n * hg).double(), seed=H)
    x = torch.randn(data.draw(st.integers(1, 2)), H, W, n * hg * d, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain_forward(layer, x), **TOL)


@pytest.mark.parametrize("pad", ["mask", "zeros", "timm"])
def test_token_group_of_hybrid_equals_token_only_layer(pad):
    """The window group of Split(Window, Downsample) reads q and the fused kv as a qkv layer
    does, padding fill (pad="timm") included."""
    window = Window(4, shift=1)
    hybrid = randomize_(Attention(heads=Split(window, Downsample(2)), pad=pad).build(8, 2))
    plain_layer = Attention(heads=Split(window, Global()), pad=pad).build(8, 2)
    with torch.no_grad():
        qkv = plain_layer.qkv
        kw, kb = hybrid.kv.weight.view(2, 4, 8), hybrid.kv.bias.view(2, 4)
        qkv.weight.view(3, 8, 8)[0] = hybrid.q.weight
        qkv.bias.view(3, 8)[0] = hybrid.q.bias
        qkv.weight.view(3, 8, 8)[1:, :4] = kw
        qkv.bias.view(3, 8)[1:, :4] = kb
        for layer in (hybrid, plain_layer):
            layer.proj.weight.copy_(torch.eye(8))
            layer.proj.bias.zero_()
        x = torch.randn(2, 6, 7, 8)
        torch.testing.assert_close(hybrid(x)[..., :4], plain_layer(x)[..., :4])


@pytest.mark.parametrize("n", [1, 2])
def test_ratio_one_is_global_attention(n):
    spec = Attention(partition=Downsample(1), heads=Split(n))
    layer = randomize_(spec.build(8, 2).double())
    ref = Attention(partition=Global(), heads=Split(n)).build(8, 2).double()
    with torch.no_grad():
        w, b = ref.qkv.weight.view(3, 8, 8), ref.qkv.bias.view(3, 8)
        w[0], b[0] = layer.q.weight, layer.q.bias
        for g, runner in zip(layer.groups, layer.runners):
            c0, c1 = g.channels
            w[1:, c0:c1] = runner.kv.weight.view(2, c1 - c0, 8)
            b[1:, c0:c1] = runner.kv.bias.view(2, c1 - c0)
        ref.proj.load_state_dict(layer.proj.state_dict())
        x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
        torch.testing.assert_close(layer(x), ref(x), **TOL)


def test_local_conv_on_windows_is_lepe():
    a = randomize_(Attention(partition=Stripe(2, axis="v"), pe=LocalConv()).build(8, 2).double())
    b = Attention(partition=Stripe(2, axis="v"), pe=LePE()).build(8, 2).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), **TOL)


def test_hybrid_trains():
    layer = Attention(heads=Split(Window(2), Downsample(2, act="gelu")), pe=LocalConv())
    layer = layer.build(4, 2).double()
    x = torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize(
    "spec",
    [
        Downsample(8),
        Downsample((8, 4), act="gelu"),
        Downsample((2, 1), act="gelu", conv1x1=True),
        Downsample(1),
        zoo.shunted(8),
        zoo.shunted(2),
        LocalConv(kernel=5),
    ],
)
def test_repr_round_trips(spec):
    assert eval(repr(spec)) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(eval(repr(spec)))


def test_normalisation_and_resolution():
    assert Downsample((4, 4)) == Downsample(4) == Downsample([4])
    assert not Downsample(4).is_generic()
    assert Downsample((8, 4)).is_generic()
    assert Downsample((8, 4), act="gelu").resolve(1, 2) == Downsample(4, act="gelu")
    assert Downsample(1).reduces is False and Downsample(1, conv1x1=True).reduces
    assert Downsample(4).reduced_size(9, 13) == (2, 3)


def test_explain():
    text = explain(zoo.shunted(4), (9, 13), 32, 2)
    assert "group 0: heads [0, 1), channels [0, 16), Downsample(4, act='gelu')" in text
    assert "keys: 2x3 reduced tokens (Conv2d(k=s=4) -> LayerNorm -> GELU), last 1 rows" in text
    assert "keys: 4x6 reduced tokens (Conv2d(k=s=2) -> LayerNorm -> GELU)" in text
    assert "no reduction" in explain(zoo.pvtv2(1), (3, 3), 8, 2)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Downsample(0), AttnblocksError, "Downsample: ratio must be >= 1, got 0"),
        (lambda: Downsample(()), AttnblocksError, "ratio must be an int or a non-empty tuple"),
        (lambda: Downsample(2.0), TypeError, r"Downsample: ratio must be an int, got 2.0"),
        (
            lambda: Downsample(2, act="relu"),
            AttnblocksError,
            r"act must be one of \(None, 'gelu'\), got act='relu'",
        ),
        (lambda: Downsample(2, conv1x1=1), TypeError, "conv1x1 must be a bool, got 1"),
        (lambda: Downsample((4, 2)).reduced_size(8, 8), AttnblocksError, "resolve it with"),
        (
            lambda: LocalConv(kernel=4),
            AttnblocksError,
            "LocalConv: kernel must be odd, got kernel=4",
        ),
    ],
)
def test_spec_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_map_smaller_than_a_group_ratio():
    layer = zoo.shunted(8).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"cannot reduce a 4x12 token map: .* ratio 8"):
        layer(torch.randn(1, 4, 12, 8))


def test_pad_error_refuses_dropped_tokens():
    layer = Attention(partition=Downsample(4), pad="error").build(8, 2)
    assert layer(torch.randn(1, 8, 12, 8)).shape == (1, 8, 12, 8)
    with pytest.raises(AttnblocksError, match=r"cannot reduce a 9x12 token map without dropping"):
        layer(torch.randn(1, 9, 12, 8))
