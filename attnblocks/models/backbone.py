"""A generic hierarchical backbone: a stem, stages of blocks, downsampling between stages, a head.

A model is a :class:`BackboneSpec`: a per-stage table of :class:`Stage` rows (dim, depth,
heads, attention, mlp ratio) plus the stem, the downsampler and the block kind. Everything
runs channels-last, ``(B, H, W, C)``, at any input size the stem accepts (non-square too:
the attentions pad where their windows do not divide the map). With a video stem
(:class:`~attnblocks.models.VideoStem`) the maps are ``(B, T, H, W, C)`` and the same code
runs: the merges halve ``H`` and ``W`` only, the head pools over ``T, H, W``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .._errors import AttnblocksError, fmt_shape
from .._spec import Spec, positive_int
from .block import AttnFactory, PreNorm, attention_for
from .layers import ConvMerge, ConvStem, PatchMerging, drop_path_rates

__all__ = ["Backbone", "BackboneSpec", "FeatureInfo", "Stage"]

# The layer between stages that halves the map: Swin's patch merging or a strided conv (not the
# Downsample partition, which reduces a head group's keys)
MergeLayer = PatchMerging | ConvMerge


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
    downsample: MergeLayer
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
        self,
        num_classes: int = 1000,
        features_only: bool = False,
        *,
        out_indices: Sequence[int] | None = None,
        device=None,
        dtype=None,
    ) -> Backbone:
        """Make the model (see :class:`Backbone` for the arguments)."""
        return Backbone(
            self, num_classes, features_only, out_indices=out_indices, device=device, dtype=dtype
        )


class FeatureInfo:
    """The stage maps a model returns: timm's ``FeatureInfo`` interface, without timm.

    ``info``: one dict per stage (``num_chs``, ``reduction``, ``module``); ``out_indices``: the
    stages a ``features_only`` model returns. ``channels()``, ``reduction()`` and
    ``module_name()`` give the values at ``out_indices`` (or at ``idx``); indexing and ``len``
    go over all stages, as timm's do. Models made by ``timm.create_model`` carry timm's own
    class instead.

    Example:
        >>> fi = FeatureInfo([{"num_chs": 8, "reduction": 4, "module": "stages.0"},
        ...                   {"num_chs": 16, "reduction": 8, "module": "stages.1"}], (1,))
        >>> fi.channels(), fi.reduction(), fi.channels(0), len(fi)
        ([16], [8], 8, 2)
    """

    def __init__(self, info: list[dict], out_indices: Sequence[int]) -> None:
        self.info = [dict(d) for d in info]
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx=None):
        picked = self.out_indices if idx is None else idx
        if isinstance(picked, int):
            d = self.info[picked]
            return dict(d) if keys is None else {k: d[k] for k in keys}
        return [
            dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}
            for i in picked
        ]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"


def _take_indices(n: int, indices: int | Sequence[int] | None, owner: str) -> list[int]:
    """timm's rule: ``None`` all stages, an int ``k`` the last ``k``, else those (negative
    counted from the end)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise AttnblocksError(f"{owner}: indices={indices} must be in 1..{n} (the last k).")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise AttnblocksError(f"{owner}: stage index {i} is out of range for {n} stages.")
        out.append(j)
    return out


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
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
        else:
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
        out_indices: with ``features_only``, the stages returned (default: all; negative
            indices count from the end).

    The timm model interface: ``pretrained_cfg`` (set by :func:`~attnblocks.models.create`),
    ``feature_info`` (:class:`FeatureInfo`), ``forward_features``, ``forward_head``,
    ``forward_intermediates``, ``get_classifier``, ``reset_classifier``,
    ``set_grad_checkpointing``, ``no_weight_decay``, ``num_features``.

    Shapes:
        ``x: (B, in_chans, H, W) -> (B, num_classes)``; with ``features_only`` a list of the
        stage outputs ``(B, C_i, H_i, W_i)``, ``H_1`` set by the stem and halved (rounding up)
        by each downsampling. With a video stem ``x: (B, in_chans, T, H, W)`` and the stage
        outputs ``(B, C_i, T_1, H_i, W_i)``.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_classes: int = 1000,
        features_only: bool = False,
        *,
        out_indices: Sequence[int] | None = None,
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
        n = len(spec.stages)
        if out_indices is not None and not features_only:
            raise AttnblocksError(
                f"{type(self).__name__}: out_indices={tuple(out_indices)} needs features_only=True."
            )
        self.out_indices = tuple(_take_indices(n, out_indices, type(self).__name__))
        self.feature_info = FeatureInfo(
            [
                {"num_chs": s.dim, "reduction": spec.stem.stride * 2**i, "module": f"stages.{i}"}
                for i, s in enumerate(spec.stages)
            ],
            self.out_indices,
        )
        self.num_features = self.head_hidden_size = prev
        self.global_pool = "avg"
        self.grad_checkpointing = False
        self.pretrained_cfg: dict = {}
        if not features_only:
            self.norm = (
                nn.Identity() if spec.stage_norm else nn.LayerNorm(prev, eps=spec.norm_eps, **dd)
            )
            self.head = nn.Linear(prev, num_classes, **dd) if num_classes else nn.Identity()
        self.reset_parameters()

    @property
    def default_cfg(self) -> dict:
        """timm's older name of :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

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

    def _check_input(self, x: torch.Tensor) -> None:
        ndim = self.spec.stem.ndim
        if x.dim() != 2 + ndim or x.shape[1] != self.spec.in_chans:
            what, axes = ("images", "H, W") if ndim == 2 else ("clips", "T, H, W")
            raise AttnblocksError(
                f"{type(self).__name__} expects {what} as (B, {self.spec.in_chans}, {axes}), got "
                f"x.shape={fmt_shape(x.shape)}."
            )

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage, channels-last: ``[(B, H_i, W_i, C_i), ...]`` (video:
        ``(B, T_i, H_i, W_i, C_i)``)."""
        self._check_input(x)
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def _classifier_only(self, what: str) -> None:
        if self.features_only:
            raise AttnblocksError(
                f"{type(self).__name__}.{what}: a features_only model has no norm or head; build "
                f"it with features_only=False."
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, in_chans, H, W)`` -> the normalised last stage map ``(B, H', W', C)``
        (channels-last, as timm's Swin; video: ``(B, T', H', W', C)``)."""
        self._classifier_only("forward_features")
        return self.norm(self.forward_stages(x)[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``x: (B, H, W, C)`` (video: ``(B, T, H, W, C)``) from :meth:`forward_features` ->
        global average pool, head (``pre_logits``: the pooled ``(B, C)`` features)."""
        self._classifier_only("forward_head")
        x = x.mean(dim=tuple(range(1, x.dim() - 1)))
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the maps of the stages ``indices`` (``None``: all,
        an int ``k``: the last ``k``), ``NCHW`` or ``NHWC``, and unless ``intermediates_only``
        the final normalised map ``(B, H', W', C)``; on video ``NCHW`` is channels-first
        ``(B, C, T, H, W)`` and ``NHWC`` channels-last. ``norm`` applies the final norm to the
        last stage's map; ``stop_early`` skips the stages after the last one asked for.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise AttnblocksError(
                f"forward_intermediates: output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}."
            )
        n = len(self.stages)
        take = _take_indices(n, indices, "forward_intermediates")
        last = max(take) if stop_early or intermediates_only else n - 1
        self._check_input(x)
        x = self.stem(x)
        final_norm = getattr(self, "norm", nn.Identity())
        outs = []
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in take:
                y = final_norm(x) if norm and i == n - 1 else x
                outs.append(y.movedim(-1, 1) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return outs
        return (final_norm(x) if last == n - 1 else x), outs

    def get_classifier(self) -> nn.Module:
        """The classifier (``head``)."""
        self._classifier_only("get_classifier")
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``Linear(num_features, num_classes)`` head (``Identity`` for 0)."""
        self._classifier_only("reset_classifier")
        positive_int(type(self).__name__, "num_classes", num_classes, minimum=0)
        if global_pool not in (None, "avg"):
            raise AttnblocksError(
                f"reset_classifier: global_pool must be 'avg' (mean over tokens), got "
                f"{global_pool!r}."
            )
        w = next(self.parameters())
        self.num_classes = num_classes
        if num_classes:
            self.head = nn.Linear(self.num_features, num_classes, device=w.device, dtype=w.dtype)
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (``torch.utils.checkpoint``) when on."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameters to train without weight decay: the position tables and SwinV2's
        ``logit_scale`` and CPB MLP (timm excludes biases and norms by their dimension)."""
        keys = (".tables.", "logit_scale", "cpb_mlp", ".rpb")
        return {n for n, _ in self.named_parameters() if any(k in n for k in keys)}

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer groups (layer-wise learning-rate decay): the stem, then the blocks."""
        blocks = (
            r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.norm", (99999,)),
            ]
        )
        return {"stem": r"^stem", "blocks": blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``x: (B, in_chans, H, W)`` -> logits, or the stage maps ``(B, C_i, H_i, W_i)`` at
        ``out_indices``."""
        if self.features_only:
            outs = self.forward_intermediates(x, self.out_indices, intermediates_only=True)
            return outs  # type: ignore[return-value]
        return self.forward_head(self.forward_features(x))
