"""Metric plots as PNG bytes, drawn with Pillow.

Choice: Pillow, not matplotlib. The report must work in the lean operator image (no
matplotlib, no torch); Pillow is a few MB and is imported only here, only when a report is
written. A plot is one metric over training steps, all iterations on one x axis (global
step), each iteration in its own colour with a legend, y-axis ticks, and a title.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 34, 40
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass(frozen=True)
class Series:
    label: str
    values: tuple[float, ...]


def compute_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1-2-5 steps)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    # Whole multiples of the step from the one at or below `low` to the one at or above `high`, so
    # the axis always covers the data (the first and last ticks are the plot's y range).
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) + 0.0 for k in range(first, last + 1)]  # + 0.0: no "-0" label


def render_line_plot(title: str, series: list[Series]) -> bytes:
    """A PNG line plot of `series` laid end to end along the x axis."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((MARGIN_LEFT, 8), title, fill="black", font=font)
    values = [v for s in series for v in s.values if math.isfinite(v)]
    x0, y0, x1, y1 = MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM
    draw.rectangle((x0, y0, x1, y1), outline=(80, 80, 80))
    if not values:
        draw.text((x0 + 10, (y0 + y1) // 2), "no data", fill="gray", font=font)
        return _png(image)
    ticks = compute_ticks(min(values), max(values))
    low, high = ticks[0], ticks[-1]
    total = sum(len(s.values) for s in series)

    def to_xy(index: int, value: float) -> tuple[float, float]:
        x = x0 + (x1 - x0) * (index / max(total - 1, 1))
        y = y1 - (y1 - y0) * ((value - low) / (high - low or 1.0))
        return x, y

    for tick in ticks:
        _, y = to_xy(0, tick)
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.text((4, y - 6), f"{tick:.4g}", fill="black", font=font)
    offset = 0
    for number, s in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        points = [to_xy(offset + i, v) for i, v in enumerate(s.values) if math.isfinite(v)]
        if len(points) == 1:
            px, py = points[0]
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        elif points:
            draw.line(points, fill=colour, width=2)
        legend_x = x0 + 8 + number * min(90, (x1 - x0 - 8) // max(len(series), 1))  # all within the plot
        draw.rectangle((legend_x, y1 + 20, legend_x + 10, y1 + 30), fill=colour)
        draw.text((legend_x + 14, y1 + 19), s.label, fill="black", font=font)
        offset += len(s.values)
    draw.text((x1 - 110, y1 + 4), f"training step ({total})", fill="gray", font=font)
    return _png(image)


def _png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()
