"""Video: the label is read from the first and last seconds (R3)."""
import pathlib
import subprocess

import av
import pytest
import zxingcpp
from PIL import Image

from bildsluss_common.identity.numbers import parse
from bildsluss_common.readers.ocr import read_printed_numbers
from agent.card.video import VideoUnreadable, probe, sample_frames
from tests.support.labels import render_label

NUMBER = "19121212-1212"


def _make_video(path: pathlib.Path, seconds: float, fps: int = 10, size=(640, 480), label_seconds: float = 1.0) -> pathlib.Path:
    """H.264 MP4: the label during the first and last `label_seconds`, plain skin between."""
    label = render_label(NUMBER, symbology="Code128", size=440, scene_size=size, jpeg_quality=None, seed=1).image
    plain = Image.new("RGB", size, (200, 140, 110))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        n = int(round(seconds * fps))
        for i in range(n):
            t = i / fps
            img = label if (t < label_seconds or t >= seconds - label_seconds) else plain
            for packet in s.encode(av.VideoFrame.from_image(img)):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def _barcodes(img: Image.Image) -> set[str]:
    return {b.text for b in zxingcpp.read_barcodes(img)}


def test_probe(tmp_path):
    info = probe(_make_video(tmp_path / "a.mp4", 6))
    assert info.codec == "h264" and (info.width, info.height) == (640, 480)
    assert info.duration_s == pytest.approx(6.0, abs=0.15)
    assert info.fps == pytest.approx(10.0) and info.rotation == 0


def test_first_and_last_seconds_are_sampled_and_read(tmp_path):
    path = _make_video(tmp_path / "a.mp4", 8)
    frames = sample_frames(path, seconds=2.0, per_second=2)
    indices = [i for i, _ in frames]
    assert indices == sorted(set(indices))
    assert indices[0] == 0 and indices[-1] == 79  # the very first and very last frames
    assert all(i < 20 or i >= 60 for i in indices)  # nothing from the middle
    assert len(frames) >= 8
    first, last = frames[0][1], frames[-1][1]
    assert _barcodes(first) == _barcodes(last) == {NUMBER.replace("-", "")}
    for img in (first, last):
        got = {n.canonical for r in read_printed_numbers(img, budget_s=4.0) if (n := parse(r.text))}
        assert got == {"191212121212"}
    # Frames from the middle of the windows show skin only: no barcode there.
    assert not _barcodes(dict(frames)[15])


def test_short_video_is_sampled_whole(tmp_path):
    path = _make_video(tmp_path / "short.mp4", 1.5, label_seconds=0.5)
    frames = sample_frames(path, seconds=2.0, per_second=2)
    indices = [i for i, _ in frames]
    assert indices[0] == 0 and indices[-1] == 14
    assert len(indices) == len(set(indices))
    assert _barcodes(frames[0][1]) and _barcodes(frames[-1][1])


def test_rotation_is_applied(tmp_path):
    src = _make_video(tmp_path / "a.mp4", 4)
    rotated = tmp_path / "rot.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    assert probe(rotated).rotation != 0
    frames = sample_frames(rotated)
    assert frames[0][1].size == (480, 640)
    # The same picture ffmpeg shows (it applies the display matrix when decoding to PNG).
    ref = tmp_path / "ref.png"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(rotated), "-frames:v", "1", str(ref)], check=True)
    a, b = Image.open(ref).convert("RGB"), frames[0][1].convert("RGB")
    assert a.size == b.size
    diff = sum(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes())) / len(a.tobytes())
    assert diff < 3


def test_not_a_video_raises_the_typed_error(tmp_path):
    p = tmp_path / "x.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(VideoUnreadable):
        sample_frames(p)
    audio = tmp_path / "a.wav"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=0.5", str(audio)], check=True)
    with pytest.raises(VideoUnreadable, match="no video stream"):
        probe(audio)
