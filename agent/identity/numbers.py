"""Swedish identity numbers (R2).

Personnummer ``YYMMDD-NNNC`` / ``YYYYMMDDNNNC``; ``+`` instead of ``-`` when the
person is 100 or older (10-digit form only); ``C`` is a Luhn check over the
10-digit form. Samordningsnummer: the day plus 60. Canonical form: 12 digits.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

_PNR = re.compile(
    r"^(?P<century>\d{2})?(?P<yy>\d{2})(?P<mm>\d{2})(?P<dd>\d{2})(?P<sep>[-+]?)(?P<serial>\d{3})(?P<check>\d)$"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclasses.dataclass(frozen=True)
class IdentityNumber:
    canonical: str  # 12 digits
    kind: str  # "personnummer" | "samordningsnummer" | "reservnummer"
    birth_date: dt.date | None


def parse(text: str, today: dt.date | None = None) -> IdentityNumber | None:
    """Validate one candidate text; return the canonical number or None."""
    compact = re.sub(r"\s+", "", text)
    m = _PNR.match(compact)
    if not m:
        return None
    today = today or dt.date.today()
    yy, mm, dd = int(m["yy"]), int(m["mm"]), int(m["dd"])
    kind = "personnummer"
    if dd > 60:
        dd -= 60
        kind = "samordningsnummer"
    if m["century"]:
        if m["sep"] == "+":
            return None  # '+' belongs to the 10-digit form only
        year = int(m["century"]) * 100 + yy
    else:
        year = (today.year // 100) * 100 + yy
        if year > today.year:
            year -= 100
        if m["sep"] == "+":
            year -= 100
    try:
        birth = dt.date(year, mm, dd)
    except ValueError:
        return None
    if birth > today:
        return None
    ten = f"{yy:02d}{int(m['mm']):02d}{int(m['dd']):02d}{m['serial']}{m['check']}"
    if not luhn_ok(ten):
        return None
    canonical = f"{year:04d}{ten[2:]}"
    return IdentityNumber(canonical=canonical, kind=kind, birth_date=birth)
