"""The benchmark suite's references compute what the attnblocks modules compute.

The benchmark checks every implementation against attnblocks before timing it (fp32, at the
case's shape); these tests check the same at small, odd shapes in float64, so that a wrong
reference cannot sneak into the numbers, and test the suite's skip and check hooks.
"""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchmarks import run
from benchmarks.cases import CASES, GROWTH, Case, Impl
from benchmarks.references import Unavailable
from benchmarks.references_multiscale import DilateFormerAuthors
from benchmarks.references_nat import FlexNeighborhood, NattenNA2d, nat_allowed
from benchmarks.report import markdown
from helpers import randomize_

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

NEW = ("dilateformer", "shunted", "pvtv2", "nat")
MIN_SIDE = {"dilateformer": 1, "shunted": 8, "pvtv2": 8, "nat": 7}


def _refs(case: Case, layer, hw) -> dict:
    """The case's references built on ``layer`` (flex eager: same mask, no compile time)."""
    out = {}
    for impl in case.references:
        try:
            if impl.name == "flex compiled":
                out[impl.name] = FlexNeighborhood(layer, 7, compile=False)
            else:
                out[impl.name] = impl.build(layer, hw)
        except Unavailable:
            assert impl.name == "natten"  # the only optional package
    return out


def test_new_cases_are_registered():
    for name in NEW:
        case = CASES[name]
        assert case.growth in GROWTH
        assert not case.floor
        assert case.references
    assert CASES["nat"].impl("natten").train is False
    assert CASES["nat"].impl("flex compiled").train is False
    assert "back-propagates" in CASES["dilateformer"].impl("authors unfold").note


@pytest.mark.parametrize("name", NEW)
@settings(max_examples=5)  # each example builds four modules at the case's width
@example(dh=0, dw=0, B=1)  # the smallest map the case allows
@example(dh=9, dw=2, B=2)
@given(dh=st.integers(0, 9), dw=st.integers(0, 9), B=st.integers(1, 2))
def test_references_match_attnblocks(name, dh, dw, B):
    case = CASES[name]
    hw = (MIN_SIDE[name] + dh, MIN_SIDE[name] + dw)
    layer = randomize_(case.spec().build(case.dim, case.heads), seed=hw[0] * 31 + hw[1])
    refs = _refs(case, layer, hw)
    x = torch.randn(B, *hw, case.dim, generator=torch.Generator().manual_seed(B))
    # float64 where the reference supports it: NATTEN and FlexAttention are checked in fp32
    f32 = {"natten", "flex compiled"}
    with torch.no_grad():
        want64 = layer.double()(x.double())
        want32 = layer.float()(x)
        for ref_name, ref in refs.items():
            if ref_name in f32:
                torch.testing.assert_close(ref.float()(x), want32, atol=2e-5, rtol=1e-5)
            else:
                got = ref.double()(x.double())
                torch.testing.assert_close(got, want64, atol=1e-10, rtol=1e-10)


def test_dilateformer_unfold_reference_trains():
    """Unlike the authors' module, the unfold rewrite back-propagates, to the same gradients."""
    case = CASES["dilateformer"]
    layer = randomize_(case.spec().build(case.dim, case.heads)).double()
    ref = DilateFormerAuthors(layer, 3, (1, 2, 3))
    x = torch.randn(2, 7, 10, case.dim, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 7, 10, case.dim, dtype=torch.float64)
    params = [x, *layer.parameters()]
    want = torch.autograd.grad(layer(x), params, g)
    got = torch.autograd.grad(ref(x), params, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_nat_allowed_sees_k_squared_keys_shifted_at_borders():
    H, W, k = 9, 12, 7
    idx = torch.arange(H * W)
    allowed = nat_allowed(idx[:, None], idx[None, :], H, W, k)
    assert (allowed.sum(1) == k * k).all()
    # the corner query's window is the top-left k x k block, not centred on it
    corner = allowed[0].view(H, W)
    assert corner[:k, :k].all() and corner.sum() == k * k


def test_natten_missing_is_unavailable(monkeypatch):
    layer = CASES["nat"].spec().build(64, 2)
    monkeypatch.setitem(sys.modules, "natten", None)
    with pytest.raises(Unavailable, match="natten is not installed"):
        NattenNA2d(layer, 7)


class _Broken(torch.nn.Module):
    def forward(self, x):
        raise Unavailable("compiler said no")


def _toy_case(**impl) -> Case:
    return Case(
        name="toy",
        title="toy",
        spec=CASES["pvtv2"].spec,
        dim=8,
        heads=1,
        hw=(8, 8),
        references=(Impl("ref", **impl),),
        floor=False,
    )


def test_unavailable_references_are_recorded_not_fatal():
    def refuse(layer, hw):
        raise Unavailable("package missing")

    skipped: dict[str, str] = {}
    assert list(_toy_case(build=refuse).build(skipped=skipped)) == ["attnblocks"]
    assert skipped == {"ref": "package missing"}

    skipped = {}
    big = _toy_case(build=lambda layer, hw: _Broken(), max_tokens=16)
    assert list(big.build(skipped=skipped)) == ["attnblocks"]
    assert skipped == {"ref": "not run above 16 tokens"}

    case = _toy_case(build=lambda layer, hw: _Broken())
    skipped = {}
    mods = case.build(skipped=skipped)
    run.check(case, mods, torch.randn(1, 8, 8, 8), skipped)
    assert list(mods) == ["attnblocks"]
    assert skipped == {"ref": "compiler said no"}


def test_check_rejects_a_wrong_reference():
    case = _toy_case(build=lambda layer, hw: CASES["pvtv2"].references[0].build(layer, hw))
    mods = case.build()
    wrong = {"attnblocks": mods["attnblocks"], "ref": _Shifted(mods["ref"], 1e-3)}
    with pytest.raises(RuntimeError, match="toy: ref differs from attnblocks by"):
        run.check(case, wrong, torch.randn(1, 8, 8, 8), {})
    run.check(case, mods, torch.randn(1, 8, 8, 8), {})  # the right one passes


class _Shifted(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, by: float) -> None:
        super().__init__()
        self.inner, self.by = inner, by

    def forward(self, x):
        return self.inner(x) + self.by


def test_report_shows_notes_skips_and_growth():
    t = {"ms": {"attnblocks": 1.0, "ref": 2.0}, "ratio": {"attnblocks": 1.0, "ref": 2.0}}
    t4 = {"ms": {"attnblocks": 20.0}, "ratio": {"attnblocks": 1.0}, "skipped": {"ref": "big"}}
    case = {
        "title": "toy",
        "growth": "N*N/r^2",
        "notes": {"ref": "the authors' algorithm"},
        "time": {"fwd1": t, "fwd8": t, "train8": t, "skipped": {"flex": "inductor failed"}},
        "sweep": {"8x8": t, "16x16": t4},
    }
    machine = {"torch": "x", "threads": 2, "cpu": "c", "python": "3", "malloc": "default"}
    machine |= {"load_before": 0.0, "load_after": 0.0}
    md = markdown({"machine": machine, "cases": {"toy": case}}, "current")
    assert "- `ref`: the authors' algorithm" in md
    assert "- `flex` not measured: inductor failed" in md
    assert "| toy | N*N/r^2 | 16x16 | 20.00 | 20.0x | 16x | ref not run |" in md
    assert "Distance to the floor" not in md


@pytest.mark.parametrize("thw", [(8, 14, 14), (3, 9, 10), (10, 7, 15)])
def test_video_swin_reference_equals_attnblocks(thw):
    """The Video Swin case's torchvision reference, with the layer's weights, computes the
    layer's attention (float64), at the case's window and at maps it does not divide."""
    from benchmarks.references import TorchvisionSwin3d

    case = CASES["video-swin"]
    layer = randomize_(case.spec().build(12, 3)).double()
    ref = TorchvisionSwin3d(layer).double()
    x = torch.randn(2, *thw, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), layer(x), atol=1e-10, rtol=0)


def test_nat3d_natten_reference_equals_attnblocks():
    """The 3-D neighbourhood case's NATTEN reference computes the layer's attention (fp32:
    NATTEN's CPU kernels take power-of-two head dims and no float64)."""
    pytest.importorskip("natten")
    from benchmarks.references_nat import NattenNA3d

    case = CASES["nat3d"]
    layer = randomize_(case.spec().build(32, 2))
    ref = NattenNA3d(layer, (3, 7, 7))
    x = torch.randn(2, 4, 9, 8, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), layer(x), atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["swin", "cswin"])
def test_floor_steps_run(name):
    """The distance-to-the-floor steps (``benchmarks.floor``) run on the case's spec, in the
    layer's token order and on the map."""
    from benchmarks.floor import core_step, floor_step

    case = CASES[name]
    x = torch.randn(1, 14, 14, case.dim)
    for spec in (case.core_spec(), case.spec()):
        core_step(spec.build(case.dim, case.heads), x)()
    floor_step(case.core_spec().build(case.dim, case.heads), x)()
