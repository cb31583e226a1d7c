"""Pictures the web client shows of stored media: thumbnails, full-view
previews and DICOM frames, made on the server from the stored bytes.

Each is decoded and re-encoded from pixels alone (JPEG for photographs, PNG
for DICOM frames), so no metadata of the original (EXIF, XMP, ICC, DICOM
tags, comments) can reach the browser through it. The originals were stripped
on the capture PC already (R4); this is the second wall for what is shown.

Made once per (blob, form) and kept in a bounded in-memory cache: a blob is
content-addressed and never changes, so the cache is never stale. It is never
written to disk, so a purged case (gallring, R19) leaves nothing behind once
the process ends; and it is reached only after the case's own authorization
(a purged case is not found before any cache is consulted).
"""
from __future__ import annotations

import collections
import io
import logging
import threading

import numpy as np
import pydicom
from PIL import Image, ImageOps

from archive_server.errors import InvalidArgument
from archive_server.printing import IMAGE_FORMATS, MAX_PIXELS, _to_8bit

log = logging.getLogger(__name__)

THUMB_PX = 320
PREVIEW_PX = 2560
JPEG_QUALITY = 85
CACHE_BYTES = 64 << 20


class NoPreview(InvalidArgument):
    """The media cannot be shown as a picture (damaged, too large, not an image)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "NO_PREVIEW"


class PreviewCache:
    """Least-recently-used, bounded by bytes; thread-safe."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[tuple[str, str], tuple[bytes, str]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[bytes, str] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: tuple[bytes, str]) -> None:
        size = len(value[0])
        if size > self.max_bytes // 4:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= len(old)


def _jpeg(img: Image.Image, side: int) -> bytes:
    img = _to_8bit(img)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # A new image from the pixels: Pillow writes no EXIF, ICC or comment unless given one.
    Image.frombytes(img.mode, img.size, img.tobytes()).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def image_preview(data: bytes, side: int) -> bytes:
    """A photograph as an upright JPEG at most ``side`` pixels on its long side."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise NoPreview(f"the picture has {img.width}x{img.height} pixels, too many to show")
            if img.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT when the
                # picture is that much larger than asked: a 12 MP photo's
                # thumbnail needs a fraction of the work of a full decode.
                img.draft("RGB", (side, side))
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            return _jpeg(upright, side)
    except NoPreview:
        raise
    except Exception as exc:
        raise NoPreview(f"the file cannot be shown as a picture ({type(exc).__name__})") from None


def _dataset(data: bytes) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise NoPreview(f"the DICOM file cannot be read ({type(exc).__name__})") from None


def dicom_frames(data: bytes) -> int:
    """How many frames the DICOM object has (1 for a still image)."""
    ds = _dataset(data)
    if "PixelData" not in ds:
        return 0
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def dicom_frame(data: bytes, frame: int, side: int) -> bytes:
    """Frame ``frame`` (0-based) as PNG, at most ``side`` pixels on its long side."""
    ds = _dataset(data)
    if "PixelData" not in ds:
        raise NoPreview("the DICOM object has no pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise InvalidArgument(f"frame {frame} does not exist (the object has {frames})")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise NoPreview(f"the DICOM pixel data cannot be decoded ({type(exc).__name__})") from None
    if frames > 1:
        pixels = pixels[frame]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3 and photometric.startswith("YBR"):
        pixels = pydicom.pixels.convert_color_space(pixels, photometric, "RGB")
    if pixels.ndim == 2:
        a = pixels.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
        if photometric == "MONOCHROME1":
            a = 255.0 - a
        img = Image.fromarray(a.astype(np.uint8), "L")
    else:
        img = Image.fromarray(pixels.astype(np.uint8)[..., :3], "RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def make(data: bytes, kind: str, form: str, frame: int = 0) -> tuple[bytes, str]:
    """The picture of ``form`` (thumb, preview, frame) for media of ``kind``: (bytes, content type)."""
    side = THUMB_PX if form == "thumb" else PREVIEW_PX
    if kind == "dicom":
        return dicom_frame(data, frame, side), "image/png"
    if kind == "image":
        return image_preview(data, side), "image/jpeg"
    raise NoPreview(f"{kind} media has no picture to show; open it in the full view")
