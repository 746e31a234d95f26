"""Shunted self-attention: equal to the authors' golden outputs (forward and input gradient)
and to the plain loop reference over drawn sizes, ratios and heads."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, AttnblocksError, Downsample, RelPosBias, Split, zoo
from attnblocks.convert import load_shunted
from helpers import randomize_
from references.golden import golden_cases, load_golden
from references.plain import shunted_attention

TOL = {"atol": 1e-10, "rtol": 1e-9}


def _authors_params(layer, sr: int) -> dict[str, torch.Tensor]:
    """The layer's weights under the authors' key names."""
    state = layer.state_dict()
    conv_w, conv_b = state["pe.0.conv.weight"], state["pe.0.conv.bias"]
    params = {k: v for k, v in state.items() if k.split(".")[0] in ("q", "proj")}
    if sr == 1:
        params |= {"kv.weight": state["runners.0.kv.weight"], "kv.bias": state["runners.0.kv.bias"]}
        return params | {"local_conv.weight": conv_w, "local_conv.bias": conv_b}
    half = layer.dim // 2
    for i in (1, 2):
        for part in ("sr", "norm", "kv"):
            for p in ("weight", "bias"):
                params[f"{part}{i}.{p}"] = state[f"runners.{i - 1}.{part}.{p}"]
        sl = slice(0, half) if i == 1 else slice(half, None)
        params[f"local_conv{i}.weight"], params[f"local_conv{i}.bias"] = conv_w[sl], conv_b[sl]
    return params


@pytest.mark.parametrize("case", golden_cases("shunted"), ids=lambda c: c["name"])
def test_equals_authors_golden(case):
    g = load_golden(case)
    meta = g["meta"]
    layer = zoo.shunted(meta["sr"]).build(g["x"].shape[-1], meta["heads"]).double()
    load_shunted(layer, g["params"])
    x = g["x"].clone().requires_grad_(True)
    y = layer(x)
    torch.testing.assert_close(y, g["y"], **TOL)
    (gx,) = torch.autograd.grad(y, x, g["grad_y"])
    torch.testing.assert_close(gx, g["grad_x"], **TOL)


@given(
    sr=st.sampled_from([1, 2, 4, 8]),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    heads=st.sampled_from([2, 4]),
    d=st.integers(1, 3),
    B=st.integers(1, 2),
)
def test_equals_plain_reference(sr, extra, heads, d, B):
    H, W, C = sr + extra[0], sr + extra[1], heads * d
    layer = randomize_(zoo.shunted(sr).build(C, heads).double(), seed=H * W + sr)
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        ref = shunted_attention(_authors_params(layer, sr), x, sr, heads)
        torch.testing.assert_close(layer(x), ref, **TOL)


@pytest.mark.parametrize("sr, hw", [(1, (2, 3)), (2, (3, 2)), (4, (4, 5))])
def test_gradcheck(sr, hw):
    layer = randomize_(zoo.shunted(sr).build(4, 2).double(), std=0.5)
    x = torch.randn(1, *hw, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("sr", [1, 4])
def test_converter_round_trip(sr):
    layer = randomize_(zoo.shunted(sr).build(8, 2).double())
    params = {k: v.detach().clone() for k, v in _authors_params(layer, sr).items()}
    fresh = load_shunted(zoo.shunted(sr).build(8, 2).double(), params)
    for k, v in _authors_params(fresh, sr).items():
        torch.testing.assert_close(v, params[k], atol=0, rtol=0)


def test_two_branch_state_into_single_form():
    params = _authors_params(zoo.shunted(4).build(8, 2), 4)
    with pytest.raises(AttnblocksError, match="has no head group 1 with its own keys"):
        load_shunted(zoo.shunted(1).build(8, 2), params)


def test_missing_local_conv():
    params = _authors_params(zoo.shunted(4).build(8, 2), 4)
    del params["local_conv2.bias"]
    with pytest.raises(AttnblocksError, match=r"missing keys \['local_conv2.bias'\]"):
        load_shunted(zoo.shunted(4).build(8, 2), params)


def test_odd_ratio():
    with pytest.raises(AttnblocksError, match=r"shunted: sr must be 1 or even .* got sr=3"):
        zoo.shunted(3)


def test_one_ratio_per_group():
    spec = Attention(partition=Downsample((8, 4)), heads=Split(4))
    with pytest.raises(AttnblocksError, match=r"gives 2 ratios, one per head group, .* 4 groups"):
        spec.build(16, 4)


def test_per_group_ratios_need_a_split():
    with pytest.raises(AttnblocksError, match=r"Downsample\(\(8, 4\)\) means one form per head"):
        Attention(partition=Downsample((8, 4)))


def test_window_encoders_refused_on_reduced_keys():
    layer = Attention(partition=Downsample(2), pe=RelPosBias(size=4)).build(8, 2)
    with pytest.raises(AttnblocksError, match="RelPosBiasModule needs window-aligned keys"):
        layer(torch.randn(1, 4, 4, 8))
