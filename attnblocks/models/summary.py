"""Parameter and multiply-accumulate counts of a model, measured by running it once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .._errors import AttnblocksError
from .._spec import pair
from ..nn import AttentionLayer
from ..partition import Dilated

__all__ = ["ModelSummary", "summary"]


def _sdpa_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``softmax(q k^T) v`` (two matmuls), for the fused CPU kernel."""
    b, h, sq, d = q_shape
    sk, dv = k_shape[2], v_shape[3]
    return 2 * b * h * sq * sk * d + 2 * b * h * sq * sk * dv


def _custom_flops() -> dict:
    # The CPU flash kernel of scaled_dot_product_attention is not in torch's flop registry
    # (on meta and CUDA it decomposes or is registered), so count it like the others.
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _sdpa_flops}


@dataclass(frozen=True)
class ModelSummary:
    """Parameter and MAC counts of one model at one input size.

    ``macs`` is FlopCounterMode's FLOPs (matmuls, convolutions and attention products) divided
    by 2, for one image; the sliding-window attentions (:class:`~attnblocks.Dilated`,
    :class:`~attnblocks.Neighborhood`) count the ``q k^T`` and ``attn v`` products of their
    ``kh x kw`` keys per query, ``2 * H * W * kh * kw * C`` per layer, as the authors' code is
    counted, whichever lowering runs (the counter sees none of the slices lowering's and more
    than these of the tiles lowering's).
    """

    params: int
    macs: int
    img_size: tuple[int, int]

    def __str__(self) -> str:
        h, w = self.img_size
        return f"{self.params / 1e6:.2f}M params, {self.macs / 1e9:.2f}G MACs at {h}x{w}"


def summary(model: nn.Module, img_size: int | tuple[int, int] = 224) -> ModelSummary:
    """Count a model's parameters and its MACs for one ``img_size`` image.

    The model runs once in eval mode, batch 1, on the device of its parameters: build it with
    ``device="meta"`` to count without computing.

    Example:
        >>> from attnblocks.models import create
        >>> s = summary(create("swin_tiny", device="meta"), 224)
        >>> s.params, round(s.macs / 1e9, 2)
        (28288354, 4.49)
    """
    size = pair("summary", "img_size", img_size)
    first = next(model.parameters(), None)
    if first is None:
        raise AttnblocksError(f"summary: {type(model).__name__} has no parameters.")
    in_chans = getattr(getattr(model, "spec", None), "in_chans", 3)
    x = torch.zeros(1, in_chans, *size, device=first.device, dtype=first.dtype)
    sliding = [0]

    def count_sliding(module: AttentionLayer, args: tuple) -> None:
        kh, kw = module.spec.partition.kernel_size
        B, H, W, C = args[0].shape
        sliding[0] += 2 * B * H * W * kh * kw * C

    layers = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, AttentionLayer) and isinstance(m.spec.partition, Dilated)
    }
    hooks = [m.register_forward_pre_hook(count_sliding) for m in layers.values()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_flops()) as fc:
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    # what the counter saw of the sliding layers' kernels (the tiles lowering's products over
    # its key regions) is replaced by the k x k products per query counted above
    root = type(model).__name__
    prefixes = tuple(f"{root}.{name}.runners." for name in layers)
    seen = (
        sum(
            sum(ops.values())
            for mod, ops in fc.get_flop_counts().items()
            if mod.startswith(prefixes) and mod.count(".") == prefixes[0].count(".")
        )
        if layers
        else 0
    )
    params = sum(p.numel() for p in model.parameters())
    return ModelSummary(params, (fc.get_total_flops() - seen) // 2 + sliding[0], size)
