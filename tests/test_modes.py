"""A layer behaves the same whatever mode ran before it: inference_mode, no_grad with ``.data``
edits (an EMA teacher), torch.export, jit.trace, torch.func's transforms; and its caches stay
bounded over many sizes.
(torch.compile across modes and sizes: tests/test_compile.py.)
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import attnblocks
from attnblocks import _cache
from helpers import SMALL_HYBRIDS, SMALL_ZOO, randomize_

# every zoo layer and a hybrid, with a map size that needs no padding and one that does
LAYERS = {**SMALL_ZOO, "hybrid": SMALL_HYBRIDS["hybrid_stripes"]}


def _build(name: str, seed: int = 0) -> torch.nn.Module:
    return randomize_(LAYERS[name].build(8, 2), seed=seed)


@pytest.mark.parametrize("name", list(LAYERS))
def test_inference_mode_then_training_step(name):
    """Validation under inference_mode, then a training step: of this layer, and of a new
    layer at another size (nothing made in inference mode is kept and reused)."""
    layer = _build(name)
    x = torch.randn(2, 6, 6, 8)
    with torch.inference_mode():
        y_inf = layer(x)
    y = layer(x)
    y.square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    torch.testing.assert_close(y.detach(), y_inf, atol=1e-6, rtol=1e-6)
    with torch.inference_mode():
        layer(torch.randn(1, 9, 7, 8))
    other = _build(name, seed=1)
    other(torch.randn(1, 9, 7, 8)).sum().backward()
    assert all(p.grad is not None for p in other.parameters())


def test_cached_tensors_are_plain_after_inference_mode():
    """What the size caches hold is never an inference tensor nor needs a gradient."""
    layer = _build("swin")
    with torch.inference_mode():
        layer(torch.randn(1, 7, 8, 8))
    tensors = []

    def walk(v):
        if isinstance(v, torch.Tensor):
            tensors.append(v)
        elif isinstance(v, (tuple, list)):
            for u in v:
                walk(u)

    for value, _ in _cache._ENTRIES.values():
        walk(value)
    assert tensors
    assert not any(t.is_inference() or t.requires_grad for t in tensors)


@pytest.mark.parametrize("name", list(LAYERS))
def test_ema_through_data_under_no_grad(name):
    """A teacher updated through ``.data`` (``p.data.mul_(m).add_(q.data, alpha=1 - m)``, DINO /
    BYOL) evaluates its new weights, in eval and under no_grad."""
    student, teacher = _build(name, seed=1).eval(), _build(name, seed=2).eval()
    x = torch.randn(2, 6, 7, 8)
    with torch.no_grad():
        teacher(x)  # a first call, before the update
        for p, q in zip(teacher.parameters(), student.parameters()):
            p.data.mul_(0.0).add_(q.data, alpha=1.0)
        torch.testing.assert_close(teacher(x), student(x), atol=1e-6, rtol=1e-6)
        teacher.load_state_dict(_build(name, seed=3).state_dict())
        torch.testing.assert_close(teacher(x), _build(name, seed=3).eval()(x))


@pytest.mark.parametrize("name", ["nat", "dinat", "dilateformer"])
def test_export_then_eager_returns_real_tensors(name):
    """torch.export (static) before any eager call; later eager calls return plain tensors equal
    to a fresh layer's, and the exported program matches eager."""
    layer = _build(name).eval()
    x = torch.randn(1, 7, 9, 8)
    ep = torch.export.export(layer, (x,))
    y = layer(x)
    assert type(y) is torch.Tensor
    torch.testing.assert_close(y, _build(name).eval()(x))
    torch.testing.assert_close(ep.module()(x), y, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["swin", "nat", "cswin"])
def test_jit_trace_matches_eager_at_its_size(name):
    """jit.trace records the layer for the traced map size (sizes become constants)."""
    layer = _build(name).eval()
    x = torch.randn(1, 7, 9, 8)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(layer, x, check_trace=False)
    torch.testing.assert_close(traced(x), layer(x))


F64 = {"atol": 1e-10, "rtol": 1e-10}


@pytest.mark.parametrize("name", list(LAYERS))
def test_torch_func_grad_per_sample_ensemble_and_jvp(name):
    """``torch.func`` (per-sample gradients as Opacus computes them, functorch ensembles,
    forward mode), float64 to 1e-10: ``grad`` equals autograd; ``vmap(grad)`` over samples
    equals a loop of single-sample backward passes; ``vmap`` over stacked weights equals each
    model; ``jvp`` equals autograd's double-backward jvp; and under ``vmap`` a NaN token still
    reaches only its own queries' outputs, as in eager."""
    from torch.func import functional_call, grad, jvp, stack_module_state, vmap

    layer = _build(name, seed=1).double()
    x = torch.randn(3, 6, 7, 8, dtype=torch.float64)
    params = {k: p.detach() for k, p in layer.named_parameters()}

    def loss(p, xb):
        return functional_call(layer, p, (xb,)).square().sum()

    layer.zero_grad()
    loss(dict(layer.named_parameters()), x).backward()
    got = grad(loss)(params, x)
    for k, p in layer.named_parameters():
        torch.testing.assert_close(got[k], p.grad, **F64)

    per_sample = vmap(grad(lambda p, xi: loss(p, xi[None])), in_dims=(None, 0))(params, x)
    for i in range(3):
        layer.zero_grad()
        loss(dict(layer.named_parameters()), x[i : i + 1]).backward()
        for k, p in layer.named_parameters():
            torch.testing.assert_close(per_sample[k][i], p.grad, **F64)

    models = [_build(name, seed=s).double() for s in (2, 3)]
    stacked, buffers = stack_module_state(models)
    ys = vmap(lambda p, b: functional_call(models[0], (p, b), (x,)))(stacked, buffers)
    for y, m in zip(ys, models):
        torch.testing.assert_close(y, m(x), **F64)

    t = torch.randn_like(x)
    _, tangent = jvp(layer, (x,), (t,))
    _, expected = torch.autograd.functional.jvp(layer, x, t)
    torch.testing.assert_close(tangent, expected, **F64)

    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with torch.no_grad():
        eager = layer(bad)
        mapped = vmap(lambda xi: layer(xi[None])[0])(bad)
    assert eager.isnan().any() and not eager[0].isnan().any()
    torch.testing.assert_close(mapped, eager, equal_nan=True, **F64)


def test_torch_func_hessian_equals_autograd_double_backward():
    """``torch.func.hessian`` (forward over reverse) through windows with a learned bias equals
    ``torch.autograd.functional.hessian`` (reverse over reverse, the twice-differentiable
    attention's own second derivative)."""
    layer = _build("swin", seed=1).double()
    x = torch.randn(1, 3, 4, 8, dtype=torch.float64)

    def f(z):
        return layer(z).square().sum()

    got = torch.func.hessian(f)(x)
    torch.testing.assert_close(got, torch.autograd.functional.hessian(f, x), **F64)


def test_caches_bounded_over_50_map_sizes():
    """NAT over 50 distinct map sizes (a detector's batches): the size caches stay within
    ``MAX_BYTES`` (64 MiB) and the process's RSS grows by less than 96 MiB after the first
    ten sizes (it grew 370 MiB over sizes 39..69 before the bound)."""
    code = textwrap.dedent(
        """
        import os, torch
        from attnblocks import _cache, zoo
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        layer = zoo.nat(7).build(8, 2)
        peak = 0
        for i, s in enumerate(range(20, 70)):
            with torch.no_grad():
                layer(torch.randn(1, s, s + 3, 8))
            peak = max(peak, _cache.cache_bytes())
            if i == 9:
                r0 = rss()
        print(peak, rss() - r0, _cache.MAX_BYTES)
        """
    )
    root = os.path.dirname(os.path.dirname(attnblocks.__file__))
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    peak, growth, bound = map(int, out.stdout.split())
    assert peak <= bound
    assert growth < 96 * 2**20, growth / 2**20


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("hw", [(6, 6), (7, 8)])
def test_batch_zero(name, hw):
    """An empty batch: the same empty shape back, forward and backward, in every mode."""
    layer = _build(name)
    x = torch.randn(0, *hw, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    with torch.inference_mode():
        assert layer(torch.randn(0, *hw, 8)).shape == x.shape
    x = torch.randn(0, hw[0] * hw[1], 8)
    assert layer(x, hw=hw).shape == x.shape
