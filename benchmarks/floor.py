"""Distance to the floor: the attention core against one fused SDPA call on pre-laid-out tokens.

The *core* is what a layer does besides its qkv and output projections (cut into groups,
bias/mask, attention, encoders' value terms, back to the map); the *floor* is one
``scaled_dot_product_attention`` call on q, k, v already laid out as ``(groups * B * nW, h,
T, d)``, no mask: the fused kernel on the same token sets with nothing to lay out or mask (the
per-head matmuls the eager backend runs on short windows can come in under it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attnblocks import AttentionLayer, rect_layout
from attnblocks.families.rect.eager import is_identity_order, window_order
from attnblocks.runners import RunContext

__all__ = ["core_step", "floor_step"]


def core_step(layer: AttentionLayer, x: torch.Tensor) -> Callable[[], None]:
    """What the layer does besides its projections, ``x: (B, H, W, C)``, no grad.

    Layers that put ``x`` in each group's window order before the qkv projection (groups of
    unpadded windows, ``AttentionLayer._forward_ordered``): per group the gather of ``x`` into
    window order, the attention on its projected tokens (precomputed) and the gather of the
    output back, and the concatenation of the groups. Others: the group runners on the qkv
    projected on the map (precomputed).
    """
    layer.eval()
    B, H, W, C = x.shape
    N = H * W
    layouts = [r.ordered_layout((H, W), layer.spec.pad, B) for r in layer.runners]
    ctx = RunContext(x, layer.scale, layer.pe, 0.0, layer.spec.pad, None)
    if layer._orderable and all(lay is not None for lay in layouts):
        tokens = x.reshape(B, N, C)
        single = len(layer.groups) == 1
        plans = []
        with torch.no_grad():
            for g, lay in zip(layer.groups, layouts):
                order = None if is_identity_order(lay) else window_order(lay)
                t = tokens if order is None else tokens.index_select(1, order[0])
                qkv = layer.qkv(t) if single else F.linear(t, *layer._group_params()[g.index])
                plans.append((lay, order, qkv.view(B, N, 3, g.dim)))

        def run_ordered() -> None:
            with torch.no_grad():
                outs = []
                for (lay, order, qkv), runner in zip(plans, layer.runners):
                    if order is not None:
                        tokens.index_select(1, order[0])
                    o = runner.forward_ordered(qkv, lay, ctx)
                    outs.append(o if order is None else o.index_select(1, order[1]))
                if not single:
                    torch.cat(outs, dim=-1)

        return run_ordered
    with torch.no_grad():
        qkv = layer.qkv(x).view(B, H, W, 3, C)

    def run() -> None:
        with torch.no_grad():
            for g, r in zip(layer.groups, layer.runners):
                r(qkv[..., g.channels[0] : g.channels[1]], ctx)

    return run


def floor_step(layer: AttentionLayer, x: torch.Tensor) -> Callable[[], None]:
    """One SDPA call per distinct group shape (one in all for the cases here), no grad."""
    B, H, W, _ = x.shape
    shapes: dict[tuple[int, int, int], int] = {}
    for g in layer.groups:
        lay = rect_layout(g.partition, H, W, pad=layer.spec.pad)
        key = (g.num_heads, lay.tokens, g.dim // g.num_heads)
        shapes[key] = shapes.get(key, 0) + B * lay.num_windows
    qkvs = [
        [torch.randn(n, h, T, d) for _ in range(3)] for (h, T, d), n in shapes.items()
    ]  # fmt: skip

    def run() -> None:
        with torch.no_grad():
            for q, k, v in qkvs:
                F.scaled_dot_product_attention(q, k, v, scale=layer.scale)

    return run
