"""JPEG, rewritten here (not by exiftool): the first image's tables, frames and
scans byte for byte, with only JFIF density, Orientation, the ICC profile and
the Adobe segment kept (the package docstring says why), then proven by
taking the copy apart again."""
from __future__ import annotations

import hashlib
import pathlib
import re
import uuid
from typing import Literal

from agent.card.model import MediaFile
from agent.card.strip.common import Written, fail, read_card, write_new

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


# --- JPEG rewrite -------------------------------------------------------------------

#: Markers a stripped JPEG keeps verbatim: frames, tables, scans, restarts,
#: DNL and EOI. Any other non-APPn, non-COM marker refuses the file.
_JPEG_KEEP = _SOF | _TABLES | {0xDA, 0xDC, 0xD9} | set(range(0xD0, 0xD8))
ORIENTATION_TAG = 0x0112


def _exif_orientation(payload: bytes) -> int | None:
    """IFD0 Orientation of an APP1 EXIF payload (after ``Exif\0\0``), or None."""
    tiff = payload[6:]
    if tiff[:4] not in (b"II*\x00", b"MM\x00*") or len(tiff) < 8:
        return None
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[0:2], order) == ORIENTATION_TAG and int.from_bytes(entry[2:4], order) == 3:
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else None
    return None


def _minimal_exif(orientation: int) -> bytes:
    """An APP1 segment with a big-endian TIFF IFD0 holding only Orientation."""
    body = (b"Exif\x00\x00" + b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
            + ORIENTATION_TAG.to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
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


def strip_jpeg(media: MediaFile, spool_dir: pathlib.Path, data: bytes | None = None) -> Written:
    """``data``: the card file's bytes, read and hashed as ``media.sha256`` by the
    caller (the scan's worker); else read from the card and checked here."""
    original = data if data is not None else read_card(media)
    try:
        layout = _jpeg_layout(original)
        stripped, orientation = rewrite_jpeg(original, layout)
        # The copy is taken apart again, on its own: what it holds is judged
        # from its bytes, not from what the rewrite meant to write.
        stripped_layout = _jpeg_layout(stripped)
        problems = jpeg_structure_problems(stripped, stripped_layout)
        same = jpeg_image_data(original, layout) == jpeg_image_data(stripped, stripped_layout)
    except JpegError as exc:
        raise fail(media, f"JPEG cannot be stripped: {exc}") from None
    if problems:
        raise fail(media, "stripped JPEG still holds: " + "; ".join(problems))
    if not same:
        raise fail(media, "entropy-coded data or tables differ from the original")
    out = spool_dir / f"{uuid.uuid4().hex}.jpg"
    write_new(out, stripped)
    return Written(media, out, orientation, sha256=hashlib.sha256(stripped).hexdigest(),
                    size=len(stripped))
