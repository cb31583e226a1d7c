"""Shape checks for the ids, digests and paths that arrive over the wire.

Each function returns the value or raises InvalidArgument with a message that
names the field. They check form only; meaning (is the department accepted, is
the blob in the manifest) is decided by the ingest logic.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from archive_server.errors import InvalidArgument
from bildsluss_common.identity import patient_id as identity
from bildsluss_common.identity.reserve import ReserveFormat

SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# HSA-id: the issuing organisation's "SE" + 10 digits, "-", then an upper-case
# alphanumeric local part (R15), e.g. SE2321000016-15CQ. At most 31 characters.
HSA_ID = re.compile(r"^SE\d{10}-[0-9A-Z]{1,18}$")
MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-zA-Z0-9][a-zA-Z0-9.+_-]*$")
_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_PATH = 1024


def session_id(value: str, field: str = "session_id") -> str:
    if not SESSION_ID.match(value):
        raise InvalidArgument(f"{field} must be a lowercase UUID (36 characters), got {value!r}")
    return value


def sha256(value: str, field: str = "sha256") -> str:
    if not SHA256.match(value):
        raise InvalidArgument(f"{field} must be 64 lowercase hex digits, got {value!r}")
    return value


def size(value: int, field: str = "size_bytes", maximum: int | None = None) -> int:
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{field} {value} exceeds this archive's limit of {maximum} bytes")
    return value


def hsa_id(value: str, field: str = "department_hsa_id") -> str:
    if not HSA_ID.match(value):
        raise InvalidArgument(f"{field} must be an HSA-id like SE2321000016-15CQ, got {value!r}")
    return value


def agent_id(value: str) -> str:
    if not _PRINTABLE_ID.match(value):
        raise InvalidArgument("agent_id must be 1-255 printable ASCII characters without spaces")
    return value


def patient_id(value: str, reserve_formats: Sequence[ReserveFormat] = ()) -> str:
    """A canonical identity number, exactly (R2): 12 ASCII digits of a valid
    personnummer/samordningsnummer, or a valid reserve number in one of the
    region's enabled formats (``[identity] reserve_formats``). The same rules the
    agent read the number with (:mod:`bildsluss_common.identity`)."""
    try:
        return identity.canonical(value, reserve_formats).canonical
    except identity.InvalidPatientId as exc:
        raise InvalidArgument(f"patient_id: {exc}") from None


def relative_path(value: str, field: str = "relative_path") -> str:
    """'/'-separated, relative, no '..', '.', empty segment, backslash or control character."""
    if not value:
        raise InvalidArgument(f"{field} must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise InvalidArgument(f"{field} is longer than {MAX_PATH} bytes")
    if value.startswith("/"):
        raise InvalidArgument(f"{field} must be relative, got {value!r}")
    if "\\" in value:
        raise InvalidArgument(f"{field} must use '/' separators, got {value!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgument(f"{field} contains a control character: {value!r}")
    for part in value.split("/"):
        if part in ("", ".", ".."):
            raise InvalidArgument(f"{field} has an unsafe segment {part!r}: {value!r}")
    return value


def media_type(value: str, field: str = "media_type") -> str:
    if len(value) > 127 or not MEDIA_TYPE.match(value):
        raise InvalidArgument(f"{field} must be a MIME type like image/jpeg, got {value!r}")
    return value
