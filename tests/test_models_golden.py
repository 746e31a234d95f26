"""Whole models: the authors' small full models load through the public loader and give their
logits; the authors' Tiny key layouts load with no missing or unexpected key."""

import pytest
import torch
from golden_models import (
    FAMILIES,
    build_like,
    load_mini,
    tiny_keys,
    zeros_state,
)

from attnblocks.models import create, load_checkpoint, summary


@pytest.fixture(scope="module", params=FAMILIES)
def mini(request):
    return load_mini(request.param)


def test_golden_params_match(mini):
    model = build_like(mini["meta"])
    assert sum(p.numel() for p in model.parameters()) == mini["meta"]["params"]


def test_golden_logits_float64(mini):
    model = load_checkpoint(build_like(mini["meta"]), {"model": mini["state"]})
    with torch.no_grad():
        for x, y in ((mini["x"], mini["y"]), (mini["x2"], mini["y2"])):
            if x is None:
                continue
            err = (model(x) - y).abs().max().item()
            assert err <= 1e-9, (mini["meta"]["family"], tuple(x.shape), err)


def test_golden_logits_float32(mini):
    """The same numbers in float32 (exact casts): within the README's 1e-4."""
    model = build_like(mini["meta"]).float()
    load_checkpoint(model, mini["state"])
    with torch.no_grad():
        err = (model(mini["x"].float()).double() - mini["y"]).abs().max().item()
    assert err <= 1e-4


TINY = {
    "swin": ("swin_tiny", 4.49),
    "cswin": ("cswin_tiny", 4.32),
    "dilateformer": ("dilateformer_tiny", 3.16),
    "shunted": ("shunted_tiny", 2.15),
    "pvtv2": ("pvtv2_b2", 4.03),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_params_macs_and_key_layout(family):
    """The authors' Tiny: exact parameters, MACs to their two decimals, and their full key
    layout (zeros of every listed shape) loads with no missing or unexpected key."""
    name, gmacs = TINY[family]
    params, shapes = tiny_keys(family)
    model = create(name, device="meta")
    s = summary(model, 224)
    assert s.params == params
    assert round(s.macs / 1e9, 2) == gmacs
    load_checkpoint(model, zeros_state(shapes))
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
