"""strip (WAV): only fmt [fact] data remain, byte-identical; everything else goes.

Files are real: written by Python's ``wave`` with chunks appended by hand, and
by ffmpeg's WAV muxer (LIST/INFO, Broadcast WAV ``bext``, peak ``levl``,
WAVE_FORMAT_EXTENSIBLE, RF64). Checked independently with our own little RIFF
walk here, Python's ``wave`` reader, exiftool and ffprobe.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import stat
import struct
import subprocess
import wave

import pytest

from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason
from agent.card.strip import strip

ARTIST, DATE, ORIGINATOR = "Dr Anna Andersson", "2024-05-01", "Diktafon KVINNO-7 SN 4711"
SECRETS = ["Andersson", "2024-05-01", "KVINNO", "4711", "191212", "Lavf", "Sahlgrenska"]


def media_for(path: pathlib.Path, media_type: str = "audio/wav") -> MediaFile:
    data = path.read_bytes()
    return MediaFile(path=path, relative_path=path.name, kind=MediaKind.AUDIO, media_type=media_type,
                     size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                     mtime_ns=path.stat().st_mtime_ns)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(id, payload) of every chunk of a RIFF WAVE file (written independently of the agent)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    end = 8 + struct.unpack("<I", data[4:8])[0]
    out, i = [], 12
    while i + 8 <= end:
        cid, size = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        out.append((cid, data[i + 8:i + 8 + size]))
        i += 8 + size + (size & 1)
    return out


def chunk(cid: bytes, payload: bytes) -> bytes:
    return cid + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


def riff(*parts: bytes) -> bytes:
    body = b"WAVE" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def list_info() -> bytes:
    info = b"INFO" + chunk(b"IART", ARTIST.encode() + b"\x00") + chunk(b"ICRD", DATE.encode() + b"\x00") \
        + chunk(b"ICMT", b"Pat 19121212-1212, Sahlgrenska\x00") + chunk(b"ISFT", b"Lavf60\x00")
    return chunk(b"LIST", info)


def bext() -> bytes:
    payload = (b"Diktat 19121212-1212".ljust(256, b"\x00") + ORIGINATOR.encode().ljust(32, b"\x00")
               + b"REF-KVINNO-7".ljust(32, b"\x00") + DATE.encode() + b"10:15:30"
               + struct.pack("<Q", 0) + struct.pack("<H", 1) + b"\x11" * 64 + b"\x00" * 10
               + b"\x00" * 180 + b"A=PCM,F=8000,W=16,M=mono,T=KVINNO-7\r\n")
    return chunk(b"bext", payload)


def python_wav(path: pathlib.Path, frames: int = 8000, width: int = 2, rate: int = 8000) -> bytes:
    """A plain PCM WAV from Python's ``wave``; returns its fmt+data part."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(width), w.setframerate(rate)
        if width == 2:
            samples = b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(frames))
        else:
            samples = bytes((128 + int(100 * math.sin(i / 7))) & 0xFF for i in range(frames))
        w.writeframes(samples)
    return path.read_bytes()


def with_metadata(plain: bytes) -> bytes:
    """bext first (as Broadcast WAV has it), fmt, iXML, data, LIST/INFO, id3 after the data."""
    parts = dict(chunks(plain))
    ixml = chunk(b"iXML", f"<BWFXML><NOTE>{ARTIST}</NOTE><PROJECT>Sahlgrenska</PROJECT></BWFXML>".encode())
    id3 = chunk(b"id3 ", b"ID3\x03\x00\x00\x00\x00\x00\x10TPE1\x00\x00\x00\x06\x00\x00\x00Andersson")
    return riff(bext(), chunk(b"fmt ", parts[b"fmt "]), ixml, chunk(b"data", parts[b"data"]),
                list_info(), id3)


def samples(path: pathlib.Path) -> tuple:
    with wave.open(str(path), "rb") as w:
        return w.getparams(), w.readframes(w.getnframes())


def exiftool_json(path: pathlib.Path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-a", "-u", "-G1", str(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)[0]


def ffprobe_tags(path: pathlib.Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams",
                          str(path)], capture_output=True, check=True).stdout
    info = json.loads(out)
    tags = dict(info["format"].get("tags", {}))
    for s in info["streams"]:
        tags.update(s.get("tags", {}))
    return tags


def streamhash(path: pathlib.Path) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0", "-c", "copy",
                           "-f", "streamhash", "-"], capture_output=True, check=True).stdout


@pytest.fixture
def spool(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    return d


def strip_ok(path: pathlib.Path, spool: pathlib.Path, media_type: str = "audio/wav"):
    before = path.read_bytes()
    result = strip(media_for(path, media_type), spool)
    assert path.read_bytes() == before  # the card is only read
    assert os.listdir(spool) == [result.spool_path.name]  # no working copy left
    data = result.spool_path.read_bytes()
    assert stat.S_IMODE(result.spool_path.stat().st_mode) == 0o600
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.size == len(data)
    return result, data


def test_python_wav_with_list_info_bext_ixml_id3(tmp_path, spool):
    plain = python_wav(tmp_path / "plain.wav")
    path = tmp_path / "REC0001.WAV"
    path.write_bytes(with_metadata(plain))
    assert [c for c, _ in chunks(path.read_bytes())] == [b"bext", b"fmt ", b"iXML", b"data", b"LIST", b"id3 "]
    meta_before = exiftool_json(path)
    assert any(ARTIST in str(v) for v in meta_before.values())
    assert any("Originator" in k for k in meta_before)
    result, data = strip_ok(path, spool)
    assert [c for c, _ in chunks(data)] == [b"fmt ", b"data"]
    assert dict(chunks(data))[b"fmt "] == dict(chunks(plain))[b"fmt "]
    assert dict(chunks(data))[b"data"] == dict(chunks(plain))[b"data"]
    assert data == plain  # Python's wave writes exactly fmt + data: the copy is that file
    assert samples(result.spool_path) == samples(tmp_path / "plain.wav")
    assert not [s for s in SECRETS if s.encode() in data]
    meta = exiftool_json(result.spool_path)
    assert {k.split(":")[0] for k in meta} <= {"SourceFile", "ExifTool", "System", "File", "RIFF", "Composite"}
    assert not [k for k in meta if k.startswith("RIFF:") and k.split(":")[1] not in
                ("Encoding", "NumChannels", "SampleRate", "AvgBytesPerSec", "BitsPerSample")]
    assert ffprobe_tags(result.spool_path) == {}
    assert streamhash(result.spool_path) == streamhash(path)


def test_ffmpeg_wav_with_info_bext_and_peak_chunk(tmp_path, spool):
    """ffmpeg's muxer: LIST/INFO from -metadata, a bext chunk, a levl chunk after the data."""
    path = tmp_path / "DIKTAT.WAV"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
         "-t", "1.3", "-c:a", "pcm_s16le", "-metadata", f"artist={ARTIST}",
         "-metadata", f"date={DATE}", "-metadata", "comment=Pat 19121212-1212",
         "-metadata", f"originator={ORIGINATOR}", "-metadata", f"origination_date={DATE}",
         "-write_bext", "1", "-write_peak", "on", str(path)], check=True)
    ids = [c for c, _ in chunks(path.read_bytes())]
    assert b"bext" in ids and b"LIST" in ids and b"levl" in ids
    assert ffprobe_tags(path)
    result, data = strip_ok(path, spool)
    assert [c for c, _ in chunks(data)] == [b"fmt ", b"data"]
    assert dict(chunks(data))[b"data"] == dict(chunks(path.read_bytes()))[b"data"]
    assert samples(result.spool_path) == samples(path)
    assert not [s for s in SECRETS if s.encode() in data]
    assert ffprobe_tags(result.spool_path) == {}
    assert streamhash(result.spool_path) == streamhash(path)


def test_extensible_24bit_stereo(tmp_path, spool):
    path = tmp_path / "STEREO.WAV"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000",
                    "-ac", "6", "-t", "0.5", "-c:a", "pcm_s24le", "-metadata", f"artist={ARTIST}",
                    str(path)], check=True)
    fmt = dict(chunks(path.read_bytes()))[b"fmt "]
    assert struct.unpack("<H", fmt[:2])[0] == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE
    result, data = strip_ok(path, spool)
    assert [c for c, _ in chunks(data)] == [b"fmt ", b"data"]
    assert dict(chunks(data))[b"fmt "] == fmt
    assert streamhash(result.spool_path) == streamhash(path)
    assert ARTIST.encode() not in data


def test_odd_data_chunk_is_padded(tmp_path, spool):
    plain = python_wav(tmp_path / "odd.wav", frames=8001, width=1)
    assert len(dict(chunks(plain))[b"data"]) == 8001
    path = tmp_path / "ODD.WAV"
    parts = dict(chunks(plain))
    path.write_bytes(riff(chunk(b"fmt ", parts[b"fmt "]), chunk(b"data", parts[b"data"]), list_info()))
    result, data = strip_ok(path, spool)
    assert len(data) == 12 + 8 + 16 + 8 + 8001 + 1
    assert dict(chunks(data))[b"data"] == parts[b"data"]
    assert samples(result.spool_path) == samples(tmp_path / "odd.wav")


def _float_fmt(rate: int = 8000) -> bytes:
    return struct.pack("<HHIIHHH", 3, 1, rate, rate * 4, 4, 32, 0)


def test_fact_kept_for_float_dropped_for_pcm(tmp_path, spool):
    floats = b"".join(struct.pack("<f", math.sin(i / 5)) for i in range(4000))
    path = tmp_path / "FLOAT.WAV"
    fact = struct.pack("<I", 4000)
    path.write_bytes(riff(chunk(b"fmt ", _float_fmt()), chunk(b"fact", fact), list_info(),
                          chunk(b"data", floats)))
    result, data = strip_ok(path, spool)
    assert chunks(data) == [(b"fmt ", _float_fmt()), (b"fact", fact), (b"data", floats)]
    assert streamhash(result.spool_path) == streamhash(path)

    plain = dict(chunks(python_wav(tmp_path / "pcm.wav")))
    pcm = tmp_path / "PCM.WAV"
    pcm.write_bytes(riff(chunk(b"fmt ", plain[b"fmt "]), chunk(b"fact", fact), chunk(b"data", plain[b"data"])))
    spool2 = tmp_path / "spool2"
    spool2.mkdir()
    _, data = strip_ok(pcm, spool2)
    assert [c for c, _ in chunks(data)] == [b"fmt ", b"data"]


def test_bytes_after_the_riff_form_dropped(tmp_path, spool):
    """An ID3v1 tag appended after the RIFF form (some tools do) does not survive."""
    plain = python_wav(tmp_path / "plain.wav")
    path = tmp_path / "TAGGED.WAV"
    path.write_bytes(plain + b"TAG" + b"Andersson".ljust(125, b"\x00"))
    _, data = strip_ok(path, spool, media_type="audio/x-wav")
    assert data == plain


@pytest.mark.parametrize("cut", [1, 1000, 16000])
def test_truncated_wav_refused(cut, tmp_path, spool):
    plain = python_wav(tmp_path / "plain.wav")
    path = tmp_path / "CUT.WAV"
    path.write_bytes(with_metadata(plain)[:-cut] if cut < 16000 else plain[:len(plain) - cut])
    with pytest.raises(StageError) as err:
        strip(media_for(path), spool)
    assert err.value.reason == Reason.STRIP_FAILED and "truncated" in err.value.detail
    assert "CUT.WAV" in err.value.detail
    assert os.listdir(spool) == []


def test_data_chunk_longer_than_the_form_refused(tmp_path, spool):
    """RIFF size patched to the file's length, the data chunk still claims more."""
    plain = python_wav(tmp_path / "plain.wav")
    cut = bytearray(plain[:-500])
    cut[4:8] = struct.pack("<I", len(cut) - 8)
    path = tmp_path / "CUT.WAV"
    path.write_bytes(bytes(cut))
    with pytest.raises(StageError) as err:
        strip(media_for(path), spool)
    assert err.value.reason == Reason.STRIP_FAILED
    assert "truncated: chunk 'data'" in err.value.detail
    assert os.listdir(spool) == []


def test_rf64_refused(tmp_path, spool):
    path = tmp_path / "LONG.WAV"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine", "-t", "0.2",
                    "-c:a", "pcm_s16le", "-rf64", "always", str(path)], check=True)
    assert path.read_bytes()[:4] == b"RF64"
    with pytest.raises(StageError) as err:
        strip(media_for(path), spool)
    assert err.value.reason == Reason.STRIP_FAILED and "RF64" in err.value.detail
    assert os.listdir(spool) == []


@pytest.mark.parametrize("body,why", [
    (lambda p: riff(chunk(b"data", p[b"data"])), "no 'fmt'"),
    (lambda p: riff(chunk(b"fmt ", p[b"fmt "])), "no 'data'"),
    (lambda p: riff(chunk(b"fmt ", p[b"fmt "]), chunk(b"data", p[b"data"]), chunk(b"data", b"\x00\x00")),
     "more than one 'data'"),
    (lambda p: riff(chunk(b"fmt ", p[b"fmt "][:12]), chunk(b"data", p[b"data"])), "fmt chunk of 12 bytes"),
])
def test_malformed_wav_refused(body, why, tmp_path, spool):
    parts = dict(chunks(python_wav(tmp_path / "plain.wav")))
    path = tmp_path / "BAD.WAV"
    path.write_bytes(body(parts))
    with pytest.raises(StageError) as err:
        strip(media_for(path), spool)
    assert err.value.reason == Reason.STRIP_FAILED and why in err.value.detail
    assert os.listdir(spool) == []


def test_changed_card_file_is_card_changed(tmp_path, spool):
    path = tmp_path / "REC.WAV"
    python_wav(path)
    media = media_for(path)
    path.write_bytes(with_metadata(path.read_bytes()))
    with pytest.raises(StageError) as err:
        strip(media, spool)
    assert err.value.reason == Reason.CARD_CHANGED
    assert os.listdir(spool) == []


def test_scanned_card_then_strip(tmp_path, spool):
    from agent.card.scan import scan

    card = tmp_path / "card"
    card.mkdir()
    plain = python_wav(tmp_path / "plain.wav")
    (card / "REC0001.WAV").write_bytes(with_metadata(plain))
    [m] = scan(card).media
    assert m.kind == MediaKind.AUDIO and m.media_type == "audio/wav"
    _, data = strip_ok(m.path, spool)
    assert data == plain


def test_mp3_is_stripped_by_the_remux_see_test_strip_av(tmp_path, spool):
    """MP3 is no longer refused: ID3v2/ID3v1 go, the audio frames stay (tests/test_strip_av.py)."""
    path = tmp_path / "REC.MP3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine", "-t", "0.3",
                    "-c:a", "libmp3lame", "-metadata", f"artist={ARTIST}", str(path)], check=True)
    result = strip(media_for(path, "audio/mpeg"), spool)
    assert ARTIST.encode() not in result.spool_path.read_bytes()
