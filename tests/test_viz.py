"""Pattern pictures: the drawn pixels show the dense mask, cell by cell, panel by panel."""

import sys

import numpy as np
import pytest

from attnblocks import Attention, AttnblocksError, Global, Grid, Split, Stripe, Window, dense_mask
from attnblocks.viz import BACKGROUND, KEY_TINT, QUERY_COLORS, draw_pattern

pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg


def _render(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255


def _cell_rgb(fig, pixels: np.ndarray, panel: int, y: int, x: int) -> np.ndarray:
    """The colour at the centre of cell (y, x) of a panel (data coords are cell centres)."""
    px, py = fig.axes[panel].transData.transform((x, y))
    return pixels[int(np.rint(pixels.shape[0] - py)), int(np.rint(px))]


def _expected(mask: np.ndarray, W: int, queries, y: int, x: int) -> np.ndarray:
    """Written from the drawing's rule: own cell full colour, keys tinted (mean), else grey."""
    colors = [np.array(QUERY_COLORS[i]) for i in range(len(queries))]
    for (qy, qx), c in zip(reversed(queries), reversed(colors)):
        if (qy, qx) == (y, x):
            return c
    hits = [
        c * (1 - KEY_TINT) + KEY_TINT
        for (qy, qx), c in zip(queries, colors)
        if mask[qy * W + qx, y * W + x]
    ]
    return np.mean(hits, axis=0) if hits else np.array(BACKGROUND)


@pytest.mark.parametrize(
    ("spec", "hw", "queries", "num_heads"),
    [
        # shifted windows on a non-square map that the windows do not divide (padded keys)
        (Attention(partition=Window(3, shift=1)), (5, 7), [(0, 0), (4, 6)], None),
        # one panel per head group: CSWin's cross (overlapping keys blend), grid, global
        (Attention(partition=Stripe(2), heads=Split(2)), (6, 5), [(1, 1), (4, 3)], 4),
        (Attention(heads=Split(Grid(2), Window((2, 3)), Global())), (4, 6), [(3, 2)], 3),
        (Stripe(1, axis="v"), (3, 4), [(2, 1)], None),
    ],
)
def test_drawn_cells_show_the_dense_mask(spec, hw, queries, num_heads):
    H, W = hw
    fig = draw_pattern(spec, hw, queries, num_heads=num_heads)
    masks = dense_mask(spec, H, W, num_heads) if isinstance(spec, Attention) else None
    masks = (masks if masks is not None else dense_mask(spec, H, W)[None]).numpy()
    assert len(fig.axes) == masks.shape[0]
    pixels = _render(fig)
    for g, mask in enumerate(masks):
        for y in range(H):
            for x in range(W):
                np.testing.assert_allclose(
                    _cell_rgb(fig, pixels, g, y, x),
                    _expected(mask, W, queries, y, x),
                    atol=1.5 / 255,
                    err_msg=f"panel {g}, cell (y, x)=({y}, {x})",
                )


def test_attended_and_ignored_keys_differ_in_the_picture():
    """Guards the test above against a rule under which every cell looks alike."""
    fig = draw_pattern(Window(2), (2, 4), (0, 0))
    pixels = _render(fig)
    attended, ignored = _cell_rgb(fig, pixels, 0, 1, 1), _cell_rgb(fig, pixels, 0, 1, 2)
    assert np.abs(attended - ignored).max() > 0.2


def test_saves_a_png(tmp_path):
    path = tmp_path / "swin.png"
    draw_pattern(Attention(partition=Window(2, shift=1)), 4, [(0, 0)], path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_channels_when_dim_is_given():
    fig = draw_pattern(Attention(partition=Stripe(2), heads=Split(2)), 4, (1, 1), 32, 4)
    assert "channels [16, 32)" in fig.axes[1].get_title()


@pytest.mark.parametrize(
    ("queries", "match"),
    [((5, 0), r"query \(y, x\)=\(5, 0\) lies outside the 4x6 map"), ([], "at least one")],
)
def test_bad_queries(queries, match):
    with pytest.raises(AttnblocksError, match=match):
        draw_pattern(Window(2), (4, 6), queries)


def test_bad_spec():
    with pytest.raises(TypeError, match="expects a Partition or an Attention, got int"):
        draw_pattern(7, (4, 6), (0, 0))


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"attnblocks\[viz\]"):
        draw_pattern(Window(2), (4, 6), (0, 0))


def test_one_and_three_dimensional_maps_are_drawn_per_slice():
    """A 1-D map is one row per group; a 3-D map one panel per time slice and group, and each
    slice shows the dense mask's keys of that frame."""
    from attnblocks.viz import pattern_image

    fig = draw_pattern(Attention(heads=Split(Window((4,)), Window((2,)))), (12,), [(5,)])
    assert len(fig.axes) == 2
    spec = Attention(heads=Split(Window((2, 2, 2), shift=(1, 1, 1)), Stripe(1, axis=0)))
    fig = draw_pattern(spec, (3, 4, 5), [(1, 2, 3)])
    assert len(fig.axes) == 2 * 3
    mask = dense_mask(Window((2, 2, 2), shift=(1, 1, 1)), (3, 4, 5)).numpy()
    img = pattern_image(mask, (3, 4, 5), [(1, 2, 3)])
    keys = mask[1 * 20 + 2 * 5 + 3].reshape(3, 4, 5)
    assert ((img != BACKGROUND).any(-1) == keys).all()
    with pytest.raises(AttnblocksError, match=r"\(t, y, x\) position"):
        draw_pattern(spec, (3, 4, 5), [(1, 2)])
