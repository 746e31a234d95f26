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
        (lambda: Window((7, 7, 7)), AttnblocksError, r"int or an \(h, w\) pair"),
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
