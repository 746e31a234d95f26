"""The cost model against torch's FlopCounterMode and the dense oracle's key counts."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from attnblocks import (
    CPE,
    Attention,
    AttnblocksError,
    AxialRoPE,
    ContinuousPosBias,
    Downsample,
    Global,
    LePE,
    LocalConv,
    Partition,
    RelPosBias,
    Split,
    Stripe,
    Window,
    dense_mask,
)
from attnblocks.cost import cost
from attnblocks.encoders import EncoderModule
from attnblocks.pe import PositionalEncoder
from strategies import concrete_partitions

# torch 2.14's counter has no formula for the CPU flash kernel that SDPA dispatches to without a
# mask; it is the same computation as the CUDA flash kernel, so give it the same formula.
aten = torch.ops.aten
if aten._scaled_dot_product_flash_attention_for_cpu.default not in (
    torch.utils.flop_counter.flop_registry
):

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_flash_flop(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)


@st.composite
def specs(draw, backend):
    parts = draw(st.lists(concrete_partitions(max_size=5), min_size=1, max_size=2))
    pe = draw(
        st.sampled_from(
            [None, LePE(), RelPosBias(size=9), (LePE(), RelPosBias(size=9)), CPE(), AxialRoPE()]
        )
    )
    pads = ["mask"] if backend == "dense" else ["mask", "zeros", "timm", "torchvision"]
    heads = Split(*parts) if len(parts) > 1 else None
    return Attention(
        partition=None if heads else parts[0],
        heads=heads,
        pe=pe,
        pad=draw(st.sampled_from(pads)),
        backend=backend,
    )


def _counted_macs(layer, x):
    with FlopCounterMode(display=False) as counter:
        layer(x)
    return counter.get_total_flops() / 2  # the counter counts a multiply-add as 2 flops


@settings(max_examples=12)
@given(
    spec=st.one_of(specs("eager"), specs("dense")),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    B=st.integers(1, 2),
)
def test_macs_equal_the_flop_counter(spec, H, W, B):
    """Exact: both count the same matmuls and convs (tolerance 0)."""
    n = spec.heads.count if spec.heads else 1
    layer = spec.build(8 * n, 2 * n)
    x = torch.randn(B, H, W, 8 * n)
    c = cost(layer, (H, W), batch=B)
    assert c.macs == _counted_macs(layer, x)
    assert c.macs == sum(c.parts.values())


@pytest.mark.parametrize(
    ("shape", "spec"),
    [
        ((5, 6, 7), Attention(partition=Window((2, 3, 3)), pe=LePE(ndim=3))),
        ((5, 6, 7), Attention(partition=Window((2, 3, 3)), pe=LePE(ndim=3), backend="dense")),
        ((9,), Attention(partition=Window((4,)), pe=LePE(ndim=1))),
        ((9,), Attention(partition=Window((4,)), pe=LePE(ndim=1), backend="dense")),
        ((5, 6, 7), Attention(partition=Window((2, 3, 3)), pe=CPE(ndim=3))),
        ((4, 5, 6), Attention(partition=Downsample(2, ndim=3), pe=LocalConv(ndim=3))),
        ((4, 5, 3), Attention(partition=Window((1, 5, 3)), pe=AxialRoPE())),
        ((6, 7), Attention(partition=Window(3, shift=1), pe=ContinuousPosBias(hidden=16))),
        ((3, 5, 4), Attention(partition=Window((2, 3, 3)), pe=ContinuousPosBias(ndim=3))),
        ((6, 7), Attention(heads=Split(Window(3), Window(2)), pe=ContinuousPosBias(hidden=8))),
        # frames one token thin: LePE runs a 1 x k conv there, k taps and not k * k
        ((1, 1), Attention(partition=Global(), pe=LePE())),
        ((2, 1), Attention(partition=Stripe(2, axis="h"), pe=LePE())),
        ((3, 3), Attention(partition=Window(1), pe=LocalConv())),
        ((6, 7), Attention(heads=Split(Window(3), Stripe(1, axis="h")), pe=(CPE(), LePE()))),
    ],
    ids=lambda v: repr(v) if isinstance(v, Attention) else "x".join(map(str, v)),
)
def test_macs_of_encoders_at_any_rank_equal_the_flop_counter(shape, spec):
    """Exact: LePE / CPE / LocalConv count ``k^n`` taps on an ``n``-D map, LePE ``k`` on a
    frame one token thin; AxialRoPE's rotations are elementwise (no MACs); ContinuousPosBias
    runs its MLP over each group's ``prod(2w - 1)`` offsets, for the group's heads."""
    layer = spec.build(12, 2)  # head dim 6: AxialRoPE's three axes
    c = cost(layer, shape, batch=2)
    assert c.macs == _counted_macs(layer, torch.randn(2, *shape, 12))


@given(part=concrete_partitions(max_size=5), H=st.integers(1, 9), W=st.integers(1, 9))
def test_keys_per_query_equal_the_oracle(part, H, W):
    keys = dense_mask(part, H, W).sum(-1).double()
    for backend in ("eager", "dense"):
        spec = Attention(partition=part, backend=backend)
        mean, most = cost(spec, (H, W), dim=4, num_heads=2).keys_per_query
        assert mean == pytest.approx(keys.mean().item(), rel=1e-12)
        assert most == keys.max().item()


def test_dense_memory_grows_as_n_squared_and_windows_do_not():
    swin = Attention(partition=Window(7))
    dense = dataclasses.replace(swin, backend="dense")
    small = cost(swin, (14, 14), dim=8, num_heads=2).attn_bytes
    big = cost(swin, (28, 28), dim=8, num_heads=2).attn_bytes
    assert big == 4 * small  # four times the windows
    dsmall = cost(dense, (14, 14), dim=8, num_heads=2).attn_bytes
    assert cost(dense, (28, 28), dim=8, num_heads=2).attn_bytes > 15 * dsmall
    assert cost(swin, (14, 14), dim=8, num_heads=2, dtype=torch.float16).attn_bytes == small // 2


# --- errors -----------------------------------------------------------------------------------


def test_spec_without_dims_raises():
    with pytest.raises(AttnblocksError, match="give both dim and num_heads"):
        cost(Attention(), (4, 4))


def test_wrong_object_raises():
    with pytest.raises(TypeError, match="cost expects an Attention spec or a built layer, got"):
        cost(torch.nn.Linear(2, 2), (4, 4))


@dataclasses.dataclass(frozen=True, repr=False)
class _Odd(Partition):
    pass


@dataclasses.dataclass(frozen=True, repr=False)
class _Enc(PositionalEncoder):
    def build(self, groups, dim, num_heads, device=None, dtype=None):
        return EncoderModule()


def test_unregistered_partition_or_encoder_raises():
    with pytest.raises(AttnblocksError, match=r"no cost model for _Odd\(\) on backend='eager'"):
        cost(Attention(partition=_Odd()), (4, 4), dim=4, num_heads=1)
    with pytest.raises(AttnblocksError, match=r"no cost model for _Enc\(\) .register_encoder_cost"):
        cost(Attention(pe=_Enc()), (4, 4), dim=4, num_heads=1)
