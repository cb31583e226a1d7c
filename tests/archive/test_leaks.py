"""Issue 13, leaks: no archive log line and no syslog message carries a whole
identity number (one masking helper, bildsluss_common.identity.masking)."""
from __future__ import annotations

import io
import json
import logging

import grpc
import pytest

from archive_server.atna import format_rfc5424
from bildsluss.v1 import ingest_pb2 as pb
from bildsluss_common import logs
from bildsluss_common.identity.masking import contains_number
from tests.archive.client import TIMEOUT, open_request, personnummer


def _whole(number: str) -> list[str]:
    """The written forms of a 12-digit number a log could hold."""
    return [number, number[2:], f"{number[:8]}-{number[8:]}", f"{number[2:8]}-{number[8:]}"]


def test_the_rpc_refused_line_names_no_patient(running_archive, stub):
    patient, other = personnummer(), personnummer()
    request = open_request({"DCIM/1.JPG": b"one", "DCIM/2.JPG": b"two"}, patient_id=patient)
    request.evidence[1].patient_id = other  # a mixed card (R4): refused, quoting the number
    request.evidence[1].text = other
    log_before = running_archive.stderr_path.stat().st_size
    with pytest.raises(grpc.RpcError) as refused:
        stub.OpenSession(request, timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert other in refused.value.details()  # the agent that sent it is told which

    with open(running_archive.stderr_path, "rb") as fh:
        fh.seek(log_before)
        lines = [json.loads(line) for line in fh.read().decode().splitlines() if line.startswith("{")]
    refusals = [e for e in lines if e["msg"] == "rpc refused" and e["method"].endswith("/OpenSession")]
    assert refusals, lines
    text = "\n".join(json.dumps(e, ensure_ascii=False) for e in lines)
    assert not any(form in text for n in (patient, other) for form in _whole(n)), text
    assert "********" in refusals[-1]["detail"]


def test_every_log_line_is_masked_even_where_the_call_site_did_not(caplog):
    number = personnummer()
    session = "0b9f6c1e-8d2a-4c51-9e3b-123456789012"  # a UUID whose last group is all digits
    sha = "1234567890" + "ab" * 27  # a digest starting with ten decimal digits
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("test.leaks")
    log.addHandler(handler)
    try:
        try:
            raise ValueError(f"duplicate key (patient_id)=({number})")
        except ValueError:
            log.exception("insert failed for %s", number, extra={
                "patient": number, "written": f"{number[2:8]}-{number[8:]}", "bytes": 1234567890,
                "session_id": session, "sha256": sha})
    finally:
        log.removeHandler(handler)
    line = out.getvalue()
    entry = json.loads(line)
    assert not any(form in line for form in _whole(number)), line
    assert not contains_number(entry["msg"]) and not contains_number(entry["exc"])
    # What identifies a blob, a session or a size in the log stays whole.
    assert (entry["session_id"], entry["sha256"], entry["bytes"]) == (session, sha, 1234567890)


def test_a_syslog_message_carries_no_whole_number():
    number = personnummer()
    raw = format_rfc5424({
        "who": "anna.a", "action": "patient.confidential_on", "target": f"patient:{number}",
        "patient": number, "why": f"begäran från {number[2:8]}-{number[8:]}", "outcome": "permitted",
        "department": "SE2321000016-15CQ",
    }, hostname="arkiv01").decode()
    assert not any(form in raw for form in _whole(number)), raw
    assert f'patient="{number[:8]}-****"' in raw  # the birth date stays, to tell patients apart
    assert not contains_number(raw)


def test_a_reserve_number_in_the_patient_field_is_masked_too():
    raw = format_rfc5424({"who": "x", "action": "case.show", "patient": "19810829M071",
                          "outcome": "permitted"}, hostname="h").decode()
    assert "19810829M071" not in raw and 'patient="1981********"' in raw


def test_masking_keeps_digests_uuids_and_hsa_ids_whole():
    from bildsluss_common.identity.masking import mask_numbers_in_text

    sha = "5a" + "0123456789" + "f" * 52
    text = f"blob {sha} of session 0b9f6c1e-8d2a-4c51-9e3b-198001012353 for 19121212-1212"
    masked = mask_numbers_in_text(text)
    assert sha in masked and "0b9f6c1e-8d2a-4c51-9e3b-198001012353" in masked
    assert "19121212-1212" not in masked and masked.endswith("*" * 13)
    assert mask_numbers_in_text("pnr:191212121212.") == "pnr:************."
    assert mask_numbers_in_text("department SE2321000016-15CQ") == "department SE2321000016-15CQ"
