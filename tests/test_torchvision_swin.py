"""torchvision's Swin attention (``ShiftedWindowAttention`` and its V2) against the layer that
:func:`attnblocks.convert.from_torchvision` builds from it, weights copied, at drawn shapes."""

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import AttnblocksError
from attnblocks.convert import from_torchvision

swin = pytest.importorskip("torchvision.models.swin_transformer")


@st.composite
def configs(draw, v2: bool):
    low = 2 if v2 else 1  # torchvision's V2 divides by window - 1
    window = [draw(st.integers(low, 5)), draw(st.integers(low, 5))]
    shift = [draw(st.integers(0, w - 1)) for w in window]
    heads = draw(st.integers(1, 4))
    dim = heads * draw(st.sampled_from([1, 2, 4]))
    hw = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    batch = draw(st.integers(0, 2))
    qkv_bias = draw(st.booleans())
    return window, shift, heads, dim, hw, batch, qkv_bias


def _torchvision(v2: bool, window, shift, heads, dim, qkv_bias, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = swin.ShiftedWindowAttentionV2 if v2 else swin.ShiftedWindowAttention
    module = cls(dim, window, shift, heads, qkv_bias=qkv_bias).double().eval()
    with torch.no_grad():  # away from the initial values, which hide mistakes (zero tables)
        for p in module.parameters():
            p.normal_(0, 0.5)
        if v2:
            module.logit_scale.uniform_(-1, 3)
    return module


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@given(data=st.data())
def test_equals_torchvision(v2, data):
    window, shift, heads, dim, (H, W), batch, qkv_bias = data.draw(configs(v2))
    theirs = _torchvision(v2, window, shift, heads, dim, qkv_bias, seed=H * 31 + W)
    ours = from_torchvision(theirs)
    assert ours.qkv.weight.dtype == torch.float64
    x = torch.randn(batch, H, W, dim, dtype=torch.float64, requires_grad=True)
    want, got = theirs(x), ours(x)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    if batch:
        g = torch.randn_like(want)
        (gw,) = torch.autograd.grad(want, x, g)
        (gg,) = torch.autograd.grad(got, x, g)
        torch.testing.assert_close(gg, gw, atol=1e-10, rtol=0)


@pytest.mark.parametrize("hw", [(13, 9), (5, 3), (14, 14)])
def test_flex_backend_equals_torchvision(hw):
    """The FlexAttention lowering of the same spec (forward: no flex backward on CPU)."""
    theirs = _torchvision(False, [4, 4], [2, 2], 2, 8, True, seed=0)
    eager = from_torchvision(theirs)
    spec = dataclasses.replace(eager.spec, backend="flex")
    flex = spec.build(8, 2, dtype=torch.float64)
    flex.load_state_dict(eager.state_dict())
    x = torch.randn(2, *hw, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(flex(x), theirs(x), atol=1e-10, rtol=0)


def test_block_and_rules_by_name():
    block = swin.SwinTransformerBlock(16, 2, [7, 7], [3, 3])
    layer = from_torchvision(block)
    assert layer.spec.partition.clamp == "torchvision" and layer.spec.pad == "torchvision"
    assert layer.spec.attn_drop == block.attn.attention_dropout


def test_refusals():
    with pytest.raises(TypeError, match="ShiftedWindowAttention"):
        from_torchvision(torch.nn.Linear(4, 4))
    no_proj_bias = swin.ShiftedWindowAttention(16, [7, 7], [3, 3], 2, proj_bias=False)
    with pytest.raises(AttnblocksError, match="proj_bias=False"):
        from_torchvision(no_proj_bias)
