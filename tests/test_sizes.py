"""Any map size for every partition: tiny maps (1x1, 1xW, Hx1), one module across successive
sizes, per-size caches, and a state dict with nothing size-specific in it.
"""

import dataclasses

import pytest
import torch

from attnblocks import Attention, Global, Grid, LePE, RelPosBias, Split, Stripe, Window, zoo
from attnblocks.lowering import rect_layout
from attnblocks.masks import additive_mask
from helpers import randomize_

SPECS = {
    "swin": zoo.swin(3, shift=1),
    "swin-noclamp": zoo.swin(3, shift=1, clamp=None),
    "cswin": zoo.cswin(2),
    "cswin-last": zoo.cswin(2, last=True),
    "grid": Attention(partition=Grid(2), pe=RelPosBias()),
    "global": Attention(partition=Global(), pe=(LePE(), RelPosBias(size=9))),
    "hybrid": Attention(
        heads=Split(Window((2, 3), shift=(1, 2)), Stripe(2, axis="h"), Grid(3)),
        pe=(LePE(), RelPosBias(size=9)),
    ),
}
MAPS = [(1, 1), (1, 7), (6, 1), (2, 2), (9, 5), (4, 8)]


def _dense_twin(layer):
    spec = dataclasses.replace(layer.spec, backend="dense")
    twin = spec.build(layer.dim, layer.num_heads).double()
    twin.load_state_dict(layer.state_dict())
    return twin


@pytest.mark.parametrize("name", list(SPECS))
def test_one_module_across_sizes_equals_the_oracle(name):
    layer = randomize_(SPECS[name].build(12, 6 if name == "hybrid" else 2).double())
    dense = _dense_twin(layer)
    keys = {k: v.shape for k, v in layer.state_dict().items()}
    for H, W in MAPS + MAPS[:2]:  # back to sizes seen before: served from the caches
        x = torch.randn(1, H, W, 12, dtype=torch.float64)
        torch.testing.assert_close(layer(x), dense(x), atol=1e-10, rtol=1e-9, msg=f"{H}x{W}")
    assert {k: v.shape for k, v in layer.state_dict().items()} == keys
    assert not list(layer.buffers())  # masks and indices are derived per size, never stored


def test_masks_and_layouts_are_cached_per_size():
    layer = zoo.swin(3, shift=1, clamp=None).build(4, 1)
    additive_mask.cache_clear()
    rect_layout.cache_clear()
    for _ in range(3):
        layer(torch.randn(1, 5, 4, 4))
    assert additive_mask.cache_info().misses == 1 and additive_mask.cache_info().hits >= 2
    layer(torch.randn(1, 4, 5, 4))
    assert additive_mask.cache_info().misses == 2
    assert rect_layout.cache_info().currsize == 2
