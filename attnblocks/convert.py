"""Converters: the authors' (and timm's) state-dict layouts into attnblocks modules.

Each ``load_*`` function maps the authors' keys (see the reference facts) onto a built
:class:`~attnblocks.AttentionLayer` and loads them strictly: missing or unexpected keys and
shape mismatches raise an :class:`~attnblocks.AttnblocksError` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._errors import AttnblocksError, fmt_shape
from .encoders import CPEModule, LePEModule, RelPosBiasModule
from .nn import AttentionLayer

__all__ = [
    "embed_rel_table",
    "load_cswin",
    "load_dilateformer",
    "load_swin",
    "load_timm_swin",
]


def _find(layer: AttentionLayer, kind: type) -> tuple[int, object]:
    for i, m in enumerate(layer.pe):
        if isinstance(m, kind):
            return i, m
    raise AttnblocksError(f"{layer.spec!r} has no {kind.__name__[:-6]} encoder to load into.")


def _load(layer: AttentionLayer, mapped: dict[str, torch.Tensor], source: str) -> AttentionLayer:
    own = layer.state_dict()
    missing = sorted(set(own) - set(mapped))
    extra = sorted(set(mapped) - set(own))
    if missing or extra:
        raise AttnblocksError(
            f"{source} -> {layer.spec!r}: missing keys {missing}, unexpected keys {extra}."
        )
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise AttnblocksError(
                f"{source} -> {layer.spec!r}: {k} has shape {fmt_shape(v.shape)}, the module "
                f"expects {fmt_shape(own[k].shape)}."
            )
    layer.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()})
    return layer


def embed_rel_table(
    table: torch.Tensor,
    window: tuple[int, int],
    size: tuple[int, int],
    into: torch.Tensor | None = None,
) -> torch.Tensor:
    """Place a relative-position table made for ``window`` inside one made for ``size``.

    timm and the Swin authors size the table from the clamped window; attnblocks sizes it from
    the spec, so a table of a smaller window becomes the centre of the larger one (the offsets
    it never sees keep the values of ``into``, zeros by default).

    Shapes: ``table: ((2wh-1)(2ww-1), h) -> ((2Mh-1)(2Mw-1), h)``.
    """
    (wh, ww), (mh, mw) = window, size
    if wh > mh or ww > mw:
        raise AttnblocksError(f"embed_rel_table: a {wh}x{ww} table does not fit a {mh}x{mw} one.")
    out = torch.zeros((2 * mh - 1) * (2 * mw - 1), table.shape[1], dtype=table.dtype)
    if into is not None:
        out = into.detach().clone().to(table.dtype)
    out = out.view(2 * mh - 1, 2 * mw - 1, -1)
    out[mh - wh : mh + wh - 1, mw - ww : mw + ww - 1] = table.view(2 * wh - 1, 2 * ww - 1, -1)
    return out.view(-1, table.shape[1])


def load_swin(
    layer: AttentionLayer,
    state: Mapping[str, torch.Tensor],
    window: tuple[int, int] | None = None,
) -> AttentionLayer:
    """Load a Swin v1 window attention (``qkv.*``, ``proj.*``, ``relative_position_bias_table``).

    The table may be sized for a smaller (clamped) window than the layer's: give that
    ``window`` as ``(h, w)``, or leave it ``None`` for a square one inferred from the table.
    """
    i, rpb = _find(layer, RelPosBiasModule)
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    table = state["relative_position_bias_table"]
    size = rpb.sizes[0]  # type: ignore[attr-defined]
    if window is None:
        side = round(table.shape[0] ** 0.5)
        if side * side != table.shape[0] or side % 2 == 0:
            raise AttnblocksError(
                f"load_swin: relative_position_bias_table has {table.shape[0]} rows, not "
                f"(2m-1)^2: pass window=(h, w)."
            )
        window = ((side + 1) // 2,) * 2
    expected = (2 * window[0] - 1) * (2 * window[1] - 1)
    if table.shape[0] != expected:
        raise AttnblocksError(
            f"load_swin: relative_position_bias_table has {table.shape[0]} rows, a "
            f"{window[0]}x{window[1]} window needs {expected}."
        )
    mapped[f"pe.{i}.tables.0"] = embed_rel_table(
        table,
        tuple(window),
        size,
        into=rpb.tables[0],  # type: ignore[attr-defined]
    )
    return _load(layer, mapped, "Swin state dict")


def load_timm_swin(layer: AttentionLayer, module: torch.nn.Module) -> AttentionLayer:
    """Load timm's ``SwinTransformerBlock`` (or its ``WindowAttention``) attention weights."""
    attn = getattr(module, "attn", module)
    state = {
        k: v
        for k, v in attn.state_dict().items()
        if k.split(".")[0] in ("qkv", "proj", "relative_position_bias_table")
    }
    return load_swin(layer, state, window=tuple(attn.window_size))


def load_cswin(layer: AttentionLayer, state: Mapping[str, torch.Tensor]) -> AttentionLayer:
    """Load a CSWin block's attention (``qkv``, ``proj``, ``attns.{0,1}.get_v``).

    Two ``attns.*.get_v`` convs (vertical, then horizontal branch) or, for the last stage,
    one over all channels.
    """
    i, _ = _find(layer, LePEModule)
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    branches = sorted({k.split(".")[1] for k in state if k.startswith("attns.")})
    for part in ("weight", "bias"):
        mapped[f"pe.{i}.conv.{part}"] = torch.cat(
            [state[f"attns.{b}.get_v.{part}"] for b in branches], dim=0
        )
    return _load(layer, mapped, "CSWin state dict")


def load_dilateformer(layer: AttentionLayer, state: Mapping[str, torch.Tensor]) -> AttentionLayer:
    """Load DilateFormer's multi-scale dilated attention (``qkv``, ``proj``).

    ``qkv.weight: (3C, C, 1, 1)`` (a 1x1 conv) becomes the layer's ``Linear`` weight
    ``(3C, C)``; its ``[q | k | v]`` output channels, each cut into contiguous dilation groups,
    are already the layer's layout. If the layer has a :class:`~attnblocks.CPE`, the block's
    ``pos_embed.weight`` / ``pos_embed.bias`` go into it.

    Example:
        >>> import torch
        >>> from attnblocks.zoo import dilateformer
        >>> layer = dilateformer().build(24, 3)
        >>> state = {"qkv.weight": torch.zeros(72, 24, 1, 1), "qkv.bias": torch.zeros(72),
        ...          "proj.weight": torch.eye(24), "proj.bias": torch.zeros(24)}
        >>> load_dilateformer(layer, state) is layer
        True
    """
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    w = mapped.get("qkv.weight")
    if w is not None and w.dim() == 4:
        if tuple(w.shape[2:]) != (1, 1):
            raise AttnblocksError(
                f"load_dilateformer: qkv.weight must be a 1x1 conv (3C, C, 1, 1), got "
                f"{fmt_shape(w.shape)}."
            )
        mapped["qkv.weight"] = w.reshape(w.shape[0], w.shape[1])
    if any(isinstance(m, CPEModule) for m in layer.pe):
        i, _ = _find(layer, CPEModule)
        for part in ("weight", "bias"):
            if f"pos_embed.{part}" in state:
                mapped[f"pe.{i}.conv.{part}"] = state[f"pos_embed.{part}"]
    return _load(layer, mapped, "DilateFormer state dict")
