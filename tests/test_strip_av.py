"""strip (video and audio but WAV): ffmpeg remux keeps only the audio/video packets.

Real files written by ffmpeg with the metadata cameras, phones and recorders
leave (QuickTime user data and Keys incl. ``com.apple.quicktime.*``, GPS
location, a timecode data track, a subtitle track, cover art, ID3v1/v2, RIFF
INFO), checked by an independent exiftool process, ffprobe and ffmpeg's own
per-packet hashes. Also the decompression-bomb limits of the scan.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess

import pytest

from agent.card import scan as scan_module
from agent.card.model import MediaKind
from agent.card.reasons import Reason
from agent.card.scan import scan
from agent.card.strip import strip_all

SECRETS = ("Andersson", "59.3293", "Sahlgrenska", "iPhone", "Canon", "Lavf", "2026")
TAGS = ["-metadata", "artist=Dr Anna Andersson", "-metadata", "comment=Sahlgrenska avd 12",
        "-metadata", "creation_time=2026-03-14T10:00:00Z", "-metadata", "make=Canon",
        "-metadata", "model=Canon EOS 250D", "-metadata", "location=+59.3293+018.0686/"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def streams(path: pathlib.Path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, check=True).stdout
    return [s["codec_type"] + ("/cover" if s.get("disposition", {}).get("attached_pic") else "")
            for s in json.loads(out)["streams"]]


def packet_hashes(path: pathlib.Path, kinds: str = "va") -> list[str]:
    """SHA-256 per audio/video stream (cover art excluded), by an independent ffmpeg run."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:V?", "-map", "0:a?",
                          "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"],
                         capture_output=True, check=True).stdout.decode()
    return [line.split(",", 2)[1:] for line in out.splitlines()]


def exiftool(path: pathlib.Path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G0:1", "-a", "-u", "-ee", str(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)[0]


def leaks(path: pathlib.Path) -> list[str]:
    bad = []
    for key, value in exiftool(path).items():
        group = key.split(":")[0]
        if group in ("File", "ExifTool", "SourceFile") or key == "SourceFile":
            continue
        name = key.split(":")[-1]
        if group in ("ID3", "APE", "XMP", "LAME") or ":ItemList" in key or ":UserData" in key \
                or ":Keys" in key or any(s in str(value) for s in SECRETS) \
                or any(w in name for w in ("GPS", "Make", "Model", "Artist", "Comment", "Encoder",
                                           "Software", "Picture", "CoverArt", "Location")):
            bad.append(f"{key}={value}")
        elif "Date" in name and str(value).strip("0: "):
            bad.append(f"{key}={value}")
    return bad


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("av") / "card"
    (root / "DCIM/100CANON").mkdir(parents=True)
    (root / "REC").mkdir()
    video = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-f", "lavfi", "-i", "sine=frequency=440"]
    cover = root.parent / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=64x64", "-frames:v", "1", str(cover))
    srt = root.parent / "gps.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nGPS 59.3293 18.0686\n")
    # MP4: user data, Keys, GPS, a timecode data track and a subtitle track.
    ffmpeg(*video, "-i", str(srt), "-t", "1", "-map", "0", "-map", "1", "-map", "2",
           "-c:v", "libx264", "-c:a", "aac", "-c:s", "mov_text", "-timecode", "10:00:00:00", *TAGS,
           "-movflags", "use_metadata_tags", str(root / "DCIM/100CANON/MVI_0001.MP4"))
    # MOV as an iPhone writes it: com.apple.quicktime.* keys.
    ffmpeg(*video, "-t", "1", "-c:v", "libx264", "-c:a", "aac",
           "-metadata", "com.apple.quicktime.make=Apple", "-metadata", "com.apple.quicktime.model=iPhone 12",
           "-metadata", "com.apple.quicktime.location.ISO6709=+59.3293+018.0686/",
           "-metadata", "creation_time=2026-03-14T10:00:00Z", "-movflags", "use_metadata_tags",
           str(root / "DCIM/100CANON/MVI_0002.MOV"))
    ffmpeg(*video, "-t", "1", "-c:v", "mpeg4", "-c:a", "pcm_s16le", *TAGS,
           str(root / "DCIM/100CANON/MVI_0003.AVI"))
    ffmpeg(*video, "-t", "1", "-c:v", "libx264", "-c:a", "mp2", "-metadata",
           "service_provider=Sahlgrenska", "-f", "mpegts", str(root / "DCIM/100CANON/MVI_0004.MTS"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300", "-i", str(cover), "-t", "1", "-map", "0",
           "-map", "1", "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", *TAGS,
           str(root / "REC/REC0001.M4A"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=500", "-i", str(cover), "-t", "1", "-map", "0",
           "-map", "1", "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic",
           "-write_id3v1", "1", *TAGS, str(root / "REC/REC0002.MP3"))
    return root


EXPECTED = {
    "DCIM/100CANON/MVI_0001.MP4": ("video/mp4", MediaKind.VIDEO, ["video", "audio", "subtitle", "data"]),
    "DCIM/100CANON/MVI_0002.MOV": ("video/quicktime", MediaKind.VIDEO, ["video", "audio"]),
    "DCIM/100CANON/MVI_0003.AVI": ("video/x-msvideo", MediaKind.VIDEO, ["video", "audio"]),
    "DCIM/100CANON/MVI_0004.MTS": ("video/mp2t", MediaKind.VIDEO, ["video", "audio"]),
    "REC/REC0001.M4A": ("audio/mp4", MediaKind.AUDIO, ["audio", "video/cover"]),
    "REC/REC0002.MP3": ("audio/mpeg", MediaKind.AUDIO, ["audio", "video/cover"]),
}


def test_every_format_recognised_and_stripped_packets_identical(card, tmp_path):
    found = scan(card)
    assert found.refused == ()
    by_path = {m.relative_path: m for m in found.media}
    assert {p: (m.media_type, m.kind) for p, m in by_path.items()} == \
        {p: e[:2] for p, e in EXPECTED.items()}
    for rel, (_, _, kinds) in EXPECTED.items():
        assert sorted(streams(card / rel)) == sorted(kinds), rel  # the metadata to drop is there
        data = (card / rel).read_bytes()
        assert leaks(card / rel) or b"Sahlgrenska" in data, f"{rel} should carry metadata"
    spool = tmp_path / "spool"
    spool.mkdir()
    stripped = strip_all(found.media, spool)
    for s in stripped:
        rel = s.source.relative_path
        out = s.spool_path
        assert hashlib.sha256(out.read_bytes()).hexdigest() == s.sha256
        assert sorted(streams(out)) == sorted(k for k in EXPECTED[rel][2] if k in ("video", "audio")), rel
        assert packet_hashes(out) == packet_hashes(card / rel), f"{rel}: packets changed"
        assert leaks(out) == [], rel
        assert not any(secret.encode() in out.read_bytes() for secret in SECRETS), rel


def test_too_long_media_is_refused_as_a_bomb(card, monkeypatch):
    monkeypatch.setattr(scan_module, "MAX_DURATION_S", 0.5)
    found = scan(card)
    assert found.media == ()
    assert {s.reason for s in found.skipped} == {Reason.NOT_MEDIA}
    assert all("decompression bomb" in s.detail for s in found.skipped)


def test_oversized_frames_and_too_many_frames_are_refused(card, monkeypatch):
    monkeypatch.setattr(scan_module, "MAX_VIDEO_PIXELS", 320 * 240 - 1)
    refused = {s.relative_path: s.detail for s in scan(card).skipped}
    assert "320x240 video frames exceed" in refused["DCIM/100CANON/MVI_0001.MP4"]
    monkeypatch.undo()
    monkeypatch.setattr(scan_module, "MAX_VIDEO_FRAMES", 9)
    refused = {s.relative_path: s.detail for s in scan(card).skipped}
    assert "10 video frames" in refused["DCIM/100CANON/MVI_0002.MOV"]
    assert "REC/REC0001.M4A" not in refused  # the cover art is not a video


def test_mp4_with_lpcm_audio_as_sony_cameras_write_it(tmp_path):
    """The mp4 muxer refuses LPCM; the copy is written by the QuickTime muxer under the same brand."""
    card = tmp_path / "card"
    card.mkdir()
    clip = card / "C0001.MP4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-f", "lavfi", "-i", "sine", "-t", "1",
           "-c:v", "libx264", "-c:a", "pcm_s16be", *TAGS, "-f", "mov", "-brand", "XAVC", str(clip))
    [m] = scan(card).media
    assert m.media_type == "video/mp4"
    spool = tmp_path / "spool"
    spool.mkdir()
    [s] = strip_all([m], spool)
    assert packet_hashes(s.spool_path) == packet_hashes(clip)
    assert leaks(s.spool_path) == []
    assert s.spool_path.read_bytes()[8:12] == b"XAVC"
