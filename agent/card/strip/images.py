"""PNG and TIFF, rewritten by exiftool (``-all=``, the ICC profile and
Orientation kept) and proven: PNG's image chunks byte-identical, and both
decoded by Pillow to the same pixels and ICC profile as the original."""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import pathlib
from collections.abc import Sequence

from PIL import Image

from agent.card.metadata import MetadataReader
from agent.card.model import MediaFile
from agent.card.strip.common import Written, fail, spool_pair
from agent.card.strip.jpeg import ORIENTATION_TAG

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


def _png_image_data(chunks: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    return (tuple((k, v) for k, v in chunks if k in _PNG_IMAGE),
            b"".join(v for k, v in chunks if k == b"IDAT"))


#: exiftool arguments for the formats exiftool rewrites (PNG, TIFF). JPEG is
#: rewritten by :func:`rewrite_jpeg`; video and audio are remuxed by ffmpeg.
STRIP_ARGS: dict[str, tuple[str, ...]] = {
    "image/png": ("-all=", "--icc_profile:all", "-tagsFromFile", "@", "-IFD0:Orientation"),
    "image/tiff": ("-all=", "--icc_profile:all",
                   *(f"-IFD0:{t}=" for t in ("Make", "Model", "Software", "Artist", "Copyright",
                                              "ImageDescription", "ModifyDate", "HostComputer",
                                              "DocumentName", "PageName", "DateTime"))),
}


def _pillow_orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as im:
        value = im.getexif().get(ORIENTATION_TAG)
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def strip_with_exiftool(media: MediaFile, spool_dir: pathlib.Path, reader: MetadataReader) -> Written:
    work, out = spool_pair(media, spool_dir)
    try:
        status, _, err = reader.run(*STRIP_ARGS[media.media_type], "-o", out, work)
        if status != 0 or not out.exists():
            raise fail(media, f"exiftool could not write a stripped copy: {err.strip() or status}")
        os.chmod(out, 0o600)
        original, stripped = work.read_bytes(), out.read_bytes()
        _verify_image(media, original, stripped)
        return Written(media, out, _pillow_orientation(original))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        work.unlink(missing_ok=True)


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
            raise fail(media, f"PNG structure unreadable: {exc}") from None
        extra = sorted({k.decode("latin-1") for k, _ in chunks_out if k not in _PNG_ALLOWED})
        if extra:
            raise fail(media, f"stripped PNG still holds chunks {', '.join(extra)}")
        if _png_image_data(chunks_in) != _png_image_data(chunks_out):
            raise fail(media, "PNG image data differ from the original")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_decoded, original), pool.submit(_decoded, stripped)]
    try:
        a, b = (f.result() for f in futures)
    except Exception as exc:  # noqa: BLE001 - any decoder failure refuses
        raise fail(media, f"stripped copy does not decode: {exc}") from None
    if a[:3] != b[:3]:
        raise fail(media, "decoded pixels differ from the original")
    if a[3] != b[3]:
        raise fail(media, "ICC colour profile not kept")
