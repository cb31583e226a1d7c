"""metadata: one stay-open exiftool, capture time, device and orientation helpers."""
from __future__ import annotations

import datetime as dt
import os
import pathlib

import pytest

from agent.card import metadata as md
from agent.card.metadata import MetadataReader

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus"))
EXIF = CORPUS / "exif"
pytestmark = pytest.mark.skipif(not EXIF.is_dir(), reason="shared corpus not present")


@pytest.fixture(scope="module")
def reader():
    with MetadataReader() as r:
        yield r


def test_batch_read(reader, tmp_path):
    missing = tmp_path / "nope.jpg"
    paths = [EXIF / "Canon.jpg", EXIF / "GPS.jpg", missing]
    out = reader.read(paths)
    assert list(out) == paths
    assert out[EXIF / "Canon.jpg"]["EXIF:IFD0:Make"] == "Canon"
    assert any(k.startswith("EXIF:GPS:") for k in out[EXIF / "GPS.jpg"])
    assert "ExifTool:Error" in out[missing]


def test_device_and_capture_time(reader):
    canon = reader.read_one(EXIF / "Canon.jpg")
    assert md.device(canon) == md.Device("Canon", "Canon EOS DIGITAL REBEL", "0560018150")
    assert md.capture_time(canon) == dt.datetime(2003, 12, 4, 6, 46, 52)
    google = md.capture_time(reader.read_one(EXIF / "Google.jpg"))
    assert google == dt.datetime(2023, 10, 6, 22, 53, 51, 724000,
                                 tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert md.device(reader.read_one(EXIF / "Writer.jpg")) == md.Device()
    assert md.capture_time(reader.read_one(EXIF / "Writer.jpg")) is None


def test_orientation(reader):
    for n in (1, 3, 6, 8):
        meta = reader.read_one(EXIF / f"exif-samples/jpg/orientation/landscape_{n}.jpg")
        assert md.orientation(meta) == n
    assert md.orientation(reader.read_one(EXIF / "Writer.jpg")) is None


def test_quicktime_create_date_is_naive(reader):
    meta = reader.read_one(EXIF / "QuickTime.mov")
    assert md.capture_time(meta) == dt.datetime(2005, 8, 11, 14, 3, 54)


def test_parse_exif_datetime():
    p = md.parse_exif_datetime
    assert p("2024:05:01 10:00:00") == dt.datetime(2024, 5, 1, 10)
    assert p("2024:05:01 10:00:00", subsec="25", offset="+02:00") == dt.datetime(
        2024, 5, 1, 10, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert p("2024:05:01 10:00:00Z").tzinfo == dt.timezone.utc
    assert p("0000:00:00 00:00:00") is None
    assert p("    :  :     :  :  ") is None
    assert p("2024:13:01 10:00:00") is None
    assert p(None) is None


def test_line_breaks_never_reach_exiftool(reader):
    with pytest.raises(ValueError):
        reader.read([pathlib.Path("/tmp/x\n-delete_original")])
    assert reader.running  # the process survives a refused request
    assert reader.read_one(EXIF / "Canon.jpg")["File:FileType"] == "JPEG"
