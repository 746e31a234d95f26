"""SwinV2: Cosine scores, the continuous position bias and q/v-only qkv bias.

Equal to timm 1.0's ``SwinTransformerV2Block`` attention path (weights copied in) and, for any
partition and head split, to a dense reference built from token coordinates.
"""

import math
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    AttnblocksError,
    ContinuousPosBias,
    Cosine,
    RelPosBias,
    Split,
    Stripe,
    Window,
    zoo,
)
from attnblocks.convert import load_swinv2, load_timm_swinv2
from attnblocks.encoders import log_relative_coords
from attnblocks.projection import QVBiasLinear, qkv_projection
from helpers import randomize_
from references.dense_scores import dense_forward
from strategies import concrete_partitions

timm_v2 = pytest.importorskip("timm.models.swin_transformer_v2")


def _randomize_v2_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights, with the log scales around SwinV2's init (so that scales vary ~2x)."""
    randomize_(module, seed=seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("logit_scale"):
                p.add_(math.log(10))
    return module


@given(
    H=st.integers(1, 14),
    W=st.integers(1, 14),
    M=st.integers(1, 8),
    shift=st.integers(0, 7),
    heads=st.integers(1, 3),
    d=st.integers(1, 4),
    B=st.integers(1, 2),
    pretrained=st.sampled_from([0, 0, 4, 8]),
)
def test_equals_timm_block_attention(H, W, M, shift, heads, d, B, pretrained):
    """timm pads to a multiple of the window and masks shift regions with -100."""
    shift = shift % M
    C = heads * d
    block = timm_v2.SwinTransformerV2Block(
        C,
        input_resolution=(H, W),
        num_heads=heads,
        window_size=M,
        shift_size=shift,
        pretrained_window_size=pretrained,
    ).double()
    _randomize_v2_(block, seed=H * 100 + W)
    spec = zoo.swinv2(M, shift, pretrained_window=pretrained or None, clamp="timm", pad="timm")
    layer = spec.build(C, heads).double()
    load_timm_swinv2(layer, block)
    x = torch.randn(B, H, W, C, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), block._attn(x), atol=1e-10, rtol=1e-9)


def test_equals_timm_window_attention_at_init():
    """Default init on both sides (logit scale log 10, zero q/v bias), one window."""
    attn = timm_v2.WindowAttention(16, window_size=(4, 4), num_heads=2).double()
    layer = zoo.swinv2(4).build(16, 2).double()
    load_timm_swinv2(layer, attn)
    x = torch.randn(3, 4, 4, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = attn(x.view(3, 16, 16)).view(3, 4, 4, 16)
        torch.testing.assert_close(layer(x), ref, atol=1e-10, rtol=1e-9)


@given(
    part=concrete_partitions(max_size=6),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    heads=st.integers(1, 3),
    d=st.integers(1, 3),
    pretrained=st.sampled_from([None, 3, (2, 5)]),
)
def test_cosine_cpb_any_partition_equals_dense(part, H, W, heads, d, pretrained):
    spec = Attention(
        partition=part, score=Cosine(), pe=ContinuousPosBias(pretrained, hidden=8), qkv_bias="qv"
    )
    layer = _randomize_v2_(spec.build(heads * d, heads).double(), seed=H + 10 * W)
    x = torch.randn(2, H, W, heads * d, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_forward(layer, x), atol=1e-10, rtol=1e-9)


@given(H=st.integers(1, 8), W=st.integers(1, 8), width=st.integers(1, 4))
def test_cosine_with_split_hybrid_and_rel_pos_bias(H, W, width):
    """A composition no paper has: Cosine scores over CSWin's stripes plus a window group."""
    spec = Attention(
        heads=Split(Stripe(width, axis="v"), Window(3, shift=1), Stripe(width, axis="h")),
        score=Cosine(),
        pe=(ContinuousPosBias(hidden=4), RelPosBias(size=8)),
    )
    layer = _randomize_v2_(spec.build(12, 6).double(), seed=H * W)
    x = torch.randn(1, H, W, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense_forward(layer, x), atol=1e-10, rtol=1e-9)


def test_log_coords_formula():
    """Spot values of the authors' mapping: offset 1 in a 2-window is 8 -> log2(9)/3."""
    c = log_relative_coords((2, 3), (2, 3)).view(3, 5, 2)
    assert c[1, 2].tolist() == [0.0, 0.0]
    assert c[2, 2, 0].item() == pytest.approx(math.log2(9) / 3)
    assert c[0, 2, 0].item() == pytest.approx(-math.log2(9) / 3)
    assert c[1, 4, 1].item() == pytest.approx(math.log2(9) / 3)  # dw = 2 over (3 - 1)
    one = log_relative_coords((1, 1), (1, 1))  # a 1-token window: no 0 / 0
    assert one.tolist() == [[0.0, 0.0]]


def test_scale_is_clamped_at_max():
    layer = Attention(partition=Window(2), score=Cosine(max_scale=5.0)).build(4, 1).double()
    q = torch.randn(3, 1, 4, dtype=torch.float64)
    with torch.no_grad():
        layer.score.logit_scale.fill_(10.0)
        qs, ks = layer.score.prepare_qk(q, q)
    torch.testing.assert_close(qs.norm(dim=-1), torch.full((3, 1), 5.0, dtype=torch.float64))
    torch.testing.assert_close(ks.norm(dim=-1), torch.ones(3, 1, dtype=torch.float64))


def test_gradcheck_cosine_cpb_qv_bias():
    spec = Attention(
        partition=Window(2, shift=1), score=Cosine(), pe=ContinuousPosBias(hidden=3), qkv_bias="qv"
    )
    layer = _randomize_v2_(spec.build(4, 2).double(), seed=1)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    params = dict(layer.named_parameters())
    assert set(params) >= {"qkv.q_bias", "qkv.v_bias", "score.logit_scale", "pe.0.cpb_mlp.0.weight"}

    def f(logit_scale, w1, w2, q_bias):
        state = {
            "score.logit_scale": logit_scale,
            "pe.0.cpb_mlp.0.weight": w1,
            "pe.0.cpb_mlp.2.weight": w2,
            "qkv.q_bias": q_bias,
        }
        return torch.func.functional_call(layer, state, (x.detach(),))

    names = ("score.logit_scale", "pe.0.cpb_mlp.0.weight", "pe.0.cpb_mlp.2.weight", "qkv.q_bias")
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs)


def test_load_swinv2_ignores_derived_buffers_and_checks_keys():
    attn = timm_v2.WindowAttention(8, window_size=(3, 3), num_heads=2).double()
    _randomize_v2_(attn, seed=3)
    state = dict(attn.state_dict())
    state["relative_coords_table"] = attn.relative_coords_table  # as the authors' checkpoints
    state["relative_position_index"] = attn.relative_position_index
    layer = load_swinv2(zoo.swinv2(3).build(8, 2).double(), state)
    torch.testing.assert_close(layer.score.logit_scale, attn.logit_scale)
    del state["v_bias"]
    with pytest.raises(AttnblocksError, match=r"missing keys \['qkv.v_bias'\]"):
        load_swinv2(zoo.swinv2(3).build(8, 2).double(), state)
    with pytest.raises(AttnblocksError, match="no Cosine\\(\\) score"):
        spec = Attention(partition=Window(3), pe=ContinuousPosBias(), qkv_bias="qv")
        load_swinv2(spec.build(8, 2), state)
    with pytest.raises(AttnblocksError, match="no ContinuousPosBias encoder"):
        load_swinv2(zoo.swin(3).build(8, 2), state)


def test_specs_repr_eval_pickle():
    specs = [
        Cosine(),
        Cosine(init=5, max_scale=50),
        ContinuousPosBias(),
        ContinuousPosBias(pretrained=(8, 12), hidden=256),
        zoo.swinv2(8, 4, pretrained_window=12),
        Attention(partition=Stripe(2), heads=Split(2), score=Cosine(), qkv_bias="qv"),
    ]
    for s in specs:
        assert eval(repr(s)) == s
        assert pickle.loads(pickle.dumps(s)) == s
        assert hash(s) == hash(eval(repr(s)))
    assert ContinuousPosBias(pretrained=8) == ContinuousPosBias(pretrained=(8, 8))
    assert repr(Cosine(init=5)) == "Cosine(init=5.0)"


def test_qv_bias_projection():
    proj = qkv_projection(6, "qv", dtype=torch.float64)
    assert isinstance(proj, QVBiasLinear)
    assert sorted(n for n, _ in proj.named_parameters()) == ["q_bias", "v_bias", "weight"]
    with torch.no_grad():
        proj.q_bias.fill_(1.0)
        proj.v_bias.fill_(2.0)
    y = proj(torch.zeros(1, 6, dtype=torch.float64))
    assert y[0].tolist() == [1.0] * 6 + [0.0] * 6 + [2.0] * 6
    assert isinstance(qkv_projection(6, False), torch.nn.Linear)


def test_errors():
    with pytest.raises(AttnblocksError, match=r"Cosine: init must be > 0, got init=0"):
        Cosine(init=0)
    with pytest.raises(TypeError, match="Cosine: max_scale must be a number, got '100'"):
        Cosine(max_scale="100")
    with pytest.raises(AttnblocksError, match="ContinuousPosBias: hidden must be >= 1, got 0"):
        ContinuousPosBias(hidden=0)
    with pytest.raises(AttnblocksError, match=r"pretrained=\(8, 8, 8\) has 3 axes, but ndim=2"):
        ContinuousPosBias(pretrained=(8, 8, 8))
    with pytest.raises(AttnblocksError, match=r"qkv_bias must be one of .* got 'kv'"):
        Attention(qkv_bias="kv")
    with pytest.raises(AttnblocksError, match=r"qkv_bias must be one of .* got 'qvk'"):
        qkv_projection(4, "qvk")
    with pytest.raises(TypeError, match="score must be a Score such as Cosine\\(\\), got 'cosine'"):
        Attention(score="cosine")
    with pytest.raises(
        AttnblocksError, match=r"Cosine\(\) sets its own logit scale; drop scale=0.5"
    ):
        Attention(score=Cosine(), scale=0.5)
