"""The pattern gallery: pictures of who attends to whom, drawn by ``attnblocks.viz``.

Run as a script (``python docs/gen_gallery.py [OUT_DIR]``) or as an mkdocs hook (``hooks:`` in
``mkdocs.yml``): before each build it draws every entry of ``GALLERY`` and ``FIGURES`` into
``docs/gallery/`` (git-ignored) and renders the gallery page's ``<!-- gallery -->`` marker as
one section per ``GALLERY`` entry. To add a picture, add an entry: the page follows.
``FIGURES`` are pictures for other pages (the home page, the recipes), which embed them as
``gallery/<name>.png``; ``REDUCED`` draws the ``Downsample`` groups, which have no dense mask.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout these docs belong to

from attnblocks import (  # noqa: E402
    Attention,
    Causal,
    Dilated,
    Global,
    Grid,
    Split,
    Stripe,
    Window,
    dense_mask,
    zoo,
)
from attnblocks.viz import KEY_TINT, QUERY_COLORS, draw_pattern, pattern_image  # noqa: E402

OUT = DOCS / "gallery"
MARKER = "<!-- gallery -->"


@dataclass(frozen=True)
class Entry:
    name: str  # the PNG's file name, without .png
    title: str
    caption: str
    spec: object
    code: str  # the spec as the reader would write it
    hw: tuple[int, ...]
    queries: tuple[tuple[int, ...], ...]
    num_heads: int | None = None


GALLERY = (
    Entry(
        "swin_wmsa",
        "Swin: windows (W-MSA)",
        "Every token attends to the tokens of its own 4x4 window.",
        zoo.swin(4),
        "zoo.swin(4)",
        (12, 12),
        ((1, 2), (6, 9)),
    ),
    Entry(
        "swin_swmsa",
        "Swin: shifted windows (SW-MSA)",
        "The windows move by 2 tokens. Windows at the bottom and right edges wrap around to "
        "the top and left, but tokens from opposite edges are masked out, so each query sees "
        "only its own shift region: one window becomes up to four.",
        zoo.swin(4, shift=2),
        "zoo.swin(4, shift=2)",
        (12, 12),
        ((0, 0), (5, 6), (11, 1), (11, 11)),
    ),
    Entry(
        "padded_windows",
        "Windows that do not divide the map",
        "A 12x12 map in 5x5 windows is padded to 15x15, and the padded keys are masked "
        "(`pad='mask'`, the default), so the windows on the bottom and right edges are smaller.",
        Attention(partition=Window(5)),
        "Attention(partition=Window(5))",
        (12, 12),
        ((2, 2), (11, 11)),
    ),
    Entry(
        "cswin",
        "CSWin: cross-shaped stripes",
        "Half the heads attend within vertical stripes of width 2, the other half within "
        "horizontal ones: the union of the two groups is a cross around each query's stripes.",
        zoo.cswin(2),
        "zoo.cswin(2)",
        (12, 12),
        ((5, 6),),
        2,
    ),
    Entry(
        "grid",
        "Grid (MaxViT's grid attention)",
        "A 3x3 grid spread evenly over the map: each query attends to the tokens 4 rows and 4 "
        "columns apart, a sparse global pattern.",
        Attention(partition=Grid(3)),
        "Attention(partition=Grid(3))",
        (12, 12),
        ((0, 0), (5, 6)),
    ),
    Entry(
        "hybrid_window_stripe",
        "Hybrid: windows + horizontal stripes",
        "One head group sees local 4x4 windows, the other full-width stripes of 2 rows.",
        Attention(heads=Split(Window(4), Stripe(2, axis="h"))),
        'Attention(heads=Split(Window(4), Stripe(2, axis="h")))',
        (12, 12),
        ((5, 6),),
    ),
    Entry(
        "hybrid_window_grid",
        "Hybrid: windows + grid",
        "Local and sparse global context in one layer, with no alternating blocks: "
        "MaxViT's two attentions as two head groups.",
        Attention(heads=Split(Window(4), Grid(3))),
        "Attention(heads=Split(Window(4), Grid(3)))",
        (12, 12),
        ((5, 6),),
    ),
    Entry(
        "hybrid_stripe_global",
        "Hybrid: vertical stripes + global",
        "One head group sees vertical stripes, the other head group sees the whole map.",
        Attention(heads=Split(Stripe(2, axis="v"), Global())),
        'Attention(heads=Split(Stripe(2, axis="v"), Global()))',
        (12, 12),
        ((5, 6),),
    ),
    Entry(
        "dilated",
        "DilateFormer: multi-scale dilations",
        "Three head groups, each with a 3x3 kernel around the query, its keys 1, 2 and 3 tokens "
        "apart. Drawn with `border='mask'`; DilateFormer itself (`border='zeros'`, the default) "
        "also keeps the out-of-map keys in the softmax as zero vectors, so a query in the "
        "corner attends to the same in-map keys plus zeros.",
        Attention(partition=Dilated(3, dilation=(1, 2, 3), border="mask"), heads=Split(3)),
        'Attention(partition=Dilated(3, dilation=(1, 2, 3), border="mask"), heads=Split(3))',
        (12, 12),
        ((5, 6), (1, 1)),
    ),
    Entry(
        "neighborhood",
        "NAT: neighbourhood attention at the borders",
        "Every query sees the 5x5 keys nearest to it. In the interior they are centred on the "
        "query; at a border or corner the window shifts inward rather than being cut, so every "
        "query still sees 25 real keys.",
        zoo.nat(5),
        "zoo.nat(5)",
        (12, 12),
        ((0, 0), (6, 6), (11, 4)),
    ),
    Entry(
        "hybrid_window_dilated_grid",
        "Hybrid: windows + dilated + grid",
        "Three head groups at three ranges: a local 4x4 window, a 3x3 kernel with dilation 2 "
        "centred on the query, and a sparse 3x3 grid over the whole map.",
        Attention(heads=Split(Window(4), Dilated(3, dilation=2, border="mask"), Grid(3))),
        'Attention(heads=Split(Window(4), Dilated(3, dilation=2, border="mask"), Grid(3)))',
        (12, 12),
        ((5, 6),),
    ),
    Entry(
        "sequence_windows",
        "1-D: shifted windows over a sequence",
        "A sequence of 16 tokens in windows of 4, shifted by 2: the last two tokens wrap "
        "around to the front, and stay apart from the first two (their own shift region).",
        Attention(partition=Window((4,), shift=(2,))),
        "Attention(partition=Window((4,), shift=(2,)))",
        (16,),
        ((0,), (7,), (15,)),
    ),
    Entry(
        "video_swin",
        "3-D: Video Swin's shifted windows, slices in time",
        "A 4x8x8 clip in (2, 4, 4) windows shifted by (1, 2, 2), drawn one time slice per "
        "panel: each window spans two frames, and the shift wraps the last frame to the first.",
        Attention(partition=Window((2, 4, 4), shift=(1, 2, 2))),
        "Attention(partition=Window((2, 4, 4), shift=(1, 2, 2)))",
        (4, 8, 8),
        ((1, 2, 2), (3, 7, 7)),
    ),
    Entry(
        "video_causal",
        "3-D: windows causal in time, with a time stripe",
        "One head group in (2, 4, 4) windows that never look at a later frame; the other "
        "follows its token through every earlier frame (a stripe along time, causal).",
        Attention(
            heads=Split(
                Window((2, 4, 4)) & Causal(axes=(0,)), Stripe(1, axis=0) & Causal(axes=(0,))
            )
        ),
        "Attention(heads=Split(Window((2, 4, 4)) & Causal(axes=(0,)),\n"
        "                      Stripe(1, axis=0) & Causal(axes=(0,))))",
        (3, 8, 8),
        ((1, 5, 6),),
    ),
)


# pictures embedded by other pages (name, spec, map, queries, heads)
FIGURES = (
    Entry("swinv2_windows", "", "", zoo.swinv2(4, shift=2), "", (12, 12), ((0, 0), (6, 9))),
    Entry("maxvit_block", "", "", zoo.maxvit_block(4), "", (12, 12), ((1, 2), (6, 9))),
    Entry("dinat", "", "", zoo.dinat(3, dilation=2), "", (12, 12), ((0, 0), (6, 6))),
)


@dataclass(frozen=True)
class Reduced:
    """A ``Downsample`` layer drawn per head group: its keys are ``r x r`` patches."""

    name: str
    title: str
    ratios: tuple[int, ...]
    hw: tuple[int, int]
    query: tuple[int, int]


REDUCED = (
    Reduced("pvtv2_reduced", "zoo.pvtv2(4)", (4,), (12, 12), (5, 6)),
    Reduced("shunted_reduced", "zoo.shunted(4)", (4, 2), (12, 12), (5, 6)),
)


def draw_reduced(r: Reduced, path: Path) -> None:
    """One panel per head group: the map's cells, each reduced key's ``ratio x ratio`` patch
    framed and tinted (a query attends to every patch), the query in its colour."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    H, W = r.hw
    cell, gap, top, bottom = 0.25, 0.3, 0.85, 0.1
    pw, ph = W * cell, H * cell
    width = len(r.ratios) * (pw + gap) + gap
    fig = Figure(figsize=(width, ph + top + bottom), dpi=100)
    fw, fh = fig.get_size_inches()
    color = np.array(QUERY_COLORS[0])
    tints = (color * (1 - KEY_TINT) + KEY_TINT, color * (1 - 0.7) + 0.7)
    for i, ratio in enumerate(r.ratios):
        ax = fig.add_axes(((gap + i * (pw + gap)) / fw, bottom / fh, pw / fw, ph / fh))
        y, x = np.mgrid[:H, :W]
        checker = ((y // ratio + x // ratio) % 2)[..., None]
        img = np.where(checker == 0, tints[0], tints[1])
        img[r.query] = color
        ax.imshow(img, interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
        ax.vlines(np.arange(0.5, W - 1, 1.0), -0.5, H - 0.5, colors="white", lw=0.4)
        ax.hlines(np.arange(0.5, H - 1, 1.0), -0.5, W - 0.5, colors="white", lw=0.4)
        ax.vlines(np.arange(ratio - 0.5, W - 1, ratio), -0.5, H - 0.5, colors="black", lw=0.8)
        ax.hlines(np.arange(ratio - 0.5, H - 1, ratio), -0.5, W - 0.5, colors="black", lw=0.8)
        qy, qx = r.query
        ax.add_patch(Rectangle((qx - 0.5, qy - 0.5), 1, 1, fill=False, lw=1.2, ec="black"))
        ax.set_axis_off()
        n = -(-H // ratio) * -(-W // ratio)
        ax.set_title(
            f"group {i}: Downsample({ratio})\n{n} keys, one per {ratio}x{ratio} patch", fontsize=7
        )
    fig.suptitle(r.title, fontsize=8, y=1 - 0.1 / fh, va="top")
    fig.savefig(path, format="png", metadata={"Software": None})


# the Models page: each family's stage-1 attention, all head groups together, one query
MODEL_PATTERNS = (
    ("swin_*: zoo.swin(7, shift=3)", zoo.swin(7, shift=3), 1),
    ("cswin_*: zoo.cswin(1)", zoo.cswin(1), 2),
    (  # drawn with border="mask": the default "zeros" keeps zero keys, not a mask
        "dilateformer_tiny: zoo.dilateformer()",
        Attention(partition=Dilated(3, dilation=(1, 2, 3), border="mask"), heads=Split(3)),
        3,
    ),
    ("nat_tiny: zoo.nat(7)", zoo.nat(7), 1),
    ("dinat_tiny: zoo.dinat(7, dilation=2)", zoo.dinat(7, dilation=2), 1),
)


def draw_models(
    path: Path, hw: tuple[int, int] = (14, 14), query: tuple[int, int] = (5, 6)
) -> None:
    """One panel per model family: the keys any head group of the query attends to."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    H, W = hw
    cell, gap = 0.16, 0.35
    pw, ph = W * cell, H * cell
    fig = Figure(figsize=(len(MODEL_PATTERNS) * (pw + gap) + gap, ph + 0.95), dpi=100)
    fw, fh = fig.get_size_inches()
    for i, (title, spec, heads) in enumerate(MODEL_PATTERNS):
        mask = dense_mask(spec, H, W, heads).numpy().any(0)  # every head group together
        ax = fig.add_axes(((gap + i * (pw + gap)) / fw, 0.1 / fh, pw / fw, ph / fh))
        img = pattern_image(mask, hw, [query])
        ax.imshow(img, interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5))
        ax.vlines(np.arange(0.5, W - 1, 1.0), -0.5, H - 0.5, colors="white", lw=0.4)
        ax.hlines(np.arange(0.5, H - 1, 1.0), -0.5, W - 0.5, colors="white", lw=0.4)
        y, x = query
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=1.0, ec="black"))
        ax.set_axis_off()
        ax.set_title(title.replace(": ", ":\n"), fontsize=11)
    fig.savefig(path, format="png", metadata={"Software": None})


def _write(path: Path, draw) -> Path:
    """``draw(tmp)``, then keep the old file if its bytes did not change."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    draw(tmp)
    if path.exists() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()  # unchanged: keep the mtime, so `mkdocs serve` does not rebuild in a loop
    else:
        tmp.replace(path)
    return path


def generate(out: Path = OUT) -> list[Path]:
    """Draw every entry into ``out``; a file whose bytes did not change is left untouched."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for e in GALLERY + FIGURES:
        paths.append(
            _write(
                out / f"{e.name}.png",
                lambda tmp, e=e: draw_pattern(
                    e.spec, e.hw, e.queries, num_heads=e.num_heads, path=tmp
                ),
            )
        )
    for r in REDUCED:
        paths.append(_write(out / f"{r.name}.png", lambda tmp, r=r: draw_reduced(r, tmp)))
    paths.append(_write(out / "models_stage1.png", draw_models))
    return paths


def render_markdown() -> str:
    """The gallery sections: title, the spec's code, the picture, the caption."""
    parts = []
    for e in GALLERY:
        where = ", ".join(str(q) for q in e.queries)
        axes = {1: "(x,)", 2: "(y, x)", 3: "(t, y, x)"}[len(e.hw)]
        size = "x".join(map(str, e.hw))
        parts.append(
            f"## {e.title}\n\n```python\n{e.code}\n```\n\n"
            f"![{e.title}](gallery/{e.name}.png)\n\n"
            f"{e.caption} Map {size}, queries at {axes} = {where}.\n"
        )
    return "\n".join(parts)


# mkdocs hooks


def on_pre_build(config) -> None:
    generate(Path(config["docs_dir"]) / "gallery")


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, render_markdown()) if MARKER in markdown else markdown


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(p)
