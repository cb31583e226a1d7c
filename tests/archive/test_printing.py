"""The printable case PDF (R18), read back with pypdf."""
from __future__ import annotations

import datetime as dt
import io
import pathlib

import pypdf
import pytest
from PIL import Image

from archive_server.printing import render_case_pdf

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus" / "exif" / "exif-samples" / "jpg"
PHOTOS = [CORPUS / "gps" / "DSCN0010.jpg", CORPUS / "orientation" / "landscape_6.jpg",
          CORPUS / "Canon_40D.jpg"]
WHEN = dt.datetime(2026, 11, 26, 9, 5, tzinfo=dt.timezone.utc)

CASE = {
    "case_id": "c0ffee00-1234-4abc-8def-000000000042",
    "version": 3,
    "patient": "191212121212",
    "department": "SE2321000016-15CQ",
    "status": "signed",
    "created": "2026-11-25T12:41:07Z",
    "media": 4,
    "form": {"Vad": "Trycksår, höger häl", "Samtycke": "Muntligt, given av patienten",
             "Fotograf": "Åsa Öberg"},
}


def photos() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in PHOTOS]


def read_pdf(data: bytes) -> tuple[pypdf.PdfReader, list[str]]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return reader, [page.extract_text() for page in reader.pages]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_case_pdf_carries_case_form_reason_and_images():
    media = [*photos(), ("VID_0001.MP4", b"\x00\x00\x00\x18ftypmp42 not an image")]
    pdf = render_case_pdf(CASE, media, printed_by="Åke Ärlig (sjuksköterska)", printed_at=WHEN,
                          reason="Remiss till plastikkirurgin, Örebro")
    assert pdf.startswith(b"%PDF-")
    reader, pages = read_pdf(pdf)
    everything = flat(" ".join(pages))
    for expected in ("19121212-1212", "SE2321000016-15CQ", CASE["case_id"], "signerat",
                     "Trycksår, höger häl", "Åsa Öberg", "Remiss till plastikkirurgin, Örebro",
                     "Åke Ärlig (sjuksköterska)", "2026-11-26 10:05 CET", "DSCN0010.jpg", "landscape_6.jpg",
                     "VID_0001.MP4: film, kan inte visas på papper"):
        assert expected in everything, expected
    images = [img for page in reader.pages for img in page.images]
    assert len(images) == 3
    # EXIF orientation 6 is applied: landscape_6 is stored portrait and prints as the landscape it shows.
    with Image.open(PHOTOS[1]) as raw:
        assert raw.height > raw.width
    turned = [img.image for page in reader.pages for img in page.images][1]
    assert turned.width > turned.height


def test_every_page_has_the_traceable_footer():
    media = photos() * 3  # nine photos: several pages
    pdf = render_case_pdf(CASE, media, printed_by="anna.a", printed_at=WHEN, reason="Polisanmälan")
    _, pages = read_pdf(pdf)
    assert len(pages) >= 3
    for number, text in enumerate(pages, start=1):
        text = flat(text)
        assert "Utskriven av anna.a 2026-11-26 10:05 CET" in text
        assert "Skäl: Polisanmälan" in text
        assert f"Fall {CASE['case_id']} version 3" in text
        assert f"Sida {number}/{len(pages)}" in text


def test_a_long_reason_is_whole_on_page_one_and_cut_in_the_footer():
    reason = "Begärd av försäkringsbolaget enligt fullmakt " + "x" * 400 + " slut"
    pdf = render_case_pdf(CASE, [], printed_by="anna.a", printed_at=WHEN, reason=reason)
    _, pages = read_pdf(pdf)
    assert "slut" in pages[0].replace("\n", "")
    assert "(hela skälet på sida 1)" in flat(pages[0])


@pytest.mark.parametrize("reason", ["", "   ", "\n\t", None])
def test_printing_without_a_reason_is_refused(reason):
    with pytest.raises(ValueError, match="reason"):
        render_case_pdf(CASE, photos(), printed_by="anna.a", printed_at=WHEN, reason=reason)


def test_printing_without_a_printer_name_is_refused():
    with pytest.raises(ValueError, match="who prints"):
        render_case_pdf(CASE, [], printed_by=" ", printed_at=WHEN, reason="Remiss")


def test_a_sparse_case_and_odd_files_still_print():
    png = io.BytesIO()
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(png, "PNG")
    tiff16 = io.BytesIO()
    Image.new("I;16", (50, 20), 4000).save(tiff16, "TIFF")
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # 400 MP, a few kB compressed
    media = [("a.png", png.getvalue()), ("b.tif", tiff16.getvalue()), ("huge.png", bomb.getvalue()),
             ("US0001.dcm", b"\x00" * 128 + b"DICM"), ("broken.jpg", b"\xff\xd8\xff\xe0 truncated"),
             ("label.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")]
    pdf = render_case_pdf({"case_id": "x1", "form": {"Anm.": "<b>inte fet</b> & <odd"}}, media,
                          printed_by="anna & co", printed_at=dt.datetime(2026, 6, 1, 12, 0),
                          reason="Test <i>")
    reader, pages = read_pdf(pdf)
    text = flat(" ".join(pages))
    assert "Fall x1 version –" in text
    assert "<b>inte fet</b> & <odd" in text and "Utskriven av anna & co" in text and "Skäl: Test <i>" in text
    assert "2026-06-01 14:00 CEST" in text  # naive = UTC, shown in Swedish summer time
    assert "US0001.dcm: DICOM, kan inte visas" in text
    assert "huge.png: kan inte visas som bild" in text
    assert "broken.jpg: kan inte visas som bild" in text
    assert "label.eps: kan inte visas som bild" in text  # never handed to Ghostscript
    assert sum(len(page.images) for page in reader.pages) == 2
