"""Charts as inline SVG: no JavaScript and no external file, so a report opens offline.

Pure functions from numbers to SVG text. Every label is escaped. Empty data draws a
"no data yet" panel instead of failing.
"""

from __future__ import annotations

import math
from datetime import datetime
from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]
Series = dict[str, list[tuple[datetime, float]]]


def empty(title: str, width: int = 860, height: int = 120) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{escape(title)}: no data yet">'
            f'<rect width="100%" height="100%" fill="#fafafa" stroke="#ddd"/>'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888" '
            f'font-size="14">{escape(title)}: no data yet</text></svg>')


def _nice(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5 or 5 times a power of 10)."""
    if value <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def line_chart(title: str, series: Series, *, y_format: str = "{:,.2f}",
               y_max: float | None = None, width: int = 860, height: int = 300,
               x_format: str = "{:%m-%d %H:%M}") -> str:
    """One line per series over a time axis, with a legend (series in given order)."""
    points = [p for values in series.values() for p in values]
    if not points:
        return empty(title, width)
    left, right, top, bottom = 70, 190, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    t0 = min(p[0] for p in points).timestamp()
    t1 = max(p[0] for p in points).timestamp()
    y1 = y_max or _nice(max(p[1] for p in points) * 1.05) or 1.0
    span = (t1 - t0) or 1.0

    def x(moment: datetime) -> float:
        return left + (moment.timestamp() - t0) / span * plot_w

    def y(value: float) -> float:
        return top + plot_h - value / y1 * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>']
    for value in _ticks(0.0, y1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
                     f'font-size="11" fill="#555">{escape(y_format.format(value))}</text>')
    for stamp in _ticks(t0, t1, 4):
        moment = datetime.fromtimestamp(stamp, tz=points[0][0].tzinfo)
        parts.append(f'<text x="{x(moment):.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
                     f'font-size="11" fill="#555">{x_format.format(moment)}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#999"/>'
                 f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
                 f'y2="{top + plot_h}" stroke="#999"/>')
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        ordered = sorted(values)
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in ordered)
        parts.append(f'<polyline class="series" data-series="{escape(name)}" '
                     f'data-points="{len(ordered)}" fill="none" stroke="{color}" '
                     f'stroke-width="2" points="{path}"/>')
        legend_y = top + 14 + index * 18
        parts.append(f'<rect x="{left + plot_w + 14}" y="{legend_y - 9}" width="10" '
                     f'height="10" fill="{color}"/><text class="legend" '
                     f'x="{left + plot_w + 30}" y="{legend_y}" font-size="12">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: list[tuple[str, float]], *, value_format: str = "{:,.2f}",
              width: int = 860) -> str:
    """Horizontal bars, largest first as given."""
    if not bars:
        return empty(title, width)
    left, top, row = 200, 30, 26
    height = top + row * len(bars) + 10
    plot_w = width - left - 90
    peak = max((v for _, v in bars), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(title)}</text>']
    for index, (label, value) in enumerate(bars):
        y = top + index * row
        length = max(0.0, value) / peak * plot_w
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" font-size="12">'
                     f'{escape(label)}</text>'
                     f'<rect class="bar" data-label="{escape(label)}" x="{left}" y="{y + 4}" '
                     f'width="{length:.1f}" height="{row - 8}" '
                     f'fill="{PALETTE[index % len(PALETTE)]}"/>'
                     f'<text x="{left + length + 6:.1f}" y="{y + 16}" font-size="12">'
                     f'{escape(value_format.format(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)
