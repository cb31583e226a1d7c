"""Reading and validating patient identity numbers (R1-R5).

* :mod:`agent.identity.numbers`: personnummer, samordningsnummer, reservnummer.
* readers (barcode, OCR, DICOM, video frames) return :class:`Reading` values:
  what text was seen where and how; the identify stage validates them.
"""
from __future__ import annotations

import dataclasses

from agent.model import Method


@dataclasses.dataclass(frozen=True)
class Reading:
    """Raw text a reader saw on one frame, before validation."""

    text: str
    method: Method
    symbology: str = ""
    position: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height
    reader: str = ""  # which library read it, where several may ("zxing-cpp", "zbar")
