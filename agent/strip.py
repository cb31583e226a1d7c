"""Strip stage: a metadata-free, losslessly identical copy of each media file (R7).

``strip(media, spool_dir)`` never touches the card: it copies the file's bytes
into the spool (checking them against the scan's SHA-256, so what is stripped
is exactly what was scanned), has exiftool write a stripped copy next to it,
verifies that copy, fsyncs it (mode 0600) and removes the working copy.

What is removed (JPEG): EXIF (all IFDs, incl. the IFD1 thumbnail), GPS, maker
notes, XMP (incl. extended XMP), IPTC, Photoshop IRB, JPEG comments, JFIF/JFXX
thumbnails, MPF and the extra images behind it, FlashPix/preview segments, and
every trailer after the end of the image (``-all= -trailer:all=``).

What is kept:

* the **ICC profile** (``--icc_profile:all``), for clinical colour fidelity;
* the Adobe APP14 segment, which exiftool never deletes with ``-all=`` because
  it tells the decoder the colour transform (four numbers, nothing identifying);
* the **Orientation** tag, copied back alone into a fresh minimal EXIF block
  (exiftool adds the mandatory resolution tags). R7 allows "applied or kept";
  we *keep* it because applying it means re-encoding (lossy) or a lossless
  rotation that fails for sizes not a multiple of the MCU, and either would
  change the entropy-coded data the losslessness check below pins down.
  Every viewer and Pillow's ``ImageOps.exif_transpose`` honour the tag.

Verification, each failure a :class:`StageError` ``STRIP_FAILED`` naming what:

1. exiftool reads the stripped copy back (``-a -u -ee``) and a checklist allows
   only: File/ExifTool/ICC_Profile/Adobe groups, in EXIF only IFD0's
   Orientation and resolution tags (TIFF: plus its image-structure tags),
   the image-structure tags of PNG and QuickTime, and a few Composite
   values; any tag named like GPS, make, model, serial, thumbnail, preview,
   comment, owner, location… is forbidden wherever it appears.
2. JPEG: our own marker parser checks the copy holds only SOI, JFIF without
   thumbnail, minimal EXIF, ICC, Adobe, tables, frames, scans and EOI with
   nothing after it; and that the quantisation and Huffman tables, frame
   headers, restart intervals and every scan (header + entropy-coded data,
   all scans of a progressive file) are byte-identical to the original's
   first image.
   PNG: only image and colour chunks remain; IHDR/PLTE/tRNS and the IDAT
   stream are byte-identical.
3. Images: the ICC profile is identical and the orientation is the
   original's. PNG/TIFF: Pillow decodes original and copy to identical pixels.
   JPEG: step 2 already proves the decode identical (same tables, frame,
   scans and Adobe transform), so no pixel decode is spent on it; the tests
   compare pixels independently.
4. Video/audio (MP4/MOV/M4A): ``ffmpeg -c copy -f streamhash`` of every stream
   is identical (no packet changed).

Containers:

* JPEG (incl. MPO: only the first, primary image is kept), PNG: supported.
* TIFF: supported when exiftool leaves only image-structure tags; exiftool
  cannot delete required IFD0 entries, and a TIFF with a thumbnail IFD, a
  private maker IFD or anything else it cannot remove is refused, not guessed.
* MP4/MOV/M4A (QuickTime): ``-all=`` removes user data (``udta``), ``meta``
  item lists and Keys (make, model, GPS ``©xyz``), XMP and Canon/Nikon maker
  atoms. exiftool cannot remove everything from such containers: the movie and
  track header dates (mvhd/tkhd/mdhd; capture time, no identity), the handler
  and compressor names, and data *inside* the encoded streams (an encoder's
  SEI user data, a GoPro GPMF or camera-motion track) stay; a timed-metadata
  track that carries GPS, a serial or the like is found by the ``-ee`` read-back
  and the file is refused.
* HEIC/HEIF: refused. ``-all=`` leaves the HEIF item structure, including
  thumbnail items that exiftool does not list, so the result cannot be checked.
* DICOM: :mod:`agent.strip_dicom` writes a new dataset from a whitelist of the
  elements needed to decode and display the image (pixel data byte-identical,
  new SOPInstanceUID, no patient/study/device/date/private elements); see that
  module for the list, the transfer-syntax rules and the verification.
* WAV (RIFF WAVE): rewritten by :func:`strip_wav` with only the ``fmt `` chunk,
  the ``fact`` chunk (non-PCM only) and the ``data`` chunk, each byte-identical;
  everything else goes (LIST/INFO artist/dates/software, ``bext`` Broadcast
  WAV originator/dates/UMID, ``iXML``, ``id3``/``ID3``, ``_PMX`` XMP, ``cue ``,
  ``smpl``, ``JUNK``, bytes after the RIFF form such as an appended ID3 tag).
  Verified by re-parsing (only those chunks; fmt/fact identical; data SHA-256
  identical) and by ffmpeg's per-packet stream hash. Refused: RF64/BW64 (over
  4 GiB), truncated files (a chunk or the RIFF form running past the end of
  the file), no or several ``fmt ``/``data`` chunks, a malformed ``fmt ``.
* MP3, AVI, MPEG-TS: refused, "not yet supported" (exiftool cannot write them;
  MP3 would need its ID3v1/v2/APE tags cut off by frame-accurate parsing).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
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

from agent import metadata as md
from agent.metadata import MetadataReader
from agent.model import MediaFile, StageError, StrippedFile
from agent.reasons import Reason

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
FFMPEG_TIMEOUT_S = 600

_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/tiff": ".tif",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "audio/mp4": ".m4a",
}
_QUICKTIME = {"video/mp4", "video/quicktime", "audio/mp4"}

_STRIP_ARGS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("-all=", "-trailer:all=", "--icc_profile:all",
                   "-tagsFromFile", "@", "-IFD0:Orientation"),
    "image/png": ("-all=", "--icc_profile:all", "-tagsFromFile", "@", "-IFD0:Orientation"),
    "image/tiff": ("-all=", "--icc_profile:all",
                   *(f"-IFD0:{t}=" for t in ("Make", "Model", "Software", "Artist", "Copyright",
                                              "ImageDescription", "ModifyDate", "HostComputer",
                                              "DocumentName", "PageName", "DateTime"))),
    "video/mp4": ("-all=",),
    "video/quicktime": ("-all=",),
    "audio/mp4": ("-all=",),
}

_DICOM_TYPES = {"application/dicom"}
_WAV_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}

_NOT_YET = {
    "audio/mpeg": "exiftool cannot write MP3",
    "video/x-msvideo": "exiftool cannot write AVI",
    "video/mp2t": "exiftool cannot write MPEG-TS",
    "image/heic": "exiftool leaves HEIF thumbnail items it does not list",
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
                  "SampleGroupDescription"}
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
            if group1 == "System" or name in _FILE_ALLOWED:
                continue
            bad.append(key)
            continue
        if group0 == "Composite":
            if name not in _COMPOSITE_ALLOWED:
                bad.append(key)
            continue
        if name not in _ALLOWED_NAMES and _FORBIDDEN_NAME.search(name):
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


class JpegError(ValueError):
    pass


def jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The first image's marker segments, in order, as (marker, payload); SOS
    payloads include the entropy-coded data up to the next marker. Returns
    also the offset just after the first EOI (where a trailer would start)."""
    if not data.startswith(b"\xff\xd8"):
        raise JpegError("no SOI")
    out: list[tuple[int, bytes]] = []
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise JpegError(f"marker expected at {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:
            out.append((marker, b""))
            return out, i
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append((marker, b""))
            continue
        if i + 2 > n:
            raise JpegError("truncated segment")
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2 or i + length > n:
            raise JpegError(f"bad segment length at {i}")
        payload = data[i + 2:i + length]
        i += length
        if marker == 0xDA:
            start = i
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    raise JpegError("scan runs to the end of the file (no EOI)")
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    i = j + 2
                    continue
                if nxt == 0xFF:  # fill byte before a marker
                    i = j + 1
                    continue
                payload = payload + b"\x00SCAN\x00" + data[start:j]
                i = j
                break
        out.append((marker, payload))
    raise JpegError("no EOI")


def jpeg_image_data(segments: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """What decides the pixels: tables, frame header, scans (with their data), and
    the Adobe APP14 segment, whose transform flag decides the colour conversion."""
    return [(m, p) for m, p in segments if m in _TABLES or m in _SOF or m in (0xDA, 0xDC, 0xEE)
            or 0xD0 <= m <= 0xD7]


def jpeg_structure_problems(data: bytes) -> list[str]:
    """Segments a stripped JPEG must not hold (any APPn but minimal ones, COM, trailers)."""
    segments, end = jpeg_segments(data)
    problems = []
    if end != len(data):
        problems.append(f"{len(data) - end} bytes after the end of the image")
    for marker, payload in segments:
        if marker == 0xE0:
            if not payload.startswith(b"JFIF\x00") or len(payload) != 14:
                problems.append("APP0 other than a plain JFIF header")
        elif marker == 0xE1:
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
    exif = [p for m, p in segments if m == 0xE1]
    if len(exif) > 1:
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


def _copy_from_card(media: MediaFile, dest: pathlib.Path) -> bytes | None:
    """Copy the card's file to ``dest`` (0600), checking it is what the scan saw.

    Returns the bytes when the file is an image (they are needed for the
    checks), None for video/audio (checked from the spool copy by ffmpeg).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    keep = media.media_type.startswith("image/")
    kept: list[bytes] = []
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
                if keep:
                    kept.append(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        finally:
            os.close(out)
    finally:
        os.close(src)
    if digest.hexdigest() != media.sha256:
        raise StageError(Reason.CARD_CHANGED, f"{media.relative_path}: content changed since the scan")
    return b"".join(kept) if keep else None


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


def strip(media: MediaFile, spool_dir: pathlib.Path, *,
          tool: MetadataReader | None = None) -> StrippedFile:
    """Write a verified metadata-free copy of ``media`` into ``spool_dir``.

    Raises StageError STRIP_FAILED (unsupported format, exiftool failure, any
    leftover metadata, any difference in image or stream data) or
    CARD_CHANGED (the card's bytes are not what the scan hashed). On error
    nothing is left in the spool for this file. The card is only read.
    """
    if media.media_type in _DICOM_TYPES:
        from agent.strip_dicom import strip_dicom  # pydicom + numpy only when needed

        return strip_dicom(media, pathlib.Path(spool_dir))
    if media.media_type in _WAV_TYPES:
        return strip_wav(media, pathlib.Path(spool_dir))
    if media.media_type in _NOT_YET:
        raise _fail(media, f"stripping {media.media_type} is not yet supported "
                           f"({_NOT_YET[media.media_type]})")
    if media.media_type not in _STRIP_ARGS:
        raise _fail(media, f"stripping {media.media_type} is not supported")
    spool_dir = pathlib.Path(spool_dir)
    token = uuid.uuid4().hex
    work = spool_dir / f".{token}-original{_EXTENSIONS[media.media_type]}"
    out = spool_dir / f"{token}{_EXTENSIONS[media.media_type]}"
    try:
        original = _copy_from_card(media, work)
        with _reader(tool) as reader:
            status, _, err = reader.run(*_STRIP_ARGS[media.media_type], "-o", out, work)
            if status != 0 or not out.exists():
                raise _fail(media, f"exiftool could not write a stripped copy: {err.strip() or status}")
            os.chmod(out, 0o600)
            before = reader.read_one(work) if original is not None else {}
            after = reader.read_one(out, extra=("-u", "-ee"))
        bad = forbidden_tags(after, media.media_type)
        if bad:
            raise _fail(media, "metadata left after stripping: " + ", ".join(sorted(bad)[:10]))
        if original is not None:
            _verify_image(media, original, out.read_bytes(), before, after)
        else:
            _verify_streams(media, work, out)
        _fsync(out)
        _fsync(spool_dir)
        sha, size = _sha256_file(out)
        return StrippedFile(source=media, spool_path=out, sha256=sha, size=size)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        work.unlink(missing_ok=True)


def strip_all(media: Sequence[MediaFile], spool_dir: pathlib.Path, *,
              tool: MetadataReader | None = None) -> list[StrippedFile]:
    """:func:`strip` every file with one exiftool; the first failure raises and
    removes what this call wrote before."""
    done: list[StrippedFile] = []
    try:
        with _reader(tool) as reader:
            for m in media:
                done.append(strip(m, spool_dir, tool=reader))
    except BaseException:
        for s in done:
            s.spool_path.unlink(missing_ok=True)
        raise
    return done


# --- verification -------------------------------------------------------------------


def _decoded(data: bytes, *, pixels: bool = True) -> tuple[str, tuple[int, int], str, bytes | None]:
    """Mode, size, SHA-256 of the decoded pixels (or "" without pixels), ICC profile."""
    with Image.open(io.BytesIO(data)) as im:
        if not pixels:
            return im.mode, im.size, "", im.info.get("icc_profile")
        im.load()
        return im.mode, im.size, hashlib.sha256(im.tobytes()).hexdigest(), im.info.get("icc_profile")


def _verify_image(media: MediaFile, original: bytes, stripped: bytes,
                  before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    if media.media_type == "image/jpeg":
        try:
            problems = jpeg_structure_problems(stripped)
            same = jpeg_image_data(jpeg_segments(original)[0]) == jpeg_image_data(jpeg_segments(stripped)[0])
        except JpegError as exc:
            raise _fail(media, f"JPEG structure unreadable: {exc}") from None
        if problems:
            raise _fail(media, "stripped JPEG still holds: " + "; ".join(problems))
        if not same:
            raise _fail(media, "entropy-coded data or tables differ from the original")
    elif media.media_type == "image/png":
        try:
            chunks_in, chunks_out = png_chunks(original), png_chunks(stripped)
        except ValueError as exc:
            raise _fail(media, f"PNG structure unreadable: {exc}") from None
        extra = sorted({k.decode("latin-1") for k, _ in chunks_out if k not in _PNG_ALLOWED})
        if extra:
            raise _fail(media, f"stripped PNG still holds chunks {', '.join(extra)}")
        if _png_image_data(chunks_in) != _png_image_data(chunks_out):
            raise _fail(media, "PNG image data differ from the original")
    # A JPEG whose tables, frame header and scans were just shown byte-identical
    # decodes to the same pixels by construction: two more full 12 MP decodes
    # would only double the strip time (benchmarks/strip.py). Other formats
    # are decoded and compared; both decodes at once, Pillow releases the GIL.
    pixels = media.media_type != "image/jpeg"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_decoded, original, pixels=pixels),
                   pool.submit(_decoded, stripped, pixels=pixels)]
    try:
        a, b = (f.result() for f in futures)
    except Exception as exc:  # noqa: BLE001 - any decoder failure refuses
        raise _fail(media, f"stripped copy does not decode: {exc}") from None
    if a[:3] != b[:3]:
        raise _fail(media, "decoded pixels differ from the original")
    if a[3] != b[3]:
        raise _fail(media, "ICC colour profile not kept")
    want, got = md.orientation(before), md.orientation(after)
    if (want or 1) != (got or 1):
        raise _fail(media, f"orientation {want} not kept (now {got})")


def streamhash(path: pathlib.Path, demuxer: str = "mov") -> str:
    """ffmpeg's per-stream SHA-256 of every packet, without decoding. The demuxer
    is named, never guessed from the content."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-f", demuxer,
           "-i", str(path), "-map", "0", "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"]
    done = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode("utf-8", "replace").strip() or str(done.returncode))
    return done.stdout.decode()


def _verify_streams(media: MediaFile, original: pathlib.Path, stripped: pathlib.Path) -> None:
    try:
        a, b = streamhash(original), streamhash(stripped)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise _fail(media, f"streams cannot be compared: {exc}") from None
    if not a.strip() or a != b:
        raise _fail(media, "audio/video packets differ from the original")


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
