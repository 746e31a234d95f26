"""Each model's published preprocessing and checkpoint file, as timm's ``pretrained_cfg``.

attnblocks hosts no weights: ``url`` is empty, and ``file`` is where the user put the
authors' checkpoint (``pretrained_cfg_overlay=dict(file=PATH)``). Swin, SwinV2 (256 px), PVTv2
and CSWin: read from timm's / the authors' ``_cfg`` (crop 0.9, bicubic, ImageNet mean and std,
224 px).
DilateFormer, Shunted, NAT: the same timm-style defaults, not read from the authors' files.
Video Swin: torchvision's ``Swin3D_T_Weights.KINETICS400_V1`` (400 classes, 32-frame clips
``(3, 32, 224, 224)``, resize 256 and crop 224, bilinear, ImageNet mean and std).
"""

from __future__ import annotations

from typing import Any

__all__ = ["pretrained_cfg"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (the authors' repository, the released file, its wrapper key, the stem's first conv)
_SOURCES: dict[str, tuple[str, str, str, str]] = {
    "swin": (
        "https://github.com/microsoft/Swin-Transformer",
        "swin_{size}_patch4_window7_224.pth",
        "model",
        "stem.proj",
    ),
    "swinv2": (
        "https://github.com/microsoft/Swin-Transformer",
        "swinv2_{size}_patch4_window8_256.pth (or timm's swinv2_tiny_window8_256)",
        "model",
        "stem.proj",
    ),
    "cswin": (
        "https://github.com/microsoft/CSWin-Transformer",
        "cswin_{size}_224.pth",
        "state_dict / state_dict_ema",
        "stem.proj",
    ),
    "dilateformer": (
        "https://github.com/JIAOJIAYUASD/dilateformer",
        "Google Drive / Baidu links in the README",
        "model",
        "stem.convs.0",
    ),
    "shunted": (
        "https://github.com/OliverRensu/Shunted-Transformer",
        "Google Drive / Baidu links in the README",
        "model",
        "stem.convs.0",
    ),
    "pvtv2": ("https://github.com/whai362/PVT", "pvt_v2_{size}.pth", "(none)", "stem.proj"),
    "nat": (
        "https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
        "(no loader here yet)",
        "-",
        "stem.convs.0",
    ),
    "video": (
        "https://github.com/pytorch/vision",
        "swin3d_t-7615ae03.pth (torchvision Swin3D_T_Weights.KINETICS400_V1)",
        "(none)",
        "stem.proj",
    ),
    "dinat": (
        "https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
        "(no loader here yet)",
        "-",
        "stem.convs.0",
    ),
}


def pretrained_cfg(name: str) -> dict[str, Any]:
    """The default ``pretrained_cfg`` of a registered model (a fresh dict).

    Example:
        >>> cfg = pretrained_cfg("cswin_tiny")
        >>> cfg["input_size"], cfg["crop_pct"], cfg["interpolation"], cfg["mean"]
        ((3, 224, 224), 0.9, 'bicubic', (0.485, 0.456, 0.406))
    """
    family, _, size = name.partition("_")
    repo, file, wrapper, first_conv = _SOURCES.get(family, ("", "", "", "stem.proj"))
    side = 256 if family == "swinv2" else 224
    if family == "video":
        return {
            **pretrained_cfg("swin_tiny"),
            "architecture": f"attnblocks_{name}",
            "num_classes": 400,
            "input_size": (3, 32, side, side),
            "pool_size": (16, side // 32, side // 32),
            "crop_pct": 224 / 256,
            "interpolation": "bilinear",
            "origin_url": repo,
            "released_file": file,
            "released_wrapper": wrapper,
        }
    return {
        "url": "",
        "file": None,
        "hf_hub_id": None,
        "architecture": f"attnblocks_{name}",
        "num_classes": 1000,
        "input_size": (3, side, side),
        "pool_size": (side // 32, side // 32),
        "crop_pct": 0.9,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": first_conv,
        "classifier": "head",
        "origin_url": repo,
        "released_file": file.format(size=size),
        "released_wrapper": wrapper,
    }
