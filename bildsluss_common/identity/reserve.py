"""Reservnummer: region-specific temporary patient numbers (R2), configurable.

There is no national reservnummer that every region uses: each region (and
Inera's national "NRID") has its own format. A format is a :class:`ReserveFormat`
(a pattern, an optional Luhn check, a name); the agent enables the ones its
region uses in its TOML config::

    [[identity.reserve_formats]]
    name = "sll"                 # a shipped format, as shipped

    [[identity.reserve_formats]]
    name = "sll"
    checksum_from = 3            # a shipped format with one field changed

    [[identity.reserve_formats]]
    name = "varmland"            # a region's own format
    regex = '(?P<birth_year>[0-9]{4})(?P<birth_month>[0-9]{2})(?P<birth_day>[0-9]{2})S[FUXPL][0-9][A-UW-Z]'
    checksum = "none"
    examples = ["19810829SU3A"]

No format is enabled by default. Shipped formats (:data:`BUILTIN`), their
sources and what is uncertain about them: ``docs/identity-numbers.md``.

Safety rules, enforced when the formats are loaded (:func:`check_formats`) and
again for every text (:func:`bildsluss_common.identity.numbers.validate`):

* no format may match a valid personnummer or samordningsnummer, in any of its
  written forms;
* a text that looks like a (mistyped) personnummer is never read as a reserve
  number;
* a text valid in two formats is refused as ambiguous;
* a format's ``examples`` must be valid in it and in no other enabled format.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bildsluss_common.identity import numbers
from bildsluss_common.identity.numbers import IdentityNumber, Problem, Validation

CHECKSUMS = ("luhn", "none")
CANONICALIZE = ("upper-alnum",)
# Named groups with a meaning in a format's regex.
_DATE_GROUPS = ("birth_year", "birth_month", "birth_day")
_ISSUE_YEAR = "issue_year"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")


class ReserveFormatError(ValueError):
    """A reserve format in the configuration is wrong; the message names it and why.

    Raised when the formats are loaded (agent start), never while reading a card.
    Fix the ``[[identity.reserve_formats]]`` entry it names.
    """


@dataclasses.dataclass(frozen=True)
class ReserveFormat:
    """One region's reservnummer format.

    ``regex`` must match the whole number as written on a label (upper case; with
    the separators the format allows), without ``^``/``$``. Named groups with a
    meaning: ``birth_year`` (4 digits), ``birth_month``, ``birth_day`` (must form a
    real date, not in the future, which becomes ``birth_date``); ``issue_year``
    (must not be after today's year).

    ``checksum = "luhn"``: the last character of the canonical form is a Luhn
    check digit over the canonical characters from position ``checksum_from``
    (1-based) up to the one before it. Letters in that range are first replaced
    by ``letter_values``: pairs such as ``(("K", "5"), ("M", "7"))``, or
    ``"ascii"`` for each letter's ASCII code in decimal (``A`` becomes ``65``).

    ``canonicalize = "upper-alnum"``: the canonical form is the text upper-cased
    with everything but A-Z and 0-9 removed.
    """

    name: str
    regex: str
    checksum: str = "none"
    checksum_from: int = 1
    letter_values: tuple[tuple[str, str], ...] | str = ()
    canonicalize: str = "upper-alnum"
    description: str = ""
    source: str = ""
    oid: str = ""
    # False: the format is from a secondary source or incomplete; it can only be
    # enabled with allow_unverified = true.
    verified: bool = True
    examples: tuple[str, ...] = ()
    _pattern: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)
    _scanner: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"reserve format {self.name!r}"
        if not _NAME.fullmatch(self.name):
            raise ReserveFormatError(f"{where}: name must be lower-case letters, digits, '-' or '_'")
        if self.checksum not in CHECKSUMS:
            raise ReserveFormatError(f"{where}: checksum must be one of {', '.join(CHECKSUMS)}, not {self.checksum!r}")
        if self.canonicalize not in CANONICALIZE:
            raise ReserveFormatError(f"{where}: canonicalize must be one of {', '.join(CANONICALIZE)}")
        if not isinstance(self.checksum_from, int) or self.checksum_from < 1:
            raise ReserveFormatError(f"{where}: checksum_from must be a position counted from 1")
        if isinstance(self.letter_values, str):
            if self.letter_values not in ("", "ascii"):
                raise ReserveFormatError(f"{where}: letter_values must be a table of letters or \"ascii\"")
        else:
            for letter, value in self.letter_values:
                if not (len(letter) == 1 and "A" <= letter <= "Z" and value.isascii() and value.isdigit()):
                    raise ReserveFormatError(f"{where}: letter_values maps one upper-case letter to digits, not {letter!r}={value!r}")
        body = self.regex.strip()
        if not body or body.startswith(("^", "\\A")) or body.endswith(("$", "\\Z", "\\z")):
            raise ReserveFormatError(f"{where}: regex must be non-empty and without ^ or $ anchors")
        try:
            pattern = re.compile(body, re.ASCII)
            scanner = re.compile(
                rf"(?<![0-9A-Za-z])(?<![0-9][-+])(?:{body})(?![0-9A-Za-z])(?![-+][0-9])", re.ASCII | re.IGNORECASE
            )
        except re.error as exc:
            raise ReserveFormatError(f"{where}: regex does not compile: {exc}") from None
        groups = set(pattern.groupindex)
        date_groups = groups & set(_DATE_GROUPS)
        if date_groups and date_groups != set(_DATE_GROUPS):
            raise ReserveFormatError(f"{where}: regex needs all of {', '.join(_DATE_GROUPS)} or none")
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "_scanner", scanner)

    # -- use -------------------------------------------------------------------

    def canonical(self, text: str) -> str:
        return _NOT_ALNUM.sub("", text.upper())

    def validate(self, text: str, today: dt.date) -> Validation | None:
        """None when ``text`` is not this format's shape; else valid or the problem.

        Only this format's own rules: the exclusivity between kinds is
        :func:`bildsluss_common.identity.numbers.validate`'s job; call that.
        """
        if not text.isascii():
            return None
        m = self._pattern.fullmatch(text.upper())
        if m is None:
            return None
        canonical = self.canonical(text)
        groups = m.groupdict()
        born = None
        if groups.get("birth_year") is not None:
            born, bad = numbers.check_birth_date(
                int(groups["birth_year"]), int(groups["birth_month"]), int(groups["birth_day"]), today
            )
            if bad is not None:
                return bad
        if groups.get(_ISSUE_YEAR) is not None and int(groups[_ISSUE_YEAR]) > today.year:
            return Validation(None, Problem.FUTURE_DATE, f"issued in {groups[_ISSUE_YEAR]}, after {today.year}")
        if self.checksum == "luhn":
            problem = self._luhn_problem(canonical)
            if problem:
                return Validation(None, Problem.BAD_CHECK_DIGIT, problem)
        number = IdentityNumber(
            canonical=canonical, kind=numbers.RESERVNUMMER, birth_date=born, format_name=self.name, oid=self.oid
        )
        return Validation(number)

    def find_spans(self, text: str) -> list[tuple[int, int]]:
        """Spans of ``text`` that match this format's pattern (valid or not)."""
        return [m.span() for m in self._scanner.finditer(text)]

    def _luhn_problem(self, canonical: str) -> str:
        check = canonical[-1:]
        payload = canonical[self.checksum_from - 1 : -1]
        if not check.isdigit() or not payload:
            return f"no check digit at position {len(canonical)}"
        digits = []
        for ch in payload:
            if ch.isdigit():
                digits.append(ch)
            elif self.letter_values == "ascii":
                digits.append(str(ord(ch)))
            else:
                table = self.letter_values if isinstance(self.letter_values, tuple) else ()
                value = dict(table).get(ch)
                if value is None:
                    return f"letter {ch!r} has no value for the check digit"
                digits.append(value)
        if not numbers.luhn_ok("".join(digits) + check):
            return f"check digit {check} does not match"
        return ""


# -- shipped formats -----------------------------------------------------------------

_INERA_LOCAL = "Inera, Personuppgiftstjänsten, 'Lokala Reservidn' v1.2 (inera.atlassian.net pageId 3353227890)"

BUILTIN: dict[str, ReserveFormat] = {
    f.name: f
    for f in (
        ReserveFormat(
            name="sll",
            # 99, the year of issue, a 5-digit serial, a check digit. Printed
            # 12 characters; a "-" before the last four is accepted because the
            # region describes it as "built after the personnummer format".
            regex=r"99(?P<issue_year>(?:19|20)[0-9]{2})[0-9]{2}-?[0-9]{4}",
            checksum="luhn",
            checksum_from=5,
            description="Region Stockholm (SLL) reservnummer 99YYYYNNNNNC",
            source=_INERA_LOCAL + "; vardgivarguiden.se, Reservnummer (Region Stockholm, 2023)",
            oid="1.2.752.97.3.1.3",
            examples=("991981000010", "991945000023", "991993000032"),
        ),
        ReserveFormat(
            name="vgr",
            # yyyymmdd, sex K/M/X, a 2-digit serial (06-79: odd for M, even for K;
            # 80-89 for X), a check digit over yymmdd + letter value + serial.
            regex=(
                r"(?P<birth_year>(?:18|19|20)[0-9]{2})(?P<birth_month>[0-9]{2})(?P<birth_day>[0-9]{2})-?"
                r"(?:K(?:0[68]|[1-7][02468])|M(?:0[79]|[1-7][13579])|X8[0-9])[0-9]"
            ),
            checksum="luhn",
            checksum_from=3,
            letter_values=(("K", "5"), ("M", "7"), ("X", "8")),
            description="Västra Götalandsregionen (VGR) reservnummer yyyymmddGggC",
            source=_INERA_LOCAL,
            oid="1.2.752.113.11.0.2.1.1.1",
            examples=("19810829M071", "19450829K088", "19930829X802"),
        ),
        ReserveFormat(
            name="nrid",
            # XX: birth century + 3k (22-98) or 00 for an unknown date; YYMMDD: the
            # date, or for 00 a serial with MM 20-99 and DD 40-59; NN: two letters
            # (A-Z but not I O Q V W); G: a digit (sex) or such a letter (unknown);
            # C: Luhn over the 11 characters, letters as their ASCII codes.
            regex=(
                r"(?:00[0-9]{2}[2-9][0-9][45][0-9]"
                r"|(?:2[2-9]|[3-8][0-9]|9[0-8])[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]))"
                r"-?[A-HJ-NPRSTUXYZ]{2}[0-9A-HJ-NPRSTUXYZ][0-9]"
            ),
            checksum="luhn",
            checksum_from=1,
            letter_values="ascii",
            description="Nationell reservidentitet (NRID, Inera) XXYYMMDDNNGC",
            source=(
                "confluence.cgiostersund.se 'Nationellt Reservidformat' (summary of Inera's "
                "Nationellt_ReservID_-_specifikation_1.0.pdf, not seen); check digit rule only from "
                "a third-party implementation (Billas.Identifier NationalReserveNumberFormatter)"
            ),
            oid="1.2.752.74.9.1",
            verified=False,
        ),
    )
}


# -- configuration ----------------------------------------------------------------------

_ENTRY_KEYS = {f.name for f in dataclasses.fields(ReserveFormat) if f.init} | {"enabled", "allow_unverified"}


def from_config(identity: Mapping[str, Any] | None, today: dt.date | None = None) -> tuple[ReserveFormat, ...]:
    """The enabled reserve formats of an agent's ``[identity]`` table.

    ``identity["reserve_formats"]`` is a list whose entries are a built-in's name
    (``"sll"``) or a table (``[[identity.reserve_formats]]``): ``name`` alone
    enables a built-in; ``name`` of a built-in plus other keys changes those
    fields; any other ``name`` needs ``regex``. ``enabled = false`` keeps an entry
    in the file but off; ``allow_unverified = true`` is needed to enable a format
    marked unverified. Raises :class:`ReserveFormatError` naming the entry.
    """
    entries = (identity or {}).get("reserve_formats", [])
    if not isinstance(entries, list):
        raise ReserveFormatError("[identity] reserve_formats must be a list of names or [[identity.reserve_formats]] tables")
    formats: list[ReserveFormat] = []
    for i, entry in enumerate(entries, start=1):
        fmt = _entry(entry, f"[[identity.reserve_formats]] #{i}")
        if fmt is None:
            continue
        if any(f.name == fmt.name for f in formats):
            raise ReserveFormatError(f"[[identity.reserve_formats]] #{i}: {fmt.name!r} is listed twice")
        formats.append(fmt)
    check_formats(formats, today)
    return tuple(formats)


def _entry(entry: Any, where: str) -> ReserveFormat | None:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        raise ReserveFormatError(f"{where}: expected a format name or a table, got {entry!r}")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ReserveFormatError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "name" not in entry:
        raise ReserveFormatError(f"{where}: name is required")
    entry = dict(entry)
    name = str(entry.pop("name"))
    where = f"{where} ({name!r})"
    enabled = entry.pop("enabled", True)
    allow_unverified = entry.pop("allow_unverified", False)
    if not isinstance(enabled, bool) or not isinstance(allow_unverified, bool):
        raise ReserveFormatError(f"{where}: enabled and allow_unverified are true or false")
    if "letter_values" in entry and isinstance(entry["letter_values"], Mapping):
        entry["letter_values"] = tuple(sorted((str(k), str(v)) for k, v in entry["letter_values"].items()))
    if "examples" in entry:
        if not isinstance(entry["examples"], list) or not all(isinstance(x, str) for x in entry["examples"]):
            raise ReserveFormatError(f"{where}: examples must be a list of strings")
        entry["examples"] = tuple(entry["examples"])
    try:
        if name in BUILTIN:
            if set(entry) - {"description", "source", "oid", "examples"}:
                # A changed rule: the shipped examples may no longer hold.
                entry.setdefault("examples", ())
            fmt = dataclasses.replace(BUILTIN[name], **entry)
        elif "regex" not in entry:
            known = ", ".join(sorted(BUILTIN))
            raise ReserveFormatError(f"{where}: not a built-in format ({known}); a custom format needs regex")
        else:
            fmt = ReserveFormat(name=name, **entry)
    except TypeError as exc:
        raise ReserveFormatError(f"{where}: {exc}") from None
    except ReserveFormatError as exc:
        raise ReserveFormatError(f"{where}: {exc}") from None
    if not enabled:
        return None
    if not fmt.verified and not allow_unverified:
        raise ReserveFormatError(
            f"{where}: this format is not verified against an authoritative specification "
            "(see docs/identity-numbers.md); set allow_unverified = true to enable it anyway"
        )
    return fmt


def check_formats(formats: Sequence[ReserveFormat], today: dt.date | None = None) -> None:
    """Refuse a set of formats that could confuse kinds (see the module docstring)."""
    today = today or dt.date.today()
    sample = _sample(today)
    for fmt in formats:
        for example in fmt.examples:
            result = numbers.validate(example, today, formats)
            if result.number is None or result.number.format_name != fmt.name:
                why = result.detail or "not valid"
                raise ReserveFormatError(f"reserve format {fmt.name!r}: its example {example!r} is refused: {why}")
        for pnr in sample:
            if fmt._pattern.fullmatch(pnr):
                raise ReserveFormatError(
                    f"reserve format {fmt.name!r} matches the personnummer/samordningsnummer {pnr!r}; "
                    "a reserve format must never match one"
                )


@functools.lru_cache(maxsize=4)
def _sample(today: dt.date) -> tuple[str, ...]:
    return tuple(sample_personnummer(today))


def sample_personnummer(today: dt.date, step_days: int = 17) -> Iterable[str]:
    """Valid personnummer and samordningsnummer in every written form, spread over
    the accepted birth dates and all serials 001-999 (deterministic; formats are
    tested against it). A safety net, not a proof."""

    def forms(day: dt.date, serial: int) -> Iterable[str]:
        for coordination in (False, True):
            dd = day.day + (60 if coordination else 0)
            nine = f"{day.year % 100:02d}{day.month:02d}{dd:02d}{serial:03d}"
            ten = nine + numbers.luhn_check_digit(nine)
            century = f"{day.year // 100:02d}"
            sep = "+" if today.year - day.year >= 100 else "-"
            yield century + ten
            yield f"{century}{ten[:6]}-{ten[6:]}"
            yield f"{ten[:6]}{sep}{ten[6:]}"
            if sep == "-":
                yield ten

    day = numbers.years_before(today, numbers.MAX_AGE_YEARS - 1)
    k = 0
    while day <= today:
        k += 1
        yield from forms(day, k * 379 % 999 + 1)  # 379 is coprime to 999: every serial comes round
        day += dt.timedelta(days=step_days)
    for serial in range(1, 1000):  # every serial, on a day under and a day over 100 years ago
        yield from forms(numbers.years_before(today, 30), serial)
        yield from forms(numbers.years_before(today, 105), serial)
