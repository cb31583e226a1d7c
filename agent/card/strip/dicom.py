"""Strip stage for DICOM: a whitelisted, de-identified copy with untouched pixel data (R7).

``strip_dicom(media, spool_dir)`` reads the card's file once (checking it
against the scan's SHA-256), builds a NEW dataset that holds only the elements
on the whitelist below, writes it into the spool (0600, fsynced), re-reads the
written bytes and verifies them. Everything not on the whitelist is dropped:
patient, study, series, equipment (manufacturer, model, serial, station,
software), institution, operator and physician names, every date and time,
private tags, overlays (60xx), curves (50xx), icon images, referenced
instances, acquisition context, free text, the original UIDs and the
original's 128-byte preamble (which may hold a TIFF header or anything else).

What is KEPT, and why (nothing else is ever written; no text VR is on the list):

===================================  ======================================================
element                              why
===================================  ======================================================
File Meta (0002): version,           regenerated, not copied: Media Storage SOP Class =
Media Storage SOP Class/Instance,    SOPClassUID, Media Storage SOP Instance = the new
Transfer Syntax, Implementation      SOPInstanceUID, Implementation Class UID / Version
Class UID + Version Name             Name are pydicom's; Source AE title etc. dropped
SOPClassUID                          what the object is; viewers pick the IOD from it
SOPInstanceUID                       NEW, never the original (see "UIDs" below)
Modality                             US/CT/...: viewers choose display defaults by it
SamplesPerPixel, Photometric-        the Image Pixel module: without them the pixel bytes
Interpretation, PlanarConfiguration, cannot be decoded
Rows, Columns, BitsAllocated,
BitsStored, HighBit,
PixelRepresentation, NumberOfFrames
FrameIncrementPointer                cine: which element times the frames; kept only when
                                     every element it points to is kept (FrameTime or
                                     FrameTimeVector), else dropped rather than dangling
FrameTime, FrameTimeVector,          cine playback speed (numbers)
RecommendedDisplayFrameRate
Red/Green/Blue/Alpha Palette Color   PALETTE COLOR images are meaningless without their
LUT Descriptor, Data, Segmented Data LUTs (incl. segmented LUTs, e.g. ALOKA); the LUT UID
                                     is dropped (it identifies nothing needed)
RescaleSlope, RescaleIntercept       map stored values to real values
WindowCenter, WindowWidth,           the default display window; the window *explanation*
VOILUTFunction, VOILUTSequence       (free text) and LUTExplanation are dropped; VOI LUT
(items: LUTDescriptor, LUTData)      items keep only descriptor + data
PresentationLUTShape                 IDENTITY/INVERSE: grey-scale polarity
PixelPaddingValue/RangeLimit         which stored values are padding (not tissue)
ICCProfile, ColorSpace               colour fidelity; the same policy as the JPEG/PNG
                                     strip, which keeps the ICC profile
PixelSpacing, PixelAspectRatio       geometry: non-square pixels and measurements
LossyImageCompression, ...Ratio,     clinically required disclosure that the image was
...Method                            lossy-compressed (and how much)
BurnedInAnnotation,                  disclosure that the pixels carry text / recognisable
RecognizableVisualFeatures           features (true here: see below)
SequenceOfUltrasoundRegions          measurement calibration (distances, velocities in the
(items: the numeric calibration      image); items keep only numbers: region location,
fields only)                         spatial format, data type, flags, reference pixel,
                                     physical units/values/deltas, transducer frequency,
                                     PRF, Doppler correction/steering angle, Doppler sample
                                     volume and TM-line positions, pixel-component
                                     organisation/mask/range/units/type and the break-
                                     point/value tables; TransducerType (text) dropped
PixelData (or Float/DoubleFloat-     the image: the element's value is copied BYTE FOR BYTE
PixelData), ExtendedOffsetTable(+    (native or encapsulated, every fragment and the basic
Lengths)                             offset table as they were); the extended offset table
                                     is needed to find the frames of some encapsulated data
===================================  ======================================================

Not kept on purpose: ImageType (may carry vendor words), UltrasoundColorDataPresent,
Enhanced multi-frame functional groups (Enhanced US/CT/MR: their per-frame
pixel measures and rescale are dropped; our ultrasound machines export the
classic US IODs), Modality LUT Sequence (its type is free text; not used by US),
SpecificCharacterSet (no kept element holds text), group lengths.

**Burned-in text stays.** Ultrasound machines burn the patient's name, number
and the examination date into every image (R3). That overlay is part of the
image, the identify stage reads it, and the archive stores the record as it was
captured: R7 removes *metadata*, it never touches pixels. De-identifying pixels
is only for teaching copies (R20), which are made from the archived original.
BurnedInAnnotation is kept as the device set it (often absent or even wrong).

**Transfer syntax** (the pixel element's value must stay byte-identical):

* encapsulated (JPEG, JPEG-LS, JPEG 2000, RLE, ...): kept as it is;
* Explicit VR Little Endian: kept; Implicit VR Little Endian and Deflated
  Explicit VR Little Endian: written as Explicit VR Little Endian (same byte
  order, so the native pixel bytes do not change; explicit VRs make the copy
  unambiguous to parse). Should pydicom be unable to write a value explicitly
  (e.g. a US-valued LUT over 64 KiB), the original syntax is kept;
* Explicit VR Big Endian (retired since 2004, ExplVR_BigEnd.dcm): written as
  Explicit VR Little Endian only when every kept binary element is OB
  (8-bit pixel data, no OW LUTs): OB bytes are a byte stream, identical in both
  byte orders, and all numeric elements are re-encoded by value. Any OW/OF/OD/
  OL/OV element (16-bit pixels, LUT data) would have to be byte-swapped, so
  such files keep Big Endian and stay byte-identical.

**UIDs.** The new SOPInstanceUID is ``generate_uid(entropy_srcs=[...])`` over a
fixed label and the original file's SHA-256: unique per original, but
deterministic, so the same card stripped again (after a crash or a pulled
card) gives byte-identical copies and keeps its ingest session
(``pipeline.session_id_for``). It cannot be traced back to any original UID.
Study/series UIDs are not written at all; the archive's case groups the images.

**Verification** (each failure a ``StageError`` STRIP_FAILED with what failed):
the original must decode (pydicom pixel decoder; e.g. the corpus's malformed
12-bit ``JPEG-lossy.dcm`` fails here); the written bytes are re-read and must
have a zero preamble; file meta only the regenerated elements; every element,
recursively into sequence items, on the whitelist for its level; no private
tag; no text VR (only CS/DS/IS/UI and binary/numeric VRs; CS values in the CS
alphabet, DS/IS numbers); the named identity elements (PatientName, PatientID,
dates, InstitutionName, DeviceSerialNumber, ...) absent; every UID one of
SOP class / new instance / transfer syntax / implementation; every whitelisted
element of the original present with the same value; the pixel element's value
byte-identical and nothing after it in the file; the decoded frames identical
(all frames when the decoded volume is at most ``FULL_DECODE_LIMIT`` bytes,
else the first, middle and last: the raw bytes are already proven identical)
and, for PALETTE COLOR, frame 0 after applying the palette identical.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pathlib
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    generate_uid,
)

from agent.card.model import MediaFile, StageError, StrippedFile
from agent.card.strip.dicom_bounds import (
    MAX_BYTES,
    NATIVE_LE,
    PIXEL_TAGS,
    declared_size_problem,
    inflated_size_problem,
)
from agent.card.reasons import Reason

log = logging.getLogger(__name__)

#: Decoded volume (bytes) up to which every frame of original and copy is decoded
#: and compared; above it the first, middle and last frame are.
FULL_DECODE_LIMIT = 64 * 1024 * 1024
#: Fixed label mixed into the new SOPInstanceUID (change it and every copy changes).
UID_LABEL = "bildsluss/strip-dicom/v1"


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - a typo in the lists below
        raise KeyError(keyword)
    return int(tag)


def _tags(*keywords: str) -> frozenset[int]:
    return frozenset(_tag(kw) for kw in keywords)



#: Top-level whitelist (the table in the module docstring).
KEEP = _tags(
    "SOPClassUID", "SOPInstanceUID", "Modality",
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames",
    "FrameIncrementPointer", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelSpacing", "PixelAspectRatio",
    "PixelPaddingValue", "PixelPaddingRangeLimit",
    "FrameTime", "FrameTimeVector", "RecommendedDisplayFrameRate",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "SegmentedAlphaPaletteColorLookupTableData",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "VOILUTSequence", "PresentationLUTShape", "ICCProfile", "ColorSpace",
    "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
    "BurnedInAnnotation", "RecognizableVisualFeatures",
    "SequenceOfUltrasoundRegions",
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
) | PIXEL_TAGS

#: Whitelists of the items of the kept sequences.
ITEM_KEEP: Mapping[int, frozenset[int]] = {
    _tag("SequenceOfUltrasoundRegions"): _tags(
        "RegionSpatialFormat", "RegionDataType", "RegionFlags",
        "RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1",
        "ReferencePixelX0", "ReferencePixelY0", "PhysicalUnitsXDirection",
        "PhysicalUnitsYDirection", "ReferencePixelPhysicalValueX", "ReferencePixelPhysicalValueY",
        "PhysicalDeltaX", "PhysicalDeltaY", "TransducerFrequency", "PulseRepetitionFrequency",
        "DopplerCorrectionAngle", "SteeringAngle",
        "DopplerSampleVolumeXPosition", "DopplerSampleVolumeYPosition",
        "DopplerSampleVolumeXPositionRetired", "DopplerSampleVolumeYPositionRetired",
        "TMLinePositionX0", "TMLinePositionY0", "TMLinePositionX1", "TMLinePositionY1",
        "TMLinePositionX0Retired", "TMLinePositionY0Retired", "TMLinePositionX1Retired",
        "TMLinePositionY1Retired",
        "PixelComponentOrganization", "PixelComponentMask", "PixelComponentRangeStart",
        "PixelComponentRangeStop", "PixelComponentPhysicalUnits", "PixelComponentDataType",
        "NumberOfTableBreakPoints", "TableOfXBreakPoints", "TableOfYBreakPoints",
        "NumberOfTableEntries", "TableOfPixelValues", "TableOfParameterValues",
    ),
    _tag("VOILUTSequence"): _tags("LUTDescriptor", "LUTData"),
}

META_KEEP = _tags(
    "FileMetaInformationGroupLength", "FileMetaInformationVersion", "MediaStorageSOPClassUID",
    "MediaStorageSOPInstanceUID", "TransferSyntaxUID", "ImplementationClassUID",
    "ImplementationVersionName",
)

#: Named in the verification on top of the whitelist (belt and braces, and a
#: clear detail should one ever be found).
IDENTIFYING = _tags(
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "PatientBirthDate",
    "PatientSex", "PatientAge", "PatientAddress", "IssuerOfPatientID",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationDate",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "AccessionNumber",
    "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "StudyDescription", "SeriesDescription", "ImageComments", "IconImageSequence",
)

_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
# Only coded strings, numbers as text, UIDs, numbers, binary and sequences may be written.
_ALLOWED_VRS = {"CS", "DS", "IS", "UI", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT",
                "SQ", "OB", "OW", "OF", "OD", "OL", "OV"}
_CS_VALUE = re.compile(r"[A-Z0-9 _]{0,16}")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _fail(media: MediaFile, what: str) -> StageError:
    return StageError(Reason.STRIP_FAILED, f"{media.relative_path}: {what}")


def _name(tag: int) -> str:
    kw = keyword_for_tag(tag)
    return kw or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --- reading the card ----------------------------------------------------------------


def _read_card(media: MediaFile) -> bytes:
    """The card's bytes, checked against the scan's SHA-256 (CARD_CHANGED if not)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(media.path, flags)
    except FileNotFoundError:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: file is gone") from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_BYTES:
            raise _fail(media, f"DICOM file of {size} bytes is larger than the "
                               f"{MAX_BYTES} bytes this agent strips")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if hashlib.sha256(data).hexdigest() != media.sha256:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: content changed since the scan")
    return data


# --- building the copy ---------------------------------------------------------------


def new_instance_uid(sha256: str) -> UID:
    """The copy's SOPInstanceUID: deterministic for the original's bytes, not traceable."""
    return generate_uid(entropy_srcs=[UID_LABEL, sha256])


def _copy_item(item: Dataset, keep: frozenset[int]) -> Dataset:
    out = Dataset()
    for tag in sorted(int(t) for t in item.keys()):
        if tag in keep:
            elem = item[tag]
            out.add(DataElement(elem.tag, elem.VR, elem.value))
    return out


def _whitelisted(src: Dataset, instance_uid: UID) -> tuple[Dataset, list[str]]:
    """A new dataset with the whitelisted elements of ``src``; also what was dropped
    on purpose although whitelisted (for the log)."""
    out = Dataset()
    notes: list[str] = []
    for tag in sorted(int(t) for t in src.keys()):
        if tag not in KEEP:
            continue
        elem = src[tag]
        if tag in ITEM_KEEP:
            if elem.VR != "SQ" or elem.value is None:
                continue
            out.add(DataElement(elem.tag, "SQ",
                                Sequence([_copy_item(i, ITEM_KEEP[tag]) for i in elem.value])))
        else:
            out.add(DataElement(elem.tag, elem.VR, elem.value))
    out.SOPInstanceUID = instance_uid
    if "FrameIncrementPointer" in out:
        targets = out.FrameIncrementPointer
        targets = list(targets) if isinstance(targets, (list, tuple, MultiValue)) else [targets]
        missing = [t for t in targets if int(t) not in out]
        if missing:
            del out.FrameIncrementPointer
            notes.append("FrameIncrementPointer dropped: points to "
                         + ", ".join(_name(int(t)) for t in missing))
    return out, notes


def _output_syntax(src_syntax: UID, ds: Dataset) -> UID:
    if src_syntax in NATIVE_LE:
        return ExplicitVRLittleEndian
    if src_syntax == ExplicitVRBigEndian:
        binary = [e for e in ds.iterall() if e.VR in _BINARY_VRS or e.VR in ("OB or OW", "US or OW")]
        if all(e.VR == "OB" for e in binary):
            return ExplicitVRLittleEndian
    return src_syntax


def _encode(ds: Dataset, syntax: UID, sop_class: UID, instance_uid: UID) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# --- verification --------------------------------------------------------------------


def _values(elem: DataElement) -> list[Any]:
    """The element's values; empty ones (a type 2 element left blank) left out."""
    v = elem.value
    values = list(v) if isinstance(v, (list, tuple, MultiValue)) else [v]
    return [x for x in values if x is not None and str(x) != ""]


def _level_problems(ds: Dataset, keep: frozenset[int], where: str, allowed_uids: set[str]) -> list[str]:
    problems = []
    for elem in ds:
        tag = int(elem.tag)
        name = f"{where}{_name(tag)}"
        if elem.tag.is_private:
            problems.append(f"private tag {name}")
            continue
        if tag not in keep:
            problems.append(f"{name} is not on the whitelist")
            continue
        if tag in IDENTIFYING:
            problems.append(f"identifying element {name}")
        if elem.VR not in _ALLOWED_VRS:
            problems.append(f"{name} has VR {elem.VR}")
            continue
        if elem.VR == "SQ":
            item_keep = ITEM_KEEP.get(tag, frozenset())
            for n, item in enumerate(elem.value or ()):
                problems += _level_problems(item, item_keep, f"{name}[{n}].", allowed_uids)
        elif elem.VR == "CS":
            bad = [v for v in _values(elem) if not _CS_VALUE.fullmatch(str(v))]
            if bad:
                problems.append(f"{name} holds a value that is not a code: {bad[0]!r}")
        elif elem.VR in ("DS", "IS"):
            bad = [v for v in _values(elem) if not _NUMBER.fullmatch(str(v))]
            if bad:
                problems.append(f"{name} holds a value that is not a number: {bad[0]!r}")
        elif elem.VR == "UI":
            bad = [v for v in _values(elem) if str(v) not in allowed_uids]
            if bad:
                problems.append(f"{name} holds a UID that is not the new instance's or the class's")
    return problems


def _same_value(a: DataElement, b: DataElement) -> bool:
    if a.VR == "SQ":
        return False  # sequences are compared item by item by the caller
    return bool(a.value == b.value)


def verify_copy(src: Dataset, written: bytes, *, instance_uid: UID,
                syntax: UID) -> tuple[Dataset, list[str]]:
    """Re-read ``written`` and list every way it is not a faithful whitelisted copy
    of ``src`` (pixels are compared by the caller). Returns the re-read dataset."""
    problems: list[str] = []
    if written[:128] != b"\x00" * 128 or written[128:132] != b"DICM":
        problems.append("preamble is not empty")
    out = pydicom.dcmread(io.BytesIO(written))
    meta = out.file_meta
    sop_class = src.get("SOPClassUID")
    for elem in meta:
        if int(elem.tag) not in META_KEEP:
            problems.append(f"file meta element {_name(int(elem.tag))}")
    if meta.get("TransferSyntaxUID") != syntax:
        problems.append(f"transfer syntax is {meta.get('TransferSyntaxUID')}, not {syntax}")
    if meta.get("MediaStorageSOPClassUID") != sop_class or out.get("SOPClassUID") != sop_class:
        problems.append("SOP class changed")
    if meta.get("MediaStorageSOPInstanceUID") != instance_uid or out.get("SOPInstanceUID") != instance_uid:
        problems.append("SOP instance UID is not the new one")
    if instance_uid == src.get("SOPInstanceUID"):
        problems.append("SOP instance UID is the original's")
    allowed_uids = {str(sop_class), str(instance_uid)}
    problems += _level_problems(out, KEEP, "", allowed_uids)
    for tag in IDENTIFYING:
        if tag in out:
            problems.append(f"{_name(tag)} present")
    # Completeness: every whitelisted element of the original, with its value.
    for tag in sorted(int(t) for t in src.keys()):
        if tag not in KEEP or tag in (_tag("SOPInstanceUID"), _tag("FrameIncrementPointer")):
            continue
        a = src[tag]
        if tag not in out:
            problems.append(f"{_name(tag)} of the original was not kept")
            continue
        b = out[tag]
        if tag in ITEM_KEEP:
            items_a, items_b = list(a.value or ()), list(b.value or ())
            if len(items_a) != len(items_b):
                problems.append(f"{_name(tag)}: {len(items_b)} items, not {len(items_a)}")
                continue
            for n, (ia, ib) in enumerate(zip(items_a, items_b)):
                for t in ITEM_KEEP[tag]:
                    if t in ia and (t not in ib or not _same_value(ia[t], ib[t])):
                        problems.append(f"{_name(tag)}[{n}].{_name(t)} not kept as it was")
        elif not _same_value(a, b):
            problems.append(f"{_name(tag)} differs from the original")
    # The pixel element: byte-identical value, and it ends the file.
    pixel_tags = [t for t in PIXEL_TAGS if t in src]
    if len(pixel_tags) != 1:
        problems.append("not exactly one pixel data element")
    else:
        tag = pixel_tags[0]
        original, copy = src[tag].value, out.get(tag)
        copy = copy.value if copy is not None else None
        if copy != original:
            problems.append(f"{_name(tag)} bytes differ from the original")
        elif not written.endswith(original) and not written.endswith(original + _SEQ_DELIMITER):
            problems.append(f"bytes after {_name(tag)}")
    return out, problems


def _frame_indices(ds: Dataset) -> list[int] | None:
    """None: decode every frame; else which frames."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                 * max(1, (int(ds.BitsAllocated) + 7) // 8))
    if frames <= 1 or frames * per_frame <= FULL_DECODE_LIMIT:
        return None
    return sorted({0, frames // 2, frames - 1})


def _frames(ds: Dataset, indices: Iterable[int] | None) -> Iterable[np.ndarray]:
    from pydicom.pixels import iter_pixels

    return iter_pixels(ds, indices=indices, raw=True)


def _pixel_problems(src: Dataset, out: Dataset) -> list[str]:
    from pydicom.pixels import apply_color_lut

    indices = _frame_indices(src)
    n = 0
    first: np.ndarray | None = None
    for a, b in zip(_frames(src, indices), _frames(out, indices), strict=True):
        if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b):
            return [f"decoded frame {n if indices is None else indices[n]} differs from the original"]
        if first is None:
            first = a
        n += 1
    if n == 0:
        return ["no frame decoded"]
    segmented = any(f"Segmented{c}PaletteColorLookupTableData" in src for c in ("Red", "Green", "Blue"))
    # A segmented LUT is not expanded here: pydicom expands nested indirect segments
    # without a bound (each level multiplies the size), and its bytes are already
    # proven identical by verify_copy, so the applied palettes cannot differ.
    if (str(src.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR" and first is not None
            and not segmented):
        if not np.array_equal(apply_color_lut(first, src), apply_color_lut(first, out)):
            return ["palette colours differ from the original"]
    return []


# --- the stage -----------------------------------------------------------------------


def deidentify(data: bytes, sha256: str) -> tuple[bytes, UID, list[str]]:
    """The whitelisted copy of the DICOM file ``data`` (whose SHA-256 is ``sha256``).

    Returns (copy's bytes, transfer syntax written, notes). Raises ValueError
    with a clear text when the original cannot be used, RuntimeError when the
    copy fails its verification.
    """
    inflated = inflated_size_problem(data)
    if inflated:
        raise ValueError(f"not read: {inflated}")
    try:
        src = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad data
        raise ValueError(f"not readable as DICOM: {type(exc).__name__}: {exc}") from None
    src_syntax = src.file_meta.get("TransferSyntaxUID") if hasattr(src, "file_meta") else None
    if not src_syntax:
        raise ValueError("DICOM file without a transfer syntax in its file meta")
    if not isinstance(src_syntax, str):  # e.g. re-typed US in explicit VR: a list of numbers
        raise ValueError(f"DICOM file meta's transfer syntax is not one UID: {src_syntax!r:.80}")
    src_syntax = UID(src_syntax)
    if not [t for t in PIXEL_TAGS if t in src]:
        raise ValueError("DICOM without pixel data (not an image)")
    if "SOPClassUID" not in src:
        raise ValueError("DICOM without a SOP class")
    too_big = declared_size_problem(src, UID(src_syntax))
    if too_big:
        raise ValueError(f"pixel data refused before decoding: {too_big}")
    try:  # the original must decode: what cannot be shown is not archived
        first = next(iter(_frames(src, [0])))
        del first
    except Exception as exc:  # noqa: BLE001 - any decoder failure refuses
        why = " ".join(str(exc).split())  # pydicom's plugin report spans several lines
        raise ValueError(f"pixel data cannot be decoded ({src_syntax.name}): "
                         f"{type(exc).__name__}: {why}") from None
    instance_uid = new_instance_uid(sha256)
    copy, notes = _whitelisted(src, instance_uid)
    syntax = _output_syntax(UID(src_syntax), copy)
    try:
        written = _encode(copy, syntax, src.SOPClassUID, instance_uid)
    except Exception as exc:  # noqa: BLE001
        if syntax == src_syntax:
            raise RuntimeError(f"pydicom cannot write the copy: {type(exc).__name__}: {exc}") from None
        notes.append(f"kept {src_syntax.name}: {exc}")
        syntax = UID(src_syntax)
        copy, _ = _whitelisted(src, instance_uid)
        written = _encode(copy, syntax, src.SOPClassUID, instance_uid)
    out, problems = verify_copy(src, written, instance_uid=instance_uid, syntax=syntax)
    if problems:
        raise RuntimeError("; ".join(problems[:8]))
    try:
        problems = _pixel_problems(src, out)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"decoding the copy failed: {type(exc).__name__}: {exc}") from None
    if problems:
        raise RuntimeError("; ".join(problems))
    return written, syntax, notes


def _write_spool(path: pathlib.Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def strip_dicom(media: MediaFile, spool_dir: pathlib.Path) -> StrippedFile:
    """Write a verified, whitelisted copy of the DICOM file ``media`` into ``spool_dir``.

    STRIP_FAILED for files that cannot be read or decoded and for any copy that
    fails verification; CARD_CHANGED when the card's bytes are not the scanned
    ones. Nothing is left in the spool on error; the card is only read.
    """
    spool_dir = pathlib.Path(spool_dir)
    data = _read_card(media)
    try:
        written, syntax, notes = deidentify(data, media.sha256)
    except ValueError as exc:
        raise _fail(media, str(exc)) from None
    except RuntimeError as exc:
        raise _fail(media, f"stripped DICOM copy failed verification: {exc}") from None
    del data
    out = spool_dir / f"{uuid.uuid4().hex}.dcm"
    try:
        _write_spool(out, written)
        if out.read_bytes() != written:
            raise _fail(media, "the spool copy does not read back as written")
        dir_fd = os.open(spool_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if notes:
        log.info("dicom stripped with notes", extra={"file": media.relative_path, "notes": notes})
    log.debug("dicom stripped", extra={"file": media.relative_path, "syntax": str(syntax)})
    return StrippedFile(source=media, spool_path=out, sha256=hashlib.sha256(written).hexdigest(),
                        size=len(written))
