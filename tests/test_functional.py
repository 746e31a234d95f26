"""attnblocks.functional.attention: the attention core on q/k/v tensors.

It must equal (a) the dense oracle (dense_mask + plain masked softmax) for every partition,
gradients included, and (b) the layer's attention core: ``layer(x) ==
layer.proj(attention(q, k, v, ...))`` for the layer's own projections of ``x``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    AxialRoPE,
    Dilated,
    Downsample,
    Global,
    Grid,
    LePE,
    Neighborhood,
    RelPosBias,
    Split,
    Stripe,
    Window,
    dense_mask,
    functional,
    zoo,
)
from attnblocks.functional import attention
from helpers import randomize_
from strategies import maps_and_partitions

f64 = {"atol": 1e-10, "rtol": 1e-9}


def fits(part, H: int, W: int) -> bool:
    """Whether a shifted neighbourhood fits an ``H x W`` map (other partitions always do)."""
    if not isinstance(part, Dilated) or part.border != "shift":
        return True
    (kh, kw), (ry, rx) = part.kernel_size, part.dilation_size
    return kh * ry <= H and kw * rx <= W


def oracle(q, k, v, parts, scale):
    """Dense masked softmax per head group from the oracle masks, ``(B, H, W, h, D)``."""
    H, W, h = q.shape[1:4]
    n = len(parts)
    outs = []
    for i, part in enumerate(parts):
        allowed = dense_mask(part, H, W)
        sl = slice(i * h // n, (i + 1) * h // n)
        qg, kg, vg = (rearrange(t[:, :, :, sl], "b y x h d -> b h (y x) d") for t in (q, k, v))
        logits = (qg @ kg.transpose(-1, -2)) * scale
        w = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        outs.append(rearrange(w @ vg, "b h (y x) d -> b y x h d", y=H))
    return torch.cat(outs, dim=3)


def _qkv(B, H, W, h, D, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, H, W, h, D, generator=gen, dtype=torch.float64).requires_grad_(grad)
        for _ in range(3)
    ]


def _grads(out, inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g)


@given(case=maps_and_partitions(), h=st.integers(1, 3), D=st.integers(1, 4), B=st.integers(0, 2))
def test_equals_dense_oracle_with_gradients(case, h, D, B):
    H, W, part = case
    q, k, v = _qkv(B, H, W, h, D, grad=True)
    scale = 0.7
    out = attention(q, k, v, part, scale=scale)
    ref = oracle(q, k, v, [part], scale)
    torch.testing.assert_close(out, ref, **f64)
    if B:
        for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
            torch.testing.assert_close(a, b, **f64)


@given(a=maps_and_partitions(), b=maps_and_partitions(), hg=st.integers(1, 2))
def test_split_of_partitions_equals_oracle_per_group(a, b, hg):
    H, W = min(a[0], b[0]), min(a[1], b[1])
    parts = [a[2] if fits(a[2], H, W) else Global(), b[2] if fits(b[2], H, W) else Global()]
    q, k, v = _qkv(2, H, W, 2 * hg, 3, grad=True)
    out = attention(q, k, v, Split(*parts))
    ref = oracle(q, k, v, parts, 3**-0.5)
    torch.testing.assert_close(out, ref, **f64)
    for x, y in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        torch.testing.assert_close(x, y, **f64)


def test_generic_partition_with_heads():
    q, k, v = _qkv(1, 6, 8, 4, 2)
    out = attention(q, k, v, Stripe(2), heads=Split(2))
    ref = oracle(q, k, v, [Stripe(2, axis="v"), Stripe(2, axis="h")], 2**-0.5)
    torch.testing.assert_close(out, ref, **f64)
    out = attention(q, k, v, Dilated(3, dilation=(1, 2), border="mask"), heads=Split(2))
    parts = [Dilated(3, border="mask"), Dilated(3, dilation=2, border="mask")]
    torch.testing.assert_close(out, oracle(q, k, v, parts, 2**-0.5), **f64)


@pytest.mark.parametrize("backend", ["eager", "dense", "flex"])
@pytest.mark.parametrize(
    "part",
    [Window(3, shift=1), Stripe(2, axis="v"), Grid(2), Global(), Neighborhood(3, dilation=2)],
)
def test_backends_agree(part, backend):
    q, k, v = _qkv(2, 7, 6, 2, 4)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex without compile: unfused on CPU
        out = attention(q, k, v, part, backend=backend)
    torch.testing.assert_close(out, oracle(q, k, v, [part], 0.5), **f64)


# ---------------------------------------------------------------------------------------------
# the layer's attention core: layer(x) == proj(attention(qkv(x)))
# ---------------------------------------------------------------------------------------------


def _layer_core(layer, x, **kw):
    B, H, W, C = x.shape
    h, D = layer.num_heads, layer.head_dim
    q, k, v = layer.qkv(x).view(B, H, W, 3, h, D).unbind(3)
    pad = layer.spec.pad
    out = attention(
        q, k, v, layer.spec.partition, heads=layer.spec.heads, scale=layer.scale, pe=layer.pe,
        pad=pad, **kw,
    )  # fmt: skip
    return layer.proj(out.reshape(B, H, W, C))


LAYERS = {
    "swin_rpb": zoo.swin(3, shift=1),
    "cswin_lepe": zoo.cswin(2),
    "maxvit_grid": zoo.maxvit_grid(2),
    "nat_rpb": zoo.nat(3),
    "dinat_rpb": zoo.dinat(3, 2),
    "dilateformer": zoo.dilateformer(3, (1, 2)),
    "hybrid": Attention(
        heads=Split(Window(3, shift=1), Stripe(2, axis="h")), pe=(LePE(), RelPosBias(size=10))
    ),
    "nat_window_hybrid": Attention(
        heads=Split(Window(3, shift=1), Neighborhood(3)), pe=RelPosBias(size=3)
    ),
    "rope": Attention(partition=Window(3), pe=AxialRoPE()),
    "zeros_pad": Attention(partition=Window(4), pad="zeros"),
    "timm_pad_nobias": Attention(partition=Window(4, shift=2), pad="timm", qkv_bias=False),
}


@pytest.mark.parametrize("name", list(LAYERS))
@settings(max_examples=5)
@given(H=st.integers(6, 9), W=st.integers(6, 10), B=st.integers(1, 2))
def test_equals_layer_core(name, H, W, B):
    spec = LAYERS[name]
    dim = 16 if name == "rope" else 8  # rotary: head dim a multiple of 4
    layer = randomize_(spec.build(dim, 4).double(), seed=2)
    x = torch.randn(B, H, W, dim, dtype=torch.float64, requires_grad=True)
    ref = layer(x)
    out = _layer_core(layer, x)
    torch.testing.assert_close(out, ref, **f64)
    params = [p for p in layer.parameters() if p.requires_grad]
    for a, b in zip(_grads(out, [x, *params]), _grads(ref, [x, *params])):
        torch.testing.assert_close(a, b, **f64)


@pytest.mark.parametrize("spec", [zoo.pvtv2(2), zoo.shunted(4), zoo.pvtv2(1)])
def test_reduced_keys_equal_layer_core(spec):
    """Downsample groups: k, v from the runner's own reduced map, one tensor per group."""
    layer = randomize_(spec.build(8, 2).double(), seed=3)
    x = torch.randn(2, 9, 10, 8, dtype=torch.float64)
    B, H, W, C = x.shape
    q = layer.q(x).view(B, H, W, 2, 4)
    ks, vs = [], []
    for r in layer.runners:
        red = r.reduce(x)
        k, v = r.kv(red).split(r.group.dim, dim=-1)
        shape = (*red.shape[:3], r.group.num_heads, 4)
        ks.append(k.reshape(shape))
        vs.append(v.reshape(shape))
    if spec.pe is not None:  # Shunted's LocalConv acts on V's map: not an attention on q/k/v
        with pytest.raises(AttnblocksError, match="per-window biases or values"):
            attention(q, ks, vs, spec.partition, heads=spec.heads, pe=layer.pe)
        return
    out = attention(q, ks, vs, spec.partition, heads=spec.heads, scale=layer.scale)
    torch.testing.assert_close(layer.proj(out.reshape(B, H, W, C)), layer(x), **f64)


def test_cross_attention_other_map_sizes():
    q = _qkv(2, 5, 7, 2, 3)[0]
    k, v = _qkv(2, 3, 4, 2, 3, seed=4)[:2]
    for backend in ("eager", "dense"):
        out = attention(q, k, v, Global(), backend=backend)
        qt, kt, vt = (rearrange(t, "b y x h d -> b h (y x) d") for t in (q, k, v))
        ref = ((qt @ kt.transpose(-1, -2)) * 3**-0.5).softmax(-1) @ vt
        torch.testing.assert_close(out, rearrange(ref, "b h (y x) d -> b y x h d", y=5), **f64)
    kr, vr = k[:, :2, :3], v[:, :2, :3]  # a 5x7 map reduced by 2 is 2x3
    torch.testing.assert_close(
        attention(q, kr, vr, Downsample(2)), attention(q, kr, vr, Global()), **f64
    )


def test_cross_attention_same_size_windows():
    q = _qkv(1, 6, 6, 2, 3)[0]
    k, v = _qkv(1, 6, 6, 2, 3, seed=5)[:2]
    part = Window(3, shift=1)
    torch.testing.assert_close(attention(q, k, v, part), oracle(q, k, v, [part], 3**-0.5), **f64)


def test_compiles_fullgraph():
    torch._dynamo.reset()
    functional._RUNNERS.clear()
    q, k, v = _qkv(1, 6, 10, 2, 4, grad=True)
    part = Split(Window(3, shift=1), Neighborhood((3, 5), dilation=((1, 2),)))
    fn = torch.compile(attention, fullgraph=True, backend="eager")  # runners made in the trace
    out = fn(q, k, v, part)
    ref = attention(q, k, v, part)
    torch.testing.assert_close(out, ref, **f64)
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        torch.testing.assert_close(a, b, **f64)


def test_dropout_in_training_changes_output_and_zero_is_exact():
    q, k, v = _qkv(1, 4, 4, 1, 4)
    torch.manual_seed(0)
    a = attention(q, k, v, Window(2), dropout_p=0.5)
    b = attention(q, k, v, Window(2))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, oracle(q, k, v, [Window(2)], 0.5), **f64)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda q: attention(q[0, 0], q, q, Window(2)), r"q must be \(B, \*map, heads, D\)"),
        (lambda q: attention(q[0], q, q, Window(2)), r"k must be \(B, \*map, heads, D\) with 1"),
        (
            lambda q: attention(q, q[:, :2], q[:, :2], Window(2)),
            r"k and v must be on the query's 4x4 map",
        ),
        (
            lambda q: attention(q, q, q, Downsample(2)),
            r"on a 4x4 map its keys are 2x2, got k.shape=\(1, 4, 4, 2, 3\)",
        ),
        (lambda q: attention(q, q, q, Stripe(2)), r"no head split: add heads=Split\(2\)"),
        (lambda q: attention(q, q, q, Window(2), backend="fast"), r"backend must be one of"),
        (lambda q: attention(q, q, q, Window(2), heads=Split(3)), r"not divisible by 3"),
        (lambda q: attention(q, q, q, Split(2)), r"gives no partitions"),
        (lambda q: attention(q, [q], [q], Split(Window(2), Global())), r"sequence of 1 tensors"),
        (lambda q: attention(q, q, q[..., :2], Window(2)), r"needs k and v of shape"),
    ],
)
def test_errors(call, match):
    q = torch.randn(1, 4, 4, 2, 3)
    with pytest.raises(AttnblocksError, match=match):
        call(q)


def test_pe_must_be_modules():
    q = torch.randn(1, 4, 4, 2, 3)
    with pytest.raises(TypeError, match="built encoder modules"):
        attention(q, q, q, Window(2), pe=RelPosBias())


def test_unchanged_by_grad_mode():
    q, k, v = _qkv(2, 7, 7, 2, 3)
    part = Neighborhood(3, dilation=2)
    a = attention(q, k, v, part)
    with torch.no_grad():
        b = attention(q, k, v, part)
    with torch.inference_mode():
        c = attention(q, k, v, part)
    torch.testing.assert_close(a, b, **f64)
    torch.testing.assert_close(a, c, **f64)
