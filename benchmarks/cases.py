"""The registry of benchmark cases: one per published attention at its Tiny model's stage-1 shape.

A :class:`Case` names the attnblocks spec (a factory, so the module is built fresh per
measurement), the shape, and the implementations it is compared with. Every implementation is
built *from the attnblocks layer* (sharing or copying its weights), so the suite checks that
all of them compute the same numbers before it times them.

To add an attention, register a case (here or from your own module imported by ``run.py``)::

    register_case(Case(
        name="nat", title="NAT-T stage 1: 7x7 neighbourhood", spec=lambda: zoo.nat(7),
        dim=64, heads=2, hw=(56, 56),
        references=(Impl("natten", lambda layer, hw: NattenRef(layer)),),
    ))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from attnblocks import Attention, AttentionLayer, Grid, RelPosBias, Window, zoo

from . import references as refs

__all__ = ["CASES", "Case", "Impl", "register_case"]


@dataclass(frozen=True)
class Impl:
    """One implementation compared with attnblocks.

    ``build(layer, hw)`` returns a module ``x: (B, H, W, C) -> (B, H, W, C)`` that computes
    the same attention as ``layer`` (with its weights). ``train=False`` skips forward+backward
    (e.g. compiled FlexAttention, which has no CPU backward); ``atol`` is the fp32 agreement
    checked before timing (authors' -100 masks and unfused softmax differ in the last bits).
    """

    name: str
    build: Callable[[AttentionLayer, tuple[int, int]], nn.Module]
    train: bool = True
    atol: float = 1e-4


@dataclass(frozen=True)
class Case:
    """An attention at a shape, and what it is compared with.

    ``spec`` makes the attnblocks :class:`~attnblocks.Attention`; ``dim``, ``heads`` and ``hw``
    are the stage-1 shape of the published Tiny model. ``sweep`` says whether the references
    work at other map sizes (the resolution sweep builds every implementation per size).
    """

    name: str
    title: str
    spec: Callable[[], Attention]
    dim: int
    heads: int
    hw: tuple[int, int]
    references: tuple[Impl, ...]
    sweep: bool = True

    def build(self, hw: tuple[int, int] | None = None) -> dict[str, nn.Module]:
        """All implementations at ``hw`` (default: the case's), attnblocks first."""
        hw = hw or self.hw
        layer = self.spec().build(self.dim, self.heads)
        out: dict[str, nn.Module] = {"attnblocks": layer}
        for ref in self.references:
            out[ref.name] = ref.build(layer, hw)
        return out

    def impl(self, name: str) -> Impl | None:
        return next((r for r in self.references if r.name == name), None)

    def core_spec(self) -> Attention:
        """The spec without positional encoders: the partition alone, for the floor."""
        return dataclasses.replace(self.spec(), pe=None)


CASES: dict[str, Case] = {}


def register_case(case: Case) -> Case:
    """Add ``case`` to :data:`CASES` (a later case of the same name replaces it)."""
    CASES[case.name] = case
    return case


def _timm_swin(fused: bool) -> Impl:
    name = "timm fused" if fused else "timm unfused"
    return Impl(name, lambda layer, hw: refs.TimmSwin(layer, hw, 7, 3, fused))


def _timm_maxvit(kind: str, fused: bool) -> Impl:
    name = "timm fused" if fused else "timm unfused"
    return Impl(name, lambda layer, hw: refs.TimmMaxViT(layer, kind, 7, fused))


register_case(
    Case(
        name="swin",
        title="Swin-T stage 1, SW-MSA: 56x56, C=96, 3 heads, window 7, shift 3",
        spec=lambda: zoo.swin(7, shift=3),
        dim=96,
        heads=3,
        hw=(56, 56),
        references=(
            Impl("authors", lambda layer, hw: refs.SwinAuthors(layer, 7, 3)),
            _timm_swin(True),
            _timm_swin(False),
        ),
    )
)
register_case(
    Case(
        name="cswin",
        title="CSWin-T stage 1: 56x56, C=64, 2 heads, stripe 1",
        spec=lambda: zoo.cswin(1),
        dim=64,
        heads=2,
        hw=(56, 56),
        references=(Impl("authors", lambda layer, hw: refs.CSWinAuthors(layer, 1)),),
    )
)
register_case(
    Case(
        name="cswin3",
        title="CSWin-T stage 3: 14x14, C=256, 8 heads, stripe 7",
        spec=lambda: zoo.cswin(7),
        dim=256,
        heads=8,
        hw=(14, 14),
        references=(Impl("authors", lambda layer, hw: refs.CSWinAuthors(layer, 7)),),
    )
)
register_case(
    Case(
        name="maxvit-block",
        title="MaxViT-T stage 1, block attention: 56x56, C=64, 2 heads, window 7",
        spec=lambda: Attention(partition=Window(7), pe=RelPosBias()),
        dim=64,
        heads=2,
        hw=(56, 56),
        references=(_timm_maxvit("block", True), _timm_maxvit("block", False)),
    )
)
register_case(
    Case(
        name="maxvit-grid",
        title="MaxViT-T stage 1, grid attention: 56x56, C=64, 2 heads, grid 7",
        spec=lambda: Attention(partition=Grid(7), pe=RelPosBias()),
        dim=64,
        heads=2,
        hw=(56, 56),
        references=(_timm_maxvit("grid", True), _timm_maxvit("grid", False)),
    )
)
