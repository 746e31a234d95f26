"""CSWin backbones: the converter + model equal a plain model in the authors' layout."""

import pytest
import torch

from attnblocks.convert import convert_cswin, load_cswin_checkpoint
from attnblocks.models import create
from attnblocks.models.cswin import cswin_spec
from references.cswin_model import cswin_model, cswin_state_shapes, random_cswin_state

DEPTHS, HEADS, SPLITS = (1, 2, 1, 1), (2, 2, 4, 4), (1, 2, 7, 7)


def test_small_cswin_equals_plain_authors_model():
    """float64, 112 px (maps 28, 14, 7, 4): stripes divide as in the authors' code."""
    shapes = cswin_state_shapes(8, DEPTHS, num_classes=5)
    state = random_cswin_state(shapes)
    model = cswin_spec(8, DEPTHS, HEADS, SPLITS).build(num_classes=5, dtype=torch.float64)
    load_cswin_checkpoint(model, state)
    img = torch.randn(1, 3, 112, 112, dtype=torch.float64)
    with torch.no_grad():
        ref = cswin_model(state, img, DEPTHS, HEADS, SPLITS)
        torch.testing.assert_close(model.eval()(img), ref, atol=1e-10, rtol=1e-9)


def test_authors_layout_matches_cswin_tiny_parameters():
    """Every authors' key of CSWin-T finds a parameter of the same size, none left over."""
    shapes = cswin_state_shapes(64, (1, 2, 21, 1))
    model = create("cswin_tiny", device="meta")
    mapped = convert_cswin({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    own = model.state_dict()
    assert sorted(mapped) == sorted(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 22_320_552


def test_training_checkpoint_is_unwrapped_preferring_ema():
    state = random_cswin_state(cswin_state_shapes(8, DEPTHS, num_classes=5))
    other = {k: v + 1 for k, v in state.items()}
    wrapped = convert_cswin({"state_dict": other, "state_dict_ema": state, "epoch": 3})
    plain = convert_cswin(state)
    assert wrapped.keys() == plain.keys()
    assert all(torch.equal(wrapped[k], plain[k]) for k in plain)


def test_missing_key_is_named():
    shapes = cswin_state_shapes(8, DEPTHS, num_classes=5)
    state = random_cswin_state(shapes)
    del state["merge2.norm.bias"]
    model = cswin_spec(8, DEPTHS, HEADS, SPLITS).build(num_classes=5)
    with pytest.raises(ValueError, match=r"missing keys \['stages.2.downsample.norm.bias'\]"):
        load_cswin_checkpoint(model, state)


def test_shape_mismatch_is_named():
    state = random_cswin_state(cswin_state_shapes(8, DEPTHS, num_classes=7))
    model = cswin_spec(8, DEPTHS, HEADS, SPLITS).build(num_classes=5)
    with pytest.raises(ValueError, match=r"head.weight has shape \(7, 64\).*expects \(5, 64\)"):
        load_cswin_checkpoint(model, state)
