"""How numbers read on the page: a dash for a missing value, thousands separated."""

from __future__ import annotations

import math


def finite(value) -> bool:
    try:
        return value is not None and math.isfinite(value)
    except TypeError:
        return False


def fmt_num(value, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if finite(value) else "–"


def fmt_pct(value) -> str:
    """A fraction as a percentage, with more digits near 0 so small gaps stay readable."""
    if not finite(value):
        return "–"
    pct = 100 * value
    return f"{pct:,.0f}%" if abs(pct) >= 100 else f"{pct:.2g}%" if abs(pct) < 1 and pct else f"{pct:.1f}%"


def fmt_time(seconds) -> str:
    if not finite(seconds):
        return "–"
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fmt_ratio(value) -> str:
    return f"×{value:.3f}" if finite(value) else "–"
