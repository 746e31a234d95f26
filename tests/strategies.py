"""Hypothesis strategies for maps, partitions and compositions."""

from __future__ import annotations

from hypothesis import strategies as st

from attnblocks import Dilated, Global, Grid, Stripe, Window

sizes = st.integers(1, 24)


@st.composite
def windows(draw, max_size: int = 9) -> Window:
    wh = draw(st.integers(1, max_size))
    ww = draw(st.one_of(st.just(wh), st.integers(1, max_size)))
    sh = draw(st.integers(0, wh - 1))
    sw = draw(st.one_of(st.just(min(sh, ww - 1)), st.integers(0, ww - 1)))
    clamp = draw(st.sampled_from([None, "timm", "swin", "torchvision"]))
    return Window((wh, ww), shift=(sh, sw), clamp=clamp)


def concrete_partitions(max_size: int = 9):
    """Any concrete (non-generic) partition."""
    return st.one_of(
        windows(max_size),
        st.builds(Stripe, st.integers(1, max_size), st.sampled_from(["v", "h"])),
        st.just(Global()),
        st.builds(Grid, st.integers(1, 6)),
    )


@st.composite
def maps_and_partitions(draw):
    """A map and a concrete partition that runs on it (rectangular or sliding)."""
    H, W = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    kind = draw(st.sampled_from(["rect", "sliding"]))
    if kind == "rect":
        return H, W, draw(concrete_partitions(max_size=6))
    border = draw(st.sampled_from(["mask", "shift"]))
    square = draw(st.booleans())
    axes = []
    for L in (H, W) if not square else (min(H, W),):
        if border == "shift":  # kernel * dilation <= H, W
            r = draw(st.integers(1, max(1, L // 2)))
            k = draw(st.integers(1, max(1, L // r)))
        else:
            k = draw(st.sampled_from([1, 3, 5]))
            r = draw(st.integers(1, 3))
        axes.append((k, r))
    (kh, ry), (kw, rx) = axes * 2 if square else axes
    return H, W, Dilated((kh, kw), dilation=((ry, rx),), border=border)


@st.composite
def divisible_maps(draw, max_cells: int = 4) -> tuple:
    """A rectangular ``Grid`` or ``Window`` and a map it divides, often with a size-1 axis
    (``1 x W`` or ``H x 1`` maps, one-row cells): the unpadded, ordered fast path's cases.

    Returns ``(partition, H, W)``.
    """
    gh, gw = draw(st.integers(1, max_cells)), draw(st.integers(1, max_cells))
    a = draw(st.sampled_from([1, 1, 2, 3]))
    b = draw(st.sampled_from([1, 2, 3, 4]))
    if draw(st.booleans()):
        a, b = b, a
    part = draw(st.sampled_from([Grid((gh, gw)), Window((gh, gw))]))
    return part, gh * a, gw * b
