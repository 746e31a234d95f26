"""Converters: published weights into attnblocks layers and models, in one home.

- :mod:`attnblocks.convert.layers`: one attention layer from the authors' (timm's,
  torchvision's) attention weights or modules (``load_swin``, ``load_cswin``, ...,
  ``from_torchvision``); missing or unexpected keys and shape mismatches raise an
  :class:`~attnblocks.AttnblocksError` naming the key.
- :mod:`attnblocks.convert.checkpoints`: whole released models into a
  :class:`~attnblocks.models.Backbone` (``load_checkpoint``, ``detect_layout``, ...), each
  block's attention through its layer converter. :mod:`attnblocks.models` re-exports them.
"""

from .checkpoints import (
    LAYOUTS,
    convert_checkpoint,
    convert_cswin,
    convert_dilateformer,
    convert_pvtv2,
    convert_shunted,
    convert_swinv2,
    convert_timm_pvtv2,
    convert_timm_swin,
    convert_torchvision_video_swin,
    detect_layout,
    load_checkpoint,
    load_cswin_checkpoint,
    load_timm_pvtv2_checkpoint,
    load_timm_swin_checkpoint,
    load_torchvision_video_swin_checkpoint,
    read_checkpoint,
)
from .layers import (
    embed_rel_table,
    from_torchvision,
    load_cswin,
    load_dilateformer,
    load_pvtv2,
    load_shunted,
    load_swin,
    load_swinv2,
    load_timm_maxvit,
    load_timm_pvtv2,
    load_timm_swin,
    load_timm_swinv2,
    map_attention,
)

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
    "embed_rel_table",
    "from_torchvision",
    "load_checkpoint",
    "load_cswin",
    "load_cswin_checkpoint",
    "load_dilateformer",
    "load_pvtv2",
    "load_shunted",
    "load_swin",
    "load_swinv2",
    "load_timm_maxvit",
    "load_timm_pvtv2",
    "load_timm_pvtv2_checkpoint",
    "load_timm_swin",
    "load_timm_swin_checkpoint",
    "load_timm_swinv2",
    "load_torchvision_video_swin_checkpoint",
    "map_attention",
    "read_checkpoint",
]
