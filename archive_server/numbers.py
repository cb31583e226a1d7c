"""Decimals as Swedish staff read them: a decimal comma, a space between
thousands, a real minus sign ("−1 234,5"), the way Swedish CLDR formats them
(and the browser's ``Intl.NumberFormat("sv-SE")``, which app.js and ops.js use
for what they draw themselves).

One rule for every decimal a person reads: annotation lengths, sizes and
durations on the pages (the ``decimal`` filter of ``web.templating``) and in
the printed PDF (``printing``). The JSON API and the metrics keep machine
numbers. Hand-written rather than Babel: the rule is these few lines for one
locale, and Babel would bring every locale's CLDR data for it.
"""
from __future__ import annotations

import math

DECIMAL_COMMA = ","
THOUSANDS = "\u00a0"  # no-break space: "1 234,5" never breaks across lines
MINUS = "\u2212"


def decimal(value: float | int, places: int = 2) -> str:
    """``value`` rounded to at most ``places`` decimals, trailing zeros dropped:
    3.5 → "3,5", 1234.25 → "1 234,25", 2.0 → "2", -0.04 (1 place) → "0"."""
    number = float(value)
    if not math.isfinite(number):
        return "–"
    text = f"{abs(number):,.{max(places, 0)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    negative = number < 0 and text.strip("0,.") != ""
    text = text.replace(",", THOUSANDS).replace(".", DECIMAL_COMMA)
    return MINUS + text if negative else text
