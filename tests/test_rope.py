"""2D axial RoPE: equal to timm's ``RotaryEmbeddingCat`` + ``apply_rot_embed_cat`` (EVA-02's
rotary), relative by construction, and correct under any partition."""

import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, AttnblocksError, AxialRoPE, Cosine, Split, Stripe, Window
from attnblocks.encoders import AxialRoPEModule
from helpers import randomize_
from references.dense_scores import dense_forward
from strategies import concrete_partitions

sincos = pytest.importorskip("timm.layers.pos_embed_sincos")


@given(
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    d=st.sampled_from([4, 8, 12, 16, 32]),
    heads=st.integers(1, 3),
    temperature=st.sampled_from([10000.0, 100.0, 3.5]),
    ref=st.one_of(st.none(), st.tuples(st.integers(1, 16), st.integers(1, 16))),
)
def test_rotate_equals_timm_rotary_cat(H, W, d, heads, temperature, ref):
    """EVA-02's setting: ``in_pixels=False`` bands, 'ij' grid, interleaved pairs."""
    rope = sincos.RotaryEmbeddingCat(
        d,
        temperature=temperature,
        in_pixels=False,
        ref_feat_shape=None if ref is None else list(ref),
        dtype=torch.float64,
    )
    emb = rope.get_embed([H, W], dtype=torch.float64)  # (H*W, 2d)
    module = AxialRoPE(temperature, ref).build((), heads * d, heads)
    q = torch.randn(2, H, W, heads, d, dtype=torch.float64)
    k = torch.randn_like(q)
    qr, kr = module.rotate(q, k)

    def timm_rot(t):  # timm rotates (B, heads, N, d)
        t = t.permute(0, 3, 1, 2, 4).reshape(2, heads, H * W, d)
        return sincos.apply_rot_embed_cat(t, emb).view(2, heads, H, W, d).permute(0, 2, 3, 1, 4)

    torch.testing.assert_close(qr, timm_rot(q), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(kr, timm_rot(k), atol=1e-12, rtol=1e-12)


@given(
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    dy=st.integers(-8, 8),
    dx=st.integers(-8, 8),
    d=st.sampled_from([4, 8]),
)
def test_logits_depend_on_offsets_only(H, W, dy, dx, d):
    """The same q and k vectors at every position: q_i . k_j is a function of pos_i - pos_j."""
    module = AxialRoPE().build((), d, 1)
    q = torch.randn(d, dtype=torch.float64).expand(1, H, W, 1, d)
    k = torch.randn(d, dtype=torch.float64).expand(1, H, W, 1, d)
    qr, kr = (t[0, :, :, 0] for t in module.rotate(q, k))
    pairs = [(y, x) for y in range(H) for x in range(W) if 0 <= y - dy < H and 0 <= x - dx < W]
    logits = torch.stack([qr[y, x] @ kr[y - dy, x - dx] for y, x in pairs] or [torch.zeros(())])
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(qr.norm(dim=-1), q[0, :, :, 0].norm(dim=-1))  # a rotation


@given(
    part=concrete_partitions(max_size=6),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    heads=st.integers(1, 2),
    d=st.sampled_from([4, 8]),
    cosine=st.booleans(),
    ref=st.sampled_from([None, 7]),
)
def test_rope_any_partition_equals_dense(part, H, W, heads, d, cosine, ref):
    """Rotation by the absolute position, before rolling, padding and windowing."""
    spec = Attention(partition=part, pe=AxialRoPE(ref=ref), score=Cosine() if cosine else None)
    layer = randomize_(spec.build(d * heads, heads).double(), seed=H * 10 + W)
    x = torch.randn(2, H, W, d * heads, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_forward(layer, x), atol=1e-10, rtol=1e-9)


@given(H=st.integers(1, 8), W=st.integers(1, 8))
def test_rope_under_split_hybrid(H, W):
    spec = Attention(heads=Split(Stripe(2), Window(3, shift=1), Stripe(2)), pe=AxialRoPE())
    layer = randomize_(spec.build(24, 3).double())
    x = torch.randn(1, H, W, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_forward(layer, x), atol=1e-10, rtol=1e-9)


def test_gradcheck_rotate():
    module = AxialRoPEModule(AxialRoPE(temperature=7.0, ref=(3, 5)), head_dim=4)
    q = torch.randn(1, 2, 3, 1, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 3, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module.rotate, (q, k))


def test_gradcheck_layer_with_rope():
    layer = randomize_(Attention(partition=Window(2), pe=AxialRoPE()).build(4, 1).double())
    x = torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_no_parameters_and_state_dict_is_size_free():
    layer = Attention(partition=Window(4), pe=AxialRoPE()).build(16, 2)
    assert not any(k.startswith("pe.") for k in layer.state_dict())
    for H, W in ((4, 4), (7, 13)):
        assert layer(torch.randn(1, H, W, 16)).shape == (1, H, W, 16)


def test_specs_repr_eval_pickle():
    for s in (AxialRoPE(), AxialRoPE(100.0, ref=(14, 16)), AxialRoPE(ref=16)):
        assert eval(repr(s)) == s
        assert pickle.loads(pickle.dumps(s)) == s
    assert AxialRoPE(ref=16) == AxialRoPE(ref=(16, 16))
    assert repr(AxialRoPE(temperature=100)) == "AxialRoPE(temperature=100.0)"


def test_errors():
    with pytest.raises(AttnblocksError, match=r"head dim must be even .*, got head_dim=5"):
        Attention(pe=AxialRoPE()).build(10, 2)
    layer = Attention(pe=AxialRoPE()).build(12, 2)  # head dim 6: three axes, not two
    with pytest.raises(AttnblocksError, match="2-D map the head dim must be a multiple of 4, got"):
        layer(torch.randn(1, 3, 4, 12))
    assert layer(torch.randn(1, 2, 3, 4, 12)).shape == (1, 2, 3, 4, 12)
    with pytest.raises(AttnblocksError, match="AxialRoPE: temperature must be > 1, got"):
        AxialRoPE(temperature=1.0)
    with pytest.raises(TypeError, match="AxialRoPE: temperature must be a number, got '1e4'"):
        AxialRoPE(temperature="1e4")
    with pytest.raises(AttnblocksError, match="AxialRoPE: ref must be >= 1, got 0"):
        AxialRoPE(ref=0)
