"""The two ways a patient number enters a program, and the one check for each.

* :func:`canonical` — an id that claims to be stored form already (over the
  wire from an agent, from the database, from a heartbeat): it must be the
  canonical form exactly, character for character. ``"198001012353\\n"`` or the
  same digits in another script are not "almost" the number: they are refused,
  because the archive compares ids as strings (confidential marks, search,
  dedup) and a second spelling of one patient is a second patient.
* :func:`from_input` — a number as a person types or a label prints it
  (``19121212-1212``, ``121212-1212``): any written form
  :func:`numbers.validate` accepts, returned in canonical form.

Both validate fully (date, serial, Luhn; reserve formats only when enabled).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from bildsluss_common.identity import numbers
from bildsluss_common.identity.numbers import IdentityNumber
from bildsluss_common.identity.reserve import ReserveFormat


class InvalidPatientId(ValueError):
    """The text is not an acceptable patient id; the message says why, for the caller to show."""


def canonical(
    value: object, reserve_formats: Sequence[ReserveFormat] = (), today: dt.date | None = None
) -> IdentityNumber:
    """``value`` exactly as stored: 12 ASCII digits of a valid personnummer or
    samordningsnummer, or the canonical form of a valid number in an enabled
    reserve format. Raises :class:`InvalidPatientId`."""
    if not isinstance(value, str) or not value:
        raise InvalidPatientId("a patient id is required")
    if not value.isascii() or not value.isalnum():
        raise InvalidPatientId(
            f"patient id {value!r} must be ASCII letters and digits only, without separators or spaces"
        )
    result = numbers.validate(value, today, reserve_formats)
    if result.number is None:
        raise InvalidPatientId(f"patient id {value!r} is not a valid identity number: {result.detail}")
    if result.number.canonical != value:
        raise InvalidPatientId(
            f"patient id {value!r} is not in canonical form (expected {result.number.canonical!r})"
        )
    return result.number


def from_input(
    text: object, reserve_formats: Sequence[ReserveFormat] = (), today: dt.date | None = None
) -> IdentityNumber:
    """A number as typed or printed, in any written form; the canonical number.
    Raises :class:`InvalidPatientId` naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidPatientId("a patient number is required")
    result = numbers.validate(text, today, reserve_formats)
    if result.number is None:
        raise InvalidPatientId(f"{text.strip()!r} is not a valid identity number: {result.detail}")
    return result.number
