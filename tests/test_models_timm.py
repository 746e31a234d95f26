"""The timm model surface, tested the way timm tests its own models: create, forward,
backward, features_only with out_indices, reset_classifier, gradient checkpointing.

The numerical checks run on the authors' small configurations (``golden/models``; NAT: a
small table of its own); the registered Tiny models are built on the meta device."""

import subprocess
import sys

import pytest
import torch
from golden_models import FAMILIES, build_like, load_mini

from attnblocks.models import FeatureInfo, create, list_models
from attnblocks.models.nat import nat_spec


def mini_model(family: str, **build):
    if family == "nat":
        spec = nat_spec((16, 32, 64, 128), (1, 1, 1, 1), (1, 2, 4, 8), kernel=3)
        return spec.build(num_classes=10, **build)
    meta = load_mini(family)["meta"]
    model = build_like(meta)
    if build:
        model = model.spec.build(num_classes=10, **build)
    return model


def mini_input(family: str) -> torch.Tensor:
    size = (96, 96) if family == "nat" else tuple(load_mini(family)["meta"]["img_size"])
    return torch.randn(2, 3, *size)


def test_import_attnblocks_does_not_import_timm():
    code = "import sys, attnblocks, attnblocks.models; assert 'timm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def timm():
    timm = pytest.importorskip("timm")
    from attnblocks.models import register_timm

    register_timm()
    return timm


def test_registered_in_timm(timm):
    ours = sorted(f"attnblocks_{n}" for n in list_models())
    assert timm.list_models("attnblocks_*") == ours
    assert timm.list_models("*attnblocks*") == ours
    assert timm.is_model("attnblocks_cswin_tiny")


@pytest.mark.parametrize("name", ["swin_tiny", "cswin_tiny", "pvtv2_b2", "dilateformer_tiny"])
def test_timm_create_model(timm, name):
    model = timm.create_model(
        f"attnblocks_{name}", num_classes=7, drop_path_rate=0.3, img_size=256, device="meta"
    )
    assert model.name == name and model.num_classes == 7
    assert model.pretrained_cfg["input_size"] == (3, 256, 256)
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)
    assert model.pretrained_cfg["architecture"] == f"attnblocks_{name}"
    assert model.spec.drop_path_rate == 0.3
    assert model(torch.zeros(1, 3, 64, 64, device="meta")).shape == (1, 7)


@pytest.mark.parametrize("family", [*FAMILIES, "nat"])
def test_forward_backward_heads(family):
    torch.manual_seed(0)
    model = mini_model(family)
    model.float().train()
    x = mini_input(family)
    model(x).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[-1] == model.num_features
        torch.testing.assert_close(model.forward_head(feats), model(x), rtol=0, atol=0)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats, rtol=0, atol=0)
        assert [t.shape[1] for t in inter] == model.feature_info.channels()
        last2 = model.forward_intermediates(x, indices=2, output_fmt="NHWC", stop_early=True)
        torch.testing.assert_close(last2[1][-1], inter[-1].permute(0, 2, 3, 1))
    assert model.get_classifier() is model.head
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("family", ["swin", "shunted"])
def test_features_only_out_indices(family):
    model = mini_model(family, features_only=True, out_indices=(1, -1)).float().eval()
    x = mini_input(family)
    outs = model(x)
    assert len(outs) == 2
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    for o, r in zip(outs, model.feature_info.reduction()):
        assert tuple(o.shape[2:]) == (x.shape[2] // r, x.shape[3] // r)


@pytest.mark.parametrize("name", ["swin_tiny", "shunted_tiny"])
def test_timm_features_only(timm, name):
    model = timm.create_model(
        f"attnblocks_{name}", features_only=True, out_indices=(1, -1), in_chans=1, device="meta"
    )
    assert type(model.feature_info) is not FeatureInfo  # timm's own class
    assert type(model.feature_info).__module__.startswith("timm")
    outs = model(torch.zeros(1, 1, 64, 96, device="meta"))
    assert [o.shape[1] for o in outs] == model.feature_info.channels()
    for o, r in zip(outs, model.feature_info.reduction()):
        assert tuple(o.shape[2:]) == (64 // r, 96 // r)


def test_attnblocks_create_offers_the_same_without_timm():
    model = create("cswin_tiny", features_only=True, out_indices=(0, 2), in_chans=2, device="meta")
    assert isinstance(model.feature_info, FeatureInfo)
    assert model.feature_info.channels() == [64, 256]
    assert model.feature_info.reduction() == [4, 16]
    assert model.pretrained_cfg["input_size"] == (2, 224, 224)
    outs = model(torch.zeros(1, 2, 64, 64, device="meta"))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 16), (1, 256, 4, 4)]
    with pytest.raises(Exception, match="needs features_only=True"):
        create("cswin_tiny", out_indices=(0,), device="meta")


@pytest.mark.parametrize("family", ["swin", "dilateformer", "pvtv2"])
def test_grad_checkpointing_equal_gradients(family):
    torch.manual_seed(0)
    model = mini_model(family).double().train()
    for m in model.modules():
        if hasattr(m, "p") and type(m).__name__ == "DropPath":
            m.p = 0.2  # stochastic depth on: the recomputation must redraw the same masks
    x = mini_input(family).double()

    def grads():
        model.zero_grad()
        torch.manual_seed(1)
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in model.stages)
    checked = grads()
    for n in plain:
        torch.testing.assert_close(checked[n], plain[n], rtol=1e-10, atol=1e-12, msg=n)


def test_no_weight_decay_names_the_position_tables():
    nwd = create("swin_tiny", device="meta").no_weight_decay()
    assert len(nwd) == 12 and all(n.endswith("pe.0.tables.0") for n in nwd)
    assert create("pvtv2_b2", device="meta").no_weight_decay() == set()


def test_timm_pretrained_file_loads_through_our_loader(timm, tmp_path):
    from golden_models import tiny_keys

    _, shapes = tiny_keys("pvtv2")
    torch.manual_seed(0)
    state = {k: torch.randn(s) for k, s in shapes.items()}
    path = tmp_path / "pvt_v2_b2.pth"
    torch.save(state, path)  # the authors' PVTv2 files are bare state dicts
    model = timm.create_model(
        "attnblocks_pvtv2_b2",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        device="meta",
    )
    assert torch.equal(model.head.weight, state["head.weight"])
    dw = state["block4.2.mlp.dwconv.dwconv.weight"]
    assert torch.equal(model.stages[3].blocks[2].mlp.dwconv.weight, dw)
