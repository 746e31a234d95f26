"""NaN containment: a non-finite token contaminates exactly its dependents, as the dense
oracle's mask defines them (queries whose key set holds it, and itself as a query), in every
backend and mode; every other output equals the clean run's."""

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnblocks import (
    Attention,
    Dilated,
    Downsample,
    Grid,
    Neighborhood,
    RelPosBias,
    Split,
    Stripe,
    Window,
    zoo,
)
from attnblocks.introspect import dense_mask
from helpers import randomize_
from strategies import maps_and_partitions


def _oracle_part(p):
    # border="zeros" keeps out-of-map zero keys in the softmax: the same real keys as "mask"
    if isinstance(p, Dilated) and p.border == "zeros":
        return dataclasses.replace(p, border="mask")
    return p


def _dependents(spec: Attention, H: int, W: int, j: int) -> torch.Tensor:
    """``(N,)`` bool: the queries whose output depends on token ``j``."""
    deps = torch.zeros(H * W, dtype=torch.bool)
    heads = spec.heads.count if spec.heads else 1
    for g in spec.groups(heads, heads):
        p = g.partition
        if isinstance(p, Downsample):  # every query sees the pooled tokens; the strided
            r = p.ratio  # conv floors, so the last rows / columns feed no key
            y, x = divmod(j, W)
            if y < H // r * r and x < W // r * r:
                deps[:] = True
        else:
            deps |= dense_mask(_oracle_part(p), H, W)[:, j]
    deps[j] = True
    return deps


def _check(spec: Attention, H: int, W: int, j: int, value: float, mode: str, seed: int = 0):
    heads = spec.heads.count if spec.heads else 2
    layer = randomize_(spec.build(4 * heads, heads), seed=seed).eval()
    x = torch.randn(2, H, W, 4 * heads, generator=torch.Generator().manual_seed(seed))
    bad = x.clone()
    bad[0].view(H * W, -1)[j] = value
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad}.get(mode, torch.inference_mode)
    with ctx():
        y, clean = layer(bad), layer(x)
    y, clean = y.detach(), clean.detach()
    deps = _dependents(spec, H, W, j)
    hit = ~torch.isfinite(y[0]).all(-1).view(-1)
    assert torch.equal(hit, deps), (
        f"{spec!r} on {H}x{W}, token {j}: {int(hit.sum())} non-finite outputs, "
        f"{int(deps.sum())} dependents, {int((hit & ~deps).sum())} outside"
    )
    rows = y[0].reshape(H * W, -1)[~deps]
    torch.testing.assert_close(rows, clean[0].reshape(H * W, -1)[~deps], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[1], clean[1], atol=1e-5, rtol=1e-5)  # other images


FAMILIES = ["rect_or_sliding", "neighborhood", "downsample", "hybrid"]


@st.composite
def contained_cases(draw):
    """A spec, a map, a poisoned token and how it runs."""
    family = draw(st.sampled_from(FAMILIES))
    if family == "rect_or_sliding":  # shifted windows, stripes, grids, global, dilated
        H, W, part = draw(maps_and_partitions())
        spec = Attention(partition=part)
    elif family == "neighborhood":  # NAT / DiNAT (windows shifted inward at borders)
        H, W = draw(st.integers(3, 10)), draw(st.integers(3, 10))
        k = draw(st.sampled_from([1, 3]))
        r = draw(st.integers(1, max(1, min(H, W) // k)))
        spec = Attention(partition=Neighborhood(k, dilation=r))
    elif family == "downsample":
        H, W = draw(st.integers(2, 9)), draw(st.integers(2, 9))
        spec = Attention(partition=Downsample(draw(st.integers(1, min(H, W)))))
    else:
        H, W = draw(st.integers(3, 9)), draw(st.integers(3, 9))
        spec = Attention(
            heads=Split(
                Window(3, shift=1),
                draw(st.sampled_from([Neighborhood(3), Stripe(2, axis="v"), Grid(2)])),
            )
        )
    backend = draw(st.sampled_from(["eager", "eager", "dense", "flex"]))
    if family == "downsample" and backend != "eager":
        backend = "eager"  # its own keys: the eager runner only
    spec = dataclasses.replace(spec, backend=backend)
    j = draw(st.integers(0, H * W - 1))
    value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    mode = draw(st.sampled_from(["grad", "no_grad", "inference"]))
    return spec, H, W, j, value, mode


@given(contained_cases())
def test_nonfinite_token_reaches_exactly_its_dependents(case):
    _check(*case)


@pytest.mark.parametrize(
    "spec",
    [
        zoo.swin(3, shift=1),
        zoo.nat(3),
        zoo.dinat(3, 2),
        zoo.dilateformer(3, (1, 2)),
        zoo.swinv2(3, shift=1),
        zoo.maxvit_grid(3),
    ],
    ids=["swin", "nat", "dinat", "dilateformer", "swinv2", "maxvit_grid"],
)
@pytest.mark.parametrize("hw", [(6, 6), (7, 8)])
def test_zoo_layers_contain_nan(spec, hw):
    """The zoo's masked and sliding layers (biases included), a map the windows divide and one
    they do not: one NaN token of a 7x8 NAT map, say, reaches its 9 dependents, not 56."""
    H, W = hw
    for j in (0, H * W // 2 + 1, H * W - 1):
        _check(spec, H, W, j, float("nan"), "no_grad")


def test_nan_in_q_only_reaches_its_own_query():
    """A non-finite query reaches its own output only; its key and value stay usable."""
    layer = randomize_(zoo.nat(3, rpb=False).build(8, 2)).eval()
    x = torch.randn(1, 6, 6, 8)
    qkv = layer.qkv(x).view(1, 6, 6, 3, 8)
    from attnblocks.runners import RunContext, run_group

    ctx = RunContext(x, layer.scale, layer.pe, 0.0, "mask")
    clean = run_group(layer.runners[0], qkv, ctx)
    bad = qkv.clone()
    bad[0, 2, 3, 0, 1] = float("nan")
    out = run_group(layer.runners[0], bad, ctx)
    hit = ~torch.isfinite(out).all(-1)
    assert hit.sum() == 1 and hit[0, 2, 3]
    torch.testing.assert_close(out[~hit], clean[~hit])


def test_finite_overflow_is_returned_as_computed():
    """Non-finite outputs from finite inputs (fp16 overflow) are not the containment's:
    returned as the lowering computes them."""
    spec = Attention(partition=Window(3, shift=1), pe=RelPosBias())
    layer = randomize_(spec.build(8, 2)).eval()
    x = torch.randn(1, 6, 6, 8)
    qkv = layer.qkv(x).view(1, 6, 6, 3, 8).detach()
    qkv[..., 2, :] = 6e4  # finite in fp16; sums of v overflow nowhere, the logits do
    qkv = qkv.half()
    from attnblocks.runners import RunContext, run_group

    ctx = RunContext(x.half(), layer.scale, layer.pe.half(), 0.0, "mask")
    out = run_group(layer.runners[0], qkv, ctx)
    ref = layer.runners[0](qkv, ctx)
    torch.testing.assert_close(out, ref, equal_nan=True)


MODE_SPECS = {
    "swin": zoo.swin(3, shift=1),
    "nat": zoo.nat(3),
}


@pytest.mark.parametrize("name", list(MODE_SPECS))
def test_containment_identical_in_every_mode(name):
    """eager, no_grad, inference_mode, torch.compile(fullgraph) and torch.export give the same
    NaN pattern and the same finite values on a poisoned input, and on a clean one."""
    torch._dynamo.reset()
    layer = randomize_(MODE_SPECS[name].build(8, 2), seed=3).eval()
    x = torch.randn(2, 7, 8, 8)
    bad = x.clone()
    bad[0, 3, 4] = float("nan")
    ref = layer(bad).detach()
    assert 0 < (~torch.isfinite(ref[0]).all(-1)).sum() < 56
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        outs = {"no_grad": layer(bad), "compiled": compiled(bad)}
        outs["compiled_clean"] = compiled(x)
    with torch.inference_mode():
        outs["inference_mode"] = layer(bad)
    outs["compiled_grad"] = compiled(bad).detach()
    outs["export"] = torch.export.export(layer, (bad,)).module()(bad)
    for mode, y in outs.items():
        want = layer(x).detach() if mode == "compiled_clean" else ref
        torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5, equal_nan=True, msg=mode)
