"""Reservnummer (R2): bildsluss_common.identity.reserve and its integration in numbers.

The shipped formats with their published examples, the configuration, and above
all exclusivity: no reservnummer is read as a personnummer, no personnummer as a
reservnummer, and a text that fits two kinds is refused as ambiguous.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import re
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import config
from bildsluss_common.identity import numbers, reserve
from bildsluss_common.identity.numbers import RESERVNUMMER, Problem, find_candidates, luhn_check_digit, parse, validate
from bildsluss_common.identity.reserve import BUILTIN, ReserveFormat, ReserveFormatError, check_formats, from_config
from tests.test_identity_numbers import PROPS, TODAY, written_numbers

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "identity-numbers.md"
SLL = BUILTIN["sll"]
VGR = BUILTIN["vgr"]
NRID = BUILTIN["nrid"]
ALL = (SLL, VGR, NRID)


def nrid(head: str) -> str:
    """An NRID with the (unverified) check digit: Luhn over the 11 characters,
    letters as their ASCII codes."""
    digits = "".join(str(ord(c)) if c.isalpha() else c for c in head)
    return head + luhn_check_digit(digits)


def sll(year: int, serial: int) -> str:
    body = f"99{year:04d}{serial:05d}"
    return body + luhn_check_digit(body[4:])


# -- shipped formats ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", [SLL, VGR])
def test_published_examples_are_valid(fmt):
    assert fmt.examples
    for example in fmt.examples:
        number = parse(example, TODAY, [fmt])
        assert (number.kind, number.format_name, number.canonical) == (RESERVNUMMER, fmt.name, example)
        assert number.oid == fmt.oid
        # ... and none of them is anything without the format enabled.
        assert parse(example, TODAY) is None


def test_sll_layout_and_check_digit():
    number = parse("991981000010", TODAY, [SLL])
    assert number.birth_date is None and number.tagged == "reservnummer/sll:991981000010"
    assert parse("99198100-0010", TODAY, [SLL]).canonical == "991981000010"
    assert validate("991981000011", TODAY, [SLL]).problem is Problem.BAD_CHECK_DIGIT
    assert validate(sll(2027, 1), TODAY, [SLL]).problem is Problem.FUTURE_DATE  # issued next year
    assert parse(sll(2026, 99999), TODAY, [SLL]) is not None
    assert parse("9919810000100", TODAY, [SLL]) is None  # 13 digits


def test_sll_check_digit_variants_are_configurable():
    # Inera v1.0/1.1 and Billas.Identifier: Luhn over positions 1-11.
    old = dataclasses.replace(SLL, checksum_from=1)
    assert parse("991981000011", TODAY, [old]) is not None
    assert parse("991981000010", TODAY, [old]) is None
    # pinefox/personnummer (PHP): Luhn over positions 3-11.
    php = dataclasses.replace(SLL, checksum_from=3)
    assert parse("992004920019", TODAY, [php]) is not None
    assert parse("992004920019", TODAY, [SLL]) is None


def test_vgr_rules():
    number = parse("19810829M071", TODAY, [VGR])
    assert number.birth_date == dt.date(1981, 8, 29)
    assert parse("19810829m071", TODAY, [VGR]).canonical == "19810829M071"  # case
    assert parse("19810829-M071", TODAY, [VGR]).canonical == "19810829M071"
    assert validate("19810829M072", TODAY, [VGR]).problem is Problem.BAD_CHECK_DIGIT
    # M takes odd serials, K even ones, X 80-89; 06-79 only.
    for text in ("19810829M081", "19810829K071", "19810829X791", "19810829M051", "19810829K908"):
        assert validate(text, TODAY, [VGR]).problem is Problem.MALFORMED, text
    for head in ("19810230K08", "20270101K08"):  # no 30 February; in the future
        text = head + luhn_check_digit(head[2:8] + "5" + head[9:])
        assert validate(text, TODAY, [VGR]).problem in (Problem.BAD_DATE, Problem.FUTURE_DATE)


def test_nrid_is_unverified_and_off_unless_acknowledged():
    assert not NRID.verified
    with pytest.raises(ReserveFormatError, match="allow_unverified"):
        from_config({"reserve_formats": ["nrid"]}, TODAY)
    (fmt,) = from_config({"reserve_formats": [{"name": "nrid", "allow_unverified": True}]}, TODAY)
    known = nrid("22121212AB2")  # born 1912-12-12 (19 + 3), a woman
    unknown = nrid("00123456XYZ")  # date and sex unknown
    for text in (known, unknown):
        assert parse(text, TODAY, [fmt]).canonical == text
    assert parse(known[:8] + "-" + known[8:], TODAY, [fmt]).canonical == known
    assert validate(known[:-1] + str((int(known[-1]) + 1) % 10), TODAY, [fmt]).problem is Problem.BAD_CHECK_DIGIT
    for bad in ("19121212AB2", "22121212AI2", "00121212AB2", "22121312AB2"):  # 19: PNR range; I; no date rule; month 13
        assert validate(nrid(bad), TODAY, [fmt]).problem is Problem.MALFORMED, bad


# -- exclusivity ---------------------------------------------------------------------


@PROPS
@given(st.from_regex(r"99[0-9]{6}-?[0-9]{4}", fullmatch=True))
def test_an_sll_shaped_text_is_never_a_personnummer(text):
    assert parse(text, TODAY) is None
    result = parse(text, TODAY, ALL)
    assert result is None or (result.kind, result.format_name) == (RESERVNUMMER, "sll")


@PROPS
@given(st.integers(1980, TODAY.year), st.integers(0, 99999))
def test_every_sll_number_is_reserve_only(year, serial):
    text = sll(year, serial)
    assert parse(text, TODAY) is None
    assert parse(text, TODAY, ALL).format_name == "sll"


@PROPS
@given(written_numbers())
def test_a_personnummer_is_never_a_reserve_number(case):
    today, text, canonical, kind = case
    assert parse(text, today, ALL) == parse(text, today)
    assert parse(text, today, ALL).kind == kind
    for fmt in ALL:
        assert fmt.validate(text, today) is None, (fmt.name, text)


@PROPS
@given(written_numbers(today=TODAY), st.data())
def test_a_mistyped_personnummer_is_never_a_reserve_number(case, data):
    _, text, _, _ = case
    i = data.draw(st.sampled_from([m.start() for m in re.finditer(r"[0-9]", text)]))
    mistyped = text[:i] + data.draw(st.sampled_from("0123456789")) + text[i + 1 :]
    result = parse(mistyped, TODAY, ALL)
    assert result is None or result.kind != RESERVNUMMER


def test_a_format_that_matches_a_personnummer_is_refused_at_load():
    loose = {"name": "loose", "regex": r"[0-9]{8}-?[0-9]{4}", "checksum": "none"}
    with pytest.raises(ReserveFormatError, match="must never match"):
        from_config({"reserve_formats": [loose]}, TODAY)
    tnumber = {"name": "tnumber", "regex": r"[0-9]{6}-?9[0-9]{3}"}  # serials 9xx are real
    with pytest.raises(ReserveFormatError, match="must never match"):
        from_config({"reserve_formats": [tnumber]}, TODAY)


def test_two_formats_that_accept_the_same_examples_are_refused_at_load():
    twin = {"name": "twin", "regex": SLL.regex, "checksum": "luhn", "checksum_from": 5, "examples": ["991981000010"]}
    with pytest.raises(ReserveFormatError, match="example '991981000010' is refused"):
        from_config({"reserve_formats": ["sll", twin]}, TODAY)


def test_ambiguity_at_run_time_is_refused():
    # Formats built directly skip check_formats; validate() still refuses.
    loose = ReserveFormat(name="loose", regex=r"[0-9]{8}-?[0-9]{4}")
    assert validate("19121212-1212", TODAY, [loose]).problem is Problem.AMBIGUOUS  # valid pnr + reserve shape
    assert validate("19121212-1213", TODAY, [loose]).problem is Problem.AMBIGUOUS  # a mistyped pnr
    twin = dataclasses.replace(SLL, name="twin")
    assert validate("991981000010", TODAY, [SLL, twin]).problem is Problem.AMBIGUOUS
    assert parse("991981000010", TODAY, [SLL]) is not None


# -- find_candidates with reserve formats ----------------------------------------------


def test_reserve_numbers_in_text():
    text = "Reservnr: 991981000010 ^19810829M071^KALLE| 19121212-1212"
    found = [(c.raw, c.number.tagged if c.number else c.problem) for c in find_candidates(text, TODAY, ALL)]
    assert found == [
        ("991981000010", "reservnummer/sll:991981000010"),
        ("19810829M071", "reservnummer/vgr:19810829M071"),
        ("19121212-1212", "personnummer:191212121212"),
    ]
    # Without the formats they are not numbers at all (991981000010's century is 99).
    assert [c.raw for c in find_candidates(text, TODAY)] == ["19121212-1212"]


def test_invalid_reserve_numbers_in_text_are_reported():
    (c,) = find_candidates("RNR 991981000011.", TODAY, [SLL])
    assert (c.raw, c.problem) == ("991981000011", Problem.BAD_CHECK_DIGIT)
    assert find_candidates("X991981000010", TODAY, [SLL]) == []
    assert find_candidates("1991981000010", TODAY, [SLL]) == []


def test_overlapping_readings_of_different_lengths_are_ambiguous():
    longer = ReserveFormat(name="suffixed", regex=r"[0-9]{8}-[0-9]{4}-[A-Z]")
    (c,) = find_candidates("id 19121212-1212-X", TODAY, [longer])
    assert (c.raw, c.problem) == ("19121212-1212-X", Problem.AMBIGUOUS)


# -- configuration --------------------------------------------------------------------


def doc_toml() -> dict:
    """The configuration example of docs/identity-numbers.md, which must work."""
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/identity-numbers.md has no ```toml example"
    return tomllib.loads(blocks[0])


def test_the_documented_example_loads():
    data = doc_toml()
    formats = from_config(data["identity"], TODAY)
    assert [f.name for f in formats] == ["sll", "vgr", "varmland"]
    assert parse("19810829SU3A", TODAY, formats).format_name == "varmland"
    # ... and through the agent's own config loader, which keeps [identity] raw.
    cfg = config.from_dict(data)
    assert [f.name for f in from_config(cfg.identity, TODAY)] == ["sll", "vgr", "varmland"]


def test_defaults_enable_nothing():
    assert from_config(None) == () and from_config({}) == () and from_config({"budget_s": 2.0}) == ()
    assert from_config(config.load(None).identity) == ()


def test_names_tables_overrides_and_disabling():
    formats = from_config({"reserve_formats": ["sll", {"name": "vgr", "enabled": False}]}, TODAY)
    assert formats == (SLL,)
    (old,) = from_config({"reserve_formats": [{"name": "sll", "checksum_from": 1}]}, TODAY)
    assert old.checksum_from == 1 and parse("991981000011", TODAY, [old]) is not None


def test_custom_format_with_letter_values():
    entry = {
        "name": "vgr-copy",
        "regex": VGR.regex,
        "checksum": "luhn",
        "checksum_from": 3,
        "letter_values": {"K": "5", "M": "7", "X": "8"},
        "examples": ["19810829M071"],
    }
    (fmt,) = from_config({"reserve_formats": [entry]}, TODAY)
    assert fmt.letter_values == (("K", "5"), ("M", "7"), ("X", "8"))
    assert parse("19450829K088", TODAY, [fmt]).format_name == "vgr-copy"


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "sll", "colour": "red"}, "unknown key"),
        ({"regex": "99[0-9]{10}"}, "name is required"),
        ({"name": "skane"}, "needs regex"),
        ({"name": "x", "regex": "(["}, "does not compile"),
        ({"name": "x", "regex": "^99[0-9]{10}$"}, "anchors"),
        ({"name": "x", "regex": "99[0-9]{10}", "checksum": "mod11"}, "checksum must be one of"),
        ({"name": "x", "regex": "99[0-9]{10}", "checksum_from": 0}, "checksum_from"),
        ({"name": "x", "regex": "99[0-9]{10}", "canonicalize": "lower"}, "canonicalize"),
        ({"name": "x", "regex": "(?P<birth_year>[0-9]{4})[A-Z]{4}"}, "all of birth_year"),
        ({"name": "x", "regex": "99[0-9]{10}", "letter_values": {"k": "5"}}, "letter_values"),
        ({"name": "Bad Name", "regex": "99[0-9]{10}"}, "name must be"),
        ({"name": "x", "regex": "98[0-9]{10}", "checksum": "luhn", "examples": ["980000000000", "980000000001"]}, "is refused"),
        ({"name": "x", "regex": "98[0-9]{10}", "examples": "980000000000"}, "list of strings"),
        (42, "expected a format name or a table"),
    ],
)
def test_bad_entries_name_the_problem(entry, message):
    with pytest.raises(ReserveFormatError, match=message):
        from_config({"reserve_formats": [entry]}, TODAY)


def test_duplicates_and_wrong_types():
    with pytest.raises(ReserveFormatError, match="listed twice"):
        from_config({"reserve_formats": ["sll", "sll"]}, TODAY)
    with pytest.raises(ReserveFormatError, match="must be a list"):
        from_config({"reserve_formats": "sll"}, TODAY)
    with pytest.raises(ReserveFormatError, match="true or false"):
        from_config({"reserve_formats": [{"name": "sll", "enabled": "yes"}]}, TODAY)


def test_the_personnummer_sample_covers_every_form():
    sample = list(reserve.sample_personnummer(TODAY))
    assert all(parse(s, TODAY) is not None for s in sample)
    shapes = {re.sub(r"[0-9]", "9", s) for s in sample}
    assert shapes == {"999999999999", "99999999-9999", "999999-9999", "999999+9999", "9999999999"}
    assert {parse(s, TODAY).kind for s in sample} == {numbers.PERSONNUMMER, numbers.SAMORDNINGSNUMMER}


def test_check_formats_accepts_the_shipped_ones_together():
    check_formats(ALL, TODAY)
