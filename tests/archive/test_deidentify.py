"""Teaching copies (R20): labels, burned-in text and faces masked, no metadata.

Real parts: generated patient labels with real barcodes pasted on a real
photograph from the corpus, the real ultrasound DICOM frames of the corpus,
and zxing-cpp, tesseract, OpenCV and exiftool as independent readers of the result.
"""
from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import re
import subprocess

import numpy as np
import pydicom
import pytest
import zxingcpp
from PIL import Image, ImageCms, ImageOps
from pydicom.pixels import apply_color_lut

from bildsluss_common.readers.barcode import read_barcodes
from archive_server.deidentify import DeidentifyError, _faces, deidentify_image
from tests.support.labels import render_label, render_overlay, valid_numbers

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
SAMPLES = CORPUS / "exif" / "exif-samples" / "jpg"
LEAF = SAMPLES / "mobile" / "jolla.jpg"  # a leaf close-up: texture much like a wound photograph
FACE = SAMPLES / "Konica_Minolta_DiMAGE_Z3.jpg"  # a small portrait
US_DICOM = CORPUS / "dicom" / "ultrasound" / "OBXXXX1A.dcm"

NUMBER = valid_numbers(1, seed=11)[0]  # "YYYYMMDD-NNNC"
DIGITS = NUMBER.replace("-", "")
NAME = "ÖBERG, ÅSA"


@dataclasses.dataclass(frozen=True)
class Scene:
    stored: bytes  # the file as the archive holds it (rotated pixels + EXIF orientation 6)
    upright: Image.Image  # what a viewer shows
    stickers: list[tuple[int, int, int, int]]  # x, y, w, h in upright pixels
    numbers: list[tuple[int, int, int, int]]  # the printed numbers, upright pixels


def exiftool(path: pathlib.Path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G0:1", "-a", "-u", "-ee", str(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)[0]


def metadata_left(path: pathlib.Path) -> list[str]:
    """Every tag beyond the file's own structure (size, coding, JFIF/PNG header)."""
    structure = {"ImageWidth", "ImageHeight", "BitDepth", "ColorType", "Compression", "Filter",
                 "Interlace"}
    left = []
    for key in exiftool(path):
        group, name = key.split(":")[0], key.split(":")[-1]
        if key == "SourceFile" or group in ("ExifTool", "Composite", "JFIF"):
            continue
        if group == "File" and "Comment" not in name:  # a JPEG COM segment shows as File:Comment
            continue
        if group == "PNG" and name in structure:
            continue
        left.append(key)
    return left


def digit_runs_of_number(text: str) -> list[str]:
    """Runs of 4+ digits in ``text`` that are a piece of the patient's number."""
    return [run for run in re.findall(r"\d{4,}", text) if run in DIGITS]


def ocr_text(image: Image.Image) -> str:
    """An independent tesseract read (sparse text), of the image and its negative: the
    Debian ``tesseract`` program (its own libtesseract), not the in-process engine the
    de-identification itself uses."""
    grey = image.convert("L")
    if max(grey.size) < 1200:
        grey = grey.resize((grey.width * 2, grey.height * 2), Image.BICUBIC)
    texts = []
    for img in (grey, ImageOps.invert(grey)):
        png = io.BytesIO()
        img.save(png, "PNG")
        texts.append(subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11"], input=png.getvalue(),
                                    capture_output=True, check=True, timeout=120).stdout.decode())
    return "\n".join(texts)


def covered(masked, box) -> float:
    """Share of ``box`` under the masked regions."""
    x, y, w, h = box
    hit = np.zeros((h, w), dtype=bool)
    for r in masked:
        x0, y0 = max(r.x, x), max(r.y, y)
        x1, y1 = min(r.x + r.w, x + w), min(r.y + r.h, y + h)
        if x1 > x0 and y1 > y0:
            hit[y0 - y:y1 - y, x0 - x:x1 - x] = True
    return float(hit.mean())


def read_all_barcodes(image: Image.Image) -> list:
    return read_barcodes(image, budget_s=10, enough=lambda _: False)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    """Two patient labels (Code 128 flat, DataMatrix turned 25 degrees) on a real
    photograph, stored as a camera does: pixels rotated, EXIF orientation 6,
    make, model, GPS and a comment with the patient's name."""
    photo = Image.open(LEAF).convert("RGB").resize((1400, 1050), Image.BILINEAR)
    stickers, numbers = [], []
    for symbology, rotation, size, at in (("Code128", 0, 460, (80, 90)), ("DataMatrix", 25, 380, (820, 560))):
        label = render_label(NUMBER, NAME, symbology=symbology, size=size, rotation=rotation,
                             scene_size=(900, 800), jpeg_quality=None, seed=3)
        x, y, w, h = label.truth.label_box
        photo.paste(label.image.crop((x, y, x + w, y + h)), at)
        stickers.append((at[0], at[1], w, h))
        nx, ny, nw, nh = label.truth.number_box
        numbers.append((at[0] + nx - x, at[1] + ny - y, nw, nh))
    path = tmp_path_factory.mktemp("scene") / "IMG_0001.JPG"
    photo.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=93)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-Orientation#=6", "-Make=Canon",
                    "-Model=Canon EOS 250D", "-GPSLatitude=59.35", "-GPSLatitudeRef=N",
                    f"-Comment={NAME} {NUMBER}", f"-XMP:Description={NAME}", str(path)], check=True)
    return Scene(stored=path.read_bytes(), upright=photo, stickers=stickers, numbers=numbers)


def test_the_scene_is_readable_before(scene, tmp_path):
    """The test below can fail: the original shows both barcodes and the printed
    number, and carries metadata that the check sees."""
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(scene.stored)))
    assert upright.size == scene.upright.size
    readings = read_all_barcodes(upright)
    assert {r.text for r in readings} == {DIGITS}
    assert {r.symbology for r in readings} == {"Code128", "DataMatrix"}
    assert digit_runs_of_number(ocr_text(upright))
    original = tmp_path / "original.jpg"
    original.write_bytes(scene.stored)
    left = metadata_left(original)
    assert any(k.startswith("EXIF:GPS") for k in left) and "File:Comment" in left
    assert any(k.startswith("XMP") for k in left)


def test_labels_on_a_photo_are_masked_whole_and_the_copy_is_clean(scene, tmp_path):
    untouched = bytes(scene.stored)
    result = deidentify_image(scene.stored)
    assert scene.stored == untouched
    assert result.media_type == "image/jpeg"
    out = Image.open(io.BytesIO(result.data))
    assert out.size == scene.upright.size  # EXIF orientation applied: masks land where the viewer looks

    # No barcode readable: the agent's reader and plain zxing-cpp.
    assert read_all_barcodes(out) == []
    assert zxingcpp.read_barcodes(np.asarray(out.convert("L")), try_rotate=True, try_downscale=True,
                                  try_invert=True) == []
    # No piece of the number, no name.
    text = ocr_text(out)
    assert digit_runs_of_number(text) == [], text
    assert "BERG" not in text.upper(), text

    # Whole stickers masked, little else; outside the masks the original picture.
    masked = result.masked
    assert {"barcode", "text"} <= {r.why for r in masked}
    for sticker, number in zip(scene.stickers, scene.numbers):
        assert covered(masked, number) == 1.0
        assert covered(masked, sticker) > 0.9
    W, H = scene.upright.size
    assert covered(masked, (0, 0, W, H)) < 0.35
    after = np.asarray(out.convert("L"), dtype=np.int16)
    orig = np.asarray(scene.upright.convert("L"), dtype=np.int16)
    keep = np.ones(after.shape, dtype=bool)
    for r in masked:
        keep[r.y:r.y + r.h, r.x:r.x + r.w] = False
        inner = after[r.y + 4:r.y + r.h - 4, r.x + 4:r.x + r.w - 4]
        assert inner.size == 0 or inner.max() < 24  # solid fill (JPEG ringing at the edges aside)
    assert float(np.abs(after - orig)[keep].mean()) < 4

    copy = tmp_path / "copy.jpg"
    copy.write_bytes(result.data)
    assert metadata_left(copy) == []


def test_ultrasound_overlay_text_is_masked(tmp_path):
    frame = render_overlay(NAME, NUMBER, "2026-11-25", 800, 600, seed=2).image
    src = tmp_path / "us.png"
    frame.save(src, "PNG")
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-PNG:Comment={NAME} {NUMBER}",
                    str(src)], check=True)
    before = ocr_text(frame)
    assert digit_runs_of_number(before) and "KAROLINSKA" in before  # readable before
    result = deidentify_image(src.read_bytes())
    assert result.media_type == "image/png"
    out = Image.open(io.BytesIO(result.data))
    after = ocr_text(out)
    assert digit_runs_of_number(after) == [], after
    for word in ("KAROLINSKA", "BERG", "2026", "12:41"):
        assert word not in after.upper(), after
    assert re.findall(r"\d{3,}", after) == [], after
    copy = tmp_path / "copy.png"
    copy.write_bytes(result.data)
    assert metadata_left(copy) == []
    assert metadata_left(src)  # the check sees a PNG comment


def test_real_ultrasound_frame_text_is_masked(tmp_path):
    ds = pydicom.dcmread(US_DICOM)
    rgb = apply_color_lut(ds.pixel_array, ds)  # a 16-bit palette
    frame = Image.fromarray((rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb)
    words_before = set(re.findall(r"[A-Za-z0-9.]{3,}", ocr_text(frame)))
    assert {"Gen", "Mag"} <= words_before  # the machine's overlay, readable before
    result = deidentify_image(US_DICOM.read_bytes())
    assert result.media_type == "image/png"
    out = Image.open(io.BytesIO(result.data))
    assert out.size == frame.size
    assert all(r.why == "text" for r in result.masked)
    after = ocr_text(out)
    assert not {"Gen", "Mag", "28Hz", "1.06"} & set(re.findall(r"[A-Za-z0-9.]{3,}", after)), after


def test_a_face_is_masked_and_a_wound_like_texture_is_not_taken_for_one():
    result = deidentify_image(FACE.read_bytes())
    faces = [r for r in result.masked if r.why == "face"]
    assert len(faces) == 1
    out = Image.open(io.BytesIO(result.data))
    assert _faces(out) == []
    assert _faces(Image.open(FACE).convert("RGB"))  # the detector sees it in the original
    leaf = io.BytesIO()
    Image.open(LEAF).convert("RGB").resize((1200, 900)).save(leaf, "JPEG")
    assert deidentify_image(leaf.getvalue(), detect=("face",)).masked == []


def _gif_with_two_frames() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("L", (20, 20), v) for v in (0, 255)]
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12000, 9000)).save(buf, "PNG")  # 108 MP, a few kB compressed
    return buf.getvalue()


@pytest.mark.parametrize("data, why", [
    (b"", "not an image"),
    (b"MZ\x90\x00 an executable", "not an image"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image"),
    (b"PK\x03\x04 a zip archive", "not an image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 cut off", "not an image"),
    ((CORPUS / "dicom" / "ultrasound" / "OBXXXX1A_rle_2frame.dcm").read_bytes(), "choose the frame"),
    (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI", "holds no image"),
    (US_DICOM.read_bytes()[:-50_000], "DICOM file cannot be read"),  # pixel data cut off
    (_huge_png(), "decompression bomb"),
    (_gif_with_two_frames(), "2 frames"),
])
def test_what_it_cannot_handle_is_refused(data, why):
    with pytest.raises(DeidentifyError, match=why):
        deidentify_image(data)


def test_unknown_detector_is_an_error():
    with pytest.raises(ValueError, match="unknown detector"):
        deidentify_image(FACE.read_bytes(), detect=("barcode", "tattoo"))


def test_an_icc_profile_is_applied_then_dropped(tmp_path):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = tmp_path / "icc.jpg"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(src, "JPEG", quality=95, icc_profile=profile)
    assert any(k.startswith("ICC_Profile") for k in metadata_left(src))
    result = deidentify_image(src.read_bytes(), detect=("barcode",))
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(result.data)
    assert metadata_left(copy) == []
    r, g, b = Image.open(copy).convert("RGB").getpixel((32, 24))
    assert abs(r - 200) < 6 and abs(g - 120) < 6 and abs(b - 40) < 6  # sRGB to sRGB: the colour stays


def test_a_code_still_readable_after_masking_refuses_the_copy(monkeypatch):
    """Fault injection: the reader reports the code at a wrong place, so the
    masks miss it; the real reader still reads it in every round."""
    import archive_server.deidentify as deid

    code = zxingcpp.create_barcode(DIGITS, zxingcpp.BarcodeFormat.DataMatrix).to_image(scale=8)
    page = Image.new("L", (400, 300), 255)
    page.paste(Image.fromarray(np.asarray(code)), (200, 100))
    buf = io.BytesIO()
    page.save(buf, "PNG")
    real = deid._barcodes
    monkeypatch.setattr(deid, "_barcodes", lambda image: [(0, 0, 10, 10) for _ in real(image)])
    with pytest.raises(DeidentifyError, match="barcode is still readable"):
        deidentify_image(buf.getvalue(), detect=("barcode",))
