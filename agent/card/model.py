"""Plain data passed between the stages of the card's path.

Every stage takes and returns these frozen dataclasses (or lists of them), so a
stage can be tested alone on real files and the pipeline only wires them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import pathlib
from typing import Any

from agent.card.reasons import Reason
from bildsluss_common.readers import Method

__all__ = ["Method"]  # re-exported: the evidence's method is part of the card's vocabulary


class Mode(str, enum.Enum):
    PHOTO = "photo"
    ASSAULT = "assault"
    ULTRASOUND = "ultrasound"
    VIDEO = "video"
    AUDIO = "audio"


class MediaKind(str, enum.Enum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DICOM = "dicom"


@dataclasses.dataclass(frozen=True)
class Device:
    make: str = ""
    model: str = ""
    serial: str = ""

    @property
    def known(self) -> bool:
        return bool(self.make or self.model or self.serial)


@dataclasses.dataclass(frozen=True)
class MediaFile:
    """One media file found on the card, recognised by its content (R8)."""

    path: pathlib.Path  # absolute path on the card
    relative_path: str  # '/'-separated, relative to the card root
    kind: MediaKind
    media_type: str  # MIME type judged from content, e.g. "image/jpeg"
    size: int
    sha256: str  # of the original bytes on the card, to re-check before wipe
    mtime_ns: int
    capture_time: dt.datetime | None = None  # from the file's own metadata
    device: Device = Device()
    # Position of the camera's file numbering (DCIM/100CANON/IMG_0042 -> (100, 42)),
    # used to order files that carry no capture time.
    sequence: tuple[int, ...] = ()
    # The metadata fields ``device`` was read from ("EXIF:IFD0:Make=Apple"), and
    # traits that only phones leave ("Apple maker note (MakerNotes:Apple)"),
    # for the device policy (R6) and the case's evidence.
    device_fields: tuple[str, ...] = ()
    device_traits: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file on the card that is not media: ignored housekeeping, or a refusal."""

    relative_path: str
    status: str  # "ignored" or "refused"
    reason: Reason | None = None
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ScanResult:
    root: pathlib.Path
    media: tuple[MediaFile, ...]  # in capture order (first .. last)
    skipped: tuple[SkippedFile, ...]

    @property
    def refused(self) -> tuple[SkippedFile, ...]:
        return tuple(s for s in self.skipped if s.status == "refused")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One identity reading: what was read, where, and how (issue: Evidence)."""

    relative_path: str
    frame: int
    method: Method
    text: str  # exactly what was read
    patient_id: str | None  # canonical number if the text validated, else None
    symbology: str = ""
    position: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height
    # When a text looks like an identity number but fails validation.
    invalid: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.relative_path,
            "frame": self.frame,
            "method": self.method.value,
            "symbology": self.symbology or None,
            "text": self.text,
            "patient": self.patient_id,
            "position": list(self.position),
        }


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of the decide stage: one patient, or a refusal with a reason."""

    patient_id: str | None
    reason: Reason | None
    detail: str = ""
    evidence: tuple[Evidence, ...] = ()
    ehr_context: bool = False

    @property
    def accepted(self) -> bool:
        return self.reason is None and self.patient_id is not None


@dataclasses.dataclass(frozen=True)
class StrippedFile:
    """A media file's metadata-free copy in the spool (R7)."""

    source: MediaFile
    spool_path: pathlib.Path
    sha256: str  # of the stripped bytes: the blob's name in the archive
    size: int


@dataclasses.dataclass(frozen=True)
class Receipt:
    """The archive's confirmation that one file is durably filed."""

    relative_path: str
    sha256: str
    size: int
    blob_id: str
    media_item_id: str


class StageError(Exception):
    """A stage refuses the card (or cannot go on) for a stable reason."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[StageError], tuple[Reason, str]]:
        # Raised in a worker process (agent.card.workers), re-raised in the pipeline.
        return StageError, (self.reason, self.detail)
