"""WAV (RIFF WAVE): only ``fmt ``, ``fact`` (non-PCM) and ``data`` are kept,
each byte-identical (re-parsed, hashed, and ffmpeg's stream hash compared)."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pathlib
import subprocess
import uuid
from collections.abc import Mapping

from agent.card.model import MediaFile, StrippedFile
from agent.card.strip.av import streamhash
from agent.card.strip.common import CHUNK, copy_from_card, fail, fsync, sha256_file

log = logging.getLogger(__name__)

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
        chunk = src.read(min(n, CHUNK))
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
        copy_from_card(media, work)
        size = work.stat().st_size
        with open(work, "rb") as src:
            try:
                found, others, riff_end = _wav_layout(src, size)
                fmt = _read_at(src, *found[b"fmt "])
                _, pcm = _wav_format(fmt)
            except WavError as exc:
                raise fail(media, f"WAV cannot be stripped: {exc}") from None
            keep = [c for c in WAV_CHUNKS if c in found and not (c == b"fact" and pcm)]
            dropped = others + ([b"fact"] if b"fact" in found and b"fact" not in keep else [])
            body = sum(8 + found[c][1] + (found[c][1] & 1) for c in keep)
            if 4 + body > 0xFFFFFFFF:  # pragma: no cover - cannot come from a RIFF file
                raise fail(media, "stripped WAV would exceed 4 GiB")
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
        fsync(spool_dir)
        if dropped or riff_end != size:
            log.debug("wav chunks dropped", extra={
                "file": media.relative_path,
                "chunks": [c.decode("latin-1") for c in dropped],
                "bytes_after_riff": size - riff_end})
        sha, out_size = sha256_file(out)
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
            raise fail(media, f"stripped WAV failed verification: {exc}") from None
    try:
        a, b = wav_streamhash(original), wav_streamhash(stripped)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise fail(media, f"audio streams cannot be compared: {exc}") from None
    if not a.strip() or a != b:
        raise fail(media, "audio packets differ from the original")
