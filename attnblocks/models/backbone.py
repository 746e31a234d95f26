"""A generic hierarchical backbone: a stem, stages of blocks, downsampling between stages, a head.

A model is a :class:`BackboneSpec`: a per-stage table of :class:`Stage` rows (dim, depth,
heads, attention, mlp ratio) plus the stem, the downsampler and the block kind. Everything
runs channels-last, ``(B, H, W, C)``, at any input size the stem accepts (non-square too:
the attentions pad where their windows do not divide the map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._errors import AttnblocksError, fmt_shape
from .._spec import Spec, positive_int
from .block import AttnFactory, PreNorm, attention_for
from .layers import ConvMerge, ConvStem, PatchMerging, drop_path_rates

__all__ = ["Backbone", "BackboneSpec", "Stage"]

Downsample = PatchMerging | ConvMerge


@dataclass(frozen=True, repr=False)
class Stage(Spec):
    """One row of a model table.

    Args:
        dim: channels ``C`` of the stage.
        depth: number of blocks.
        heads: attention heads.
        attn: an :class:`~attnblocks.Attention` used by every block, or ``f(i) -> Attention``
            for block ``i`` (e.g. :class:`~attnblocks.models.Alternate`).
        mlp_ratio: MLP hidden units per channel.

    Example:
        >>> from attnblocks import zoo
        >>> Stage(512, 1, 16, zoo.cswin(7, last=True))
        Stage(512, 1, 16, Attention(partition=Global(), pe=LePE()))
    """

    dim: int
    depth: int
    heads: int
    attn: AttnFactory
    mlp_ratio: float = 4.0
    _positional: ClassVar[tuple[str, ...]] = ("dim", "depth", "heads", "attn")

    def __post_init__(self) -> None:
        positive_int("Stage", "dim", self.dim)
        positive_int("Stage", "depth", self.depth)
        positive_int("Stage", "heads", self.heads)
        if self.dim % self.heads:
            raise AttnblocksError(f"Stage: dim={self.dim} is not divisible by heads={self.heads}.")
        if self.mlp_ratio <= 0:
            raise AttnblocksError(f"Stage: mlp_ratio must be positive, got {self.mlp_ratio}.")


@dataclass(frozen=True, repr=False)
class BackboneSpec(Spec):
    """A hierarchical backbone, described; ``build()`` makes the :class:`Backbone`.

    Args:
        stages: the per-stage table.
        stem: the patch embedding (image to the first stage's map).
        downsample: what runs between stages (``C_i -> C_{i+1}``).
        block: the block kind.
        drop_path_rate: the last block's stochastic-depth rate (linear from 0 over all blocks).
        norm_eps: eps of the final LayerNorm (or of the stage norms).
        stage_norm: a LayerNorm at the end of every stage (PVTv2, Shunted) instead of one
            before the head; the stage maps (``features_only``) are then normalised.
        in_chans: image channels.

    Example:
        >>> from attnblocks import zoo
        >>> spec = BackboneSpec(
        ...     (Stage(32, 1, 2, zoo.cswin(1)), Stage(64, 1, 2, zoo.cswin(2, last=True))),
        ...     stem=ConvStem(7, 4, padding=2),
        ...     downsample=ConvMerge(),
        ... )
        >>> spec.build(num_classes=10)(torch.randn(2, 3, 32, 48)).shape
        torch.Size([2, 10])
    """

    stages: tuple[Stage, ...]
    stem: ConvStem
    downsample: Downsample
    block: PreNorm = PreNorm()  # noqa: RUF009 (a frozen, immutable spec)
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5
    stage_norm: bool = False
    in_chans: int = 3
    _positional: ClassVar[tuple[str, ...]] = ("stages",)

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise AttnblocksError(
                f"BackboneSpec: stages must be a non-empty sequence of Stage rows, got {stages!r}."
            )
        object.__setattr__(self, "stages", stages)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise AttnblocksError(
                f"BackboneSpec: drop_path_rate must be in [0, 1), got {self.drop_path_rate}."
            )
        positive_int("BackboneSpec", "in_chans", self.in_chans)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(s.dim for s in self.stages)

    def build(
        self, num_classes: int = 1000, features_only: bool = False, *, device=None, dtype=None
    ) -> Backbone:
        """Make the model (see :class:`Backbone` for the arguments)."""
        return Backbone(self, num_classes, features_only, device=device, dtype=dtype)


class BackboneStage(nn.Module):
    """``downsample`` (absent in the first stage), ``blocks``, (``norm``); ``(B, H, W, C)``."""

    def __init__(
        self, downsample: nn.Module | None, blocks: list[nn.Module], norm: nn.Module | None
    ) -> None:
        super().__init__()
        if downsample is not None:
            self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        if norm is not None:
            self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        x = self.blocks(x)
        return self.norm(x) if hasattr(self, "norm") else x


class Backbone(nn.Module):
    """A built :class:`BackboneSpec`.

    Parameters: ``stem.*``, ``stages.{i}.downsample.*`` (``i >= 1``),
    ``stages.{i}.blocks.{j}.{norm1, attn, norm2, mlp}.*``, ``stages.{i}.norm`` (with
    ``stage_norm``), and unless ``features_only`` ``norm`` (LayerNorm; ``Identity`` with
    ``stage_norm``) and ``head`` (``Linear(C_last, num_classes)``; ``Identity`` when
    ``num_classes=0``, then the model returns the pooled features).

    Args:
        spec: the model description.
        num_classes: classifier outputs.
        features_only: return the stage maps instead of logits.

    Shapes:
        ``x: (B, in_chans, H, W) -> (B, num_classes)``; with ``features_only`` a list of the
        stage outputs ``(B, C_i, H_i, W_i)``, ``H_1`` set by the stem and halved (rounding up)
        by each downsampling.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_classes: int = 1000,
        features_only: bool = False,
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        positive_int(f"{type(self).__name__}", "num_classes", num_classes, minimum=0)
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        self.name: str | None = None  # the registry name, set by create()
        self.num_classes = num_classes
        self.features_only = features_only
        self.stem = spec.stem.build(spec.in_chans, spec.stages[0].dim, **dd)
        rates = drop_path_rates(spec.drop_path_rate, spec.depths)
        stages, prev = [], None
        for s, dpr in zip(spec.stages, rates):
            down = None if prev is None else spec.downsample.build(prev, s.dim, **dd)
            blocks = [
                spec.block.build(s.dim, s.heads, attention_for(s.attn, j), s.mlp_ratio, r, **dd)
                for j, r in enumerate(dpr)
            ]
            norm = nn.LayerNorm(s.dim, eps=spec.norm_eps, **dd) if spec.stage_norm else None
            stages.append(BackboneStage(down, blocks, norm))
            prev = s.dim
        self.stages = nn.ModuleList(stages)
        self.feature_info = [
            {"num_chs": s.dim, "reduction": spec.stem.stride * 2**i, "module": f"stages.{i}"}
            for i, s in enumerate(spec.stages)
        ]
        self.num_features = prev
        if not features_only:
            self.norm = (
                nn.Identity() if spec.stage_norm else nn.LayerNorm(prev, eps=spec.norm_eps, **dd)
            )
            self.head = nn.Linear(prev, num_classes, **dd) if num_classes else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' init: linear weights trunc-normal (std 0.02), biases 0, norms 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage, channels-last: ``[(B, H_i, W_i, C_i), ...]``."""
        if x.dim() != 4 or x.shape[1] != self.spec.in_chans:
            raise AttnblocksError(
                f"{type(self).__name__} expects images as (B, {self.spec.in_chans}, H, W), got "
                f"x.shape={fmt_shape(x.shape)}."
            )
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, H, W, C)`` last stage map -> norm, global average pool, head."""
        return self.head(self.norm(x).mean(dim=(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``x: (B, in_chans, H, W)`` -> logits, or the stage maps ``(B, C_i, H_i, W_i)``."""
        outs = self.forward_stages(x)
        if self.features_only:
            return [o.permute(0, 3, 1, 2) for o in outs]
        return self.forward_head(outs[-1])
