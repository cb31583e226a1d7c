"""Scan stage: find the media on a card, by content, in capture order (R8).

``scan(root)`` walks a card (a mounted volume or a folder) and sorts every
entry into one of three piles:

* **media** (:class:`MediaFile`): magic bytes name an accepted format AND the
  file decodes fully (Pillow ``load()`` for images, pydicom's pixel decoder for
  DICOM, ffprobe reading every packet for video/audio) AND exiftool agrees on
  the format. The original bytes are hashed (SHA-256) and size + mtime_ns
  recorded, so the wipe stage can prove the card did not change (R10).
* **ignored** (``SkippedFile(status="ignored")``): camera and OS housekeeping,
  recognised by name and place. Ignored files are never opened, uploaded or
  deleted. Ignoring is safe for the archive (nothing of it enters), and it is
  only offered to names that cameras and operating systems really write.
* **refused** (``SkippedFile(status="refused")``): everything else. NOT_MEDIA for
  files that are not accepted media (executables, archives, documents, text,
  truncated or undecodable images, decompression bombs, camera RAW, formats no
  capture device of ours writes); UNSAFE_PATH for symlinks (never followed),
  device files, FIFOs, sockets, another file system mounted inside the card,
  names with control characters or invalid UTF-8, and folders that cannot be
  read. One refused file refuses the card (the pipeline decides that).

File names never decide what a file *is*; they only decide what is housekeeping.

Housekeeping decisions (matched case-insensitively):

==============================  =========  ====================================================
name / place                    decision   why
==============================  =========  ====================================================
``MISC/`` (root)                ignored    DCF's folder for DPOF print orders (AUTPRINT.MRK)
``DPOF/`` (root)                ignored    print orders of some makers
``DCIM/CANONMSC/``              ignored    Canon's catalogue folder (``*.CTG``)
``*.CTG``                       ignored    Canon catalogue files, wherever they are
``*.THM`` under DCIM            ignored    a camera's thumbnail sidecar of a video; the video
                                           itself is the media (the wipe removes it with
                                           its clip: it shows the patient)
``NIKON001.DSC``, ``NC_*.DAT``  ignored    Nikon's card marker and file list
``*.XMP``                       ignored    metadata sidecar (editing software, some cameras);
                                           never uploaded, so none of it reaches the archive
``DICOMDIR``                    ignored    the DICOM media index (refers to the images; holds
                                           patient data, so it must not be uploaded either;
                                           the wipe removes it once what it indexes is wiped)
``PRIVATE/AVCHD`` index files   ignored    AVCHD playlists/clip info (``*.BDM``, ``*.MPL``,
                                           ``*.CPI``); the ``STREAM/*.MTS`` are scanned as media
``PRIVATE/M4ROOT`` ``*.XML``,   ignored    Sony XAVC clip sidecars, status, thumbnails
``*.BIN``, ``THMBNL/``
``.Spotlight-V100/``,           ignored    macOS indexing / trash / event log folders
``.Trashes/``, ``.fseventsd/``,
``.TemporaryItems/``
``System Volume Information/``  ignored    Windows volume folders
``$RECYCLE.BIN/``
``._*``, ``.DS_Store``          ignored    macOS AppleDouble and Finder files
``Thumbs.db``, ``desktop.ini``  ignored    Windows Explorer files (thumbnail caches and
                                           AppleDouble files of wiped media go with them)
empty (0-byte) files            ignored    hold nothing; a camera leaves them after a failed
                                           write, and there is nothing to archive
``AUTORUN.INF``                 refused    no camera writes one; it is how Windows malware
                                           spreads on removable media (NOT_MEDIA)
a file with several hard links  refused    UNSAFE_PATH: another name of it may lie outside
                                           the card (no camera writes hard links)
==============================  =========  ====================================================

Accepted formats: JPEG (incl. MPO, whose extra frames the strip stage drops),
PNG, TIFF, DICOM with pixel data; MP4/MOV/M4A, AVI, MPEG-TS/AVCHD (MTS/M2TS),
WAV and MP3. HEIC/HEIF is recognised but not taken (docs/media.md): after its
metadata is read it is refused UNREGISTERED_DEVICE when that names a phone
(agent.card.devices), else FORMAT_NOT_ACCEPTED.

Decompression bombs are refused NOT_MEDIA before anything decodes them: images
over ``max_pixels`` (checked on the header), video frames over
``MAX_VIDEO_PIXELS``, media longer than ``MAX_DURATION_S`` or with more than
``MAX_VIDEO_FRAMES`` video frames (counted by ffprobe, which reads packets but
decodes none), DICOM whose pixel data would decode to more than
``MAX_DICOM_PIXEL_BYTES``.

Each media file carries what the device policy (R6) needs: the device it
names and the metadata fields that said so (``device_fields``), and any
phone-only traits (``device_traits``, :func:`agent.card.devices.phone_traits`). Refused as NOT_MEDIA even though
they are pictures: camera RAW (CR2/CR3/CRW/NEF/DNG/ARW/RAF/RW2/ORF/…; not
strippable safely, set the camera to JPEG), WebP, GIF, BMP, PSD, JPEG 2000,
DICOM without pixel data (structured reports, waveforms).

Capture order (``ScanResult.media``): when every media file has a capture time,
by capture time, then camera numbering (``sequence``), then natural path order.
When any file lacks a capture time, the whole card is ordered by numbering and
path, never a mix, so that "first" and "last" are always well defined.
Capture times are compared as wall-clock times (an offset, when a file states
one, is dropped for the comparison) because a card mixes photos that state an
offset with videos that do not.

``sequence`` is the DCF numbering: ``DCIM/100CANON/IMG_0042.JPG`` -> ``(100, 42)``;
a path outside DCF naming gets the numbers found in its path (natural sort).

Errors: :class:`StageError` ``CARD_REMOVED`` when the root vanishes or the
device reports an I/O error (card pulled), ``CARD_CHANGED`` when a file vanishes
or changes while it is read.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import errno
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import stat
import struct
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from PIL import Image, ImageFile

from agent.card import devices as device_policy
from agent.card import metadata as md
from agent.card.metadata import MetadataReader
from agent.card.model import Device, MediaFile, MediaKind, ScanResult, SkippedFile, StageError
from agent.card.reasons import Reason

log = logging.getLogger(__name__)

# Truncated images must be refused, never half-decoded (R8).
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Largest image accepted, in pixels. Pillow's own bomb threshold: an image
#: above it would make Pillow warn; we refuse it before decoding.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Files up to this size are read into memory once: hashed and decoded from
#: the same bytes. Bigger files (video) are hashed streaming.
IN_MEMORY_LIMIT = 256 * 1024 * 1024
FFPROBE_TIMEOUT_S = 120
#: Decompression-bomb limits for video and audio (R8), checked on what
#: ffprobe counts while it reads every packet, before anything decodes a frame:
#: frame size (8K UHD), length, and number of video frames (4 h at 60 fps).
MAX_VIDEO_PIXELS = 7680 * 4320
MAX_DURATION_S = 4 * 3600
MAX_VIDEO_FRAMES = 4 * 3600 * 60
#: Largest decoded DICOM pixel data accepted (rows x columns x samples x
#: frames x bytes per sample), checked on the header before decoding.
MAX_DICOM_PIXEL_BYTES = 2 * 1024 ** 3
_CHUNK = 1 << 20
_HEAD = 512

_IO_GONE = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.ENOMEDIUM}


# --- housekeeping ---------------------------------------------------------------------

_IGNORED_ROOT_DIRS = {"misc", "dpof", ".spotlight-v100", ".trashes", ".fseventsd",
                      ".temporaryitems", "system volume information", "$recycle.bin"}
_IGNORED_ANY_DIRS = {".spotlight-v100", ".trashes", ".fseventsd", ".temporaryitems"}
_IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "nikon001.dsc", "dicomdir"}
_REFUSED_NAMES = {"autorun.inf": "a Windows autorun file: no camera writes one (malware sign)"}


def _housekeeping_dir(parts: tuple[str, ...]) -> str | None:
    """Why the folder at ``parts`` (relative, lower case) is ignored, or None."""
    name = parts[-1]
    if len(parts) == 1 and name in _IGNORED_ROOT_DIRS:
        return "housekeeping folder (OS or camera index, trash, print orders)"
    if name in _IGNORED_ANY_DIRS:
        return "housekeeping folder (OS or camera index, trash, print orders)"
    if parts[:2] == ("dcim", "canonmsc"):
        return "Canon catalogue folder"
    if parts[:3] == ("private", "m4root", "thmbnl"):
        return "Sony clip thumbnails"
    if parts[:3] == ("private", "avchd", "bdmv") and len(parts) >= 4 and parts[3] in (
        "playlist", "clipinf", "backup", "auxdata"
    ):
        return "AVCHD index folder"
    return None


def _housekeeping_file(parts: tuple[str, ...]) -> str | None:
    name = parts[-1]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if name in _IGNORED_NAMES:
        return f"housekeeping file {name!r}"
    if name.startswith("._"):
        return "macOS AppleDouble file"
    if ext == "ctg":
        return "Canon catalogue file"
    if ext == "thm" and parts[0] == "dcim":
        return "camera thumbnail sidecar"
    if name.startswith("nc_") and ext == "dat":
        return "Nikon file list"
    if ext == "xmp":
        return "metadata sidecar (never uploaded)"
    if parts[:2] == ("private", "avchd") and ext in ("bdm", "mpl", "cpi"):
        return "AVCHD index file"
    if parts[:2] == ("private", "m4root") and ext in ("xml", "bin", "dat"):
        return "Sony clip sidecar"
    return None


# --- recognising formats by content ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Format:
    kind: MediaKind | None  # None: recognised but not accepted
    media_type: str
    name: str  # short name for details; for images the Pillow format to decode with
    ffmpeg: str = ""  # demuxer ffprobe is forced to use (never guessed)
    exiftool_types: frozenset[str] = frozenset()  # File:FileType values that agree


def _f(kind: MediaKind | None, media_type: str, name: str, ffmpeg: str = "",
       types: Iterable[str] = ()) -> _Format:
    return _Format(kind, media_type, name, ffmpeg, frozenset(types))


_ISO_BRANDS_VIDEO = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
                     b"qt  ", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"XAVC", b"MSNV", b"M4V ",
                     b"M4VP", b"mmp4", b"CAEP", b"dash"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_MOV_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}

_VIDEO_TYPES = ("MP4", "MOV", "M4V", "3GP", "3G2", "CRM")


def detect(head: bytes) -> _Format | str:
    """The format ``head`` (the first bytes) announces, or a description of what
    it is instead (for the refusal's detail)."""
    # DICOM first: its 128-byte preamble may itself look like TIFF (dual-personality files).
    if len(head) >= 132 and head[128:132] == b"DICM":
        return _f(MediaKind.DICOM, "application/dicom", "DICOM", types=("DICM",))
    if head.startswith(b"\xff\xd8\xff"):
        return _f(MediaKind.IMAGE, "image/jpeg", "JPEG", types=("JPEG", "MPO"))
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _f(MediaKind.IMAGE, "image/png", "PNG", types=("PNG",))
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        if head[8:10] == b"CR":
            return "a Canon RAW file (CR2)"
        return _f(MediaKind.IMAGE, "image/tiff", "TIFF", types=("TIFF",))
    if head[:4] in (b"II+\x00", b"MM\x00+"):
        return "a BigTIFF file"
    if head[:4] in (b"IIU\x00", b"IIRO", b"IIRS", b"MMOR") or head.startswith(b"FUJIFILMCCD-RAW"):
        return "a camera RAW file"
    if head[6:14] == b"HEAPCCDR" or head[:4] in (b"\x00MRM", b"FOVb"):
        return "a camera RAW file"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"crx ":
            return "a Canon RAW file (CR3)"
        if brand in _HEIF_BRANDS:
            return _f(MediaKind.IMAGE, "image/heic", "HEIF", types=("HEIC", "HEIF"))
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        if brand in (b"M4A ", b"M4B "):
            return _f(MediaKind.AUDIO, "audio/mp4", "M4A", "mov", ("M4A", "M4B", "MP4"))
        if brand == b"qt  ":
            return _f(MediaKind.VIDEO, "video/quicktime", "MOV", "mov", _VIDEO_TYPES)
        if brand in _ISO_BRANDS_VIDEO or brand.startswith((b"3g", b"mp4", b"iso")):
            return _f(MediaKind.VIDEO, "video/mp4", "MP4", "mov", _VIDEO_TYPES)
        return f"an ISO media file of unknown brand {brand!r}"
    if head[4:8] in _MOV_ATOMS:
        return _f(MediaKind.VIDEO, "video/quicktime", "MOV", "mov", _VIDEO_TYPES)
    if head[:4] == b"RIFF":
        if head[8:12] == b"AVI ":
            return _f(MediaKind.VIDEO, "video/x-msvideo", "AVI", "avi", ("AVI",))
        if head[8:12] == b"WAVE":
            return _f(MediaKind.AUDIO, "audio/wav", "WAV", "wav", ("WAV",))
        if head[8:12] == b"WEBP":
            return "a WebP image (not written by capture devices)"
        return "a RIFF file of unknown type"
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return _f(MediaKind.VIDEO, "video/mp2t", "MPEG-TS", "mpegts", ("M2TS", "M2T", "MPEG-TS", "TS"))
    if head[4:5] == b"\x47" and head[196:197] == b"\x47":
        return _f(MediaKind.VIDEO, "video/mp2t", "M2TS", "mpegts", ("M2TS", "M2T", "MPEG-TS", "TS"))
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 in (0xE2, 0xE4, 0xE6)):
        return _f(MediaKind.AUDIO, "audio/mpeg", "MP3", "mp3", ("MP3",))
    return _describe_other(head)


def _describe_other(head: bytes) -> str:
    known = (
        (b"MZ", "a Windows executable"), (b"\x7fELF", "a Linux executable"),
        (b"\xca\xfe\xba\xbe", "a Mach-O executable"), (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
        (b"PK\x03\x04", "a ZIP archive"), (b"PK\x05\x06", "a ZIP archive"),
        (b"Rar!", "a RAR archive"), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"\x1f\x8b", "a gzip archive"), (b"BZh", "a bzip2 archive"), (b"\xfd7zXZ", "an xz archive"),
        (b"%PDF", "a PDF document"), (b"\xd0\xcf\x11\xe0", "an Office document"),
        (b"#!", "a script"), (b"GIF8", "a GIF image (not written by capture devices)"),
        (b"BM", "a BMP image (not written by capture devices)"),
        (b"8BPS", "a Photoshop document"), (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
        (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    )
    for magic, what in known:
        if head.startswith(magic):
            return what
    if len(head) > 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return "of an unknown type"


# --- the walk -----------------------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    path: pathlib.Path
    rel: str
    st: os.stat_result


def _card_gone(root: pathlib.Path, exc: OSError | None = None) -> bool:
    if exc is not None and exc.errno in _IO_GONE:
        return True
    try:
        return not stat.S_ISDIR(os.stat(root).st_mode)
    except OSError:
        return True


def _raise_removed(root: pathlib.Path, what: str) -> None:
    raise StageError(Reason.CARD_REMOVED, f"{root}: {what}")


def _bad_name(name: str) -> str | None:
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "file name holds control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    return None


def _printable(rel: str) -> str:
    """A refused name made safe to show and log: control characters and bytes
    that are not UTF-8 written as escapes (``\\n``, ``\\xff``)."""
    rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if 32 <= ord(c) != 127 else repr(c)[1:-1] for c in rel)


def _walk(root: pathlib.Path, skipped: list[SkippedFile]) -> Iterator[_Entry]:
    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise StageError(Reason.CARD_REMOVED, f"{root}: {exc.strerror}") from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise StageError(Reason.CARD_REMOVED, f"{root} is not a folder")
    stack: list[tuple[pathlib.Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if _card_gone(root, exc):
                _raise_removed(root, f"gone while reading {'/'.join(parts) or '.'}")
            if isinstance(exc, FileNotFoundError):
                raise StageError(Reason.CARD_CHANGED, f"{'/'.join(parts)}: folder vanished") from None
            skipped.append(SkippedFile("/".join(parts) + "/", "refused", Reason.UNSAFE_PATH,
                                       f"folder cannot be read: {exc.strerror}"))
            continue
        for entry in entries:
            rel_parts = (*parts, entry.name)
            rel = "/".join(rel_parts)
            lower = tuple(p.lower() for p in rel_parts)
            why = _bad_name(entry.name)
            if why:
                skipped.append(SkippedFile(_printable(rel), "refused", Reason.UNSAFE_PATH, why))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                if _card_gone(root, exc):
                    _raise_removed(root, f"gone while reading {rel}")
                raise StageError(Reason.CARD_CHANGED, f"{rel}: vanished during the scan") from None
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                skipped.append(SkippedFile(rel, "refused", Reason.UNSAFE_PATH,
                                           "a symbolic link (never followed)"))
            elif st.st_dev != root_st.st_dev:
                skipped.append(SkippedFile(rel, "refused", Reason.UNSAFE_PATH,
                                           "another file system mounted inside the card"))
            elif stat.S_ISDIR(mode):
                why = _housekeeping_dir(lower)
                if why:
                    skipped.append(SkippedFile(rel + "/", "ignored", None, why))
                else:
                    stack.append((pathlib.Path(entry.path), rel_parts))
            elif stat.S_ISREG(mode):
                if lower[-1] in _REFUSED_NAMES:
                    skipped.append(SkippedFile(rel, "refused", Reason.NOT_MEDIA,
                                               _REFUSED_NAMES[lower[-1]]))
                elif why := _housekeeping_file(lower):
                    skipped.append(SkippedFile(rel, "ignored", None, why))
                elif st.st_size == 0:
                    skipped.append(SkippedFile(rel, "ignored", None, "empty file"))
                elif st.st_nlink > 1:
                    # No camera writes hard links; another name of the same file may
                    # lie outside the card, where the wipe would not reach it.
                    skipped.append(SkippedFile(rel, "refused", Reason.UNSAFE_PATH,
                                               f"a hard link ({st.st_nlink} names for one file, "
                                               "possibly outside the card)"))
                else:
                    yield _Entry(pathlib.Path(entry.path), rel, st)
            else:
                kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                        else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                        else "a special file")
                skipped.append(SkippedFile(rel, "refused", Reason.UNSAFE_PATH, kind))


# --- one file ----------------------------------------------------------------------


@dataclasses.dataclass
class _Probed:
    entry: _Entry
    fmt: _Format | None = None
    kind: MediaKind | None = None
    sha256: str = ""
    refusal: str = ""  # detail of a NOT_MEDIA refusal
    unsafe: str = ""  # detail of an UNSAFE_PATH refusal
    capture_time: dt.datetime | None = None
    device: Device | None = None  # set by the decoder when it knows better than exiftool
    # A JPEG's reduced decode (``reduce``'s result) when the caller asked for one:
    # it was the content check, and identify reads it instead of decoding again.
    reduced: tuple[Image.Image, float] | None = None
    # A JPEG's bytes, as hashed, when the caller asked to keep them (the worker
    # strips it from them at once, agent.card.workers); never sent back.
    data: bytes | None = None
    # exiftool's reading of the file, when the caller read it while the rest of
    # the card was probed (agent.card.workers); else scan() reads it.
    meta: md.Metadata | None = None


# Decodes a JPEG at reduced scale (agent.card.identify.open_reduced): libjpeg's
# DCT scaling still decodes every entropy-coded block, so the decode is the
# content check (R8), and what it returns is the picture identify reads.
Reduce = Callable[[io.BytesIO], tuple[Image.Image, float]]


class _Changed(Exception):
    pass


def _open(entry: _Entry) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(entry.path, flags)
    st = os.fstat(fd)
    if (st.st_ino, st.st_dev) != (entry.st.st_ino, entry.st.st_dev) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Changed("replaced by another file during the scan")
    if (st.st_size, st.st_mtime_ns) != (entry.st.st_size, entry.st.st_mtime_ns):
        os.close(fd)
        raise _Changed("changed during the scan")
    return fd


def _read_exact(fd: int, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, min(_CHUNK * 8, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    if len(data) != size or os.read(fd, 1):
        raise _Changed("size changed while it was read")
    return data


def _hash_fd(fd: int, size: int) -> str:
    digest, got = hashlib.sha256(), 0
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
        got += len(chunk)
    if got != size:
        raise _Changed("size changed while it was read")
    return digest.hexdigest()


def _probe(entry: _Entry, max_pixels: int, reduce: Reduce | None = None, keep_jpeg: bool = False) -> _Probed:
    result = _Probed(entry)
    try:
        fd = _open(entry)
    except _Changed as exc:
        result.unsafe = str(exc)
        return result
    try:
        head = os.pread(fd, _HEAD, 0)
        fmt = detect(head)
        if isinstance(fmt, str):
            result.refusal = f"not media: {fmt}"
            return result
        if fmt.kind is None:
            result.refusal = f"not accepted: {fmt.name}"
            return result
        result.fmt, result.kind = fmt, fmt.kind
        size = entry.st.st_size
        data = None
        if fmt.kind in (MediaKind.IMAGE, MediaKind.DICOM) and size <= IN_MEMORY_LIMIT:
            data = _read_exact(fd, size)
            result.sha256 = hashlib.sha256(data).hexdigest()
        else:
            result.sha256 = _hash_fd(fd, size)
        if fmt.name == "HEIF":
            pass  # never decoded: refused after its metadata is read (see scan())
        elif fmt.kind == MediaKind.IMAGE:
            use = reduce if reduce is not None and fmt.name == "JPEG" and data is not None else None
            result.refusal, result.reduced = _decode_image(data, fd, fmt, max_pixels, use)
            if keep_jpeg and fmt.name == "JPEG" and not result.refusal:
                result.data = data
        elif fmt.kind == MediaKind.DICOM:
            result.refusal = _decode_dicom(data, fd, result)
        else:
            result.refusal, kind = _probe_av(fd, fmt)
            result.kind = kind or result.kind
        return result
    except _Changed as exc:
        result.unsafe = str(exc)
        return result
    finally:
        os.close(fd)


def _decode_image(data: bytes | None, fd: int, fmt: _Format, max_pixels: int,
                  reduce: Reduce | None = None) -> tuple[str, tuple[Image.Image, float] | None]:
    """('', …) when the image decodes fully, else (why not, None). With ``reduce``
    (a JPEG in memory) the decode is ``reduce``'s, whose picture is returned."""
    reduced = None
    source = io.BytesIO(data) if data is not None else os.fdopen(os.dup(fd), "rb")
    try:
        # Pillow warns (DecompressionBombWarning) above its MAX_IMAGE_PIXELS and
        # raises DecompressionBombError above twice that. Our own limit (by
        # default Pillow's) is checked on the header, before any pixel is
        # decoded, so whatever Pillow would warn about is refused here; the
        # warning itself is not turned into an error because warning filters
        # are process-wide and not thread-safe.
        with Image.open(source, formats=[fmt.name]) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                return "image has no pixels", None
            if width * height > max_pixels:
                return f"decompression bomb: {width}x{height} pixels exceeds the limit", None
            if getattr(im, "n_frames", 1) > 1 and fmt.name == "TIFF":
                return "multi-page TIFF is not accepted", None
            if reduce is not None and isinstance(source, io.BytesIO):
                source.seek(0)
                reduced = reduce(source)
            else:
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"decompression bomb: {exc}", None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError,
            Image.UnidentifiedImageError, struct.error, ZeroDivisionError) as exc:
        return f"{fmt.name} that cannot be decoded: {exc}", None
    finally:
        source.close()
    return "", reduced


def _decode_dicom(data: bytes | None, fd: int, result: _Probed) -> str:
    import pydicom

    source = io.BytesIO(data) if data is not None else os.fdopen(os.dup(fd), "rb")
    try:
        ds = pydicom.dcmread(source)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            return "DICOM without an image (e.g. a report or waveform)"
        decoded = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
                   * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
                   * max(1, (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8))
        if decoded > MAX_DICOM_PIXEL_BYTES:
            return f"decompression bomb: DICOM pixel data would decode to {decoded} bytes"
        ds.pixel_array  # noqa: B018 - the full decode is the point
    except Exception as exc:  # pydicom raises many types for bad data
        return f"DICOM that cannot be decoded: {type(exc).__name__}: {exc}"
    finally:
        source.close()
    result.device = Device(
        make=str(ds.get("Manufacturer", "") or "").strip(),
        model=str(ds.get("ManufacturerModelName", "") or "").strip(),
        serial=str(ds.get("DeviceSerialNumber", "") or "").strip(),
    )
    result.capture_time = _dicom_time(ds)
    return ""


def _dicom_time(ds: Any) -> dt.datetime | None:
    adt = str(ds.get("AcquisitionDateTime", "") or "")
    if len(adt) >= 14 and adt[:14].isdigit():
        return md.parse_exif_datetime(f"{adt[:4]}:{adt[4:6]}:{adt[6:8]} {adt[8:10]}:{adt[10:12]}:{adt[12:14]}")
    for d, t in (("ContentDate", "ContentTime"), ("AcquisitionDate", "AcquisitionTime"),
                 ("SeriesDate", "SeriesTime"), ("StudyDate", "StudyTime")):
        day, time = str(ds.get(d, "") or ""), str(ds.get(t, "") or "")
        if len(day) == 8 and day.isdigit():
            time = (time.replace(":", "") + "000000")[:6]
            if not time.isdigit():
                time = "000000"
            return md.parse_exif_datetime(
                f"{day[:4]}:{day[4:6]}:{day[6:8]} {time[:2]}:{time[2:4]}:{time[4:6]}")
    return None


def _probe_av(fd: int, fmt: _Format) -> tuple[str, MediaKind | None]:
    """Read every packet with ffprobe, demuxer forced from the magic bytes.

    ffprobe reads the card's file through an inherited descriptor; the demuxer
    is never guessed (a playlist or concat file could otherwise make it open
    other files), and only the file protocol is allowed.
    """
    os.lseek(fd, 0, os.SEEK_SET)
    cmd = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-f", fmt.ffmpeg,
           "-count_packets", "-show_streams", "-show_format", "-of", "json", f"/dev/fd/{fd}"]
    try:
        done = subprocess.run(cmd, pass_fds=(fd,), capture_output=True, timeout=FFPROBE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"{fmt.name}: ffprobe did not finish in {FFPROBE_TIMEOUT_S} s", None
    except OSError as exc:
        raise RuntimeError(f"ffprobe cannot run: {exc}") from exc
    err = done.stderr.decode("utf-8", "replace").strip()
    if done.returncode != 0 or err:
        return f"{fmt.name} that cannot be read: {err.splitlines()[-1] if err else done.returncode}", None
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        return f"{fmt.name}: ffprobe output unreadable", None
    streams = [s for s in info.get("streams", [])
               if s.get("codec_type") in ("video", "audio") and s.get("codec_name")
               and int(s.get("nb_read_packets") or 0) > 0
               and not (s.get("disposition") or {}).get("attached_pic")]
    kinds = {s["codec_type"] for s in streams}
    bomb = _av_bomb(info, streams)
    if bomb:
        return f"{fmt.name}: decompression bomb: {bomb}", None
    if not kinds:
        return f"{fmt.name} without a readable video or audio stream", None
    if fmt.kind == MediaKind.AUDIO and "video" in kinds:
        return f"{fmt.name} announced as audio holds video", None
    return "", MediaKind.VIDEO if "video" in kinds else MediaKind.AUDIO


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _av_bomb(info: dict[str, Any], streams: list[dict[str, Any]]) -> str:
    """Why a video/audio file exceeds the limits, or ''."""
    duration = max([_seconds((info.get("format") or {}).get("duration"))]
                   + [_seconds(s.get("duration")) for s in streams])
    if duration > MAX_DURATION_S:
        return f"{duration:.0f} s long, the limit is {MAX_DURATION_S} s"
    for s in streams:
        if s.get("codec_type") != "video":
            continue
        width, height = int(s.get("width") or 0), int(s.get("height") or 0)
        if width * height > MAX_VIDEO_PIXELS:
            return f"{width}x{height} video frames exceed {MAX_VIDEO_PIXELS} pixels"
        frames = int(s.get("nb_read_packets") or 0)
        if frames > MAX_VIDEO_FRAMES:
            return f"{frames} video frames, the limit is {MAX_VIDEO_FRAMES}"
    return ""


# --- ordering ----------------------------------------------------------------------

_DCF_DIR = re.compile(r"^(\d{3})[0-9A-Z_]{5}$", re.IGNORECASE)
_DCF_FILE = re.compile(r"^[0-9A-Z_]{4}(\d{4})\.[0-9A-Z]{3}$", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


def dcf_sequence(relative_path: str) -> tuple[int, ...]:
    """(folder number, file number) for DCF names, else the numbers in the path."""
    parts = relative_path.split("/")
    if len(parts) >= 2:
        d, f = _DCF_DIR.match(parts[-2]), _DCF_FILE.match(parts[-1])
        if d and f and 100 <= int(d.group(1)) <= 999:
            return (int(d.group(1)), int(f.group(1)))
    return tuple(int(n) for n in _DIGITS.findall(relative_path))


def natural_key(relative_path: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.casefold())
                 for t in re.split(r"(\d+)", relative_path) if t)


def capture_order(media: list[MediaFile]) -> list[MediaFile]:
    """The capture-order rule of the module docstring."""
    if media and all(m.capture_time is not None for m in media):
        return sorted(media, key=lambda m: (m.capture_time.replace(tzinfo=None),  # type: ignore[union-attr]
                                            m.sequence, natural_key(m.relative_path)))
    return sorted(media, key=lambda m: (m.sequence, natural_key(m.relative_path)))


# --- the stage ---------------------------------------------------------------------


def scan(
    root: pathlib.Path,
    *,
    reader: MetadataReader | None = None,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    probe_all: Callable[[pathlib.Path, Sequence[_Entry], int], list[_Probed]] | None = None,
) -> ScanResult:
    """Find the media on the card at ``root``; see the module docstring.

    ``probe_all(root, entries, max_pixels)`` probes the files (:func:`probe_entry`
    each, in order) where the caller has processes for it (:mod:`agent.card.workers`);
    by default threads do. Raises StageError CARD_REMOVED (root gone, I/O error)
    or CARD_CHANGED (a file vanished or changed while it was read). Never writes to the card.
    """
    root = pathlib.Path(root)
    skipped: list[SkippedFile] = []
    entries = list(_walk(root, skipped))
    if probe_all is not None:
        probes = probe_all(root, entries, max_pixels)
    else:
        workers = workers or min(4, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            probes = list(pool.map(lambda e: _probe_checked(root, e, max_pixels), entries))

    candidates = [p for p in probes if not p.refusal and not p.unsafe]
    for p in probes:
        if p.unsafe:
            raise StageError(Reason.CARD_CHANGED, f"{p.entry.rel}: {p.unsafe}")
        if p.refusal:
            skipped.append(SkippedFile(p.entry.rel, "refused", Reason.NOT_MEDIA, p.refusal))

    metas: dict[pathlib.Path, md.Metadata] = {p.entry.path: p.meta for p in candidates if p.meta is not None}
    needs_exiftool = [p for p in candidates if p.kind != MediaKind.DICOM and p.meta is None]
    if needs_exiftool:
        own = reader is None
        tool = reader or MetadataReader()
        try:
            metas.update(tool.read([p.entry.path for p in needs_exiftool]))
        finally:
            if own:
                tool.close()
    if _card_gone(root):
        _raise_removed(root, "gone during the scan")

    media: list[MediaFile] = []
    for p in candidates:
        assert p.fmt is not None and p.kind is not None
        capture, dev = p.capture_time, p.device
        if p.kind != MediaKind.DICOM:
            meta = metas.get(p.entry.path, {})
            ftype = md.file_type(meta)
            if "ExifTool:Error" in meta or not ftype:
                why = meta.get("ExifTool:Error", "no file type")
                skipped.append(SkippedFile(p.entry.rel, "refused", Reason.NOT_MEDIA,
                                           f"metadata cannot be read: {why}"))
                continue
            if ftype not in p.fmt.exiftool_types:
                what = "a camera RAW file" if ftype in _RAW_TYPES else f"a {ftype} file"
                skipped.append(SkippedFile(p.entry.rel, "refused", Reason.NOT_MEDIA,
                                           f"not accepted: {what} (looks like {p.fmt.name})"))
                continue
            capture = md.capture_time(meta)
            dev, fields = md.device_sources(meta)
            traits = device_policy.phone_traits(meta)
            if p.fmt.name == "HEIF":
                skipped.append(_heif_refusal(p.entry.rel, dev, traits))
                continue
        else:
            fields = tuple(f"DICOM:{k}={v}" for k, v in (
                ("Manufacturer", dev.make), ("ManufacturerModelName", dev.model),
                ("DeviceSerialNumber", dev.serial)) if v) if dev else ()
            traits = ()
        media.append(MediaFile(
            path=p.entry.path, relative_path=p.entry.rel, kind=p.kind,
            media_type=_media_type(p), size=p.entry.st.st_size, sha256=p.sha256,
            mtime_ns=p.entry.st.st_mtime_ns, capture_time=capture, device=dev or Device(),
            sequence=dcf_sequence(p.entry.rel), device_fields=fields, device_traits=traits,
        ))
    skipped.sort(key=lambda s: s.relative_path)
    ordered = capture_order(media)
    log.debug("scan done", extra={"root": str(root), "media": len(ordered), "skipped": len(skipped)})
    return ScanResult(root=root, media=tuple(ordered), skipped=tuple(skipped))


def _heif_refusal(rel: str, dev: Device, traits: tuple[str, ...]) -> SkippedFile:
    """HEIC/HEIF is recognised but not taken (docs/media.md: exiftool cannot
    remove and prove removed every HEIF metadata item; converting would
    re-encode). A phone's HEIC says so, so that staff hear the real reason."""
    if device_policy.is_phone(dev) or traits:
        name = " ".join(p for p in (dev.make, dev.model) if p) or "a phone"
        return SkippedFile(rel, "refused", Reason.UNREGISTERED_DEVICE,
                           f"a HEIC image taken with {name}, a phone ({'; '.join(traits)[:200]})")
    return SkippedFile(rel, "refused", Reason.FORMAT_NOT_ACCEPTED,
                       "a HEIC/HEIF image: not accepted, its metadata cannot be removed "
                       "verifiably; set the camera to JPEG")


_RAW_TYPES = {"CR2", "CR3", "CRW", "NEF", "NRW", "DNG", "ARW", "SR2", "SRF", "PEF", "ORF", "RW2",
              "RWL", "RAF", "MRW", "X3F", "IIQ", "3FR", "ERF", "MEF", "MOS", "DCR", "KDC", "K25",
              "SRW", "RAW", "GPR"}


def _media_type(p: _Probed) -> str:
    assert p.fmt is not None
    if p.fmt.name in ("MP4", "MOV", "M4A") and p.kind == MediaKind.AUDIO:
        return "audio/mp4"
    return p.fmt.media_type


def probe_entry(root: pathlib.Path, entry: _Entry, max_pixels: int = MAX_PIXELS, *,
                reduce: Reduce | None = None, keep_jpeg: bool = False) -> _Probed:
    """One file of the card probed as :func:`scan` does (for a worker process).
    ``reduce``: decode a JPEG with it (see :data:`Reduce`) and keep its picture;
    ``keep_jpeg``: keep a JPEG's bytes (``data``) when they were read whole."""
    return _probe_checked(root, entry, max_pixels, reduce, keep_jpeg)


def _probe_checked(root: pathlib.Path, entry: _Entry, max_pixels: int,
                   reduce: Reduce | None = None, keep_jpeg: bool = False) -> _Probed:
    try:
        return _probe(entry, max_pixels, reduce, keep_jpeg)
    except FileNotFoundError:
        if _card_gone(root):
            _raise_removed(root, f"gone while reading {entry.rel}")
        raise StageError(Reason.CARD_CHANGED, f"{entry.rel}: vanished during the scan") from None
    except OSError as exc:
        if _card_gone(root, exc):
            _raise_removed(root, f"gone while reading {entry.rel}: {exc.strerror}")
        if exc.errno == errno.ELOOP:
            return _Probed(entry, unsafe="became a symbolic link during the scan")
        return _Probed(entry, refusal=f"cannot be read: {exc.strerror}")
