"""Plain reference implementations of published vision attentions (test oracles).

Written from ``../shared/reference-facts.md`` in the plainest form: explicit Python loops over
windows / stripes / queries / kernel offsets, explicit ``q @ k^T``, explicit softmax, explicit
LayerNorm and erf-GELU. They are deliberately slow and structurally unlike a fused
einops / SDPA path, so they can serve as oracles for it.

Conventions: ``x: (B, H, W, C)``, channels-last, tokens row-major; ``h`` heads of ``d = C / h``
channels, head ``j`` owning channels ``[j*d, (j+1)*d)`` of q, k and v. Parameters come as the
authors' state dict (their key names). Everything is differentiable with autograd: outputs are
assembled with ``torch.cat`` / ``torch.stack``, never written into views of an input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ----------------------------------------------------------------------------------------------
# small building blocks
# ----------------------------------------------------------------------------------------------


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight^T + bias``.  x: (..., C_in), weight: (C_out, C_in) -> (..., C_out)."""
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


def _softmax(logits: Tensor) -> Tensor:
    """Softmax over the last axis, written out (max-subtracted exp / sum)."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values.detach()
    e = torch.exp(shifted)
    return e / e.sum(dim=-1, keepdim=True)


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last axis with biased variance.  x: (..., C)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _gelu_exact(x: Tensor) -> Tensor:
    """Exact (erf) GELU: ``0.5 x (1 + erf(x / sqrt 2))``."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _attend(
    q: Tensor, k: Tensor, v: Tensor, scale_after: float, bias: Tensor | None = None
) -> Tensor:
    """One head, explicit: ``softmax(q @ k^T * scale_after + bias) @ v``.

    q: (Nq, d), k: (Nk, d), v: (Nk, dv), bias: (Nq, Nk) -> (Nq, dv)
    """
    logits = (q @ k.transpose(0, 1)) * scale_after
    if bias is not None:
        logits = logits + bias
    return _softmax(logits) @ v


def _dwconv3x3(v: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Depthwise 3x3 cross-correlation, stride 1, zero padding 1, by loops over the 9 taps.

    v: (h, w, c) channels-last map; weight: (c, 1, 3, 3); bias: (c,) -> (h, w, c)
    """
    h, w, c = v.shape
    padded = torch.cat([v.new_zeros(h, 1, c), v, v.new_zeros(h, 1, c)], dim=1)
    padded = torch.cat([v.new_zeros(1, w + 2, c), padded, v.new_zeros(1, w + 2, c)], dim=0)
    out = bias.expand(h, w, c)
    for a in range(3):
        for b in range(3):
            out = out + padded[a : a + h, b : b + w, :] * weight[:, 0, a, b]
    return out


def _strided_patch_conv(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``Conv2d(C, C', kernel=stride=s)`` with floor semantics, by loops over the s*s taps.

    x: (B, H, W, C); weight: (C', C, s, s) -> (B, H // s, W // s, C')
    """
    s = weight.shape[-1]
    B, H, W, _ = x.shape
    Ho, Wo = H // s, W // s
    out = bias.expand(B, Ho, Wo, weight.shape[0])
    for a in range(s):
        for b in range(s):
            tap = x[:, a : Ho * s : s, b : Wo * s : s, :]  # (B, Ho, Wo, C)
            out = out + _linear(tap, weight[:, :, a, b])
    return out


def _tokens(x: Tensor) -> Tensor:
    """(B, H, W, C) -> (B, H*W, C), row-major."""
    B, H, W, C = x.shape
    return x.reshape(B, H * W, C)


# ----------------------------------------------------------------------------------------------
# Swin v1 (W-MSA / SW-MSA)
# ----------------------------------------------------------------------------------------------


def swin_relative_position_bias(table: Tensor, window: int) -> Tensor:
    """Bias of one window from the authors' table, by a loop over query/key pairs.

    table: ((2M-1)^2, h) -> (h, M*M, M*M); index ``(dh + M-1)*(2M-1) + (dw + M-1)`` with
    ``dh, dw = query coord - key coord``.
    """
    M = window
    index: list[list[int]] = []
    for qi in range(M * M):
        row = []
        for ki in range(M * M):
            dh = qi // M - ki // M
            dw = qi % M - ki % M
            row.append((dh + M - 1) * (2 * M - 1) + (dw + M - 1))
        index.append(row)
    idx = torch.tensor(index, dtype=torch.long)  # (M*M, M*M)
    return table[idx].permute(2, 0, 1)  # (h, M*M, M*M)


def swin_region_ids(H: int, W: int, window: int, shift: int) -> list[list[int]]:
    """Region id ``3*row_band + col_band`` of each pixel of the rolled canvas (loops).

    Bands: ``[0, L-M) -> 0``, ``[L-M, L-s) -> 1``, ``[L-s, L) -> 2`` per axis.
    """

    def band(p: int, L: int) -> int:
        if p < L - window:
            return 0
        if p < L - shift:
            return 1
        return 2

    return [[3 * band(i, H) + band(j, W) for j in range(W)] for i in range(H)]


def swin_attention(
    params: dict[str, Tensor], x: Tensor, window: int, shift: int, num_heads: int
) -> Tensor:
    """Swin v1 window attention with cyclic shift, the authors' semantics.

    x: (B, H, W, C) -> (B, H, W, C). ``window``/``shift`` are post-clamp values; requires
    ``window | H`` and ``window | W``. Roll by ``(-s, -s)``, windows in (row, col) order, q scaled
    by ``d**-0.5`` before ``q @ k^T``, + relative position bias, + shift mask (-100 between
    different regions), softmax, ``@ v``, heads concatenated, proj, roll back by ``(+s, +s)``.
    """
    B, H, W, C = x.shape
    M, s, h = window, shift, num_heads
    if H % M or W % M:
        raise ValueError(f"window {M} must divide the map {H}x{W}")
    d = C // h
    scale = d**-0.5
    bias = swin_relative_position_bias(params["relative_position_bias_table"], M)
    regions = swin_region_ids(H, W, M, s) if s > 0 else None

    xr = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s > 0 else x
    out_rows = []
    for b in range(B):
        band_rows = []
        for wr in range(H // M):
            band = []
            for wc in range(W // M):
                rows, cols = slice(wr * M, (wr + 1) * M), slice(wc * M, (wc + 1) * M)
                tok = xr[b, rows, cols, :].reshape(M * M, C)
                qkv = _linear(tok, params["qkv.weight"], params["qkv.bias"])  # (M*M, 3C)
                mask = None
                if regions is not None:
                    ids = [regions[wr * M + i // M][wc * M + i % M] for i in range(M * M)]
                    mask = torch.tensor(
                        [
                            [0.0 if ids[i] == ids[j] else -100.0 for j in range(M * M)]
                            for i in range(M * M)
                        ],
                        dtype=x.dtype,
                    )
                heads = []
                for j in range(h):
                    q = qkv[:, j * d : (j + 1) * d] * scale
                    k = qkv[:, C + j * d : C + (j + 1) * d]
                    v = qkv[:, 2 * C + j * d : 2 * C + (j + 1) * d]
                    logits = q @ k.transpose(0, 1) + bias[j]
                    if mask is not None:
                        logits = logits + mask
                    heads.append(_softmax(logits) @ v)
                o = _linear(torch.cat(heads, dim=-1), params["proj.weight"], params["proj.bias"])
                band.append(o.reshape(M, M, C))
            band_rows.append(torch.cat(band, dim=1))  # (M, W, C)
        out_rows.append(torch.cat(band_rows, dim=0))  # (H, W, C)
    y = torch.stack(out_rows, dim=0)
    return torch.roll(y, shifts=(s, s), dims=(1, 2)) if s > 0 else y


# ----------------------------------------------------------------------------------------------
# CSWin (cross-shaped stripes + LePE)
# ----------------------------------------------------------------------------------------------


def _stripe_branch(
    q: Tensor, k: Tensor, v: Tensor, sh: int, sw: int, heads: int, conv_w: Tensor, conv_b: Tensor
) -> Tensor:
    """Attention + LePE inside (sh x sw) stripes of one branch, explicit loops over stripes.

    q, k, v: (B, H, W, Cb), Cb = heads * d -> (B, H, W, Cb)
    """
    B, H, W, Cb = q.shape
    d = Cb // heads
    scale = d**-0.5
    batches = []
    for b in range(B):
        stripe_rows = []
        for r in range(H // sh):
            row = []
            for c in range(W // sw):
                rows, cols = slice(r * sh, (r + 1) * sh), slice(c * sw, (c + 1) * sw)
                qs = q[b, rows, cols, :].reshape(sh * sw, Cb)
                ks = k[b, rows, cols, :].reshape(sh * sw, Cb)
                vmap = v[b, rows, cols, :]  # (sh, sw, Cb): the stripe cut out on its own
                lepe = _dwconv3x3(vmap, conv_w, conv_b).reshape(sh * sw, Cb)
                vs = vmap.reshape(sh * sw, Cb)
                outs = []
                for j in range(heads):
                    ch = slice(j * d, (j + 1) * d)
                    outs.append(_attend(qs[:, ch] * scale, ks[:, ch], vs[:, ch], 1.0))
                o = torch.cat(outs, dim=-1) + lepe
                row.append(o.reshape(sh, sw, Cb))
            stripe_rows.append(torch.cat(row, dim=1))
        batches.append(torch.cat(stripe_rows, dim=0))
    return torch.stack(batches, dim=0)


def cswin_attention(
    params: dict[str, Tensor], x: Tensor, split: int, num_heads: int, last: bool = False
) -> Tensor:
    """CSWin cross-shaped window attention with LePE.

    x: (B, H, W, C) -> (B, H, W, C). Branch 0 (channels/heads ``[:C/2]``, ``attns.0``):
    vertical stripes of full height and width ``split``; branch 1 (``[C/2:]``, ``attns.1``):
    horizontal stripes of height ``split`` and full width. LePE = depthwise 3x3 conv of V cut
    into each stripe (zero padded at its borders), added to ``attn @ v``. ``last=True``: one
    global branch over all channels/heads with LePE over the whole map.
    """
    _, H, W, C = x.shape
    qkv = _linear(x, params["qkv.weight"], params["qkv.bias"])  # (B, H, W, 3C)
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    if last:
        out = _stripe_branch(
            q, k, v, H, W, num_heads, params["attns.0.get_v.weight"], params["attns.0.get_v.bias"]
        )
    else:
        if H % split or W % split:
            raise ValueError(f"split {split} must divide the map {H}x{W}")
        half = C // 2
        # (channels, stripe height, stripe width): branch 0 vertical, branch 1 horizontal
        branches = ((slice(0, half), H, split), (slice(half, C), split, W))
        outs = []
        for i, (ch, sh, sw) in enumerate(branches):
            w, b = params[f"attns.{i}.get_v.weight"], params[f"attns.{i}.get_v.bias"]
            outs.append(
                _stripe_branch(q[..., ch], k[..., ch], v[..., ch], sh, sw, num_heads // 2, w, b)
            )
        out = torch.cat(outs, dim=-1)
    return _linear(out, params["proj.weight"], params["proj.bias"])


# ----------------------------------------------------------------------------------------------
# DilateFormer (multi-scale dilated attention)
# ----------------------------------------------------------------------------------------------


def _dilated_unfold(t: Tensor, kernel: int, dilation: int) -> Tensor:
    """Zero-padded dilated neighbourhoods, by loops over kernel offsets (row-major order).

    t: (B, H, W, c) -> (B, H, W, k*k, c); entry ``a*k + b`` is ``t[y + (a-p)*r, x + (b-p)*r]``
    with ``p = (k-1)/2`` and zeros outside the map.
    """
    B, H, W, c = t.shape
    pad = dilation * (kernel - 1) // 2
    zrow = t.new_zeros(B, pad, W, c)
    tp = torch.cat([zrow, t, zrow], dim=1)
    zcol = t.new_zeros(B, H + 2 * pad, pad, c)
    tp = torch.cat([zcol, tp, zcol], dim=2)
    taps = []
    for a in range(kernel):
        for b in range(kernel):
            taps.append(tp[:, a * dilation : a * dilation + H, b * dilation : b * dilation + W, :])
    return torch.stack(taps, dim=3)


def dilateformer_attention(
    params: dict[str, Tensor],
    x: Tensor,
    kernel: int,
    dilations: list[int] | tuple[int, ...],
    num_heads: int,
) -> Tensor:
    """DilateFormer multi-scale dilated attention (zero-padded borders, not masked).

    x: (B, H, W, C) -> (B, H, W, C). qkv is a 1x1 conv ``(3C, C, 1, 1)``; q/k/v channels split
    into ``n = len(dilations)`` contiguous groups, group ``i`` (heads ``[i*h/n, (i+1)*h/n)``)
    uses dilation ``r_i``. Out-of-map keys are zero vectors that still enter the softmax.
    Scale ``d**-0.5`` after ``q . k``. Outputs in plain head order, then proj.
    """
    C = x.shape[-1]
    n = len(dilations)
    if num_heads % n or kernel % 2 == 0:
        raise ValueError("num_heads must be divisible by len(dilations) and kernel odd")
    d = C // num_heads
    scale = d**-0.5
    w = params["qkv.weight"].reshape(3 * C, C)
    qkv = _linear(x, w, params["qkv.bias"])
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    cg = C // n
    heads_out = []
    for i, r in enumerate(dilations):
        gs = slice(i * cg, (i + 1) * cg)
        kn = _dilated_unfold(k[..., gs], kernel, r)  # (B, H, W, k*k, cg)
        vn = _dilated_unfold(v[..., gs], kernel, r)
        for j in range(num_heads // n):
            ch = slice(j * d, (j + 1) * d)
            qh = q[..., gs][..., ch]  # (B, H, W, d)
            logits = (kn[..., ch] * qh.unsqueeze(3)).sum(-1) * scale  # (B, H, W, k*k)
            attn = _softmax(logits)
            heads_out.append((attn.unsqueeze(-1) * vn[..., ch]).sum(3))  # (B, H, W, d)
    out = torch.cat(heads_out, dim=-1)
    return _linear(out, params["proj.weight"], params["proj.bias"])


# ----------------------------------------------------------------------------------------------
# Shunted self-attention
# ----------------------------------------------------------------------------------------------


def _reduced_kv(
    x: Tensor, conv_w: Tensor, conv_b: Tensor, norm_w: Tensor, norm_b: Tensor, gelu: bool
) -> Tensor:
    """Strided conv (floor), flatten, LayerNorm(eps 1e-5), optional exact GELU.

    x: (B, H, W, C) -> (B, H', W', C)
    """
    red = _strided_patch_conv(x, conv_w, conv_b)
    red = _layer_norm(red, norm_w, norm_b, eps=1e-5)
    return _gelu_exact(red) if gelu else red


def shunted_attention(params: dict[str, Tensor], x: Tensor, sr: int, num_heads: int) -> Tensor:
    """Shunted self-attention (multi-scale token aggregation).

    x: (B, H, W, C) -> (B, H, W, C). q = Linear(C, C), scale ``d**-0.5`` (d = C/h) after
    ``q @ k^T``. sr > 1: branch 1 reduces by ``sr1`` (k = s = sr), branch 2 by ``sr2``
    (k = s = sr/2); each -> LayerNorm(1e-5) -> erf GELU -> kv_i (first C/2 outputs K, last C/2
    V for h/2 heads); ``v_i += local_conv_i(v_i)`` on the reduced map *before* attention; q heads
    ``[0, h/2)`` use branch 1, ``[h/2, h)`` branch 2. sr == 1: ``kv = Linear(C, 2C)``, all heads,
    ``attn @ v + local_conv(v)`` after attention.
    """
    B, H, W, C = x.shape
    h = num_heads
    d = C // h
    scale = d**-0.5
    q = _linear(_tokens(x), params["q.weight"], params["q.bias"])  # (B, N, C)

    if sr == 1:
        kv = _linear(_tokens(x), params["kv.weight"], params["kv.bias"])  # (B, N, 2C)
        k, v = kv[..., :C], kv[..., C:]
        lepe = torch.stack(
            [
                _dwconv3x3(
                    v[b].reshape(H, W, C), params["local_conv.weight"], params["local_conv.bias"]
                ).reshape(H * W, C)
                for b in range(B)
            ]
        )
        batches = []
        for b in range(B):
            outs = []
            for j in range(h):
                ch = slice(j * d, (j + 1) * d)
                outs.append(_attend(q[b, :, ch], k[b, :, ch], v[b, :, ch], scale))
            batches.append(torch.cat(outs, dim=-1) + lepe[b])
        out = torch.stack(batches)
    else:
        half, hh = C // 2, h // 2
        branches = []
        for i, hs in ((1, range(0, hh)), (2, range(hh, h))):
            red = _reduced_kv(
                x,
                params[f"sr{i}.weight"],
                params[f"sr{i}.bias"],
                params[f"norm{i}.weight"],
                params[f"norm{i}.bias"],
                gelu=True,
            )  # (B, H', W', C)
            _, Hr, Wr, _ = red.shape
            kv = _linear(red, params[f"kv{i}.weight"], params[f"kv{i}.bias"])  # (B, H', W', C)
            k, v = kv[..., :half], kv[..., half:]
            # local enhancement on the reduced V map, before attention
            v = torch.stack(
                [
                    v[b]
                    + _dwconv3x3(
                        v[b], params[f"local_conv{i}.weight"], params[f"local_conv{i}.bias"]
                    )
                    for b in range(B)
                ]
            )
            k, v = k.reshape(B, Hr * Wr, half), v.reshape(B, Hr * Wr, half)
            branches.append((hs, k, v))
        batches = []
        for b in range(B):
            outs = []
            for hs, k, v in branches:
                for jj, j in enumerate(hs):
                    qch = slice(j * d, (j + 1) * d)
                    kch = slice(jj * d, (jj + 1) * d)
                    outs.append(_attend(q[b, :, qch], k[b, :, kch], v[b, :, kch], scale))
            batches.append(torch.cat(outs, dim=-1))
        out = torch.stack(batches)
    y = _linear(out, params["proj.weight"], params["proj.bias"])
    return y.reshape(B, H, W, C)


# ----------------------------------------------------------------------------------------------
# PVTv2 spatial-reduction attention
# ----------------------------------------------------------------------------------------------


def pvtv2_attention(params: dict[str, Tensor], x: Tensor, sr: int, num_heads: int) -> Tensor:
    """PVTv2 spatial-reduction attention.

    x: (B, H, W, C) -> (B, H, W, C). q = Linear(C, C); sr > 1: Conv2d(k = s = sr) ->
    LayerNorm(1e-5), no GELU; ``kv = Linear(C, 2C)`` (first C outputs K, last C V), all heads;
    sr == 1: kv on x directly. Scale ``d**-0.5`` after ``q @ k^T``; proj.
    """
    B, H, W, C = x.shape
    h = num_heads
    d = C // h
    q = _linear(_tokens(x), params["q.weight"], params["q.bias"])
    if sr > 1:
        red = _reduced_kv(
            x,
            params["sr.weight"],
            params["sr.bias"],
            params["norm.weight"],
            params["norm.bias"],
            gelu=False,
        )
    else:
        red = x
    kv = _linear(_tokens(red), params["kv.weight"], params["kv.bias"])
    k, v = kv[..., :C], kv[..., C:]
    batches = []
    for b in range(B):
        outs = []
        for j in range(h):
            ch = slice(j * d, (j + 1) * d)
            outs.append(_attend(q[b, :, ch], k[b, :, ch], v[b, :, ch], d**-0.5))
        batches.append(torch.cat(outs, dim=-1))
    y = _linear(torch.stack(batches), params["proj.weight"], params["proj.bias"])
    return y.reshape(B, H, W, C)


# ----------------------------------------------------------------------------------------------
# Neighborhood attention (NAT / DiNAT) and its border variants
# ----------------------------------------------------------------------------------------------


def _shift_window_axis(p: int, L: int, kernel: int, dilation: int) -> list[int]:
    """Key coordinates along one axis for query coordinate ``p`` under the NAT/NATTEN rule.

    Work on the dilation sub-grid of positions congruent to ``p`` mod ``r``: positions
    ``p % r + i*r`` for ``i in [0, L_sub)``, ``L_sub = ceil((L - p % r) / r)``. The query sits at
    sub-grid index ``idx = p // r``; the window start on the sub-grid is
    ``clamp(idx - k//2, 0, L_sub - k)`` (valid when ``L_sub >= k``), i.e. centred and shifted
    inward at the borders. For even k the extra key is on the low side.
    """
    r = dilation
    offset = p % r
    L_sub = (L - offset + r - 1) // r
    if L_sub < kernel:
        raise ValueError(
            f"dilation sub-grid of length {L_sub} (axis length {L}, dilation {r}) is shorter "
            f"than kernel {kernel}"
        )
    idx = p // r
    start = min(max(idx - kernel // 2, 0), L_sub - kernel)
    return [offset + (start + t) * r for t in range(kernel)]


def _centred_axis(p: int, kernel: int, dilation: int) -> list[int]:
    """Centred key coordinates ``p + (t - k//2) * r`` for ``t in [0, k)`` (may leave the map)."""
    return [p + (t - kernel // 2) * dilation for t in range(kernel)]


def neighborhood_keys(
    H: int, W: int, y: int, x: int, kernel: int, dilation: int = 1, border: str = "shift"
) -> list[tuple[int, int] | None]:
    """Key coordinates of query (y, x) in row-major kernel order; ``None`` = out-of-map slot.

    border: "shift" (NAT/NATTEN: always k*k real keys), "zeros" (DilateFormer: centred, the
    out-of-map slots are kept as ``None``), "mask" (centred, out-of-map slots dropped).
    """
    if border == "shift":
        ys = _shift_window_axis(y, H, kernel, dilation)
        xs = _shift_window_axis(x, W, kernel, dilation)
        return [(a, b) for a in ys for b in xs]
    if border not in ("zeros", "mask"):
        raise ValueError(f"unknown border {border!r}")
    keys: list[tuple[int, int] | None] = []
    for a in _centred_axis(y, kernel, dilation):
        for b in _centred_axis(x, kernel, dilation):
            inside = 0 <= a < H and 0 <= b < W
            if inside:
                keys.append((a, b))
            elif border == "zeros":
                keys.append(None)
    return keys


def neighborhood_attention(
    q: Tensor, k: Tensor, v: Tensor, kernel: int, dilation: int = 1, border: str = "shift"
) -> Tensor:
    """Neighborhood attention by an explicit loop over queries.

    q, k, v: (B, heads, H, W, d) -> (B, heads, H, W, d); scale ``d**-0.5``.
    border "shift": NAT/DiNAT rule (see ``_shift_window_axis``), ValueError if a sub-grid is
    shorter than k; "zeros": DilateFormer rule, out-of-map keys are zero vectors that enter the
    softmax with logit 0 and value 0; "mask": centred, out-of-map keys excluded.
    """
    B, nh, H, W, d = q.shape
    scale = d**-0.5
    rows = []
    for y in range(H):
        cols = []
        for x in range(W):
            keys = neighborhood_keys(H, W, y, x, kernel, dilation, border)
            real = [kv for kv in keys if kv is not None]
            n_zero = len(keys) - len(real)
            ks = torch.stack([k[:, :, a, b, :] for a, b in real], dim=2)  # (B, nh, n, d)
            vs = torch.stack([v[:, :, a, b, :] for a, b in real], dim=2)
            logits = (ks @ q[:, :, y, x, :].unsqueeze(-1)).squeeze(-1) * scale  # (B, nh, n)
            if n_zero:
                logits = torch.cat([logits, logits.new_zeros(B, nh, n_zero)], dim=-1)
            attn = _softmax(logits)[..., : len(real)]  # zero keys contribute value 0
            cols.append((attn.unsqueeze(-2) @ vs).squeeze(-2))  # (B, nh, d)
        rows.append(torch.stack(cols, dim=2))  # (B, nh, W, d)
    return torch.stack(rows, dim=2)


def neighborhood_attention_rpb(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rpb: Tensor,
    kernel: int,
    dilation: int = 1,
    border: str = "shift",
) -> Tensor:
    """Neighborhood attention with NAT's learned relative position bias, one query at a time.

    q, k, v: (B, heads, H, W, d); rpb: (heads, 2k-1, 2k-1) -> (B, heads, H, W, d); scale
    ``d**-0.5``. Query (y, x) looks at the k*k window slots (a, b) of its rule (the axis
    coordinates of ``_shift_window_axis`` for "shift", ``_centred_axis`` otherwise); slot (a, b)
    gets the logit ``q . k[a, b] * scale + rpb[:, (a - y)/r + k - 1, (b - x)/r + k - 1]``.
    Out-of-map slots: "mask" drops them; "zeros" keeps them as zero keys and values, whose logit
    is the bias alone.
    """
    H, W, d = q.shape[2:]
    r, c = dilation, kernel - 1
    scale = d**-0.5
    zero = torch.zeros_like(k[:, :, 0, 0, :])  # (B, heads, d)
    rows = []
    for y in range(H):
        cols = []
        for x in range(W):
            if border == "shift":
                ys = _shift_window_axis(y, H, kernel, r)
                xs = _shift_window_axis(x, W, kernel, r)
            else:
                ys, xs = _centred_axis(y, kernel, r), _centred_axis(x, kernel, r)
            keys, values, biases = [], [], []
            for a in ys:
                for b in xs:
                    assert (a - y) % r == 0 and (b - x) % r == 0
                    inside = 0 <= a < H and 0 <= b < W
                    if not inside and border == "mask":
                        continue
                    keys.append(k[:, :, a, b, :] if inside else zero)
                    values.append(v[:, :, a, b, :] if inside else zero)
                    biases.append(rpb[:, (a - y) // r + c, (b - x) // r + c])  # (heads,)
            ks, vs = torch.stack(keys, dim=2), torch.stack(values, dim=2)  # (B, heads, n, d)
            logits = (ks @ q[:, :, y, x, :, None]).squeeze(-1) * scale  # (B, heads, n)
            attn = _softmax(logits + torch.stack(biases, dim=-1))
            cols.append((attn.unsqueeze(-2) @ vs).squeeze(-2))  # (B, heads, d)
        rows.append(torch.stack(cols, dim=2))  # (B, heads, W, d)
    return torch.stack(rows, dim=2)


# ----------------------------------------------------------------------------------------------
# MaxViT grid attention
# ----------------------------------------------------------------------------------------------


def grid_attention(q: Tensor, k: Tensor, v: Tensor, grid: int) -> Tensor:
    """MaxViT grid attention: a G x G grid of tokens spaced ``H/G`` (``W/G``) apart.

    q, k, v: (B, heads, H, W, d) -> (B, heads, H, W, d); scale ``d**-0.5``. The token set of
    offset ``(i, j)`` is ``{(i + g1*H/G, j + g2*W/G)}``, ``g1, g2 in [0, G)`` (the layout
    ``b (g1 h) (g2 w) c -> (b h w) (g1 g2) c``). Explicit loops over the ``(H/G)*(W/G)`` sets.
    """
    H, W, d = q.shape[2:]
    G = grid
    if H % G or W % G:
        raise ValueError(f"grid {G} must divide the map {H}x{W}")
    sh, sw = H // G, W // G
    scale = d**-0.5
    results: dict[tuple[int, int], Tensor] = {}
    for i in range(sh):
        for j in range(sw):
            coords = [(i + g1 * sh, j + g2 * sw) for g1 in range(G) for g2 in range(G)]
            qs = torch.stack([q[:, :, a, b, :] for a, b in coords], dim=2)  # (B, nh, G*G, d)
            ks = torch.stack([k[:, :, a, b, :] for a, b in coords], dim=2)
            vs = torch.stack([v[:, :, a, b, :] for a, b in coords], dim=2)
            o = _softmax((qs @ ks.transpose(-1, -2)) * scale) @ vs
            for t, yx in enumerate(coords):
                results[yx] = o[:, :, t, :]
    rows = [torch.stack([results[(a, b)] for b in range(W)], dim=2) for a in range(H)]
    return torch.stack(rows, dim=2)
