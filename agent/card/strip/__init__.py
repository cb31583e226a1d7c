"""Strip stage: a metadata-free, losslessly identical copy of each media file (R7).

:func:`strip_all` never touches the card. For each file it reads the card's
bytes (checking them against the scan's SHA-256, so what is stripped is
exactly what was scanned), writes a stripped copy into the spool (mode 0600)
and checks it; then one exiftool call reads every copy back against an
allow-list. Each copy is fsynced (by a thread) as soon as it is written, and
all are durable before the call returns. The first failure removes what the
call wrote and raises. docs/media.md has the per-format table and figures.

Where it runs: in the pipeline each file is stripped in the card's confined
reader processes (``parsers``: :class:`agent.card.workers.CardReaders`, as
``bildsluss-parse`` in the daemon) and its copy taken back by root
(:mod:`.takeback`); the read-back's exiftool is confined too. Called without
``parsers`` (tests, benchmarks), this process strips each file itself.

One module per format family, each with a ``strip_…`` function that writes a
checked copy: :mod:`.jpeg`, :mod:`.images` (PNG, TIFF through exiftool),
:mod:`.av` (video and audio through ffmpeg), :mod:`.wav`, :mod:`.dicom`;
:mod:`.common` reads the card and writes the spool for all of them and
:mod:`.readback` holds the allow-list every copy is read back against. A new
format is a new module and one line in :func:`write_one`.

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
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from agent.card import sandbox
from agent.card.metadata import MetadataReader
from agent.card.model import MediaFile, StrippedFile
from agent.card.strip.av import REMUX, remux
from agent.card.strip.common import Written, fail, fsync, sha256_file
from agent.card.strip.images import STRIP_ARGS, strip_with_exiftool
from agent.card.strip.jpeg import jpeg_structure_problems, strip_jpeg
from agent.card.strip.readback import WAV_TYPES, forbidden_tags, read_back
from agent.card.strip.wav import strip_wav

__all__ = ["Parsers", "Written", "forbidden_tags", "jpeg_structure_problems", "read_back_ahead", "strip",
           "strip_ahead", "strip_all", "write_one"]

_DICOM_TYPES = {"application/dicom"}
# Threads that fsync the written copies while the next ones are stripped.
_FSYNC_THREADS = 4
# Files given to the reader processes ahead of the one taken back (strip_all's ``parsers``).
_STRIP_WINDOW = 4
_NOT_ACCEPTED = {
    "image/heic": "HEIC/HEIF is not accepted (docs/media.md): exiftool cannot remove and prove "
                  "removed every HEIF metadata item",
}


class Parsers(Protocol):
    """Where :func:`strip_all` has each file stripped when not in this process: the
    card's confined reader processes (:class:`agent.card.workers.CardReaders`)."""

    #: The confinement of the exiftool that reads root's copies back (None: not confined).
    readback_confinement: sandbox.Confinement | None

    def strip_later(self, media: MediaFile) -> concurrent.futures.Future[Written | None]:
        """``media`` stripped by a parser, into its own folder."""
        ...  # pragma: no cover

    def take_back(self, future: concurrent.futures.Future[Written | None], media: MediaFile) -> Written:
        """Wait for ``future`` and take its copy back (:class:`.takeback.TakeBack`): root's copy."""
        ...  # pragma: no cover


@contextlib.contextmanager
def _reader(tool: MetadataReader | None, confinement: sandbox.Confinement | None = None
            ) -> Iterator[MetadataReader]:
    if tool is not None:
        yield tool
        return
    with MetadataReader(confinement=confinement) as own:
        yield own


def write_one(media: MediaFile, spool_dir: pathlib.Path, reader: Callable[[], MetadataReader]) -> Written:
    """One file's checked copy in ``spool_dir`` (``reader``: the exiftool that
    rewrites PNG and TIFF, asked for only then)."""
    if media.media_type in _DICOM_TYPES:
        from agent.card.strip.dicom import strip_dicom  # pydicom + numpy only when needed

        # strip_dicom verifies its copy with pydicom against its whitelist; the
        # exiftool read-back adds an independent deny-list (_DICOM_FORBIDDEN).
        done = strip_dicom(media, spool_dir)
        return Written(media, done.spool_path, sha256=done.sha256, size=done.size)
    if media.media_type in WAV_TYPES:
        done = strip_wav(media, spool_dir)
        return Written(media, done.spool_path, sha256=done.sha256, size=done.size)
    if media.media_type in _NOT_ACCEPTED:
        raise fail(media, _NOT_ACCEPTED[media.media_type])
    if media.media_type == "image/jpeg":
        return strip_jpeg(media, spool_dir)
    if media.media_type in STRIP_ARGS:
        return strip_with_exiftool(media, spool_dir, reader())
    if media.media_type in REMUX:
        return remux(media, spool_dir)
    raise fail(media, f"stripping {media.media_type} is not supported")


def strip_ahead(media: MediaFile, spool_dir: pathlib.Path, data: bytes | None = None) -> Written | None:
    """A JPEG's checked copy written while the card is still being read (in the
    pipeline by the reader process that scanned it, from the bytes it hashed:
    ``data``), for :func:`strip_all`'s ``ahead``; None for another format. Raises
    what :func:`strip_jpeg` raises (the caller drops it: :func:`strip_all` strips
    that file again and judges)."""
    if media.media_type != "image/jpeg":
        return None
    return strip_jpeg(media, spool_dir, data)


def read_back_ahead(written: Sequence[Written], reader: MetadataReader) -> None:
    """The read-back of copies :func:`strip_ahead` wrote, while the card is still
    read (on the exiftool thread of :mod:`agent.card.workers`). Each passes as a
    whole batch or not at all: a batch with any failure is left for
    :func:`strip_all`, which reads it back again and judges after the decision."""
    try:
        read_back(written, reader)
    except Exception:  # StageError, or exiftool's own: strip_all reads these again
        return
    for w in written:
        w.read_back_done = True


def strip_all(media: Sequence[MediaFile], spool_dir: pathlib.Path, *,
              tool: MetadataReader | None = None,
              progress: Callable[[int, int], None] | None = None,
              ahead: Mapping[tuple[str, str], Written] | None = None,
              parsers: Parsers | None = None) -> list[StrippedFile]:
    """Write a verified metadata-free copy of every file into ``spool_dir``.

    Each copy is written and checked (structure, image data, pixels or
    packets), then all are read back by the one exiftool (one request for the
    JPEGs, one for the rest); each is fsynced as soon as it is written.
    ``ahead``: copies :func:`strip_ahead` wrote for files of the same path and
    SHA-256 while the card was read; they are used as written (read back like
    the rest, unless :func:`read_back_ahead` did; fsynced), and any not used is
    removed.
    ``parsers``: each file is stripped there (a few at once, in the card's
    confined reader processes) and its copy taken back into ``spool_dir`` by
    this process (:mod:`.takeback`; ``ahead`` holds root's copies too);
    ``tool`` (or one of ``parsers.readback_confinement``) reads back.
    Without, this process strips each file itself (tests, benchmarks).
    Raises StageError STRIP_FAILED (unsupported format, any leftover
    metadata, any difference in image or stream data, a copy not taken back) or
    CARD_CHANGED (the card's bytes are not what the scan hashed); on error
    nothing this call wrote is left in the spool. The card is only read.
    """
    spool_dir = pathlib.Path(spool_dir)
    written: list[Written] = []
    ahead = dict(ahead or {})
    later: dict[int, concurrent.futures.Future[Written | None]] = {}
    # Each copy is fsynced by a thread as soon as it is written (fsync releases
    # the GIL): the disk works while the next files are stripped and read back,
    # instead of 100 fsyncs one after another at the end. All are waited for.
    with concurrent.futures.ThreadPoolExecutor(max_workers=_FSYNC_THREADS,
                                               thread_name_prefix="spool-fsync") as syncer:
        synced: list[concurrent.futures.Future[None]] = []
        try:
            with _reader(tool, parsers.readback_confinement if parsers is not None else None) as reader:
                todo = [i for i, m in enumerate(media) if (m.relative_path, m.sha256) not in ahead]
                done_bytes = 0
                for i, m in enumerate(media):
                    while parsers is not None and todo and len(later) < _STRIP_WINDOW:
                        # A few files at a time ahead of the one taken back: the
                        # reader processes strip side by side, and the spool holds
                        # only a few parsers' copies beside root's at once.
                        j = todo.pop(0)
                        later[j] = parsers.strip_later(media[j])
                    early = ahead.pop((m.relative_path, m.sha256), None)
                    if early is not None and (early.media.path, early.media.media_type) == (m.path, m.media_type):
                        written.append(dataclasses.replace(early, media=m))
                    elif parsers is not None:
                        future = later.pop(i) if i in later else parsers.strip_later(m)
                        written.append(parsers.take_back(future, m))
                    else:
                        written.append(write_one(m, spool_dir, lambda: reader))
                    if early is not None and written[-1].out != early.out:
                        early.out.unlink(missing_ok=True)  # of another file: not used
                    synced.append(syncer.submit(fsync, written[-1].out))
                    done_bytes += m.size
                    if progress is not None:
                        progress(len(written), done_bytes)
                read_back(written, reader)
            done = []
            for w, sync in zip(written, synced):
                sync.result()
                if parsers is not None:
                    os.chmod(w.out, 0o600)  # read back: root's own again (R11)
                sha, size = (w.sha256, w.size) if w.sha256 else sha256_file(w.out)
                done.append(StrippedFile(source=w.media, spool_path=w.out, sha256=sha, size=size))
            fsync(spool_dir)
            return done
        except BaseException:
            for future in later.values():
                future.cancel()
            concurrent.futures.wait(synced)
            for w in written:
                w.out.unlink(missing_ok=True)
            raise
        finally:
            for unused in ahead.values():  # files the scan did not take as media
                unused.out.unlink(missing_ok=True)


def strip(media: MediaFile, spool_dir: pathlib.Path, *,
          tool: MetadataReader | None = None) -> StrippedFile:
    """:func:`strip_all` of one file."""
    return strip_all([media], spool_dir, tool=tool)[0]
