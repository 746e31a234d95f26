"""Converters of one attention layer: the authors' (and timm's, torchvision's) weights.

Each ``load_*`` function maps the authors' keys (see the reference facts) onto a built
:class:`~attnblocks.AttentionLayer` and loads them strictly: missing or unexpected keys and
shape mismatches raise an :class:`~attnblocks.AttnblocksError` naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from .._errors import AttnblocksError, fmt_shape
from ..attention import Attention
from ..encoders import (
    ContinuousPosBiasModule,
    CPEModule,
    LePEModule,
    LocalConvModule,
    RelPosBiasModule,
)
from ..nn import AttentionLayer
from ..partition import Stripe, Window
from ..pe import ContinuousPosBias, RelPosBias
from ..score import Cosine

__all__ = [
    "embed_rel_table",
    "from_torchvision",
    "load_cswin",
    "load_dilateformer",
    "load_pvtv2",
    "load_shunted",
    "load_swin",
    "load_swinv2",
    "load_timm_maxvit",
    "load_timm_pvtv2",
    "load_timm_swin",
    "load_timm_swinv2",
    "map_attention",
]

# derived buffers that the SwinV2 authors' checkpoints carry; attnblocks recomputes them
_SWINV2_DERIVED = ("relative_coords_table", "relative_position_index", "k_bias")


def _find(layer: AttentionLayer, kind: type) -> tuple[int, object]:
    for i, m in enumerate(layer.pe):
        if isinstance(m, kind):
            return i, m
    raise AttnblocksError(f"{layer.spec!r} has no {kind.__name__[:-6]} encoder to load into.")


def _strict_load(
    module: torch.nn.Module,
    mapped: dict[str, torch.Tensor],
    source: str,
    target: str,
    noun: str = "module",
    limit: int | None = None,
    assign: bool = False,
) -> torch.nn.Module:
    """Load ``mapped`` into ``module`` strictly (:func:`_check_mapped`); values are cast to the
    module's dtypes (``assign``: the tensors replace the module's, e.g. on a ``meta`` model)."""
    own = _check_mapped(module, mapped, source, target, noun, limit)
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, assign=assign)
    return module


def _check_mapped(
    module: torch.nn.Module,
    mapped: dict[str, torch.Tensor],
    source: str,
    target: str,
    noun: str = "module",
    limit: int | None = None,
) -> dict[str, torch.Tensor]:
    """Refuse ``mapped`` unless it has exactly ``module``'s keys and shapes, naming every
    missing or unexpected key (the first ``limit`` of each) and any shape mismatch; returns the
    module's state dict."""

    def keys(names: list[str]) -> str:
        if limit is None or len(names) <= limit:
            return str(names)
        return f"{names[:limit]} ..."

    own = module.state_dict()
    missing = sorted(set(own) - set(mapped))
    extra = sorted(set(mapped) - set(own))
    if missing or extra:
        raise AttnblocksError(
            f"{source} -> {target}: missing keys {keys(missing)}, unexpected keys {keys(extra)}."
        )
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise AttnblocksError(
                f"{source} -> {target}: {k} has shape {fmt_shape(v.shape)}, the {noun} "
                f"expects {fmt_shape(own[k].shape)}."
            )
    return own


# set by map_attention: _load checks the mapped weights and hands them back instead of loading
_CAPTURE: ContextVar[list | None] = ContextVar("attnblocks_convert_capture", default=None)


@contextmanager
def _capturing() -> Iterator[list]:
    out: list = []
    token = _CAPTURE.set(out)
    try:
        yield out
    finally:
        _CAPTURE.reset(token)


def _load(layer: AttentionLayer, mapped: dict[str, torch.Tensor], source: str) -> AttentionLayer:
    captured = _CAPTURE.get()
    if captured is None:
        return _strict_load(layer, mapped, source, repr(layer.spec))
    _check_mapped(layer, mapped, source, repr(layer.spec))
    captured.append(mapped)
    return layer


def map_attention(
    loader: Callable[..., AttentionLayer],
    layer: AttentionLayer,
    source: Mapping[str, torch.Tensor] | torch.nn.Module,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """What ``loader(layer, source)`` would load, checked the same way, without loading it.

    The full-model loaders use it to map each block's attention onto the model's key names
    (``layer`` may live on the ``meta`` device).

    Example:
        >>> from attnblocks import zoo
        >>> layer = zoo.pvtv2(1).build(8, 2, device="meta")
        >>> state = {"q.weight": torch.zeros(8, 8), "q.bias": torch.zeros(8),
        ...          "kv.weight": torch.zeros(16, 8), "kv.bias": torch.zeros(16),
        ...          "proj.weight": torch.zeros(8, 8), "proj.bias": torch.zeros(8)}
        >>> sorted(map_attention(load_pvtv2, layer, state))[:2]
        ['proj.bias', 'proj.weight']
    """
    with _capturing() as out:
        loader(layer, source, **kwargs)
    if len(out) != 1:
        raise AttnblocksError(f"map_attention: {loader.__name__} did not map one layer.")
    return out[0]


# configuration attributes of the authors' / timm's attention modules, read when one is given
_CONFIG_ATTRS = ("num_heads", "window_size", "split_size", "sr_ratio", "dilation", "kernel_size")


def _source(
    fn: str, source: Mapping[str, torch.Tensor] | torch.nn.Module, expects: str
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """``(state, config)``: a state dict as given, or a module's state dict and the settings
    it was built with (``num_heads``, ``window_size``, ``split_size``, ``sr_ratio``, ...).

    A whole block (keys ``attn.*``, ``norm1.*``, ...) is refused with a pointer to its attention.
    """
    if isinstance(source, torch.nn.Module):
        state = dict(source.state_dict())
        config = {a: getattr(source, a) for a in _CONFIG_ATTRS if hasattr(source, a)}
    elif isinstance(source, Mapping):
        state, config = dict(source), {}
    else:
        raise TypeError(
            f"{fn}: expected a state dict or the authors' attention module, got "
            f"{type(source).__name__}."
        )
    if any(k.startswith("attn.") for k in state):
        sample = sorted(state)[:4]
        raise AttnblocksError(
            f"{fn}: got a whole block (keys {sample} ...), not its attention: pass the attention "
            f"submodule (`block.attn`, or its state dict: the keys after 'attn.'), with keys "
            f"{expects}. Whole models load with attnblocks.models.load_checkpoint."
        )
    return state, config


def _refuse(fn: str, layer: AttentionLayer, what: str, theirs: object, ours: object) -> None:
    if theirs != ours:
        raise AttnblocksError(
            f"{fn}: the weights are for {what}={theirs}, {layer.spec!r} (built with "
            f"{layer.num_heads} heads) has {what}={ours}: build the layer with the source's "
            f"settings."
        )


def _check_heads(fn: str, layer: AttentionLayer, config: dict[str, object]) -> None:
    if "num_heads" in config:
        _refuse(fn, layer, "num_heads", int(config["num_heads"]), layer.num_heads)  # type: ignore[call-overload]


def _ratio(layer: AttentionLayer) -> tuple[int, ...]:
    part = layer.spec.partition
    ratio = getattr(part, "ratio", None)
    return tuple(ratio) if isinstance(ratio, tuple) else (ratio,)


def embed_rel_table(
    table: torch.Tensor,
    window: tuple[int, int],
    size: tuple[int, int],
    into: torch.Tensor | None = None,
) -> torch.Tensor:
    """Place a relative-position table made for ``window`` inside one made for ``size``.

    timm and the Swin authors size the table from the clamped window; attnblocks sizes it from
    the spec, so a table of a smaller window becomes the centre of the larger one (the offsets
    it never sees keep the values of ``into``, zeros by default).

    Shapes: ``table: ((2wh-1)(2ww-1), h) -> ((2Mh-1)(2Mw-1), h)``.
    """
    (wh, ww), (mh, mw) = window, size
    if wh > mh or ww > mw:
        raise AttnblocksError(f"embed_rel_table: a {wh}x{ww} table does not fit a {mh}x{mw} one.")
    out = torch.zeros(
        (2 * mh - 1) * (2 * mw - 1), table.shape[1], dtype=table.dtype, device=table.device
    )
    if into is not None and into.device.type != "meta":
        out = into.detach().clone().to(table.dtype)
    out = out.view(2 * mh - 1, 2 * mw - 1, -1)
    out[mh - wh : mh + wh - 1, mw - ww : mw + ww - 1] = table.view(2 * wh - 1, 2 * ww - 1, -1)
    return out.view(-1, table.shape[1])


def load_swin(
    layer: AttentionLayer,
    state: Mapping[str, torch.Tensor] | torch.nn.Module,
    window: tuple[int, int] | None = None,
) -> AttentionLayer:
    """Load a Swin v1 window attention (``qkv.*``, ``proj.*``, ``relative_position_bias_table``).

    ``state``: the attention's state dict, or the authors' / timm's ``WindowAttention`` itself
    (then its ``window_size`` and ``num_heads`` are read and checked). The table may be sized
    for a smaller (clamped) window than the layer's: give that ``window`` as ``(h, w)``, or
    leave it ``None`` for a square one inferred from the table. The table's columns are the
    heads: a table of another head count, or of a larger window, is refused.
    """
    fn = "load_swin"
    state, config = _source(fn, state, "qkv.*, proj.*, relative_position_bias_table")
    i, rpb = _find(layer, RelPosBiasModule)
    _check_heads(fn, layer, config)
    if window is None and "window_size" in config:
        window = tuple(config["window_size"])  # type: ignore[arg-type]
    if "relative_position_bias_table" not in state:
        raise AttnblocksError(
            f"{fn}: no relative_position_bias_table among the keys {sorted(state)[:6]}: pass a "
            f"Swin WindowAttention's state dict (qkv.*, proj.*, relative_position_bias_table)."
        )
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    table = state["relative_position_bias_table"]
    _refuse(fn, layer, "heads (the table's columns)", table.shape[1], layer.num_heads)
    size = rpb.sizes[0]  # type: ignore[attr-defined]
    if window is None:
        side = round(table.shape[0] ** 0.5)
        if side * side != table.shape[0] or side % 2 == 0:
            raise AttnblocksError(
                f"load_swin: relative_position_bias_table has {table.shape[0]} rows, not "
                f"(2m-1)^2: pass window=(h, w)."
            )
        window = ((side + 1) // 2,) * 2
    expected = (2 * window[0] - 1) * (2 * window[1] - 1)
    if table.shape[0] != expected:
        raise AttnblocksError(
            f"load_swin: relative_position_bias_table has {table.shape[0]} rows, a "
            f"{window[0]}x{window[1]} window needs {expected}."
        )
    if window[0] > size[0] or window[1] > size[1]:
        raise AttnblocksError(
            f"{fn}: the weights are for a {window[0]}x{window[1]} window, {layer.spec!r} has "
            f"{size[0]}x{size[1]}: build the layer with the source's window."
        )
    mapped[f"pe.{i}.tables.0"] = embed_rel_table(
        table,
        tuple(window),
        size,
        into=rpb.tables[0],  # type: ignore[attr-defined]
    )
    return _load(layer, mapped, "Swin state dict")


def load_timm_swin(layer: AttentionLayer, module: torch.nn.Module) -> AttentionLayer:
    """Load timm's ``SwinTransformerBlock`` (or its ``WindowAttention``) attention weights."""
    attn = getattr(module, "attn", module)
    state = {
        k: v
        for k, v in attn.state_dict().items()
        if k.split(".")[0] in ("qkv", "proj", "relative_position_bias_table")
    }
    return load_swin(layer, state, window=tuple(attn.window_size))


def load_cswin(
    layer: AttentionLayer, state: Mapping[str, torch.Tensor] | torch.nn.Module
) -> AttentionLayer:
    """Load a CSWin block's attention (``qkv``, ``proj``, ``attns.{0,1}.get_v``).

    Two ``attns.*.get_v`` convs (vertical, then horizontal branch) or, for the last stage,
    one over all channels. ``state``: those keys (a ``CSWinBlock``'s, without its norms and
    MLP), or the authors' ``CSWinBlock`` itself, whose ``num_heads`` and ``split_size`` are
    then checked against the layer's heads and stripe width. Two branches need a
    :class:`~attnblocks.Stripe` layer, one a :class:`~attnblocks.Global` one.
    """
    fn = "load_cswin"
    if isinstance(state, torch.nn.Module) and hasattr(state, "attn") and not hasattr(state, "qkv"):
        state, config = _source(fn, state, "qkv.*, proj.*, attns.{0,1}.get_v.*")
    elif isinstance(state, torch.nn.Module):
        config = {a: getattr(state, a) for a in ("num_heads", "split_size") if hasattr(state, a)}
        state = {
            k: v
            for k, v in state.state_dict().items()
            if k.split(".")[0] in ("qkv", "proj", "attns")
        }
    else:
        state, config = _source(fn, state, "qkv.*, proj.*, attns.{0,1}.get_v.*")
    if any(k.startswith(("norm1.", "mlp.")) for k in state):
        raise AttnblocksError(
            f"{fn}: got a whole CSWin block's state dict (norm1.*, mlp.* among its keys): keep "
            f"only its attention keys (qkv.*, proj.*, attns.*), or pass the CSWinBlock module."
        )
    i, _ = _find(layer, LePEModule)
    _check_heads(fn, layer, config)
    branches = sorted({k.split(".")[1] for k in state if k.startswith("attns.")})
    part = layer.spec.partition
    if not branches:
        raise AttnblocksError(f"{fn}: no attns.*.get_v keys among {sorted(state)[:6]}.")
    if isinstance(part, Stripe) != (len(branches) == 2):
        kind = "two stripe branches" if len(branches) == 2 else "one global branch (last stage)"
        raise AttnblocksError(
            f"{fn}: the weights have {kind} (attns.{', attns.'.join(branches)}), {layer.spec!r} "
            f"is {'a stripe' if isinstance(part, Stripe) else 'a single-branch'} layer: use "
            f"zoo.cswin(split{', last=True' if len(branches) == 1 else ''})."
        )
    if isinstance(part, Stripe) and "split_size" in config:
        _refuse(fn, layer, "split_size", int(config["split_size"]), part.width)  # type: ignore[call-overload]
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    for p in ("weight", "bias"):
        mapped[f"pe.{i}.conv.{p}"] = torch.cat(
            [state[f"attns.{b}.get_v.{p}"] for b in branches], dim=0
        )
    return _load(layer, mapped, "CSWin state dict")


def load_swinv2(layer: AttentionLayer, state: Mapping[str, torch.Tensor]) -> AttentionLayer:
    """Load a SwinV2 window attention (the authors' = timm's keys) into ``zoo.swinv2(...)``.

    Keys: ``qkv.weight``, ``q_bias``, ``v_bias``, ``logit_scale (h, 1, 1)``,
    ``cpb_mlp.{0.weight, 0.bias, 2.weight}``, ``proj.*``; the derived buffers
    (``relative_coords_table``, ``relative_position_index``, ``k_bias``) are ignored.

    Example:
        >>> from attnblocks import zoo
        >>> layer = zoo.swinv2(4, 2).build(16, 2)
        >>> state = {k.replace("qkv.q_", "q_").replace("qkv.v_", "v_")
        ...          .replace("score.", "").replace("pe.0.", ""): v
        ...          for k, v in layer.state_dict().items()}
        >>> load_swinv2(layer, state) is layer
        True
    """
    i, _ = _find(layer, ContinuousPosBiasModule)
    if layer.score is None:
        raise AttnblocksError(f"load_swinv2: {layer.spec!r} has no Cosine() score to load into.")
    rename = {"q_bias": "qkv.q_bias", "v_bias": "qkv.v_bias", "logit_scale": "score.logit_scale"}
    mapped: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k in _SWINV2_DERIVED:
            continue
        if k.startswith("cpb_mlp."):
            mapped[f"pe.{i}.{k}"] = v
        else:
            mapped[rename.get(k, k)] = v
    return _load(layer, mapped, "SwinV2 state dict")


def load_timm_swinv2(layer: AttentionLayer, module: torch.nn.Module) -> AttentionLayer:
    """Load timm's ``SwinTransformerV2Block`` (or its ``WindowAttention``) attention weights.

    Example:
        >>> from timm.models.swin_transformer_v2 import WindowAttention
        >>> from attnblocks import zoo
        >>> attn = WindowAttention(16, window_size=(4, 4), num_heads=2)
        >>> layer = load_timm_swinv2(zoo.swinv2(4).build(16, 2), attn)
        >>> bool((layer.score.logit_scale == attn.logit_scale).all())
        True
    """
    attn = getattr(module, "attn", module)
    return load_swinv2(layer, attn.state_dict())


def load_timm_maxvit(layer: AttentionLayer, module: torch.nn.Module) -> AttentionLayer:
    """Load timm's MaxViT ``PartitionAttentionCl`` (or its ``AttentionCl``) into
    ``zoo.maxvit_block(...)`` / ``zoo.maxvit_grid(...)``.

    Handles both of timm's qkv channel orders (``head_first=True``: ``[q_j | k_j | v_j]`` per
    head; ``False``, the TF ports: ``[q | k | v]``) and both table layouts: ``RelPosBias``
    (Swin's ``((2M-1)^2, h)``, offsets query minus key) and ``RelPosBiasTf`` (``(h, 2M-1,
    2M-1)``, offsets key minus query, so the table is flipped).

    Example:
        >>> from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl
        >>> from attnblocks import zoo
        >>> cfg = MaxxVitTransformerCfg(dim_head=8, window_size=(4, 4), rel_pos_type="bias_tf")
        >>> block = PartitionAttentionCl(16, "grid", cfg)
        >>> layer = load_timm_maxvit(zoo.maxvit_grid(4).build(16, 2), block)
        >>> x = torch.randn(1, 8, 8, 16)
        >>> torch.allclose(layer(x), block._partition_attn(x), atol=1e-5)
        True
    """
    attn = getattr(module, "attn", module)
    h, d = attn.num_heads, attn.dim_head
    if (h, d) != (layer.num_heads, layer.head_dim):
        raise AttnblocksError(
            f"load_timm_maxvit: the timm module has {h} heads of {d} channels, {layer.spec!r} "
            f"was built with {layer.num_heads} heads of {layer.head_dim}."
        )
    state = {k: v for k, v in attn.state_dict().items() if k.split(".")[0] in ("qkv", "proj")}
    if attn.head_first:  # rows (head, q/k/v, d) -> (q/k/v, head, d)
        for part in ("weight", "bias"):
            if f"qkv.{part}" in state:
                w = state[f"qkv.{part}"]
                state[f"qkv.{part}"] = w.view(h, 3, d, -1).transpose(0, 1).reshape(w.shape)
    rel = attn.rel_pos
    kind = type(rel).__name__
    if kind == "RelPosBias":
        table = rel.relative_position_bias_table
    elif kind == "RelPosBiasTf":
        table = rel.relative_position_bias_table.flip(1, 2).permute(1, 2, 0).reshape(-1, h)
    else:
        raise AttnblocksError(
            f"load_timm_maxvit: relative position type {kind} is not supported (only timm's "
            f"RelPosBias and RelPosBiasTf, rel_pos_type='bias' or 'bias_tf')."
        )
    i, rpb = _find(layer, RelPosBiasModule)
    state[f"pe.{i}.tables.0"] = embed_rel_table(
        table.detach(),
        tuple(rel.window_size),
        rpb.sizes[0],  # type: ignore[attr-defined]
        into=rpb.tables[0],  # type: ignore[attr-defined]
    )
    return _load(layer, state, f"timm MaxViT {type(module).__name__}")


def _own_kv_runner(layer: AttentionLayer, index: int, source: str) -> None:
    own = getattr(layer, "own_kv", ())
    if index >= len(own) or not own[index]:
        raise AttnblocksError(
            f"{source}: {layer.spec!r} has no head group {index} with its own keys and values "
            f"(a Downsample partition) to load into."
        )


def _check_sr(fn: str, layer: AttentionLayer, config: dict, theirs: tuple[int, ...] | None) -> None:
    if "sr_ratio" in config:
        sr = int(config["sr_ratio"])
        _refuse(fn, layer, "sr_ratio", sr, _ratio(layer)[0])
    if theirs is not None:
        _refuse(fn, layer, "reduction ratios (from the sr conv kernels)", theirs, _ratio(layer))


def load_pvtv2(
    layer: AttentionLayer, state: Mapping[str, torch.Tensor] | torch.nn.Module
) -> AttentionLayer:
    """Load PVTv2's spatial-reduction attention (``q``, ``kv``, ``sr``, ``norm``, ``proj``).

    ``sr.*`` and ``norm.*`` exist only for ``sr > 1``. The layer is ``zoo.pvtv2(sr)`` built with
    the block's ``dim`` and ``num_heads``; ``kv``, ``sr`` and ``norm`` become ``runners.0.*``.
    ``sr.weight`` of another ratio's kernel is refused (a shape error naming both); given the
    authors' / timm's ``Attention`` module, its ``num_heads`` and ``sr_ratio`` are checked too.

    Example:
        >>> from attnblocks import zoo
        >>> timm_like = zoo.pvtv2(2).build(8, 2)
        >>> state = {k.removeprefix("runners.0."): v for k, v in timm_like.state_dict().items()}
        >>> first = sorted(state)[:4]
        >>> first
        ['kv.bias', 'kv.weight', 'norm.bias', 'norm.weight']
        >>> _ = load_pvtv2(zoo.pvtv2(2).build(8, 2), state)
    """
    fn = "load_pvtv2"
    state, config = _source(fn, state, "q.*, kv.*, (sr.*, norm.*), proj.*")
    _own_kv_runner(layer, 0, "PVTv2 state dict")
    _check_heads(fn, layer, config)
    _check_sr(fn, layer, config, None)  # a ratio the sr kernel contradicts: a shape error
    own = ("kv", "sr", "norm")
    mapped = {(f"runners.0.{k}" if k.split(".")[0] in own else k): v for k, v in state.items()}
    return _load(layer, mapped, "PVTv2 state dict")


def load_timm_pvtv2(layer: AttentionLayer, module: torch.nn.Module) -> AttentionLayer:
    """Load timm's ``pvt_v2.Attention`` (or a ``pvt_v2.Block``: its ``attn``) weights.

    timm's ``linear_attn=True`` variant (average pooling to 7x7) has no attnblocks spec yet.
    """
    attn = getattr(module, "attn", module)
    if getattr(attn, "pool", None) is not None:
        raise AttnblocksError(
            "load_timm_pvtv2: timm's linear_attn=True (pooled) PVTv2 attention is not supported; "
            "only the spatial-reduction form (linear_attn=False) maps onto zoo.pvtv2(sr)."
        )
    return load_pvtv2(layer, attn)


def load_shunted(
    layer: AttentionLayer, state: Mapping[str, torch.Tensor] | torch.nn.Module
) -> AttentionLayer:
    """Load Shunted's SSA attention into ``zoo.shunted(sr)``.

    ``sr > 1``: ``q``, ``proj``, ``sr{1,2}``, ``norm{1,2}``, ``kv{1,2}`` (branch ``i`` becomes
    ``runners.{i-1}.*``) and ``local_conv{1,2}`` (concatenated into the LocalConv's ``conv``).
    ``sr = 1``: ``q``, ``kv``, ``local_conv``, ``proj``. The ratios are read from the ``sr1`` /
    ``sr2`` kernels and must be the layer's; given the authors' ``Attention`` module, its
    ``num_heads`` and ``sr_ratio`` are checked too (a state dict does not tell the heads).
    """
    source = "Shunted state dict"
    fn = "load_shunted"
    state, config = _source(
        fn,
        state,
        "q.*, kv1.*, kv2.*, sr1.*, sr2.*, norm1.*, norm2.*, local_conv1.*, proj.* (sr > 1)",
    )
    if any(k.startswith(("mlp.", "attn.")) for k in state):
        raise AttnblocksError(
            f"{fn}: got a whole Shunted block's state dict (keys {sorted(state)[:4]} ...): pass "
            f"the attention submodule (`block.attn`) or its state dict (the keys after 'attn.')."
        )
    i, _ = _find(layer, LocalConvModule)
    _check_heads(fn, layer, config)
    two = any(k.startswith("kv1.") for k in state)
    branches = (("1", 0), ("2", 1)) if two else (("", 0),)
    renames = {"q": "q", "proj": "proj"}
    for suffix, g in branches:
        _own_kv_runner(layer, g, source)
        renames |= {f"sr{suffix}": f"runners.{g}.sr", f"norm{suffix}": f"runners.{g}.norm"}
        renames[f"kv{suffix}"] = f"runners.{g}.kv"
    ratios = tuple(
        int(state[f"sr{j}.weight"].shape[-1]) for j in (1, 2) if f"sr{j}.weight" in state
    )
    _check_sr(fn, layer, config, ratios or (1,))
    mapped: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if not head.startswith("local_conv"):
            mapped[f"{renames.get(head, head)}.{rest}"] = v
    for part in ("weight", "bias"):
        convs = [f"local_conv{suffix}.{part}" for suffix, _ in branches]
        absent = [c for c in convs if c not in state]
        if absent:
            raise AttnblocksError(f"{source} -> {layer.spec!r}: missing keys {absent}.")
        mapped[f"pe.{i}.conv.{part}"] = torch.cat([state[c] for c in convs], dim=0)
    return _load(layer, mapped, source)


def load_dilateformer(
    layer: AttentionLayer, state: Mapping[str, torch.Tensor] | torch.nn.Module
) -> AttentionLayer:
    """Load DilateFormer's multi-scale dilated attention (``qkv``, ``proj``).

    ``qkv.weight: (3C, C, 1, 1)`` (a 1x1 conv) becomes the layer's ``Linear`` weight
    ``(3C, C)``; its ``[q | k | v]`` output channels, each cut into contiguous dilation groups,
    are already the layer's layout. If the layer has a :class:`~attnblocks.CPE`, the block's
    ``pos_embed.weight`` / ``pos_embed.bias`` go into it.

    Example:
        >>> import torch
        >>> from attnblocks.zoo import dilateformer
        >>> layer = dilateformer().build(24, 3)
        >>> state = {"qkv.weight": torch.zeros(72, 24, 1, 1), "qkv.bias": torch.zeros(72),
        ...          "proj.weight": torch.eye(24), "proj.bias": torch.zeros(24)}
        >>> load_dilateformer(layer, state) is layer
        True
    """
    fn = "load_dilateformer"
    state, config = _source(fn, state, "qkv.*, proj.* (and a block's pos_embed.*)")
    _check_heads(fn, layer, config)
    part = layer.spec.partition
    if "kernel_size" in config:
        _refuse(fn, layer, "kernel_size", int(config["kernel_size"]), getattr(part, "kernel", None))  # type: ignore[call-overload]
    if "dilation" in config:
        d = config["dilation"]
        theirs = tuple(d) if isinstance(d, (list, tuple)) else (int(d),)  # type: ignore[call-overload]
        ours = getattr(part, "dilation", None)
        _refuse(fn, layer, "dilation", theirs, ours if isinstance(ours, tuple) else (ours,))
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    w = mapped.get("qkv.weight")
    if w is not None and w.dim() == 4:
        if tuple(w.shape[2:]) != (1, 1):
            raise AttnblocksError(
                f"load_dilateformer: qkv.weight must be a 1x1 conv (3C, C, 1, 1), got "
                f"{fmt_shape(w.shape)}."
            )
        mapped["qkv.weight"] = w.reshape(w.shape[0], w.shape[1])
    if any(isinstance(m, CPEModule) for m in layer.pe):
        i, _ = _find(layer, CPEModule)
        for part in ("weight", "bias"):
            if f"pos_embed.{part}" in state:
                mapped[f"pe.{i}.conv.{part}"] = state[f"pos_embed.{part}"]
    return _load(layer, mapped, "DilateFormer state dict")


def _from_torchvision_3d(attn: torch.nn.Module) -> AttentionLayer:
    """:func:`from_torchvision` for Video Swin's ``ShiftedWindowAttention3d``."""
    fn, kind = "from_torchvision", type(attn).__name__
    window, shift = tuple(attn.window_size), tuple(attn.shift_size)
    if len(window) != 3 or len(shift) != 3:
        raise AttnblocksError(
            f"{fn}: expected 3-D window_size and shift_size, got {window}, {shift}."
        )
    if attn.proj.bias is None:
        raise AttnblocksError(
            f"{fn}: the {kind} has proj_bias=False; attnblocks layers always have one."
        )
    if any(s >= w for s, w in zip(shift, window)):
        raise AttnblocksError(
            f"{fn}: the {kind} has shift_size={list(shift)} not smaller than its window_size="
            f"{list(window)}; Window needs 0 <= shift < size per axis."
        )
    spec = Attention(
        partition=Window(window, shift=shift, clamp="timm"),
        pe=RelPosBias(index="torchvision"),
        pad="torchvision",
        qkv_bias=attn.qkv.bias is not None,
        attn_drop=float(attn.attention_dropout),
        proj_drop=float(attn.dropout),
    )
    weight = attn.qkv.weight
    layer = spec.build(
        attn.qkv.in_features, attn.num_heads, device=weight.device, dtype=weight.dtype
    )
    state = attn.state_dict()
    table = state["relative_position_bias_table"]
    _refuse(fn, layer, "heads (the table's columns)", table.shape[1], layer.num_heads)
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in ("qkv", "proj")}
    mapped["pe.0.tables.0"] = table
    return _load(layer, mapped, f"torchvision {kind}")


def from_torchvision(module: torch.nn.Module) -> AttentionLayer:
    """The attnblocks layer that computes what a torchvision Swin attention computes.

    ``module``: torchvision's ``ShiftedWindowAttention`` or ``ShiftedWindowAttentionV2``
    (``torchvision.models.swin_transformer``), Video Swin's ``ShiftedWindowAttention3d``
    (``torchvision.models.video.swin_transformer``), or a ``SwinTransformerBlock(V2)`` holding
    one.
    Its configuration is read from the module (window, shift, heads, biases, dropouts) and its
    weights are copied, on the module's device and in its dtype. torchvision's rules are named
    in the spec. 2-D: ``Window(..., clamp="torchvision")`` (the window keeps its size; no shift
    on an axis the map does not exceed) and ``pad="torchvision"`` (the map is zero-padded
    before the projection, then rolled; the padded tokens stay in the softmax). 3-D:
    ``Window((t, h, w), ..., clamp="timm")`` (per axis, the window shrinks to the map and the
    shift is 0 where the map is not larger than the window), the same ``pad="torchvision"``,
    and ``RelPosBias(index="torchvision")`` (a shrunk window reads the top-left block of the
    full window's index, as torchvision does).

    Shapes: the returned layer maps ``(B, H, W, C) -> (B, H, W, C)``, or
    ``(B, T, H, W, C) -> (B, T, H, W, C)`` for the 3-D attention, as ``module`` does.

    Example:
        >>> from torchvision.models.swin_transformer import ShiftedWindowAttention
        >>> attn = ShiftedWindowAttention(32, [7, 7], [3, 3], num_heads=4)
        >>> from_torchvision(attn).spec
        Attention(partition=Window(7, shift=3, clamp='torchvision'), pe=RelPosBias(), pad='torchvision')
    """  # noqa: E501
    fn = "from_torchvision"
    attn = getattr(module, "attn", module)
    kind = type(attn).__name__
    if kind == "ShiftedWindowAttention3d":
        return _from_torchvision_3d(attn)
    if kind not in ("ShiftedWindowAttention", "ShiftedWindowAttentionV2"):
        raise TypeError(
            f"{fn}: expected torchvision's ShiftedWindowAttention(V2) or a SwinTransformerBlock "
            f"holding one, got {type(module).__name__}."
        )
    window, shift = tuple(attn.window_size), tuple(attn.shift_size)
    if len(window) != 2 or len(shift) != 2:
        raise AttnblocksError(
            f"{fn}: expected 2-D window_size and shift_size, got {window}, {shift}."
        )
    if attn.proj.bias is None:
        raise AttnblocksError(
            f"{fn}: the {kind} has proj_bias=False; attnblocks layers always have one."
        )
    if any(s >= w for s, w in zip(shift, window)):
        raise AttnblocksError(
            f"{fn}: the {kind} has shift_size={list(shift)} not smaller than its window_size="
            f"{list(window)}; Window needs 0 <= shift < size per axis."
        )
    v2 = kind.endswith("V2")
    has_bias = attn.qkv.bias is not None
    common = {
        "partition": Window(window, shift=shift, clamp="torchvision"),
        "pad": "torchvision",
        "attn_drop": float(attn.attention_dropout),
        "proj_drop": float(attn.dropout),
    }
    if v2:
        spec = Attention(
            pe=ContinuousPosBias(), score=Cosine(), qkv_bias="qv" if has_bias else False, **common
        )
    else:
        spec = Attention(pe=RelPosBias(), qkv_bias=has_bias, **common)
    weight = attn.qkv.weight
    layer = spec.build(
        attn.qkv.in_features, attn.num_heads, device=weight.device, dtype=weight.dtype
    )
    state = {k: v for k, v in attn.state_dict().items() if k not in _SWINV2_DERIVED}
    if not v2:
        return load_swin(layer, state, window=window)
    if has_bias:
        c = attn.qkv.in_features
        bias = state.pop("qkv.bias")  # torchvision zeroes the key third at every call
        state["q_bias"], state["v_bias"] = bias[:c], bias[2 * c :]
    return load_swinv2(layer, state)
