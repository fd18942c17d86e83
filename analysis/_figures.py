"""Figures and tables of the report: matplotlib (Agg) drawn to inline SVG, pandas to HTML."""

from __future__ import annotations

import io
import re

import pandas as pd


def table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)


def figure(rows: int, columns: int, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(
        rows,
        columns,
        figsize=(4.6 * columns if columns > 2 else 5.2 * columns, height),
        layout="constrained",
    )


def svg(figure) -> str:
    from matplotlib import pyplot

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    pyplot.close(figure)
    text = re.sub(r"<metadata>.*?</metadata>", "", buffer.getvalue(), flags=re.S)
    return f"<figure>{text[text.index('<svg') :]}</figure>"
