"""metadata: one stay-open exiftool, capture time, device and orientation helpers."""
from __future__ import annotations

import datetime as dt
import os
import pathlib
import threading

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


def test_starting_the_reader_does_not_wait_for_exiftool_to_answer(tmp_path):
    """Issue 12: a card's run starts its exiftools and goes on (the version is
    asked with the first request). A tool that reads its requests and never
    answers stands in for a Perl still loading: the reader is made at once."""
    silent = tmp_path / "exiftool"
    silent.write_text("#!/bin/sh\nexec cat >/dev/null\n")
    silent.chmod(0o755)
    made: list[MetadataReader] = []
    starting = threading.Thread(target=lambda: made.append(MetadataReader(str(silent))), daemon=True)
    starting.start()
    starting.join(20)  # a bound for a hang only: the old start waited for ever
    assert made, "MetadataReader() waited for exiftool's answer"
    assert made[0].running
    made[0].close()
    assert not made[0].running


def test_the_first_request_asks_the_version_first():
    with MetadataReader() as fresh:
        assert fresh._tool.version is None  # not asked at the start
        status, out, _ = fresh.run("-ver")
        assert status == 0 and fresh._tool.version == out.strip() and out[0].isdigit()
