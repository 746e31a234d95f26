"""One attention core (attnblocks._core) behind the layer and functional.attention.

- The layer goes through it: a spy on ``attention_core`` sees exactly one call per forward,
  and the layer's output is literally ``layer.proj`` of what the core returned (every zoo
  attention and a hybrid, both the map path and the token-order path).
- ``"auto"`` is decided once per call, before any projection (``plan_call``), never again in
  ``run_group``; the CUDA rule is checked on its own (no GPU needed).
- ``functional.attention(score=...)``: SwinV2's scaled cosine attention equals the layer with
  ``score=Cosine()`` and a dense cosine oracle written from the formula (float64, gradients,
  the logit scale's included).
"""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st

import attnblocks._core as core
import attnblocks.functional as functional_module
import attnblocks.nn as nn_module
from attnblocks import (
    Attention,
    AttnblocksError,
    ContinuousPosBias,
    Cosine,
    Global,
    LePE,
    Neighborhood,
    RelPosBias,
    Split,
    Stripe,
    Window,
    dense_mask,
    zoo,
)
from attnblocks.backends import registry
from attnblocks.functional import attention
from helpers import randomize_
from strategies import maps_and_partitions

f64 = {"atol": 1e-10, "rtol": 1e-9}

ZOO = {
    "swin": zoo.swin(3, shift=1),
    "swin_unshifted": zoo.swin(3),
    "swinv2": zoo.swinv2(3, shift=1),
    "cswin": zoo.cswin(2),
    "cswin_last": zoo.cswin(2, last=True),
    "maxvit_block": zoo.maxvit_block(3),
    "maxvit_grid": zoo.maxvit_grid(3),
    "pvtv2": zoo.pvtv2(2),
    "shunted": zoo.shunted(2),
    "dilateformer": zoo.dilateformer(3, (1, 2)),
    "nat": zoo.nat(3),
    "dinat": zoo.dinat(3, 2),
    "hybrid": Attention(
        heads=Split(Window(3, shift=1), Stripe(2, axis="v"), Neighborhood(3), Global())
    ),
    "hybrid_rpb": Attention(
        heads=Split(Window(3, shift=1), Neighborhood(3)), pe=RelPosBias(size=3)
    ),
    "hybrid_lepe": Attention(  # two rectangular layouts: the token-order path, two orders
        heads=Split(Window(3, shift=1), Stripe(2, axis="h")), pe=(LePE(), RelPosBias(size=10))
    ),
    "cosine_hybrid": Attention(
        heads=Split(Window(3), Stripe(3, axis="h")), pe=ContinuousPosBias(), score=Cosine()
    ),
}


def _spy(monkeypatch, module, name="attention_core"):
    """Replace ``module.attention_core`` by a wrapper recording ``(plan, outputs)``."""
    calls = []
    real = getattr(module, name)

    def spy(plan, runners, inputs, ctx):
        outs = real(plan, runners, inputs, ctx)
        calls.append((plan, outs))
        return outs

    monkeypatch.setattr(module, name, spy)
    return calls


def _on_map(plan, outs, H, W):
    """The core's per-group outputs as ``(B, H, W, C)`` row-major, whatever order it used."""
    maps = []
    for i, o in enumerate(outs):
        if plan.layouts is not None:
            o = core.restore_order(o, core.token_order(plan.layouts[i], o.device))
        maps.append(o.reshape(o.shape[0], H, W, o.shape[-1]))
    return torch.cat(maps, dim=-1)


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("shape", [(4, 6, 6), (1, 7, 6)])  # token order / map (padded, few)
def test_the_layer_is_its_projections_around_the_core(monkeypatch, name, shape):
    B, H, W = shape
    layer = randomize_(ZOO[name].build(8, 4).double(), seed=5)
    x = torch.randn(B, H, W, 8, dtype=torch.float64)
    calls = _spy(monkeypatch, nn_module)
    out = layer(x)
    assert len(calls) == 1
    plan, outs = calls[0]
    assert len(plan.groups) == len(layer.groups) and "auto" not in plan.backends
    torch.testing.assert_close(out, layer.proj(_on_map(plan, outs, H, W)), **f64)


def test_both_paths_are_taken_by_the_zoo():
    """The spy test above sees the token-order path and the map path (so both are covered)."""
    x = torch.randn(4, 6, 6, 8)
    ordered = zoo.swin(3, shift=1).build(8, 4)
    assert ordered._plan(x).layouts is not None
    assert ordered._plan(x[:1, :5]).layouts is None  # padded: the map path
    assert zoo.swinv2(3).build(8, 4)._plan(x).layouts is None  # the score acts on the map


@pytest.mark.parametrize("name", [n for n in ZOO if n not in ("pvtv2", "shunted")])
def test_functional_attention_runs_the_same_core(monkeypatch, name):
    """``layer(x) == layer.proj(attention(q, k, v, ...))`` for the layer's own q, k, v, score
    and encoders, gradients included; functional.attention calls the core once too."""
    layer = randomize_(ZOO[name].build(8, 4).double(), seed=6)
    B, H, W = 2, 6, 7
    x = torch.randn(B, H, W, 8, dtype=torch.float64, requires_grad=True)
    ref = layer(x)
    calls = _spy(monkeypatch, functional_module)
    q, k, v = layer.qkv(x).view(B, H, W, 3, 4, 2).unbind(3)
    spec = layer.spec
    scale = None if spec.score is not None else layer.scale
    o = attention(
        q, k, v, spec.partition, heads=spec.heads, scale=scale, pe=layer.pe, score=layer.score,
        pad=spec.pad,
    )  # fmt: skip
    out = layer.proj(o.reshape(B, H, W, 8))
    assert len(calls) == 1
    torch.testing.assert_close(out, ref, **f64)
    params = [x, *(p for p in layer.parameters() if p.requires_grad)]
    g = torch.randn(ref.shape, dtype=ref.dtype)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, **f64)


# ---------------------------------------------------------------------------------------------
# "auto": one decision per call
# ---------------------------------------------------------------------------------------------


def test_auto_is_decided_once_per_call_and_group(monkeypatch):
    seen = []
    real = registry.auto_backend

    def counting(partition, device, grad):
        seen.append(partition)
        return real(partition, device, grad)

    def never(*args):
        raise AssertionError("run_group decided 'auto' again")

    monkeypatch.setattr(core, "auto_backend", counting)
    monkeypatch.setattr("attnblocks.runners.choose_backend", never)
    x = torch.randn(4, 6, 6, 8)
    for spec in (zoo.swin(3, shift=1), zoo.cswin(2), ZOO["hybrid"], zoo.pvtv2(2), zoo.nat(3)):
        layer = spec.build(8, 4)
        for xi in (x, x[:1, :5]):  # token order and map paths
            seen.clear()
            layer(xi)
            assert seen == [g.partition for g in layer.groups]
    q = torch.randn(1, 6, 6, 4, 2)
    seen.clear()
    attention(q, q, q, Split(Window(3), Neighborhood(3)))
    assert len(seen) == 2


def test_the_cuda_rule_of_auto(monkeypatch):
    """``AUTO_FLEX_ON_CUDA`` (off: unmeasured) picks flex on CUDA, compiling, without a graph,
    for partitions with a flex lowering; ``grad()`` is asked only then. No GPU needed: the
    plan is plain data."""
    groups = Attention(heads=Split(Window(3), Neighborhood(3))).groups(8, 4)
    asked = []

    def grad(value):
        def ask():
            asked.append(value)
            return value

        return ask

    shape = (2, 6, 6)
    plan = core.plan_call(groups, shape, "cuda", "mask", "auto", grad(False))
    assert plan.backends == ("eager", "eager") and asked == []  # the rule is off
    monkeypatch.setattr(registry, "AUTO_FLEX_ON_CUDA", True)
    assert core.plan_call(groups, shape, "cuda", "mask", "auto", grad(False)).backends == (
        "eager",
        "eager",
    )  # not compiling
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert core.plan_call(groups, shape, "cpu", "mask", "auto", grad(False)).backends == (
        "eager",
        "eager",
    )
    assert asked == []
    assert core.plan_call(groups, shape, "cuda", "mask", "auto", grad(False)).backends == (
        "flex",
        "flex",
    )
    assert core.plan_call(groups, shape, "cuda", "mask", "auto", grad(True)).backends == (
        "eager",
        "eager",
    )
    layer = Attention(partition=Window(3)).build(8, 4)
    plan = core.plan_call(layer.groups, shape, "cuda", "mask", "auto", grad(False), layer.runners)
    assert plan.backends == ("flex",) and plan.layouts is None  # token order: eager only


# ---------------------------------------------------------------------------------------------
# the Cosine score in functional.attention
# ---------------------------------------------------------------------------------------------


def cosine_oracle(q, k, v, parts, logit_scale, max_scale=100.0):
    """Dense masked softmax of ``cos(q, k) * min(exp(logit_scale), max_scale)`` per head
    group, from the oracle masks: ``(B, H, W, h, D)``."""
    H, W, h = q.shape[1:4]
    n = len(parts)
    s = torch.minimum(logit_scale.reshape(-1).exp(), torch.tensor(max_scale, dtype=q.dtype))
    outs = []
    for i, part in enumerate(parts):
        allowed = dense_mask(part, H, W)
        sl = slice(i * h // n, (i + 1) * h // n)
        qg, kg, vg = (rearrange(t[:, :, :, sl], "b y x h d -> b h (y x) d") for t in (q, k, v))
        dots = qg @ kg.transpose(-1, -2)
        norms = qg.norm(dim=-1)[..., :, None] * kg.norm(dim=-1)[..., None, :]
        logits = dots / norms * s[sl, None, None]
        w = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        outs.append(rearrange(w @ vg, "b h (y x) d -> b y x h d", y=H))
    return torch.cat(outs, dim=3)


def _score(h, seed=0, max_scale=100.0):
    score = Cosine(max_scale=max_scale).build(h).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # per-head scales around 10, some clamped at max_scale
        score.logit_scale.copy_(math.log(10.0) + torch.randn(h, 1, 1, generator=gen))
    return score


@given(case=maps_and_partitions(), h=st.integers(1, 3), D=st.integers(1, 4), B=st.integers(0, 2))
def test_cosine_equals_dense_oracle_with_gradients(case, h, D, B):
    H, W, part = case
    gen = torch.Generator().manual_seed(B + 7 * h + 31 * D)
    q, k, v = (
        torch.randn(B, H, W, h, D, generator=gen, dtype=torch.float64).requires_grad_()
        for _ in range(3)
    )
    score = _score(h, seed=h, max_scale=12.0)
    out = attention(q, k, v, part, score=score)
    ref = cosine_oracle(q, k, v, [part], score.logit_scale, max_scale=12.0)
    torch.testing.assert_close(out, ref, **f64)
    if B:
        inputs = (q, k, v, score.logit_scale)
        g = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
            torch.testing.assert_close(a, b, **f64)


@settings(max_examples=10)
@given(H=st.integers(2, 9), W=st.integers(2, 9))
def test_cosine_under_a_split_equals_the_oracle(H, W):
    parts = [Window(3, shift=1), Neighborhood(3) if min(H, W) >= 3 else Global()]
    gen = torch.Generator().manual_seed(H * 10 + W)
    q, k, v = (torch.randn(2, H, W, 4, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    score = _score(4, seed=H)
    out = attention(q, k, v, Split(*parts), score=score)
    torch.testing.assert_close(out, cosine_oracle(q, k, v, parts, score.logit_scale), **f64)


@pytest.mark.parametrize("backend", ["eager", "dense", "flex"])
def test_cosine_on_every_backend_and_with_keys_of_another_map(backend):
    import warnings

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 5, 7, 2, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    score = _score(2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex without compile: unfused on CPU
        out = attention(q, k, v, Window(3, shift=1), score=score, backend=backend)
        ref = cosine_oracle(q, k, v, [Window(3, shift=1)], score.logit_scale)
        torch.testing.assert_close(out, ref, **f64)
        kc, vc = k[:, :3, :4], v[:, :3, :4]  # cross-attention: every query over 12 keys
        out = attention(q, kc, vc, Global(), score=score, backend=backend)
    qt, kt, vt = (rearrange(t, "b y x h d -> b h (y x) d") for t in (q, kc, vc))
    cos = (qt / qt.norm(dim=-1, keepdim=True)) @ (kt / kt.norm(dim=-1, keepdim=True)).mT
    s = score.logit_scale.exp()  # (h, 1, 1): below the clamp here
    ref = rearrange((cos * s).softmax(-1) @ vt, "b h (y x) d -> b y x h d", y=5)
    torch.testing.assert_close(out, ref, **f64)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"score": Cosine()}, TypeError, "built score module"),
        ({"score": "cosine"}, TypeError, "built score module"),
        ({"score": Cosine().build(2), "scale": 0.5}, AttnblocksError, "own logit scale"),
        ({"score": Cosine().build(3)}, AttnblocksError, "built for 3 heads.*q has 2"),
    ],
)
def test_score_errors(kwargs, error, match):
    q = torch.randn(1, 4, 4, 2, 3)
    with pytest.raises(error, match=match):
        attention(q, q, q, Window(2), **kwargs)


def test_score_needs_one_key_tensor():
    q = torch.randn(1, 4, 4, 2, 3)
    with pytest.raises(AttnblocksError, match="give k as one tensor"):
        attention(q, [q[..., :1, :], q[..., 1:, :]], [q[..., :1, :], q[..., 1:, :]],
                  Split(Window(2), Global()), score=Cosine().build(2))  # fmt: skip
