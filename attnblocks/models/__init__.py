"""Backbones built from attnblocks blocks, with a registry and checkpoint converters.

>>> from attnblocks.models import create, list_models
>>> list_models("cswin_*")
['cswin_base', 'cswin_small', 'cswin_tiny']
"""

from . import cswin, dilateformer, nat, pvtv2, shunted, swin  # noqa: F401  (registers models)
from .backbone import Backbone, BackboneSpec, Stage
from .block import Alternate, Block, PreNorm
from .checkpoints import (
    LAYOUTS,
    convert_checkpoint,
    detect_layout,
    load_checkpoint,
    read_checkpoint,
)
from .layers import ConvMerge, ConvStem, DropPath, DWConvMlp, Mlp, PatchMerging, drop_path_rates
from .registry import create, list_models, model_spec, register_model
from .stems import BNMerge, ConvBNStem, ResDWConvMlp
from .summary import ModelSummary, summary

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
    "Mlp",
    "ModelSummary",
    "PatchMerging",
    "PreNorm",
    "ResDWConvMlp",
    "Stage",
    "convert_checkpoint",
    "create",
    "detect_layout",
    "drop_path_rates",
    "list_models",
    "load_checkpoint",
    "model_spec",
    "read_checkpoint",
    "register_model",
    "summary",
]
