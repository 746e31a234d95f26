"""The plain reference implementations against the authors' golden outputs, plus
self-consistency checks of the reference neighborhood and grid attentions."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

try:  # repo root on sys.path (python -m pytest, or tests/ made a package)
    from tests.references import plain
    from tests.references.golden import golden_cases, load_golden
except ImportError:  # pytest's default rootdir insertion of tests/
    from references import plain  # type: ignore[no-redef]
    from references.golden import golden_cases, load_golden  # type: ignore[no-redef]

# float64 throughout; the authors' outputs were computed in float64 too, so only summation-order
# rounding separates the two (observed max |diff| ~1e-15).
ATOL, RTOL = 1e-10, 1e-8


def _run_swin(p: dict, x: torch.Tensor, m: dict[str, Any]) -> torch.Tensor:
    return plain.swin_attention(p, x, m["window"], m["shift"], m["heads"])


def _run_cswin(p: dict, x: torch.Tensor, m: dict[str, Any]) -> torch.Tensor:
    return plain.cswin_attention(p, x, m["split"], m["heads"], last=m["last"])


def _run_dilateformer(p: dict, x: torch.Tensor, m: dict[str, Any]) -> torch.Tensor:
    return plain.dilateformer_attention(p, x, m["kernel"], m["dilation"], m["heads"])


def _run_shunted(p: dict, x: torch.Tensor, m: dict[str, Any]) -> torch.Tensor:
    return plain.shunted_attention(p, x, m["sr"], m["heads"])


def _run_pvtv2(p: dict, x: torch.Tensor, m: dict[str, Any]) -> torch.Tensor:
    return plain.pvtv2_attention(p, x, m["sr"], m["heads"])


RUNNERS: dict[str, Callable[[dict, torch.Tensor, dict[str, Any]], torch.Tensor]] = {
    "swin": _run_swin,
    "cswin": _run_cswin,
    "dilateformer": _run_dilateformer,
    "shunted": _run_shunted,
    "pvtv2": _run_pvtv2,
}

CASES = [c for fam in RUNNERS for c in golden_cases(fam)]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_plain_reference_matches_authors(case: dict[str, Any]) -> None:
    g = load_golden(case)
    meta = g["meta"]
    x = g["x"].clone().requires_grad_(g["grad_x"] is not None)
    y = RUNNERS[meta["family"]](g["params"], x, meta)
    assert y.shape == g["y"].shape and y.dtype == torch.float64
    err = (y - g["y"]).abs().max().item()
    assert torch.allclose(y, g["y"], atol=ATOL, rtol=RTOL), f"max |y - golden| = {err:.3e}"
    if g["grad_x"] is not None:
        (grad_x,) = torch.autograd.grad(y, x, g["grad_y"])
        gerr = (grad_x - g["grad_x"]).abs().max().item()
        assert torch.allclose(grad_x, g["grad_x"], atol=ATOL, rtol=RTOL), (
            f"max |grad_x - golden| = {gerr:.3e}"
        )


def test_golden_index_is_complete() -> None:
    """Every golden family has a runner (or the golden dir is absent)."""
    assert {c["family"] for c in golden_cases()} <= set(RUNNERS)


# ---------------------------------------------------------------------------------------------
# neighborhood attention self-consistency
# ---------------------------------------------------------------------------------------------


def _qkv(B: int, nh: int, H: int, W: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, nh, H, W, d, generator=g, dtype=torch.float64) for _ in range(3)]


def _global(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed=None) -> torch.Tensor:
    """Dense global attention over all H*W keys with an optional boolean (N, N) mask."""
    B, nh, H, W, d = q.shape
    qf, kf, vf = (t.reshape(B, nh, H * W, d) for t in (q, k, v))
    logits = qf @ kf.transpose(-1, -2) * d**-0.5
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(logits, dim=-1) @ vf).reshape(B, nh, H, W, d)


def test_na_kernel_equal_to_map_is_global() -> None:
    q, k, v = _qkv(2, 2, 5, 5, 4)
    out = plain.neighborhood_attention(q, k, v, kernel=5, dilation=1, border="shift")
    assert torch.allclose(out, _global(q, k, v), atol=1e-12)


def test_na_dilated_full_subgrid_is_global_on_subgrid() -> None:
    """k equal to every sub-grid length: each query attends to its whole sub-grid."""
    H, W, r, kern = 6, 6, 2, 3
    q, k, v = _qkv(1, 2, H, W, 4, seed=1)
    out = plain.neighborhood_attention(q, k, v, kernel=kern, dilation=r, border="shift")
    ys = torch.arange(H).repeat_interleave(W)
    xs = torch.arange(W).repeat(H)
    allowed = ((ys[:, None] - ys[None, :]) % r == 0) & ((xs[:, None] - xs[None, :]) % r == 0)
    assert torch.allclose(out, _global(q, k, v, allowed), atol=1e-12)


@pytest.mark.parametrize(("H", "W", "kern", "r"), [(7, 9, 3, 1), (11, 8, 3, 2), (13, 12, 5, 2)])
def test_na_border_modes_agree_inside(H: int, W: int, kern: int, r: int) -> None:
    q, k, v = _qkv(1, 2, H, W, 4, seed=2)
    modes = ("shift", "zeros", "mask")
    outs = {b: plain.neighborhood_attention(q, k, v, kern, r, b) for b in modes}
    reach = r * (kern // 2)
    inner = (slice(None), slice(None), slice(reach, H - reach), slice(reach, W - reach))
    assert torch.allclose(outs["shift"][inner], outs["zeros"][inner], atol=1e-12)
    assert torch.allclose(outs["shift"][inner], outs["mask"][inner], atol=1e-12)
    # at the borders the three rules really differ
    assert not torch.allclose(outs["shift"], outs["zeros"])
    assert not torch.allclose(outs["zeros"], outs["mask"])


@pytest.mark.parametrize(("H", "W", "kern", "r"), [(7, 9, 3, 1), (11, 8, 3, 2), (9, 10, 3, 3)])
def test_na_shift_sees_k2_distinct_real_keys(H: int, W: int, kern: int, r: int) -> None:
    """Uniform attention (q = 0) over one-hot values exposes the key set of each query."""
    N = H * W
    q = torch.zeros(1, 1, H, W, N, dtype=torch.float64)
    onehot = torch.eye(N, dtype=torch.float64).reshape(1, 1, H, W, N)
    out = plain.neighborhood_attention(q, onehot, onehot, kern, r, "shift")[0, 0]
    for y, x in itertools.product(range(H), range(W)):
        w = out[y, x].reshape(H, W)
        keys = (w > 0).nonzero().tolist()
        assert len(keys) == kern * kern
        assert torch.allclose(w[w > 0], torch.full((kern * kern,), 1.0 / kern**2, dtype=w.dtype))
        assert all(a % r == y % r and b % r == x % r for a, b in keys)
        # contiguous on the sub-grid, contains the query, as centred as the borders allow
        rows = sorted({a for a, _ in keys})
        assert y in rows and rows == list(range(rows[0], rows[0] + kern * r, r))
        if rows[0] > y % r and rows[-1] + r < H:  # not touching a border: centred
            assert rows[kern // 2] == y


def test_na_shift_rejects_short_subgrid() -> None:
    q, k, v = _qkv(1, 1, 6, 6, 2)
    with pytest.raises(ValueError):
        plain.neighborhood_attention(q, k, v, kernel=3, dilation=3, border="shift")


@pytest.mark.parametrize("dilations", [[1, 2], [2, 3]])
def test_na_zeros_matches_dilateformer_core(dilations: list[int]) -> None:
    """The per-query "zeros" rule equals the offset-unfolding DilateFormer reference."""
    B, H, W, C, h, kern = 2, 7, 6, 16, 4, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, H, W, C, generator=g, dtype=torch.float64)
    eye = torch.eye(C, dtype=torch.float64)
    wqkv = torch.randn(3 * C, C, generator=g, dtype=torch.float64) * 0.3
    params = {
        "qkv.weight": wqkv.reshape(3 * C, C, 1, 1),
        "qkv.bias": torch.zeros(3 * C, dtype=torch.float64),
        "proj.weight": eye,
        "proj.bias": torch.zeros(C, dtype=torch.float64),
    }
    y = plain.dilateformer_attention(params, x, kern, dilations, h)
    d = C // h
    qkv = (x @ wqkv.T).reshape(B, H, W, 3, h, d).permute(3, 0, 4, 1, 2, 5)
    per_group = h // len(dilations)
    outs = []
    for i, r in enumerate(dilations):
        hs = slice(i * per_group, (i + 1) * per_group)
        outs.append(
            plain.neighborhood_attention(
                qkv[0][:, hs], qkv[1][:, hs], qkv[2][:, hs], kern, r, "zeros"
            )
        )
    ref = torch.cat(outs, dim=1).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
    assert torch.allclose(y, ref, atol=1e-12)


def test_na_is_differentiable() -> None:
    q, k, v = (t.requires_grad_() for t in _qkv(1, 1, 5, 4, 3))
    out = plain.neighborhood_attention(q, k, v, 3, 1, "zeros")
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


# ---------------------------------------------------------------------------------------------
# grid attention self-consistency
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("H", "W", "G"), [(6, 6, 2), (6, 9, 3), (4, 8, 4)])
def test_grid_attention_token_sets(H: int, W: int, G: int) -> None:
    q, k, v = _qkv(2, 2, H, W, 4, seed=4)
    out = plain.grid_attention(q, k, v, G)
    # dense mask: tokens share a set iff congruent modulo the spacing on both axes
    ys = torch.arange(H).repeat_interleave(W)
    xs = torch.arange(W).repeat(H)
    sh, sw = H // G, W // G
    allowed = ((ys[:, None] - ys[None, :]) % sh == 0) & ((xs[:, None] - xs[None, :]) % sw == 0)
    assert int(allowed.sum(1).min()) == G * G == int(allowed.sum(1).max())
    assert torch.allclose(out, _global(q, k, v, allowed), atol=1e-12)
    # the einops layout b (g1 h) (g2 w) c -> (b h w) (g1 g2) c, one set written out by hand
    i, j = sh - 1, 0
    coords = [(i + g1 * sh, j + g2 * sw) for g1 in range(G) for g2 in range(G)]
    sel = [a * W + b for a, b in coords]
    sub = [t.reshape(2, 2, H * W, 4)[:, :, sel].reshape(2, 2, G, G, 4) for t in (q, k, v)]
    sub_out = _global(*sub)
    for t, (a, b) in enumerate(coords):
        assert torch.allclose(out[:, :, a, b], sub_out[:, :, t // G, t % G], atol=1e-12)


def test_grid_equals_global_when_grid_is_map() -> None:
    q, k, v = _qkv(1, 2, 4, 4, 3, seed=5)
    assert torch.allclose(plain.grid_attention(q, k, v, 4), _global(q, k, v), atol=1e-12)
