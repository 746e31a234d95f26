"""Dilated / Neighborhood specs, DilateFormer (golden outputs, plain reference), hybrids, CPE,
zoo entries and the converter."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    CPE,
    Attention,
    AttnblocksError,
    Dilated,
    Global,
    Neighborhood,
    Split,
    Stripe,
    Window,
    dense_mask,
)
from attnblocks.backends import dense_attention
from attnblocks.convert import load_dilateformer
from attnblocks.zoo import dilateformer, dinat, nat
from helpers import randomize_

try:
    from tests.references import plain
    from tests.references.golden import golden_cases, load_golden
except ImportError:  # pytest's rootdir insertion of tests/
    from references import plain  # type: ignore[no-redef]
    from references.golden import golden_cases, load_golden  # type: ignore[no-redef]

TOL = {"atol": 1e-10, "rtol": 1e-9}
LOWERINGS = ("slices", "tiles")


def _force(layer, lowering: str):
    for r in layer.runners:
        if hasattr(r, "lowering"):
            r.lowering = lowering
    return layer


def reference_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """Per head group: the plain loop for sliding windows, the dense oracle for the others."""
    B, H, W, C = x.shape
    qkv = layer.qkv(x).view(B, H, W, 3, layer.num_heads, layer.head_dim)
    q, k, v = (qkv[..., i, :, :].permute(0, 3, 1, 2, 4) for i in range(3))  # (B, h, H, W, d)
    outs = []
    for g in layer.groups:
        s, p = slice(*g.heads), g.partition
        if isinstance(p, Dilated):
            o = plain.neighborhood_attention(
                q[:, s], k[:, s], v[:, s], p.kernel, p.dilation, p.border
            )
        else:
            flat = [t[:, s].flatten(2, 3) for t in (q, k, v)]
            o = dense_attention(*flat, dense_mask(p, H, W), layer.scale).unflatten(2, (H, W))
        outs.append(o)
    return layer.proj(torch.cat(outs, 1).permute(0, 2, 3, 1, 4).reshape(B, H, W, C))


# ---------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------

dilations = st.one_of(st.integers(1, 4), st.lists(st.integers(1, 4), min_size=2, max_size=4))


@given(k=st.sampled_from([1, 3, 5, 7]), r=dilations, border=st.sampled_from(["zeros", "mask"]))
def test_spec_repr_eval_pickle(k, r, border):
    r = tuple(r) if isinstance(r, list) else r
    for spec in (Dilated(k, dilation=r, border=border), Neighborhood(k, dilation=r)):
        assert eval(repr(spec)) == spec
        assert pickle.loads(pickle.dumps(spec)) == spec
        assert hash(spec) == hash(eval(repr(spec)))
        assert spec.is_generic() == isinstance(r, tuple)


def test_spec_normal_forms():
    assert repr(Neighborhood(7, dilation=2)) == "Neighborhood(7, dilation=2)"
    assert repr(Dilated(3, dilation=(2, 2))) == "Dilated(3, dilation=(2, 2))"
    assert Dilated(3, dilation=(2,)) == Dilated(3, dilation=2)
    assert Dilated(3, dilation=[1, 2]) == Dilated(3, dilation=(1, 2))
    assert Neighborhood(4).border == "shift" and repr(Neighborhood(4)) == "Neighborhood(4)"
    assert Neighborhood(7, dilation=(1, 2)).resolve(1, 2) == Neighborhood(7, dilation=2)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Dilated(4), AttnblocksError, r"border='zeros' .* must be odd, got kernel=4"),
        (lambda: Dilated(2, border="mask"), AttnblocksError, r"must be odd, got kernel=2"),
        (lambda: Dilated(0), AttnblocksError, r"Dilated: kernel must be >= 1, got 0"),
        (lambda: Dilated(3, dilation=0), AttnblocksError, r"dilation must be >= 1, got 0"),
        (lambda: Dilated(3, dilation=(1, 0)), AttnblocksError, r"dilation must be >= 1, got 0"),
        (lambda: Dilated(3, dilation=()), AttnblocksError, r"must not be an empty tuple"),
        (lambda: Dilated(3, border="pad"), AttnblocksError, r"border must be one of .* 'pad'"),
        (lambda: Dilated((3, 5, 3), dilation=((1, 2),)), AttnblocksError, r"different ranks"),
        (lambda: Dilated((), border="shift"), AttnblocksError, r"kernel must be an int or a non"),
        (lambda: Dilated((3, 4)), AttnblocksError, r"kernel must be odd, got kernel=\(3, 4\)"),
        (lambda: Dilated(3, dilation=((1, 0, 3),)), AttnblocksError, r"dilation must be >= 1"),
        (lambda: Neighborhood((3, 3), dilation=(2, 3)).dilation_size, AttnblocksError, r"resolve"),
        (lambda: Neighborhood(0), AttnblocksError, r"Neighborhood: kernel must be >= 1"),
        (lambda: Neighborhood(3, dilation=1.5), TypeError, r"dilation must be an int"),
    ],
)
def test_spec_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_dilation_count_must_match_the_split():
    spec = Attention(partition=Dilated(3, dilation=(1, 2, 3)), heads=Split(2))
    with pytest.raises(AttnblocksError, match=r"\(3 dilations\).*split into 2 groups"):
        spec.build(8, 2)
    with pytest.raises(AttnblocksError, match=r"one form per head group, but there is no"):
        Attention(partition=Dilated(3, dilation=(1, 2)))


def test_generic_dilations_resolve_per_group():
    groups = dilateformer().groups(72, 6)
    assert [g.partition for g in groups] == [Dilated(3, dilation=r) for r in (1, 2, 3)]
    assert [g.heads for g in groups] == [(0, 2), (2, 4), (4, 6)]


# ---------------------------------------------------------------------------------------------
# DilateFormer
# ---------------------------------------------------------------------------------------------

DILATEFORMER = golden_cases("dilateformer")


@pytest.mark.parametrize("lowering", LOWERINGS)
@pytest.mark.parametrize("case", DILATEFORMER, ids=[c["name"] for c in DILATEFORMER])
def test_dilateformer_golden(case: dict[str, Any], lowering: str):
    g = load_golden(case)
    m = g["meta"]
    layer = dilateformer(m["kernel"], tuple(m["dilation"])).build(g["x"].shape[-1], m["heads"])
    layer = _force(load_dilateformer(layer.double(), g["params"]), lowering)
    torch.testing.assert_close(layer(g["x"]), g["y"], **TOL)


@given(
    H=st.integers(1, 8),
    W=st.integers(1, 8),
    rs=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    hg=st.integers(1, 2),
    d=st.integers(1, 3),
    lowering=st.sampled_from(LOWERINGS),
)
def test_msda_equals_plain_dilateformer(H, W, rs, hg, d, lowering):
    n = len(rs)
    C, heads = n * hg * d, n * hg
    layer = _force(randomize_(dilateformer(3, tuple(rs)).build(C, heads).double()), lowering)
    state = {k: v for k, v in layer.state_dict().items()}
    state["qkv.weight"] = state["qkv.weight"][:, :, None, None]
    x = torch.randn(2, H, W, C, dtype=torch.float64)
    ref = plain.dilateformer_attention(state, x, 3, rs, heads)
    torch.testing.assert_close(layer(x), ref, **TOL)


def test_msda_trains():
    """Unlike the authors' module (in-place writes), the layer back-propagates."""
    layer = randomize_(dilateformer().build(12, 3).double())
    x = torch.randn(1, 5, 7, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), fast_mode=True)


# ---------------------------------------------------------------------------------------------
# hybrids: groups with different runners in one layer
# ---------------------------------------------------------------------------------------------

PARTS = [
    Window(3),
    Stripe(2, axis="v"),
    Global(),
    Dilated(3, dilation=2),
    Dilated(3, border="mask"),
    Neighborhood(2, dilation=2),
    Neighborhood(3),
]


@given(
    parts=st.lists(st.sampled_from(PARTS), min_size=2, max_size=3),
    H=st.integers(4, 7),
    W=st.integers(4, 7),
    lowering=st.sampled_from(LOWERINGS),
)
def test_hybrid_split(parts, H, W, lowering):
    n = len(parts)
    layer = _force(randomize_(Attention(heads=Split(*parts)).build(2 * n, n).double()), lowering)
    x = torch.randn(1, H, W, 2 * n, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_forward(layer, x), **TOL)


def test_hybrid_window_and_dilated_builds():
    layer = Attention(heads=Split(Window(7), Dilated(3, dilation=2))).build(16, 4)
    assert layer(torch.randn(2, 14, 14, 16)).shape == (2, 14, 14, 16)


# ---------------------------------------------------------------------------------------------
# CPE
# ---------------------------------------------------------------------------------------------


def test_cpe_prepares_the_input():
    layer = randomize_(Attention(partition=Dilated(3), pe=CPE()).build(6, 2).double())
    bare = Attention(partition=Dilated(3)).build(6, 2).double()
    bare.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("pe.")})
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    conv = layer.pe[0].conv
    cpe = torch.stack([x[b] + plain._dwconv3x3(x[b], conv.weight, conv.bias) for b in range(2)])
    torch.testing.assert_close(layer(x), bare(cpe), **TOL)
    assert repr(layer.spec) == "Attention(partition=Dilated(3), pe=CPE())"


def test_cpe_errors_and_converter():
    with pytest.raises(AttnblocksError, match=r"CPE: kernel must be odd, got kernel=2"):
        CPE(kernel=2)
    layer = Attention(partition=Dilated(3), pe=CPE()).build(4, 1)
    state = {
        "qkv.weight": torch.randn(12, 4, 1, 1),
        "qkv.bias": torch.randn(12),
        "proj.weight": torch.randn(4, 4),
        "proj.bias": torch.randn(4),
        "pos_embed.weight": torch.randn(4, 1, 3, 3),
        "pos_embed.bias": torch.randn(4),
    }
    load_dilateformer(layer, state)
    torch.testing.assert_close(layer.pe[0].conv.weight, state["pos_embed.weight"])
    torch.testing.assert_close(layer.qkv.weight, state["qkv.weight"][:, :, 0, 0])


# ---------------------------------------------------------------------------------------------
# zoo and converter
# ---------------------------------------------------------------------------------------------


def test_zoo():
    assert (
        repr(dilateformer())
        == "Attention(partition=Dilated(3, dilation=(1, 2, 3)), heads=Split(3))"
    )
    assert repr(nat()) == "Attention(partition=Neighborhood(7), pe=RelPosBias())"
    assert repr(dinat(7, dilation=2, rpb=False)) == (
        "Attention(partition=Neighborhood(7, dilation=2))"
    )
    assert nat(7).build(64, 2)(torch.randn(1, 9, 10, 64)).shape == (1, 9, 10, 64)


def test_converter_errors():
    layer = dilateformer(3, (1, 2)).build(8, 2)
    good = {k: v for k, v in layer.state_dict().items()}
    bad = dict(good, **{"qkv.weight": torch.zeros(24, 8, 3, 3)})
    with pytest.raises(
        AttnblocksError, match=r"must be a 1x1 conv \(3C, C, 1, 1\), got \(24, 8, 3, 3\)"
    ):
        load_dilateformer(layer, bad)
    missing = {k: v for k, v in good.items() if k != "proj.bias"}
    with pytest.raises(AttnblocksError, match=r"missing keys \['proj.bias'\]"):
        load_dilateformer(layer, missing)


def test_explain_sliding():
    from attnblocks import explain

    text = explain(dilateformer(), (9, 11), 24, 3)
    assert "group 2: heads [2, 3), channels [16, 24), Dilated(3, dilation=3)" in text
    assert "slices: 9 offsets, pad (3, 3), zero keys in the softmax" in text
