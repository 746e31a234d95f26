"""The Small/Base rows: PVTv2 b0-b5 count as timm's, Shunted-S/B as published."""

import pytest

from attnblocks.models import create


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("b", ["b0", "b1", "b3", "b4", "b5"])
def test_pvtv2_rows_have_timms_parameter_count(b):
    timm = pytest.importorskip("timm")
    theirs = timm.create_model(f"pvt_v2_{b}", pretrained=False, device="meta")
    assert _params(create(f"pvtv2_{b}", device="meta")) == _params(theirs)


@pytest.mark.parametrize(
    ("name", "exact", "published"),
    [("shunted_small", 22_401_256, 22.4e6), ("shunted_base", 39_614_376, 39.6e6)],
)
def test_shunted_rows(name, exact, published):
    """Published rounded to 0.1M; the stem's extra 3x3 conv-BN layers (1 and 2) included."""
    model = create(name, device="meta")
    assert _params(model) == exact
    assert round(exact / 1e5) == round(published / 1e5)
    extra = sum(1 for m in model.stem.convs if type(m).__name__ == "Conv2d") - 1
    assert extra == {"shunted_small": 1, "shunted_base": 2}[name]


def test_swinv2_tiny_has_timms_parameter_count():
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("swinv2_tiny_window8_256", pretrained=False, device="meta")
    ours = create("swinv2_tiny", device="meta")
    assert _params(ours) == _params(theirs) == 28_347_154
    assert ours.pretrained_cfg["input_size"] == (3, 256, 256)
