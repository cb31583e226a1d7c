"""Declared sizes of a DICOM file, checked before anything is decoded or inflated.

A decoder allocates what a header says, not what the file holds: a 2 KiB file
whose JPEG 2000 header declares 2,883,840 x 1024 pixels made openjpeg ask for
5.6 GiB, and a small deflate bomb inflates to gigabytes inside pydicom's read
(both found by fuzzing, issue 13). The strip stage (:mod:`agent.card.strip.dicom`)
asks these functions first and refuses with their sentence.
"""
from __future__ import annotations

import zlib

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    UID,
)

#: Files above this are refused: the file, the parsed dataset and the written copy
#: are all held in memory.
MAX_BYTES = 1 << 30
#: A decoded frame (rows x columns x samples x bytes per sample) above this is
#: refused before anything is decoded: the original's frame, the copy's and their
#: comparison are held in memory at once (an 8K RGB frame at 16 bits is 200 MiB).
MAX_FRAME_BYTES = 256 * 1024 * 1024

PIXEL_TAGS = frozenset(int(tag_for_keyword(k) or 0) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
NATIVE_LE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}


def _codestream_shape(frame: bytes, syntax: UID) -> tuple[int, int, int]:
    """(rows, columns, components) a JPEG-family frame declares in its own header,
    read without decoding. A JPEG whose SOF declares 0 lines (the height follows in
    a DNL segment) is refused by the caller: its size is unknown until decoded."""
    if syntax in JPEG2000TransferSyntaxes:
        import openjpeg  # pylibjpeg-openjpeg: the decoder pydicom uses for these

        p = openjpeg.get_parameters(frame, j2k_format=0)
        return int(p["rows"]), int(p["columns"]), int(p["samples_per_pixel"])
    return _jpeg_frame_header(frame)


# Start-of-frame markers: SOF0-SOF15 without DHT/JPG/DAC, and JPEG-LS's SOF55.
_JPEG_SOF = (set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}) | {0xF7}


def _jpeg_frame_header(frame: bytes) -> tuple[int, int, int]:
    """(lines, samples per line, components) from a JPEG or JPEG-LS frame's SOF
    segment, walking the marker segments that come before it (ISO 10918-1 B.2)."""
    if frame[:2] != b"\xff\xd8":
        raise ValueError("frame does not start with a JPEG SOI marker")
    at = 2
    while at + 4 <= len(frame):
        if frame[at] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {at}")
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(frame[at + 2:at + 4], "big")
        if marker in _JPEG_SOF:
            if length < 8 or at + 10 > len(frame):
                raise ValueError("truncated JPEG frame header")
            return (int.from_bytes(frame[at + 5:at + 7], "big"),
                    int.from_bytes(frame[at + 7:at + 9], "big"), frame[at + 9])
        if marker == 0xDA or length < 2:
            break
        at += 2 + length
    raise ValueError("no JPEG frame header before the image data")


def inflated_size_problem(data: bytes) -> str | None:
    """Why a Deflated Explicit VR Little Endian file is refused before pydicom reads
    it, or None. pydicom inflates the whole dataset in one call; a small deflate
    bomb would inflate to gigabytes, so it is inflated here first, in steps, and
    refused beyond MAX_BYTES. The file meta group's length is mandatory (type 1)."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return None  # pydicom's own read refuses or handles it
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    if DeflatedExplicitVRLittleEndian.encode() not in data[132:meta_end]:
        return None
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[meta_end:], 0
    try:
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, 1 << 20))
            if total > MAX_BYTES:
                return f"the deflated dataset inflates to more than {MAX_BYTES} bytes"
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        return f"the deflated dataset cannot be inflated: {exc}"
    return None


def declared_size_problem(src: Dataset, syntax: UID) -> str | None:
    """Why the pixel sizes ``src`` declares cannot be decoded safely, or None.

    A decoder allocates what the header says, not what the file holds: a 2 KiB
    file whose JPEG 2000 header declares 2,883,840 x 1024 pixels made openjpeg
    ask for 5.6 GiB (found by fuzzing). So before any decoding: the frame size
    the DICOM header declares must be positive and at most MAX_FRAME_BYTES;
    native pixel data must hold every declared frame; and every encapsulated
    JPEG-family frame's own header must declare the DICOM header's rows, columns
    and samples.
    """
    try:
        rows, columns = int(src.get("Rows") or 0), int(src.get("Columns") or 0)
        samples = int(src.get("SamplesPerPixel") or 1)
        bits = int(src.get("BitsAllocated") or 0)
        frames = int(src.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        return f"pixel size elements are not numbers: {exc}"
    if min(rows, columns, samples, bits, frames) <= 0:
        return f"declared pixel size {rows} x {columns} x {samples} at {bits} bits, {frames} frame(s)"
    frame_bytes = (rows * columns * samples * bits + 7) // 8
    if frame_bytes > MAX_FRAME_BYTES:
        return (f"one frame of {rows} x {columns} x {samples} at {bits} bits would take "
                f"{frame_bytes} bytes, more than the {MAX_FRAME_BYTES} this agent decodes")
    pixel_tag = next(t for t in PIXEL_TAGS if t in src)
    pixels = src[pixel_tag].value or b""
    if syntax in NATIVE_LE or syntax == ExplicitVRBigEndian:
        total_bits = frames * rows * columns * samples * bits
        if str(src.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
            total_bits = total_bits * 2 // 3  # two samples stored per pixel
        if (total_bits + 7) // 8 > len(pixels):
            return (f"{frames} frame(s) of {rows} x {columns} x {samples} at {bits} bits "
                    f"declared, but the pixel data holds {len(pixels)} bytes")
        return None
    if not (syntax in JPEG2000TransferSyntaxes or syntax in JPEGTransferSyntaxes
            or syntax in JPEGLSTransferSyntaxes):
        return None  # RLE and others: the decoder sizes its output from the DICOM header
    extended = None
    if "ExtendedOffsetTable" in src and "ExtendedOffsetTableLengths" in src:
        extended = (src.ExtendedOffsetTable, src.ExtendedOffsetTableLengths)
    try:
        for n, frame in enumerate(generate_frames(pixels, number_of_frames=frames,
                                                  extended_offsets=extended)):
            shape = _codestream_shape(frame, syntax)
            if shape != (rows, columns, samples):
                return (f"frame {n}'s {syntax.name} header declares {shape[0]} x {shape[1]} x "
                        f"{shape[2]}, the DICOM header {rows} x {columns} x {samples}")
    except Exception as exc:  # noqa: BLE001 - any unreadable frame header refuses
        return f"encapsulated frames cannot be read: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return None
