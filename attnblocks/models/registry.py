"""The model registry: names to :class:`~attnblocks.models.BackboneSpec` factories."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._errors import AttnblocksError
from .._spec import pair
from .backbone import Backbone, BackboneSpec

__all__ = ["create", "list_models", "model_spec", "register_model"]

SpecFactory = Callable[..., BackboneSpec]
_MODELS: dict[str, SpecFactory] = {}


def register_model(fn: SpecFactory) -> SpecFactory:
    """Decorator: register ``fn(**options) -> BackboneSpec`` under its function name."""
    if fn.__name__ in _MODELS:
        raise AttnblocksError(f"register_model: {fn.__name__!r} is already registered.")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """The registered model names matching a shell-style ``pattern``, sorted.

    Example:
        >>> list_models("swin_*")
        ['swin_base', 'swin_small', 'swin_tiny']
    """
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_spec(name: str, **options) -> BackboneSpec:
    """The :class:`BackboneSpec` of a registered model; ``options`` go to its factory.

    Example:
        >>> model_spec("cswin_tiny").depths
        (1, 2, 21, 1)
    """
    if name not in _MODELS:
        raise AttnblocksError(
            f"Unknown model {name!r}; registered models: {', '.join(list_models())}."
        )
    try:
        return _MODELS[name](**options)
    except TypeError as e:
        raise TypeError(f"{name}: {e}") from None


def create(
    name: str,
    num_classes: int | None = None,
    features_only: bool = False,
    *,
    out_indices: Sequence[int] | None = None,
    in_chans: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    pretrained: bool = False,
    pretrained_cfg: Mapping[str, Any] | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    device=None,
    dtype=None,
    **options,
) -> Backbone:
    """Build a registered model (the same arguments as ``timm.create_model``).

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (0: the model returns pooled features); by default
            its ``pretrained_cfg``'s, as in timm: 1000 for the ImageNet models, 400 for
            Video Swin (Kinetics-400).
        features_only: return the stage maps ``[(B, C_i, H_i, W_i), ...]`` instead of logits.
        out_indices: with ``features_only``, which stages (default all; negative from the end).
        in_chans: image channels (default 3); a 3-channel checkpoint's first conv is adapted
            as timm does (summed for 1 channel, repeated and rescaled for more).
        img_size: accepted for timm's scripts and recorded in ``pretrained_cfg["input_size"]``;
            the models run at any size.
        pretrained: load the checkpoint file named by ``pretrained_cfg["file"]`` (give the
            authors' file with ``pretrained_cfg_overlay=dict(file=PATH)``; attnblocks hosts none)
            through :func:`~attnblocks.models.load_checkpoint`.
        pretrained_cfg: replaces the model's default ``pretrained_cfg``
            (:func:`~attnblocks.models.pretrained.pretrained_cfg`).
        pretrained_cfg_overlay: updates the model's ``pretrained_cfg``.
        checkpoint_path: a checkpoint file to load after building (as timm's argument).
        device (torch.device | str | None): where the parameters are made (``device="meta"``
            builds nothing).
        dtype (torch.dtype | None): the parameters' dtype.
        **options (Any): model options, e.g. ``drop_path_rate`` or Swin's ``clamp`` and ``pad``.

    Example:
        >>> import torch
        >>> model = create("swin_tiny", num_classes=0, features_only=True)
        >>> shapes = [tuple(f.shape) for f in model(torch.randn(1, 3, 64, 96))]
        >>> shapes
        [(1, 96, 16, 24), (1, 192, 8, 12), (1, 384, 4, 6), (1, 768, 2, 3)]
    """
    from ..convert.checkpoints import load_checkpoint
    from .pretrained import pretrained_cfg as default_cfg

    spec = model_spec(name, **options)
    if in_chans is not None:
        spec = replace(spec, in_chans=in_chans)
    cfg = default_cfg(name)
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, str):
        cfg |= dict(
            pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else pretrained_cfg
        )
    cfg |= dict(pretrained_cfg_overlay or {})
    if num_classes is None:
        num_classes = cfg["num_classes"]
    model = spec.build(
        num_classes, features_only, out_indices=out_indices, device=device, dtype=dtype
    )
    model.name = name
    if img_size is not None:
        h, w = pair("create", "img_size", img_size)
        cfg["input_size"] = (spec.in_chans, h, w)
    elif in_chans is not None:
        cfg["input_size"] = (spec.in_chans, *cfg["input_size"][1:])
    model.pretrained_cfg = cfg
    if pretrained:
        file = cfg.get("file")
        if not file:
            raise AttnblocksError(
                f"create({name!r}, pretrained=True): attnblocks hosts no weights; download the "
                f"authors' checkpoint ({cfg.get('released_file') or 'see the docs'}, from "
                f"{cfg.get('origin_url') or 'the authors'}) and pass "
                f"pretrained_cfg_overlay=dict(file=PATH)."
            )
        load_checkpoint(model, file)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model
