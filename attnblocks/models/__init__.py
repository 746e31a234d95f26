"""Backbones built from attnblocks blocks, with a registry and checkpoint converters.

Importing this package registers the models in timm's registry (``attnblocks_<name>``) only
when timm is already imported; otherwise call :func:`register_timm`.

>>> from attnblocks.models import create, list_models
>>> list_models("cswin_*")
['cswin_base', 'cswin_small', 'cswin_tiny']
"""

import sys as _sys

from ..convert.checkpoints import (
    LAYOUTS,
    convert_checkpoint,
    detect_layout,
    load_checkpoint,
    read_checkpoint,
)
from . import (  # noqa: F401  (registers models)
    cswin,
    dilateformer,
    nat,
    pvtv2,
    shunted,
    swin,
    video_swin,
)
from .backbone import Backbone, BackboneSpec, FeatureInfo, Stage
from .block import Alternate, Block, PreNorm
from .layers import (
    ConvMerge,
    ConvStem,
    DropPath,
    DWConvMlp,
    Mlp,
    PatchMerging,
    VideoStem,
    drop_path_rates,
)
from .pretrained import pretrained_cfg
from .registry import create, list_models, model_spec, register_model
from .stems import BNMerge, ConvBNStem, ResDWConvMlp
from .summary import ModelSummary, summary
from .timm_compat import register_timm

__all__ = [
    "LAYOUTS",
    "Alternate",
    "BNMerge",
    "Backbone",
    "BackboneSpec",
    "Block",
    "ConvBNStem",
    "ConvMerge",
    "ConvStem",
    "DWConvMlp",
    "DropPath",
    "FeatureInfo",
    "Mlp",
    "ModelSummary",
    "PatchMerging",
    "PreNorm",
    "ResDWConvMlp",
    "Stage",
    "VideoStem",
    "convert_checkpoint",
    "create",
    "detect_layout",
    "drop_path_rates",
    "list_models",
    "load_checkpoint",
    "model_spec",
    "pretrained_cfg",
    "read_checkpoint",
    "register_model",
    "register_timm",
    "summary",
]

if "timm" in _sys.modules:
    register_timm()
