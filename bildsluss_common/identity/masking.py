"""Identity numbers shown where they must not be read in full (logs, status, heartbeats).

One helper for both programs: a log line, a syslog message, a status page or
an ops view shows the birth date (enough to notice a wrong label) and never the
whole number.
"""
from __future__ import annotations

import re

# Any digits shaped like a personnummer/samordningsnummer in any written form
# (YYMMDD-NNNN, YYYYMMDDNNNN, with "+" or a space), in any script's digits.
# Deliberately broad: a false alarm masks a few digits of a device name, a miss
# leaks a patient's number.
_NUMBER_IN_TEXT = re.compile(r"(?<!\d)(?:\d{2})?\d{6}[-+ ]?\d{4}(?!\d)")
# Left whole: digests (SHA-256, 64 hex) and UUIDs (session ids), since about
# one SHA-256 in ten holds a run of 10 or 12 decimal digits and a log line whose
# blob or session cannot be found again is no use to anyone; and HSA-ids
# (``SE2321000016-15CQ``: a region's organisation number, not a person's). A
# number written inside one of these is not a number a person wrote.
_KEPT_WHOLE = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{32,}|[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"|SE\d{10}-[0-9A-Za-z]+)(?![0-9A-Za-z])"
)


def mask_patient(patient: str | None) -> str | None:
    """``191212121212`` -> ``19121212-****``: the birth date stays readable,
    enough to spot a wrong label; any 12-digit number is shown alike. Any other
    number (a reservnummer) keeps its first four characters."""
    if not patient:
        return None
    if len(patient) == 12 and patient.isascii() and patient.isdigit():
        return f"{patient[:8]}-****"
    keep = min(4, max(0, len(patient) - 4))
    return patient[:keep] + "*" * (len(patient) - keep)


def mask_numbers_in_text(text: str, *, keep_date: bool = False) -> str:
    """``text`` with everything shaped like an identity number replaced by ``*``
    (free text has no field that says it is a patient's number, so by default
    nothing of it is kept). SHA-256 digests, UUIDs and HSA-ids in the text stay
    as they are. ``keep_date``: as :func:`mask_patient`, the date part stays and
    the last four digits go (``19121212-1212`` -> ``19121212-****``), for a
    refusal's detail, where IT must tell the numbers a card showed apart."""
    out: list[str] = []
    start = 0
    for word in _KEPT_WHOLE.finditer(text):
        out.append(_mask(text[start:word.start()], keep_date))
        out.append(word.group(0))
        start = word.end()
    out.append(_mask(text[start:], keep_date))
    return "".join(out)


def _mask(text: str, keep_date: bool = False) -> str:
    if keep_date:
        return _NUMBER_IN_TEXT.sub(lambda m: m.group(0)[:-4] + "****", text)
    return _NUMBER_IN_TEXT.sub(lambda m: "*" * len(m.group(0)), text)


def contains_number(text: str) -> bool:
    """True when ``text`` holds something shaped like an identity number
    (outside SHA-256 digests, UUIDs and HSA-ids)."""
    return mask_numbers_in_text(text) != text
