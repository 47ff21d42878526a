"""Numbers as people read them: ``21.1 s``, ``2 min 5 s``, ``$0.0012``, ``1.2 M tokens``.

The report prints every number through these; ``run.json`` keeps the raw values.
"""

from __future__ import annotations

import math


def count(n: float | None) -> str:
    """A whole number with thousands separators: ``12,345``."""
    return "–" if n is None else f"{round(n):,}"


def number(x: float | None, digits: int = 3) -> str:
    """A measurement to ``digits`` significant digits, never in exponent form: ``0.123``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def percent(x: float | None) -> str:
    """A share in [0, 1] as ``12.5 %``."""
    return "–" if x is None else f"{100 * x:.1f} %"


def seconds(s: float | None) -> str:
    """A duration: ``0.42 s``, ``21.1 s``, ``2 min 5 s``, ``2 min``, ``1 h 3 min``."""
    if s is None:
        return "–"
    if s < 1:
        return f"{number(s, 2)} s"
    if round(s, 1) < 60:
        return f"{s:.1f} s"
    whole = round(s)
    if whole < 3600:
        return _two_units(whole // 60, "min", whole % 60, "s")
    return _two_units(whole // 3600, "h", whole % 3600 // 60, "min")


def _two_units(big: int, big_unit: str, small: int, small_unit: str) -> str:
    """``2 min 5 s``, or ``2 min`` when the smaller unit is zero."""
    head = f"{big:,} {big_unit}"
    return f"{head} {small} {small_unit}" if small else head


def money(usd: float | None) -> str:
    """Dollars: cents from one dollar up, two significant digits below (``$0.0012``)."""
    if usd is None:
        return "–"
    if usd == 0:
        return "$0.00"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    decimals = max(2, 1 - math.floor(math.log10(abs(usd))))
    return f"${usd:.{decimals}f}"


def tokens(n: float | None) -> str:
    """A token count: ``950 tokens``, ``123,456 tokens``, ``1.2 M tokens``, ``3.4 B tokens``."""
    if n is None:
        return "–"
    if abs(n) < 1_000_000:
        return f"{count(n)} tokens"
    if abs(n) < 1_000_000_000:
        return f"{n / 1e6:.1f} M tokens"
    return f"{n / 1e9:,.1f} B tokens"


def short(n: float) -> str:
    """A compact count for axis ticks: ``950``, ``12 k``, ``1.2 M``."""
    for scale, unit in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{number(n / scale, 2)}{unit}"
    return number(n, 3) if n != round(n) else count(n)
