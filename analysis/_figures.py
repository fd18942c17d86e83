"""Figures and tables of the report: matplotlib drawn to inline SVG, pandas to HTML.

Figures are drawn at the page's width so that their text shows at its nominal size, under the
report's own style (an `rc_context`: nothing leaks into a user's matplotlib settings). Text stays
text (``svg.fonttype: none``): selectable, searchable, and a fraction of the size of glyph paths.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

# inches: within the page's 1100 px column (11.5 in at 96 px per inch), so that a figure shows at
# its own size, with room for labels that the tight bounding box adds at the edges
PAGE_WIDTH = 10.5
PANELS_PER_ROW = 3  # a panel 3.5 in wide: its labels at their size, five or six ticks a panel
_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "rashomon",  # element ids from content, not random: the same page every time
    "savefig.dpi": 150,  # of the parts drawn as images (dense scatters); text stays text
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # the metrics the layout was computed with
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.labelsize": 10,
}
_SVG = re.compile(r"<svg\b.*?</svg>", re.S)
_ID = re.compile(r'(\bid="|\bhref="#|\burl\(#)')


def table(frame: pd.DataFrame, kind: str | None = None) -> str:
    """An HTML table; ``kind`` a CSS class of the page (how its text columns align)."""
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="—", classes=kind
    )


@contextmanager
def figure(
    rows: int, columns: int, *, panel_height: float = 2.5, width: float = PAGE_WIDTH
) -> Iterator[tuple]:
    """``(figure, axes)`` drawn under the report's style (tick labels are made at drawing time:
    call `svg` inside the block)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        drawing = Figure(figsize=(width, panel_height * rows), layout="constrained")
        yield drawing, drawing.subplots(rows, columns)


@contextmanager
def panels(count: int, *, panel_height: float = 2.3) -> Iterator[tuple]:
    """``(figure, axes)``: ``count`` panels in rows of `PANELS_PER_ROW` at the page's width, one
    measure each (measures differ by orders of magnitude: each gets its own scale)."""
    rows = -(-count // PANELS_PER_ROW)
    with figure(rows, PANELS_PER_ROW, panel_height=panel_height) as (drawing, grid):
        axes = list(np.ravel(grid))
        for spare in axes[count:]:
            spare.set_axis_off()
        yield drawing, axes[:count]


def plain_numbers(axis) -> None:
    """Ticks of a log ``axis`` as plain numbers (1, 10, 0.001), not mathtext powers whose
    superscripts are too small to read; minor ticks unlabelled."""
    from matplotlib.ticker import NullFormatter, StrMethodFormatter

    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def svg(drawing) -> str:
    """The figure as an inline ``<svg>``, grown to hold every label (nothing clipped)."""
    buffer = io.StringIO()
    drawing.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.05)
    text = re.sub(r"<metadata>.*?</metadata>", "", buffer.getvalue(), flags=re.S)
    return f"<figure>{text[text.index('<svg') :]}</figure>"


def unique_ids(page: str) -> str:
    """``page`` with the element ids of its n-th SVG (and the references to them) prefixed
    ``fn-``: matplotlib names elements ``figure_1``, ``patch_1``… in every SVG it writes."""
    numbers = itertools.count(1)
    return _SVG.sub(lambda found: _ID.sub(rf"\g<1>f{next(numbers)}-", found.group()), page)
