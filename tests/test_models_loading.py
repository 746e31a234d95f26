"""load_checkpoint: files and wrappers, layouts named in errors, heads, input channels."""

import warnings

import pytest
import torch
from golden_models import build_like, load_mini

from attnblocks import AttnblocksError
from attnblocks.models import create, detect_layout, load_checkpoint, read_checkpoint


@pytest.fixture(scope="module")
def pvt():
    return load_mini("pvtv2")


def _logits_err(model, mini) -> float:
    with torch.no_grad():
        return (model.eval()(mini["x"]) - mini["y"]).abs().max().item()


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors"])
def test_file_paths(tmp_path, pvt, suffix):
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in pvt["state"].items()}, str(path))
    else:
        torch.save({"model": pvt["state"], "epoch": 3}, path)
    model = load_checkpoint(build_like(pvt["meta"]), str(path))
    assert _logits_err(model, pvt) <= 1e-9


def test_torch_load_is_weights_only(tmp_path, pvt):
    path = tmp_path / "evil.pth"
    torch.save({"model": pvt["state"], "obj": object()}, path)
    with pytest.raises(Exception, match=r"[Ww]eights only"):
        load_checkpoint(build_like(pvt["meta"]), path)


def test_wrappers_and_module_prefix():
    a, b = torch.zeros(2), torch.ones(2)
    assert torch.equal(read_checkpoint({"state_dict": {"module.x": a}})["x"], a)
    both = {"state_dict": {"x": a}, "state_dict_ema": {"x": b}}
    assert torch.equal(read_checkpoint(both)["x"], a)
    assert torch.equal(read_checkpoint(both, ema=True)["x"], b)
    assert torch.equal(read_checkpoint({"model": {"x": a}, "optimizer": {}})["x"], a)
    with pytest.raises(AttnblocksError, match="no tensors found"):
        read_checkpoint({"epoch": 3})


def test_ema_weights_load(pvt):
    noisy = {k: v + 1 for k, v in pvt["state"].items()}
    ckpt = {"state_dict": noisy, "state_dict_ema": pvt["state"]}
    model = load_checkpoint(build_like(pvt["meta"]), ckpt, ema=True)
    assert _logits_err(model, pvt) <= 1e-9


def test_layouts_detected():
    from golden_models import tiny_keys

    expected = {
        "swin": "swin",
        "cswin": "cswin",
        "dilateformer": "dilateformer",
        "shunted": "shunted",
        "pvtv2": "pvtv2",
    }
    for family, layout in expected.items():
        assert detect_layout(tiny_keys(family)[1]) == layout
    with pytest.raises(AttnblocksError, match=r"Unrecognised checkpoint layout.*CSWin \(authors'"):
        detect_layout({"foo.weight": torch.zeros(1)})


def test_wrong_family_names_the_layout_and_model(pvt):
    model = create("swin_tiny", device="meta")
    with pytest.raises(AttnblocksError, match=r"PVTv2 \(authors' layout\) checkpoint.*swin_tiny"):
        load_checkpoint(model, pvt["state"])


def test_wrong_configuration_names_the_block():
    sh = load_mini("shunted")
    meta = dict(sh["meta"])
    meta["constructor"] = dict(meta["constructor"], sr_ratios=[4, 4, 2, 1])
    with pytest.raises(AttnblocksError, match=r"block1\.0\.attn.*reduction ratios"):
        load_checkpoint(build_like(meta), sh["state"])


def test_head_of_another_size_is_left_fresh_with_a_warning(pvt):
    meta = dict(pvt["meta"], constructor=dict(pvt["meta"]["constructor"], num_classes=4))
    model = build_like(meta)
    before = model.head.weight.detach().clone()
    with pytest.warns(UserWarning, match="head has 10 classes, the model 4"):
        load_checkpoint(model, pvt["state"])
    assert torch.equal(model.head.weight, before)
    assert torch.equal(model.stages[0].norm.weight, pvt["state"]["norm1.weight"])


def test_head_into_features_only_is_ignored(pvt):
    model = build_like(pvt["meta"], num_classes=1000, features_only=True, out_indices=(-1,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(model, pvt["state"])
    full = load_checkpoint(build_like(pvt["meta"]), pvt["state"]).eval()
    with torch.no_grad():
        (feat,) = model.eval()(pvt["x"])
        expected = full.forward_intermediates(pvt["x"], indices=1, intermediates_only=True)[0]
    assert torch.equal(feat, expected)


def test_swin_features_only_drops_the_final_norm():
    sw = load_mini("swin")
    c = sw["meta"]["constructor"]
    from attnblocks.models.swin import swin_spec

    spec = swin_spec(c["embed_dim"], tuple(c["depths"]), tuple(c["num_heads"]), c["window_size"])
    load_checkpoint(spec.build(features_only=True, dtype=torch.float64), {"model": sw["state"]})


def test_in_chans_adapts_the_first_conv(pvt):
    meta = pvt["meta"]
    model = build_like(meta)
    model = type(model)(
        __import__("dataclasses").replace(model.spec, in_chans=1), 10, dtype=torch.float64
    )
    with pytest.warns(UserWarning, match="adapted to in_chans=1"):
        load_checkpoint(model, pvt["state"])
    w = pvt["state"]["patch_embed1.proj.weight"]
    assert torch.equal(model.stem.proj.weight, w.sum(1, keepdim=True))


def test_pretrained_without_a_file_says_how():
    with pytest.raises(AttnblocksError, match=r"pretrained_cfg_overlay=dict\(file=PATH\)"):
        create("shunted_tiny", pretrained=True, device="meta")


def test_create_pretrained_loads_the_file(tmp_path):
    from golden_models import tiny_keys

    _, shapes = tiny_keys("shunted")
    torch.manual_seed(0)
    state = {
        k: (torch.zeros(s, dtype=torch.int64) if k.endswith("tracked") else torch.randn(s))
        for k, s in shapes.items()
    }
    path = tmp_path / "ckpt_T.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.warns(UserWarning, match="head has 1000 classes, the model 10"):
        model = create(
            "shunted_tiny",
            num_classes=10,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path)},
        )
    assert torch.equal(model.stages[0].blocks[0].attn.q.weight, state["block1.0.attn.q.weight"])
    assert torch.equal(model.stem.proj.weight, state["patch_embed1.conv.3.weight"])
    assert model.pretrained_cfg["file"] == str(path)
    feats = create("shunted_tiny", features_only=True, checkpoint_path=path, device="meta")
    assert torch.equal(feats.stages[3].norm.weight, state["norm4.weight"])


def test_swinv2_from_timm_layout_gives_timms_logits():
    """A small timm SwinTransformerV2 (shifted windows, a merge, stage 2 window = map),
    perturbed, through load_checkpoint: timm's logits."""
    timm = pytest.importorskip("timm")
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    from attnblocks.models.swin import swinv2_spec

    torch.manual_seed(0)
    theirs = SwinTransformerV2(
        img_size=48, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=10
    ).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = swinv2_spec(16, (2, 2), (2, 4), window=4, clamp="timm", pad="timm")
    ours = ours.build(num_classes=10, dtype=torch.float64)
    assert detect_layout(theirs.state_dict()) == "swinv2_timm"
    load_checkpoint(ours, theirs.state_dict())
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=0, atol=1e-10)
    assert timm.__version__.startswith("1.")
