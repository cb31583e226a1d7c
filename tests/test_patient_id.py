"""bildsluss_common.identity: the one patient-id check both programs use (issue 15),
and the one masking helper for logs, status pages and heartbeats (issue 13)."""
from __future__ import annotations

import datetime as dt

import pytest

from bildsluss_common.identity import patient_id
from bildsluss_common.identity.masking import contains_number, mask_numbers_in_text, mask_patient
from bildsluss_common.identity.reserve import BUILTIN

TODAY = dt.date(2026, 12, 3)
P = "191212121212"


def test_canonical_takes_exactly_the_stored_form():
    assert patient_id.canonical(P, today=TODAY).canonical == P


@pytest.mark.parametrize("text", [
    P + "\n", " " + P, "19121212-1212", "121212-1212", P.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    "191212121213", "", "19121212121", None, 191212121212,
])
def test_canonical_refuses_every_other_spelling(text):
    with pytest.raises(patient_id.InvalidPatientId):
        patient_id.canonical(text, today=TODAY)


@pytest.mark.parametrize("text", ["19121212-1212", "121212+1212", " 191212121212\n", "19121212 1212"])
def test_from_input_takes_written_forms_and_returns_the_canonical(text):
    assert patient_id.from_input(text, today=TODAY).canonical == P


def test_from_input_refuses_an_invalid_number_with_the_reason():
    with pytest.raises(patient_id.InvalidPatientId, match="check digit"):
        patient_id.from_input("19121212-1213", today=TODAY)


def test_a_reserve_number_only_in_an_enabled_format():
    sll = BUILTIN["sll"]
    with pytest.raises(patient_id.InvalidPatientId):
        patient_id.canonical("991981000010", today=TODAY)
    assert patient_id.canonical("991981000010", [sll], today=TODAY).kind == "reservnummer"


def test_masking():
    assert mask_patient(P) == "19121212-****"
    assert mask_patient(None) is None
    assert mask_patient("991981000010") == "99198100-****"  # any 12 digits alike
    assert mask_patient("19810829M071") == "1981********"
    text = "refused: first frame 19121212-1212, last 201012121212"
    masked = mask_numbers_in_text(text)
    assert "1212-1212" not in masked and "201012121212" not in masked and contains_number(text)
    assert not contains_number(masked)
    # A refusal's detail in logs and the journal keeps the dates, to tell two numbers apart.
    dated = mask_numbers_in_text(text, keep_date=True)
    assert dated == "refused: first frame 19121212-****, last 20101212****" and not contains_number(dated)
