"""``Causal``: a key never after its query, in row-major order or along named axes, and its
intersection with built-in partitions, against masks written out pair by pair."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import Attention, AttnblocksError, Causal, Neighborhood, Split, Window
from attnblocks.masks import partition_oracle
from helpers import masked_reference, randomize_

AXES = [None, (0,), (1,), (0, 1)]


def _loops(H: int, W: int, axes) -> np.ndarray:
    """The causal mask by the definition, one pair at a time."""
    out = np.zeros((H * W, H * W), dtype=bool)
    for qi in range(H * W):
        for ki in range(H * W):
            q, k = divmod(qi, W), divmod(ki, W)
            if axes is None:
                out[qi, ki] = ki <= qi
            else:
                out[qi, ki] = all(k[a] <= q[a] for a in axes)
    return out


@given(st.integers(1, 7), st.integers(1, 7), st.sampled_from(AXES))
def test_oracle_is_the_definition(H, W, axes):
    assert (Causal(axes=axes).oracle(H, W) == _loops(H, W, axes)).all()


@pytest.mark.parametrize("backend", ["auto", "dense", "flex"])
@given(
    H=st.integers(3, 7),  # the neighbourhood must fit the map
    W=st.integers(3, 7),
    axes=st.sampled_from(AXES),
    batch=st.integers(0, 2),
    shift=st.booleans(),
)
def test_intersections_equal_the_written_out_mask(backend, H, W, axes, batch, shift):
    """A causal shifted window beside a causal neighbourhood (two head groups), float64."""
    window = Window(3, shift=1 if shift else 0)
    spec = Attention(
        heads=Split(window & Causal(axes=axes), Neighborhood(3) & Causal(axes=axes)),
        backend=backend,
    )
    layer = randomize_(spec.build(8, 2, dtype=torch.float64), seed=H * 8 + W)
    causal = torch.from_numpy(_loops(H, W, axes))
    masks = [
        torch.from_numpy(partition_oracle(window, H, W)) & causal,
        torch.from_numpy(partition_oracle(Neighborhood(3), H, W)) & causal,
    ]
    x = torch.randn(batch, H, W, 8, dtype=torch.float64)
    with torch.no_grad():
        got, want = layer(x), masked_reference(layer, x, masks)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_refusals():
    with pytest.raises(AttnblocksError, match="axes"):
        Causal(axes=(-1,))
    with pytest.raises(AttnblocksError, match="axes"):
        Causal(axes=())
    layer = Attention(partition=Causal(axes=(2,))).build(8, 2)
    with pytest.raises(AttnblocksError, match="axis 2"):
        layer(torch.randn(1, 4, 4, 8))
