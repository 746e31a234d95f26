"""Backbones built from attnblocks blocks, with a registry and checkpoint converters.

>>> from attnblocks.models import create, list_models
>>> list_models("cswin_*")
['cswin_base', 'cswin_small', 'cswin_tiny']
"""

from . import cswin, dilateformer, nat, pvtv2, shunted, swin  # noqa: F401  (registers models)
from .backbone import Backbone, BackboneSpec, Stage
from .block import Alternate, Block, PreNorm
from .layers import ConvMerge, ConvStem, DropPath, DWConvMlp, Mlp, PatchMerging, drop_path_rates
from .registry import create, list_models, model_spec, register_model
from .stems import BNMerge, ConvBNStem, ResDWConvMlp
from .summary import ModelSummary, summary

__all__ = [
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
    "create",
    "drop_path_rates",
    "list_models",
    "model_spec",
    "register_model",
    "summary",
]
