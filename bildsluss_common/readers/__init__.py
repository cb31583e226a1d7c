"""Readers of patient identity numbers in images (R3).

Shared by the agent's identify stage and the archive's de-identification of
teaching copies (R20), so both programs find a number the same way:

* :mod:`bildsluss_common.readers.barcode`: barcodes (zxing-cpp, zbar last);
* :mod:`bildsluss_common.readers.ocr`: printed numbers and ultrasound overlays (tesseract);
* :mod:`bildsluss_common.readers.dicom`: DICOM headers and frames.

Readers return :class:`Reading` values: what text was seen where and how. Whether
that text is a valid number is :mod:`bildsluss_common.identity.numbers`' job.
"""
from __future__ import annotations

import dataclasses
import enum


class Method(str, enum.Enum):
    """How a patient number was established (the ``method`` of the agent's evidence)."""

    BARCODE = "barcode"
    OCR = "ocr"
    DICOM_HEADER = "dicom_header"
    EHR_CONTEXT = "ehr_context"
    # Not an identity reading: the device policy's decision (R6) for one file,
    # shown in the ingest outcome's evidence (the archive records the device
    # itself in the manifest).
    DEVICE = "device"
    # Not an identity reading either: a label-like region on a middle picture or
    # video frame from which no number could be read (issue 12). It refuses the
    # card (UNREADABLE_LABEL_MID_CARD): the label may be another patient's (R4).
    UNREAD_LABEL = "unread_label"


@dataclasses.dataclass(frozen=True)
class Reading:
    """Raw text a reader saw on one frame, before validation."""

    text: str
    method: Method
    symbology: str = ""
    position: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height
    reader: str = ""  # which library read it, where several may ("zxing-cpp", "zbar")
