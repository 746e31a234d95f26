"""The registry of benchmark cases: one per published attention at its Tiny model's stage-1 shape.

A :class:`Case` names the attnblocks spec (a factory, so the module is built fresh per
measurement), the shape, and the implementations it is compared with. Every implementation is
built *from the attnblocks layer* (sharing or copying its weights), so the suite checks that
all of them compute the same numbers before it times them.

To add an attention, register a case (here or from your own module imported by ``run.py``)::

    register_case(Case(
        name="dinat", title="DiNAT: 7x7, dilation 2", spec=lambda: zoo.dinat(7, 2, rpb=False),
        dim=64, heads=2, hw=(56, 56),
        references=(Impl("dense", lambda layer, hw: MyDenseReference(layer, hw)),),
    ))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from attnblocks import Attention, AttentionLayer, Grid, Neighborhood, RelPosBias, Window, zoo

from . import references as refs
from . import references_multiscale as ms
from . import references_nat as nat

__all__ = ["CASES", "GROWTH", "Case", "Impl", "register_case"]

#: Theoretical growth of an attention's cost with the token count ``N``, as an exponent of N:
#: windows and neighbourhoods are linear, stripes ``N * sqrt(N)``, downsampled keys
#: ``N * N / r^2`` (quadratic, with a constant cut by ``r^2``).
GROWTH = {"N": 1.0, "N*sqrt(N)": 1.5, "N*N/r^2": 2.0}


@dataclass(frozen=True)
class Impl:
    """One implementation compared with attnblocks.

    ``build(layer, hw)`` returns a module ``x: (B, H, W, C) -> (B, H, W, C)`` that computes
    the same attention as ``layer`` (with its weights); it (or its first call) raises
    :class:`~benchmarks.references.Unavailable` where it cannot run here, and the run records
    why. ``train=False`` skips forward+backward (e.g. compiled FlexAttention, which has no CPU
    backward); ``atol`` is the fp32 agreement checked before timing (authors' -100 masks and
    unfused softmax differ in the last bits). ``reps`` caps the timed calls per pass of a
    reference that takes seconds per call; ``max_tokens`` leaves it out of the resolution sweep
    above that many tokens (dense ``N x N`` masks); ``note`` is printed under the case's table.
    """

    name: str
    build: Callable[[AttentionLayer, tuple[int, int]], nn.Module]
    train: bool = True
    atol: float = 1e-4
    reps: int | None = None
    max_tokens: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Case:
    """An attention at a shape, and what it is compared with.

    ``spec`` makes the attnblocks :class:`~attnblocks.Attention`; ``dim``, ``heads`` and ``hw``
    are the stage-1 shape of the published Tiny model. ``sweep`` says whether the references
    work at other map sizes (the resolution sweep builds every implementation per size);
    ``growth`` is the theoretical growth of its cost with the token count ``N`` (a key of
    :data:`GROWTH`); ``floor`` says whether the distance to the floor applies (rectangular
    partitions: windows, stripes, grids); ``batches`` the forward batch sizes timed, the
    last also for training. ``hw`` may be a map of any rank (``(T, H, W)`` for video).
    """

    name: str
    title: str
    spec: Callable[[], Attention]
    dim: int
    heads: int
    hw: tuple[int, int]
    references: tuple[Impl, ...]
    sweep: bool = True
    growth: str = "N"
    floor: bool = True
    batches: tuple[int, ...] = (1, 8)

    def build(
        self, hw: tuple[int, int] | None = None, skipped: dict[str, str] | None = None
    ) -> dict[str, nn.Module]:
        """All implementations at ``hw`` (default: the case's), attnblocks first.

        References that cannot run (:class:`~benchmarks.references.Unavailable`, or above
        their ``max_tokens``) are left out, with the reason in ``skipped`` when given.
        """
        hw = hw or self.hw
        layer = self.spec().build(self.dim, self.heads)
        out: dict[str, nn.Module] = {"attnblocks": layer}
        skipped = {} if skipped is None else skipped
        for ref in self.references:
            if ref.max_tokens is not None and math.prod(hw) > ref.max_tokens:
                skipped[ref.name] = f"not run above {ref.max_tokens} tokens"
                continue
            try:
                out[ref.name] = ref.build(layer, hw)
            except refs.Unavailable as e:
                skipped[ref.name] = str(e)
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
        growth="N*sqrt(N)",
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
        growth="N*sqrt(N)",
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
register_case(
    Case(
        name="video-swin",
        title="Video Swin-T stage 1, 3-D SW-MSA: 8x56x56, C=96, 3 heads, window (8,7,7), "
        "shift (4,3,3)",
        spec=lambda: Attention(
            partition=Window((8, 7, 7), shift=(4, 3, 3), clamp="timm"),
            pe=RelPosBias(index="torchvision"),
            pad="torchvision",
        ),
        dim=96,
        heads=3,
        hw=(8, 56, 56),
        references=(Impl("torchvision", lambda layer, hw: refs.TorchvisionSwin3d(layer)),),
        sweep=False,
        floor=False,
        batches=(1, 2),
    )
)
register_case(
    Case(
        name="nat3d",
        title="3-D neighbourhood (3, 7, 7) on a 8x14x14 clip, C=64, 2 heads",
        spec=lambda: Attention(partition=Neighborhood((3, 7, 7))),
        dim=64,
        heads=2,
        hw=(8, 14, 14),
        references=(
            Impl(
                "natten",
                lambda layer, hw: nat.NattenNA3d(layer, (3, 7, 7)),
                train=False,
                reps=1,
                note="NATTEN's na3d as called by users; on CPU its flex-fna backend, uncompiled, "
                "forward only",
            ),
        ),
        sweep=False,
        floor=False,
        batches=(1, 4),
    )
)
_DILATIONS = (1, 2, 3)
_SWEEP_CAP = 112 * 112  # N x N masks (a 224x224 map: 2.5e9 pairs): not swept beyond this


def _nat(cls: type[nn.Module]) -> Callable[[AttentionLayer, tuple[int, int]], nn.Module]:
    return lambda layer, hw: cls(layer, 7)


register_case(
    Case(
        name="dilateformer",
        title="DilateFormer-T stage 1, MSDA: 56x56, C=72, 3 heads, kernel 3, dilations 1-2-3",
        spec=lambda: zoo.dilateformer(3, (1, 2, 3)),
        dim=72,
        heads=3,
        hw=(56, 56),
        references=(
            Impl(
                "authors unfold",
                lambda layer, hw: ms.DilateFormerAuthors(layer, 3, _DILATIONS),
                note="the authors' algorithm (nn.Unfold of K and V, k*k copies, per-query "
                "matmul and softmax) with its group outputs concatenated instead of written in "
                "place, so it back-propagates (the authors' module cannot)",
            ),
        ),
        floor=False,
    )
)
register_case(
    Case(
        name="shunted",
        title="Shunted-T stage 1, SSA: 56x56, C=64, 2 heads, sr 8 (branches 8 and 4)",
        spec=lambda: zoo.shunted(8),
        dim=64,
        heads=2,
        hw=(56, 56),
        references=(Impl("authors", lambda layer, hw: ms.ShuntedAuthors(layer)),),
        growth="N*N/r^2",
        floor=False,
    )
)
register_case(
    Case(
        name="pvtv2",
        title="PVTv2-b2 stage 1, SRA: 56x56, C=64, 1 head, sr 8",
        spec=lambda: zoo.pvtv2(8),
        dim=64,
        heads=1,
        hw=(56, 56),
        references=(
            Impl("authors", lambda layer, hw: ms.PVTv2Authors(layer)),
            Impl("timm fused", lambda layer, hw: ms.TimmPVTv2(layer, 8, True)),
            Impl("timm unfused", lambda layer, hw: ms.TimmPVTv2(layer, 8, False)),
        ),
        growth="N*N/r^2",
        floor=False,
    )
)
register_case(
    Case(
        name="nat",
        title="NAT-T stage 1: 56x56, C=64, 2 heads, 7x7 neighbourhood, no rpb (NATTEN has none)",
        spec=lambda: zoo.nat(7, rpb=False),
        dim=64,
        heads=2,
        hw=(56, 56),
        references=(
            Impl(
                "natten",
                _nat(nat.NattenNA2d),
                train=False,
                reps=1,  # seconds per call on CPU: one timed call per pass
                max_tokens=56 * 56,  # 112x112, batch 1: over a minute per call
                note="NATTEN's na2d as called by users; on CPU it runs its flex-fna backend "
                "uncompiled, forward only",
            ),
            Impl(
                "flex compiled",
                _nat(nat.FlexNeighborhood),
                train=False,
                max_tokens=_SWEEP_CAP,
                note="torch.compile(flex_attention), block mask from the neighbourhood rule over "
                "row-major tokens; no CPU backward",
            ),
            Impl(
                "dense",
                _nat(nat.DenseNeighborhood),
                max_tokens=_SWEEP_CAP,
                note="one SDPA call over all N x N pairs with an additive -inf mask",
            ),
        ),
        floor=False,
    )
)
