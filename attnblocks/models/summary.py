"""Parameter and multiply-accumulate counts of a model, measured by running it once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .._errors import AttnblocksError, fmt_size
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
    by 2, for one image (or clip); the sliding-window attentions (:class:`~attnblocks.Dilated`,
    :class:`~attnblocks.Neighborhood`) count the ``q k^T`` and ``attn v`` products of their
    ``kh x kw`` keys per query, ``2 * H * W * kh * kw * C`` per layer, as the authors' code is
    counted, whichever lowering runs (the counter sees none of the slices lowering's and more
    than these of the tiles lowering's).
    """

    params: int
    macs: int
    img_size: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"{self.params / 1e6:.2f}M params, {self.macs / 1e9:.2f}G MACs at "
            f"{fmt_size(self.img_size)}"
        )


def summary(model: nn.Module, img_size: int | tuple[int, ...] | None = None) -> ModelSummary:
    """Count a model's parameters and its MACs for one ``img_size`` image or clip.

    The model runs once in eval mode, batch 1, on the device of its parameters: build it with
    ``device="meta"`` to count without computing.

    Args:
        model: a :class:`~attnblocks.models.Backbone` (or any module taking ``(1, 3, *size)``).
        img_size: ``H`` or ``(H, W)`` for an image model, 224 by default; ``(T, H, W)`` for a
            video model (its stem's ``ndim`` is 3), by default its ``pretrained_cfg``'s clip.

    Example:
        >>> from attnblocks.models import create
        >>> s = summary(create("swin_tiny", device="meta"), 224)
        >>> s.params, round(s.macs / 1e9, 2)
        (28288354, 4.49)
        >>> str(summary(create("video_swin_t", device="meta"), (16, 224, 224)))
        '28.16M params, 43.88G MACs at 16x224x224'
    """
    first = next(model.parameters(), None)
    if first is None:
        raise AttnblocksError(f"summary: {type(model).__name__} has no parameters.")
    spec = getattr(model, "spec", None)
    size = _input_size(model, getattr(getattr(spec, "stem", None), "ndim", 2), img_size)
    in_chans = getattr(spec, "in_chans", 3)
    x = torch.zeros(1, in_chans, *size, device=first.device, dtype=first.dtype)
    sliding = [0]

    def count_sliding(module: AttentionLayer, args: tuple) -> None:
        rank = args[0].dim() - 2
        k = module.spec.partition.kernel  # an int holds on every axis
        kernel = k if isinstance(k, tuple) else (k,) * rank
        sliding[0] += 2 * args[0][..., 0].numel() * math.prod(kernel) * args[0].shape[-1]

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


def _input_size(model: nn.Module, rank: int, img_size) -> tuple[int, ...]:
    """The map size summary runs at: a pair for images, ``(T, H, W)`` for clips."""
    if rank == 2:
        return pair("summary", "img_size", 224 if img_size is None else img_size)
    if img_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if "input_size" not in cfg:
            raise AttnblocksError(
                f"summary: {type(model).__name__} takes {rank}-D inputs and has no "
                f"pretrained_cfg input_size; give img_size as a {rank}-tuple, e.g. "
                f"(32, 224, 224)."
            )
        return tuple(cfg["input_size"][1:])
    if not (isinstance(img_size, (tuple, list)) and len(img_size) == rank):
        raise AttnblocksError(
            f"summary: {type(model).__name__} takes {rank}-D inputs, so img_size must be a "
            f"{rank}-tuple (T, H, W), got img_size={img_size!r}."
        )
    return tuple(pair("summary", "img_size", n)[0] for n in img_size)
