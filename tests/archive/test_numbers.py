"""Decimals as Swedish staff read them (archive_server.numbers)."""
from __future__ import annotations

import pytest

from archive_server.numbers import decimal


@pytest.mark.parametrize(("value", "places", "shown"), [
    (3.5, 2, "3,5"),
    (3.0, 2, "3"),
    (0.1 + 0.2, 2, "0,3"),
    (1234.25, 2, "1\u00a0234,25"),
    (-1234.5, 1, "\u22121\u00a0234,5"),
    (-0.04, 1, "0"),  # never "−0"
    (12.345, 1, "12,3"),
    (7, 0, "7"),
    (float("nan"), 2, "–"),
    (float("inf"), 2, "–"),
])
def test_decimal_comma_space_between_thousands_and_a_real_minus(value, places, shown):
    assert decimal(value, places) == shown
