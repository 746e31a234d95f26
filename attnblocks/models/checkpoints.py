"""Checkpoint converters: timm's / the Swin authors' and the CSWin authors' model layouts.

Each ``load_*`` function maps a full-model state dict onto a :class:`~attnblocks.models.Backbone`
built from the matching table and loads it strictly: missing or unexpected keys and shape
mismatches raise an :class:`~attnblocks.AttnblocksError` naming the keys.

Swin (timm 1.0, ``swin_*_patch4_window7_224``; names read from timm's ``swin_transformer.py``):
``patch_embed.{proj,norm}``, ``layers.{i}.downsample.{norm,reduction}`` (``i >= 1``: timm
downsamples at the start of a stage), ``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head.fc``. The
authors' own checkpoints downsample at the end of a stage (``layers.{i}.downsample`` for
``i <= 2``) and name the classifier ``head``; they are recognised by
``layers.0.downsample.reduction.weight`` and shifted, as timm's ``checkpoint_filter_fn`` does.

CSWin (the authors' ``CSWinTransformer``). From the reference facts: the block-level keys
``qkv``, ``proj``, ``attns.{0,1}.get_v`` (one ``attns.0.get_v`` of C channels in the last
stage). Inferred from our reading of the published model structure (not checked against a
released checkpoint here): the stem ``stage1_conv_embed.0`` (Conv2d 7x7 / 4, padding 2) and
``stage1_conv_embed.2`` (LayerNorm; index 1 is a parameter-free rearrange), stages
``stage{1..4}.{j}`` with block keys ``norm1``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, the
downsamplers ``merge{1..3}.{conv,norm}`` between stage ``i`` and ``i + 1``, the final
``norm`` and the classifier ``head`` (a plain Linear).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from .._errors import AttnblocksError
from ..convert import _strict_load, embed_rel_table
from .backbone import Backbone

__all__ = [
    "convert_cswin",
    "convert_timm_swin",
    "load_cswin_checkpoint",
    "load_timm_swin_checkpoint",
]

_SWIN_SKIP = ("relative_position_index", "attn_mask")


def _load_strict(model: Backbone, mapped: dict[str, torch.Tensor], source: str) -> Backbone:
    return _strict_load(model, mapped, source, type(model).__name__, noun="model", limit=8)


def _unwrap(state: Mapping, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The weights inside a training checkpoint (the first of ``keys`` present), else itself."""
    for k in keys:
        if isinstance(state.get(k), Mapping):
            return dict(state[k])
    return dict(state)


def _state_and_windows(source) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """A state dict, and the window of every bias table when ``source`` is a timm module."""
    if isinstance(source, nn.Module):
        windows = {
            f"{name}.relative_position_bias_table": tuple(m.window_size)
            for name, m in source.named_modules()
            if hasattr(m, "relative_position_bias_table")
        }
        return dict(source.state_dict()), windows
    if isinstance(source, Mapping):
        return _unwrap(source, ("model", "state_dict")), {}
    raise TypeError(
        f"Expected a state dict or a timm SwinTransformer, got {type(source).__name__}."
    )


def _square_window(key: str, rows: int) -> tuple[int, int]:
    side = round(rows**0.5)
    if side * side != rows or side % 2 == 0:
        raise AttnblocksError(
            f"{key} has {rows} rows, not (2m-1)^2 for a square window: pass the timm model "
            f"itself, whose blocks know their (clamped) window sizes."
        )
    return ((side + 1) // 2,) * 2


def _next_stage(m: re.Match) -> str:
    return f"layers.{int(m[1]) + 1}.downsample"


def convert_timm_swin(source, model: Backbone) -> dict[str, torch.Tensor]:
    """Map a Swin checkpoint (timm or the authors' layout) onto ``model``'s key names.

    Args:
        source: a timm ``SwinTransformer`` or a state dict (``{"model": ...}`` and
            ``{"state_dict": ...}`` are unwrapped).
        model: the target, a Swin table (e.g. ``create("swin_tiny")``); its bias tables set
            the size that smaller (clamped) tables are embedded in.

    Returns:
        The state dict for ``model.load_state_dict``.
    """
    state, windows = _state_and_windows(source)
    authors = "layers.0.downsample.reduction.weight" in state
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.split(".")[-1] in _SWIN_SKIP:
            continue
        k = key
        if authors:
            k = re.sub(r"^layers\.(\d+)\.downsample", _next_stage, k)
            k = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k)
        k = re.sub(r"^patch_embed\.", "stem.", k)
        k = re.sub(r"^layers\.(\d+)\.", r"stages.\1.", k)
        k = re.sub(r"^head\.fc\.", "head.", k)
        if k.endswith("attn.relative_position_bias_table"):
            k = k.replace("relative_position_bias_table", "pe.0.tables.0")
            if k not in own:
                raise AttnblocksError(f"Swin checkpoint: {key} has no place in the model ({k}).")
            size = model.get_submodule(k[: -len(".tables.0")]).sizes[0]
            win = windows.get(key) or _square_window(key, value.shape[0])
            rows = (2 * win[0] - 1) * (2 * win[1] - 1)
            if rows != value.shape[0]:
                raise AttnblocksError(
                    f"{key} has {value.shape[0]} rows, a {win[0]}x{win[1]} window needs {rows}."
                )
            value = embed_rel_table(value, win, size, into=own[k])
        out[k] = value
    return out


def load_timm_swin_checkpoint(model: Backbone, source) -> Backbone:
    """Load a Swin checkpoint (see :func:`convert_timm_swin`) into ``model``, strictly.

    Example:
        >>> from attnblocks.models import create
        >>> model = create("swin_tiny", num_classes=10, device="meta")
        >>> load_timm_swin_checkpoint(model, {"patch_embed.proj.weight": torch.zeros(1)})
        Traceback (most recent call last):
        ...
        attnblocks._errors.AttnblocksError: Swin checkpoint -> Backbone: missing keys [...
    """
    return _load_strict(model, convert_timm_swin(source, model), "Swin checkpoint")


def convert_cswin(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the CSWin authors' full-model state dict onto :class:`Backbone` key names.

    The two LePE convs of a block (``attns.0.get_v``, vertical branch, then ``attns.1``)
    become one depthwise conv over all channels, in that order. A training checkpoint is
    unwrapped: ``state_dict_ema`` (the authors evaluate the EMA weights), ``state_dict`` or
    ``model``, in that order of preference.
    """
    state = _unwrap(state, ("state_dict_ema", "state_dict", "model"))
    out: dict[str, torch.Tensor] = {}
    lepe: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        k = key
        k = re.sub(r"^stage1_conv_embed\.0\.", "stem.proj.", k)
        k = re.sub(r"^stage1_conv_embed\.2\.", "stem.norm.", k)
        k = re.sub(r"^merge(\d+)\.", lambda m: f"stages.{int(m[1])}.downsample.", k)
        m = re.match(r"^stage(\d+)\.(\d+)\.(.*)$", k)
        if m:
            prefix = f"stages.{int(m[1]) - 1}.blocks.{m[2]}."
            rest = m[3]
            lm = re.match(r"^attns\.(\d+)\.get_v\.(weight|bias)$", rest)
            if lm:
                lepe.setdefault(f"{prefix}attn.pe.0.conv.{lm[2]}", {})[int(lm[1])] = value
                continue
            rest = re.sub(r"^(qkv|proj)\.", r"attn.\1.", rest)
            k = prefix + rest
        out[k] = value
    for k, parts in lepe.items():
        out[k] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    return out


def load_cswin_checkpoint(model: Backbone, state: Mapping[str, torch.Tensor]) -> Backbone:
    """Load the CSWin authors' checkpoint (see :func:`convert_cswin`) into ``model``, strictly.

    Example:
        >>> from attnblocks.models import create
        >>> model = create("cswin_tiny", num_classes=10, device="meta")
        >>> load_cswin_checkpoint(model, {"head.weight": torch.zeros(1)})
        Traceback (most recent call last):
        ...
        attnblocks._errors.AttnblocksError: CSWin checkpoint -> Backbone: missing keys [...
    """
    return _load_strict(model, convert_cswin(state), "CSWin checkpoint")
