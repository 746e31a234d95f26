"""Backbones: parameter and MAC counts, feature maps at any size, training, the spec table."""

import itertools
import math

import pytest
import torch

import attnblocks
import attnblocks.models as M
from attnblocks import zoo
from attnblocks.models import (
    Alternate,
    BackboneSpec,
    ConvMerge,
    ConvStem,
    DropPath,
    PatchMerging,
    Stage,
    create,
    list_models,
    model_spec,
    summary,
)
from attnblocks.models.block import attention_for

# The authors' models, counted with FlopCounterMode (reference facts).
PUBLISHED = {"swin_tiny": (28_288_354, 4.49e9), "cswin_tiny": (22_320_552, 4.32e9)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_exact_and_macs_within_2_percent(name):
    params, macs = PUBLISHED[name]
    s = summary(create(name, device="meta"), 224)
    assert s.params == params
    assert abs(s.macs - macs) / macs < 0.02


@pytest.mark.parametrize(
    ("name", "timm_name"),
    [
        ("swin_small", "swin_small_patch4_window7_224"),
        ("swin_base", "swin_base_patch4_window7_224"),
    ],
)
def test_swin_rows_have_timms_parameter_count(name, timm_name):
    timm = pytest.importorskip("timm")
    theirs = timm.create_model(timm_name, pretrained=False, device="meta")
    ours = create(name, device="meta")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize(("name", "published"), [("cswin_small", 35e6), ("cswin_base", 78e6)])
def test_cswin_rows_near_published_rounded_counts(name, published):
    """The README's 35M / 78M are rounded (CSWin-T's 23M is 22.32M), so: within 2%."""
    n = sum(p.numel() for p in create(name, device="meta").parameters())
    assert abs(n - published) / published < 0.02


@pytest.fixture(scope="module", params=["swin_tiny", "cswin_tiny"])
def model(request):
    torch.manual_seed(0)
    return create(request.param, num_classes=7, drop_path_rate=0.1)


# 34x46 px: stage maps 8x11, 4x6, 2x3, 1x2 (odd, non-square, smaller than the windows, 1xW)
SIZE = (34, 46)


def _expected_sizes(spec: BackboneSpec, H: int, W: int) -> list[tuple[int, int]]:
    st = spec.stem
    size = [(n + 2 * st.padding - st.kernel) // st.stride + 1 for n in (H, W)]
    out = []
    for i in range(len(spec.stages)):
        if i:
            size = [math.ceil(n / 2) for n in size]
        out.append(tuple(size))
    return out


def test_backpropagates_at_non_square_size(model):
    model.train()
    x = torch.randn(1, 3, *SIZE, requires_grad=True)
    model(x).square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert x.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_four_stage_maps_at_non_square_size(model):
    feats = model.spec.build(features_only=True, device="meta")
    feats = feats.to_empty(device="cpu")
    result = feats.load_state_dict(model.state_dict(), strict=False)
    assert result.missing_keys == []
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        maps = feats.eval()(x)
        stages = model.eval().forward_stages(x)
    sizes = _expected_sizes(model.spec, *SIZE)
    assert sizes == [(8, 11), (4, 6), (2, 3), (1, 2)]
    assert [tuple(m.shape) for m in maps] == [
        (1, info["num_chs"], *hw) for info, hw in zip(feats.feature_info, sizes)
    ]
    for m, s in zip(maps, stages):
        torch.testing.assert_close(m, s.permute(0, 3, 1, 2), atol=0, rtol=0)
    assert not hasattr(feats, "head")


def test_drop_path_schedule_is_linear(model):
    blocks = [b for s in model.stages for b in s.blocks]
    rates = [b.drop_path1.p for b in blocks]
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.1)
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert steps == pytest.approx([0.1 / (len(blocks) - 1)] * len(steps))


def test_swin_blocks_alternate_shift_and_cswin_last_stage_is_global():
    swin = model_spec("swin_tiny", window=7)
    attn = swin.stages[0].attn
    assert [attention_for(attn, i).partition.shift for i in range(4)] == [(0, 0), (3, 3)] * 2
    cs = model_spec("cswin_tiny")
    assert cs.stages[-1].attn == zoo.cswin(7, last=True)
    assert [s.attn.partition.width for s in cs.stages[:3]] == [1, 2, 7]


def test_drop_path_drops_whole_samples():
    dp = DropPath(0.5).train()
    out = dp(torch.ones(2000, 3))
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert (out[:, 0] == out[:, 1]).all()
    assert 0.4 < (out[:, 0] == 0).float().mean() < 0.6
    assert torch.equal(dp.eval()(torch.ones(4, 3)), torch.ones(4, 3))


@pytest.mark.parametrize("name", list_models())
def test_spec_repr_round_trips(name):
    spec = model_spec(name)
    ns = {**vars(attnblocks), **vars(M)}
    assert eval(repr(spec), ns) == spec


def test_registry_lists_swin_and_cswin():
    assert list_models() == [
        "cswin_base",
        "cswin_small",
        "cswin_tiny",
        "dilateformer_tiny",
        "dinat_tiny",
        "nat_tiny",
        "pvtv2_b0",
        "pvtv2_b1",
        "pvtv2_b2",
        "pvtv2_b3",
        "pvtv2_b4",
        "pvtv2_b5",
        "shunted_base",
        "shunted_small",
        "shunted_tiny",
        "swin_base",
        "swin_small",
        "swin_tiny",
        "swinv2_tiny",
        "video_swin_t",
    ]


def test_num_classes_defaults_to_the_pretrained_cfg():
    """As ``timm.create_model``: without ``num_classes`` the head has the ``pretrained_cfg``'s
    classes (ImageNet 1000, Kinetics-400 for Video Swin), an overlay's included."""
    assert create("swin_tiny", device="meta").head.out_features == 1000
    assert create("video_swin_t", device="meta").head.out_features == 400
    model = create("cswin_tiny", pretrained_cfg_overlay={"num_classes": 10}, device="meta")
    assert model.head.out_features == 10
    assert create("video_swin_t", num_classes=0, device="meta").num_classes == 0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"Unknown model 'nope'; registered models: cswin_base"):
        create("nope")
    with pytest.raises(TypeError, match=r"swin_tiny: .*unexpected keyword argument 'windw'"):
        create("swin_tiny", windw=7)
    with pytest.raises(ValueError, match="Stage: dim=96 is not divisible by heads=5"):
        Stage(96, 2, 5, zoo.swin(7))
    with pytest.raises(ValueError, match="stages must be a non-empty sequence of Stage rows"):
        BackboneSpec((), stem=ConvStem(4, 4), downsample=PatchMerging())
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 1.0"):
        create("swin_tiny", drop_path_rate=1.0, device="meta")
    with pytest.raises(ValueError, match="num_classes must be >= 0, got -1"):
        create("swin_tiny", num_classes=-1, device="meta")
    with pytest.raises(ValueError, match="Alternate: give at least one Attention spec"):
        Alternate()
    with pytest.raises(TypeError, match="Alternate: expected Attention specs, got 'x'"):
        Alternate("x")
    with pytest.raises(TypeError, match="gave None for block 2"):
        attention_for(lambda i: None, 2)
    with pytest.raises(ValueError, match="summary: Identity has no parameters"):
        summary(torch.nn.Identity())


def test_input_errors_name_the_shapes():
    spec = BackboneSpec(
        (Stage(8, 1, 2, zoo.cswin(1)), Stage(16, 1, 2, zoo.cswin(7, last=True))),
        stem=ConvStem(7, 4, padding=2),
        downsample=ConvMerge(),
    )
    model = spec.build(num_classes=3)
    with pytest.raises(
        ValueError, match=r"expects images as \(B, 3, H, W\), got .*\(1, 4, 32, 32\)"
    ):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"image of 2x9 pixels is smaller than the 7x7 patch"):
        model(torch.randn(1, 3, 2, 9))
    assert model(torch.randn(2, 3, 4, 9)).shape == (2, 3)  # 1x2 map, then 1x1
