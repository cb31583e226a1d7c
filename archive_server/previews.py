"""Pictures the web client shows of stored media: thumbnails, full-view
previews and DICOM frames, made on the server from the stored bytes.

Each is decoded and re-encoded from pixels alone (JPEG for photographs and
video frames, PNG for DICOM frames and audio waveforms), so no metadata of the
original (EXIF, XMP, ICC, QuickTime keys, DICOM tags, comments) can reach the
browser through it. The originals were stripped on the capture PC already
(R4); this is the second wall for what is shown.

A video's picture is a frame decoded with PyAV (as the agent reads videos)
from the middle of the clip: staff film the patient label first and last (R3),
the middle shows what the clip is of. It is turned upright by the stream's
display matrix. An audio recording's picture is its waveform (loudness over
the whole recording, decoded with PyAV) with its length in minutes and seconds.

Made once per (blob, form) and kept in a bounded in-memory cache: a blob is
content-addressed and never changes, so the cache is never stale. It is never
written to disk, so a purged case (gallring, R19) leaves nothing behind once
the process ends; and it is reached only after the case's own authorization
(a purged case is not found before any cache is consulted).

The decoding itself runs in a worker process (:mod:`archive_server.decoding`:
no database, no keys, bounded memory and time): callers use
:func:`made_apart` and :func:`count_frames`, which run :func:`make` and
:func:`dicom_frames` there.
"""
from __future__ import annotations

import collections
import io
import logging
import threading
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont, ImageOps

from archive_server import decoding
from archive_server.errors import InvalidArgument
from archive_server.printing import FONT_DIR, FONT_FILES, IMAGE_FORMATS, MAX_PIXELS, _to_8bit

log = logging.getLogger(__name__)

THUMB_PX = 320
PREVIEW_PX = 2560
JPEG_QUALITY = 85
CACHE_BYTES = 64 << 20
# A video's frame is looked for among at most this many decoded after the seek
# (a clip with few key frames decodes from the one before the middle).
MAX_VIDEO_FRAMES = 600
# The key frame before the middle will do when it lies this far into the clip
# (a 1080p clip then decodes one frame, not the seconds up to the middle).
MIDDLE_FROM = 0.3
# An audio waveform: its size, the loudness resolution it is drawn from
# (peaks of 10 ms), and how much of a recording is read for it at most.
WAVE_SIZE = (THUMB_PX, 180)
WAVE_RATE = 8000
WAVE_BLOCK = 80
MAX_AUDIO_SECONDS = 4 * 3600


class NoPreview(InvalidArgument):
    """The media cannot be shown as a picture (damaged, too large, not an image)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "NO_PREVIEW"


def _undecodable(what: str, exc: BaseException) -> NoPreview:
    """The refusal staff read (``what`` cannot be shown; the original is kept and can
    be downloaded); the decoder's own words go to the log, not to the page."""
    log.info("no preview: %s: %s: %s", what, type(exc).__name__, exc)
    return NoPreview(f"{what} cannot be shown here: it may be damaged or in a form the viewer cannot "
                     "decode; the stored original is unchanged and can be downloaded")


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
        raise _undecodable("the picture", exc) from None


def _dataset(data: bytes) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise _undecodable("the DICOM image", exc) from None


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
        raise _undecodable("the DICOM image", exc) from None
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


def _video_container(data: bytes) -> object:
    import av

    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _undecodable("the video or recording", exc) from None


def video_frame(data: bytes, side: int) -> bytes:
    """A frame from the middle of the clip (the first at or after 30 % of it, from
    the key frame before the middle) as an upright JPEG, at most ``side`` on its long side."""
    import av

    container: Any = _video_container(data)
    try:
        if not container.streams.video:
            raise NoPreview("the file has no picture (no video stream)")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
        if width * height > MAX_PIXELS:
            raise NoPreview(f"the video has {width}x{height} pixels, too many to show")
        start, base = stream.start_time or 0, stream.time_base
        seconds = float(stream.duration * base) if stream.duration and base else \
            (container.duration or 0) / 1_000_000
        middle, early = seconds / 2, seconds * MIDDLE_FROM
        if middle > 0 and base:
            container.seek(start + int(middle / base), stream=stream, backward=True, any_frame=False)
        picked = None
        for count, decoded in enumerate(container.decode(stream)):
            picked = decoded
            at = float((decoded.pts - start) * base) if decoded.pts is not None and base else middle
            if at >= early or count + 1 >= MAX_VIDEO_FRAMES:
                break
        if picked is None:
            raise NoPreview("no frame of the video can be decoded")
        img = picked.to_image()
        rotation = int(getattr(picked, "rotation", 0) or 0) % 360
        if rotation:  # counter-clockwise to show it upright, as PIL turns
            img = img.rotate(rotation, expand=True)
        return _jpeg(img, side)
    except NoPreview:
        raise
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise _undecodable("the video", exc) from None
    finally:
        container.close()


def _audio_peaks(data: bytes) -> tuple[np.ndarray, float]:
    """Loudness peaks (0..1) of 10 ms blocks of the first audio stream, mixed to
    mono; and the recording's length in seconds."""
    import av

    container: Any = _video_container(data)
    try:
        if not container.streams.audio:
            raise NoPreview("the file has no sound (no audio stream)")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=WAVE_RATE)
        peaks: list[np.ndarray] = []
        samples, rest = 0, np.zeros(0, dtype=np.int16)
        for decoded in container.decode(stream):
            for mono in resampler.resample(decoded):
                chunk = np.concatenate([rest, mono.to_ndarray().reshape(-1)])
                whole = len(chunk) // WAVE_BLOCK * WAVE_BLOCK
                if whole:
                    blocks = np.abs(chunk[:whole].astype(np.int32)).reshape(-1, WAVE_BLOCK)
                    peaks.append(blocks.max(axis=1) / 32768.0)
                rest = chunk[whole:]
                samples += mono.samples
            if samples >= MAX_AUDIO_SECONDS * WAVE_RATE:
                break
    except NoPreview:
        raise
    except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
        raise _undecodable("the recording", exc) from None
    finally:
        container.close()
    if not samples:
        raise NoPreview("the recording has no sound that can be decoded")
    return (np.concatenate(peaks) if peaks else np.zeros(1)), samples / WAVE_RATE


def audio_waveform(data: bytes) -> bytes:
    """The recording's waveform with its length ("3:07") as a PNG of :data:`WAVE_SIZE`."""
    peaks, seconds = _audio_peaks(data)
    width, height = WAVE_SIZE
    img = Image.new("RGB", WAVE_SIZE, (31, 53, 71))
    draw = ImageDraw.Draw(img)
    # Each column of pixels shows the loudest peak of its stretch of the recording.
    edges = np.linspace(0, len(peaks), width - 16 + 1).astype(int)
    loudest = max(float(peaks.max()), 1e-3)
    middle, reach = height // 2 - 10, height // 2 - 28
    for x, (a, b) in enumerate(zip(edges[:-1], edges[1:]), start=8):
        level = float(peaks[a:max(b, a + 1)].max()) / loudest
        span = max(1, int(level * reach))
        draw.line([(x, middle - span), (x, middle + span)], fill=(120, 200, 235))
    draw.line([(8, middle), (width - 8, middle)], fill=(120, 200, 235))
    total = int(round(seconds))
    length = f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}" if total >= 3600 else f"{total // 60}:{total % 60:02d}"
    try:
        font: Any = ImageFont.truetype(str(FONT_DIR / FONT_FILES["DejaVuSans-Bold"]), 20)
    except OSError:
        font = ImageFont.load_default()
    draw.text((width // 2, height - 14), length, fill=(255, 255, 255), font=font, anchor="ms")
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
    if kind == "video" and form in ("thumb", "preview"):
        return video_frame(data, side), "image/jpeg"
    if kind == "audio" and form in ("thumb", "preview"):
        return audio_waveform(data), "image/png"
    raise NoPreview(f"{kind} media has no picture to show; open it in the full view")


_WHAT = {"image": "the picture", "video": "the video", "audio": "the recording", "dicom": "the DICOM image"}


def made_apart(data: bytes, kind: str, form: str, frame: int = 0) -> tuple[bytes, str]:
    """:func:`make` in a decoder worker; a worker that crashes, overruns its memory or its
    time is a :class:`NoPreview` like any other file that cannot be shown."""
    try:
        return decoding.run(make, data, kind, form, frame)
    except decoding.Undecodable as exc:
        raise _undecodable(_WHAT.get(kind, "the file"), exc) from None


def count_frames(data: bytes) -> int:
    """:func:`dicom_frames` in a decoder worker."""
    try:
        return decoding.run(dicom_frames, data)
    except decoding.Undecodable as exc:
        raise _undecodable("the DICOM image", exc) from None
