"""Swin backbones: timm 1.0's SwinTransformer (random weights) converted into attnblocks.

Logits agree in float32 to ``atol=rtol=1e-4`` (observed ~1e-6): at 224 px with the default
(authors') window rule, and at a non-square size with ``clamp="timm", pad="timm"``, the rule
of timm built for that size (``img_size=``, or ``set_input_size(img_size, window_size=7)``).
"""

import copy

import pytest
import torch

from attnblocks.convert import convert_timm_swin, load_timm_swin_checkpoint
from attnblocks.models import create

timm = pytest.importorskip("timm")
swin_mod = pytest.importorskip("timm.models.swin_transformer")

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def timm_swin():
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move every parameter off its init (norms, biases, tables included)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _ours(**options):
    model = create("swin_tiny", device="meta", **options)
    return model.to_empty(device="cpu").eval()


def test_equals_timm_at_224(timm_swin):
    model = load_timm_swin_checkpoint(_ours(), timm_swin)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), timm_swin(x), **TOL)


def test_equals_timm_at_non_square_size(timm_swin):
    """96x160: stage maps 24x40 (padded), 12x20, 6x10 (window (6, 7), shift on W only), 3x5."""
    resized = copy.deepcopy(timm_swin)
    resized.set_input_size(img_size=(96, 160), window_size=7)
    assert {b.window_size for b in resized.layers[2].blocks} == {(6, 7)}
    model = load_timm_swin_checkpoint(_ours(clamp="timm", pad="timm"), resized)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), resized(x), **TOL)
    with pytest.raises(ValueError, match=r"has 143 rows, not \(2m-1\)\^2.*pass the timm model"):
        convert_timm_swin(resized.state_dict(), model)


def test_authors_layout_loads_like_timm(timm_swin):
    """The authors' layout (downsample at the end of a stage, ``head``): checked against timm's
    own ``checkpoint_filter_fn``, then loaded into the same weights as the timm layout."""
    timm_state = {
        k: v for k, v in timm_swin.state_dict().items() if "relative_position_index" not in k
    }
    authors = {}
    for k, v in timm_state.items():
        if ".downsample." in k:
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.", f"layers.{i - 1}.")
        authors[k.replace("head.fc.", "head.")] = v
    assert swin_mod.checkpoint_filter_fn(authors, timm_swin).keys() == timm_state.keys()
    a = load_timm_swin_checkpoint(_ours(), authors).state_dict()
    b = load_timm_swin_checkpoint(_ours(), timm_state).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_and_extra_keys_are_named(timm_swin):
    state = dict(timm_swin.state_dict())
    state["extra.weight"] = state.pop("norm.bias")
    with pytest.raises(ValueError, match=r"missing keys \['norm.bias'\], unexpected keys"):
        load_timm_swin_checkpoint(_ours(), state)
    with pytest.raises(TypeError, match="Expected a state dict or a timm SwinTransformer"):
        convert_timm_swin(42, _ours())
