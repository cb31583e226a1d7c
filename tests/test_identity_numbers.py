"""Personnummer and samordningsnummer (R2): bildsluss_common.identity.numbers.

Three layers:

1. Examples for every rule (docs/identity-numbers.md, "Rules").
2. Property tests against the PyPI ``personnummer`` package as an oracle: for
   texts the oracle can judge (ASCII digits with "-"/"+"), we agree on validity
   and on the canonical 12 digits, EXCEPT where we differ on purpose. Each
   difference has its own pinned test in "Differences from the oracle" below,
   which also asserts what the oracle does, so an oracle upgrade that changes
   its behaviour shows up here:

   * D1 a birth date after today: oracle valid, we refuse (FUTURE_DATE);
   * D2 "+" in a 12-digit form: oracle ignores it, we refuse (BAD_SEPARATOR);
   * D3 a birth date more than MAX_AGE_YEARS ago, or a century other than
     18/19/20: oracle valid, we refuse (TOO_OLD / BAD_DATE);
   * D4 spaces a label printer adds ("19121212 - 1212"): oracle refuses, we accept;
   * D5 typographic dashes for "-" ("121212–1212"): oracle refuses, we accept;
   * D6 non-ASCII digits ("１９１２..."): oracle accepts (Python's \\d), we refuse;
   * D7 surrounding whitespace: oracle refuses leading, accepts a trailing "\\n";
     we ignore surrounding ASCII whitespace on both sides.

   Samordningsnummer, the serial 000, the 10-digit century rule (by calendar
   year) and leap years: we agree with the oracle (pinned too).
3. find_candidates on free text.
"""
from __future__ import annotations

import datetime as dt
import re
from unittest import mock

import personnummer.personnummer as oracle
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from bildsluss_common.identity.numbers import (
    MAX_AGE_YEARS,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    Candidate,
    IdentityNumber,
    Problem,
    find_candidates,
    looks_like_personnummer,
    luhn_check_digit,
    luhn_ok,
    parse,
    validate,
    years_before,
)

TODAY = dt.date(2026, 5, 25)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pnr(yymmdd: str, serial: str = "123") -> str:
    """A 10-digit number (no separator) with a correct check digit."""
    nine = yymmdd + serial
    return nine + luhn_check_digit(nine)


def problem(text: str, today: dt.date = TODAY) -> Problem | None:
    return validate(text, today).problem


def oracle_says(text: str, today: dt.date) -> str | None:
    """The oracle's canonical 12 digits, or None when it refuses the text."""
    with mock.patch.object(oracle, "_get_current_date", return_value=today):
        if not oracle.valid(text):
            return None
        return oracle.parse(text).format(long_format=True)


# -- 1. rules, by example ----------------------------------------------------------


def test_the_public_api_other_modules_use():
    number = parse("19121212-1212")
    assert isinstance(number, IdentityNumber)
    assert (number.canonical, number.kind, number.birth_date) == ("191212121212", PERSONNUMMER, dt.date(1912, 12, 12))
    assert parse("not a number") is None
    assert number.tagged == "personnummer:191212121212"


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("19121212-1212", "191212121212"),  # 12 digits with "-"
        ("191212121212", "191212121212"),  # 12 digits, none
        ("121212-1212", "201212121212"),  # 10 digits, "-": born in the last 99 years
        ("1212121212", "201212121212"),  # 10 digits, none: read as "-"
        ("121212+1212", "191212121212"),  # 10 digits, "+": 100 or older
        ("  19121212-1212\r\n", "191212121212"),  # surrounding ASCII whitespace
    ],
)
def test_written_forms(text, canonical):
    assert parse(text, TODAY).canonical == canonical


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("19 121212-1212", "191212121212"),  # century apart
        ("19121212 1212", "191212121212"),  # space as the separator
        ("121212 - 1212", "201212121212"),  # spaces around the separator
        ("121212 +1212", "191212121212"),
        ("19121212  -  1212", "191212121212"),  # up to two spaces
        ("19  121212 1212", "191212121212"),
    ],
)
def test_spaces_a_label_printer_adds(text, canonical):
    assert parse(text, TODAY).canonical == canonical


@pytest.mark.parametrize(
    "text",
    [
        "1212 12-1212",  # inside the date
        "19121 212-1212",
        "19121212-12 12",  # inside the serial
        "19121212   -1212",  # three spaces
        "12 121212-1212",  # a spaced "century" must be 18, 19 or 20
        "19121212\t1212",  # a tab is not a printer's space
        "19121212\u00a01212",  # nor a no-break space
    ],
)
def test_implausible_spacing_is_refused(text):
    assert problem(text) is Problem.MALFORMED


@pytest.mark.parametrize("dash", ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212"])
def test_typographic_dashes_read_as_hyphen(dash):
    assert parse(f"121212{dash}1212", TODAY).canonical == "201212121212"
    assert parse(f"19121212{dash}1212", TODAY).canonical == "191212121212"


@pytest.mark.parametrize(
    "text",
    [
        "PNR:19121212-1212",  # parse() takes one candidate: noise is refused
        "19121212-1212X",
        "19121212-1212.",
        "19121212-1212\x00",
        "x191212121212",
        "19121212--1212",
        "19121212-+1212",
        "１９１２１２１２-１２１２",  # fullwidth digits
        "١٩١٢١٢١٢١٢١٢",  # Arabic-Indic digits
        "121212\uff0b1212",  # a fullwidth plus is not "+"
        "",
        "   ",
        "19121212-121",  # too short
        "19121212-12121",  # too long
        "2024-05-25",
    ],
)
def test_not_an_identity_number_shape(text):
    assert problem(text) is Problem.MALFORMED
    assert parse(text, TODAY) is None


def test_plus_belongs_to_the_10_digit_form_only():
    assert problem("19121212+1212") is Problem.BAD_SEPARATOR
    assert parse("19121212-1212", TODAY) is not None


@pytest.mark.parametrize(
    "yymmdd, why",
    [
        ("121300", "month 13 and day 00"),
        ("121200", "day 00"),
        ("120012", "month 00"),
        ("120431", "30 days in April"),
        ("121232", "day 32"),
        ("121292", "day 92 = coordination 32"),
        ("121260", "day 60 = coordination 00"),
        ("230229", "2023 is no leap year"),
    ],
)
def test_dates_must_exist(yymmdd, why):
    assert problem(pnr(yymmdd)) is Problem.BAD_DATE, why
    assert problem("20" + pnr(yymmdd)) is Problem.BAD_DATE, why


def test_leap_years():
    assert parse("20" + pnr("000229"), TODAY).birth_date == dt.date(2000, 2, 29)  # divisible by 400
    assert problem("19" + pnr("000229")) is Problem.BAD_DATE  # 1900: divisible by 100 only
    assert parse("20" + pnr("240229"), TODAY).birth_date == dt.date(2024, 2, 29)
    # 10-digit forms: the century decides whether 29 February exists.
    ten = pnr("000229")
    assert parse(f"{ten[:6]}-{ten[6:]}", TODAY).birth_date == dt.date(2000, 2, 29)
    assert problem(f"{ten[:6]}+{ten[6:]}") is Problem.BAD_DATE  # 1900-02-29


def test_check_digit_is_luhn_over_the_10_digit_form():
    assert luhn_ok("1212121212") and not luhn_ok("1212121213")
    assert luhn_check_digit("121212121") == "2"
    # The Skatteverket example: 640823-323 -> 4.
    assert luhn_check_digit("640823323") == "4"
    for wrong in "013456789":
        assert problem(f"19121212-121{wrong}") is Problem.BAD_CHECK_DIGIT
    # The century is not covered by the check digit: see test_century_misread.


def test_serial_000_is_never_issued():
    # Skatteverket: födelsenummer 001-999.
    assert problem("19" + pnr("121212", "000")) is Problem.BAD_SERIAL


def test_samordningsnummer():
    # Skatteverket's example: a man born 3 October 1970, individnummer 239.
    number = parse("197010632391", TODAY)
    assert number.kind == SAMORDNINGSNUMMER
    assert number.birth_date == dt.date(1970, 10, 3)
    assert number.canonical == "197010632391"  # the day stays +60 in the canonical form
    assert number.oid == "1.2.752.129.2.1.3.3"
    assert parse("701063-2391", TODAY).canonical == "197010632391"
    assert parse("20" + pnr("000289"), TODAY).birth_date == dt.date(2000, 2, 29)
    assert problem("20" + pnr("010289")) is Problem.BAD_DATE  # 2001-02-29
    assert parse("19" + pnr("121291"), TODAY).kind == SAMORDNINGSNUMMER  # 31 December
    assert problem("19" + pnr("121191")) is Problem.BAD_DATE  # 31 November


def test_birth_date_not_in_the_future():
    assert parse("20" + pnr("260525"), TODAY).birth_date == TODAY  # born today
    assert problem("20" + pnr("260526")) is Problem.FUTURE_DATE  # tomorrow
    assert problem("20" + pnr("260586")) is Problem.FUTURE_DATE  # samordningsnummer, tomorrow


def test_too_old_and_foreign_centuries():
    limit = years_before(TODAY, MAX_AGE_YEARS)  # 1896-05-25
    assert parse("18" + pnr("960525"), TODAY).birth_date == limit
    assert problem("18" + pnr("960524")) is Problem.TOO_OLD
    assert problem("18" + pnr("121212")) is Problem.TOO_OLD
    assert problem("12" + pnr("121212")) is Problem.TOO_OLD
    assert problem("99" + pnr("121212")) is Problem.FUTURE_DATE
    assert problem("00" + pnr("001212")) is Problem.BAD_DATE  # year 0000 does not exist


def test_century_misread_is_caught_by_the_age_limit():
    # "19" read as "18": the Luhn check cannot see it, the age limit can.
    assert parse("19" + pnr("121212"), TODAY) is not None
    assert problem("18" + pnr("121212")) is Problem.TOO_OLD


class TestCenturyOf10DigitForms:
    """Skatteverket: "+" from the CALENDAR YEAR the person turns 100 (18 § FOL)."""

    def test_born_1925_in_2026(self):
        ten = pnr("250101")
        assert parse(f"{ten[:6]}+{ten[6:]}", TODAY).birth_date == dt.date(1925, 1, 1)
        assert parse(f"{ten[:6]}-{ten[6:]}", TODAY).birth_date == dt.date(2025, 1, 1)
        assert parse(ten, TODAY).birth_date == dt.date(2025, 1, 1)

    def test_the_year_a_person_turns_100(self):
        # Born 31 December 1926: 99 on 25 May 2026 but "+" all of 2026.
        ten = pnr("261231")
        assert parse(f"{ten[:6]}+{ten[6:]}", TODAY).birth_date == dt.date(1926, 12, 31)
        # "-" would mean 2026-12-31: in the future, refused (not read as 1926).
        assert problem(f"{ten[:6]}-{ten[6:]}") is Problem.FUTURE_DATE
        # The day before the year turns, the same person is still written "-".
        new_years_eve = dt.date(2025, 12, 31)
        assert parse(f"{ten[:6]}-{ten[6:]}", new_years_eve).birth_date == dt.date(1926, 12, 31)
        assert problem(f"{ten[:6]}+{ten[6:]}", new_years_eve) is Problem.TOO_OLD  # 1826

    def test_born_this_year(self):
        ten = pnr("260101")
        assert parse(f"{ten[:6]}-{ten[6:]}", TODAY).birth_date == dt.date(2026, 1, 1)
        assert parse(f"{ten[:6]}+{ten[6:]}", TODAY).birth_date == dt.date(1926, 1, 1)

    def test_today_is_a_parameter(self):
        ten = pnr("121212")
        assert parse(ten, dt.date(2012, 12, 12)).birth_date == dt.date(2012, 12, 12)
        assert problem(ten, dt.date(2012, 12, 11)) is Problem.FUTURE_DATE  # 2012, by the year
        assert parse(ten, dt.date(2011, 12, 31)).birth_date == dt.date(1912, 12, 12)
        assert parse(ten, TODAY).century_inferred
        assert not parse("20" + ten, TODAY).century_inferred


def test_looks_like_personnummer():
    assert looks_like_personnummer("19121212-1213")  # wrong check digit, still looks like one
    assert looks_like_personnummer("201212721212")  # coordination day
    assert not looks_like_personnummer("991981000010")  # century 99
    assert not looks_like_personnummer("19121232-1212")  # day 32
    assert not looks_like_personnummer("19121212M071")


# -- 2. against the oracle ---------------------------------------------------------


@st.composite
def written_numbers(draw, today=None):
    """(today, text, canonical, kind): a valid number in one of its written forms."""
    today = today or draw(st.dates(dt.date(1990, 1, 1), dt.date(2090, 12, 31)))
    oldest = years_before(today, MAX_AGE_YEARS)
    born = draw(st.dates(oldest, today))
    coordination = draw(st.booleans())
    serial = draw(st.integers(1, 999))
    day = born.day + (60 if coordination else 0)
    nine = f"{born.year % 100:02d}{born.month:02d}{day:02d}{serial:03d}"
    ten = nine + luhn_check_digit(nine)
    century = f"{born.year // 100:02d}"
    forms = [century + ten, f"{century}{ten[:6]}-{ten[6:]}"]
    if today.year - born.year >= 100:
        forms.append(f"{ten[:6]}+{ten[6:]}")
    else:
        forms += [f"{ten[:6]}-{ten[6:]}", ten]
    text = draw(st.sampled_from(forms))
    return today, text, century + ten, SAMORDNINGSNUMMER if coordination else PERSONNUMMER


def mutate(draw, text: str) -> str:
    chars = list(text)
    how = draw(st.sampled_from(["digit", "insert", "delete", "swap", "separator"]))
    i = draw(st.integers(0, len(chars) - 1))
    if how == "digit":
        chars[i] = draw(st.sampled_from("0123456789"))
    elif how == "insert":
        chars.insert(i, draw(st.sampled_from("0123456789-+")))
    elif how == "delete":
        del chars[i]
    elif how == "swap" and i + 1 < len(chars):
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    else:
        digits = [c for c in chars if c.isdigit()]
        cut = len(digits) - 4
        chars = digits[:cut] + [draw(st.sampled_from(["", "-", "+"]))] + digits[cut:]
    return "".join(chars)


def assert_agrees_with_oracle(text: str, today: dt.date) -> None:
    """Same validity and canonical form, except for the differences D1-D3."""
    ours = validate(text, today)
    theirs = oracle_says(text, today)
    if ours.valid:
        assert theirs == ours.number.canonical, (text, today)
        return
    if theirs is None:
        return
    # The oracle accepts what we refuse: only for the documented reasons.
    with mock.patch.object(oracle, "_get_current_date", return_value=today):
        born = oracle.parse(text).get_date()
    if ours.problem is Problem.FUTURE_DATE:  # D1
        assert born > today
    elif ours.problem is Problem.BAD_SEPARATOR:  # D2
        assert "+" in text and len(re.sub(r"\D", "", text)) == 12
    elif ours.problem is Problem.TOO_OLD:  # D3
        assert born < years_before(today, MAX_AGE_YEARS)
    else:
        raise AssertionError(f"{text!r} on {today}: oracle {theirs}, we {ours.problem}: {ours.detail}")


@PROPS
@given(written_numbers())
@example((TODAY, "121212+1212", "191212121212", PERSONNUMMER))
@example((dt.date(2000, 3, 1), pnr("000229")[:6] + "-" + pnr("000229")[6:], "20" + pnr("000229"), PERSONNUMMER))
def test_valid_numbers_agree_with_the_oracle(case):
    today, text, canonical, kind = case
    number = parse(text, today)
    assert number is not None, validate(text, today)
    assert (number.canonical, number.kind) == (canonical, kind)
    assert oracle_says(text, today) == canonical


@PROPS
@given(st.data(), written_numbers())
def test_mutated_numbers_agree_with_the_oracle(data, case):
    today, text, _, _ = case
    mutated = mutate(data.draw, text)
    assert_agrees_with_oracle(mutated, today)


@PROPS
@given(
    st.from_regex(r"[0-9]{6,8}[-+]?[0-9]{4}", fullmatch=True) | st.text("0123456789-+", min_size=9, max_size=14),
    st.dates(dt.date(1990, 1, 1), dt.date(2090, 12, 31)),
)
def test_random_digit_strings_agree_with_the_oracle(text, today):
    assert_agrees_with_oracle(text, today)


# Differences from the oracle, each pinned; the oracle's side is asserted too.


def test_D1_future_birth_date():
    text = pnr("261231")  # 2026-12-31, seven months after TODAY
    assert oracle_says(f"{text[:6]}-{text[6:]}", TODAY) == "20" + text
    assert problem(f"{text[:6]}-{text[6:]}") is Problem.FUTURE_DATE


def test_D2_plus_with_12_digits():
    assert oracle_says("19121212+1212", TODAY) == "191212121212"
    assert problem("19121212+1212") is Problem.BAD_SEPARATOR


def test_D3_too_old_and_odd_centuries():
    assert oracle_says("18121212-1212", TODAY) == "181212121212"
    assert problem("18121212-1212") is Problem.TOO_OLD
    assert oracle_says("001212121212", TODAY) == "001212121212"
    assert parse("001212121212", TODAY) is None


@pytest.mark.parametrize("text", ["19121212 1212", "19 121212-1212", "121212 - 1212"])
def test_D4_spaces(text):
    assert oracle_says(text, TODAY) is None
    assert parse(text, TODAY) is not None


def test_D5_typographic_dash():
    assert oracle_says("121212\u20131212", TODAY) is None
    assert parse("121212\u20131212", TODAY).canonical == "201212121212"


@pytest.mark.parametrize("text", ["１９１２１２１２-１２１２", "١٩١٢١٢١٢١٢١٢"])
def test_D6_non_ascii_digits(text):
    assert oracle_says(text, TODAY) is not None  # Python's \d and int() take them
    assert problem(text) is Problem.MALFORMED


def test_D7_surrounding_whitespace():
    assert oracle_says(" 191212121212", TODAY) is None
    assert oracle_says("191212121212\n", TODAY) == "191212121212"
    assert parse(" 191212121212", TODAY).canonical == "191212121212"
    assert parse("191212121212\n", TODAY).canonical == "191212121212"


def test_agreements_pinned():
    # Samordningsnummer: both accept day 61-91 and keep it in the long form.
    assert oracle_says("197010632391", TODAY) == parse("197010632391", TODAY).canonical
    # Serial 000: both refuse.
    assert oracle_says("19121212-0000", TODAY) is None and parse("19121212-0000", TODAY) is None
    # The 10-digit century by calendar year, and "+" for 100 or older.
    ten = pnr("250101")
    for sep in "-+":
        text = f"{ten[:6]}{sep}{ten[6:]}"
        assert oracle_says(text, TODAY) == parse(text, TODAY).canonical


@PROPS
@given(written_numbers(today=TODAY), st.sampled_from([" ", "  "]), st.data())
def test_spaces_at_the_allowed_places_change_nothing(case, space, data):
    _, text, canonical, _ = case
    digits = re.sub(r"\D", "", text)
    sep = re.sub(r"[0-9]", "", text)
    head = digits[:-4]
    if len(head) == 8 and data.draw(st.booleans()):
        head = head[:2] + space + head[2:]
    seps = [f"{space}{sep}{space}", f"{sep}{space}", f"{space}{sep}"] if sep else [space]
    spaced = head + data.draw(st.sampled_from(seps)) + digits[-4:]
    assert parse(spaced, TODAY).canonical == canonical
    offset = len(digits) - 10  # 2 for the 12-digit forms
    i = offset + data.draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9]))  # inside the date or the serial
    assert problem(digits[:i] + " " + digits[i:]) is Problem.MALFORMED


# -- 3. find_candidates ------------------------------------------------------------


def found(text: str, **kw) -> list[tuple[str, str | None, Problem | None]]:
    return [(c.raw, c.number.canonical if c.number else None, c.problem) for c in find_candidates(text, TODAY, **kw)]


@pytest.mark.parametrize(
    "text, raw",
    [
        ("PNR:19121212-1212", "19121212-1212"),
        ("^19121212-1212^NAME^FIRST", "19121212-1212"),
        ("PID|1||191212121212^^^SE|", "191212121212"),
        ("Pat: Tolvan Tolvansson  19121212-1212\nAvd 32", "19121212-1212"),
        ("(19121212-1212)", "19121212-1212"),
        ("pnr 121212+1212.", "121212+1212"),
        ("19121212 - 1212", "19121212 - 1212"),
    ],
)
def test_finds_numbers_in_payloads(text, raw):
    (candidate,) = find_candidates(text, TODAY)
    assert candidate.raw == raw and candidate.valid
    assert text[candidate.start : candidate.end] == raw == text[slice(*candidate.span)]
    assert candidate.number.canonical == "191212121212"


def test_reports_invalid_numbers_too():
    assert found("label 19121212-1213 x") == [("19121212-1213", None, Problem.BAD_CHECK_DIGIT)]
    assert found("19121312-1212") == [("19121312-1212", None, Problem.BAD_DATE)]  # explicit "-": reported
    assert found("19121212+1212") == [("19121212+1212", None, Problem.BAD_SEPARATOR)]


def test_several_numbers_in_order():
    text = "first 19121212-1212, then 197010632391"
    assert [c.raw for c in find_candidates(text, TODAY)] == ["19121212-1212", "197010632391"]


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-25",  # a date alone
        "2024-05-25 12:34:56",
        "20240525",
        "IMG_20240525_123456.JPG",
        "(01)07350000000001(21)12345678901234567890",  # GS1 with a 20-digit serial
        "12345678901234567890",
        "9191212121212",  # 13 digits
        "X191212121212",  # glued to a letter
        "191212121212A",
        "2024-121212-1212",  # one group of a longer dash-joined sequence
        "19121212-1212-5",
        "2024\u2013121212-1212",  # joined by an en dash
        "0123456789",  # bare 10 digits without plausible date fields (month 45)
        "012345678905",  # a UPC-A: century 01
        "1212 12-1212",
    ],
)
def test_no_false_positives(text):
    assert find_candidates(text, TODAY) == []


def test_12_digits_inside_a_longer_run_are_not_a_number():
    # A valid personnummer's digits inside a 20-digit GS1 serial.
    assert find_candidates("(21)19121212121212345678", TODAY) == []
    assert find_candidates("00191212121212", TODAY) == []


def test_spaced_century_that_reads_two_ways_is_refused():
    # "19 121212-1212": century 19 (1912) or a stray "19" before 121212-1212 (2012)?
    assert found("Rum 19 121212-1212") == [("19 121212-1212", None, Problem.AMBIGUOUS)]
    # Both readings give 2012: no doubt.
    assert found("Rum 20 121212-1212") == [("20 121212-1212", "201212121212", None)]
    # Not a century at all: the 10-digit number alone.
    assert found("Rum 12 121212-1212") == [("121212-1212", "201212121212", None)]
    # parse() is told the text is one number: 19 is the century.
    assert parse("19 121212-1212", TODAY).canonical == "191212121212"


@PROPS
@given(
    written_numbers(today=TODAY),
    st.text(" :^|;,.()[]\n\tABCxyz", max_size=6),
    st.text(" :^|;,.()[]\n\tABCxyz", max_size=6),
)
def test_a_number_in_noise_is_found_exactly(case, before, after):
    _, text, canonical, _ = case
    assume(not before[-1:].isalnum() and not after[:1].isalnum())
    (candidate,) = find_candidates(before + text + after, TODAY)
    assert (candidate.start, candidate.end) == (len(before), len(before) + len(text))
    assert candidate.number.canonical == canonical


@PROPS
@given(written_numbers(today=TODAY), st.text("0123456789", min_size=1, max_size=8), st.text("0123456789", min_size=1, max_size=8))
def test_a_number_inside_a_digit_run_is_not_found(case, before, after):
    _, _, canonical, _ = case
    assert find_candidates(before + canonical + after, TODAY) == []


@PROPS
@given(st.text(max_size=60))
def test_find_candidates_never_crashes_and_spans_are_exact(text):
    for c in find_candidates(text, TODAY):
        assert isinstance(c, Candidate) and text[c.start : c.end] == c.raw
        assert c.valid == (c.problem is None)
        if c.valid:
            assert parse(c.raw, TODAY) == c.number
