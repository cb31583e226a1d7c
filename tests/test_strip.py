"""strip: metadata gone (checked by an independent exiftool run), image data untouched.

Losslessness is checked here without the module's own parser: the bytes from
the first image's first SOS to its EOI must be the same in original and copy,
and Pillow must decode both to the same pixels.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import stat
import subprocess

import pytest
from PIL import Image

from agent.card.metadata import MetadataReader
from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason
from agent.card.scan import scan
from agent.card.strip import forbidden_tags, jpeg_structure_problems, strip, strip_all
from tests.test_scan import CARD_ORDER, CORPUS, EXIF, make_clean_card, snapshot

pytestmark = pytest.mark.skipif(not EXIF.is_dir(), reason="shared corpus not present")

FORBIDDEN_GROUPS = ("MakerNotes", "XMP", "IPTC", "Photoshop", "MPF", "FlashPix", "Trailer")
FORBIDDEN_NAMES = ("GPS", "Make", "Model", "SerialNumber", "ThumbnailImage", "PreviewImage",
                   "Comment", "MPImage")


def exiftool_json(path: pathlib.Path) -> dict:
    """An independent exiftool process (not the agent's stay-open one)."""
    out = subprocess.run(["exiftool", "-j", "-G0:1", "-a", "-u", "-ee", str(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)[0]


def leftovers(meta: dict) -> list[str]:
    bad = []
    for key in meta:
        group0, name = key.split(":")[0], key.split(":")[-1]
        if group0 == "ICC_Profile":
            continue
        if group0 in FORBIDDEN_GROUPS or key.startswith("EXIF:GPS") or key.startswith("EXIF:IFD1"):
            bad.append(key)
        elif any(name.startswith(f) or name.endswith(f) for f in FORBIDDEN_NAMES):
            bad.append(key)
    return bad


def first_scan_to_eoi(data: bytes) -> bytes:
    """Bytes from the first SOS marker of the first image to its EOI (inclusive)."""
    i = 2
    while True:
        assert data[i] == 0xFF
        marker = data[i + 1]
        if marker == 0xDA:
            break
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    start = i
    j = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
    while True:  # to EOI, skipping stuffed bytes, restart markers and later tables/scans
        j = data.index(b"\xff", j)
        nxt = data[j + 1]
        if nxt == 0xD9:
            return data[start:j + 2]
        if nxt in (0x00, 0xFF) or 0xD0 <= nxt <= 0xD7:
            j += 1 if nxt == 0xFF else 2
        else:  # a segment between scans (DHT, SOS, ...): skip its header
            j += 2 + int.from_bytes(data[j + 2:j + 4], "big")


def pixels(data: bytes) -> tuple:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, im.size, hashlib.sha256(im.tobytes()).hexdigest()


def media_for(path: pathlib.Path, media_type: str, kind: MediaKind = MediaKind.IMAGE) -> MediaFile:
    data = path.read_bytes()
    st = path.stat()
    return MediaFile(path=path, relative_path=path.name, kind=kind, media_type=media_type,
                     size=len(data), sha256=hashlib.sha256(data).hexdigest(), mtime_ns=st.st_mtime_ns)


CORPUS_JPEGS = sorted(
    str(p.relative_to(EXIF)) for p in EXIF.rglob("*") if p.suffix.lower() == ".jpg"
) if EXIF.is_dir() else []


@pytest.fixture(scope="module")
def reader():
    with MetadataReader() as r:
        yield r


@pytest.mark.parametrize("name", CORPUS_JPEGS)
def test_corpus_jpeg_stripped_losslessly(name, tmp_path, reader):
    source = EXIF / name
    original = source.read_bytes()
    result = strip(media_for(source, "image/jpeg"), tmp_path, tool=reader)
    stripped = result.spool_path.read_bytes()
    assert result.spool_path.parent == tmp_path
    assert stat.S_IMODE(result.spool_path.stat().st_mode) == 0o600
    assert result.sha256 == hashlib.sha256(stripped).hexdigest() and result.size == len(stripped)
    assert source.read_bytes() == original  # the source is never touched
    after = exiftool_json(result.spool_path)
    assert leftovers(after) == []
    assert first_scan_to_eoi(stripped) == first_scan_to_eoi(original)
    assert stripped.endswith(b"\xff\xd9")
    assert pixels(stripped) == pixels(original)
    with Image.open(source) as a, Image.open(result.spool_path) as b:
        assert a.info.get("icc_profile") == b.info.get("icc_profile")
    assert sorted(os.listdir(tmp_path)) == [result.spool_path.name]


@pytest.mark.parametrize("name", ["GPS.jpg", "Canon.jpg", "exif-samples/jpg/gps/DSCN0010.jpg",
                                  "exif-samples/jpg/Canon_40D.jpg", "Apple.jpg", "XMP.jpg",
                                  "IPTC.jpg", "ExtendedXMP.jpg", "FLIR.jpg"])
def test_metadata_present_before_and_gone_after(name, tmp_path, reader):
    before = exiftool_json(EXIF / name)
    assert leftovers(before), f"{name} should carry metadata to strip"
    result = strip(media_for(EXIF / name, "image/jpeg"), tmp_path, tool=reader)
    assert leftovers(exiftool_json(result.spool_path)) == []


def test_gps_and_maker_notes_specifically(tmp_path, reader):
    gps = exiftool_json(EXIF / "GPS.jpg")
    canon = exiftool_json(EXIF / "Canon.jpg")
    assert any(k.startswith("EXIF:GPS:") for k in gps)
    assert any(k.startswith("MakerNotes:") for k in canon)
    for name in ("GPS.jpg", "Canon.jpg"):
        out = exiftool_json(strip(media_for(EXIF / name, "image/jpeg"), tmp_path, tool=reader).spool_path)
        assert not any(k.startswith(("EXIF:GPS", "MakerNotes", "XMP")) for k in out)
        assert "EXIF:IFD0:Make" not in out and "EXIF:IFD0:Model" not in out


@pytest.mark.parametrize("n", range(1, 9))
def test_orientation_kept(n, tmp_path, reader):
    source = EXIF / f"exif-samples/jpg/orientation/landscape_{n}.jpg"
    result = strip(media_for(source, "image/jpeg"), tmp_path, tool=reader)
    out = subprocess.run(["exiftool", "-n", "-s3", "-Orientation", str(result.spool_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(n)


def test_writer_without_metadata_survives(tmp_path, reader):
    result = strip(media_for(EXIF / "Writer.jpg", "image/jpeg"), tmp_path, tool=reader)
    assert pixels(result.spool_path.read_bytes()) == pixels((EXIF / "Writer.jpg").read_bytes())


def test_png_and_tiff(tmp_path, reader):
    png = strip(media_for(EXIF / "PNG.png", "image/png"), tmp_path, tool=reader)
    assert pixels(png.spool_path.read_bytes()) == pixels((EXIF / "PNG.png").read_bytes())
    tif = strip(media_for(EXIF / "ExifTool.tif", "image/tiff"), tmp_path, tool=reader)
    assert leftovers(exiftool_json(tif.spool_path)) == []
    assert pixels(tif.spool_path.read_bytes()) == pixels((EXIF / "ExifTool.tif").read_bytes())


def test_tiff_that_cannot_be_fully_stripped_is_refused(tmp_path, reader):
    with pytest.raises(StageError) as err:
        strip(media_for(EXIF / "GeoTiff.tif", "image/tiff"), tmp_path, tool=reader)
    assert err.value.reason == Reason.STRIP_FAILED and "GeoTiff" in err.value.detail
    assert os.listdir(tmp_path) == []


def test_video_stripped_packets_identical(tmp_path, reader):
    card = tmp_path / "card"
    card.mkdir()
    video = card / "MVI_0001.MP4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
         "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:v", "libx264", "-c:a", "aac",
         "-metadata", "location=+59.3293+018.0686/", "-metadata", "make=Canon",
         "-metadata", "model=Canon EOS 250D", "-movflags", "use_metadata_tags", str(video)],
        check=True)
    before = exiftool_json(video)
    assert any("GPS" in k or "Location" in k for k in before) and any(k.endswith(":Make") for k in before)
    [m] = scan(card).media
    assert m.kind == MediaKind.VIDEO
    spool = tmp_path / "spool"
    spool.mkdir()
    result = strip(m, spool, tool=reader)
    after = exiftool_json(result.spool_path)
    assert not [k for k in after if "GPS" in k or "Location" in k or k.endswith((":Make", ":Model"))]

    def hashes(p):
        return subprocess.run(["ffmpeg", "-v", "error", "-i", str(p), "-map", "0", "-c", "copy",
                               "-f", "streamhash", "-"], capture_output=True, check=True).stdout
    assert hashes(video) == hashes(result.spool_path)


def test_heic_is_not_accepted(tmp_path, reader):
    """HEIC/HEIF is refused (docs/media.md); the scan already refuses it, this is the backstop."""
    path = EXIF / "exif-samples/heic/IMG_5195.HEIC"
    with pytest.raises(StageError) as err:
        strip(media_for(path, "image/heic"), tmp_path, tool=reader)
    assert err.value.reason == Reason.STRIP_FAILED and "HEIC/HEIF is not accepted" in err.value.detail
    assert os.listdir(tmp_path) == []


def test_changed_card_file_is_card_changed(tmp_path, reader):
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes((EXIF / "GPS.jpg").read_bytes())
    media = media_for(path, "image/jpeg")
    path.write_bytes((EXIF / "Canon.jpg").read_bytes())
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(StageError) as err:
        strip(media, spool, tool=reader)
    assert err.value.reason == Reason.CARD_CHANGED
    assert os.listdir(spool) == []


def test_generated_card_scan_then_strip_all(tmp_path):
    card = make_clean_card(tmp_path / "card")
    before = snapshot(card)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    with MetadataReader() as reader:
        result = scan(card, reader=reader)
        assert [m.relative_path for m in result.media] == CARD_ORDER
        stripped = strip_all(result.media, spool, tool=reader)
    assert snapshot(card) == before  # the card is never modified
    assert [s.source for s in stripped] == list(result.media)
    for s in stripped:
        original = s.source.path.read_bytes()
        copy = s.spool_path.read_bytes()
        src_meta = exiftool_json(s.source.path)
        assert any(k.startswith("EXIF:GPS") for k in src_meta)
        assert any(k.startswith("MakerNotes:") for k in src_meta)
        assert leftovers(exiftool_json(s.spool_path)) == []
        assert first_scan_to_eoi(copy) == first_scan_to_eoi(original)
        assert pixels(copy) == pixels(original)
    assert len({s.spool_path for s in stripped}) == 3


def test_strip_all_removes_its_files_on_failure(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    good = media_for(EXIF / "GPS.jpg", "image/jpeg")
    bad = media_for(EXIF / "GeoTiff.tif", "image/tiff")
    with pytest.raises(StageError):
        strip_all([good, bad], spool)
    assert os.listdir(spool) == []


def test_checklists_flag_what_exiftool_would_leave(reader):
    meta = reader.read_one(EXIF / "GPS.jpg", extra=("-u", "-ee"))
    bad = forbidden_tags(meta, "image/jpeg")
    assert any(k.startswith("EXIF:GPS:") for k in bad)
    assert "EXIF:IFD0:Make" in bad
    problems = jpeg_structure_problems((EXIF / "XMP.jpg").read_bytes())
    assert any("XMP" in p for p in problems)
    problems = jpeg_structure_problems((EXIF / "Writer.jpg").read_bytes() + b"trailer")
    assert any("after the end" in p for p in problems)


def test_copies_stripped_ahead_are_used_read_back_and_the_unused_removed(tmp_path, reader):
    """strip_all takes a copy strip_ahead wrote while the card was read (same path and
    bytes), reads it back like the rest, and removes one the scan did not take as media."""
    from agent.card.strip import read_back_ahead, strip_ahead

    spool = tmp_path / "spool"
    spool.mkdir()
    gps = media_for(EXIF / "GPS.jpg", "image/jpeg")
    other = media_for(EXIF / CORPUS_JPEGS[0], "image/jpeg") if CORPUS_JPEGS[0] != "GPS.jpg" \
        else media_for(EXIF / CORPUS_JPEGS[1], "image/jpeg")
    assert strip_ahead(media_for(EXIF / "GeoTiff.tif", "image/tiff"), spool) is None  # JPEG only
    early, dropped = strip_ahead(gps, spool), strip_ahead(other, spool)
    assert early is not None and dropped is not None
    read_back_ahead([early], reader)
    assert early.read_back_done
    stripped = strip_all([gps], spool, tool=reader, ahead={
        (gps.relative_path, gps.sha256): early, (other.relative_path, other.sha256): dropped})
    assert [s.spool_path for s in stripped] == [early.out] and stripped[0].source == gps
    assert sorted(os.listdir(spool)) == [early.out.name], "the unused copy must be removed"
    assert leftovers(exiftool_json(early.out)) == []


def test_a_copy_stripped_ahead_that_the_read_back_refuses_is_removed(tmp_path, reader):
    """A copy from ahead goes through the same read-back: one that still holds metadata
    fails the card's strip (STRIP_FAILED) and nothing is left in the spool."""
    from agent.card.strip import read_back_ahead, strip_ahead

    spool = tmp_path / "spool"
    spool.mkdir()
    gps = media_for(EXIF / "GPS.jpg", "image/jpeg")
    early = strip_ahead(gps, spool)
    assert early is not None
    early.out.write_bytes((EXIF / "GPS.jpg").read_bytes())  # as if the copy were not stripped
    read_back_ahead([early], reader)
    assert not early.read_back_done, "a copy that fails the read-back ahead is read back again"
    with pytest.raises(StageError) as raised:
        strip_all([gps], spool, tool=reader, ahead={(gps.relative_path, gps.sha256): early})
    assert raised.value.reason == Reason.STRIP_FAILED
    assert os.listdir(spool) == []
