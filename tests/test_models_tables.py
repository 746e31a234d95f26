"""The PVTv2, DilateFormer, Shunted and NAT/DiNAT rows: counts, timm equivalence, any size."""

import math

import pytest
import torch

from attnblocks.models import create, summary

# The authors' models, counted with FlopCounterMode (reference facts): exact params, MACs at 224.
PUBLISHED = {"pvtv2_b2": (25_362_856, 4.03e9)}

NEW_MODELS = ["pvtv2_b2"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_exact_and_macs_within_2_percent(name):
    params, macs = PUBLISHED[name]
    s = summary(create(name, device="meta"), 224)
    assert s.params == params
    assert abs(s.macs - macs) / macs < 0.02


@pytest.fixture(scope="module")
def timm_pvtv2():
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("pvt_v2_b2", pretrained=False, device="meta")
    theirs = theirs.to_empty(device="cpu").eval()
    _randomize(theirs)
    return theirs


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights (std 0.02), norms' weights near 1, biases nonzero; seeded."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.02)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return model


@pytest.mark.parametrize("size", [(224, 224), (100, 76)])  # 100x76: stage 1 is 25x19, sr floors
def test_pvtv2_b2_matches_timm(timm_pvtv2, size):
    from attnblocks.models.pvtv2 import load_timm_pvtv2_checkpoint

    ours = create("pvtv2_b2", device="meta").to_empty(device="cpu")
    ours = load_timm_pvtv2_checkpoint(ours, timm_pvtv2).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        final, theirs = timm_pvtv2.forward_intermediates(x)
        expected = timm_pvtv2.forward_head(final)
        maps = ours.forward_stages(x)
        actual = ours.forward_head(maps[-1])
    # fp32, 25M parameters through 16 blocks: differences are summation order only (~1e-6)
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-5)
    assert len(maps) == len(theirs) == 4
    for m, t in zip(maps, theirs, strict=True):
        torch.testing.assert_close(m.permute(0, 3, 1, 2), t, atol=2e-5, rtol=1e-5)


def test_pvtv2_converter_rejects_other_models():
    from attnblocks.models.pvtv2 import convert_timm_pvtv2, load_timm_pvtv2_checkpoint

    with pytest.raises(TypeError, match="Expected a state dict or a timm PVTv2 model, got int"):
        convert_timm_pvtv2(3)
    model = create("pvtv2_b2", num_classes=10, device="meta")
    with pytest.raises(ValueError, match=r"PVTv2 checkpoint -> Backbone: missing keys \[.*"):
        load_timm_pvtv2_checkpoint(model, {"stem.proj.weight": torch.zeros(1)})


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


# 45x67 px: odd, non-square; the last stage is 2x3 or smaller
SIZE = (45, 67)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_backpropagates_and_gives_four_stage_maps_at_non_square_size(name):
    model = create(name, num_classes=3, drop_path_rate=0.1, device="meta")
    model = _randomize(model.to_empty(device="cpu")).train()
    x = torch.randn(1, 3, *SIZE, requires_grad=True)
    maps = model.forward_stages(x)
    model.forward_head(maps[-1]).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert x.grad.abs().sum() > 0
    stride = model.feature_info[0]["reduction"]
    first = [math.ceil(n / stride) if n % stride else n // stride for n in SIZE]
    stem = model.spec.stem
    if hasattr(stem, "kernel"):
        first = [_conv_out(n, stem.kernel, stem.stride, stem.padding) for n in SIZE]
    sizes, hw = [], first
    for i in range(4):
        if i:
            hw = [math.ceil(n / 2) for n in hw]
        sizes.append(tuple(hw))
    assert [tuple(m.shape) for m in maps] == [
        (1, *hw, info["num_chs"]) for hw, info in zip(sizes, model.feature_info, strict=True)
    ]
