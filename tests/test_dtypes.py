"""fp32, bf16 and fp16 on CPU: finite outputs and gradients, fully masked rows never NaN, and
low precision close to float64 within stated tolerances.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnblocks import Attention, LePE, RelPosBias, Split, Window, rect_layout
from attnblocks.backends import dense_attention
from attnblocks.families.rect.eager import window_kernel
from attnblocks.masks import mask_value, window_mask
from helpers import randomize_
from strategies import concrete_partitions

LOW = [torch.float32, torch.bfloat16, torch.float16]
# max |y - y64| over outputs of magnitude ~1 (inputs N(0, 1), weights N(0, 0.2^2)): bf16 keeps
# 8 mantissa bits (2^-8 = 0.004 per rounding), fp16 11 bits; a handful of roundings accumulate.
TOL = {torch.float32: 1e-5, torch.bfloat16: 6e-2, torch.float16: 8e-3}


@st.composite
def layers(draw):
    parts = draw(st.lists(concrete_partitions(max_size=5), min_size=1, max_size=2))
    pe = draw(st.sampled_from([None, LePE(), RelPosBias(size=9), (LePE(), RelPosBias(size=9))]))
    heads = Split(*parts) if len(parts) > 1 else None
    spec = Attention(partition=None if heads else parts[0], heads=heads, pe=pe)
    return randomize_(
        spec.build(8 * len(parts), 2 * len(parts)).double(), seed=draw(st.integers(0, 9))
    )


@settings(max_examples=15)
@given(layer=layers(), H=st.integers(1, 9), W=st.integers(1, 9), dtype=st.sampled_from(LOW))
def test_low_precision_is_finite_and_close_to_float64(layer, H, W, dtype):
    x64 = torch.randn(2, H, W, layer.dim, dtype=torch.float64)
    y64 = layer(x64)
    low = layer.to(dtype)
    x = x64.to(dtype).requires_grad_(True)
    y = low(x)
    assert y.dtype == dtype and y.isfinite().all()
    (gx,) = torch.autograd.grad(y.float().square().sum(), x)
    assert gx.isfinite().all()
    torch.testing.assert_close(y.double(), y64, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", LOW)
def test_fully_masked_rows_are_finite_in_the_window_kernel(dtype):
    """Padded queries of a padded window have no allowed key at all: finite, never NaN."""
    layout = rect_layout(Window(3, shift=1), 4, 4, pad="mask")  # padded to 6x6
    allowed = window_mask(layout)
    empty = ~allowed.any(-1)
    assert empty.any()  # the case under test exists
    nW, T = layout.num_windows, layout.tokens
    q, k, v = (torch.randn(1, nW, 2, T, 4, dtype=dtype, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, T, T, dtype=dtype)
    o = window_kernel(q, k, v, bias, layout, 0.5)
    assert o.isfinite().all()
    grads = torch.autograd.grad(o.float().sum(), (q, k, v))
    assert all(g.isfinite().all() for g in grads)
    assert mask_value(dtype) > torch.finfo(dtype).min  # finite, with room for an added bias


@pytest.mark.parametrize("dtype", LOW)
def test_fully_masked_rows_are_zero_in_the_dense_backend(dtype):
    q, k, v = (torch.randn(1, 1, 3, 2, dtype=dtype, requires_grad=True) for _ in range(3))
    allowed = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)
    o = dense_attention(q, k, v, allowed, 1.0)
    assert o.isfinite().all() and (o[0, 0, 1] == 0).all()
    grads = torch.autograd.grad(o.float().sum(), (q, k, v))
    assert all(g.isfinite().all() for g in grads)
