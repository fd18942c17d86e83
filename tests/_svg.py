"""Reading the report's inline SVGs as a browser would lay out their text, for tests.

Each ``<text>`` is measured with the font's own metrics (DejaVu Sans, the font the figures were
laid out in) at its position, anchor and rotation, so a test can tell whether it stays inside its
figure, overlaps another, and how large it shows at the page's width.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

PAGE_PX = 1100  # the report's column: an SVG wider than this is scaled down to it
_NS = "{http://www.w3.org/2000/svg}"
_MEASURE = TextToPath()


@dataclass
class Text:
    content: str
    css_px: float  # font size as shown at the page's width
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the figure's units


def figures(page: str) -> list[ElementTree.Element]:
    return [ElementTree.fromstring(found) for found in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def size(svg: ElementTree.Element) -> tuple[float, float]:
    _, _, width, height = map(float, svg.get("viewBox").split())
    return width, height


def texts(element: ElementTree.Element, svg: ElementTree.Element | None = None) -> list[Text]:
    """Every ``<text>`` under ``element`` (of the figure ``svg``, default ``element`` itself)."""
    width = size(svg if svg is not None else element)[0]
    scale = min(96 / 72, PAGE_PX / width)  # user units are points
    found = []
    for node in element.iter(f"{_NS}text"):
        style = {
            key.strip(): value.strip()
            for key, value in (part.split(":", 1) for part in node.get("style", "").split(";"))
        }
        font = float(style["font-size"].removesuffix("px"))
        anchor = style.get("text-anchor", "start")
        content = node.text or ""
        text_width, height, descent = _MEASURE.get_text_width_height_descent(
            content, FontProperties(family="DejaVu Sans", size=font), ismath=False
        )
        start = {"start": 0.0, "middle": -text_width / 2, "end": -text_width}[anchor]
        x, y = float(node.get("x")), float(node.get("y"))
        angle = re.search(r"rotate\((-?[\d.]+)", node.get("transform", "rotate(0"))
        turn = math.radians(float(angle.group(1)))
        corners = [
            (
                x + dx * math.cos(turn) - dy * math.sin(turn),
                y + dx * math.sin(turn) + dy * math.cos(turn),
            )
            for dx in (start, start + text_width)
            for dy in (descent - height, descent)
        ]
        xs, ys = zip(*corners, strict=True)
        found.append(Text(content, font * scale, (min(xs), min(ys), max(xs), max(ys))))
    return found


def overlap(a: Text, b: Text, slack: float = 0.5) -> bool:
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
    return min(ax1, bx1) - max(ax0, bx0) > slack and min(ay1, by1) - max(ay0, by0) > slack
