"""PVTv2 spatial-reduction attention: equal to timm's ``pvt_v2.Attention`` with its weights
copied in, to the authors' golden output, and to the plain reference."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from timm.models.pvt_v2 import Attention as TimmPvtAttention

from attnblocks import AttnblocksError, zoo
from attnblocks.convert import load_pvtv2, load_timm_pvtv2
from helpers import randomize_
from references.golden import golden_cases, load_golden
from references.plain import pvtv2_attention

TOL = {"atol": 1e-10, "rtol": 1e-9}


@st.composite
def pvt_cases(draw):
    sr = draw(st.sampled_from([1, 2, 4, 8]))
    H = draw(st.integers(sr, 2 * sr + 3))  # divisible and not
    W = draw(st.integers(sr, 2 * sr + 3))
    heads = draw(st.integers(1, 3))
    d = draw(st.integers(1, 4))
    B = draw(st.integers(1, 2))
    return sr, H, W, heads, d, B


@given(case=pvt_cases())
def test_equals_timm(case):
    sr, H, W, heads, d, B = case
    C = heads * d
    ref = randomize_(TimmPvtAttention(C, heads, sr_ratio=sr).double().eval(), seed=sr + H)
    layer = load_timm_pvtv2(zoo.pvtv2(sr).build(C, heads).double(), ref)
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        expected = ref(x.reshape(B, H * W, C), [H, W])
        torch.testing.assert_close(layer(x.reshape(B, H * W, C), hw=(H, W)), expected, **TOL)
        torch.testing.assert_close(layer(x), expected.view(B, H, W, C), **TOL)


def _authors_params(layer) -> dict[str, torch.Tensor]:
    return {k.removeprefix("runners.0."): v for k, v in layer.state_dict().items()}


@given(case=pvt_cases())
def test_equals_plain_reference(case):
    sr, H, W, heads, d, B = case
    C = heads * d
    layer = randomize_(zoo.pvtv2(sr).build(C, heads).double(), seed=H * W)
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        ref = pvtv2_attention(_authors_params(layer), x, sr, heads)
        torch.testing.assert_close(layer(x), ref, **TOL)


@pytest.mark.parametrize("case", golden_cases("pvtv2"), ids=lambda c: c["name"])
def test_equals_authors_golden(case):
    g = load_golden(case)
    meta = g["meta"]
    layer = zoo.pvtv2(meta["sr"]).build(g["x"].shape[-1], meta["heads"]).double()
    load_pvtv2(layer, g["params"])
    x = g["x"].clone().requires_grad_(True)
    y = layer(x)
    torch.testing.assert_close(y, g["y"], **TOL)
    (gx,) = torch.autograd.grad(y, x, g["grad_y"])
    torch.testing.assert_close(gx, g["grad_x"], **TOL)


@pytest.mark.parametrize("sr, hw", [(1, (2, 3)), (2, (3, 5)), (3, (4, 3))])
def test_gradcheck(sr, hw):
    layer = randomize_(zoo.pvtv2(sr).build(4, 2).double(), std=0.5)
    x = torch.randn(1, *hw, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    names = [n for n, _ in layer.named_parameters()]

    def f(*params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x.detach(),))

    assert torch.autograd.gradcheck(f, tuple(layer.parameters()), fast_mode=True)


def test_state_dict_keys_match_timm():
    layer = zoo.pvtv2(4).build(16, 2)
    ref = TimmPvtAttention(16, 2, sr_ratio=4)
    assert set(_authors_params(layer)) == set(ref.state_dict())


def test_map_smaller_than_ratio():
    layer = zoo.pvtv2(8).build(16, 2)
    with pytest.raises(AttnblocksError, match=r"Downsample\(8\) cannot reduce a 7x20 token map"):
        layer(torch.randn(1, 7, 20, 16))


def test_timm_linear_variant_is_refused():
    ref = TimmPvtAttention(16, 2, linear_attn=True)
    with pytest.raises(AttnblocksError, match="linear_attn=True"):
        load_timm_pvtv2(zoo.pvtv2(1).build(16, 2), ref)


def test_loading_into_a_layer_without_own_kv():
    with pytest.raises(AttnblocksError, match="has no head group 0 with its own keys"):
        load_pvtv2(zoo.cswin(2).build(16, 2), {})


def test_wrong_ratio_is_a_shape_error():
    state = _authors_params(zoo.pvtv2(4).build(16, 2))
    with pytest.raises(AttnblocksError, match=r"runners.0.sr.weight has shape \(16, 16, 4, 4\)"):
        load_pvtv2(zoo.pvtv2(2).build(16, 2), state)


def test_pvtv2_bad_sr():
    with pytest.raises(AttnblocksError, match="pvtv2: sr must be >= 1, got 0"):
        zoo.pvtv2(0)
