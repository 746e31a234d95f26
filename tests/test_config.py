"""Specs as data: repr/eval, to_config/from_config (JSON) round trips; modules pickle and copy."""

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import attnblocks
from attnblocks import Attention, AttnblocksError, LePE, RelPosBias, Split, Stripe, Window, zoo
from attnblocks.config import from_config, spec_types, to_config
from helpers import randomize_
from strategies import concrete_partitions

NAMESPACE = {n: getattr(attnblocks, n) for n in attnblocks.__all__}


@st.composite
def attention_specs(draw):
    parts = draw(st.lists(concrete_partitions(max_size=5), min_size=1, max_size=3))
    generic = draw(st.booleans())
    if generic:
        part, heads = Stripe(draw(st.integers(1, 7))), Split(draw(st.sampled_from([2, 4])))
    elif len(parts) > 1:
        part, heads = None, Split(*parts)
    else:
        part, heads = parts[0], draw(st.sampled_from([None, Split(1), Split(2)]))
    pe = draw(st.sampled_from([None, LePE(), RelPosBias(size=9), (LePE(kernel=5), RelPosBias())]))
    return Attention(
        partition=part,
        heads=heads,
        pe=pe,
        qkv_bias=draw(st.booleans()),
        scale=draw(st.sampled_from([None, 0.125])),
        attn_drop=draw(st.sampled_from([0.0, 0.25])),
        pad=draw(st.sampled_from(["mask", "zeros", "timm", "torchvision", "error"])),
        backend=draw(st.sampled_from(["auto", "eager", "flex"])),
    )


@given(spec=attention_specs())
def test_repr_eval_round_trip(spec):
    assert eval(repr(spec), NAMESPACE) == spec


@given(spec=st.one_of(attention_specs(), concrete_partitions()))
def test_config_json_round_trip(spec):
    config = to_config(spec)
    assert from_config(config) == spec
    assert from_config(json.loads(json.dumps(config))) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_config_is_minimal_and_readable():
    spec = Attention(heads=Split(Window(7, shift=3), Stripe(2, axis="h")), pe=LePE())
    assert to_config(spec) == {
        "type": "Attention",
        "heads": {
            "type": "Split",
            "args": [
                {"type": "Window", "size": [7, 7], "shift": [3, 3]},
                {"type": "Stripe", "width": 2, "axis": "h"},
            ],
        },
        "pe": {"type": "LePE"},
    }
    assert to_config(Split(2)) == {"type": "Split", "args": [2]}


def test_registry_holds_every_public_spec():
    public = {"Attention", "Global", "Grid", "LePE", "RelPosBias", "Split", "Stripe", "Window"}
    assert public <= set(spec_types())


@pytest.mark.parametrize(
    "spec",
    [
        zoo.swin(3, 1),
        zoo.cswin(2),
        Attention(heads=Split(Window(3, shift=1), Stripe(2, axis="h")), pe=(LePE(), RelPosBias(8))),
    ],
    ids=["swin", "cswin", "hybrid"],
)
def test_built_modules_pickle_and_deepcopy(spec):
    layer = randomize_(spec.build(8, 2)).eval()
    x = torch.randn(2, 5, 7, 8)
    y = layer(x)
    for twin in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        torch.testing.assert_close(twin(x), y, atol=0, rtol=0)
        assert twin.spec == spec


# --- errors -----------------------------------------------------------------------------------


def test_unknown_type_raises():
    with pytest.raises(AttnblocksError, match=r"unknown spec type 'Windw'; known: .*Window"):
        from_config({"type": "Windw", "size": 7})


def test_unknown_field_raises():
    with pytest.raises(AttnblocksError, match=r"Window has no field\(s\) 'sise'; its fields are"):
        from_config({"type": "Window", "sise": 7})


def test_missing_type_raises():
    with pytest.raises(AttnblocksError, match="has no 'type'"):
        from_config({"size": 7})


def test_not_a_dict_raises():
    with pytest.raises(AttnblocksError, match="expects a dict, got str"):
        from_config("Window(7)")


def test_code_is_never_evaluated():
    with pytest.raises(AttnblocksError, match=r"unknown spec type .__import__"):
        from_config({"type": "__import__('os').system('true')"})
    assert from_config({"type": "Stripe", "width": 2, "axis": "v"}) == Stripe(2, axis="v")
    with pytest.raises(AttnblocksError, match="Stripe: axis must be"):
        from_config({"type": "Stripe", "width": 2, "axis": "__import__('os')"})


def test_non_data_value_raises():
    with pytest.raises(AttnblocksError, match=r"Window.size must be plain data .* got"):
        from_config({"type": "Window", "size": object()})


def test_split_args_shape_raises():
    with pytest.raises(AttnblocksError, match="Split takes exactly one field 'args'"):
        from_config({"type": "Split", "count": 2})


def test_unregistered_object_raises():
    with pytest.raises(AttnblocksError, match="is not a registered spec class"):
        to_config(torch.nn.Linear(2, 2))
    with pytest.raises(AttnblocksError, match="cannot express"):
        # a tensor scale is now refused at construction; a numpy scalar is a number but not data
        to_config(Attention(scale=np.float32(0.5)))
