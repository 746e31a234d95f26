"""Backbones built from attnblocks blocks, with a registry and checkpoint converters.

>>> from attnblocks.models import create, list_models
>>> list_models("cswin_*")
['cswin_base', 'cswin_small', 'cswin_tiny']
"""

from . import cswin, pvtv2, swin  # noqa: F401  (registers the models)
from .backbone import Backbone, BackboneSpec, Stage
from .block import Alternate, Block, PreNorm
from .layers import ConvMerge, ConvStem, DropPath, DWConvMlp, Mlp, PatchMerging, drop_path_rates
from .registry import create, list_models, model_spec, register_model
from .summary import ModelSummary, summary

__all__ = [
    "Alternate",
    "Backbone",
    "BackboneSpec",
    "Block",
    "ConvMerge",
    "ConvStem",
    "DWConvMlp",
    "DropPath",
    "Mlp",
    "ModelSummary",
    "PatchMerging",
    "PreNorm",
    "Stage",
    "create",
    "drop_path_rates",
    "list_models",
    "model_spec",
    "register_model",
    "summary",
]
