"""Converters never load into a layer of another configuration: what the tensors tell (heads of a
bias table, window, sr kernels, branch count) and, given the authors' module, its attributes
(num_heads, split_size, sr_ratio, window_size, dilation) are checked against the layer's."""

import pytest
import torch
from torch import nn

from attnblocks import AttnblocksError, zoo
from attnblocks.convert import (
    load_cswin,
    load_dilateformer,
    load_pvtv2,
    load_shunted,
    load_swin,
)


class Source(nn.Module):
    """Stands in for an authors' attention module: given weights, given attributes."""

    def __init__(self, state: dict[str, torch.Tensor], **attrs) -> None:
        super().__init__()
        self._state = {k: v.detach().clone() for k, v in state.items()}
        for k, v in attrs.items():
            setattr(self, k, v)

    def state_dict(self, *args, **kwargs):
        return dict(self._state)


def shunted_state(sr: int, dim: int = 64, heads: int = 2) -> dict[str, torch.Tensor]:
    state = zoo.shunted(sr).build(dim, heads).state_dict()
    out = {k: v for k, v in state.items() if k.split(".")[0] in ("q", "proj")}
    w, b = state["pe.0.conv.weight"], state["pe.0.conv.bias"]
    if sr == 1:
        out |= {"kv.weight": state["runners.0.kv.weight"], "kv.bias": state["runners.0.kv.bias"]}
        return out | {"local_conv.weight": w, "local_conv.bias": b}
    for i in (1, 2):
        for part in ("sr", "norm", "kv"):
            for p in ("weight", "bias"):
                out[f"{part}{i}.{p}"] = state[f"runners.{i - 1}.{part}.{p}"]
        sl = slice(0, dim // 2) if i == 1 else slice(dim // 2, None)
        out[f"local_conv{i}.weight"], out[f"local_conv{i}.bias"] = w[sl], b[sl]
    return out


def cswin_state(dim: int, heads: int, last: bool = False) -> dict[str, torch.Tensor]:
    layer = zoo.cswin(2, last=last).build(dim, heads)
    out = {k: v for k, v in layer.state_dict().items() if k.split(".")[0] in ("qkv", "proj")}
    w, b = layer.pe[0].conv.weight, layer.pe[0].conv.bias
    if last:
        return out | {"attns.0.get_v.weight": w, "attns.0.get_v.bias": b}
    for i, sl in enumerate((slice(0, dim // 2), slice(dim // 2, None))):
        out |= {f"attns.{i}.get_v.weight": w[sl], f"attns.{i}.get_v.bias": b[sl]}
    return out


def swin_state(window: int, heads: int, dim: int = 32) -> dict[str, torch.Tensor]:
    return {
        "qkv.weight": torch.randn(3 * dim, dim),
        "qkv.bias": torch.randn(3 * dim),
        "proj.weight": torch.randn(dim, dim),
        "proj.bias": torch.randn(dim),
        "relative_position_bias_table": torch.randn((2 * window - 1) ** 2, heads),
    }


# --- Shunted -------------------------------------------------------------------------------


def test_shunted_refuses_a_four_head_block():
    src = Source(shunted_state(4, heads=4), num_heads=4, sr_ratio=4)
    with pytest.raises(AttnblocksError, match=r"num_heads=4.*has num_heads=2"):
        load_shunted(zoo.shunted(4).build(64, 2), src)


def test_shunted_matching_block_loads_exactly():
    state = shunted_state(4, heads=2)
    layer = load_shunted(zoo.shunted(4).build(64, 2), Source(state, num_heads=2, sr_ratio=4))
    assert torch.equal(layer.runners[1].sr.weight, state["sr2.weight"])
    assert torch.equal(layer.pe[0].conv.weight[32:], state["local_conv2.weight"])


def test_shunted_refuses_other_sr_kernels():
    with pytest.raises(AttnblocksError, match=r"reduction ratios.*\(8, 4\).*\(4, 2\)"):
        load_shunted(zoo.shunted(4).build(64, 2), shunted_state(8))


def test_shunted_refuses_other_sr_ratio_attribute():
    with pytest.raises(AttnblocksError, match="sr_ratio=8"):
        load_shunted(zoo.shunted(4).build(64, 2), Source(shunted_state(4), sr_ratio=8))


def test_shunted_whole_block_points_to_the_attention():
    block = {f"attn.{k}": v for k, v in shunted_state(4).items()}
    block |= {"norm1.weight": torch.ones(64), "mlp.fc1.weight": torch.zeros(8, 64)}
    with pytest.raises(AttnblocksError, match=r"pass the attention submodule \(`block.attn`"):
        load_shunted(zoo.shunted(4).build(64, 2), block)


# --- CSWin ---------------------------------------------------------------------------------


def test_cswin_refuses_a_four_head_block():
    src = Source(cswin_state(64, 4), num_heads=4, split_size=2)
    with pytest.raises(AttnblocksError, match=r"num_heads=4.*has num_heads=2"):
        load_cswin(zoo.cswin(2).build(64, 2), src)


def test_cswin_refuses_another_stripe_width():
    src = Source(cswin_state(64, 2), num_heads=2, split_size=2)
    with pytest.raises(AttnblocksError, match=r"split_size=2.*has split_size=7"):
        load_cswin(zoo.cswin(7).build(64, 2), src)


def test_cswin_matching_block_loads():
    state = cswin_state(64, 2)
    layer = load_cswin(zoo.cswin(2).build(64, 2), Source(state, num_heads=2, split_size=2))
    assert torch.equal(layer.qkv.weight, state["qkv.weight"])


@pytest.mark.parametrize("last", [False, True])
def test_cswin_refuses_the_other_branch_form(last):
    target = zoo.cswin(2, last=not last).build(64, 2)
    with pytest.raises(AttnblocksError, match="branch"):
        load_cswin(target, cswin_state(64, 2, last=last))


def test_cswin_whole_block_state_is_refused():
    state = cswin_state(64, 2) | {"norm1.weight": torch.ones(64), "mlp.fc1.weight": torch.ones(1)}
    with pytest.raises(AttnblocksError, match="whole CSWin block"):
        load_cswin(zoo.cswin(2).build(64, 2), state)


# --- Swin ----------------------------------------------------------------------------------


def test_swin_table_heads_are_checked():
    with pytest.raises(AttnblocksError, match=r"table's columns\)=4.*has heads.*=2"):
        load_swin(zoo.swin(7).build(32, 2), swin_state(7, heads=4))


def test_swin_larger_window_is_refused():
    with pytest.raises(AttnblocksError, match=r"9x9 window.*7x7"):
        load_swin(zoo.swin(7).build(32, 2), swin_state(9, heads=2))


def test_swin_module_window_and_heads_are_read():
    src = Source(swin_state(7, heads=2), num_heads=4, window_size=(7, 7))
    with pytest.raises(AttnblocksError, match="num_heads=4"):
        load_swin(zoo.swin(7).build(32, 2), src)
    ok = Source(swin_state(5, heads=2), num_heads=2, window_size=(5, 5))
    load_swin(zoo.swin(7).build(32, 2), ok)


def test_swin_whole_block_is_a_clear_error_not_a_key_error():
    block = {f"attn.{k}": v for k, v in swin_state(7, 2).items()} | {"norm1.weight": torch.ones(32)}
    with pytest.raises(AttnblocksError, match=r"whole block.*`block.attn`"):
        load_swin(zoo.swin(7).build(32, 2), block)


def test_swin_without_a_table_names_the_keys():
    with pytest.raises(AttnblocksError, match="no relative_position_bias_table"):
        load_swin(zoo.swin(7).build(32, 2), {"qkv.weight": torch.zeros(96, 32)})


# --- PVTv2, DilateFormer -------------------------------------------------------------------


def test_pvtv2_module_heads_and_ratio_are_checked():
    state = {
        k.removeprefix("runners.0."): v for k, v in zoo.pvtv2(2).build(16, 2).state_dict().items()
    }
    with pytest.raises(AttnblocksError, match="num_heads=4"):
        load_pvtv2(zoo.pvtv2(2).build(16, 2), Source(state, num_heads=4))
    with pytest.raises(AttnblocksError, match="sr_ratio=4"):
        load_pvtv2(zoo.pvtv2(2).build(16, 2), Source(state, num_heads=2, sr_ratio=4))
    load_pvtv2(zoo.pvtv2(2).build(16, 2), Source(state, num_heads=2, sr_ratio=2))


def test_dilateformer_module_settings_are_checked():
    state = {
        "qkv.weight": torch.zeros(72, 24, 1, 1),
        "qkv.bias": torch.zeros(72),
        "proj.weight": torch.eye(24),
        "proj.bias": torch.zeros(24),
    }
    layer = zoo.dilateformer().build(24, 3)
    with pytest.raises(AttnblocksError, match="num_heads=6"):
        load_dilateformer(layer, Source(state, num_heads=6, kernel_size=3, dilation=[1, 2, 3]))
    with pytest.raises(AttnblocksError, match=r"dilation=\(1, 2\)"):
        load_dilateformer(layer, Source(state, num_heads=3, kernel_size=3, dilation=[1, 2]))
    with pytest.raises(AttnblocksError, match="kernel_size=5"):
        load_dilateformer(layer, Source(state, num_heads=3, kernel_size=5, dilation=[1, 2, 3]))
    load_dilateformer(layer, Source(state, num_heads=3, kernel_size=3, dilation=[1, 2, 3]))
