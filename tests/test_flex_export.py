"""attnblocks.flex: exported mask_mod / BlockMask equal the dense oracle, alone and combined
with the user's own masks (and_masks / or_masks) and score_mod, through flex_attention on CPU
(forward: FlexAttention has no CPU backward in torch 2.14)."""

from __future__ import annotations

import warnings

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import and_masks, create_mask, flex_attention, or_masks

from attnblocks import (
    AttnblocksError,
    Dilated,
    Downsample,
    Global,
    Neighborhood,
    Split,
    Stripe,
    Window,
    dense_mask,
)
from attnblocks.flex import block_mask, mask_mod, token_order
from strategies import maps_and_partitions

pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention.*")
f64 = {"atol": 1e-10, "rtol": 1e-9}


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def dense(q, k, v, allowed, bias=None):
    """Plain masked softmax over ``(B, h, N, d)``; ``allowed: (N, M)`` or ``(h, N, M)``."""
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias
    return logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def _qkv(h, N, M=None, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    M = N if M is None else M
    return (
        torch.randn(2, h, N, d, generator=gen, dtype=torch.float64),
        torch.randn(2, h, M, d, generator=gen, dtype=torch.float64),
        torch.randn(2, h, M, d, generator=gen, dtype=torch.float64),
    )


def _flex(q, k, v, bm, score_mod=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uncompiled flex on CPU: unfused
        return flex_attention(q, k, v, block_mask=bm, score_mod=score_mod)


@given(case=maps_and_partitions())
def test_mask_mod_equals_dense_mask(case):
    H, W, part = case
    N = H * W
    m = create_mask(mask_mod(part, (H, W)), None, None, N, N, device="cpu")[0, 0]
    assert torch.equal(m, dense_mask(part, H, W))


@settings(max_examples=6)
@given(case=maps_and_partitions(), with_causal=st.booleans())
def test_block_mask_through_flex_equals_oracle(case, with_causal):
    H, W, part = case
    N = H * W
    allowed = dense_mask(part, H, W)
    mod = mask_mod(part, (H, W))
    if with_causal:
        mod = and_masks(mod, causal)
        allowed = allowed & torch.ones(N, N, dtype=torch.bool).tril()
    from torch.nn.attention.flex_attention import create_block_mask

    bm = create_block_mask(mod, None, None, N, N, device="cpu")
    q, k, v = _qkv(2, N)
    torch.testing.assert_close(_flex(q, k, v, bm), dense(q, k, v, allowed), **f64)
    if not with_causal:  # the packaged BlockMask too
        bm = block_mask(part, (H, W))
        torch.testing.assert_close(_flex(q, k, v, bm), dense(q, k, v, allowed), **f64)


@settings(max_examples=6)
@given(case=maps_and_partitions())
def test_lowering_order_with_its_permutation_equals_oracle(case):
    """Tokens gathered into the lowering's order (a zero token for padding slots), attended
    with the lowering-order BlockMask, gathered back: the row-major oracle."""
    H, W, part = case
    N = H * W
    perm, inverse = token_order(part, (H, W))
    bm = block_mask(part, (H, W), order="lowering")
    q, k, v = _qkv(2, N, seed=1)
    zero = torch.zeros(2, 2, 1, 4, dtype=torch.float64)
    qs, ks, vs = (torch.cat([t, zero], 2)[:, :, perm] for t in (q, k, v))
    assert bm.shape[-2:] == (perm.numel(), perm.numel())
    out = _flex(qs, ks, vs, bm)[:, :, inverse]
    torch.testing.assert_close(out, dense(q, k, v, dense_mask(part, H, W)), **f64)


def test_lowering_order_is_block_sparse_for_windows():
    bm = block_mask(Window(7, shift=3), (28, 28), order="lowering")
    dense_blocks = bm.to_dense()[0, 0]
    assert dense_blocks.shape == (16, 16)  # 16 windows of 49 tokens, one block each
    assert torch.equal(dense_blocks.bool(), torch.eye(16, dtype=torch.bool))


def test_or_masks_with_a_users_register_token_and_score_mod():
    """An attnblocks partition OR the user's "every query sees token 0", plus the user's own
    score_mod (a distance penalty), against the dense form of the same."""
    H, W = 6, 7
    N = H * W
    part = Neighborhood(3, dilation=2)

    def sees_first(b, h, q_idx, kv_idx):
        return kv_idx == 0

    def penalty(score, b, h, q_idx, kv_idx):
        return score - 0.1 * (h + 1) * (q_idx - kv_idx).abs()

    from torch.nn.attention.flex_attention import create_block_mask

    bm = create_block_mask(
        or_masks(mask_mod(part, (H, W)), sees_first), None, None, N, N, device="cpu"
    )
    q, k, v = _qkv(2, N, seed=2)
    allowed = dense_mask(part, H, W).clone()
    allowed[:, 0] = True
    n = torch.arange(N)
    bias = -0.1 * torch.arange(1, 3).view(2, 1, 1) * (n[:, None] - n[None, :]).abs()
    ref = dense(q, k, v, allowed, bias.double())
    torch.testing.assert_close(_flex(q, k, v, bm, score_mod=penalty), ref, **f64)


def test_split_is_a_head_dependent_mask():
    H, W = 6, 8
    split = Split(Window(3, shift=1), Stripe(2, axis="h"), Neighborhood(3), Global())
    m = create_mask(mask_mod(split, (H, W), num_heads=8), None, 8, H * W, H * W, device="cpu")[0]
    for j in range(8):
        assert torch.equal(m[j], dense_mask(split.partitions[j // 2], H, W))
    bm = block_mask(split, (H, W), num_heads=8)
    q, k, v = _qkv(8, H * W, seed=3)
    allowed = torch.stack([dense_mask(split.partitions[j // 2], H, W) for j in range(8)])
    torch.testing.assert_close(_flex(q, k, v, bm), dense(q, k, v, allowed), **f64)


def test_downsample_keys_are_all_visible_and_causal_composes():
    H, W = 9, 10
    part = Downsample(4)
    Hr, Wr = part.reduced_size(H, W)
    bm = block_mask(part, (H, W))
    assert bm.shape[-2:] == (H * W, Hr * Wr)
    q, k, v = _qkv(2, H * W, Hr * Wr, seed=4)
    ref = dense(q, k, v, torch.ones(H * W, Hr * Wr, dtype=torch.bool))
    torch.testing.assert_close(_flex(q, k, v, bm), ref, **f64)
    from torch.nn.attention.flex_attention import create_block_mask

    mod = and_masks(mask_mod(part, (H, W)), causal)
    bm = create_block_mask(mod, None, None, H * W, Hr * Wr, device="cpu")
    allowed = torch.ones(H * W, Hr * Wr, dtype=torch.bool).tril()
    torch.testing.assert_close(_flex(q, k, v, bm), dense(q, k, v, allowed), **f64)


def test_functional_flex_backend_matches_export():
    """The exported row-major mask and the flex backend of functional.attention agree."""
    from attnblocks.functional import attention

    H, W = 7, 6
    part = Window(3, shift=1)
    q, k, v = _qkv(2, H * W, seed=5)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = [rearrange(t, "b h (y x) d -> b y x h d", y=H) for t in (q, k, v)]
        out = attention(*maps, part, backend="flex")
    ref = _flex(q, k, v, block_mask(part, (H, W)))
    torch.testing.assert_close(rearrange(out, "b y x h d -> b h (y x) d"), ref, **f64)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: mask_mod(Stripe(2), (4, 4)), AttnblocksError, "one form per head group"),
        (lambda: mask_mod(Dilated(3), (4, 4)), AttnblocksError, "border='zeros'"),
        (lambda: mask_mod(Window(2), ()), AttnblocksError, r"must be the map size"),
        (lambda: mask_mod(Window((2, 2, 2)), (4, 4)), AttnblocksError, r"written for 3-D"),
        (lambda: mask_mod(Window(2), (4, 4), order="col"), AttnblocksError, "order must be"),
        (lambda: mask_mod(Split(Window(2), Global()), (4, 4)), AttnblocksError, "num_heads"),
        (
            lambda: mask_mod(Split(Window(2), Global()), (4, 4), num_heads=2, order="lowering"),
            AttnblocksError,
            "row-major. only",
        ),
        (lambda: mask_mod("window", (4, 4)), TypeError, "expected a Partition"),
        (lambda: block_mask(Neighborhood(5), (4, 4)), AttnblocksError, "cannot fit"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
