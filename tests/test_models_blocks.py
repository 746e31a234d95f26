"""Block variants: PVTv2's depthwise-conv MLP and last-stage block (timm), DilateFormer's CPE."""

import functools

import pytest
import torch
import torch.nn.functional as F

from attnblocks import Attention, Global, zoo
from attnblocks.models import BackboneSpec, ConvMerge, ConvStem, DWConvMlp, PreNorm, Stage
from helpers import randomize_

pvt = pytest.importorskip("timm.models.pvt_v2")

TOL = {"atol": 1e-12, "rtol": 1e-10}


def test_dwconv_mlp_equals_timm():
    theirs = pvt.MlpWithDepthwiseConv(8, 16).double()
    randomize_(theirs)
    ours = DWConvMlp(8, 16).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = theirs(x.reshape(2, 35, 8), [5, 7]).reshape(2, 5, 7, 8)
        torch.testing.assert_close(ours(x), ref, **TOL)


def test_pvtv2_last_stage_block_equals_timm():
    """sr = 1: PVTv2's attention is global with q and kv as one fused projection."""
    norm = functools.partial(torch.nn.LayerNorm, eps=1e-6)
    theirs = pvt.Block(16, 2, mlp_ratio=4, sr_ratio=1, qkv_bias=True, norm_layer=norm).double()
    randomize_(theirs, seed=3)
    block = PreNorm(eps=1e-6, mlp="dwconv").build(16, 2, Attention(partition=Global()))
    block = block.double()
    s = theirs.state_dict()
    s["attn.qkv.weight"] = torch.cat([s.pop("attn.q.weight"), s.pop("attn.kv.weight")])
    s["attn.qkv.bias"] = torch.cat([s.pop("attn.q.bias"), s.pop("attn.kv.bias")])
    block.load_state_dict(s)
    x = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = theirs(x.reshape(2, 15, 16), [3, 5]).reshape(2, 3, 5, 16)
        torch.testing.assert_close(block.eval()(x), ref, **TOL)


def test_cpe_runs_first():
    """``x + DWConv3x3(x)`` (zero-padded, with bias), then the plain block."""
    spec = zoo.cswin(2)
    with_cpe = randomize_(PreNorm(eps=1e-6, cpe=True).build(8, 2, spec).double()).eval()
    plain = PreNorm(eps=1e-6).build(8, 2, spec).double().eval()
    plain.load_state_dict({k: v for k, v in with_cpe.state_dict().items() if "cpe" not in k})
    x = torch.randn(1, 4, 6, 8, dtype=torch.float64)
    w, b = with_cpe.cpe.weight, with_cpe.cpe.bias
    with torch.no_grad():
        xc = x + F.conv2d(x.permute(0, 3, 1, 2), w, b, padding=1, groups=8).permute(0, 2, 3, 1)
        torch.testing.assert_close(with_cpe(x), plain(xc), **TOL)
        assert (with_cpe(x) - plain(x)).abs().max() > 1e-3


def test_block_spec_errors():
    kinds = r"\('plain', 'dwconv', 'dwconv_res'\)"
    with pytest.raises(ValueError, match=rf"PreNorm: mlp must be one of {kinds}"):
        PreNorm(mlp="conv")
    with pytest.raises(ValueError, match="PreNorm: eps must be positive, got 0"):
        PreNorm(eps=0)


def test_pvtv2_model_without_reduction_equals_timm():
    """timm's PVTv2-b0 with every ``sr_ratio = 1`` is a table of existing parts: the
    overlapping stem and ConvMerge, PreNorm(eps=1e-6, mlp="dwconv") blocks with global
    attention, stage norms. (With the spatial-reduction attention it becomes PVTv2 itself.)"""
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("pvt_v2_b0", pretrained=False, sr_ratios=(1, 1, 1, 1)).double()
    randomize_(theirs, std=0.1, seed=5)
    rows = zip((32, 64, 160, 256), (2, 2, 2, 2), (1, 2, 5, 8), (8, 8, 4, 4))
    spec = BackboneSpec(
        tuple(Stage(c, d, h, Attention(partition=Global()), r) for c, d, h, r in rows),
        stem=ConvStem(7, 4, padding=3),
        downsample=ConvMerge(),
        block=PreNorm(eps=1e-6, mlp="dwconv"),
        norm_eps=1e-6,
        stage_norm=True,
    )
    ours = spec.build(dtype=torch.float64)
    state = {}
    for k, v in theirs.state_dict().items():
        k = k.replace("patch_embed.", "stem.").replace("downsample.proj.", "downsample.conv.")
        if k.endswith(("attn.q.weight", "attn.q.bias")):
            kv = theirs.state_dict()[k.replace("attn.q.", "attn.kv.")]
            k, v = k.replace("attn.q.", "attn.qkv."), torch.cat([v, kv])
        if ".attn.kv." not in k:
            state[k] = v
    ours.load_state_dict(state)
    x = torch.randn(1, 3, 60, 92, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), **TOL)
