"""The card generator (tests/support/cardgen.py) makes what the other tests rely on.

Checked with independent tools: exiftool for the metadata, the identity number
validator for the numbers, Pillow for the pictures, the CLI as a subprocess.
"""
from __future__ import annotations

import datetime as dt
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bildsluss_common.identity import numbers
from tests.support import cardgen
from tests.support.cardgen import make_card, make_personnummer


def exiftool(*paths) -> list[dict]:
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", "-n", *map(str, paths)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("date, serial", [("19121212", "121"), ("19820415", "238"),
                                          ("20010101", 1), (dt.date(1955, 5, 5), "123")])
def test_make_personnummer_is_valid(date, serial):
    pnr = make_personnummer(date, serial)
    assert len(pnr) == 13 and pnr[8] == "-"
    number = numbers.parse(pnr)
    assert number is not None and number.canonical == pnr.replace("-", "")


def test_the_classic_test_number():
    assert make_personnummer("19121212", "121") == "19121212-1212"


def test_coordination_and_invalid_numbers():
    samordning = make_personnummer("19820415", "238", coordination=True)
    assert samordning[6:8] == "75"
    assert numbers.parse(samordning).kind == "samordningsnummer"
    bad = make_personnummer("19121212", "121", valid=False)
    assert bad == "19121212-1213" and numbers.parse(bad) is None
    with pytest.raises(ValueError):
        make_personnummer("19820230", "238")


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    return make_card(tmp_path_factory.mktemp("gen") / "card", patient="19121212-1212",
                     n_images=3, megapixels=2.0, seed=4)


def test_layout_is_a_canon_dcf_card(card):
    root = card.root
    assert card.files == ("DCIM/100CANON/IMG_0001.JPG", "DCIM/100CANON/IMG_0002.JPG",
                          "DCIM/100CANON/IMG_0003.JPG")
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted([*card.files, *card.housekeeping])
    assert set(card.housekeeping) == {
        "DCIM/CANONMSC/M0100.CTG", ".Spotlight-V100/VolumeConfiguration.plist",
        "DCIM/100CANON/._IMG_0001.JPG", "System Volume Information/IndexerVolumeGuid"}
    assert (root / "DCIM/100CANON/._IMG_0001.JPG").read_bytes()[:4] == b"\x00\x05\x16\x07"
    assert not list(root.glob(".cardgen*")), "temporary files left on the card"


def test_truth_labels_first_and_last(card):
    assert [i.label for i in card.images] == ["19121212-1212", None, "19121212-1212"]
    assert [i.payload for i in card.images] == ["191212121212", None, "191212121212"]
    assert card.patients == ("191212121212",)
    assert card.images[1].label_box is None and card.images[0].label_box is not None


def test_pictures_look_like_photographs(card):
    for rel in card.files:
        with Image.open(card.root / rel) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            w, h = img.size
            assert 1.8e6 <= w * h <= 2.2e6 and w * 3 == h * 4
            a = np.asarray(img.convert("RGB"), np.float32)
        r, g, b = (a[..., i].mean() for i in range(3))
        assert r > g > b, "skin-coloured: more red than green than blue"
        assert a.std() > 3, "textured, not flat"


def test_real_camera_metadata(card):
    tags = exiftool(*(card.root / f for f in card.files))
    times = []
    for t in tags:
        assert t["IFD0:Make"] == "Canon" and t["IFD0:Model"] == "Canon EOS 250D"
        assert str(t["ExifIFD:SerialNumber"]) == "083051006721"
        assert 59 < t["GPS:GPSLatitude"] < 60 and 17 < t["GPS:GPSLongitude"] < 19
        assert t["IFD0:Orientation"] == 1
        assert "IFD1:ThumbnailImage" in t
        times.append(t["ExifIFD:DateTimeOriginal"])
        if cardgen.CORPUS_EXIF.is_dir():
            assert any(k.startswith("Canon:") for k in t), "maker notes copied from the corpus"
    assert times == sorted(times) and len(set(times)) == len(times)


def test_options_place_the_labels(tmp_path):
    other = make_personnummer("19820415", "238")
    spec = make_card(tmp_path / "c", patient="19121212-1212", n_images=4, megapixels=1.0,
                     extra_patient_at=1, extra_patient=other, last_patient=other,
                     symbology="DataMatrix", camera="nikon", housekeeping=False, exif=False)
    assert [i.label for i in spec.images] == ["19121212-1212", other, None, other]
    assert spec.patients == ("191212121212", other.replace("-", ""))
    assert spec.files[0] == "DCIM/100NIKON/DSC_0001.JPG" and spec.housekeeping == ()
    with pytest.raises(ValueError):
        make_card(tmp_path / "d", patient="19121212-1212", n_images=2, extra_patient_at=5)
    with pytest.raises(ValueError):
        make_card(tmp_path / "e", patient="19121212-1212", symbology="EAN13")


def test_cli_writes_a_card_and_says_what(tmp_path):
    out = subprocess.run(
        [sys.executable, "tests/support/cardgen.py", str(tmp_path / "cli"), "--patient",
         "19121212-1212", "--images", "2", "--megapixels", "1", "--last-patient", "19820415-2383"],
        capture_output=True, text=True, check=True,
        cwd=str(pathlib.Path(__file__).resolve().parent.parent))
    assert "IMG_0001.JPG" in out.stdout and "19820415-2383" in out.stdout
    assert (tmp_path / "cli" / "DCIM/100CANON/IMG_0002.JPG").is_file()
