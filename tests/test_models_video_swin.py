"""Video Swin (``video_swin_t``) against torchvision's ``SwinTransformer3d`` with the weights
copied by :func:`attnblocks.models.load_checkpoint` (torchvision's layout): the Tiny model's
logits in fp32, small drawn configurations in float64 at 1e-10, the stem and the 5-D merge
against torchvision's own modules, the parameter count and the stochastic-depth schedule."""

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks.convert import convert_torchvision_video_swin, detect_layout
from attnblocks.models import (
    PatchMerging,
    VideoStem,
    create,
    load_checkpoint,
    model_spec,
    summary,
)
from attnblocks.models.video_swin import video_swin_spec

video = pytest.importorskip("torchvision.models.video.swin_transformer")
tv_swin = pytest.importorskip("torchvision.models.swin_transformer")

TINY_PARAMS = 28_158_070  # torchvision's Swin3D_T_Weights meta["num_params"]


def _perturb(model: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    """Move every parameter away from its initial value (zero biases, unit norms and tiny
    tables hide mistakes), keeping the activations of a deep model in range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if "relative_position_bias_table" in name:
                p.copy_(noise)
            else:
                p.add_(noise * scale)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    theirs = _perturb(video.swin3d_t(), seed=1, scale=0.02)
    ours = create("video_swin_t", num_classes=400).eval()
    load_checkpoint(ours, theirs)
    return theirs, ours


def test_tiny_parameter_count():
    ours = create("video_swin_t", device="meta")  # 400 classes: its pretrained_cfg, as timm
    assert ours.head.out_features == ours.pretrained_cfg["num_classes"] == 400
    assert sum(p.numel() for p in ours.parameters()) == TINY_PARAMS
    with torch.device("meta"):
        theirs = video.swin3d_t()
    assert sum(p.numel() for p in theirs.parameters()) == TINY_PARAMS
    assert {k: v.shape for k, v in convert_torchvision_video_swin(theirs).items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }


def test_summary_counts_clips_as_torchvision():
    """``summary`` on a clip: torchvision's published ``_ops`` for ``swin3d_t`` (43.882 G,
    which is the count at 16 frames of 224x224), and FlopCounterMode's count of torchvision's
    own model at the pretrained_cfg's 32-frame clip (the default) and a smaller one; on a clip
    the windows do not divide, fewer (torchvision projects its padding tokens out too)."""
    from torch.utils.flop_counter import FlopCounterMode

    ours = create("video_swin_t", device="meta")
    meta = video.Swin3D_T_Weights.KINETICS400_V1.meta
    s = summary(ours, (16, 224, 224))
    assert round(s.macs / 1e9, 3) == meta["_ops"] and s.params == meta["num_params"]
    with torch.device("meta"):
        theirs = video.swin3d_t().eval()
    for size in [None, (8, 112, 112), (5, 56, 72)]:
        got = summary(ours, size)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            theirs(torch.zeros(1, 3, *got.img_size, device="meta"))
        if size == (5, 56, 72):
            assert 0.9 * fc.get_total_flops() // 2 < got.macs < fc.get_total_flops() // 2
        else:
            assert got.macs == fc.get_total_flops() // 2, size
    assert summary(ours).img_size == (32, 224, 224)
    with pytest.raises(
        ValueError, match=r"img_size must be a 3-tuple \(T, H, W\), got img_size=224"
    ):
        summary(ours, 224)


@pytest.mark.parametrize("shape", [(1, 3, 4, 64, 64), (1, 3, 5, 56, 72)])
def test_tiny_logits_equal_torchvision_fp32(tiny_pair, shape):
    """fp32, eval: ``max |ours - theirs| <= 1e-4 * max |theirs|`` (measured: about 1e-6 of
    the logit scale); (1, 3, 5, 56, 72) is divisible by neither the patch nor the window."""
    theirs, ours = tiny_pair
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert got.shape == want.shape == (1, 400)
    scale = want.abs().max().item()
    assert scale > 0.1
    assert (got - want).abs().max().item() <= 1e-4 * scale


def test_tiny_drop_path_schedule_is_torchvisions(tiny_pair):
    theirs, ours = tiny_pair
    want = [b.stochastic_depth.p for stage in theirs.features[::2] for b in stage]
    got = [b.drop_path1.p for stage in ours.stages for b in stage.blocks]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[-1] == pytest.approx(0.1)


def test_layout_is_detected_and_a_wrong_configuration_is_refused(tiny_pair):
    theirs, _ = tiny_pair
    assert detect_layout(theirs.state_dict()) == "video_swin_torchvision"
    small = create("video_swin_t", num_classes=400, window=(4, 7, 7), device="meta")
    with pytest.raises(ValueError, match=r"Video Swin \(torchvision's layout\) checkpoint"):
        load_checkpoint(small, theirs)


@st.composite
def small_configs(draw):
    stages = draw(st.integers(1, 3))
    depths = tuple(draw(st.integers(1, 2)) for _ in range(stages))
    if sum(depths) < 2:  # torchvision divides by (blocks - 1) for the drop-path schedule
        depths = (2, *depths[1:])
    heads = tuple(draw(st.sampled_from([1, 2])) * 2**i for i in range(stages))
    embed = max(heads[0], 1) * draw(st.sampled_from([2, 4]))
    window = tuple(draw(st.integers(1, 4)) for _ in range(3))
    patch = tuple(draw(st.integers(1, 3)) for _ in range(3))
    clip = tuple(draw(st.integers(1, 13)) for _ in range(3))
    return embed, depths, heads, window, patch, clip, draw(st.integers(1, 2))


@given(small_configs())
def test_small_configs_equal_torchvision_float64(config):
    """Drawn tables (windows clipped by small maps, odd maps merged, clips the patch does not
    divide): logits within 1e-10 in float64."""
    embed, depths, heads, window, patch, clip, batch = config
    torch.manual_seed(sum(clip))
    theirs = video.SwinTransformer3d(
        list(patch), embed, list(depths), list(heads), list(window), num_classes=5
    )
    theirs = _perturb(theirs.double(), seed=sum(window), scale=0.1)
    spec = video_swin_spec(embed, depths, heads, window=window, patch=patch, drop_path_rate=0.1)
    ours = spec.build(num_classes=5, dtype=torch.float64).eval()
    load_checkpoint(ours, theirs)
    x = torch.randn(batch, 3, *clip, dtype=torch.float64)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@given(
    st.tuples(*(st.integers(1, 3) for _ in range(3))),
    st.tuples(*(st.integers(1, 9) for _ in range(3))),
)
def test_stem_equals_patch_embed3d(patch, clip):
    theirs = video.PatchEmbed3d(list(patch), 3, 8, norm_layer=torch.nn.LayerNorm)
    theirs = _perturb(theirs.double(), seed=sum(clip), scale=0.5)
    ours = VideoStem(patch).build(3, 8, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, *clip, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-10, rtol=0)


@given(st.tuples(*(st.integers(1, 7) for _ in range(3))))
def test_merge_on_video_maps_equals_torchvision(thw):
    """torchvision's 2-D ``PatchMerging`` on ``(B, T, H, W, C)``: ``H`` and ``W`` merged (odd
    sizes padded), ``T`` kept."""
    theirs = _perturb(tv_swin.PatchMerging(4).double(), seed=sum(thw), scale=0.5)
    ours = PatchMerging().build(4, 8, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, *thw, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-10, rtol=0)


def test_video_maps_features_and_errors():
    spec = video_swin_spec(8, (1, 1), (1, 2), window=(2, 3, 3), patch=(1, 2, 2))
    model = spec.build(num_classes=3, features_only=True)
    feats = model(torch.randn(2, 3, 3, 10, 13))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 3, 5, 7), (2, 16, 3, 3, 4)]
    assert model.feature_info.reduction() == [2, 4]
    classifier = spec.build(num_classes=3)
    assert classifier.forward_features(torch.randn(1, 3, 2, 8, 8)).shape == (1, 2, 2, 2, 16)
    clips = r"expects clips as \(B, 3, T, H, W\), got .*\(1, 3, 8, 8\)"
    with pytest.raises(ValueError, match=clips):
        classifier(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"VideoStem: patch must be a \(t, h, w\) triple"):
        VideoStem((4, 4))
    assert model_spec("video_swin_t").stem == VideoStem((2, 4, 4))


def test_in_chans_adapts_the_conv3d_patch():
    torch.manual_seed(0)
    theirs = video.SwinTransformer3d([1, 2, 2], 8, [2], [2], [2, 2, 2], num_classes=3)
    spec = video_swin_spec(8, (2,), (2,), window=(2, 2, 2), patch=(1, 2, 2))
    ours = dataclasses.replace(spec, in_chans=1).build(num_classes=3)
    with pytest.warns(UserWarning, match="3-channel stem.proj.weight adapted to in_chans=1"):
        load_checkpoint(ours, theirs)
    want = theirs.patch_embed.proj.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(ours.stem.proj.weight, want, atol=0, rtol=0)


def test_small_model_input_gradients_equal_torchvision_float64():
    torch.manual_seed(3)
    theirs = video.SwinTransformer3d([1, 2, 2], 8, [2, 2], [1, 2], [2, 3, 3], num_classes=4)
    theirs = _perturb(theirs.double(), seed=3, scale=0.1)
    ours = video_swin_spec(8, (2, 2), (1, 2), window=(2, 3, 3), patch=(1, 2, 2))
    ours = ours.build(num_classes=4, dtype=torch.float64).eval()
    load_checkpoint(ours, theirs)
    x = torch.randn(2, 3, 3, 9, 14, dtype=torch.float64, requires_grad=True)
    want, got = theirs(x), ours(x)
    g = torch.randn_like(want)
    (gw,) = torch.autograd.grad(want, x, g)
    (gg,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(gg, gw, atol=1e-10, rtol=0)
