"""An attnblocks partition AND your own masks and score_mod, in your own flex_attention call.

attnblocks.flex gives a partition's mask as a FlexAttention ``mask_mod`` (and its
``BlockMask``); it combines with ``and_masks`` / ``or_masks`` like any other. Checked at the
end against the dense form of the same attention.

Run: python examples/flex_masks.py
"""

# ruff: noqa: E402 (arguments first: --help and a wrong flag answer before torch loads)
import argparse
import warnings

argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
).parse_args()

import torch

from attnblocks import Neighborhood, Window, dense_mask

warnings.filterwarnings("ignore", ".*flex_attention.*")  # uncompiled on CPU: unfused
torch.manual_seed(0)

# --8<-- [start:recipe]
from torch.nn.attention.flex_attention import (
    and_masks,
    create_block_mask,
    flex_attention,
    or_masks,
)

from attnblocks.flex import block_mask, mask_mod, token_order

H, W = 14, 14  # the token map; tokens row-major, n = y * W + x
N = H * W

# attnblocks' partition: DiNAT's 7x7 neighbourhood, keys 2 apart, shifted at the borders
neighbourhood = mask_mod(Neighborhood(7, dilation=2), (H, W))


def sees_token_0(b, h, q_idx, kv_idx):  # your own mask: token 0 is a global "register"
    return kv_idx == 0


def causal(b, h, q_idx, kv_idx):  # your own mask: raster-order causality
    return q_idx >= kv_idx


def distance_penalty(score, b, h, q_idx, kv_idx):  # your own score_mod, per head
    return score - 0.05 * (h + 1) * (q_idx - kv_idx).abs()


mask = and_masks(or_masks(neighbourhood, sees_token_0), causal)
blocks = create_block_mask(mask, None, None, N, N, device="cpu")
q, k, v = (torch.randn(2, 4, N, 32) for _ in range(3))  # (B, heads, N, D)
out = flex_attention(q, k, v, score_mod=distance_penalty, block_mask=blocks)

# windows in the lowering's own order: each window one dense block, the rest skipped
perm, inverse = token_order(Window(7, shift=3), (H, W))
windowed = flex_attention(
    q[:, :, perm],
    k[:, :, perm],
    v[:, :, perm],
    block_mask=block_mask(Window(7, shift=3), (H, W), order="lowering"),
)[:, :, inverse]  # back in row-major order
# --8<-- [end:recipe]


def dense(allowed, bias=None):
    logits = (q @ k.transpose(-1, -2)) * 32**-0.5
    if bias is not None:
        logits = logits + bias
    return logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


allowed = dense_mask(Neighborhood(7, dilation=2), H, W).clone()
allowed[:, 0] = True
allowed &= torch.ones(N, N, dtype=torch.bool).tril()
n = torch.arange(N)
bias = -0.05 * torch.arange(1, 5).view(4, 1, 1) * (n[:, None] - n[None, :]).abs()
torch.testing.assert_close(out, dense(allowed, bias), atol=1e-5, rtol=1e-4)
torch.testing.assert_close(
    windowed, dense(dense_mask(Window(7, shift=3), H, W)), atol=1e-5, rtol=1e-4
)
print(f"{blocks}\nflex_attention with an attnblocks mask AND yours equals the dense form.")
