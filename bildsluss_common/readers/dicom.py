"""DICOM files: the patient in the header and in the burned-in overlay (R3).

Ultrasound machines export DICOM with the patient's name, number and the exam
date both in the header and burned into the pixels. The identify stage needs
both and compares them: a header that disagrees with the overlay is a
wrong-patient export and refuses the card.

* :func:`read_dicom` reads the header and gives access to the decoded frames as
  8-bit PIL images (compressed transfer syntaxes through the installed pylibjpeg,
  openjpeg, libjpeg and pydicom's own RLE decoders; PALETTE COLOR through the
  LUT; YBR converted to RGB; MONOCHROME1 inverted; more than 8 bits windowed).
* :func:`read_dicomdir` lists the image files a DICOMDIR references.
* :func:`dicom_readings` / :func:`read_dicom_identity` turn one file into
  readings: the header's PatientID, and the overlay's numbers frame by frame.

Errors: every problem with a file raises :class:`DicomUnreadable` (a subclass of
:class:`DicomError`), never a pydicom, numpy or decoder exception: the caller
refuses the card with a reason and goes on.

Every frame is read (R3), without OCR'ing every frame of a long cine loop: frame
0 is OCR'd; for each later frame, the pixels where the last OCR'd frame showed a
number are compared with that frame; identical (to a tolerance for lossy
compression) means the same text, and the reading is carried over with the later
frame's index. A frame that differs there is OCR'd itself. At most
``max_ocr_frames`` frames are OCR'd per file; frames beyond that, and frames that
could not be compared, get no reading and are listed in
:attr:`DicomReadings.frames_unread`, so that the caller refuses rather than
assumes. The burned-in text of a cine loop is the machine's banner, drawn
identically on every frame, so in practice one or two OCR runs cover a file.
A frame with no number on it gives nothing to compare, so the next frame is
OCR'd itself: a file that shows no number costs up to ``max_ocr_frames`` OCR runs.
"""
from __future__ import annotations

import dataclasses
import pathlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from bildsluss_common.readers import Method, Reading

if TYPE_CHECKING:  # pydicom is imported where a DICOM file is read, not at start
    from pydicom.dataset import Dataset

# Frames OCR'd per file at most (the rest are compared with an OCR'd frame).
MAX_OCR_FRAMES = 30
# A frame's text region counts as unchanged when its pixels differ by less than this.
SAME_MEAN_ABS = 6.0
SAME_BINARY_FRACTION = 0.02


class DicomError(Exception):
    """Base of this module's errors."""


class DicomUnreadable(DicomError):
    """The file is not DICOM, its header is broken, or its pixels do not decode.

    Raised by :func:`read_dicom`, by :meth:`DicomIdentity.frame` / ``frames`` and
    by :func:`dicom_readings`. The file cannot be identified: refuse it (do not
    retry; the same bytes fail the same way). ``path`` and ``detail`` say which and why.
    """

    def __init__(self, path: pathlib.Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class DicomIdentity:
    """The identity-relevant header fields of one DICOM file, and its frames."""

    path: pathlib.Path
    patient_id: str
    patient_name: str  # DICOM PN as written, e.g. "ANDERSSON^ANNA"
    study_date: str  # YYYYMMDD as written, or ""
    modality: str
    number_of_frames: int  # 0 when the file holds no pixel data (SR, waveform)
    transfer_syntax: str  # UID
    transfer_syntax_name: str
    photometric: str
    rows: int
    columns: int
    sop_class_uid: str
    burned_in_annotation: str  # "YES", "NO" or "" (absent; note: not to be trusted)
    other_patient_ids: tuple[str, ...] = ()
    _dataset: Dataset | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def has_pixels(self) -> bool:
        return self.number_of_frames > 0

    def frame(self, index: int) -> Image.Image:
        """Frame ``index`` as an 8-bit PIL image ("L" or "RGB"). Raises DicomUnreadable."""
        if not 0 <= index < self.number_of_frames:
            raise IndexError(f"frame {index} of {self.number_of_frames}")
        assert self._dataset is not None  # frames exist only on a read dataset
        return _decode_frame(self.path, self._dataset, index, self.number_of_frames)

    def frames(self, max_frames: int | None = None) -> Iterator[Image.Image]:
        """Frames in order (the first ``max_frames`` when given). Raises DicomUnreadable."""
        n = self.number_of_frames if max_frames is None else min(max_frames, self.number_of_frames)
        for i in range(n):
            yield self.frame(i)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def read_dicom(path: pathlib.Path) -> DicomIdentity:
    """Read the header of one DICOM file (pixel data is read when frames are asked for).

    Raises :class:`DicomUnreadable` when the file is not DICOM (no preamble and
    "DICM" prefix), or its header cannot be parsed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = pathlib.Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, defer_size="1 MB")
    except InvalidDicomError as e:
        raise DicomUnreadable(path, f"not a DICOM file: {e}") from e
    except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError, NotImplementedError) as e:
        raise DicomUnreadable(path, f"DICOM header cannot be read: {type(e).__name__}: {e}") from e
    try:
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        frames = 0
        if has_pixels:
            raw = ds.get("NumberOfFrames", 1)
            frames = int(raw) if raw not in (None, "") else 1
            frames = max(frames, 1)
        other = ds.get("OtherPatientIDs")
        if other is None:
            others: tuple[str, ...] = ()
        elif isinstance(other, str):
            others = (other.strip(),) if other.strip() else ()
        else:
            others = tuple(str(o).strip() for o in other if str(o).strip())
        return DicomIdentity(
            path=path,
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            study_date=_text(ds, "StudyDate"),
            modality=_text(ds, "Modality"),
            number_of_frames=frames,
            transfer_syntax=str(ts) if ts else "",
            transfer_syntax_name=ts.name if ts else "",
            photometric=_text(ds, "PhotometricInterpretation"),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            sop_class_uid=_text(ds, "SOPClassUID"),
            burned_in_annotation=_text(ds, "BurnedInAnnotation").upper(),
            other_patient_ids=others,
            _dataset=ds,
        )
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        raise DicomUnreadable(path, f"DICOM header has invalid values: {type(e).__name__}: {e}") from e


def _to_8bit(arr: np.ndarray, ds: Dataset, path: pathlib.Path) -> Image.Image:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype != np.uint8:
            bits = 16 if rgb.max() > 255 else 8
            rgb = (rgb.astype(np.float64) / (2 ** bits - 1) * 255).round().astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        if arr.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            arr = (arr.astype(np.float64) / (2 ** bits - 1) * 255).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.ndim != 2:
        raise DicomUnreadable(path, f"unexpected frame shape {arr.shape}")
    if arr.dtype == np.uint8 and photometric != "MONOCHROME1" and "WindowCenter" not in ds:
        return Image.fromarray(np.ascontiguousarray(arr), "L")
    values = arr
    if arr.dtype != np.uint8 or "WindowCenter" in ds:
        values = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_voi_lut(values, ds, index=0)
    values = values.astype(np.float64)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi > lo:
        out = (values - lo) / (hi - lo) * 255
    else:
        out = np.zeros_like(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8), "L")


def _decode_frame(path: pathlib.Path, ds: Dataset, index: int, n_frames: int) -> Image.Image:
    from pydicom.pixels import pixel_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pixel_array(ds, index=index if n_frames > 1 else None)
            if n_frames == 1 and arr.ndim >= 3 and arr.shape[-1] != 3:
                arr = arr[0]
            return _to_8bit(arr, ds, path)
    except DicomUnreadable:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise anything (RuntimeError, ValueError, ...)
        raise DicomUnreadable(path, f"frame {index} does not decode: {type(e).__name__}: {e}") from e


# -- DICOMDIR -------------------------------------------------------------------------


def _find_case_insensitive(root: pathlib.Path, parts: list[str]) -> pathlib.Path | None:
    cur = root
    for part in parts:
        exact = cur / part
        if exact.exists():
            cur = exact
            continue
        try:
            match = [p for p in cur.iterdir() if p.name.lower() == part.lower()]
        except OSError:
            return None
        if len(match) != 1:
            return None
        cur = match[0]
    return cur


def read_dicomdir(path: pathlib.Path) -> list[pathlib.Path]:
    """The files a DICOMDIR references, in record order, resolved inside its folder.

    Raises :class:`DicomUnreadable` when the DICOMDIR cannot be read, references
    a file outside its own folder (an unsafe path, R8), or references a file that
    does not exist: every referenced image must be read (R3), so a missing one
    refuses rather than shrinks the series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = pathlib.Path(path)
    root = path.parent.resolve()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError, AttributeError) as e:
        raise DicomUnreadable(path, f"DICOMDIR cannot be read: {type(e).__name__}: {e}") from e
    records = ds.get("DirectoryRecordSequence")
    if records is None:
        raise DicomUnreadable(path, "not a DICOMDIR: no DirectoryRecordSequence")
    out: list[pathlib.Path] = []
    seen: set[pathlib.Path] = set()
    for rec in records:
        ref = rec.get("ReferencedFileID")
        if ref is None:
            continue
        parts = [str(ref)] if isinstance(ref, str) else [str(p) for p in ref]
        parts = [p for p in (x.strip() for x in parts) if p]
        if not parts or any(p in ("..", ".") or "/" in p or "\\" in p for p in parts):
            raise DicomUnreadable(path, f"unsafe referenced file id {parts!r}")
        target = _find_case_insensitive(root, parts)
        if target is None:
            raise DicomUnreadable(path, f"referenced file {'/'.join(parts)} does not exist")
        resolved = target.resolve()
        if root not in resolved.parents:
            raise DicomUnreadable(path, f"referenced file {'/'.join(parts)} is outside the DICOMDIR's folder")
        if resolved not in seen:
            seen.add(resolved)
            out.append(target)
    return out


# -- readings -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DicomReading(Reading):
    """A :class:`Reading` with the frame it was read on (0 for the header)."""

    frame: int = 0


@dataclasses.dataclass(frozen=True)
class DicomReadings:
    identity: DicomIdentity
    readings: tuple[DicomReading, ...]
    frames_ocr: tuple[int, ...]  # frames that were OCR'd
    frames_carried: tuple[int, ...]  # frames whose text region equals an OCR'd frame's
    frames_unread: tuple[int, ...]  # frames neither OCR'd nor proven identical: refuse


def _same_region(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    m = 4
    crop = (max(0, x - m), max(0, y - m), min(a.width, x + w + m), min(a.height, y + h + m))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        return False
    pa = np.asarray(a.convert("L").crop(crop), dtype=np.int16)
    pb = np.asarray(b.convert("L").crop(crop), dtype=np.int16)
    if pa.shape != pb.shape:
        return False
    if float(np.abs(pa - pb).mean()) >= SAME_MEAN_ABS:
        return False
    return float(((pa > 128) != (pb > 128)).mean()) < SAME_BINARY_FRACTION


def read_dicom_identity(path: pathlib.Path, *, max_ocr_frames: int = MAX_OCR_FRAMES,
                        budget_s: float = 1.5) -> DicomReadings:
    """Header and overlay readings of one DICOM file, with which frames were covered how.

    ``budget_s`` is the OCR budget per OCR'd frame. Raises :class:`DicomUnreadable`
    when the header or any frame cannot be read.
    """
    from bildsluss_common.readers.ocr import read_overlay

    ident = read_dicom(path)
    readings: list[DicomReading] = []
    if ident.patient_id:
        readings.append(DicomReading(text=ident.patient_id, method=Method.DICOM_HEADER, frame=0))
    ocr_frames: list[int] = []
    carried: list[int] = []
    unread: list[int] = []
    ref_img: Image.Image | None = None
    ref_readings: list[Reading] = []
    for i in range(ident.number_of_frames):
        img = ident.frame(i)
        if ref_img is not None and ref_readings and img.size == ref_img.size and all(
            _same_region(ref_img, img, r.position) for r in ref_readings
        ):
            carried.append(i)
            readings.extend(DicomReading(r.text, r.method, r.symbology, r.position, frame=i) for r in ref_readings)
            continue
        if len(ocr_frames) >= max_ocr_frames:
            unread.append(i)
            continue
        found = read_overlay(img, budget_s=budget_s)
        ocr_frames.append(i)
        ref_img, ref_readings = img, found
        readings.extend(DicomReading(r.text, r.method, r.symbology, r.position, frame=i) for r in found)
    return DicomReadings(ident, tuple(readings), tuple(ocr_frames), tuple(carried), tuple(unread))


def dicom_readings(path: pathlib.Path) -> list[Reading]:
    """Header reading (method DICOM_HEADER, text = PatientID) and overlay readings
    (method OCR) of every frame, as :class:`DicomReading` values carrying ``frame``.

    A frame without a reading shows no number (or was not read: see
    :func:`read_dicom_identity` for which). Raises :class:`DicomUnreadable`.
    """
    return list(read_dicom_identity(path).readings)
