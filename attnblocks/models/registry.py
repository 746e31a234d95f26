"""The model registry: names to :class:`~attnblocks.models.BackboneSpec` factories."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from .._errors import AttnblocksError
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
    num_classes: int = 1000,
    features_only: bool = False,
    *,
    device=None,
    dtype=None,
    **options,
) -> Backbone:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (0: the model returns pooled features).
        features_only: return the stage maps ``[(B, C_i, H_i, W_i), ...]`` instead of logits.
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
    return model_spec(name, **options).build(num_classes, features_only, device=device, dtype=dtype)
