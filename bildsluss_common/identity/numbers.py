"""Swedish patient identity numbers (R1, R2): validation and finding them in text.

Rules, their sources, and where we differ on purpose from the ``personnummer``
package are in ``docs/identity-numbers.md``; every rule has a test in
``tests/test_identity_numbers.py``. In short:

* *Personnummer* ``YYMMDD-NNNC``, ``YYMMDD+NNNC`` (the calendar year the person
  turns 100 and later), ``YYMMDDNNNC``, ``YYYYMMDDNNNC``, ``YYYYMMDD-NNNC``. ``C``
  is a Luhn check over the 10-digit form; ``NNN`` is 001-999; the date is a real
  calendar date, not in the future and at most :data:`MAX_AGE_YEARS` ago.
* *Samordningsnummer*: the same with 60 added to the day (61-91).
* *Reservnummer*: region formats, configured (:mod:`bildsluss_common.identity.reserve`);
  none is enabled unless the caller passes it.
* Canonical form: 12 digits for a personnummer or samordningsnummer; upper-case
  letters and digits without separators for a reservnummer.

A text is classified as exactly one kind or refused: a reserve format never
accepts a text that is a valid personnummer or that looks like a mistyped one,
and a valid personnummer that an enabled reserve format could also match is
refused as ambiguous.

Two entry points:

* :func:`parse` / :func:`validate` take ONE candidate (a whole barcode payload, a
  field of a DICOM header, a user's ``--expect``); surrounding ASCII whitespace is
  ignored, anything else around the number makes it invalid.
* :func:`find_candidates` scans free text (OCR output, label payloads such as
  ``PNR:19121212-1212`` or ``^19121212-1212^NAME``) and returns every substring
  that looks like an identity number, valid or not, so that the decider can
  refuse a card with INVALID_ID instead of ignoring a misread number.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # reserve.py imports this module; no import cycle at run time
    from bildsluss_common.identity.reserve import ReserveFormat

PERSONNUMMER = "personnummer"
SAMORDNINGSNUMMER = "samordningsnummer"
RESERVNUMMER = "reservnummer"

# HL7/Inera OIDs of the identity domains (Inera "Identifierare", Skatteverket).
OID_PERSONNUMMER = "1.2.752.129.2.1.3.1"
OID_SAMORDNINGSNUMMER = "1.2.752.129.2.1.3.3"

# A birth date more than this many years before `today` is refused. Nobody that
# old is alive (the oldest verified human reached 122), and it catches a misread
# century ("18" for "19"), which the Luhn check cannot: it covers 10 digits only.
MAX_AGE_YEARS = 130

# Centuries Skatteverket uses in the 12-digit form (SKV, rättslig vägledning).
CENTURIES = ("18", "19", "20")

# Dashes a label font or OCR may produce for the hyphen. They can only mean "-",
# never "+", so reading them as "-" cannot move a person by a century.
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2212"
_DASH_CLASS = "\\-" + DASHES
_SP = " {1,2}"  # spaces a label printer or OCR puts between groups: one or two

# One personnummer/samordningsnummer, ASCII digits only. Spaces are allowed only
# between century and date (then the century must be 18, 19 or 20), around the
# separator, or as the separator; nowhere inside the date or the serial.
_GRAMMAR = (
    rf"(?:(?P<century>[0-9]{{2}})|(?P<spaced_century>18|19|20){_SP})?"
    r"(?P<yy>[0-9]{2})(?P<mm>[0-9]{2})(?P<dd>[0-9]{2})"
    rf"(?P<sep>(?:{_SP})?[+{_DASH_CLASS}](?:{_SP})?|{_SP}|)"
    r"(?P<serial>[0-9]{3})(?P<check>[0-9])"
)
_PNR = re.compile(_GRAMMAR, re.ASCII)
# In free text: not glued to letters or digits, and not one group of a longer
# dash/plus-joined digit sequence (e.g. "2024-121212-1212").
_JOINERS = "-+" + DASHES
_PNR_IN_TEXT = re.compile(
    rf"(?<![0-9A-Za-z])(?<![0-9][{_JOINERS}])" + _GRAMMAR + rf"(?![0-9A-Za-z])(?![{_JOINERS}][0-9])", re.ASCII
)
_WHITESPACE = " \t\r\n"


class Problem(str, enum.Enum):
    """Why a text that looks like an identity number is not a valid one."""

    MALFORMED = "malformed"  # not the shape of any identity number
    BAD_SEPARATOR = "bad_separator"  # "+" in a 12-digit form
    BAD_DATE = "bad_date"  # no such calendar date (month 13, day 00, 19000229 ...)
    FUTURE_DATE = "future_date"  # birth date (or a reserve number's year) after today
    TOO_OLD = "too_old"  # birth date more than MAX_AGE_YEARS ago
    BAD_SERIAL = "bad_serial"  # födelsenummer 000
    BAD_CHECK_DIGIT = "bad_check_digit"
    AMBIGUOUS = "ambiguous"  # fits more than one kind or reading: refused

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class IdentityNumber:
    """A validated identity number.

    ``canonical`` is what the archive stores: 12 digits for a personnummer or
    samordningsnummer, upper-case letters and digits for a reservnummer. The
    canonical strings of different kinds never coincide (a personnummer's start
    with 18, 19 or 20 and reserve formats may not accept those), and ``kind`` with
    ``format_name`` tag the kind explicitly.
    """

    canonical: str
    kind: str  # PERSONNUMMER | SAMORDNINGSNUMMER | RESERVNUMMER
    birth_date: dt.date | None  # None when the number does not carry one
    format_name: str = ""  # the reserve format's name ("sll", "vgr", ...); "" otherwise
    oid: str = ""  # HL7 OID of the identity domain, when known
    # True for a 10-digit personnummer/samordningsnummer: its century was
    # deduced from the separator and `today`, not read.
    century_inferred: bool = False

    @property
    def tagged(self) -> str:
        """``personnummer:191212121212`` or ``reservnummer/sll:991981000010``."""
        kind = f"{self.kind}/{self.format_name}" if self.format_name else self.kind
        return f"{kind}:{self.canonical}"


@dataclasses.dataclass(frozen=True)
class Validation:
    """The outcome of validating one candidate: a number, or the problem."""

    number: IdentityNumber | None
    problem: Problem | None = None
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.number is not None


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A substring of a text that looks like an identity number.

    ``text[start:end] == raw``. ``number`` is set when it validates; otherwise
    ``problem`` says why not (the decider refuses with INVALID_ID).
    """

    start: int
    end: int
    raw: str
    number: IdentityNumber | None
    problem: Problem | None = None
    detail: str = ""

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)

    @property
    def valid(self) -> bool:
        return self.number is not None


# -- Luhn ------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """True when the last digit is the Luhn (mod 10) check of the ones before."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if not 0 <= d <= 9:
            raise ValueError(f"not an ASCII digit string: {digits!r}")
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` pass :func:`luhn_ok`."""
    for c in "0123456789":
        if luhn_ok(payload + c):
            return c
    raise AssertionError("unreachable")


# -- dates -----------------------------------------------------------------------


def _today(today: dt.date | None) -> dt.date:
    return today if today is not None else dt.date.today()


def years_before(day: dt.date, years: int) -> dt.date:
    """The same calendar day ``years`` earlier (28 February for a 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def check_birth_date(year: int, month: int, day: int, today: dt.date) -> tuple[dt.date | None, Validation | None]:
    """A real calendar date, not after ``today``, at most MAX_AGE_YEARS before it."""
    try:
        born = dt.date(year, month, day)
    except ValueError:
        return None, Validation(None, Problem.BAD_DATE, f"{year:04d}-{month:02d}-{day:02d} is not a calendar date")
    if born > today:
        return None, Validation(None, Problem.FUTURE_DATE, f"birth date {born} is after {today}")
    if born < years_before(today, MAX_AGE_YEARS):
        return None, Validation(None, Problem.TOO_OLD, f"birth date {born} is more than {MAX_AGE_YEARS} years ago")
    return born, None


# -- personnummer / samordningsnummer ---------------------------------------------


def _sep_char(sep_group: str) -> str:
    """The separator proper: "-", "+" or "" (none, or spaces only)."""
    core = sep_group.strip(" ")
    if not core:
        return ""
    return "+" if core == "+" else "-"


def _validate_match(m: re.Match[str], today: dt.date) -> Validation:
    century = m["century"] or m["spaced_century"]
    yy, mm, dd = int(m["yy"]), int(m["mm"]), int(m["dd"])
    sep = _sep_char(m["sep"])
    kind = PERSONNUMMER
    day = dd
    if dd > 60:
        day -= 60
        kind = SAMORDNINGSNUMMER
    if century:
        if sep == "+":
            return Validation(None, Problem.BAD_SEPARATOR, "'+' belongs to the 10-digit form only")
        year = int(century) * 100 + yy
    else:
        # Skatteverket: "+" from the calendar year the person turns 100. So "-"
        # (or none) means born in the last 99 calendar years, "+" 100-199 years ago.
        base = today.year - 100 if sep == "+" else today.year
        year = base - (base - yy) % 100
    if not 1 <= mm <= 12 or not 1 <= day <= 31:
        return Validation(None, Problem.BAD_DATE, f"month {m['mm']} / day {m['dd']} is not a date")
    born, bad = check_birth_date(year, mm, day, today)
    if bad is not None:
        return bad
    if m["serial"] == "000":
        return Validation(None, Problem.BAD_SERIAL, "födelsenummer 000 is never issued")
    ten = f"{m['yy']}{m['mm']}{m['dd']}{m['serial']}{m['check']}"
    if not luhn_ok(ten):
        return Validation(None, Problem.BAD_CHECK_DIGIT, f"check digit {m['check']} does not match")
    number = IdentityNumber(
        canonical=f"{year:04d}{ten[2:]}",
        kind=kind,
        birth_date=born,
        oid=OID_PERSONNUMMER if kind == PERSONNUMMER else OID_SAMORDNINGSNUMMER,
        century_inferred=not century,
    )
    return Validation(number)


def _plausible_fields(m: re.Match[str]) -> bool:
    """Date fields a personnummer could have, ignoring month lengths and century."""
    century = m["century"] or m["spaced_century"]
    mm, dd = int(m["mm"]), int(m["dd"])
    return (century is None or century in CENTURIES) and 1 <= mm <= 12 and (1 <= dd <= 31 or 61 <= dd <= 91)


def looks_like_personnummer(text: str) -> bool:
    """True when ``text`` has the shape and plausible date fields of a personnummer
    or samordningsnummer, valid or not (a mistyped one). Reserve formats are never
    allowed to claim such a text."""
    m = _PNR.fullmatch(text.strip(_WHITESPACE))
    return m is not None and _plausible_fields(m)


# -- one candidate ----------------------------------------------------------------


def validate(
    text: str,
    today: dt.date | None = None,
    reserve_formats: Sequence[ReserveFormat] = (),
) -> Validation:
    """Validate ONE candidate text; say what is wrong when it is not valid.

    ``today`` (default: the local date) decides the century of 10-digit forms and
    what is "in the future". ``reserve_formats`` are the enabled reserve formats
    (:func:`bildsluss_common.identity.reserve.from_config`); none by default.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    today = _today(today)
    s = text.strip(_WHITESPACE)
    m = _PNR.fullmatch(s)
    pnr = _validate_match(m, today) if m else None
    reserve: list[tuple[ReserveFormat, Validation]] = []
    for fmt in reserve_formats:
        result = fmt.validate(s, today)
        if result is not None:  # None: not this format's shape at all
            reserve.append((fmt, result))

    if pnr is not None and pnr.number is not None:
        if reserve:
            names = ", ".join(f.name for f, _ in reserve)
            return Validation(None, Problem.AMBIGUOUS, f"a valid {pnr.number.kind} that reserve format(s) {names} also match")
        return pnr
    valid_reserve = [(f, v) for f, v in reserve if v.valid]
    if len(valid_reserve) > 1:
        names = ", ".join(f.name for f, _ in valid_reserve)
        return Validation(None, Problem.AMBIGUOUS, f"valid in more than one reserve format: {names}")
    if valid_reserve:
        fmt, result = valid_reserve[0]
        if m is not None and _plausible_fields(m):
            return Validation(None, Problem.AMBIGUOUS, f"looks like a mistyped personnummer; not read as reserve format {fmt.name}")
        return result
    if reserve and (m is None or not _plausible_fields(m)):
        return reserve[0][1]  # e.g. an SLL "99..." number with a wrong check digit
    if pnr is not None:
        return pnr
    return Validation(None, Problem.MALFORMED, "not the shape of an identity number")


def parse(
    text: str,
    today: dt.date | None = None,
    reserve_formats: Sequence[ReserveFormat] = (),
) -> IdentityNumber | None:
    """Validate one candidate text; return the number, or None when not valid."""
    return validate(text, today, reserve_formats).number


# -- free text --------------------------------------------------------------------


def find_candidates(
    text: str,
    today: dt.date | None = None,
    reserve_formats: Sequence[ReserveFormat] = (),
) -> list[Candidate]:
    """Every substring of ``text`` that looks like an identity number, in order.

    Looks like: a personnummer shape (10 or 12 ASCII digits with the separators
    and spaces :func:`validate` accepts) not glued to letters, digits or another
    dash-joined digit group; shapes without a ``-``/``+`` separator must also have
    plausible date fields (century 18/19/20, month 01-12, day 01-31 or 61-91), so
    that an arbitrary 10- or 12-digit code is not reported; or a match of an
    enabled reserve format's pattern. Invalid ones are returned too, with the
    problem. Overlapping matches are validated together: a span is one kind or
    refused as ambiguous.

    ``19 121212-1212`` can be "century 19" or a stray "19" before a 10-digit
    number; when the two readings give different numbers the candidate is
    refused as ambiguous.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    today = _today(today)
    spans: list[tuple[int, int]] = []
    for m in _PNR_IN_TEXT.finditer(text):
        if _sep_char(m["sep"]) or _plausible_fields(m):
            spans.append(m.span())
    for fmt in reserve_formats:
        spans.extend(fmt.find_spans(text))

    candidates = []
    for start, end, members in _merge(spans):
        raw = text[start:end]
        if len(members) > 1:
            candidates.append(Candidate(start, end, raw, None, Problem.AMBIGUOUS, "overlapping readings of different lengths"))
            continue
        result = validate(raw, today, reserve_formats)
        full = _PNR.fullmatch(raw)
        if full is not None and full["spaced_century"] and result.problem is not Problem.AMBIGUOUS:
            result = _spaced_century(raw, full, result, today, reserve_formats)
        candidates.append(Candidate(start, end, raw, result.number, result.problem, result.detail))
    return candidates


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int, set[tuple[int, int]]]]:
    """Group overlapping spans: (start, end, the distinct spans in the group)."""
    groups: list[tuple[int, int, set[tuple[int, int]]]] = []
    for start, end in sorted(set(spans)):
        if groups and start < groups[-1][1]:
            g_start, g_end, members = groups[-1]
            members.add((start, end))
            groups[-1] = (g_start, max(g_end, end), members)
        else:
            groups.append((start, end, {(start, end)}))
    return groups


def _spaced_century(
    raw: str, m: re.Match[str], whole: Validation, today: dt.date, reserve_formats: Sequence[ReserveFormat]
) -> Validation:
    """"19 121212-1212" in free text: century 19, or "19" then a 10-digit number?"""
    alone = validate(raw[m.start("yy"):], today, reserve_formats)
    if whole.number is not None and alone.number is not None and whole.number.canonical == alone.number.canonical:
        return whole
    if not whole.valid and not alone.valid:
        return whole
    return Validation(
        None,
        Problem.AMBIGUOUS,
        f"'{m['spaced_century']}' may be a century or a separate number; the two readings differ",
    )
