"""Specs: canonical forms, readable reprs that round-trip, hashing, pickling."""

import copy
import pickle

import pytest
import torch

import attnblocks
from attnblocks import (
    Attention,
    Global,
    Grid,
    LePE,
    RelPosBias,
    Split,
    Stripe,
    Window,
    zoo,
)

SPECS = [
    Window(7),
    Window((7, 5), shift=(3, 2), clamp="timm"),
    Stripe(7),
    Stripe(7, axis="h"),
    Global(),
    Grid(7),
    Split(2),
    Split(Window(7), Stripe(7, axis="h")),
    RelPosBias(),
    RelPosBias(size=(9, 9)),
    LePE(),
    LePE(kernel=5),
    Attention(partition=Stripe(7), heads=Split(2), pe=LePE()),
    Attention(heads=Split(Window(7), Grid(7)), pe=(RelPosBias(), LePE()), dim=64, num_heads=4),
    zoo.swin(7, 3),
    zoo.cswin(7, last=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_repr_evals_back_to_an_equal_spec(spec):
    assert eval(repr(spec), vars(attnblocks)) == spec


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_hashable_picklable_copyable(spec):
    assert hash(spec) == hash(copy.deepcopy(spec))
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_canonical_forms_and_reprs():
    assert Window(7) == Window((7, 7)) and repr(Window((7, 7))) == "Window(7)"
    assert Window(7, shift=3).shift == (3, 3)
    assert Stripe(7, axis="vertical") == Stripe(7, axis="v")
    assert repr(Attention(partition=Stripe(7), heads=Split(2), pe=LePE())) == (
        "Attention(partition=Stripe(7), heads=Split(2), pe=LePE())"
    )
    assert Stripe(7).resolve(0, 2) == Stripe(7, axis="v")
    assert Stripe(7).resolve(1, 2) == Stripe(7, axis="h")


def test_groups_own_contiguous_heads_and_channels():
    groups = Attention(heads=Split(Window(7), Stripe(7, axis="h"), Global())).groups(96, 6)
    assert [g.heads for g in groups] == [(0, 2), (2, 4), (4, 6)]
    assert [g.channels for g in groups] == [(0, 32), (32, 64), (64, 96)]
    assert [g.partition for g in groups] == [Window(7), Stripe(7, axis="h"), Global()]


def test_built_layer_pickles_and_deepcopies():
    layer = Attention(partition=Window(3, shift=1), pe=RelPosBias()).build(8, 2)
    x = torch.randn(1, 7, 5, 8)
    y = layer(x)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(other(x), y, atol=0, rtol=0)


def test_state_dict_is_resolution_free():
    layer = zoo.swin(7, 3).build(32, 2)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "qkv.weight": (96, 32),
        "qkv.bias": (96,),
        "pe.0.tables.0": (169, 2),
        "proj.weight": (32, 32),
        "proj.bias": (32,),
    }
    for hw in [(14, 14), (9, 23), (3, 3), (1, 1)]:
        assert layer(torch.randn(1, *hw, 32)).shape == (1, *hw, 32)


def test_token_sequence_input_with_hw():
    layer = zoo.cswin(2).build(16, 2)
    x = torch.randn(2, 6, 4, 16)
    torch.testing.assert_close(layer(x.flatten(1, 2), hw=(6, 4)), layer(x).flatten(1, 2))
