"""Every user error: a clear message naming the spec and the shapes."""

import pytest
import torch

from attnblocks import (
    Attention,
    AttnblocksError,
    Global,
    LePE,
    RelPosBias,
    Split,
    Stripe,
    Window,
    dense_mask,
    zoo,
)
from attnblocks.convert import load_cswin, load_swin


def test_error_type_is_a_value_error():
    assert issubclass(AttnblocksError, ValueError)


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: Window(0), AttnblocksError, r"Window: size must be >= 1, got 0"),
        (lambda: Window(7, shift=7), AttnblocksError, r"shift must be smaller than the window"),
        (lambda: Window((8, 7, 7), shift=(1, 2)), AttnblocksError, r"different numbers of axes"),
        (lambda: Window(()), AttnblocksError, r"non-empty per-axis tuple"),
        (lambda: Window(7.0), TypeError, r"Window: size must be an int, got 7.0"),
        (lambda: Window(7, clamp="auto"), AttnblocksError, r"clamp must be one of"),
        (lambda: Stripe(7, axis="x"), AttnblocksError, r"axis must be 'v' .* got 'x'"),
        (lambda: Split(), TypeError, r"Split takes one int"),
        (lambda: Split(0), AttnblocksError, r"number of groups must be >= 1"),
        (lambda: LePE(kernel=4), AttnblocksError, r"kernel must be odd"),
        (
            lambda: Attention(partition=Stripe(7)),
            AttnblocksError,
            r"Stripe\(7\) means one form per head group",
        ),
        (lambda: Attention(partition=Stripe(7), heads=Split(1)), AttnblocksError, r"no head split"),
        (
            lambda: Attention(partition=Window(7), heads=Split(Window(7), Global())),
            AttnblocksError,
            r"already gives every head group its partition",
        ),
        (lambda: Attention(partition="window"), TypeError, r"partition must be a Partition"),
        (lambda: Attention(heads=2), TypeError, r"heads must be a Split"),
        (lambda: Attention(pe="rpb"), TypeError, r"pe must be positional encoders"),
        (lambda: Attention(pad="reflect"), AttnblocksError, r"pad must be one of"),
        (lambda: Attention(attn_drop=1.5), AttnblocksError, r"attn_drop must be in \[0, 1\)"),
        (
            lambda: Attention(dim=96, num_heads=5),
            AttnblocksError,
            r"dim=96 is not divisible by num_heads=5",
        ),
    ],
)
def test_construction_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_build_errors():
    with pytest.raises(AttnblocksError, match=r"dim=10 is not divisible by num_heads=3"):
        zoo.swin().build(10, 3)
    with pytest.raises(AttnblocksError, match=r"Split\(2\) cannot divide num_heads=3 into 2"):
        zoo.cswin(7).build(12, 3)
    with pytest.raises(AttnblocksError, match=r"give both dim and num_heads"):
        zoo.swin().build()
    with pytest.raises(AttnblocksError, match=r"build\(dim=32\) contradicts the spec's dim"):
        Attention(dim=64, num_heads=2).build(32)
    with pytest.raises(
        AttnblocksError, match=r"RelPosBias\(\) needs a fixed window.*Stripe\(7, axis='v'\)"
    ):
        Attention(partition=Stripe(7), heads=Split(2), pe=RelPosBias()).build(8, 2)


def test_input_errors():
    layer = zoo.swin(4).build(8, 2)
    with pytest.raises(
        AttnblocksError, match=r"built for C=8 channels, got x.shape=\(1, 4, 4, 6\)"
    ):
        layer(torch.randn(1, 4, 4, 6))
    with pytest.raises(AttnblocksError, match=r"expects x as \(B, H, W, C\).*got x.shape=\(4, 8\)"):
        layer(torch.randn(4, 8))
    with pytest.raises(AttnblocksError, match=r"needs the map size: call with hw=\(H, W\)"):
        layer(torch.randn(1, 16, 8))
    with pytest.raises(
        AttnblocksError, match=r"hw=\(3, 4\) has 12 tokens but x.shape=\(1, 16, 8\)"
    ):
        layer(torch.randn(1, 16, 8), hw=(3, 4))
    with pytest.raises(AttnblocksError, match=r"hw=\(2, 2\) contradicts x.shape=\(1, 4, 4, 8\)"):
        layer(torch.randn(1, 4, 4, 8), hw=(2, 2))


def test_map_not_divisible_with_pad_error():
    layer = Attention(partition=Window(7), pad="error").build(8, 2)
    with pytest.raises(
        AttnblocksError,
        match=r"(?s)Window\(7\) cannot partition a 30x40 token map without padding: 30 is not "
        r"divisible by 7.*resize the map to 35x42.*Input: x.shape=\(1, 30, 40, 8\) read as "
        r"\(batch, height, width, channels\)",
    ):
        layer(torch.randn(1, 30, 40, 8))


def test_rel_pos_bias_window_larger_than_table():
    layer = Attention(partition=Global(), pe=RelPosBias(size=4)).build(8, 2)
    with pytest.raises(AttnblocksError, match=r"table for 4x4 windows, but Global\(\) makes 5x5"):
        layer(torch.randn(1, 5, 5, 8))


def test_dense_mask_errors():
    with pytest.raises(AttnblocksError, match=r"generic partition needs heads=Split"):
        dense_mask(Stripe(3), 4, 4)
    with pytest.raises(TypeError, match=r"expects a Partition or an Attention"):
        dense_mask("window", 4, 4)


def test_converter_errors():
    layer = zoo.swin(4).build(8, 2)
    state = {k: v for k, v in layer.state_dict().items() if not k.startswith("pe.")}
    state["relative_position_bias_table"] = torch.zeros(48, 2)
    with pytest.raises(AttnblocksError, match=r"48 rows, not \(2m-1\)\^2"):
        load_swin(layer, state)
    state["relative_position_bias_table"] = torch.zeros(49, 2)
    state["qkv.weight"] = torch.zeros(24, 9)
    with pytest.raises(
        AttnblocksError, match=r"qkv.weight has shape \(24, 9\), the module expects \(24, 8\)"
    ):
        load_swin(layer, state)
    with pytest.raises(AttnblocksError, match=r"has no LePE encoder"):
        load_cswin(layer, state)


# --- the layer boundary: input type, dtype and hw (issue 12) ---------------------------------
def _swin_layer():
    return Attention(partition=Window(3)).build(8, 2)


@pytest.mark.parametrize(
    "x, hw, error, match",
    [
        (torch.randn(1, 3, 3, 8).double(), None, AttnblocksError, r"x.dtype=torch.float64 differs"),
        (torch.ones(1, 3, 3, 8, dtype=torch.int64), None, AttnblocksError, r"floating-point x"),
        (torch.ones(1, 3, 3, 8, dtype=torch.bool), None, AttnblocksError, r"dtype=torch.bool"),
        (torch.randn(1, 9, 8), (-3, -3), AttnblocksError, r"hw=\(-3, -3\) must be positive"),
        (torch.randn(1, 9, 8), (3.0, 3), AttnblocksError, r"hw must be the map size, a tuple"),
        (torch.randn(1, 9, 8), (), AttnblocksError, r"got \(\)"),
        (torch.randn(1, 9, 8), (3, 3, 2), AttnblocksError, r"hw=\(3, 3, 2\) has 18 tokens"),
        (torch.randn(1, 9, 8), (3, 4), AttnblocksError, r"hw=\(3, 4\) has 12 tokens"),
    ],
)
def test_layer_input_checks_name_spec_and_values(x, hw, error, match):
    with pytest.raises(error, match=r"Attention\(partition=Window\(3\)\)[\s\S]*" + match):
        _swin_layer()(x, hw)


def test_numpy_input_refused_with_a_hint():
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match=r"got ndarray \(from numpy: torch.from_numpy\(x\)\)"):
        _swin_layer()(np.zeros((1, 3, 3, 8), np.float32))


def test_autocast_input_of_another_dtype_is_accepted():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _swin_layer()(torch.randn(1, 3, 3, 8).bfloat16()).shape == (1, 3, 3, 8)


def test_zero_dim_is_named_as_given():
    with pytest.raises(AttnblocksError, match=r"dim must be >= 1, got 0"):
        Attention(partition=Window(3)).build(dim=0, num_heads=2)
    with pytest.raises(AttnblocksError, match=r"num_heads must be >= 1, got 0"):
        Attention(partition=Window(3)).build(8, 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"scale": "abc"}, TypeError, r"scale must be a number or None, got 'abc'"),
        (
            {"scale": float("nan")},
            AttnblocksError,
            r"scale must be a finite positive .*, got nan",
        ),
        ({"scale": -1.0}, AttnblocksError, r"scale must be a finite positive .*, got -1.0"),
        ({"attn_drop": "0.1"}, TypeError, r"attn_drop must be a number in \[0, 1\), got '0.1'"),
        ({"proj_drop": True}, TypeError, r"proj_drop must be a number"),
    ],
)
def test_scale_and_dropout_types(kwargs, error, match):
    with pytest.raises(error, match=r"Attention: " + match):
        Attention(partition=Window(3), **kwargs)


def test_config_sizes_and_depth_are_bounded():
    from attnblocks import from_config
    from attnblocks._spec import MAX_SIZE
    from attnblocks.config import MAX_DEPTH

    with pytest.raises(AttnblocksError, match=r"Window: size=1000000000000 exceeds .*2\*\*20"):
        from_config({"type": "Window", "size": 10**12})
    assert Window(MAX_SIZE).size == (MAX_SIZE, MAX_SIZE)
    with pytest.raises(TypeError, match=r"Window: size must be an int, got '7'"):
        from_config({"type": "Window", "size": "7"})
    config = {"type": "Window", "size": 7}
    for _ in range(2000):
        config = {"type": "Attention", "partition": config}
    with pytest.raises(AttnblocksError, match=rf"nests deeper than {MAX_DEPTH} levels"):
        from_config(config)
