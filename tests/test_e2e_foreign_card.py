"""A card that our own generator did not write: a Nikon-style card built by hand.

Real photo content and real Nikon EXIF/GPS/maker notes from the corpus
(exif-samples/jpg/gps/DSCN00xx.jpg, a Nikon COOLPIX P6000), a QR label made
directly with zxing-cpp and pasted onto the first and last frame, Nikon's own
housekeeping (NIKON001.DSC) and a Windows indexer folder. It must go through
`bildsluss-agent ingest` exactly like a generated card.
"""
from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest
import zxingcpp
from PIL import Image, ImageDraw, ImageFont

from tests.support.e2e import PATIENT, PATIENT_CANONICAL, cases, exif_tags, ingest, media_on

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "corpus" / "exif" / "exif-samples" / "jpg" / "gps"
SOURCES = ["DSCN0010.jpg", "DSCN0012.jpg", "DSCN0021.jpg"]


def _label(number: str) -> Image.Image:
    code = zxingcpp.create_barcode(f"PNR:{number}", zxingcpp.BarcodeFormat.QRCode)
    symbol = Image.fromarray(np.asarray(code.to_image(scale=8, add_quiet_zones=True)), "L")
    sticker = Image.new("L", (symbol.width + 420, symbol.height + 40), 255)
    sticker.paste(symbol, (20, 20))
    draw = ImageDraw.Draw(sticker)
    font = ImageFont.truetype("DejaVuSans.ttf", 34) if _has_dejavu() else ImageFont.load_default()
    draw.text((symbol.width + 40, 60), number, fill=0, font=font)
    draw.text((symbol.width + 40, 120), "Testsson, Tolvan", fill=0, font=font)
    return sticker.convert("RGB").rotate(-8, expand=True, fillcolor=(190, 150, 130))


def _has_dejavu() -> bool:
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
        return True
    except OSError:
        return False


def build_nikon_card(root: pathlib.Path, number: str) -> list[str]:
    folder = root / "DCIM" / "100NIKON"
    folder.mkdir(parents=True)
    names = []
    for i, source in enumerate(SOURCES, start=1):
        photo = Image.open(CORPUS / source).convert("RGB").resize((2048, 1536), Image.LANCZOS)
        if i in (1, len(SOURCES)):
            label = _label(number)
            photo.paste(label, (photo.width // 2 - label.width // 2, photo.height // 2 - label.height // 2))
        name = f"DSCN{i:04d}.JPG"
        photo.save(folder / name, quality=92)
        # The camera's own tags, maker notes and GPS, then a capture time per frame.
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-tagsFromFile", str(CORPUS / source),
                        "-all:all", f"-DateTimeOriginal=2026:05:0{i} 10:00:00", str(folder / name)],
                       check=True)
        names.append(f"DCIM/100NIKON/{name}")
    (root / "NIKON001.DSC").write_bytes(b"NIKON DIGITAL CAMERA\x00" * 8)
    (root / "System Volume Information").mkdir()
    (root / "System Volume Information" / "IndexerVolumeGuid").write_bytes(
        "{8D9E1F6A-1234-4ABC-9DEF-0123456789AB}".encode("utf-16-le"))
    return names


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared corpus is not beside the repository")
def test_hand_built_nikon_card_goes_through(archive, tmp_path):
    card = tmp_path / "card"
    names = build_nikon_card(card, PATIENT)
    tags = exif_tags(card / names[0])
    assert tags.get("IFD0:Make", "").startswith("NIKON") and "GPS:GPSLatitude" in tags

    code, out = ingest(card, archive.address, tmp_path)

    assert code == 0, json.dumps(out, indent=1)
    assert out["patient"] == PATIENT_CANONICAL and out["wiped"]
    assert sorted(f["path"] for f in out["files"] if f["status"] == "archived") == names
    ignored = {f["path"].rstrip("/") for f in out["files"] if f["status"] == "ignored"}
    assert {"NIKON001.DSC", "System Volume Information"} <= ignored
    assert media_on(card) == [] and (card / "NIKON001.DSC").exists()
    assert out["case_id"] in [c["case_id"] for c in cases(archive, PATIENT_CANONICAL)]
