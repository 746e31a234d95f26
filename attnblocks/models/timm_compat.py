"""attnblocks models in timm's registry: ``timm.create_model("attnblocks_cswin_tiny", ...)``.

Registration is explicit and lazy, so ``import attnblocks`` never imports timm:
:func:`register_timm` registers every model of :func:`~attnblocks.models.list_models` as
``attnblocks_<name>``; importing :mod:`attnblocks.models` calls it only when timm is already
imported. The entry points take ``timm.create_model``'s arguments (``num_classes``,
``features_only``, ``out_indices``, ``in_chans``, ``drop_path_rate``, ``img_size``,
``pretrained`` with ``pretrained_cfg_overlay=dict(file=PATH)``) and build through
:func:`~attnblocks.models.create`; the model's ``feature_info`` is timm's ``FeatureInfo``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from .backbone import Backbone
from .pretrained import pretrained_cfg
from .registry import create, list_models

__all__ = ["register_timm"]

PREFIX = "attnblocks_"
default_cfgs: dict = {}  # read by timm's register_model (module-level, by name)


def _entry(name: str) -> Callable[..., Backbone]:
    def entry(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: dict | None = None,
        cache_dir: Any = None,
        **kwargs: Any,
    ) -> Backbone:
        from timm.models._builder import resolve_pretrained_cfg
        from timm.models._features import FeatureInfo

        cfg = resolve_pretrained_cfg(
            PREFIX + name,
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=pretrained_cfg_overlay,
        ).to_dict()
        model = create(name, pretrained=pretrained, pretrained_cfg=cfg, **kwargs)
        model.feature_info = FeatureInfo(model.feature_info.info, model.out_indices)
        return model

    entry.__name__ = entry.__qualname__ = PREFIX + name
    entry.__module__ = __name__
    entry.__doc__ = f"attnblocks' ``{name}`` (see attnblocks.models.create)."
    return entry


def register_timm() -> list[str]:
    """Register every attnblocks model in timm's registry; returns the names (idempotent).

    Example:
        >>> import timm
        >>> "attnblocks_cswin_tiny" in register_timm()
        True
        >>> timm.create_model("attnblocks_cswin_tiny", num_classes=3).num_classes
        3
    """
    from timm.models import register_model
    from timm.models._pretrained import PretrainedCfg
    from timm.models._registry import _model_entrypoints, generate_default_cfgs

    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    names = []
    for name in list_models():
        full = PREFIX + name
        names.append(full)
        if full in _model_entrypoints:
            continue
        cfg = pretrained_cfg(name)
        notes = (f"authors' file: {cfg['released_file']}", f"wrapper: {cfg['released_wrapper']}")
        cfg = {k: v for k, v in cfg.items() if k in fields} | {"notes": notes}
        default_cfgs.update(generate_default_cfgs({full: cfg}))
        fn = _entry(name)
        setattr(sys.modules[__name__], full, fn)
        register_model(fn)
    return names
