"""Frames of a video where the patient label is shown: the first and last seconds (R3).

Staff film the label at the start and at the end of a clip, as they photograph
it first and last in a photo series. :func:`sample_frames` decodes only those
two windows (it seeks near the end instead of decoding the whole clip) and
returns a few frames per second from each, upright (the stream's rotation, from
its display matrix, is applied). The barcode and OCR readers then read them.

Errors: a file PyAV cannot open or decode, or one without a video stream,
raises :class:`VideoUnreadable`; the caller refuses the card with a reason.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:  # PyAV is imported where a video is read, not at start
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream


class VideoUnreadable(Exception):
    """The file is not a decodable video (no video stream, broken container or stream).

    Raised by :func:`probe` and :func:`sample_frames`. Refuse the file; the same
    bytes fail the same way.
    """

    def __init__(self, path: pathlib.Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    duration_s: float  # 0.0 when the container does not say
    codec: str  # e.g. "h264", "hevc", "mjpeg"
    width: int
    height: int
    fps: float  # average frame rate, 0.0 when unknown
    frame_count: int  # from the container, 0 when unknown
    rotation: int  # degrees counter-clockwise to show it upright (display matrix), 0 when none


def _open(path: pathlib.Path) -> InputContainer:
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoUnreadable(path, f"cannot open: {type(e).__name__}: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoUnreadable(path, "no video stream")
    return container


def _duration(container: InputContainer, stream: VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # av.time_base
    return 0.0


def probe(path: pathlib.Path) -> VideoInfo:
    """Duration, codec, size, frame rate and rotation of the first video stream."""
    import av

    path = pathlib.Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        rotation = 0
        try:
            # The display matrix lives on frames (PyAV >= 13); decode one to learn it.
            for frame in container.decode(stream):
                rotation = int(getattr(frame, "rotation", 0) or 0)
                break
        except av.FFmpegError as e:
            raise VideoUnreadable(path, f"first frame does not decode: {e}") from e
        return VideoInfo(
            duration_s=_duration(container, stream),
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate) if rate else 0.0,
            frame_count=int(stream.frames or 0),
            rotation=rotation,
        )
    finally:
        container.close()


def _upright(frame: VideoFrame) -> Image.Image:
    img: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]  # PyAV leaves it unannotated
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation:
        # `rotation` is counter-clockwise to display; PIL rotates counter-clockwise too.
        img = img.rotate(rotation, expand=True)
    return img


def _frame_index(frame: VideoFrame, stream: VideoStream, fps: float) -> int:
    if frame.pts is None or stream.time_base is None or not fps:
        return -1
    start = stream.start_time or 0
    return int(round(float((frame.pts - start) * stream.time_base) * fps))


def _decode_window(container: InputContainer, stream: VideoStream, path: pathlib.Path, t0: float, t1: float | None, targets: list[float],
                   fps: float, seek: bool) -> list[tuple[int, float, Image.Image]]:
    """Decode frames with time in [t0, t1) (t1 None: to the end); for each target time,
    keep the first frame at or after it; also keep the window's last frame."""
    import av

    start = stream.start_time or 0
    time_base = stream.time_base
    if time_base is None:
        raise VideoUnreadable(path, "the video stream has no time base")
    if seek and t0 > 0:
        try:
            container.seek(int(t0 / time_base) + start, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as e:
            raise VideoUnreadable(path, f"cannot seek to {t0:.2f} s: {e}") from e
    picked: list[tuple[int, float, Image.Image]] = []
    pending = sorted(targets)
    last = None
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float((frame.pts - start) * time_base)
            if t < t0 - 1e-6:
                continue
            if t1 is not None and t >= t1:
                break
            last = (frame, t)
            if pending and t + 1e-6 >= pending[0]:
                while pending and t + 1e-6 >= pending[0]:
                    pending.pop(0)
                picked.append((_frame_index(frame, stream, fps), t, _upright(frame)))
    except av.FFmpegError as e:
        raise VideoUnreadable(path, f"does not decode: {type(e).__name__}: {e}") from e
    if last is not None and (not picked or picked[-1][1] != last[1]):
        frame, t = last
        picked.append((_frame_index(frame, stream, fps), t, _upright(frame)))
    return picked


def sample_frames(path: pathlib.Path, seconds: float = 2.0, per_second: int = 2) -> list[tuple[int, Image.Image]]:
    """Frames from the first and the last ``seconds`` of the video, ``per_second`` of each second.

    Returns ``(frame_index, image)`` pairs in time order, without duplicates; the
    very first and very last decodable frames are always included. A clip shorter
    than ``2 * seconds`` is sampled over its whole length (the windows overlap).
    ``frame_index`` is the frame's number from the start (time x frame rate).
    """
    path = pathlib.Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        duration = _duration(container, stream)
        step = 1.0 / max(1, per_second)
        first_targets = [k * step for k in range(max(1, int(math.ceil(seconds * per_second))))]
        if duration <= 0 or duration <= 2 * seconds:
            # Short (or unknown length): one pass over everything.
            targets = [k * step for k in range(max(1, int(math.ceil(max(duration, seconds) * per_second)) + 1))]
            picked = _decode_window(container, stream, path, 0.0, None, targets, fps, seek=False)
        else:
            head = _decode_window(container, stream, path, 0.0, seconds, first_targets, fps, seek=False)
            tail_start = duration - seconds
            tail_targets = [tail_start + k * step for k in range(len(first_targets))]
            tail = _decode_window(container, stream, path, tail_start, None, tail_targets, fps, seek=True)
            picked = head + tail
        if not picked:
            raise VideoUnreadable(path, "no frame decodes")
        out: list[tuple[int, Image.Image]] = []
        seen: set[float] = set()
        for index, t, img in sorted(picked, key=lambda p: p[1]):
            if t in seen:
                continue
            seen.add(t)
            out.append((index, img))
        return out
    finally:
        container.close()
