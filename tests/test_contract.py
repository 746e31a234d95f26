"""The extension contract, driven by the spec registry: every registered partition, on every
backend, with every encoder where it is defined, equals the dense oracle.

The partitions come from :func:`attnblocks.config.spec_types` at collection time: the built-in
ones, the worked example's (``examples/custom_partition.py``, imported here), the ones defined
below, and any other ``RulePartition`` subclass defined before this module is collected, so a
new partition is covered without writing a test. Built-in partitions take their instances from
``BUILTIN`` (a class missing there fails the test); rule partitions from their ``examples()``.

Reference: dense masked attention over all ``N`` tokens with the oracle mask (float64,
``atol=1e-10``), computed here from :func:`~attnblocks.dense_mask` (for unions and intersections
from the parts' masks, combined here); with encoders, the layer on ``backend="dense"`` (the
dense encoder forms; the rule partitions' own are checked against plain references below).
Forward on every backend; the input gradient on eager against dense (flex has no CPU backward,
auto runs eager on CPU). Examples per case are few (the contract multiplies cases), drawn
deterministically (the ``ci`` profile).
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import flex_attention as flex_module

from attnblocks import (
    Attention,
    AttnblocksError,
    Dilated,
    Downsample,
    Global,
    Grid,
    KeyIntersection,
    KeyUnion,
    LePE,
    Neighborhood,
    Partition,
    RectLayout,
    RelPosBias,
    RulePartition,
    Split,
    Stripe,
    Window,
    dense_mask,
)
from attnblocks.backends import dense_attention
from attnblocks.config import spec_types
from helpers import randomize_
from strategies import windows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import custom_partition  # (registers the example's Axial and Tiles)

warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
MAX = 9  # largest map side drawn (the dense oracle is N x N)


# -- partitions defined in a test: covered without a test of their own ------------------------


class Checkerboard(RulePartition):
    """Tokens of the query's colour on a checkerboard, at most ``radius`` rows and columns away."""

    radius: int = 1

    def allows(self, q, k):
        near = ((q[0] - k[0]).abs() <= self.radius) & ((q[1] - k[1]).abs() <= self.radius)
        return near & ((q[0] + q[1]) % 2 == (k[0] + k[1]) % 2)

    @property
    def window_size(self):
        return (self.radius + 1, self.radius + 1)

    @classmethod
    def examples(cls):
        return (cls(1), cls(2))


class Bands(RulePartition):
    """Horizontal bands of ``rows`` rows, declared as windows (the eager window runner)."""

    rows: int = 2

    def allows(self, q, k):
        return q[0] // self.rows == k[0] // self.rows

    def layout(self, H, W, pad="mask"):
        return RectLayout((H, W), (self.rows, W), pad_mode=pad)

    @classmethod
    def examples(cls):
        return (cls(1), cls(3))


class LastColumn(RulePartition):
    """Longformer-like global tokens: the map's last column, plus the query itself; the rule
    reads the map size (``allows(q, k, shape)``)."""

    def allows(self, q, k, shape):
        return (k[1] == shape[1] - 1) | (q[1] == shape[1] - 1) | ((q[0] == k[0]) & (q[1] == k[1]))


def _dilated(cls):
    @st.composite
    def draw(draw):
        kernel = draw(st.sampled_from([1, 3, 5]))
        dilation = draw(st.integers(1, 2 if kernel < 5 else 1))  # shifted windows fit in MAX
        if cls is Neighborhood:
            return Neighborhood(kernel, dilation=dilation)
        return Dilated(kernel, dilation=dilation, border=draw(st.sampled_from(["mask", "shift"])))

    return draw()


BUILTIN = {
    Window: windows(4),
    Stripe: st.builds(Stripe, st.integers(1, 4), st.sampled_from(["v", "h"])),
    Global: st.just(Global()),
    Grid: st.builds(Grid, st.integers(1, 4)),
    Dilated: _dilated(Dilated),
    Neighborhood: _dilated(Neighborhood),
}
# not a set of the map's tokens (keys come from a reduced copy of the map): no pair oracle
EXCLUDED = {Downsample: "keys of its own reduced map"}


def registered() -> list[type]:
    """Every constructible partition class in the spec registry, by name."""
    out = {
        c
        for name, c in spec_types().items()
        if isinstance(c, type) and issubclass(c, Partition) and not name.startswith("_")
    }
    return sorted(out - set(EXCLUDED), key=lambda c: c.__name__)


def instances(cls: type) -> st.SearchStrategy:
    if issubclass(cls, RulePartition):
        return st.sampled_from(cls.examples())
    if cls not in BUILTIN:
        raise AssertionError(f"{cls.__name__}: give it a strategy in BUILTIN (or EXCLUDED)")
    return BUILTIN[cls]


def min_side(part: Partition) -> int:
    """The smallest map side a partition runs on (a shifted sliding window must fit)."""
    parts = part.parts if isinstance(part, (KeyUnion, KeyIntersection)) else (part,)
    sides = [p.kernel * p.dilation for p in parts if isinstance(p, Dilated) and p.border == "shift"]
    return max([1, *sides])


def encoder_for(part: Partition, name: str):
    """The encoder drawn for a partition, or ``None`` where the combination is not defined
    (the layer must then refuse it with an AttnblocksError)."""
    if name == "none":
        return ()
    if name == "lepe":
        return LePE()
    own_size = isinstance(part, (Window, Grid, Dilated)) or getattr(part, "window_size", None)
    return RelPosBias() if own_size else RelPosBias(size=MAX)


def undefined(part: Partition, enc: str, backend: str) -> bool:
    """Combinations the library refuses (checked to raise)."""
    sliding = isinstance(part, Dilated)
    return sliding and (enc == "lepe" or (enc == "relpos" and backend == "flex"))


def masked_forward(layer, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Dense attention with the given ``(G, N, N)`` masks, one per head group, no encoders."""
    B, H, W, C = x.shape
    qkv = layer.qkv(x.reshape(B, H * W, C))
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=layer.num_heads)
    outs = []
    for g, allowed in zip(layer.groups, masks):
        h0, h1 = g.heads
        outs.append(dense_attention(q[:, h0:h1], k[:, h0:h1], v[:, h0:h1], allowed, layer.scale))
    return layer.proj(rearrange(torch.cat(outs, dim=1), "b h n d -> b n (h d)")).view(B, H, W, C)


def run(spec: Attention, state: dict, x: torch.Tensor, backend: str, grad: bool):
    layer = dataclasses.replace(spec, backend=backend).build(state["dim"], state["heads"])
    layer = layer.double()
    layer.load_state_dict(state["weights"])
    xin = x.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        out = layer(xin)
    if not grad:
        return out, None
    out.square().sum().backward()
    return out, xin.grad


BACKENDS = ("auto", "eager", "dense", "flex")
CLOSE = {"atol": 1e-10, "rtol": 1e-9}


def check_all_backends(
    spec: Attention, x: torch.Tensor, dim: int, heads: int, masks, trace_flex: bool = True
) -> None:
    """Every backend against ``backend="dense"`` (and that against ``masks``, when given).

    ``trace_flex=False`` runs FlexAttention's own unfused implementation without its Dynamo
    trace (``_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG``): the same mask and score functions and
    the same math, a second less per call. The trace itself depends on the partition's mask
    function only, which the encoder-free case of each partition traces; the encoders' score
    functions are traced in :func:`test_flex_traces_the_encoders_score_functions`.
    """
    ref_layer = randomize_(dataclasses.replace(spec, backend="dense").build(dim, heads).double())
    state = {"dim": dim, "heads": heads, "weights": ref_layer.state_dict()}
    ref, ref_grad = run(spec, state, x, "dense", grad=True)
    if masks is not None:  # no encoders: the oracle mask is the whole story
        with torch.no_grad():
            torch.testing.assert_close(ref, masked_forward(ref_layer, x, masks), **CLOSE)
    for backend in BACKENDS:
        if backend == "dense":
            continue  # the reference itself
        grad = backend == "eager"  # auto runs eager on CPU; flex has no CPU backward
        with pytest.MonkeyPatch.context() as m:
            if backend == "flex" and not trace_flex:
                m.setattr(flex_module, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True)
            out, g = run(spec, state, x, backend, grad)
        torch.testing.assert_close(out, ref, **CLOSE, msg=lambda m, b=backend: f"{b}: {m}")
        if grad:
            torch.testing.assert_close(g, ref_grad, **CLOSE)


@pytest.mark.parametrize("enc", ["none", "lepe", "relpos"])
@pytest.mark.parametrize("cls", registered(), ids=lambda c: c.__name__)
@settings(max_examples=2)
@given(data=st.data())
def test_every_partition_every_backend_equals_the_oracle(cls, enc, data):
    part = data.draw(instances(cls), label="partition")
    lo = min_side(part)
    H, W = data.draw(st.integers(lo, MAX), label="H"), data.draw(st.integers(lo, MAX), label="W")
    heads, d = data.draw(st.integers(1, 2), label="heads"), data.draw(st.integers(1, 3), label="d")
    spec = Attention(partition=part, pe=encoder_for(part, enc))
    x = torch.randn(data.draw(st.integers(1, 2), label="B"), H, W, heads * d, dtype=torch.float64)
    if any(undefined(part, enc, b) for b in BACKENDS):
        for b in BACKENDS:
            if undefined(part, enc, b):
                with pytest.raises(AttnblocksError), torch.no_grad():
                    dataclasses.replace(spec, backend=b).build(heads * d, heads).double()(x)
        return
    masks = dense_mask(part, H, W)[None] if enc == "none" else None
    check_all_backends(spec, x, heads * d, heads, masks, trace_flex=enc == "none")


@pytest.mark.parametrize(
    "spec",
    [
        Attention(partition=Checkerboard(1), pe=RelPosBias()),
        Attention(partition=Window(3, shift=1), pe=RelPosBias()),
        Attention(partition=Stripe(2, axis="v"), pe=LePE()),
        Attention(partition=Bands(2), pe=LePE()),
    ],
    ids=repr,
)
def test_flex_traces_the_encoders_score_functions(spec):
    """FlexAttention's traced call with each kind of encoder term (a rule's and a built-in's
    relative bias as ``score_mod``, LePE beside the call), on a non-square map."""
    x = torch.randn(2, 5, 7, 4, dtype=torch.float64)
    check_all_backends(spec, x, 4, 2, None)


def _all_instances() -> st.SearchStrategy:
    return st.one_of([instances(c) for c in registered()])


@settings(max_examples=8)
@given(
    p=st.deferred(_all_instances),
    q=st.deferred(_all_instances),
    op=st.sampled_from(["|", "&"]),
    data=st.data(),
)
def test_unions_and_intersections_equal_the_combined_mask(p, q, op, data):
    combined = p | q if op == "|" else p & q
    lo = max(min_side(p), min_side(q))
    H, W = data.draw(st.integers(lo, MAX), label="H"), data.draw(st.integers(lo, MAX), label="W")
    a, b = dense_mask(p, H, W), dense_mask(q, H, W)
    mask = a | b if op == "|" else a & b  # the oracle of the combined key set, built here
    assert torch.equal(dense_mask(combined, H, W), mask)
    # beside a built-in partition under Split, as a hybrid runs it
    spec = Attention(heads=Split(Window(2), combined))
    x = torch.randn(1, H, W, 4, dtype=torch.float64)
    check_all_backends(spec, x, 4, 2, torch.stack([dense_mask(Window(2), H, W), mask]))


# -- the rule partitions' own encoder forms, against plain references -------------------------


def test_lepe_on_a_rule_is_the_depthwise_conv_of_v_over_the_map():
    spec = Attention(partition=custom_partition.Axial(), pe=LePE(), backend="dense")
    layer = randomize_(spec.build(6, 2).double())
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    _, H, W, C = x.shape
    q, k, v = rearrange(layer.qkv(x), "b y x (three h d) -> three b h (y x) d", three=3, h=2)
    attn = dense_attention(q, k, v, dense_mask(custom_partition.Axial(), H, W), layer.scale)
    conv = layer.pe[0].conv
    vmap = rearrange(v, "b h (y x) d -> b (h d) y x", y=H)
    lepe = F.conv2d(vmap, conv.weight, conv.bias, padding=1, groups=C)
    o = rearrange(attn, "b h (y x) d -> b y x (h d)", y=H) + lepe.permute(0, 2, 3, 1)
    torch.testing.assert_close(layer(x), layer.proj(o), **CLOSE)


def test_relpos_on_a_rule_reads_the_table_at_each_pairs_offset():
    part = Checkerboard(2)
    layer = randomize_(Attention(partition=part, pe=RelPosBias(), backend="dense").build(4, 2))
    layer = layer.double()
    x = torch.randn(1, 6, 5, 4, dtype=torch.float64)
    H, W = 6, 5
    q, k, v = rearrange(layer.qkv(x), "b y x (three h d) -> three b h (y x) d", three=3, h=2)
    table, (M, _) = layer.pe[0].tables[0], part.window_size
    bias = torch.zeros(2, H * W, H * W, dtype=torch.float64)
    for i in range(H * W):
        for j in range(H * W):
            dy, dx = i // W - j // W, i % W - j % W
            if abs(dy) < M and abs(dx) < M:
                bias[:, i, j] = table[(dy + M - 1) * (2 * M - 1) + dx + M - 1]
    o = dense_attention(q, k, v, dense_mask(part, H, W), layer.scale, bias)
    ref = layer.proj(rearrange(o, "b h (y x) d -> b y x (h d)", y=H))
    torch.testing.assert_close(layer(x), ref, **CLOSE)


# -- the contract's promises outside the numbers ----------------------------------------------


def test_a_rule_without_a_rule_fails_when_defined():
    with pytest.raises(TypeError, match="must define allows or oracle"):

        class Nothing(RulePartition):
            size: int = 3

    with pytest.raises(TypeError, match=r"takes \(q, k\)"):

        class Typo(RulePartition):
            def allows(self, q):
                return q[0] == q[0]


def test_a_rule_is_a_frozen_hashable_spec_with_config_and_repr():
    from attnblocks import from_config, to_config

    c = Checkerboard(2)
    assert (
        repr(c) == "Checkerboard(radius=2)"
        and c == Checkerboard(2)
        and hash(c) == hash(Checkerboard(2))
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.radius = 3
    spec = Attention(heads=Split(Window(4), (c | Bands(3)) & Global()), pe=LePE())
    assert from_config(to_config(spec)) == spec
    assert repr(spec.heads.partitions[1]) == "(Checkerboard(radius=2) | Bands(rows=3)) & Global()"


def test_relpos_refuses_a_rule_without_a_window_size():
    with pytest.raises(AttnblocksError, match="declares none"):
        Attention(partition=custom_partition.Axial(), pe=RelPosBias()).build(4, 2)
    layer = Attention(partition=custom_partition.Axial(), pe=RelPosBias(size=2)).build(4, 2)
    with pytest.raises(AttnblocksError, match=r"lets query \(0, 0\) attend to key"):
        layer(torch.randn(1, 4, 4, 4))


def test_a_layout_that_contradicts_the_rule_is_refused():
    class Liar(RulePartition):
        def allows(self, q, k):
            return q[0] == k[0]

        def layout(self, H, W, pad="mask"):
            return RectLayout((H, W), (2, 2), pad_mode=pad)

    with pytest.raises(AttnblocksError, match="its rule allows other pairs"):
        Attention(partition=Liar()).build(4, 2)(torch.randn(1, 4, 4, 4))


def test_a_declared_layout_runs_the_eager_window_runner():
    from attnblocks.families.rect.runner import RectRunner

    layer = Attention(partition=custom_partition.Tiles(4)).build(8, 2)
    assert isinstance(layer.runners[0], RectRunner) and layer._orderable
    ref = Attention(partition=Window(4)).build(8, 2)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 8, 12, 8)
    torch.testing.assert_close(layer(x), ref(x))
    assert "windows 2x3 of 4x4 tokens" in "\n".join(layer.groups[0].partition.describe(8, 12))


def test_explain_cost_and_pictures_come_from_the_rule():
    from attnblocks import cost, draw_pattern, explain

    spec = Attention(heads=Split(Window(2), custom_partition.Axial() | Window(2)))
    text = explain(spec, (6, 6), 8, 2)
    assert "union of 2 key sets" in text and "runs the dense lowering" in text
    c = cost(spec, (6, 6), dim=8, num_heads=2)
    keys = dense_mask(custom_partition.Axial() | Window(2), 6, 6).sum(-1).double()
    assert c.groups[1].keys_mean == pytest.approx(keys.mean().item())
    assert c.groups[1].attention_macs == 2 * 36 * 36 * 4  # N x N scores, head dim 4
    pytest.importorskip("matplotlib")
    assert len(draw_pattern(spec, (6, 6), (2, 3)).axes) == 2


def test_a_rule_compiles():
    layer = Attention(heads=Split(Window(2), custom_partition.Axial())).build(8, 2)
    x = torch.randn(1, 6, 6, 8)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))


@pytest.mark.parametrize("backend", ["auto", "dense"])
def test_a_rule_behaves_the_same_after_inference_mode(backend):
    spec = Attention(partition=Checkerboard(1), pe=(RelPosBias(), LePE()), backend=backend)
    layer = spec.build(8, 2)
    x = torch.randn(1, 5, 6, 8)
    with torch.inference_mode():
        before = layer(x)
    after = layer(x)
    after.sum().backward()  # the cached mask and indices are not inference tensors
    torch.testing.assert_close(before, after)
