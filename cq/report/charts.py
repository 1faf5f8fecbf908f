"""Inline SVG charts (no JavaScript, offline): ticks, scales, strip, line and training charts.

Every chart is a :class:`markupsafe.Markup` built with ``Markup.format``, which escapes each
value it inserts, so method and image names stay text. Charts are 640 units wide with 13-unit
text; the page keeps them at least 560 px wide (scrolling inside their box on a phone), so
their text never shrinks below about 11 px.
"""

from __future__ import annotations

import math

import numpy as np
from markupsafe import Markup, escape

from cq.report.fmt import finite

WIDTH = 640
# Tableau 10: distinct, colour-blind-friendlier hues for the methods, in method order.
METHOD_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
                  "#ff9da7", "#9c755f", "#bab0ac")


def method_colours(methods: list[str]) -> dict[str, str]:
    return {m: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, m in enumerate(methods)}


# --------------------------------------------------------------------------- ticks and scales

def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values within [lo, hi] (steps of 1, 2 or 5 x 10^n): the
    smallest such step that gives at most ``count`` + 1 ticks, or a finer one where that
    leaves fewer than three (a range of 0.99 to 1.1 gets 1.00, 1.02, ..., not 1 and 1.05)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    steps = [m * power for m in (0.5, 1, 2, 5, 10)]
    i = next(j for j, step in enumerate(steps) if step >= raw)

    def within(step):
        first = math.ceil(lo / step - 1e-9) * step
        return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]

    ticks = within(steps[i])
    return ticks if len(ticks) >= 3 or i == 0 else within(steps[i - 1])


def log_ticks(lo: float, hi: float, max_ticks: int = 8, fits=None) -> list[float]:
    """Ticks for a log axis over [lo, hi] (lo > 0): round linear steps within less than a
    factor of 3; otherwise 1-2-5, 1-3 or 1 per decade, the densest that gives at most
    ``max_ticks`` and whose labels ``fits`` (a test of a tick list) accepts (and at least
    three; else the linear steps)."""
    if not (0 < lo < hi and math.isfinite(hi)):
        return []
    linear = [t for t in nice_ticks(lo, hi) if t > 0]
    if hi / lo < 3:
        return linear
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1, 3), (1,)):  # the densest that keeps labels apart
        out = [m * 10.0 ** e for e in decades for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(out) <= max_ticks and (fits is None or fits(out) or mantissas == (1,)):
            return out if len(out) >= 3 else linear
    step = math.ceil(len(out) / max_ticks)  # many decades: every step-th power of ten
    return out[::step]


def tick_labels(ticks: list[float], fmt) -> list[str]:
    """``fmt`` of each tick, unless that repeats a label (37, 37, 37 for 36.6, 36.8, 37.0):
    then plain numbers with as many decimals as the ticks' spacing needs."""
    labels = [fmt(t) for t in ticks]
    if len(set(labels)) == len(labels) or len(ticks) < 2:
        return labels
    step = min(b - a for a, b in zip(ticks, ticks[1:]) if b > a) if len(set(ticks)) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    while len({f"{t:,.{digits}f}" for t in ticks}) < len(set(ticks)) and digits < 12:
        digits += 1
    return [f"{t:,.{digits}f}" for t in ticks]


TICK_CHAR_PX = 8.0  # width of a tick label's character (13 px sans serif, digits), for spacing


def labels_apart(positions, labels, gap: float = 8.0) -> bool:
    """Whether labels centred at these x positions leave ``gap`` px between neighbours."""
    placed = sorted(zip(positions, labels))
    return all(x2 - x1 >= (len(a) + len(b)) * TICK_CHAR_PX / 2 + gap for (x1, a), (x2, b) in zip(placed, placed[1:]))


def with_tick(ticks: list[float], value: float | None, axis, min_px: float = 36) -> list[float]:
    """``ticks`` plus ``value`` (e.g. the reference 1 of a ratio axis) when it is on the axis,
    less the ticks too close to it for their labels to stay apart."""
    if value is None or not axis.lo <= value <= axis.hi:
        return ticks
    return sorted([t for t in ticks if abs(axis(t) - axis(value)) >= min_px] + [value])


def outlier_cap(values) -> float | None:
    """Where a linear axis should stop so that outliers do not squash the rest: the upper
    Tukey fence ``Q3 + 3 IQR`` when some value lies beyond it, else None (nothing to clip)."""
    v = np.asarray([x for x in values if finite(x)], dtype=float)
    if len(v) < 4:
        return None
    q1, q3 = np.percentile(v, [25, 75])
    fence = q3 + 3 * max(q3 - q1, 1e-12 * max(1.0, abs(q3)))
    return float(fence) if v.max() > fence else None


class Axis:
    """Maps values to pixels on a linear or log scale over the data's range, padded 4%.

    ``cap`` (linear only) ends the axis there: larger values map to the end (the chart marks
    them as clipped). Non-positive values have no place on a log axis and are dropped.
    """

    def __init__(self, values, x0: float, x1: float, log: bool = False, include=(), cap: float | None = None):
        v = np.asarray([*values, *include], dtype=float)
        v = v[np.isfinite(v) & ((v > 0) if log else True)]
        if cap is not None and not log:
            v = v[v <= cap]
            v = np.append(v, cap)
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (1.0, 2.0)
        if hi <= lo:
            lo, hi = (lo / 1.1, hi * 1.1) if log and lo > 0 else (lo - 1.0, hi + 1.0)
        if log:
            pad = (math.log(hi) - math.log(lo)) * 0.04
            lo, hi = math.exp(math.log(lo) - pad), math.exp(math.log(hi) + pad)
        else:
            pad = (hi - lo) * 0.04
            lo, hi = lo - pad, (hi if cap is not None else hi + pad)
        self.lo, self.hi, self.x0, self.x1, self.log, self.cap = lo, hi, x0, x1, log, cap

    def __call__(self, value: float) -> float:
        value = min(value, self.hi) if self.cap is not None else value
        f = math.log if self.log else float
        return self.x0 + (f(value) - f(self.lo)) / (f(self.hi) - f(self.lo)) * (self.x1 - self.x0)

    def clipped(self, value: float) -> bool:
        return self.cap is not None and value > self.hi

    def ticks(self, fmt=None) -> list[float]:
        """Tick values; on a log axis given the labels' ``fmt``, the densest set whose labels
        stay apart (100 ms and 200 ms touch where 1-2-5 per decade is too close)."""
        if not self.log:
            return nice_ticks(self.lo, self.hi)
        fits = None if fmt is None else lambda ts: labels_apart([self(t) for t in ts], tick_labels(ts, fmt))
        return log_ticks(self.lo, self.hi, fits=fits)


# --------------------------------------------------------------------------- charts

def _svg(width: int, height: int, label: str, body: list) -> Markup:
    head = Markup('<svg class="chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}">'
                  ).format(width, height, width, height, label)
    return head + Markup("").join(body) + Markup("</svg>")


def strip_chart(series: list[tuple], *, label: str, fmt, log: bool = False,
                reference: float | None = None, colours: dict[str, str] | None = None,
                clip: bool = False) -> Markup:
    """One row per method: a dot per image (jittered) and a bar at the summary value.

    ``series`` holds (method, values, marker) or (method, values, marker, tips), tips being
    one (title, href) per value: the dot names its image on hover and links to its row.
    ``reference`` draws a dashed line (e.g. 1.0 for a ratio to kmeans) and gets a tick.
    ``clip`` (linear axes): outliers beyond :func:`outlier_cap` sit at the axis's end as
    triangles, with their count.
    """
    left, right, row_h, top = 120, 80, 32, 10
    height = top + row_h * len(series) + 40
    values = [v for _, vs, *_ in series for v in vs]
    cap = outlier_cap(values) if clip and not log else None
    axis = Axis(values, left, WIDTH - right, log, include=[reference] if reference else [], cap=cap)
    bottom = top + row_h * len(series)
    parts = []
    ticks = with_tick(axis.ticks(fmt), reference, axis)
    for tick, text in zip(ticks, tick_labels(ticks, fmt)):
        x = axis(tick)
        parts.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" class="grid"/>'
                            '<text x="{0:.1f}" y="{3}" class="tick">{4}</text>').format(x, top, bottom, bottom + 16, text))
    if reference:
        parts.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" class="ref"/>'
                            ).format(axis(reference), top, bottom))
    if cap is not None:
        parts.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" class="clip"/>'
                            ).format(axis.x1, top, bottom))
    for i, (method, vals, marker, *more) in enumerate(series):
        tips = more[0] if more else [None] * len(vals)
        y = top + row_h * i + row_h / 2
        colour = (colours or {}).get(method, METHOD_COLOURS[0])
        parts.append(Markup('<text x="{}" y="{:.1f}" class="name">{}</text>').format(left - 8, y + 4, method))
        shown = [(v, tip) for v, tip in zip(vals, tips) if finite(v) and (v > 0 or not log)]
        inside = [(v, tip) for v, tip in shown if not axis.clipped(v)]
        opacity = min(0.75, max(0.2, 6 / math.sqrt(max(1, len(shown)))))  # many dots: lighter
        parts.append(Markup('<g fill="{}" fill-opacity="{:.2f}">').format(colour, opacity))
        parts.extend(_dot(axis(v), y + ((j * 0.618034) % 1 - 0.5) * 16, tip, fmt(v)) for j, (v, tip) in enumerate(inside))
        parts.append(Markup("</g>"))
        if len(inside) < len(shown):
            n = len(shown) - len(inside)
            parts.append(Markup('<path d="M{0:.1f},{1:.1f}l8,5l-8,5z" fill="{2}" class="outlier">'
                                '<title>{3} value(s) beyond {4}, up to {5}: {6}</title></path>').format(
                axis.x1 + 2, y - 5, colour, n, fmt(axis.hi), fmt(max(v for v, _ in shown)),
                "; ".join(f"{tip[0]} {fmt(v)}" for v, tip in shown if axis.clipped(v) and tip)))
        if finite(marker) and (marker > 0 or not log):
            x = axis(marker)
            parts.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1:.1f}" y2="{2:.1f}" class="marker">'
                                '<title>{3}: {4}</title></line><text x="{5}" y="{6:.1f}" class="value">{4}</text>'
                                ).format(x, y - 12, y + 12, method, fmt(marker), WIDTH - right + 14, y + 4))
    note = f"{label}; ▸: clipped at {fmt(axis.hi)}" if cap is not None else label
    parts.append(Markup('<text x="{:.0f}" y="{}" class="axis-label">{}</text>').format(
        (left + WIDTH - right) / 2, height - 6, note))
    return _svg(WIDTH, height, note, parts)


def _dot(x: float, y: float, tip: tuple[str, str] | None, value: str) -> Markup:
    """A chart's dot; with a tip, it names its image on hover and links to its row. Written
    with f-strings over escaped text: Markup.format took 70 us a call, and a page of 1,000
    results draws 8,000 dots."""
    if tip is None:
        return Markup(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"/>')
    title, href = tip
    dot = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>{escape(title)}: {escape(value)}</title></circle>'
    return Markup(f'<a href="{escape(href)}">{dot}</a>' if href else dot)


def _frame(x0, x1, y0, y1, xs: Axis, ys: Axis, fmt_x, fmt_y, x_ticks=None) -> list:
    """Grid lines and tick labels of a two-axis chart (x along the bottom, y on the left)."""
    parts = []
    y_ticks = ys.ticks()
    for t, text in zip(y_ticks, tick_labels(y_ticks, fmt_y)):
        y = ys(t)
        parts.append(Markup('<line x1="{0}" x2="{1}" y1="{2:.1f}" y2="{2:.1f}" class="grid"/>'
                            '<text x="{3}" y="{4:.1f}" class="name">{5}</text>').format(x0, x1, y, x0 - 6, y + 4, text))
    x_ticks = list(x_ticks if x_ticks is not None else xs.ticks())
    for t, text in zip(x_ticks, tick_labels(x_ticks, fmt_x)):
        x = xs(t)
        parts.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" class="grid"/>'
                            '<text x="{0:.1f}" y="{3}" class="tick">{4}</text>').format(x, y0, y1, y1 + 16, text))
    return parts


def line_chart(series: dict[str, list[float]], x_labels: list[str], *, label: str, fmt,
               colours: dict[str, str] | None = None, links: list[str] | None = None, x_name: str = "") -> Markup:
    """One polyline per series over shared x positions (the history chart), with a legend.
    Each point names its series, ``x_name`` and x label, and value on hover; ``links`` (one
    per x) make it link there (the history table's row)."""
    left, right, top, bottom, height = 80, 130, 10, 44, 230
    n = max(1, len(x_labels))
    values = [v for vs in series.values() for v in vs if finite(v)]
    ys = Axis([0.0, *values], height - bottom, top)
    xs = Axis([0, n - 1], left, WIDTH - right)
    step = max(1, math.ceil(n / 10))
    parts = _frame(left, WIDTH - right, top, height - bottom, xs, ys, lambda i: x_labels[int(i)], fmt,
                   x_ticks=range(0, n, step))
    for j, (name, vals) in enumerate(series.items()):
        colour = (colours or {}).get(name, METHOD_COLOURS[j % len(METHOD_COLOURS)])
        pts = [(i, xs(i), ys(v), v) for i, v in enumerate(vals) if finite(v)]
        if pts:
            line = " ".join(f"{a:.1f},{b:.1f}" for _, a, b, _ in pts)
            parts.append(Markup('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>').format(colour, line))
            parts.extend(_point(a, b, colour, f"{name}, {x_name} {x_labels[i]}: {fmt(v)}".replace(",  ", ", "), links[i] if links else None)
                         for i, a, b, v in pts)
        parts.append(Markup('<rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
                            '<text x="{}" y="{}" class="legend">{}</text>').format(
            WIDTH - right + 12, top + 18 * j, colour, WIDTH - right + 28, top + 18 * j + 10, name))
    parts.append(Markup('<text x="{:.0f}" y="{}" class="axis-label">{}</text>').format(
        (left + WIDTH - right) / 2, height - 6, label))
    return _svg(WIDTH, height, label, parts)


def _point(x: float, y: float, colour: str, title: str, href: str | None) -> Markup:
    dot = Markup('<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}"><title>{}</title></circle>').format(x, y, colour, title)
    return Markup('<a href="{}">{}</a>').format(href, dot) if href else dot


def curve_chart(curve: list[float], best_epoch: int, *, fmt, width: int = 420, height: int = 190) -> Markup:
    """A training curve with axes: score (y) per epoch (x, 0 = before training), init and best marked."""
    left, right, top, bottom = 64, 14, 12, 40
    xs = Axis([0, len(curve) - 1], left, width - right)
    ys = Axis(curve, height - bottom, top)
    parts = _frame(left, width - right, top, height - bottom, xs, ys, lambda t: f"{t:g}", fmt)
    step = max(1, len(curve) // 100)  # at most ~100 points: light even for long trainings
    line = " ".join(f"{xs(i):.1f},{ys(v):.1f}" for i, v in list(enumerate(curve))[::step] + [(len(curve) - 1, curve[-1])])
    parts.append(Markup('<polyline class="curve" points="{}"/>').format(line))
    for i, cls in ((0, "init"), (best_epoch, "best")):
        parts.append(Markup('<circle cx="{:.1f}" cy="{:.1f}" r="4" class="{}"><title>{} {} at epoch {}</title></circle>'
                            ).format(xs(i), ys(curve[i]), cls, cls, fmt(curve[i]), i))
    parts.append(Markup('<text x="{:.0f}" y="{}" class="axis-label">epoch (0: before training) · score</text>'
                        ).format((left + width - right) / 2, height - 6))
    return _svg(width, height, "training curve: score per epoch", parts)


def parts_bar(parts: list[tuple[str, float]], *, fmt, width: int = 150, height: int = 10) -> Markup:
    """A stacked bar of the score's parts (their shares of the score), named in its label."""
    values = [(i, name, v) for i, (name, v) in enumerate(parts) if finite(v) and v > 0]
    total = sum(v for _, _, v in values)
    if not values:
        return Markup("")
    out, x = [], 0.0
    for i, name, v in values:  # the class (p0, p1, p2) colours a part the same on every bar
        w = v / total * width  # numbers only: an f-string (one bar per result, see _dot)
        out.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" class="p{i}"/>')
        x += w
    label = "score parts: " + ", ".join(f"{n} {fmt(v)}" for _, n, v in values)
    return (Markup('<svg class="parts" viewBox="0 0 {0} {1}" width="{0}" height="{1}" preserveAspectRatio="none" '
                   'role="img" aria-label="{2}">'
                   ).format(width, height, label) + Markup("".join(out)) + Markup("</svg>"))
