"""Every file of the shared corpus' ``exif/`` (incl. ``exif-samples/``) through scan + strip (R7, R8).

Each decodable file is scanned and stripped as the agent does it; an
independent exiftool process then finds no GPS, make, model, serial, maker
notes, XMP, IPTC, owner, dates or thumbnail in the copy, and Pillow decodes
original and copy to the same pixels as shown (EXIF orientation applied to
both). Everything else (camera RAW, metadata-only stubs, formats no capture
device writes, the licence texts) is refused cleanly with its reason.
See the corpus' MANIFEST.md for what the files are.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess

import pytest
from PIL import Image, ImageOps

from agent.card.metadata import MetadataReader
from agent.card.model import StageError
from agent.card.reasons import Reason
from agent.card.scan import scan
from agent.card.strip import strip

EXIF = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus")) / "exif"
pytestmark = pytest.mark.skipif(not EXIF.is_dir(), reason="shared corpus not present")

FILES = sorted(str(p.relative_to(EXIF)) for p in EXIF.rglob("*") if p.is_file()) if EXIF.is_dir() else []

# What is refused, and why (everything else must come out stripped and identical).
RAW = {"CanonRaw.cr2", "CanonRaw.cr3", "CanonRaw.crw", "DNG.dng", "FujiFilm.raf", "Minolta.mrw",
       "Nikon.nef", "Panasonic.rw2", "PhaseOne.iiq", "Sigma.x3f", "SigmaDP2.x3f"}
NOT_CAPTURE_FORMATS = {"BigTIFF.btf", "Jpeg2000.jp2", "Photoshop.psd", "RIFF.webp",
                       "LICENSE-exiftool.txt", "exif-samples/LICENSE-exif-samples.txt"}
STUBS = {"Pentax.avi", "QuickTime.mov"}  # metadata only: no packets to read
EXPECTED_REFUSAL = {
    **{name: {Reason.NOT_MEDIA} for name in RAW | NOT_CAPTURE_FORMATS | STUBS},
    # HEIC/HEIF is never taken (docs/media.md); the iPhone's names the phone (R6).
    "exif-samples/heic/IMG_5195.HEIC": {Reason.UNREGISTERED_DEVICE},
    "QuickTime.heic": {Reason.FORMAT_NOT_ACCEPTED, Reason.UNREGISTERED_DEVICE},
    # GeoTIFF keys are TIFF tags exiftool cannot delete: refused, not half-stripped.
    "GeoTiff.tif": {Reason.STRIP_FAILED},
}

FORBIDDEN_GROUPS = ("MakerNotes", "XMP", "IPTC", "Photoshop", "FlashPix", "MPF", "GeoTiff", "Trailer")
FORBIDDEN_WORDS = ("GPS", "Make", "Model", "Serial", "Owner", "Thumbnail", "Preview", "Lens", "Artist",
                   "Copyright", "Software", "Comment", "Author", "Creator", "Location")


def leaks(meta: dict) -> list[str]:
    bad = []
    for key, value in meta.items():
        group0, name = key.split(":")[0], key.split(":")[-1]
        if key == "SourceFile" or group0 in ("File", "ExifTool", "ICC_Profile"):
            continue
        if group0 in FORBIDDEN_GROUPS or any(w in name for w in FORBIDDEN_WORDS) \
                or key.startswith("EXIF:IFD1") or ("Date" in name and str(value).strip("0: ")):
            bad.append(f"{key}={value}")
    return bad


def shown(path: pathlib.Path) -> tuple:
    """Mode, size and pixel hash of the image as a viewer shows it (orientation applied)."""
    with Image.open(path) as im:
        im.load()
        upright = ImageOps.exif_transpose(im)
        return upright.mode, upright.size, hashlib.sha256(upright.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict:
    """Scan the corpus once, strip every media file; then one independent exiftool
    read of every copy. Maps relative path -> (Reason or None, detail, copy, exiftool)."""
    spool = tmp_path_factory.mktemp("spool")
    result: dict[str, tuple] = {}
    with MetadataReader() as reader:
        found = scan(EXIF, reader=reader)
        for s in found.skipped:
            result[s.relative_path] = (s.reason, s.detail, None, None)
        for m in found.media:
            try:
                copy = strip(m, spool, tool=reader).spool_path
                result[m.relative_path] = (None, "", copy, None)
            except StageError as exc:
                result[m.relative_path] = (exc.reason, exc.detail, None, None)
    copies = [r[2] for r in result.values() if r[2] is not None]
    out = subprocess.run(["exiftool", "-j", "-G0:1", "-a", "-u", "-ee", *map(str, copies)],
                         capture_output=True, check=True).stdout
    metas = {pathlib.Path(m["SourceFile"]): m for m in json.loads(out)}
    return {rel: (r[0], r[1], r[2], metas.get(r[2]) if r[2] else None) for rel, r in result.items()}


def test_the_corpus_is_all_there():
    assert len(FILES) >= 100 and "exif-samples/jpg/mobile/jolla.jpg" in FILES


@pytest.mark.parametrize("name", FILES)
def test_corpus_file(name, outcome):
    assert name in outcome, f"{name} neither media nor skipped"
    reason, detail, copy, meta = outcome[name]
    if name in EXPECTED_REFUSAL:
        assert reason in EXPECTED_REFUSAL[name], (reason, detail)
        assert detail and copy is None
        return
    assert reason is None, f"{name} refused: {reason} {detail}"
    assert meta is not None and leaks(meta) == []
    assert shown(copy) == shown(EXIF / name), f"{name}: pixels or shown orientation changed"
    with Image.open(EXIF / name) as a, Image.open(copy) as b:
        assert a.info.get("icc_profile") == b.info.get("icc_profile")


def test_the_corpus_carries_what_is_stripped():
    """The check above is not empty: the originals hold all the forbidden kinds
    (and the stripped copies of these very files passed it)."""
    samples = ["Canon.jpg", "GPS.jpg", "XMP.jpg", "IPTC.jpg", "exif-samples/jpg/gps/DSCN0010.jpg"]
    out = subprocess.run(["exiftool", "-j", "-G0:1", "-a", "-u", "-ee", *(str(EXIF / n) for n in samples)],
                         capture_output=True, check=True).stdout
    found = " ".join(k for m in json.loads(out) for k in m)
    for needle in ("EXIF:GPS", "MakerNotes:", "XMP", "IPTC:", ":Make", ":Model", "SerialNumber",
                   "OwnerName", "DateTimeOriginal", "ThumbnailImage"):
        assert needle in found, needle
