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


LAYER = [{"type": "arrow", "x1": 0.1, "y1": 0.1, "x2": 0.5, "y2": 0.5},
         {"type": "circle", "cx": 0.5, "cy": 0.5, "r": 0.2},
         {"type": "text", "x": 0.2, "y": 0.8, "text": "sårkant"},
         {"type": "length", "x1": 0.1, "y1": 0.9, "x2": 0.6, "y2": 0.9, "value": 1234.5, "unit": "mm"}]


def picture_and_lines(pdf: bytes) -> tuple[tuple[float, ...], list[tuple[float, float, float, float]]]:
    """The one picture's box (left, bottom, width, height) and every straight
    line drawn on its page (x1, y1, x2, y2), in page coordinates."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    page = next(p for p in reader.pages if p.images)
    ops = pypdf.generic.ContentStream(page.get_contents(), reader).operations
    box, lines, matrices, start = None, [], [], None
    for operands, op in ops:
        if op == b"cm":
            matrices.append([float(v) for v in operands])
        elif op == b"Do" and box is None:
            a, _, _, d, e, f = matrices[-1]
            box = (e, f, a, d)
        elif op == b"m":
            start = tuple(float(v) for v in operands)
        elif op == b"l" and start is not None:
            lines.append((*start, *(float(v) for v in operands)))
    assert box is not None
    return box, lines


def test_the_annotation_layer_is_drawn_over_its_picture_with_a_decimal_comma():
    name, data = photos()[0]
    plain = render_case_pdf(CASE, [(name, data)], printed_by="anna.a", printed_at=WHEN, reason="Remiss")
    marked = render_case_pdf(CASE, [(name, data)], printed_by="anna.a", printed_at=WHEN, reason="Remiss",
                             layers={name: LAYER, "other.jpg": [{"type": "text", "x": 0, "y": 0, "text": "annan bild"}]})
    text = flat(" ".join(read_pdf(marked)[1]))
    assert "1 234,5 mm" in text and "sårkant" in text and "1234.5" not in text and "annan bild" not in text
    assert "Markeringar (ritade på utskriften, inte i arkivfilen): pil; cirkel; text ”sårkant”; längd" in text
    assert "sårkant" not in flat(" ".join(read_pdf(plain)[1]))

    (left, bottom, width, height), lines = picture_and_lines(marked)
    def at(x, y):
        return pytest.approx((left + x * width, bottom + (1 - y) * height), abs=0.05)
    arrows = [line for line in lines if (line[:2], line[2:]) == (at(0.1, 0.1), at(0.5, 0.5))]
    lengths = [line for line in lines if (line[:2], line[2:]) == (at(0.1, 0.9), at(0.6, 0.9))]
    assert len(arrows) == 2 and len(lengths) == 2  # each over its dark edge
    assert not [line for line in picture_and_lines(plain)[1] if (line[:2], line[2:]) == (at(0.1, 0.1), at(0.5, 0.5))]


def _decoder_crash(*args: object) -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_picture_whose_decoder_crashes_is_listed_by_name_and_the_rest_print(monkeypatch):
    # The pictures are decoded in decoder workers (archive_server.decoding); one that
    # kills its worker is listed like any file that cannot be shown, and the next
    # picture still prints from a fresh worker.
    from archive_server import decoding

    run, crashed = decoding.run, PHOTOS[0].name

    def crashing_for_one(decode, name, data):
        return run(_decoder_crash) if name == crashed else run(decode, name, data)

    monkeypatch.setattr(decoding, "run", crashing_for_one)
    try:
        pdf = render_case_pdf(CASE, photos(), printed_by="anna.a", printed_at=WHEN, reason="Remiss")
    finally:
        decoding.stop()
    reader, pages = read_pdf(pdf)
    text = flat(" ".join(pages))
    assert f"{crashed}: kan inte visas som bild" in text
    images = sum(len(page.images) for page in reader.pages)
    assert images == len(PHOTOS) - 1
