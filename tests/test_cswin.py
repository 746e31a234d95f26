"""CSWin: equal to the authors' golden outputs and to a plain loop-over-stripes reference."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import zoo
from attnblocks.convert import load_cswin
from helpers import randomize_
from references.golden import golden_cases, load_golden
from references.plain import cswin_attention


def _authors_params(layer, last: bool) -> dict[str, torch.Tensor]:
    conv = layer.pe[0].conv
    C = layer.dim
    params = {
        "qkv.weight": layer.qkv.weight,
        "qkv.bias": layer.qkv.bias,
        "proj.weight": layer.proj.weight,
        "proj.bias": layer.proj.bias,
    }
    if last:
        params |= {"attns.0.get_v.weight": conv.weight, "attns.0.get_v.bias": conv.bias}
    else:
        for i, sl in enumerate((slice(0, C // 2), slice(C // 2, C))):
            params |= {
                f"attns.{i}.get_v.weight": conv.weight[sl],
                f"attns.{i}.get_v.bias": conv.bias[sl],
            }
    return params


@pytest.mark.parametrize("case", golden_cases("cswin"), ids=lambda c: c["name"])
def test_equals_authors_golden(case):
    g = load_golden(case)
    meta = g["meta"]
    layer = zoo.cswin(meta["split"], last=meta["last"], pad="error")
    layer = layer.build(g["x"].shape[-1], meta["heads"]).double()
    load_cswin(layer, g["params"])
    x = g["x"].clone().requires_grad_(True)
    y = layer(x)
    torch.testing.assert_close(y, g["y"], atol=1e-10, rtol=1e-9)
    (gx,) = torch.autograd.grad(y, x, g["grad_y"])
    torch.testing.assert_close(gx, g["grad_x"], atol=1e-10, rtol=1e-9)


@given(
    split=st.integers(1, 4),
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    heads=st.sampled_from([2, 4]),
    d=st.integers(1, 3),
    last=st.booleans(),
    B=st.integers(1, 2),
)
def test_equals_plain_reference(split, n, heads, d, last, B):
    H, W, C = n[0] * split, n[1] * split, heads * d
    layer = randomize_(zoo.cswin(split, last=last).build(C, heads).double())
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        ref = cswin_attention(_authors_params(layer, last), x, split, heads, last=last)
        torch.testing.assert_close(layer(x), ref, atol=1e-10, rtol=1e-9)


def test_converter_round_trip_keys():
    """The authors' keys load into the layer and come back out unchanged."""
    layer = randomize_(zoo.cswin(2).build(16, 2).double())
    params = {k: v.detach().clone() for k, v in _authors_params(layer, last=False).items()}
    fresh = load_cswin(zoo.cswin(2).build(16, 2).double(), params)
    for k, v in _authors_params(fresh, last=False).items():
        torch.testing.assert_close(v, params[k], atol=0, rtol=0)
