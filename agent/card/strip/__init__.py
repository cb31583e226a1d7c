"""Strip stage: a metadata-free, losslessly identical copy of each media file (R7).

:func:`strip_all` never touches the card. For each file it reads the card's
bytes (checking them against the scan's SHA-256, so what is stripped is
exactly what was scanned), writes a stripped copy into the spool (mode 0600)
and checks it; then one exiftool call reads every copy back against an
allow-list; then the copies are fsynced. The first failure removes what the
call wrote and raises. docs/media.md has the per-format table and figures.

JPEG is rewritten here (:func:`rewrite_jpeg`), not by exiftool: SOI, a plain
JFIF header without thumbnail (when the original had JFIF), a minimal EXIF
block holding only Orientation, the ICC profile and the Adobe APP14 segment
verbatim, then the first image's tables, frame headers, scans and restart
markers byte for byte, then EOI. Everything else goes: EXIF (all IFDs incl.
the IFD1 thumbnail), GPS, maker notes, XMP (incl. extended), IPTC, Photoshop
IRB, COM, JFXX thumbnails, MPF and the images behind it (MPO), FlashPix,
vendor APPn segments (GoPro, FLIR, Samsung, Google…) and every trailer after
the first EOI. Unknown markers refuse the file. Kept on purpose:

* the **ICC profile**, for clinical colour fidelity;
* the **Adobe APP14** segment: its transform flag decides the decoder's
  colour conversion (four numbers, nothing identifying);
* the **Orientation** tag. R7 allows "applied or kept"; we *keep* it because
  applying it means re-encoding (lossy) or a lossless rotation that fails for
  sizes not a multiple of the MCU, and either would change the entropy-coded
  data the losslessness check pins down. Viewers and Pillow's
  ``ImageOps.exif_transpose`` honour it.

Verification, each failure a :class:`StageError` ``STRIP_FAILED`` naming what:

1. exiftool reads every copy back (``-a -u -ee``; ``-fast`` for JPEG, whose
   end is proven by step 2) in one batch through the stay-open process, and
   :func:`forbidden_tags` allows only: File/ExifTool/ICC_Profile/Adobe/JFIF
   groups, in EXIF only IFD0's Orientation and resolution tags (TIFF: plus
   its image-structure tags), the structure tags of PNG, QuickTime, RIFF,
   MPEG audio and M2TS, and a few Composite values; any tag named like GPS,
   make, model, serial, thumbnail, preview, comment, owner, location… is
   forbidden wherever it appears, and so is any date that is not zero.
2. JPEG: the copy is taken apart again on its own (:func:`jpeg_structure_problems`:
   only SOI, JFIF without thumbnail, one EXIF, ICC, Adobe, tables, frames,
   scans, EOI and nothing after it), and its image data (tables, frame
   headers, restart intervals, every scan with its entropy-coded data, the
   Adobe segment) is byte-identical to the original's first image, which
   proves the decode identical without spending two full decodes on it (the
   tests compare decoded pixels independently). The orientation read back is
   the original's.
   PNG/TIFF (exiftool ``-all=``, ICC kept, Orientation copied back): PNG keeps
   only image and colour chunks with IHDR/PLTE/tRNS and the IDAT stream
   byte-identical; Pillow decodes original and copy to identical pixels and
   ICC profile. A TIFF exiftool cannot clean (thumbnail IFD, GeoTIFF keys,
   private IFDs) is refused, not guessed.
3. Video and audio (MP4/MOV/M4A, AVI, MPEG-TS/AVCHD, MP3): ffmpeg remuxes
   only the audio and video streams (:func:`_remux`: no metadata, chapters,
   timed-metadata/GPS/telemetry/timecode tracks, subtitles or cover art;
   ``+bitexact`` zeroes the container dates and drops the encoder name;
   ``-c copy``, never re-encoded), and ffmpeg's per-packet SHA-256 of every
   kept stream is identical in original and copy. What is *inside* the
   encoded streams stays: a camcorder's H.264 SEI user data (AVCHD MDPM:
   make, model, GPS, dates) is found by the ``-ee`` read-back and refuses
   the file.
4. WAV (:func:`strip_wav`): only ``fmt ``, ``fact`` (non-PCM) and ``data``,
   each byte-identical (re-parsed, hashed, ffmpeg stream hash); LIST/INFO,
   ``bext``, ``iXML``, ID3, XMP, cues and trailing bytes go. Refused: RF64/BW64,
   truncated files, missing or repeated ``fmt ``/``data``, malformed ``fmt ``.
5. DICOM: :mod:`agent.card.strip.dicom` writes a new dataset from a whitelist
   (pixel data byte-identical, new SOPInstanceUID, no patient/study/device/
   date/private elements) and verifies it with pydicom against that list;
   the exiftool read-back then refuses any patient, study, series, person,
   place, manufacturer, time, private or unknown element it finds.

HEIC/HEIF is not accepted (the scan refuses it; see docs/media.md for the
measurements behind that decision). Stripping a HEIF copy raises STRIP_FAILED
as a backstop.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import pathlib
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from PIL import Image

from agent.card import metadata as md
from agent.card.metadata import MetadataReader
from agent.card.model import MediaFile, StageError, StrippedFile
from agent.card.reasons import Reason

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
FFMPEG_TIMEOUT_S = 600

_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/tiff": ".tif",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "audio/mp4": ".m4a",
    "video/x-msvideo": ".avi", "video/mp2t": ".mts", "audio/mpeg": ".mp3",
}
_QUICKTIME = {"video/mp4", "video/quicktime", "audio/mp4"}

#: exiftool arguments for the formats exiftool rewrites (PNG, TIFF). JPEG is
#: rewritten by :func:`rewrite_jpeg`; video and audio are remuxed by ffmpeg.
_STRIP_ARGS: dict[str, tuple[str, ...]] = {
    "image/png": ("-all=", "--icc_profile:all", "-tagsFromFile", "@", "-IFD0:Orientation"),
    "image/tiff": ("-all=", "--icc_profile:all",
                   *(f"-IFD0:{t}=" for t in ("Make", "Model", "Software", "Artist", "Copyright",
                                              "ImageDescription", "ModifyDate", "HostComputer",
                                              "DocumentName", "PageName", "DateTime"))),
}

#: Video and audio remuxed by ffmpeg: (demuxer of the original, muxer of the copy,
#: extra muxer options). Only audio and video streams are kept (see :func:`_remux`).
_REMUX: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "video/mp4": ("mov", "mp4", ()),
    "video/quicktime": ("mov", "mov", ()),
    "audio/mp4": ("mov", "ipod", ()),
    "video/x-msvideo": ("avi", "avi", ()),
    "video/mp2t": ("mpegts", "mpegts", ()),
    # No ID3v2 tag, no Xing/LAME header frame (it names the encoder).
    "audio/mpeg": ("mp3", "mp3", ("-id3v2_version", "0", "-write_xing", "0")),
}

_DICOM_TYPES = {"application/dicom"}
_WAV_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}

_NOT_ACCEPTED = {
    "image/heic": "HEIC/HEIF is not accepted (docs/media.md): exiftool cannot remove and prove "
                  "removed every HEIF metadata item",
}


# --- the read-back checklist ----------------------------------------------------------

_FORBIDDEN_NAME = re.compile(
    r"GPS|Location|Latitude|Longitude|Altitude|\bMake|Model|Serial|Thumbnail|Preview|JpgFromRaw|"
    r"OtherImage|CoverArt|MPImage|EmbeddedImage|Comment|Owner|Author|Artist|Creator|Copyright|"
    r"Software|Firmware|Keyword|Title|Description|Lens|UniqueID|ImageUniqueID|Person|Face|"
    r"Region|City|Country|Address|Name$",
    re.IGNORECASE,
)
# Structural fields whose names look suspicious: movie-header times of the
# poster/preview frame (numbers, not images), handler and codec descriptions.
_ALLOWED_NAMES = {"HandlerDescription", "CompressorName", "PreviewTime", "PreviewDuration",
                  "SampleGroupDescription", "CopyrightFlag",
                  "ImplementationVersionName"}  # DICOM: the writing library (pydicom), set by us
#: Groups (family 0) that hold only stream structure for a media type; within
#: them the forbidden names and dates still apply.
# None: any name that is not forbidden; a set: only those names. exiftool's
# H264 group also carries what camcorders write into the stream (MDPM: make,
# model, GPS, dates, camera settings); only the frame size may remain.
_STRUCTURE_GROUPS: dict[str, dict[str, set[str] | None]] = {
    "audio/mpeg": {"MPEG": None},
    "video/x-msvideo": {"RIFF": None},
    "audio/wav": {"RIFF": None},
    "video/mp2t": {"M2TS": None, "MPEG": None, "H264": {"ImageWidth", "ImageHeight"}},
    "application/dicom": {"DICOM": None},
}
# DICOM elements that identify a patient, a study, a place, a person or a
# device, and private or unknown elements, as exiftool names them: a second,
# independent check after strip_dicom's own whitelist (exiftool's DICOM names
# are not pydicom's keywords, so the whitelist itself is not repeated here).
_DICOM_FORBIDDEN = re.compile(
    r"Patient|Study|Series|Accession|Institution|Physician|Operator|Station|Manufacturer|"
    r"Referring|Performing|Requesting|Private|^Unknown|^[0-9A-F]{4}_[0-9A-F]{4}|Time$|UID$",
    re.IGNORECASE,
)
_DICOM_ALLOWED = {"FrameTime", "FrameTimeVector", "SOPClassUID", "SOPInstanceUID",
                  "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
                  "ImplementationClassUID", "SequenceOfUltrasoundRegions"}
_ZERO_DATE = re.compile(r"^[0: ]*$")
_EXIF_IFD0_ALWAYS = {"Orientation", "XResolution", "YResolution", "ResolutionUnit",
                     "YCbCrPositioning"}
_TIFF_STRUCTURE = {
    "SubfileType", "OldSubfileType", "ImageWidth", "ImageHeight", "BitsPerSample", "Compression",
    "PhotometricInterpretation", "FillOrder", "StripOffsets", "SamplesPerPixel", "RowsPerStrip",
    "StripByteCounts", "PlanarConfiguration", "Predictor", "TileWidth", "TileLength",
    "TileOffsets", "TileByteCounts", "ExtraSamples", "SampleFormat", "ColorMap",
    "YCbCrCoefficients", "YCbCrSubSampling", "ReferenceBlackWhite", "WhitePoint",
    "PrimaryChromaticities", "TransferFunction", "MinSampleValue", "MaxSampleValue",
    "T4Options", "T6Options", "JPEGTables", "InkSet", "Threshholding", "CellWidth", "CellLength",
}
_FILE_ALLOWED = {"FileType", "FileTypeExtension", "MIMEType", "ExifByteOrder", "ImageWidth",
                 "ImageHeight", "EncodingProcess", "BitsPerSample", "ColorComponents",
                 "YCbCrSubSampling"}
# An AVI video stream's BITMAPINFOHEADER, which exiftool shows in its File group.
_FILE_AVI_BITMAP = {"BMPVersion", "Planes", "BitDepth", "Compression", "ImageLength",
                    "PixelsPerMeterX", "PixelsPerMeterY", "NumColors", "NumImportantColors",
                    "RedMask", "GreenMask", "BlueMask", "AlphaMask", "ColorSpace"}
_COMPOSITE_ALLOWED = {"ImageSize", "Megapixels", "AvgBitrate", "Rotation", "Duration",
                      "YCbCrSubSampling"}
_ADOBE_ALLOWED = {"DCTEncodeVersion", "APP14Flags0", "APP14Flags1", "ColorTransform"}
_QUICKTIME_GROUP1 = re.compile(r"^(QuickTime|Track\d+|Video|Audio)$")


def forbidden_tags(meta: Mapping[str, Any], media_type: str) -> list[str]:
    """Every key of an exiftool ``-G0:1`` read-back that must not be in a stripped file."""
    bad = []
    for key in meta:
        if key == "SourceFile":
            continue
        parts = key.split(":")
        group0, name = parts[0], parts[-1]
        group1 = parts[1] if len(parts) == 3 else ""
        if group0 == "ICC_Profile" or group0 == "ExifTool" and name in ("ExifToolVersion",):
            continue
        if group0 == "ExifTool" and name in ("Warning", "Error"):
            continue  # exiftool's remarks, not file content (the writer checks its own)
        if group0 == "File":
            if group1 == "System" or name in _FILE_ALLOWED or (
                    media_type == "video/x-msvideo" and name in _FILE_AVI_BITMAP):
                continue
            bad.append(key)
            continue
        if group0 == "Composite":
            if name not in _COMPOSITE_ALLOWED:
                bad.append(key)
            continue
        dicom_allowed = media_type == "application/dicom" and name in _DICOM_ALLOWED
        if name not in _ALLOWED_NAMES and not dicom_allowed and _FORBIDDEN_NAME.search(name):
            bad.append(key)
            continue
        if "Date" in name and not _ZERO_DATE.match(str(meta[key])):
            bad.append(key)  # QuickTime's zeroed header dates pass; a real date does not
            continue
        if media_type == "application/dicom" and not dicom_allowed and _DICOM_FORBIDDEN.search(name):
            bad.append(key)
            continue
        structure = _STRUCTURE_GROUPS.get(media_type, {})
        if group0 in structure:
            names = structure[group0]
            if names is not None and name not in names:
                bad.append(key)
            continue
        if group0 == "EXIF":
            allowed = _EXIF_IFD0_ALWAYS | (_TIFF_STRUCTURE if media_type == "image/tiff" else set())
            if group1 != "IFD0" or name not in allowed:
                bad.append(key)
        elif group0 == "APP14" and group1 == "Adobe" and media_type == "image/jpeg":
            if name not in _ADOBE_ALLOWED:
                bad.append(key)
        elif group0 == "JFIF" and media_type == "image/jpeg":
            continue  # density only; a JFXX thumbnail is caught by its name
        elif group0 == "PNG" and media_type == "image/png":
            if name.startswith(("Text", "Modify", "Date")) or group1 not in ("PNG", ""):
                bad.append(key)
        elif group0 == "QuickTime" and media_type in _QUICKTIME:
            if not _QUICKTIME_GROUP1.match(group1 or "QuickTime"):
                bad.append(key)
        else:
            bad.append(key)
    return bad


# --- JPEG structure -------------------------------------------------------------------

_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TABLES = {0xC4, 0xCC, 0xDB, 0xDD}  # DHT, DAC, DQT, DRI


#: The end of a scan's entropy-coded data: a marker that is not a stuffed
#: zero, a restart marker or a fill byte (fill bytes are kept with the data).
_SCAN_END = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


class JpegError(ValueError):
    pass


def _jpeg_layout(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of every segment of the first image, ``start`` at
    its 0xFF, a scan's ``end`` after its entropy-coded data; the last one is EOI."""
    if not data.startswith(b"\xff\xd8"):
        raise JpegError("no SOI")
    out: list[tuple[int, int, int]] = []
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise JpegError(f"marker expected at {i}")
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 1 >= n:
            break
        start, marker = i, data[i + 1]
        i += 2
        if marker == 0xD9:
            out.append((marker, start, i))
            return out
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append((marker, start, i))
            continue
        if i + 2 > n:
            raise JpegError("truncated segment")
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2 or i + length > n:
            raise JpegError(f"bad segment length at {i}")
        i += length
        if marker == 0xDA:
            found = _SCAN_END.search(data, i)
            if found is None:
                raise JpegError("scan runs to the end of the file (no EOI)")
            i = found.start()
        out.append((marker, start, i))
    raise JpegError("no EOI")


Layout = list[tuple[int, int, int]]


def _is_image_data(marker: int) -> bool:
    return marker in _TABLES or marker in _SOF or marker in (0xDA, 0xDC, 0xEE) or 0xD0 <= marker <= 0xD7


def jpeg_image_data(data: bytes, layout: Layout | None = None) -> bytes:
    """What decides the pixels, byte for byte: tables, frame headers, scans
    (with their entropy-coded data), restart markers, DNL and the Adobe APP14
    segment, whose transform flag decides the colour conversion."""
    layout = _jpeg_layout(data) if layout is None else layout
    view = memoryview(data)  # slices without copies; join copies once
    return b"".join(view[start:end] for marker, start, end in layout if _is_image_data(marker))


def jpeg_structure_problems(data: bytes, layout: Layout | None = None) -> list[str]:
    """Segments a stripped JPEG must not hold (any APPn but minimal ones, COM, trailers)."""
    layout = _jpeg_layout(data) if layout is None else layout
    problems = []
    end = layout[-1][2]
    if end != len(data):
        problems.append(f"{len(data) - end} bytes after the end of the image")
    exif = 0
    for marker, start, stop in layout:
        payload = data[start + 4:stop] if marker >= 0xE0 else b""
        if marker == 0xE0:
            if not payload.startswith(b"JFIF\x00") or len(payload) != 14:
                problems.append("APP0 other than a plain JFIF header")
        elif marker == 0xE1:
            exif += 1
            if not payload.startswith(b"Exif\x00\x00"):
                problems.append("APP1 that is not EXIF (XMP?)")
        elif marker == 0xE2:
            if not payload.startswith(b"ICC_PROFILE\x00"):
                problems.append("APP2 that is not an ICC profile (MPF/FlashPix?)")
        elif marker == 0xEE:
            if not payload.startswith(b"Adobe"):
                problems.append("APP14 that is not Adobe")
        elif 0xE0 <= marker <= 0xEF:
            problems.append(f"APP{marker - 0xE0} segment")
        elif marker == 0xFE:
            problems.append("comment (COM) segment")
    if exif > 1:
        problems.append("more than one EXIF block")
    return problems


# --- PNG structure -------------------------------------------------------------------

_PNG_IMAGE = {b"IHDR", b"PLTE", b"tRNS"}
_PNG_ALLOWED = _PNG_IMAGE | {b"IDAT", b"IEND", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"sBIT",
                             b"pHYs", b"bKGD", b"eXIf"}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("no PNG signature")
    out, i = [], 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        out.append((kind, data[i + 8:i + 8 + length]))
        i += 12 + length
        if kind == b"IEND":
            break
    if i != len(data):
        out.append((b"trailer", data[i:]))
    return out


def _png_image_data(chunks: Sequence[tuple[bytes, bytes]]) -> tuple:
    return (tuple((k, v) for k, v in chunks if k in _PNG_IMAGE),
            b"".join(v for k, v in chunks if k == b"IDAT"))


# --- JPEG rewrite -------------------------------------------------------------------

#: Markers a stripped JPEG keeps verbatim: frames, tables, scans, restarts,
#: DNL and EOI. Any other non-APPn, non-COM marker refuses the file.
_JPEG_KEEP = _SOF | _TABLES | {0xDA, 0xDC, 0xD9} | set(range(0xD0, 0xD8))
_ORIENTATION_TAG = 0x0112


def _exif_orientation(payload: bytes) -> int | None:
    """IFD0 Orientation of an APP1 EXIF payload (after ``Exif\0\0``), or None."""
    tiff = payload[6:]
    if tiff[:4] not in (b"II*\x00", b"MM\x00*") or len(tiff) < 8:
        return None
    order = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[0:2], order) == _ORIENTATION_TAG and int.from_bytes(entry[2:4], order) == 3:
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else None
    return None


def _minimal_exif(orientation: int) -> bytes:
    """An APP1 segment with a big-endian TIFF IFD0 holding only Orientation."""
    body = (b"Exif\x00\x00" + b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
            + _ORIENTATION_TAG.to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
            + orientation.to_bytes(2, "big") + b"\x00\x00" + (0).to_bytes(4, "big"))
    return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body


def rewrite_jpeg(data: bytes, layout: Layout | None = None) -> tuple[bytes, int | None]:
    """The first image of ``data`` without metadata, and its orientation.

    Written: SOI, a plain JFIF header (if the original had one; density kept,
    thumbnail dropped), a minimal EXIF block holding only Orientation (if the
    original has one), the ICC profile segments and the Adobe segment
    verbatim, then every table, frame header, scan and restart marker of the
    first image byte for byte up to its EOI. Everything else is left out:
    other APPn (EXIF, XMP, MPF, FlashPix, maker and vendor segments), COM,
    the images after the first (MPO) and anything after the EOI (trailers).
    Raises JpegError for a JPEG it cannot take apart or with markers it does
    not know.
    """
    layout = _jpeg_layout(data) if layout is None else layout
    head: list[bytes] = []
    icc: list[bytes] = []
    adobe: list[bytes] = []
    body: list[bytes | memoryview] = []
    orientation = None
    exif_seen = False
    view = memoryview(data)
    for marker, start, end in layout:
        payload = data[start + 4:end]
        if marker == 0xE0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14 and not head:
            head.append(b"\xff\xe0\x00\x10" + payload[:12] + b"\x00\x00")
        elif marker == 0xE1 and payload.startswith(b"Exif\x00\x00") and not exif_seen:
            exif_seen = True
            orientation = _exif_orientation(payload)
        elif marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
            icc.append(data[start:end])
        elif marker == 0xEE and payload.startswith(b"Adobe") and not adobe:
            adobe.append(data[start:end])
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            continue
        elif marker in _JPEG_KEEP:
            body.append(view[start:end])
        else:
            raise JpegError(f"unexpected marker 0xFF{marker:02X}")
    exif = [_minimal_exif(orientation)] if orientation else []
    return b"".join([b"\xff\xd8", *head, *exif, *icc, *adobe, *body]), orientation


# --- the stage ---------------------------------------------------------------------


def _fail(media: MediaFile, what: str) -> StageError:
    return StageError(Reason.STRIP_FAILED, f"{media.relative_path}: {what}")


@contextlib.contextmanager
def _reader(tool: MetadataReader | None) -> Iterator[MetadataReader]:
    if tool is not None:
        yield tool
        return
    with MetadataReader() as own:
        yield own


def _read_card(media: MediaFile) -> bytes:
    """The card file's bytes, checked against the scan's SHA-256."""
    try:
        fd = os.open(media.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: file is gone") from None
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read()
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != media.sha256:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: content changed since the scan")
    return data


def _copy_from_card(media: MediaFile, dest: pathlib.Path) -> None:
    """Copy the card's file to ``dest`` (0600), checking it is what the scan saw."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    digest = hashlib.sha256()
    try:
        src = os.open(media.path, flags)
    except FileNotFoundError:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: file is gone") from None
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            while chunk := os.read(src, _CHUNK):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        finally:
            os.close(out)
    finally:
        os.close(src)
    if digest.hexdigest() != media.sha256:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: content changed since the scan")


def _write_new(path: pathlib.Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _fsync(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: pathlib.Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclasses.dataclass
class _Written:
    """A stripped copy written and checked, waiting for the batched read-back."""

    media: MediaFile
    out: pathlib.Path
    orientation: int | None = None  # what the read-back must find (images)
    needs_readback: bool = True
    sha256: str = ""
    size: int = 0


def _strip_jpeg(media: MediaFile, spool_dir: pathlib.Path) -> _Written:
    original = _read_card(media)
    try:
        layout = _jpeg_layout(original)
        stripped, orientation = rewrite_jpeg(original, layout)
        # The copy is taken apart again, on its own: what it holds is judged
        # from its bytes, not from what the rewrite meant to write.
        stripped_layout = _jpeg_layout(stripped)
        problems = jpeg_structure_problems(stripped, stripped_layout)
        same = jpeg_image_data(original, layout) == jpeg_image_data(stripped, stripped_layout)
    except JpegError as exc:
        raise _fail(media, f"JPEG cannot be stripped: {exc}") from None
    if problems:
        raise _fail(media, "stripped JPEG still holds: " + "; ".join(problems))
    if not same:
        raise _fail(media, "entropy-coded data or tables differ from the original")
    out = spool_dir / f"{uuid.uuid4().hex}.jpg"
    _write_new(out, stripped)
    return _Written(media, out, orientation, sha256=hashlib.sha256(stripped).hexdigest(),
                    size=len(stripped))


def _pillow_orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as im:
        value = im.getexif().get(_ORIENTATION_TAG)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _spool_pair(media: MediaFile, spool_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A private working copy of the card file, and the name its stripped copy gets.

    The caller removes the working copy when done (and the output on failure)."""
    token = uuid.uuid4().hex
    ext = _EXTENSIONS[media.media_type]
    work = spool_dir / f".{token}-original{ext}"
    try:
        _copy_from_card(media, work)
    except BaseException:
        work.unlink(missing_ok=True)  # a partial copy of patient media never stays in the spool
        raise
    return work, spool_dir / f"{token}{ext}"


def _strip_with_exiftool(media: MediaFile, spool_dir: pathlib.Path, reader: MetadataReader) -> _Written:
    work, out = _spool_pair(media, spool_dir)
    try:
        status, _, err = reader.run(*_STRIP_ARGS[media.media_type], "-o", out, work)
        if status != 0 or not out.exists():
            raise _fail(media, f"exiftool could not write a stripped copy: {err.strip() or status}")
        os.chmod(out, 0o600)
        original, stripped = work.read_bytes(), out.read_bytes()
        _verify_image(media, original, stripped)
        return _Written(media, out, _pillow_orientation(original))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        work.unlink(missing_ok=True)


def _remux(media: MediaFile, spool_dir: pathlib.Path) -> _Written:
    """Copy only the audio/video streams into a new container without metadata.

    ``-map_metadata -1 -map_chapters -1`` drop global, stream and chapter
    metadata; ``-fflags +bitexact`` makes the muxers write zero creation and
    modification dates and no encoder name; ``-c copy`` never re-encodes.
    Timed-metadata tracks (GPS, telemetry, camera motion), subtitles, data
    streams and cover art are not mapped, so they are not in the copy.
    """
    demuxer, muxer, options = _REMUX[media.media_type]
    work, out = _spool_pair(media, spool_dir)
    try:
        # 0:V is every video stream that is not a picture (cover art, thumbnail);
        # ffmpeg refuses to write a file left with no stream.
        maps = ["-map", "0:V?", "-map", "0:a?"]
        attempts = [(muxer, options)]
        if muxer == "mp4":
            # The mp4 muxer refuses some codecs cameras put in MP4 (Sony XAVC S:
            # LPCM audio); the QuickTime muxer takes them, under the original's brand.
            with open(work, "rb") as fh:
                brand = fh.read(12)[8:12].decode("latin-1").strip() or "isom"
            attempts.append(("mov", (*options, "-brand", brand)))
        for muxer_name, muxer_options in attempts:
            # One read of the original feeds two outputs: the copy, and the
            # per-packet hashes of what went into it.
            cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer,
                   "-i", str(work), *maps, "-c", "copy", "-map_metadata", "-1", "-map_chapters", "-1",
                   "-fflags", "+bitexact", *muxer_options, "-f", muxer_name, str(out),
                   *maps, "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"]
            done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
            if done.returncode == 0 and out.exists():
                break
            out.unlink(missing_ok=True)
        else:
            err = done.stderr.decode("utf-8", "replace").strip()
            raise _fail(media, f"ffmpeg could not remux: {err or done.returncode}")
        os.chmod(out, 0o600)
        try:
            a = done.stdout.decode()
            b = streamhash(out, demuxer)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise _fail(media, f"streams cannot be compared: {exc}") from None
        if not a.strip() or a != b:
            raise _fail(media, "audio/video packets differ from the original")
        return _Written(media, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        work.unlink(missing_ok=True)


def _write_one(media: MediaFile, spool_dir: pathlib.Path, reader: MetadataReader) -> _Written:
    if media.media_type in _DICOM_TYPES:
        from agent.card.strip.dicom import strip_dicom  # pydicom + numpy only when needed

        # strip_dicom verifies its copy with pydicom against its whitelist; the
        # exiftool read-back adds an independent deny-list (_DICOM_FORBIDDEN).
        done = strip_dicom(media, spool_dir)
        return _Written(media, done.spool_path, sha256=done.sha256, size=done.size)
    if media.media_type in _WAV_TYPES:
        done = strip_wav(media, spool_dir)
        return _Written(media, done.spool_path, sha256=done.sha256, size=done.size)
    if media.media_type in _NOT_ACCEPTED:
        raise _fail(media, _NOT_ACCEPTED[media.media_type])
    if media.media_type == "image/jpeg":
        return _strip_jpeg(media, spool_dir)
    if media.media_type in _STRIP_ARGS:
        return _strip_with_exiftool(media, spool_dir, reader)
    if media.media_type in _REMUX:
        return _remux(media, spool_dir)
    raise _fail(media, f"stripping {media.media_type} is not supported")


def _read_back(written: Sequence[_Written], reader: MetadataReader) -> None:
    """One exiftool call reads every copy back (``-a -u -ee``): only the
    allow-listed tags may be there, and images keep their orientation."""
    todo = [w for w in written if w.needs_readback]
    if not todo:
        return
    # JPEG copies are read with -fast (exiftool stops at the first scan instead
    # of reading the entropy-coded data to look for a trailer): the copy was
    # just taken apart to its EOI and proven to end there. One call per kind.
    metas: dict[pathlib.Path, md.Metadata] = {}
    jpegs = [w.out for w in todo if w.media.media_type == "image/jpeg"]
    others = [w.out for w in todo if w.media.media_type != "image/jpeg"]
    if jpegs:
        metas.update(reader.read(jpegs, extra=("-u", "-ee", "-fast")))
    if others:
        metas.update(reader.read(others, extra=("-u", "-ee")))
    for w in todo:
        after = metas[w.out]
        media_type = "audio/wav" if w.media.media_type in _WAV_TYPES else w.media.media_type
        if "ExifTool:Error" in after:
            raise _fail(w.media, f"the stripped copy cannot be read back: {after['ExifTool:Error']}")
        bad = forbidden_tags(after, media_type)
        if bad:
            raise _fail(w.media, "metadata left after stripping: " + ", ".join(sorted(bad)[:10]))
        if media_type.startswith("image/"):
            got = md.orientation(after)
            if (w.orientation or 1) != (got or 1):
                raise _fail(w.media, f"orientation {w.orientation} not kept (now {got})")


def strip_all(media: Sequence[MediaFile], spool_dir: pathlib.Path, *,
              tool: MetadataReader | None = None) -> list[StrippedFile]:
    """Write a verified metadata-free copy of every file into ``spool_dir``.

    Each copy is written and checked (structure, image data, pixels or
    packets), then all are read back by the one exiftool (one request for the
    JPEGs, one for the rest), then fsynced.
    Raises StageError STRIP_FAILED (unsupported format, any leftover
    metadata, any difference in image or stream data) or CARD_CHANGED (the
    card's bytes are not what the scan hashed); on error nothing this call
    wrote is left in the spool. The card is only read.
    """
    spool_dir = pathlib.Path(spool_dir)
    written: list[_Written] = []
    try:
        with _reader(tool) as reader:
            for m in media:
                written.append(_write_one(m, spool_dir, reader))
            _read_back(written, reader)
        done = []
        for w in written:
            _fsync(w.out)
            sha, size = (w.sha256, w.size) if w.sha256 else _sha256_file(w.out)
            done.append(StrippedFile(source=w.media, spool_path=w.out, sha256=sha, size=size))
        _fsync(spool_dir)
        return done
    except BaseException:
        for w in written:
            w.out.unlink(missing_ok=True)
        raise


def strip(media: MediaFile, spool_dir: pathlib.Path, *,
          tool: MetadataReader | None = None) -> StrippedFile:
    """:func:`strip_all` of one file."""
    return strip_all([media], spool_dir, tool=tool)[0]


# --- verification -------------------------------------------------------------------


def _decoded(data: bytes) -> tuple[str, tuple[int, int], str, bytes | None]:
    """Mode, size, SHA-256 of the decoded pixels, ICC profile."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, hashlib.sha256(im.tobytes()).hexdigest(), im.info.get("icc_profile")


def _verify_image(media: MediaFile, original: bytes, stripped: bytes) -> None:
    """PNG/TIFF rewritten by exiftool: the image chunks (PNG) and the decoded
    pixels and ICC profile are the original's. Both decodes at once; Pillow
    releases the GIL while decoding."""
    if media.media_type == "image/png":
        try:
            chunks_in, chunks_out = png_chunks(original), png_chunks(stripped)
        except ValueError as exc:
            raise _fail(media, f"PNG structure unreadable: {exc}") from None
        extra = sorted({k.decode("latin-1") for k, _ in chunks_out if k not in _PNG_ALLOWED})
        if extra:
            raise _fail(media, f"stripped PNG still holds chunks {', '.join(extra)}")
        if _png_image_data(chunks_in) != _png_image_data(chunks_out):
            raise _fail(media, "PNG image data differ from the original")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_decoded, original), pool.submit(_decoded, stripped)]
    try:
        a, b = (f.result() for f in futures)
    except Exception as exc:  # noqa: BLE001 - any decoder failure refuses
        raise _fail(media, f"stripped copy does not decode: {exc}") from None
    if a[:3] != b[:3]:
        raise _fail(media, "decoded pixels differ from the original")
    if a[3] != b[3]:
        raise _fail(media, "ICC colour profile not kept")


def streamhash(path: pathlib.Path, demuxer: str = "mov", maps: Sequence[str] = ("-map", "0")) -> str:
    """ffmpeg's per-stream SHA-256 of every packet of the mapped streams,
    without decoding. The demuxer is named, never guessed from the content."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer,
           "-i", str(path), *maps, "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"]
    done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode("utf-8", "replace").strip() or str(done.returncode))
    return done.stdout.decode()


# --- WAV (RIFF WAVE) ------------------------------------------------------------------

#: What a stripped WAV may hold, in this order.
WAV_CHUNKS = (b"fmt ", b"fact", b"data")
_PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_WAV_FORMAT_PCM = 1
_WAV_FORMAT_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    pass


def wav_chunks(fh: io.BufferedIOBase, size: int) -> tuple[list[tuple[bytes, int, int]], int]:
    """The chunks of a RIFF WAVE file as (id, offset of the payload, payload size),
    and the end of the RIFF form. Raises WavError for anything but a complete
    RIFF WAVE file (RF64/BW64, truncated chunks, a form longer than the file)."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12:
        raise WavError("shorter than a RIFF header")
    if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        raise WavError(f"{head[:4].decode()} (a WAV over 4 GiB) is not supported")
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a RIFF WAVE file")
    riff_end = 8 + int.from_bytes(head[4:8], "little")
    if riff_end > size:
        raise WavError(f"truncated: the RIFF header announces {riff_end} bytes, the file has {size}")
    chunks: list[tuple[bytes, int, int]] = []
    pos = 12
    while pos + 8 <= riff_end:
        fh.seek(pos)
        header = fh.read(8)
        chunk_id, chunk_size = header[:4], int.from_bytes(header[4:8], "little")
        end = pos + 8 + chunk_size
        if end > riff_end:
            raise WavError(f"truncated: chunk {chunk_id.decode('latin-1')!r} at byte {pos} "
                           f"announces {chunk_size} bytes, only {riff_end - pos - 8} follow")
        chunks.append((chunk_id, pos + 8, chunk_size))
        pos = end + (chunk_size & 1)  # chunks are padded to even length
    return chunks, riff_end


def _wav_format(fmt: bytes) -> tuple[int, bool]:
    """(format tag, is PCM) of a ``fmt `` payload; WavError if malformed."""
    if len(fmt) < 16:
        raise WavError(f"fmt chunk of {len(fmt)} bytes (at least 16 needed)")
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    block_align = int.from_bytes(fmt[12:14], "little")
    if not channels or not rate or not block_align:
        raise WavError("fmt chunk with zero channels, sample rate or block size")
    pcm = tag == _WAV_FORMAT_PCM
    if tag == _WAV_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE fmt chunk shorter than 40 bytes")
        pcm = fmt[24:26] == b"\x01\x00" and fmt[26:40] == _PCM_GUID_TAIL
    return tag, pcm


def _wav_layout(fh: io.BufferedIOBase, size: int) -> tuple[dict[bytes, tuple[int, int]], list[bytes], int]:
    """Where fmt/fact/data are, which other chunks there are, the RIFF end."""
    chunks, riff_end = wav_chunks(fh, size)
    found: dict[bytes, tuple[int, int]] = {}
    others: list[bytes] = []
    for chunk_id, offset, chunk_size in chunks:
        if chunk_id in WAV_CHUNKS:
            if chunk_id in found:
                raise WavError(f"more than one {chunk_id.decode()!r} chunk")
            found[chunk_id] = (offset, chunk_size)
        else:
            others.append(chunk_id)
    for needed in (b"fmt ", b"data"):
        if needed not in found:
            raise WavError(f"no {needed.decode().strip()!r} chunk")
    return found, others, riff_end


def _read_at(fh: io.BufferedIOBase, offset: int, n: int) -> bytes:
    fh.seek(offset)
    data = fh.read(n)
    if len(data) != n:
        raise WavError("file shorter than its chunks")
    return data


def _copy_range(src: io.BufferedIOBase, dst: io.BufferedIOBase | None, offset: int, n: int) -> str:
    """Copy ``n`` bytes at ``offset`` (to ``dst`` if given); their SHA-256."""
    digest = hashlib.sha256()
    src.seek(offset)
    while n:
        chunk = src.read(min(n, _CHUNK))
        if not chunk:
            raise WavError("file shorter than its data chunk")
        digest.update(chunk)
        if dst is not None:
            dst.write(chunk)
        n -= len(chunk)
    return digest.hexdigest()


def wav_streamhash(path: pathlib.Path) -> str:
    """:func:`streamhash` of a WAV file."""
    return streamhash(path, "wav")


def strip_wav(media: MediaFile, spool_dir: pathlib.Path) -> StrippedFile:
    """Write ``media`` (RIFF WAVE) into ``spool_dir`` with only fmt [fact] data.

    The card's file is copied to a working file in the spool first (checked
    against the scan's SHA-256), the chunks are parsed from that copy, and the
    output is streamed from it, so an audio file is never held in memory.
    """
    token = uuid.uuid4().hex
    work = spool_dir / f".{token}-original.wav"
    out = spool_dir / f"{token}.wav"
    try:
        _copy_from_card(media, work)
        size = work.stat().st_size
        with open(work, "rb") as src:
            try:
                found, others, riff_end = _wav_layout(src, size)
                fmt = _read_at(src, *found[b"fmt "])
                _, pcm = _wav_format(fmt)
            except WavError as exc:
                raise _fail(media, f"WAV cannot be stripped: {exc}") from None
            keep = [c for c in WAV_CHUNKS if c in found and not (c == b"fact" and pcm)]
            dropped = others + ([b"fact"] if b"fact" in found and b"fact" not in keep else [])
            body = sum(8 + found[c][1] + (found[c][1] & 1) for c in keep)
            if 4 + body > 0xFFFFFFFF:  # pragma: no cover - cannot come from a RIFF file
                raise _fail(media, "stripped WAV would exceed 4 GiB")
            hashes: dict[bytes, str] = {}
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            with os.fdopen(fd, "wb") as dst:
                dst.write(b"RIFF" + (4 + body).to_bytes(4, "little") + b"WAVE")
                for c in keep:
                    offset, chunk_size = found[c]
                    dst.write(c + chunk_size.to_bytes(4, "little"))
                    hashes[c] = _copy_range(src, dst, offset, chunk_size)
                    if chunk_size & 1:
                        dst.write(b"\x00")
                dst.flush()
                os.fsync(dst.fileno())
        _verify_wav(media, work, out, keep, hashes)
        _fsync(spool_dir)
        if dropped or riff_end != size:
            log.debug("wav chunks dropped", extra={
                "file": media.relative_path,
                "chunks": [c.decode("latin-1") for c in dropped],
                "bytes_after_riff": size - riff_end})
        sha, out_size = _sha256_file(out)
        return StrippedFile(source=media, spool_path=out, sha256=sha, size=out_size)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        work.unlink(missing_ok=True)


def _verify_wav(media: MediaFile, original: pathlib.Path, stripped: pathlib.Path,
                keep: list[bytes], hashes: Mapping[bytes, str]) -> None:
    size = stripped.stat().st_size
    with open(stripped, "rb") as fh:
        try:
            chunks, riff_end = wav_chunks(fh, size)
            if riff_end != size:
                raise WavError(f"{size - riff_end} bytes after the RIFF form")
            ids = [c for c, _, _ in chunks]
            if ids != keep:
                raise WavError(f"chunks {[c.decode('latin-1') for c in ids]}, expected "
                               f"{[c.decode('latin-1') for c in keep]}")
            for (chunk_id, offset, chunk_size) in chunks:
                if _copy_range(fh, None, offset, chunk_size) != hashes[chunk_id]:
                    raise WavError(f"{chunk_id.decode().strip()!r} chunk differs from the original")
        except WavError as exc:
            raise _fail(media, f"stripped WAV failed verification: {exc}") from None
    try:
        a, b = wav_streamhash(original), wav_streamhash(stripped)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise _fail(media, f"audio streams cannot be compared: {exc}") from None
    if not a.strip() or a != b:
        raise _fail(media, "audio packets differ from the original")
