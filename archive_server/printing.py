"""A printable PDF of one case (R18): who printed it, when and why, on every page.

:func:`render_case_pdf` takes plain data (the case's JSON dict and its media
bytes) and returns the PDF's bytes; authorization and the audit entry are the
caller's. A paper copy must be traceable back to the log entry, so every page's
footer carries the printer, the time, the reason, the case id and version.

ReportLab renders it (platypus: flowing paragraphs, tables and images; a
canvas hook draws the footer). Measured against fpdf2, the other candidate:
ReportLab is 9.3 MB installed with one small dependency (charset-normalizer),
BSD-licensed and maintained since 2000; fpdf2 is 3.2 MB but needs fontTools
(30 MB) and is LGPL-3.0. Both embed subsets of TrueType fonts, so that Swedish
text (åäö) prints and can be searched in the PDF.

Images are decoded with Pillow, turned upright, scaled to print resolution
(at most :data:`PRINT_SIDE_PX` on the long side, about 300 dpi across the page)
and re-encoded as JPEG, so that a 12 MP original does not make a 10 MB printout
and an odd format (TIFF, 16-bit, CMYK, palette) prints like any other. What
Pillow cannot show (video, audio, DICOM, damaged files) is listed by name.

A picture's annotation layer (``archive_server.annotations``: arrows, circles,
text, lengths) is drawn over it as PDF vector graphics and text, in the same
picture-relative coordinates and colours as on screen, and listed in its
caption. It is drawn on the printed copy only: the stored file is never
changed (the layer is data beside it). Lengths print with a decimal comma
(``archive_server.numbers``).
"""
from __future__ import annotations

import dataclasses
import math
import datetime as dt
import io
import logging
import pathlib
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageOps
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import Image as PdfImage
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from archive_server import decoding
from archive_server.numbers import decimal

log = logging.getLogger(__name__)

FONT_DIR = pathlib.Path("/usr/share/fonts/truetype/dejavu")  # Debian: fonts-dejavu-core
FONT, FONT_BOLD = "DejaVuSans", "DejaVuSans-Bold"
FONT_FILES = {FONT: "DejaVuSans.ttf", FONT_BOLD: "DejaVuSans-Bold.ttf"}

# Longest side of an image in the PDF: 180 mm of A4 at about 300 dpi.
PRINT_SIDE_PX = 2200
# Larger pictures are not decoded at all (a decompression bomb, or not a photograph).
MAX_PIXELS = 100_000_000
# Formats shown, by content (never EPS/PDF: Pillow would hand those to Ghostscript).
IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")
JPEG_QUALITY = 88
# The footer repeats the reason; a longer one is cut there (page 1 has it whole).
FOOTER_REASON_CHARS = 160
# How times are shown to staff; the audit log keeps UTC.
DISPLAY_ZONE = "Europe/Stockholm"

_STATUS = {"unsigned": "osignerat", "signed": "signerat (låst)"}
_NOT_SHOWN = {
    ".mp4": "film", ".mov": "film", ".avi": "film", ".m4v": "film", ".mts": "film", ".mkv": "film",
    ".wav": "ljud", ".m4a": "ljud", ".mp3": "ljud", ".aac": "ljud", ".flac": "ljud",
    ".dcm": "DICOM", ".dicom": "DICOM",
}


@dataclasses.dataclass(frozen=True)
class _Printable:
    jpeg: bytes
    width: int
    height: int


def render_case_pdf(
    case: Mapping[str, Any],
    images: Sequence[tuple[str, bytes]],
    *,
    printed_by: str,
    printed_at: dt.datetime,
    reason: str,
    display_zone: str = DISPLAY_ZONE,
    layers: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> bytes:
    """The case as an A4 PDF: details, form, each image (or a line naming a file
    that cannot be shown) with its annotation layer from ``layers`` (by image
    name) drawn over it, and on every page the footer "Utskriven av …".

    Raises ValueError when ``reason`` or ``printed_by`` is empty or whitespace
    (R18: printing needs a stated reason). Missing case keys print as "–".
    """
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a print needs a reason (R18): say why the case is printed")
    if not isinstance(printed_by, str) or not printed_by.strip():
        raise ValueError("a print needs the name of who prints it (R18)")
    _register_fonts()
    reason = " ".join(reason.split())
    printed_by = " ".join(printed_by.split())
    when = _display_time(printed_at, display_zone)
    case_id = _text(case.get("case_id"))
    version = _text(case.get("version"))
    footer = _footer(printed_by, when, reason, case_id, version)

    styles = _styles()
    story: list[Any] = [
        Paragraph("Bildsluss – utskrift av fall", styles["title"]),
        Paragraph("Journalhandling. Utskriften är loggad med vem, när och varför; hantera kopian "
                  "enligt sekretess och förstör den när den inte behövs.", styles["small"]),
        Spacer(1, 4 * mm),
    ]
    rows = [
        ("Fall", case_id),
        ("Version", version),
        ("Patient", _patient(case.get("patient"))),
        ("Avdelning", _text(case.get("department"))),
        ("Status", _STATUS.get(str(case.get("status")), _text(case.get("status")))),
        ("Skapat", _text(case.get("created"))),
        ("Media", _text(case.get("media", len(images)))),
        ("Utskriven av", printed_by),
        ("Utskriven", when),
        ("Skäl för utskrift", reason),
    ]
    story += _table("Fallet", rows, styles)
    form = case.get("form")
    if isinstance(form, Mapping) and form:
        story += _table("Formulär", [(str(k), _text(v)) for k, v in form.items()], styles)
    story.append(Paragraph(f"Bilder ({len(images)})", styles["heading"]))
    width, height = A4
    usable_w = width - 2 * MARGIN
    # Two pictures per page: half the frame less a caption and a gap each.
    max_h = 0.5 * (height - MARGIN - FOOTER_SPACE) - 12 * mm
    for name, data in images:
        printable = _printable_apart(name, data)
        shapes = list((layers or {}).get(name, ()))
        caption = Paragraph(escape(name), styles["small"])
        if printable is None:
            story.append(Paragraph(escape(f"{name}: {_not_shown_why(name)}"), styles["body"]))
            continue
        scale = min(usable_w / printable.width, max_h / printable.height)
        picture = AnnotatedImage(io.BytesIO(printable.jpeg), shapes, width=printable.width * scale,
                                 height=printable.height * scale, hAlign="LEFT")
        block: list[Any] = [caption, picture]
        if shapes:
            block.append(Paragraph(escape(_layer_caption(shapes)), styles["small"]))
        story.append(KeepTogether([*block, Spacer(1, 4 * mm)]))

    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
        bottomMargin=FOOTER_SPACE, title=f"Fall {case_id} version {version}", author=printed_by,
        creator="Bildsluss", subject=f"Utskrift: {reason}"[:200],
    )
    doc.build(story, canvasmaker=_footed_canvas(footer))
    return out.getvalue()


# Page layout, in points.
MARGIN = 15 * mm
FOOTER_SPACE = 28 * mm
FOOTER_SIZE = 7.5


# The layer's colours, as on screen (_layer.html): yellow marks, cyan lengths,
# each over a dark edge so that they show on a light picture and on paper.
MARK = colors.HexColor("#ffd400")
MEASURE = colors.HexColor("#00e0ff")
EDGE = colors.HexColor("#202020")
_SHAPE_NAMES = {"arrow": "pil", "circle": "cirkel", "text": "text", "length": "längd"}


class AnnotatedImage(PdfImage):
    """A picture with its annotation layer drawn over it (coordinates 0..1 from
    the top left, as stored; the PDF's y runs upwards)."""

    def __init__(self, data: io.BytesIO, shapes: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self.shapes = list(shapes)

    def draw(self) -> None:
        super().draw()
        if self.shapes:
            _draw_layer(self.canv, self.shapes, float(getattr(self, "_offs_x", 0)),
                        float(getattr(self, "_offs_y", 0)), float(self.drawWidth), float(self.drawHeight))


def _draw_layer(canv: pdfcanvas.Canvas, shapes: Sequence[Mapping[str, Any]], left: float, bottom: float,
                width: float, height: float) -> None:
    def at(x: float, y: float) -> tuple[float, float]:
        return left + x * width, bottom + (1 - y) * height

    def stroke(colour: colors.Color, draw: Any, *corners: float) -> None:
        for tone, line in ((EDGE, 3.2), (colour, 1.8)):
            canv.setStrokeColor(tone)
            canv.setLineWidth(line)
            draw(*corners)

    def label(x: float, y: float, text: str, colour: colors.Color, size: float) -> None:
        words = canv.beginText(x, y)
        words.setFont(FONT_BOLD, size)
        words.setTextRenderMode(2)  # fill and stroke: a dark edge round light letters
        canv.setFillColor(colour)
        canv.setStrokeColor(EDGE)
        canv.setLineWidth(size / 14)
        words.textOut(text)
        canv.drawText(words)

    canv.saveState()
    canv.setLineCap(1)
    for shape in shapes:
        kind = shape.get("type")
        if kind in ("arrow", "length"):
            x1, y1 = at(shape["x1"], shape["y1"])
            x2, y2 = at(shape["x2"], shape["y2"])
            stroke(MARK if kind == "arrow" else MEASURE, canv.line, x1, y1, x2, y2)
            if kind == "arrow" and (x1, y1) != (x2, y2):
                angle, head = math.atan2(y2 - y1, x2 - x1), 7.0
                path = canv.beginPath()
                path.moveTo(x2, y2)
                for side in (-0.45, 0.45):
                    path.lineTo(x2 - head * math.cos(angle + side), y2 - head * math.sin(angle + side))
                path.close()
                canv.setFillColor(MARK)
                canv.setStrokeColor(EDGE)
                canv.setLineWidth(0.8)
                canv.drawPath(path, stroke=1, fill=1)
            if kind == "length":
                size = max(7.0, 0.036 * height)
                label((x1 + x2) / 2, (y1 + y2) / 2 + 0.012 * height, _length(shape), MEASURE, size)
        elif kind == "circle":
            cx, cy = at(shape["cx"], shape["cy"])
            rx, ry = shape["r"] * width, shape["r"] * height
            stroke(MARK, canv.ellipse, cx - rx, cy - ry, cx + rx, cy + ry)
        elif kind == "text":
            x, y = at(shape["x"], shape["y"])
            label(x, y, str(shape.get("text", "")), MARK, max(7.0, 0.04 * height))
    canv.restoreState()


def _length(shape: Mapping[str, Any]) -> str:
    return f"{decimal(shape.get('value', 0))} {shape.get('unit', '')}"


def _layer_caption(shapes: Sequence[Mapping[str, Any]]) -> str:
    """The layer in words under the picture, e.g. "pil; längd 3,5 cm"."""
    parts = []
    for shape in shapes:
        kind = str(shape.get("type"))
        name = _SHAPE_NAMES.get(kind, kind)
        if kind == "text":
            name += f" ”{shape.get('text', '')}”"
        elif kind == "length":
            name += " " + _length(shape)
        parts.append(name)
    return "Markeringar (ritade på utskriften, inte i arkivfilen): " + "; ".join(parts)


def _footed_canvas(footer: str) -> type[pdfcanvas.Canvas]:
    """A canvas that draws ``footer`` and "Sida n/N" on every page. The page
    count is known only at the end, so pages are kept until ``save``."""

    class FootedCanvas(pdfcanvas.Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 - ReportLab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                self._draw_footer(f"{footer} · Sida {number}/{total}")
                super().showPage()
            super().save()

        def _draw_footer(self, text: str) -> None:
            width, _ = self._pagesize
            top = FOOTER_SPACE - 6 * mm
            self.setStrokeColor(colors.grey)
            self.setLineWidth(0.5)
            self.line(MARGIN, top, width - MARGIN, top)
            self.setFillColor(colors.black)
            self.setFont(FONT, FOOTER_SIZE)
            y = top - FOOTER_SIZE - 2
            for line in simpleSplit(text, FONT, FOOTER_SIZE, width - 2 * MARGIN):
                self.drawString(MARGIN, y, line)
                y -= FOOTER_SIZE + 1.5

    return FootedCanvas


def _register_fonts() -> None:
    for name, file in FONT_FILES.items():
        if name in pdfmetrics.getRegisteredFontNames():
            continue
        path = FONT_DIR / file
        if not path.is_file():
            raise FileNotFoundError(f"font {path} is missing; install the Debian package fonts-dejavu-core")
        pdfmetrics.registerFont(TTFont(name, str(path)))


def _styles() -> dict[str, ParagraphStyle]:
    return {
        "title": ParagraphStyle("title", fontName=FONT_BOLD, fontSize=15, leading=19, spaceAfter=2 * mm),
        "heading": ParagraphStyle("heading", fontName=FONT_BOLD, fontSize=11, leading=14,
                                  spaceBefore=2 * mm, spaceAfter=1.5 * mm),
        "body": ParagraphStyle("body", fontName=FONT, fontSize=9.5, leading=12.5),
        "key": ParagraphStyle("key", fontName=FONT_BOLD, fontSize=9.5, leading=12.5),
        "small": ParagraphStyle("small", fontName=FONT, fontSize=9, leading=11.5),
    }


def _footer(by: str, when: str, reason: str, case_id: str, version: str) -> str:
    if len(reason) > FOOTER_REASON_CHARS:
        reason = reason[: FOOTER_REASON_CHARS - 1].rstrip() + "… (hela skälet på sida 1)"
    return f"Utskriven av {by} {when} · Skäl: {reason} · Fall {case_id} version {version}"


def _table(title: str, rows: Sequence[tuple[str, str]], styles: dict[str, ParagraphStyle]) -> list[Any]:
    data = [[Paragraph(escape(k), styles["key"]), Paragraph(escape(v), styles["body"])] for k, v in rows]
    table = Table(data, colWidths=[45 * mm, A4[0] - 2 * MARGIN - 45 * mm], hAlign="LEFT")
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 0),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
    ]))
    return [Paragraph(title, styles["heading"]), table, Spacer(1, 3 * mm)]


def _printable_apart(name: str, data: bytes) -> _Printable | None:
    """:func:`_printable` in a decoder worker (:mod:`archive_server.decoding`): a file
    that crashes or exhausts it is listed by name like any other that cannot be shown."""
    try:
        return decoding.run(_printable, name, data)
    except decoding.Undecodable as exc:
        log.warning("print: %s not shown: %s", name, exc)
        return None


def _printable(name: str, data: bytes) -> _Printable | None:
    """The image as a print-sized JPEG, or None when it cannot be shown."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                log.warning("print: %s not shown, %dx%d pixels is too large", name, img.width, img.height)
                return None
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            rgb = _to_8bit(upright)
    except Exception as exc:  # not an image Pillow can show: listed by name instead
        log.info("print: %s not shown as an image: %s", name, exc)
        return None
    rgb.thumbnail((PRINT_SIDE_PX, PRINT_SIDE_PX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=JPEG_QUALITY)
    return _Printable(buf.getvalue(), rgb.width, rgb.height)


def _to_8bit(img: Image.Image) -> Image.Image:
    """RGB or L for printing: 16-bit and float scaled to their range, alpha on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.nan_to_num(a).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode in ("RGB", "L") else img.convert("RGB")


def _not_shown_why(name: str) -> str:
    kind = _NOT_SHOWN.get(pathlib.PurePath(name).suffix.lower())
    if kind:
        return f"{kind}, kan inte visas på papper (finns i arkivet)"
    return "kan inte visas som bild (finns i arkivet)"


def _display_time(at: dt.datetime, zone: str) -> str:
    if at.tzinfo is None:  # naive times in the archive are UTC
        at = at.replace(tzinfo=dt.timezone.utc)
    try:
        local = at.astimezone(zoneinfo.ZoneInfo(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        local = at.astimezone(dt.timezone.utc)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or local.strftime("%z"))


def _patient(value: Any) -> str:
    """12-digit canonical numbers as staff write them: YYYYMMDD-NNNN."""
    text = _text(value)
    if len(text) == 12 and text.isdigit():
        return f"{text[:8]}-{text[8:]}"
    return text


def _text(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "ja" if value else "nej"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)
