"""Checkpoint loading: the authors' and timm's released model layouts into a Backbone.

:func:`load_checkpoint` is the entry point: a file (``.pth``/``.pt``/``.bin``, read with
``torch.load(weights_only=True)``, or ``.safetensors``) or a state dict, unwrapped
(``model``, ``state_dict``, ``state_dict_ema``, ``model_ema``, ``module.`` prefixes), its layout
detected (:func:`detect_layout`) and mapped onto the model's key names, then loaded strictly:
missing or unexpected keys and shape mismatches raise an :class:`~attnblocks.AttnblocksError`
naming the layout and the keys. Each block's attention goes through its converter in
:mod:`attnblocks.convert`, so a checkpoint of another configuration is refused there.

Layouts (key names from the authors' released model files, ``golden/models/*_tiny_keys.txt``):
DilateFormer's ``patch_embed.proj.{0..9}``, ``stages.{i}.blocks.{j}.{pos_embed, norm1,
attn.{qkv, proj}, norm2, mlp}``, ``stages.{i}.downsample.proj.{0,1}`` (end of stages 1-3);
Shunted's ``patch_embed1.{conv.*, norm}``, ``patch_embed{2..4}.{proj, norm}``,
``block{i}.{j}.*`` (the MLP's conv ``mlp.dwconv.dwconv``), ``norm{i}``; PVTv2's (the same,
stem ``patch_embed1.{proj, norm}``), and timm's PVTv2 (:func:`convert_timm_pvtv2`).

Swin (timm 1.0, ``swin_*_patch4_window7_224``; names read from timm's ``swin_transformer.py``):
``patch_embed.{proj,norm}``, ``layers.{i}.downsample.{norm,reduction}`` (``i >= 1``: timm
downsamples at the start of a stage), ``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head.fc``. The
authors' own checkpoints downsample at the end of a stage (``layers.{i}.downsample`` for
``i <= 2``) and name the classifier ``head``; they are recognised by
``layers.0.downsample.reduction.weight`` and shifted, as timm's ``checkpoint_filter_fn`` does.

Video Swin (torchvision's ``SwinTransformer3d``, ``swin3d_t``; names read from torchvision's
``video/swin_transformer.py``): ``patch_embed.{proj,norm}``, ``features.{2i}.{j}.{norm1,
attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.0, mlp.3}`` (the blocks of
stage ``i``), ``features.{2i+1}.{norm,reduction}`` (the merge after stage ``i``), ``norm``,
``head`` (:func:`convert_torchvision_video_swin`).

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

import os
import re
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._errors import AttnblocksError
from .layers import (
    _strict_load,
    embed_rel_table,
    load_dilateformer,
    load_pvtv2,
    load_shunted,
    load_swinv2,
    map_attention,
)

if TYPE_CHECKING:
    from ..models.backbone import Backbone

__all__ = [
    "LAYOUTS",
    "convert_checkpoint",
    "convert_cswin",
    "convert_dilateformer",
    "convert_pvtv2",
    "convert_shunted",
    "convert_swinv2",
    "convert_timm_pvtv2",
    "convert_timm_swin",
    "convert_torchvision_video_swin",
    "detect_layout",
    "load_checkpoint",
    "load_cswin_checkpoint",
    "load_timm_pvtv2_checkpoint",
    "load_timm_swin_checkpoint",
    "load_torchvision_video_swin_checkpoint",
    "read_checkpoint",
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


def _state_of(source, fn: str, model: str) -> dict[str, torch.Tensor]:
    """The state dict of a model, or the weights of a (training) checkpoint."""
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return _unwrap(source, ("model", "state_dict"))
    raise TypeError(f"{fn}: expected a state dict or {model}, got {type(source).__name__}.")


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


def convert_timm_swin(
    source: nn.Module | Mapping[str, torch.Tensor], model: Backbone
) -> dict[str, torch.Tensor]:
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


_VIDEO_SWIN_BLOCK = {
    "mlp.0.": "mlp.fc1.",
    "mlp.3.": "mlp.fc2.",
    "attn.relative_position_bias_table": "attn.pe.0.tables.0",
}


def convert_torchvision_video_swin(
    source: nn.Module | Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Map torchvision's Video Swin (``SwinTransformer3d``, e.g. ``swin3d_t``) onto
    :class:`Backbone` key names (a ``create("video_swin_t")`` model, or any
    :func:`~attnblocks.models.video_swin.video_swin_spec` table of the same configuration).

    ``features.{2i}`` holds stage ``i``'s blocks and ``features.{2i+1}`` the merge that starts
    stage ``i + 1``; the MLP's ``mlp.0``/``mlp.3`` are ``mlp.fc1``/``mlp.fc2``; the bias table
    (always the full window's) is ``attn.pe.0.tables.0``; ``relative_position_index`` is
    derived and dropped.

    Args:
        source: a torchvision ``SwinTransformer3d`` or its state dict (``{"model": ...}`` and
            ``{"state_dict": ...}`` are unwrapped).

    Example:
        >>> state = {"features.1.reduction.weight": torch.zeros(2, 8),
        ...          "features.2.0.mlp.3.bias": torch.zeros(2)}
        >>> sorted(convert_torchvision_video_swin(state))
        ['stages.1.blocks.0.mlp.fc2.bias', 'stages.1.downsample.reduction.weight']
    """
    state = _state_of(source, "convert_torchvision_video_swin", "torchvision's SwinTransformer3d")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".relative_position_index"):
            continue
        k = re.sub(r"^patch_embed\.", "stem.", key)
        m = re.match(r"^features\.(\d+)\.(.*)$", k)
        if m:
            i, rest = int(m[1]), m[2]
            if i % 2:
                k = f"stages.{(i + 1) // 2}.downsample.{rest}"
            else:
                j, _, rest = rest.partition(".")
                for theirs, ours in _VIDEO_SWIN_BLOCK.items():
                    if rest.startswith(theirs):
                        rest = ours + rest[len(theirs) :]
                k = f"stages.{i // 2}.blocks.{j}.{rest}"
        out[k] = value
    return out


def load_torchvision_video_swin_checkpoint(model: Backbone, source) -> Backbone:
    """Load torchvision's Video Swin (see :func:`convert_torchvision_video_swin`) into
    ``model``, strictly (use :func:`load_checkpoint` for a head of another size).

    Example:
        >>> from attnblocks.models import create
        >>> model = create("video_swin_t", device="meta")
        >>> load_torchvision_video_swin_checkpoint(model, {"head.bias": torch.zeros(400)})
        Traceback (most recent call last):
        ...
        attnblocks._errors.AttnblocksError: Video Swin (torchvision's layout) checkpoint -> ...
    """
    mapped = convert_torchvision_video_swin(source)
    return _load_strict(model, mapped, f"{LAYOUTS['video_swin_torchvision']} checkpoint")


# ---------------------------------------------------------------------------------------------
# the authors' layouts of DilateFormer, Shunted and PVTv2


def _attention_groups(
    state: dict[str, torch.Tensor], pattern: str
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Split off each block's ``attn.*`` keys: ``({block prefix: {key: v}}, the rest)``."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    rest = {}
    rx = re.compile(pattern)
    for k, v in state.items():
        m = rx.match(k)
        if m:
            groups.setdefault(m[1], {})[m[2]] = v
        else:
            rest[k] = v
    return groups, rest


def _map_blocks(
    model: Backbone,
    groups: dict[str, dict[str, torch.Tensor]],
    rename: Callable[[str], str],
    loader: Callable,
    layout: str,
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for prefix, sub in groups.items():
        ours = rename(prefix) + ".attn"
        try:
            layer = model.get_submodule(ours)
        except AttributeError:
            raise AttnblocksError(
                f"{layout} checkpoint -> {_model_name(model)}: block {prefix} has no place in the "
                f"model (no {ours}); the model has {[len(s.blocks) for s in model.stages]} "
                f"blocks per stage."
            ) from None
        try:
            mapped = map_attention(loader, layer, sub)
        except AttnblocksError as e:
            raise AttnblocksError(
                f"{layout} checkpoint -> {_model_name(model)}, {prefix}.attn -> {ours}: {e}"
            ) from None
        out |= {f"{ours}.{k}": v for k, v in mapped.items()}
    return out


def convert_dilateformer(
    state: Mapping[str, torch.Tensor], model: Backbone
) -> dict[str, torch.Tensor]:
    """Map the DilateFormer authors' ``Dilateformer`` state dict onto ``model``'s key names."""
    layout = LAYOUTS["dilateformer"]
    groups, rest = _attention_groups(dict(state), r"^(stages\.\d+\.blocks\.\d+)\.attn\.(.*)$")
    out = _map_blocks(model, groups, lambda p: p, load_dilateformer, layout)
    for key, v in rest.items():
        k = re.sub(r"^patch_embed\.proj\.", "stem.convs.", key)
        k = re.sub(r"^(stages\.\d+\.blocks\.\d+)\.pos_embed\.", r"\1.cpe.", k)
        m = re.match(r"^stages\.(\d+)\.downsample\.proj\.([01])\.(.*)$", k)
        if m:
            part = "conv" if m[2] == "0" else "norm"
            k = f"stages.{int(m[1]) + 1}.downsample.{part}.{m[3]}"
        out[k] = v
    return out


def convert_swinv2(state: Mapping[str, torch.Tensor], model: Backbone) -> dict[str, torch.Tensor]:
    """Map a SwinV2 state dict (timm 1.0's ``SwinTransformerV2``, or the authors', who
    downsample at the end of a stage and name the classifier ``head``) onto ``model``."""
    state = dict(state)
    authors = "layers.0.downsample.reduction.weight" in state
    layout = LAYOUTS["swinv2" if authors else "swinv2_timm"]
    state = {k: v for k, v in state.items() if k.split(".")[-1] not in _SWINV2_BUFFERS}

    def place(key: str) -> str:
        k = re.sub(r"^layers\.(\d+)\.downsample", _next_stage, key) if authors else key
        k = re.sub(r"^patch_embed\.", "stem.", k)
        k = re.sub(r"^layers\.(\d+)\.", r"stages.\1.", k)
        return re.sub(r"^head\.fc\.", "head.", k)

    groups, rest = _attention_groups(state, r"^(layers\.\d+\.blocks\.\d+)\.attn\.(.*)$")
    out = _map_blocks(model, groups, place, load_swinv2, layout)
    return out | {place(k): v for k, v in rest.items()}


_SWINV2_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask", "k_bias")


def _pyramid(state: Mapping[str, torch.Tensor], model: Backbone, family: str) -> dict:
    layout = LAYOUTS[family]
    loader = load_shunted if family == "shunted" else load_pvtv2
    groups, rest = _attention_groups(dict(state), r"^(block\d+\.\d+)\.attn\.(.*)$")

    def stage_block(prefix: str) -> str:
        i, j = prefix[len("block") :].split(".")
        return f"stages.{int(i) - 1}.blocks.{j}"

    out = _map_blocks(model, groups, stage_block, loader, layout)
    stem_convs = sorted(
        {int(m[1]) for k in rest if (m := re.match(r"^patch_embed1\.conv\.(\d+)\.", k))}
    )
    for key, v in rest.items():
        k = key
        m = re.match(r"^patch_embed1\.conv\.(\d+)\.(.*)$", k)
        if m:  # Shunted's stem: conv-BN-ReLU layers, the last conv is the patchify projection
            last = int(m[1]) == stem_convs[-1]
            k = f"stem.proj.{m[2]}" if last else f"stem.convs.{m[1]}.{m[2]}"
        k = re.sub(r"^patch_embed1\.", "stem.", k)
        m = re.match(r"^patch_embed(\d+)\.(proj|norm)\.(.*)$", k)
        if m:
            k = f"stages.{int(m[1]) - 1}.downsample.{'conv' if m[2] == 'proj' else 'norm'}.{m[3]}"
        m = re.match(r"^block(\d+)\.(\d+)\.(.*)$", k)
        if m:
            k = f"stages.{int(m[1]) - 1}.blocks.{m[2]}.{m[3]}".replace(
                "mlp.dwconv.dwconv.", "mlp.dwconv."
            )
        k = re.sub(r"^norm(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.norm.", k)
        out[k] = v
    return out


def convert_shunted(state: Mapping[str, torch.Tensor], model: Backbone) -> dict[str, torch.Tensor]:
    """Map the Shunted authors' ``ShuntedTransformer`` state dict onto ``model``'s key names."""
    return _pyramid(state, model, "shunted")


def convert_pvtv2(state: Mapping[str, torch.Tensor], model: Backbone) -> dict[str, torch.Tensor]:
    """Map the PVTv2 authors' ``PyramidVisionTransformerV2`` state dict onto ``model``'s names."""
    return _pyramid(state, model, "pvtv2")


# ---------------------------------------------------------------------------------------------
# the entry point

#: layout name -> how errors and warnings name it
LAYOUTS = {
    "swin": "Swin (authors' layout)",
    "swin_timm": "Swin (timm's layout)",
    "swinv2": "SwinV2 (authors' layout)",
    "swinv2_timm": "SwinV2 (timm's layout)",
    "cswin": "CSWin (authors' layout)",
    "dilateformer": "DilateFormer (authors' layout)",
    "shunted": "Shunted (authors' layout)",
    "pvtv2": "PVTv2 (authors' layout)",
    "pvtv2_timm": "PVTv2 (timm's layout)",
    "video_swin_torchvision": "Video Swin (torchvision's layout)",
    "attnblocks": "attnblocks' own layout",
}

_WRAPPERS = ("model", "state_dict", "state_dict_ema", "model_ema")


_ATTN_OWN = re.compile(r"^(stages\.\d+\.blocks\.\d+\.attn)\.(kv|sr|norm)\.")


def convert_timm_pvtv2(source: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map timm's ``PyramidVisionTransformerV2`` weights onto :class:`Backbone` key names.

    timm's names: ``patch_embed.{proj,norm}`` (the stem), ``stages.{i}.downsample.{proj,norm}``
    (``i >= 1``), ``stages.{i}.blocks.{j}.{norm1, attn.{q,kv,sr,norm,proj}, norm2,
    mlp.{fc1,dwconv,fc2}}``, ``stages.{i}.norm``, ``head``. The attention's ``kv``, ``sr`` and
    ``norm`` become ``attn.runners.0.*`` (as :func:`~attnblocks.convert.load_pvtv2` does).

    Args:
        source: a timm model or its state dict (``{"model": ...}``/``{"state_dict": ...}``
            are unwrapped).

    Returns:
        The state dict for ``load_state_dict`` of a
        :func:`~attnblocks.models.pvtv2.pvtv2_spec` model.

    Example:
        >>> convert_timm_pvtv2({"stages.1.downsample.proj.bias": torch.zeros(2)})
        {'stages.1.downsample.conv.bias': tensor([0., 0.])}
    """
    state = _state_of(source, "convert_timm_pvtv2", "a timm PVTv2 model")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = re.sub(r"^patch_embed\.", "stem.", key)
        k = re.sub(r"^(stages\.\d+\.downsample)\.proj\.", r"\1.conv.", k)
        k = _ATTN_OWN.sub(r"\1.runners.0.\2.", k)
        out[k] = value
    return out


def load_timm_pvtv2_checkpoint(model: Backbone, source) -> Backbone:
    """Load timm's PVTv2 (see :func:`convert_timm_pvtv2`) into ``model``, strictly.

    Example:
        >>> from attnblocks.models import create
        >>> model = create("pvtv2_b2", num_classes=10, device="meta")
        >>> load_timm_pvtv2_checkpoint(model, {"head.weight": torch.zeros(1)})
        Traceback (most recent call last):
        ...
        attnblocks._errors.AttnblocksError: PVTv2 checkpoint -> Backbone: missing keys [...
    """
    return _load_strict(model, convert_timm_pvtv2(source), "PVTv2 checkpoint")


def read_checkpoint(
    source: str | os.PathLike | Mapping[str, torch.Tensor], ema: bool = False
) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file or training dict.

    Files: ``.safetensors`` (``safetensors.torch.load_file``) or anything else through
    ``torch.load(weights_only=True, map_location="cpu")`` (``.pth``, ``.pt``, ``.bin``). The
    first of ``model``, ``state_dict``, ``state_dict_ema``, ``model_ema`` present is taken
    (with ``ema=True``: the EMA weights first); a ``module.`` prefix (DistributedDataParallel)
    is removed.

    Example:
        >>> read_checkpoint({"state_dict": {"module.head.bias": torch.zeros(2)}})
        {'head.bias': tensor([0., 0.])}
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise AttnblocksError(f"read_checkpoint: no checkpoint file at {path!r}.")
        if path.endswith(".safetensors"):
            try:
                from safetensors.torch import load_file
            except ImportError:  # pragma: no cover (safetensors comes with timm)
                raise AttnblocksError(
                    f"read_checkpoint: {path!r} is a safetensors file; pip install safetensors."
                ) from None
            source = load_file(path, device="cpu")
        else:
            source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise TypeError(
            f"read_checkpoint: expected a file path or a state dict, got {type(source).__name__}."
        )
    order = (_WRAPPERS[2:] + _WRAPPERS[:2]) if ema else _WRAPPERS
    for w in order:
        if isinstance(source.get(w), Mapping):
            source = source[w]
            break
    state = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise AttnblocksError(
            f"read_checkpoint: no tensors found (top-level keys {sorted(source)[:8]}); expected "
            f"a state dict, or one under {_WRAPPERS}."
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Which released layout a state dict has: a key of :data:`LAYOUTS`.

    Example:
        >>> detect_layout({"patch_embed1.proj.weight": 0, "block1.0.attn.q.weight": 0})
        'pvtv2'
    """
    keys = set(state)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("stage1_conv_embed."):
        return "cswin"
    if has("patch_embed1.conv."):
        return "shunted"
    if has("patch_embed1.proj."):
        return "pvtv2"
    if has("patch_embed.proj.0.") and any(".pos_embed." in k for k in keys):
        return "dilateformer"
    if has("layers.0.blocks.0.attn.cpb_mlp."):
        return "swinv2" if has("layers.0.downsample.") else "swinv2_timm"
    if has("layers.0.blocks.0.attn.relative_position_bias_table"):
        return "swin" if has("layers.0.downsample.") else "swin_timm"
    if has("patch_embed.proj.") and has("stages.0.blocks.0.attn.q."):
        return "pvtv2_timm"
    if has("patch_embed.proj.") and has("features.0.0.attn.relative_position_bias_table"):
        return "video_swin_torchvision"
    if has("stem.") and has("stages.0.blocks."):
        return "attnblocks"
    raise AttnblocksError(
        f"Unrecognised checkpoint layout (keys {sorted(keys)[:6]} ...); the known layouts: "
        f"{', '.join(LAYOUTS.values())}."
    )


def _model_name(model: nn.Module) -> str:
    return getattr(model, "name", None) or type(model).__name__


def convert_checkpoint(
    model: Backbone, source, layout: str | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict under model's key names, layout)`` for any known layout (no loading).

    ``source``: a state dict, a file path (see :func:`read_checkpoint`) or a timm model.
    """
    module = isinstance(source, nn.Module)
    state = dict(source.state_dict()) if module else read_checkpoint(source)
    layout = layout or detect_layout(state)
    if layout not in LAYOUTS:
        raise AttnblocksError(
            f"convert_checkpoint: layout must be one of {tuple(LAYOUTS)}, got {layout!r}."
        )
    if layout in ("swin", "swin_timm"):
        mapped = convert_timm_swin(source if isinstance(source, nn.Module) else state, model)
    elif layout in ("swinv2", "swinv2_timm"):
        mapped = convert_swinv2(state, model)
    elif layout == "cswin":
        mapped = convert_cswin(state)
    elif layout == "dilateformer":
        mapped = convert_dilateformer(state, model)
    elif layout == "shunted":
        mapped = convert_shunted(state, model)
    elif layout == "pvtv2":
        mapped = convert_pvtv2(state, model)
    elif layout == "pvtv2_timm":
        mapped = convert_timm_pvtv2(source if isinstance(source, nn.Module) else state)
    elif layout == "video_swin_torchvision":
        mapped = convert_torchvision_video_swin(state)
    else:
        mapped = dict(state)
    return mapped, layout


def _fit_head(model: Backbone, mapped: dict[str, torch.Tensor], layout: str) -> None:
    """A checkpoint's classifier into a model without one (ignored) or of another size
    (left at its initialisation, with a warning); in place."""
    own = model.state_dict()
    head = [k for k in mapped if k.startswith("head.")]
    if getattr(model, "features_only", False):
        for k in head + [k for k in mapped if k.startswith("norm.") and k not in own]:
            del mapped[k]
        return
    if not head:
        if "head.weight" in own:
            warnings.warn(
                f"{layout} checkpoint -> {_model_name(model)}: the checkpoint has no classifier "
                f"head: head left at its initialisation.",
                stacklevel=3,
            )
        return
    if "head.weight" not in own:  # num_classes=0: the model returns pooled features
        for k in head:
            del mapped[k]
        return
    theirs = mapped.get("head.weight")
    if theirs is not None and tuple(theirs.shape) != tuple(own["head.weight"].shape):
        warnings.warn(
            f"{layout} checkpoint -> {_model_name(model)}: the checkpoint's head has "
            f"{theirs.shape[0]} classes, the model {own['head.weight'].shape[0]}: head left at "
            f"its initialisation.",
            stacklevel=3,
        )
        for k in head:
            del mapped[k]


def _adapt_input_conv(model: Backbone, mapped: dict, own: dict, layout: str) -> None:
    """A 3-channel checkpoint's first conv into a model of other ``in_chans``, as timm adapts
    it: summed over the colours for 1 channel, else the colours repeated and scaled by
    ``3 / in_chans``; in place, with a warning."""
    key = next((k for k in ("stem.proj.weight", "stem.convs.0.weight") if k in own), None)
    if key is None or key not in mapped or model.spec.in_chans == 3:
        return
    w, want = mapped[key], own[key].shape
    if (
        w.dim() not in (4, 5)
        or w.shape[1] != 3
        or (w.shape[0], *w.shape[2:])
        != (
            want[0],
            *want[2:],
        )
    ):
        return
    c = model.spec.in_chans
    if c == 1:
        mapped[key] = w.sum(dim=1, keepdim=True)
    else:
        reps = -(-c // 3)
        mapped[key] = w.repeat(1, reps, *(1,) * (w.dim() - 2))[:, :c] * (3 / c)
    warnings.warn(
        f"{layout} checkpoint -> {_model_name(model)}: the 3-channel {key} adapted to "
        f"in_chans={c}.",
        stacklevel=3,
    )


def load_checkpoint(
    model: Backbone,
    source: str | os.PathLike | Mapping[str, torch.Tensor] | nn.Module,
    *,
    layout: str | None = None,
    ema: bool = False,
) -> Backbone:
    """Load a released checkpoint into ``model``, strictly; the public entry point.

    Args:
        model: a :class:`Backbone` built from the matching table (e.g.
            ``create("cswin_tiny")``), on any device (its dtype is kept).
        source: a checkpoint file (``.pth``, ``.pt``, ``.bin``, ``.safetensors``), a (training)
            state dict, or a timm model; see :func:`read_checkpoint` for the unwrapping.
        layout: a key of :data:`LAYOUTS`; detected from the keys when ``None``.
        ema: prefer the EMA weights when the file holds both.

    A checkpoint's head goes into a model with another ``num_classes`` as nothing (the head is
    left fresh, with a warning); into a ``features_only`` or ``num_classes=0`` model it is
    ignored, as is the final norm a ``features_only`` model lacks.

    Shapes:
        The weights' shapes must be the model's; the model's forward is unchanged.

    Example:
        >>> from attnblocks.models import create
        >>> model = create("pvtv2_b2", device="meta")
        >>> state = {"patch_embed1.proj.weight": torch.zeros(1), "head.bias": torch.zeros(1000)}
        >>> load_checkpoint(model, state)
        Traceback (most recent call last):
        ...
        attnblocks._errors.AttnblocksError: PVTv2 (authors' layout) checkpoint -> pvtv2_b2: ...
    """
    if ema and not isinstance(source, nn.Module):
        source = read_checkpoint(source, ema=True)
    mapped, layout = convert_checkpoint(model, source, layout)
    name = LAYOUTS[layout]
    _fit_head(model, mapped, name)
    own = model.state_dict()
    for k in [k for k in mapped if k.endswith("num_batches_tracked") and k not in own]:
        del mapped[k]
    for k in own:  # BatchNorm counters are not weights: released files may drop them
        if k.endswith("num_batches_tracked") and k not in mapped:
            mapped[k] = own[k]
    _adapt_input_conv(model, mapped, own, name)
    head_fresh = [k for k in own if k.startswith("head.") and k not in mapped]
    for k in head_fresh:
        mapped[k] = own[k]
    meta = any(t.device.type == "meta" for t in own.values())
    return _strict_load(
        model, mapped, f"{name} checkpoint", _model_name(model), noun="model", limit=8, assign=meta
    )
