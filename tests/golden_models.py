"""The authors' small full models and Tiny key layouts, from the repository's own copy.

``tests/data/golden/models/`` is a byte-for-byte copy of ``../shared/golden/models/`` (the
authors' generated files: copy, never edit); ``test_golden_models_copy_is_exact`` checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnblocks.models import Backbone
from attnblocks.models.cswin import cswin_spec
from attnblocks.models.dilateformer import dilateformer_spec
from attnblocks.models.pvtv2 import pvtv2_spec
from attnblocks.models.shunted import shunted_spec
from attnblocks.models.swin import swin_spec

MODELS_DIR = Path(__file__).resolve().parent / "data" / "golden" / "models"
FAMILIES = ("swin", "cswin", "dilateformer", "shunted", "pvtv2")


def load_mini(family: str) -> dict[str, Any]:
    """``{"meta", "state" (float64 tensors, authors' keys), "x", "y", "x2", "y2"}``."""
    with np.load(MODELS_DIR / f"{family}_mini.npz", allow_pickle=False) as f:
        out: dict[str, Any] = {"meta": json.loads(str(f["meta"]))}
        out["state"] = {
            k[len("param/") :]: torch.from_numpy(np.array(f[k]))
            for k in f.files
            if k.startswith("param/")
        }
        for name in ("x", "y", "x2", "y2"):
            out[name] = torch.from_numpy(np.array(f[name])) if name in f.files else None
    return out


def tiny_keys(family: str) -> tuple[int, dict[str, tuple[int, ...]]]:
    """``(params, {key: shape})`` of the authors' Tiny model, in state_dict order."""
    lines = (MODELS_DIR / f"{family}_tiny_keys.txt").read_text().splitlines()
    params = int(lines[0].split("\t")[1])
    shapes = {}
    for line in lines[1:]:
        key, shape = line.split("\t")
        shapes[key] = tuple(json.loads(shape))
    return params, shapes


def zeros_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A state dict of zeros with the given shapes (int64 for the index/counter buffers)."""
    out = {}
    for k, s in shapes.items():
        integer = k.endswith(("num_batches_tracked", "relative_position_index"))
        out[k] = torch.zeros(s, dtype=torch.int64 if integer else torch.float32)
    return out


def build_like(meta: dict, **build: object) -> Backbone:
    """The attnblocks table of the authors' constructor arguments (``meta["constructor"]``),
    built in float64 and eval mode; ``build`` replaces the defaults of ``spec.build`` (e.g.
    ``features_only=True``)."""
    c, fam = meta["constructor"], meta["family"]
    if fam == "swin":
        spec = swin_spec(
            c["embed_dim"], tuple(c["depths"]), tuple(c["num_heads"]), c["window_size"]
        )
    elif fam == "cswin":
        spec = cswin_spec(
            c["embed_dim"], tuple(c["depth"]), tuple(c["num_heads"]), tuple(c["split_size"])
        )
    elif fam == "dilateformer":
        dims = tuple(c["embed_dim"] * 2**i for i in range(len(c["depths"])))
        local = sum(c["dilate_attention"])
        spec = dilateformer_spec(
            dims,
            tuple(c["depths"]),
            tuple(c["num_heads"]),
            local,
            c["kernel_size"],
            tuple(c["dilation"]),
        )
    else:
        make = shunted_spec if fam == "shunted" else pvtv2_spec
        spec = make(
            tuple(c["embed_dims"]),
            tuple(c["depths"]),
            tuple(c["num_heads"]),
            tuple(c["sr_ratios"]),
            tuple(c["mlp_ratios"]),
        )
    build = {"num_classes": c["num_classes"], "dtype": torch.float64, **build}
    return spec.build(**build).eval()
