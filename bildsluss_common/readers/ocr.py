"""Printed identity numbers read by OCR (R3): patient labels in photos, ultrasound overlays.

OCR is the fallback after barcodes, and it is the reader most likely to misread.
This module only says what text it saw where; the identify stage validates. To
keep a misread from becoming a wrong patient (R1):

* Only substrings that look like an identity number are returned
  (:func:`bildsluss_common.identity.numbers.find_candidates`), with the text as read.
* A second, digits-only pass runs on the words of a line that already looked
  number-like in the first pass, never on a whole label: a digits-only pass over a
  name or a date line turns letters into digits and can make up a number.
* Per label (region), when any reading validates, the invalid readings of the
  same region are dropped (they are the misread passes); two different valid
  numbers in one region are both returned, so that the caller refuses (R4).
  When none validates, the invalid ones are returned, so that the caller can say
  INVALID_ID rather than NO_ID_FOUND.
* Nothing is guessed: no letter-to-digit mapping (O->0, l->1) is applied.

Pipeline for photos (:func:`read_printed_numbers`): find bright, unsaturated
regions (a white sticker on skin) with a threshold and connected components on a
coarse grid; per region, whiten skin-coloured pixels, estimate the skew by a
projection profile over +-42 degrees, rotate, flatten the illumination (glare),
blank barcode bands, crop to the text and scale it so that a line is about 36 px
high (a large label, whose lines the coarse skew estimate sees taller than 54 px,
is turned and flattened at the smaller size where they are about 54 px: the same
text for tesseract at a fraction of the cost). Then tesseract passes, cheapest first, until one gives a valid number:
page mode over the label; digits only over number-like words; each text line
alone (single-line mode) at two sizes, because tesseract's line recogniser is
sensitive to text size (a "19121212-1212" line can come out as letters in page
mode). Regions are tried largest first until the time budget is spent; when no
region is found (a close-up of the label), the whole image is read.

Ultrasound overlays (:func:`read_overlay`, :func:`read_overlay_fields`): light
text on black; the image content (speckle) is blanked where the neighbourhood is
not mostly black, the rest inverted, upscaled 2x and read in sparse-text mode.

Tesseract runs in this process (:mod:`bildsluss_common.readers.tesseract`: tesserocr,
the model loaded once per process, one thread), with the page modes and
whitelists above. Budgets are CPU time (this thread's, which includes
tesseract's, :mod:`bildsluss_common.readers.budget`); a call starts only while
CPU time is left and is stopped at the budget's wall-clock backstop. A
tesseract failure or timeout yields no reading, never an exception: the caller
then refuses for want of a number.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import cast
import math
import re

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from bildsluss_common.readers import Method, Reading, tesseract
from bildsluss_common.readers.budget import Budget
from bildsluss_common.readers.regions import middle_inside
from bildsluss_common.identity.numbers import Candidate, find_candidates

log = logging.getLogger(__name__)

# Tesseract language for numbers: "eng" reads digits as well as "swe" and is faster.
DIGIT_LANG = "eng"
# For overlay fields with names (Å, Ä, Ö).
FIELD_LANG = "swe+eng"
DIGIT_WHITELIST = "0123456789-+"

# Label detection on a downscaled copy (long side about DETECT_SIDE px).
DETECT_SIDE = 1000
CELL = 4  # detection pixels per grid cell
MIN_LABEL_SIDE = 120  # original pixels; smaller regions cannot hold a readable number
MAX_REGIONS = 6
TARGET_LINE_PX = 36  # text line height given to tesseract
RETRY_SCALES = (1.0, 0.6)  # sizes of the prepared label tried line by line, in order



@dataclasses.dataclass(frozen=True)
class OverlayFields:
    """What an ultrasound overlay shows about the patient, as read (not validated)."""

    name: str | None
    patient_text: str | None  # the identity-number-shaped text, as read
    date_text: str | None
    raw_text: str


@dataclasses.dataclass(eq=False)
class _Word:
    text: str
    conf: float
    box: tuple[int, int, int, int]  # x, y, w, h in the OCR image
    line: tuple[int, int, int]
    source: Image.Image | None = None  # the OCR image the word was read on (separator check)


@dataclasses.dataclass
class _Found:
    text: str
    valid: bool
    canonical: str | None
    box: tuple[int, int, int, int]  # original pixels
    conf: float


# A frame's OCR budget is CPU time (this thread, tesseract's included), with
# a wall-clock backstop: see bildsluss_common.readers.budget.
_Deadline = Budget


# -- tesseract ----------------------------------------------------------------------


def _ocr_words(img: Image.Image, psm: int, deadline: _Deadline, *, lang: str = DIGIT_LANG,
               whitelist: str | None = None) -> list[_Word]:
    if deadline.left() < 0.05:
        return []
    try:
        read = tesseract.words(img, psm=psm, lang=lang, whitelist=whitelist,
                               timeout_s=max(0.2, deadline.wall_left()))
    except tesseract.TesseractError as exc:
        log.warning("OCR: %s", exc)
        return []  # timeout or tesseract failure: no reading (the caller refuses)
    return [_Word(text=w.text, conf=w.conf, box=w.box, line=w.line, source=img) for w in read]


def _lines(words: list[_Word]) -> list[list[_Word]]:
    by_line: dict[tuple[int, int, int], list[_Word]] = collections.OrderedDict()
    for w in words:
        by_line.setdefault(w.line, []).append(w)
    return list(by_line.values())


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _candidates_in_words(words: list[_Word]) -> list[tuple[str, bool, str | None, tuple[int, int, int, int], float]]:
    """Identity-number-shaped substrings of each OCR line, with their boxes (OCR image)."""
    out = []
    for line in _lines(words):
        text = ""
        spans = []
        for w in line:
            if text:
                text += " "
            word = _plus_by_shape(w)
            spans.append((len(text), len(text) + len(word), w))
            text += word
        for c in find_candidates(text):
            hit = [w for s, e, w in spans if s < c.end and e > c.start]
            if not hit:
                continue
            conf = min(w.conf for w in hit)
            box = _union([w.box for w in hit])
            valid = c.valid and _separator_confirmed(c, hit[0].source, box)
            out.append((c.raw, valid, c.number.canonical if valid and c.number else None, box, conf))
    return out


# -- the separator of a 10-digit number ---------------------------------------------
#
# In the 10-digit form the separator carries the century: "200315+1251" is born in
# 1920, "200315-1251" (or no separator) in 2020, and both pass the Luhn check. OCR
# confuses "+" with "4", "t" or nothing, so the separator OCR read is accepted only
# when the glyphs on the image agree: a "+" must be seen as a plus, a "-" or no
# separator only where no plus-like or unexplained glyph sits among the digits.
# Otherwise the reading counts as invalid (the card is refused, R1). A "+" misread
# as a digit ("20031541251") is not a number at all; the plus is then read from the
# glyphs' shapes (_plus_by_shape), never guessed from the text. docs/identity-numbers.md.

# Glyph shape thresholds, as fractions of the digits' height (measured on the
# benchmark's fonts: DejaVu, Noto, Nimbus; a plus is 0.55-0.9 of the digit height,
# a hyphen 0.08-0.2, at 20-60 px digit height).
_PLUS_MIN_H = 0.3
_DASH_MAX_H = 0.3
_SMALL_GLYPH = 0.7  # shorter than this: punctuation, not a digit


def _separator_confirmed(c: Candidate, image: Image.Image | None, box: tuple[int, int, int, int]) -> bool:
    """Whether the glyphs in ``box`` agree with the separator of a 10-digit candidate."""
    number = c.number
    if number is None or not number.century_inferred:
        return True  # 12 digits: the century is printed; a reserve number has no separator rule
    if image is None:
        return False
    glyphs = separator_glyphs(image, box)
    if glyphs is None:
        return False
    core = c.raw.strip(" ")[6:-4].strip(" ")
    if core == "+":
        return glyphs == ["+"]
    return "+" not in glyphs and "?" not in glyphs and (core == "" or "-" in glyphs)


def separator_glyphs(image: Image.Image, box: tuple[int, int, int, int]) -> list[str] | None:
    """The shapes of the non-digit glyphs between the digits of one number on ``image``
    (dark text on light), left to right: "+", "-" or "?" (neither; unexplained).

    ``box`` is the number's box (x, y, w, h) in the image. None when no digits are
    found there. See :func:`glyph_sequence`.
    """
    seq = glyph_sequence(image, box)
    return None if seq is None else [g for g in seq if g != "d"]


def glyph_sequence(image: Image.Image, box: tuple[int, int, int, int]) -> list[str] | None:
    """The glyphs of one number on ``image`` (dark text on light), left to right:
    "d" (a digit-sized glyph), "+", "-" or "?" (a small glyph that is neither).

    Glyphs are connected components of an Otsu-binarised crop of ``box``; digits
    are the tall ones (pieces of one digit, overlapping in x, are merged); anything
    else whose middle is in the middle of the digits' band, between the first and
    the last digit, is a separator candidate; specks, commas and underlines are
    left out. None when fewer than two digits are found.
    """
    import cv2  # opencv-python-headless: a project dependency; imported where used

    x, y, w, h = box
    pad = max(2, h // 4)
    crop = np.asarray(image.convert("L").crop((x - pad, y - pad, x + w + pad, y + h + pad)))
    if crop.size == 0 or int(crop.max()) - int(crop.min()) < 40:
        return None
    _, ink = cv2.threshold(crop, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    comps = [(i, int(stats[i][0]), int(stats[i][1]), int(stats[i][2]), int(stats[i][3])) for i in range(1, n)]
    # Glyphs whose middle lies in the number's box (not a neighbouring line).
    comps = [c for c in comps if pad <= c[2] + c[4] / 2 <= pad + h]
    if not comps:
        return None
    tall = max(c[4] for c in comps)
    digits = [c for c in comps if c[4] >= _SMALL_GLYPH * tall and not _plus_shaped(labels, c, tall)]
    if len(digits) < 2:
        return None
    height = float(np.median([c[4] for c in digits]))
    top = float(np.median([c[2] for c in digits]))
    left = min(c[1] for c in digits)
    right = max(c[1] + c[3] for c in digits)
    out: list[tuple[float, str]] = []
    spans: list[list[int]] = []  # digits' x extents, pieces merged
    for _, cx, _, cw, _ in sorted(digits, key=lambda c: c[1]):
        if spans and cx < spans[-1][1] and min(cx + cw, spans[-1][1]) - cx > 0.5 * min(cw, spans[-1][1] - spans[-1][0]):
            spans[-1][1] = max(spans[-1][1], cx + cw)
        else:
            spans.append([cx, cx + cw])
    out += [((a + b) / 2, "d") for a, b in spans]
    for c in comps:
        i, cx, cy, cw, ch = c
        if c in digits or cw * ch < (0.08 * height) ** 2:
            continue  # a digit, or a speck of noise
        mid, centre = cy + ch / 2, cx + cw / 2
        if not (top + 0.25 * height <= mid <= top + 0.75 * height) or not (left < centre < right):
            continue  # a comma or an underline, or outside the number
        if any(a <= centre <= b for a, b in spans):
            continue  # inside a digit: the dot of a monospace zero
        if _plus_shaped(labels, c, height):
            kind = "+"
        elif ch <= _DASH_MAX_H * height and cw >= 1.4 * ch:
            kind = "-"
        else:
            kind = "?"
        out.append((centre, kind))
    return [kind for _, kind in sorted(out)]


# Six digits, one character that is neither a digit nor a separator ("4", "t", "*"), four digits.
_MISREAD_PLUS = re.compile(r"[0-9]{6}[^0-9 +\-\u2010-\u2014\u2212][0-9]{4}|[0-9]{11}")


def _plus_by_shape(word: _Word) -> str:
    """A word OCR read as 11 characters where the image shows 6 digits, a plus and
    4 digits ("20031541251" for "200315+1251"): the text with the plus read from the
    glyph's shape. Any other word is returned as read; a separator OCR did read
    ("-" where the glyph is a plus) is never replaced: that disagreement is checked,
    and refused, by :func:`_separator_confirmed`."""
    if word.source is None or not _MISREAD_PLUS.fullmatch(word.text):
        return word.text
    seq = glyph_sequence(word.source, word.box)
    if seq != ["d"] * 6 + ["+"] + ["d"] * 4:
        return word.text
    return f"{word.text[:6]}+{word.text[7:]}"


def _plus_shaped(labels: np.ndarray, comp: tuple[int, int, int, int, int], height: float) -> bool:
    """A plus: one vertical and one horizontal stroke crossing near the middle, empty corners."""
    i, cx, cy, cw, ch = comp
    if ch < _PLUS_MIN_H * height or not 0.55 <= cw / max(ch, 1) <= 1.8:
        return False
    m = labels[cy:cy + ch, cx:cx + cw] == i
    cols, rows = m.sum(axis=0), m.sum(axis=1)
    col, row = int(np.argmax(cols)), int(np.argmax(rows))
    if cols[col] < 0.8 * ch or rows[row] < 0.8 * cw:
        return False
    if abs(col + 0.5 - cw / 2) > 0.2 * cw or abs(row + 0.5 - ch / 2) > 0.2 * ch:
        return False
    qy, qx = max(1, ch // 3), max(1, cw // 3)
    corners = (m[:qy, :qx], m[:qy, -qx:], m[-qy:, :qx], m[-qy:, -qx:])
    return max(float(q.mean()) for q in corners) <= 0.2


# -- geometry -----------------------------------------------------------------------


class _Affine:
    """Maps OCR-image coordinates back to original-image coordinates."""

    def __init__(self) -> None:
        self.m = np.eye(3)

    def then(self, m: np.ndarray) -> "_Affine":
        """Prepend a step: ``m`` maps the new image's coordinates into the previous one's."""
        a = _Affine()
        a.m = self.m @ m
        return a

    def box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x, y, w, h = box
        pts = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], dtype=float).T
        o = self.m @ pts
        x0, y0 = o[0].min(), o[1].min()
        return (int(round(x0)), int(round(y0)), int(round(o[0].max() - x0)), int(round(o[1].max() - y0)))


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=float)


def _scale(s: float) -> np.ndarray:
    return np.array([[s, 0, 0], [0, s, 0], [0, 0, 1]], dtype=float)


def _rotation_inverse(angle: float, in_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """For ``Image.rotate(angle, expand=True)``: output coordinates -> input coordinates."""
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=float)
    return cast(np.ndarray, _translate(in_size[0] / 2, in_size[1] / 2) @ rot
                @ _translate(-out_size[0] / 2, -out_size[1] / 2))


# -- label regions ------------------------------------------------------------------


@dataclasses.dataclass
class LabelRegion:
    box: tuple[int, int, int, int]  # original pixels
    area: int  # original pixels (filled)
    mask: np.ndarray  # bool, coarse cells (filled, with one cell of padding)
    cell_px: float  # original pixels per cell
    origin: tuple[float, float]  # original pixel position of the mask's cell (0, 0)


def _channel_max_min(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel maximum and minimum over R, G and B, as int16. Element-wise over
    the three planes: numpy's reduction over a last axis of three is about ten
    times slower (it dominated a label crop's preparation)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (np.maximum(np.maximum(r, g), b).astype(np.int16),
            np.minimum(np.minimum(r, g), b).astype(np.int16))


def _hsv_mask(rgb: np.ndarray) -> np.ndarray:
    """Bright, unsaturated pixels: paper, not skin."""
    mx, mn = _channel_max_min(rgb)
    return cast(np.ndarray, (mx >= 130) & ((mx - mn) * 100 <= 22 * np.maximum(mx, 1)))


def _components(cells: np.ndarray) -> list[tuple[int, int, int, int, int, np.ndarray]]:
    """4-connected groups of True cells: (x, y, w, h, cells, mask within the box) each,
    in the order of their first cell (row by row). OpenCV's labelling: the Python
    flood fill it replaces took 30-40 ms per 12 MP frame."""
    import cv2  # opencv-python-headless: a project dependency; imported where used

    n, labels, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8), connectivity=4)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        out.append((x, y, w, h, area, labels[y:y + h, x:x + w] == i))
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Cells not reachable from the border through non-mask cells are holes (text, barcode)."""
    import cv2  # opencv-python-headless: a project dependency; imported where used

    _, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    outside = np.isin(labels, np.unique(border[border > 0]))
    return ~outside


def label_regions(image: Image.Image) -> list[LabelRegion]:
    """White, paper-like regions of label size in ``image``, largest first.

    Cheap (a reduced image, no OCR): the OCR reads only inside these, and the
    archive's de-identification covers them on teaching copies (R20).
    """
    W, H = image.size
    factor = max(1, int(round(max(W, H) / DETECT_SIDE)))
    small = image.reduce(factor) if factor > 1 else image
    rgb = np.asarray(small.convert("RGB"))
    mask = _hsv_mask(rgb)
    gh, gw = mask.shape[0] // CELL, mask.shape[1] // CELL
    if gh < 2 or gw < 2:
        return []
    blocks = mask[: gh * CELL, : gw * CELL].reshape(gh, CELL, gw, CELL).mean(axis=(1, 3))
    cells = blocks >= 0.5
    cell_px = CELL * W / small.size[0]
    min_cells = (MIN_LABEL_SIDE / cell_px) ** 2 * 0.4
    regions = []
    for x0, y0, cw, ch, count, comp in _components(cells):
        if count < min_cells:
            continue
        y1, x1 = y0 + ch, x0 + cw
        if (x1 - x0) * cell_px < MIN_LABEL_SIDE or (y1 - y0) * cell_px < MIN_LABEL_SIDE * 0.4:
            continue
        m = np.zeros((y1 - y0 + 2, x1 - x0 + 2), dtype=bool)
        m[1:-1, 1:-1] = comp
        m = _fill_holes(m)
        # One cell of margin on every side (the padding above).
        bx0 = max(0, int((x0 - 1) * cell_px))
        by0 = max(0, int((y0 - 1) * cell_px))
        bx1 = min(W, int((x1 + 1) * cell_px))
        by1 = min(H, int((y1 + 1) * cell_px))
        regions.append(LabelRegion(box=(bx0, by0, bx1 - bx0, by1 - by0), area=int(m.sum() * cell_px ** 2),
                               mask=m, cell_px=cell_px,
                               origin=((x0 - 1) * cell_px, (y0 - 1) * cell_px)))
    regions.sort(key=lambda r: -r.area)
    return regions[:MAX_REGIONS]


def _whiten_background(crop: Image.Image, region: LabelRegion | None, box: tuple[int, int, int, int],
                       pre: float) -> Image.Image:
    """Grey crop with skin, and everything outside the region's mask, made white.

    ``crop`` shows ``box`` of the original image, scaled by ``pre``.
    """
    rgb = np.asarray(crop.convert("RGB"))
    mx, mn = _channel_max_min(rgb)
    grey = np.asarray(crop.convert("L")).copy()
    skin = (mx >= 70) & ((mx - mn) * 100 > 25 * np.maximum(mx, 1))
    grey[skin] = 255
    if region is not None:
        k = region.cell_px * pre
        cells = region.mask.copy()  # grown by one cell: edge cells are part paper, part skin
        cells[1:] |= region.mask[:-1]
        cells[:-1] |= region.mask[1:]
        cells[:, 1:] |= region.mask[:, :-1]
        cells[:, :-1] |= region.mask[:, 1:]
        m = Image.fromarray(cells.astype(np.uint8) * 255)
        m = m.resize((max(1, int(round(m.width * k))), max(1, int(round(m.height * k)))), Image.Resampling.NEAREST)
        canvas = Image.new("L", crop.size, 0)
        canvas.paste(m, (int(round((region.origin[0] - box[0]) * pre)), int(round((region.origin[1] - box[1]) * pre))))
        grey[np.asarray(canvas) == 0] = 255
    return Image.fromarray(grey, "L")


def _ink(grey: Image.Image) -> np.ndarray:
    g = np.asarray(grey, dtype=np.int16)
    bg = np.asarray(grey.filter(ImageFilter.BoxBlur(max(3, min(grey.size) // 8))), dtype=np.int16)
    return (g < bg - 40) & (g < 200)


def _skew(grey: Image.Image) -> float:
    """Angle (degrees, counter-clockwise) by which the text is turned: projection profile."""
    return _skew_and_line(grey)[0]


def _skew_and_line(grey: Image.Image) -> tuple[float, float | None]:
    """:func:`_skew`, and the text's median line height in ``grey``'s pixels as the
    coarse copy the angle is found on shows it (None when it shows no text line):
    an estimate, to prepare a large label at a smaller size (:func:`_prepare_label`)."""
    f = max(1.0, max(grey.size) / 300)
    small = grey.resize((max(8, int(grey.width / f)), max(8, int(grey.height / f))), Image.Resampling.BILINEAR)
    ink = Image.fromarray((_ink(small) * 255).astype(np.uint8))

    def score(a: float) -> float:
        r = np.asarray(ink.rotate(-a, resample=Image.Resampling.NEAREST, expand=True), dtype=np.float32)
        rows = r.sum(axis=1)
        return float(np.sum(np.diff(rows) ** 2))

    best = max(range(-42, 43, 3), key=score)
    fine = float(max(np.arange(best - 2.0, best + 2.01, 0.5), key=score))
    upright = np.asarray(ink.rotate(-fine, resample=Image.Resampling.NEAREST, expand=True)) > 0
    heights = sorted(b - a for a, b in _text_rows(upright))
    return fine, (heights[len(heights) // 2] * f if heights else None)


def _flatten(grey: Image.Image) -> Image.Image:
    """Divide by the paper's brightness, so that glare and shading do not hide ink.

    The paper's brightness is the maximum over blocks (every block of a label holds
    some paper), smoothed and scaled back up: cheap, unlike a rank filter.
    """
    g = np.asarray(grey, dtype=np.float32)
    b = max(8, min(grey.size) // 12)
    h, w = g.shape
    gh, gw = max(1, h // b), max(1, w // b)
    blocks = np.asarray(grey.resize((gw * b, gh * b), Image.Resampling.NEAREST), dtype=np.uint8).reshape(gh, b, gw, b).max(axis=(1, 3))
    bg_small = Image.fromarray(blocks, "L").filter(ImageFilter.BoxBlur(1))
    bg = np.asarray(bg_small.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    out = np.clip(g / np.maximum(bg, 1) * 255, 0, 255)
    return Image.fromarray(out.astype(np.uint8), "L")


def _text_rows(ink: np.ndarray) -> list[tuple[int, int]]:
    rows = ink.sum(axis=1)
    on = rows > max(2, ink.shape[1] * 0.01)
    runs, start = [], None
    for y, v in enumerate(on.tolist() + [False]):
        if v and start is None:
            start = y
        elif not v and start is not None:
            if y - start >= 3:
                runs.append((start, y))
            start = None
    return runs


def _is_barcode_band(band: np.ndarray) -> bool:
    """A band of rows where many columns are ink from top to bottom: bars, not letters."""
    h = band.shape[0]
    if h < 12:
        return False
    cols = band.mean(axis=0)
    inked = np.nonzero(cols > 0)[0]
    if inked.size == 0:
        return False
    span = cols[inked.min(): inked.max() + 1]
    # Letters have few columns inked over 85 % of the line height (I, l, 1 do);
    # a 1D barcode has about half its columns so.
    return bool((span > 0.85).mean() > 0.3)


# A label whose text lines (as the coarse skew estimate sees them) are taller than
# this, in pixels, is turned, flattened and measured at a size where they are about
# this tall: the preparation's cost grows with the area, and the text is scaled to
# TARGET_LINE_PX for tesseract in the end anyway (a 12 MP close-up's lines are
# 60-100 px). Where the measured lines come out shorter than TARGET_LINE_PX after
# all (a coarse estimate that merged lines), the label is prepared at its own size.
PREPARE_LINE_PX = 1.5 * TARGET_LINE_PX


def _prepare_label(image: Image.Image, region: LabelRegion | None) -> tuple[Image.Image, _Affine] | None:
    """Crop, whiten, deskew, flatten and scale one label region for tesseract."""
    if region is None:
        box = (0, 0, image.width, image.height)
    else:
        box = region.box
    x, y, w, h = box
    crop = image.crop((x, y, x + w, y + h))
    aff = _Affine().then(_translate(x, y))
    # Work at no more than ~1600 px on the long side: enough for text of any size we scale to.
    pre = min(1.0, 1600 / max(w, h))
    if pre < 1.0:
        crop = crop.resize((max(1, int(w * pre)), max(1, int(h * pre))), Image.Resampling.BILINEAR)
        aff = aff.then(_scale(1 / pre))
    grey = _whiten_background(crop, region, box, pre)
    angle, line = _skew_and_line(grey)
    if line is not None and line > PREPARE_LINE_PX:
        k = PREPARE_LINE_PX / line
        small = grey.resize((max(1, int(grey.width * k)), max(1, int(grey.height * k))), Image.Resampling.BILINEAR)
        done = _deskewed_text(small, aff.then(_scale(grey.width / small.width)), angle, shrunk=small.width / grey.width)
        if done is not None and done[2] >= TARGET_LINE_PX:
            return done[0], done[1]
    done = _deskewed_text(grey, aff, angle)
    return (done[0], done[1]) if done is not None else None


def _deskewed_text(grey: Image.Image, aff: _Affine, angle: float, *, shrunk: float = 1.0
                   ) -> tuple[Image.Image, _Affine, int] | None:
    """The rest of :func:`_prepare_label` on a whitened label: turned upright,
    flattened, barcode bands blanked, cut to the text and scaled so that a line
    is TARGET_LINE_PX high; and the median line height it measured before scaling.
    ``shrunk``: ``grey`` is the whitened label made this much smaller (the
    final scale, and its limits, stay those of the label at its own size)."""
    if abs(angle) >= 0.5:
        rotated = grey.rotate(-angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
        aff = aff.then(_rotation_inverse(-angle, grey.size, rotated.size))
        grey = rotated
    grey = _flatten(grey)
    ink = _ink(grey)
    runs = _text_rows(ink)
    if not runs:
        return None
    # Thin runs are the sticker's edges and specks; text lines are taller.
    heights = sorted(b - a for a, b in runs if b - a >= 7) or sorted(b - a for a, b in runs)
    line_h = heights[len(heights) // 2]
    # Blank barcode bands: tesseract reads bars as digits and ones.
    arr = np.asarray(grey).copy()
    for a, b in runs:
        if _is_barcode_band(ink[a:b]):
            arr[a:b, :] = 255
            ink[a:b, :] = False
    # Only the text's extent goes to tesseract: its time grows with the area.
    ys, xs = np.nonzero(ink)
    if xs.size == 0:
        # Every line was bars (a striped cloth, a barcode without print): no text for
        # tesseract. The caller's barcode passes and bar test judge such a region.
        return None
    m = max(4, line_h)
    x0, y0 = max(0, int(xs.min()) - m), max(0, int(ys.min()) - m)
    x1, y1 = min(arr.shape[1], int(xs.max()) + m + 1), min(arr.shape[0], int(ys.max()) + m + 1)
    grey = Image.fromarray(arr[y0:y1, x0:x1], "L")
    aff = aff.then(_translate(x0, y0))
    s = min(4.0, max(0.25, TARGET_LINE_PX * shrunk / max(1, line_h))) / shrunk
    if abs(s - 1) > 0.1:
        grey = grey.resize((max(1, int(grey.width * s)), max(1, int(grey.height * s))), Image.Resampling.BICUBIC)
        aff = aff.then(_scale(1 / s))
    grey = ImageOps.expand(grey, border=20, fill=255)
    aff = aff.then(_translate(-20, -20))
    return grey, aff, line_h


def _read_region(image: Image.Image, region: LabelRegion | None, deadline: _Deadline,
                 seen: list[_Word] | None = None,
                 lines_if: Callable[[list[_Word]], bool] | None = None) -> list[_Found]:
    """Passes over one prepared label, cheapest first, until one gives a valid number.

    1. The whole label, page mode. 2. Digits only, on the words of pass 1 that
    looked like a number. 3. Each text line alone (single-line mode), at two
    sizes: tesseract's line recogniser is sensitive to text size and layout
    (a "19121212-1212" line can come out as letters in page mode). Every word
    the page and line passes read is appended to ``seen`` when given. With
    ``lines_if`` (a middle picture's label-like crop), pass 3 runs only when it
    accepts the page pass's words, and skips lines the page pass read as
    confident words without digits.
    """
    seen = [] if seen is None else seen
    prepared = _prepare_label(image, region)
    if prepared is None:
        return []
    ocr_img, aff = prepared
    words = _ocr_words(ocr_img, 6, deadline)
    seen += words
    found = _found_in(words, aff)
    if not any(f.valid for f in found):
        found += _digits_pass(ocr_img, aff, words, deadline)
    if lines_if is not None and not found and not lines_if(words):
        return found
    for k in RETRY_SCALES:
        if any(f.valid for f in found) or deadline.left() < 0.1:
            break
        img, a = ocr_img, aff
        if k != 1.0:
            img = ocr_img.resize((max(1, int(ocr_img.width * k)), max(1, int(ocr_img.height * k))), Image.Resampling.BICUBIC)
            a = aff.then(_scale(1 / k))
        for top, bottom in _text_rows(_ink(img)):
            if any(f.valid for f in found) or deadline.left() < 0.1:
                break
            if lines_if is not None and _read_as_words(words, top / k, bottom / k):
                continue  # the page pass read this line as confident words: no number there
            m = max(6, (bottom - top) // 3)
            y0, y1 = max(0, top - m), min(img.height, bottom + m)
            band = img.crop((0, y0, img.width, y1))
            band_aff = a.then(_translate(0, y0))
            line_words = _ocr_words(band, 7, deadline)
            seen += line_words
            line_found = _found_in(line_words, band_aff)
            if not any(f.valid for f in line_found):
                line_found += _digits_pass(band, band_aff, line_words, deadline)
            found += line_found
    return found


def _read_as_words(words: list[_Word], top: float, bottom: float) -> bool:
    """Whether the page pass read the line between ``top`` and ``bottom`` (page
    image pixels) as confident words without a digit (a name, a ward)."""
    on_line = [w for w in words if top <= w.box[1] + w.box[3] / 2 <= bottom]
    return bool(on_line) and all(w.conf >= _WORD_CONF and not any(ch.isdigit() for ch in w.text)
                                 for w in on_line)


# A word read at least this sure (0-100), without digits, needs no second look.
_WORD_CONF = 85


def _found_in(words: list[_Word], aff: _Affine) -> list[_Found]:
    return [_Found(raw, valid, canonical, aff.box(box), conf)
            for raw, valid, canonical, box, conf in _candidates_in_words(words)]


def _digits_pass(ocr_img: Image.Image, aff: _Affine, words: list[_Word], deadline: _Deadline) -> list[_Found]:
    """Digits only, single line, on each run of words that looked like a number."""
    found: list[_Found] = []
    for run in _numberish_runs(words):
        if deadline.left() < 0.1:
            break
        bx, by, bw, bh = _union([w.box for w in run])
        pad = bh // 2 + 4
        part = ocr_img.crop((bx - pad * 2, by - pad, bx + bw + pad * 2, by + bh + pad))
        part_aff = aff.then(_translate(bx - pad * 2, by - pad))
        sub = _ocr_words(part, 7, deadline, whitelist=DIGIT_WHITELIST)
        cands = _candidates_in_words(sub)
        if not cands and sub:
            joined = _join_split_number(" ".join(w.text for w in sub))
            if joined is not None:
                c = find_candidates(joined)[0]
                box = _union([w.box for w in sub])
                valid = c.valid and _separator_confirmed(c, part, box)
                cands = [(c.raw, valid, c.number.canonical if valid and c.number else None,
                          box, min(w.conf for w in sub))]
        for raw, valid, canonical, box, conf in cands:
            found.append(_Found(raw, valid, canonical, part_aff.box(box), conf))
    return found


_NUMBERISH_WORD = re.compile(r"^[0-9OoIlSBZ|.,:_~+\-\u2010-\u2014\u2212]+$")
_DIGITISH = re.compile(r"[0-9OoIlSBZ]")


def _numberish_word(text: str) -> bool:
    """Digits and look-alikes, or mostly digits with a few stray marks ("$9121212-1212")."""
    if _NUMBERISH_WORD.match(text) and _DIGITISH.search(text):
        return True
    digits = sum(ch.isdigit() for ch in text)
    return digits >= 4 and digits >= 0.6 * len(text)


def _numberish_runs(words: list[_Word], min_digits: int = 8) -> list[list[_Word]]:
    """Runs of adjacent words on one line made of digits (and look-alikes) and dashes,
    with ``min_digits`` or more digit-like characters: where a number may have been misread."""
    runs = []
    for line in _lines(words):
        cur: list[_Word] = []
        for w in line + [None]:
            if w is not None and _numberish_word(w.text):
                cur.append(w)
                continue
            if sum(len(_DIGITISH.findall(x.text)) for x in cur) >= min_digits:
                runs.append(cur)
            cur = []
    return runs


_SPLIT = re.compile(r"^[0-9]+(?: [0-9]+)*(?: ?[-+] ?[0-9]+(?: [0-9]+)*)?$")


def _join_split_number(text: str) -> str | None:
    """Join a number that OCR split at a space ("1982061 1-2396"), when that is safe.

    Only a digits-only reading of one number-like run is joined, and only when no
    part on either side of a space is a number by itself: "19 121212-1212" is never
    joined, as "19" may be a century or something else (a different patient).
    """
    text = text.strip()
    if " " not in text or not _SPLIT.match(text):
        return None
    joined = re.sub(r" ?([-+]) ?", r"\1", text).replace(" ", "")
    if not re.fullmatch(r"[0-9]{6}(?:[0-9]{2})?[-+]?[0-9]{4}", joined):
        return None
    parts = text.split(" ")
    for i in range(1, len(parts)):
        left, right = " ".join(parts[:i]), " ".join(parts[i:])
        if find_candidates(left) or find_candidates(right):
            return None
    return joined


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _select(found: list[_Found]) -> list[_Found]:
    """Per region: valid readings win over invalid ones at the same place; dedupe."""
    valid = [f for f in found if f.valid]
    keep = list(valid)
    for f in found:
        if not f.valid and not any(_overlaps(f.box, v.box) for v in valid):
            keep.append(f)
    out: list[_Found] = []
    for f in keep:
        same = [o for o in out if o.text == f.text and _overlaps(o.box, f.box)]
        if not same:
            out.append(f)
    return out


def read_printed_numbers(image: Image.Image, *, budget_s: float = 1.5) -> list[Reading]:
    """Identity-number-shaped text printed on patient labels in a photo (method OCR).

    ``image`` is the photo as decoded (orientation already applied by the caller).
    Returns readings for every number-shaped string found, valid or not (see the
    module notes for which ones are kept); an empty list when none is found or the
    budget ran out. Positions are in the original image's pixels.
    """
    deadline = _Deadline(budget_s)
    regions: list[LabelRegion | None] = list(label_regions(image))
    if not regions:
        regions = [None]  # no sticker found: a close-up of the label, or no label at all
    readings: list[Reading] = []
    for region in regions:
        if deadline.left() < 0.1:
            break
        for f in _select(_read_region(image, region, deadline)):
            readings.append(Reading(text=f.text, method=Method.OCR, position=f.box))
    return readings


@dataclasses.dataclass(frozen=True)
class LabelText:
    """What OCR made of one label-like crop (:func:`read_label_text`)."""

    readings: tuple[Reading, ...]  # identity-number-shaped texts, as read_printed_numbers returns them
    number_like: tuple[str, ...]  # runs of 6+ digits (or look-alikes) seen: a number may be there
    printed: bool  # confident words: the crop shows print, not texture (_printed_text)
    complete: bool  # every pass ran; False when the budget ran out first
    words: int = 0  # words OCR read on the crop, in every pass
    named: bool = False  # a name as a patient label prints it, "SURNAME, Given" (_label_name)


# Six or more digits or digit look-alikes in a row, as a personnummer's date part
# always prints (YYMMDD, YYYYMMDD); a date (2026-03-14), a ward (avd 12) or a
# ruler's "1 2 3" never has them.
_NUMBER_LIKE = re.compile(r"[0-9OoIlSBZ|]{6,}")


# The last four digits of a personnummer ("-9219"), as a word of their own.
_NUMBER_TAIL = re.compile(r"[-+]?[0-9OoIlSBZ]{4}[.,:;]?")


def _number_like(words: list[_Word]) -> tuple[str, ...]:
    """The number-like texts among the words: runs of 6+ digits or look-alikes
    (4+ of them digits), and short runs of number-like words (a number split):
    9+ digits, or 7+ ending in a word of four digits, a number's last four after
    a date part that glare or blur cut short ("195 9219" for 19591212-9219)."""
    out: list[str] = []
    for w in words:
        out += [m.group() for m in _NUMBER_LIKE.finditer(w.text)
                if sum(ch.isdigit() for ch in m.group()) >= 4]
    for run in _numberish_runs([w for w in words if not _DATE_OR_TIME.fullmatch(w.text)], min_digits=7):
        joined = "".join(w.text for w in run)
        digits = len(_DIGITISH.findall(joined))
        if len(run) <= 4 and (digits >= 9 or len(run) > 1 and _NUMBER_TAIL.fullmatch(run[-1].text)):
            out.append(joined)
    return tuple(t for t in dict.fromkeys(out) if not _ruler_scale(t))


# A wound ruler's cm numbers that OCR ran together ("10111213141516"): at least
# this many integers in a row, each one more than the one before, none above
# RULER_MAX_CM.
RULER_MIN_TERMS = 4
RULER_MAX_CM = 50


def _ruler_scale(text: str) -> bool:
    """Whether a number-like text is a ruler's scale read as one word: only digits
    (a look-alike letter or a separator is a misread, not a scale), all of them a
    run of RULER_MIN_TERMS or more consecutive integers (10 11 12 13 14 ..., 3 4 5 6
    7 8), and no identity number: more digits than one has, or no date of birth
    at its start. A misread label's number stays number-like: "891011" and
    "10111213" are scales, but also the start of the number of someone born
    1989-10-11 or 2010-11-12."""
    if not text.isascii() or not text.isdigit() or text[0] == "0":
        return False
    if len(text) <= 12 and _birth_date_at_start(text):
        return False
    for first in (text[:1], text[:2]):
        value, rest, terms = int(first), text[len(first):], 1
        while rest.startswith(str(value + 1)) and value + 1 <= RULER_MAX_CM:
            value += 1
            rest = rest[len(str(value)):]
            terms += 1
        if not rest and terms >= RULER_MIN_TERMS and value <= RULER_MAX_CM:
            return True
    return False


def _birth_date_at_start(digits: str) -> bool:
    """Whether the digits start as a personnummer's or samordningsnummer's date
    part (YYMMDD, day 01-31 or 61-91), leniently: any month has 31 days here."""
    if len(digits) < 6:
        return False
    month, day = int(digits[2:4]), int(digits[4:6])
    return 1 <= month <= 12 and (1 <= day <= 31 or 61 <= day <= 91)


# A date or a time of day on a label (2026-03-14, 14.03.2026, 08:15) is not a
# number that could be a patient's, however many digits it has.
_DATE_OR_TIME = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[-/.]\d{2}[-/.]\d{2,4}|\d{1,2}[:.]\d{2}")


# A word tesseract is this sure of (0-100) is print, not texture: on the
# benchmark's labels the name and ward lines read at 85-97, while grass, sky
# and skin read as fragments below 60.
_PRINT_CONF = 70


# A patient label's name line, as Cosmic prints it: "SURNAME, Given" (a word of
# letters and the comma, then a capitalised word of letters), also where OCR split
# off the comma or ran the two words together.
_SURNAME_COMMA = re.compile(r"[^\W\d_][^\W\d_'\-]+,")
_SURNAME = re.compile(r"[^\W\d_][^\W\d_'\-]+")
_GIVEN = re.compile(r"[^\W\d_a-zåäöéü][^\W\d_]+")
_NAME_IN_ONE = re.compile(r"[^\W\d_][^\W\d_'\-]+,[^\W\d_a-zåäöéü][^\W\d_]+")


def _label_name(words: list[_Word]) -> bool:
    """Whether the words show a name as a patient label prints it ("LINDQVIST, KARIN",
    "Tolvansson, Tolvan"): the label of a patient, whether or not its number was read."""
    for line in _lines(words):
        texts = [w.text for w in line]
        for k, text in enumerate(texts):
            if _NAME_IN_ONE.fullmatch(text):
                return True
            nxt = texts[k + 1:k + 3]
            if _SURNAME_COMMA.fullmatch(text) and nxt and _GIVEN.fullmatch(nxt[0]):
                return True
            if _SURNAME.fullmatch(text) and len(nxt) == 2 and nxt[0] == "," and _GIVEN.fullmatch(nxt[1]):
                return True
    return False


def _printed_text(words: list[_Word]) -> bool:
    """Whether the words show print: two confident words of three or more letters or digits."""
    return sum(w.conf >= _PRINT_CONF and sum(ch.isalnum() for ch in w.text) >= 3 for w in words) >= 2


def read_label_text(image: Image.Image, *, budget_s: float = 1.5, wall_s: float | None = None,
                    besides: Sequence[tuple[int, int, int, int]] | None = None) -> LabelText:
    """OCR of a crop that looks like a label (a middle picture's label-like region).

    Reads like :func:`read_printed_numbers` (the crop's white regions, or the
    whole crop), and says besides whether any word looked like a number that did
    not become a reading, whether the crop shows print at all, and whether the
    budget let every pass run: the identify stage refuses a card whose middle
    picture shows a label it could not read. The expensive line-by-line passes
    run only where the page pass saw print or a number-like word, so that a
    false find (sky, foliage, a towel) costs one tesseract call. ``wall_s``: the
    wall-clock backstop, when not the budget's default. ``besides``: where
    numbers were read already (x, y, w, h in the crop's pixels): every white
    region of the crop that holds none of their middles is read, the others
    not at all (two stickers side by side in one crop, the patient's read by
    its barcode: the second may be another patient's); a crop of one white
    region costs no OCR then.
    """
    deadline = _Deadline(budget_s, wall_s=wall_s)
    regions: list[LabelRegion | None] = list(label_regions(image)) or [None]
    if besides is not None:
        regions = [r for r in regions if r is not None
                   and not any(middle_inside(b, r.box) for b in besides)]
    readings: list[Reading] = []
    seen: list[_Word] = []
    complete = True
    for region in regions:
        if deadline.left() < 0.1:
            complete = False
            break
        lines_if = lambda words: _printed_text(words) or bool(_number_like(words))  # noqa: E731
        for f in _select(_read_region(image, region, deadline, seen, lines_if)):
            readings.append(Reading(text=f.text, method=Method.OCR, position=f.box))
        if readings and besides is None:
            break
    if not readings and deadline.left() < 0.1:
        complete = False  # a pass may have been cut short: unknown, not "nothing there"
    return LabelText(tuple(readings), _number_like(seen), _printed_text(seen), complete, len(seen),
                     _label_name(seen))


# -- ultrasound overlays ------------------------------------------------------------


def _overlay_image(image: Image.Image, *, suppress_content: bool) -> tuple[Image.Image, _Affine]:
    grey = image.convert("L")
    if suppress_content:
        g = np.asarray(grey)
        dark = (g < 30).astype(np.uint8) * 255
        radius = max(4, grey.height // 60)
        near_black = np.asarray(Image.fromarray(dark).filter(ImageFilter.BoxBlur(radius)))
        g = np.where(near_black >= 150, g, 0).astype(np.uint8)
        grey = Image.fromarray(g, "L")
    s = 2 if max(grey.size) <= 1400 else 1
    big = grey.resize((grey.width * s, grey.height * s), Image.Resampling.BICUBIC) if s > 1 else grey
    inv = ImageOps.expand(ImageOps.invert(big), border=10, fill=255)
    aff = _Affine().then(_scale(1 / s)).then(_translate(-10, -10))
    return inv, aff


def _overlay_words(image: Image.Image, deadline: _Deadline, lang: str) -> tuple[list[_Word], _Affine]:
    inv, aff = _overlay_image(image, suppress_content=True)
    words = _ocr_words(inv, 11, deadline, lang=lang)
    if not any(find_candidates(" ".join(w.text for w in line)) for line in _lines(words)) and deadline.left() > 0.3:
        # Banners on a grey bar, or text over the image: read without blanking the content.
        inv2, aff2 = _overlay_image(image, suppress_content=False)
        more = _ocr_words(inv2, 11, deadline, lang=lang)
        if more:
            return words + [dataclasses.replace(w, line=(w.line[0] + 10_000, *w.line[1:])) for w in more], aff
    return words, aff


def read_overlay(image: Image.Image, *, budget_s: float = 1.5) -> list[Reading]:
    """Identity-number-shaped text burned into an ultrasound frame (method OCR)."""
    deadline = _Deadline(budget_s)
    words, aff = _overlay_words(image, deadline, DIGIT_LANG)
    found = [_Found(raw, valid, canonical, aff.box(box), conf)
             for raw, valid, canonical, box, conf in _candidates_in_words(words)]
    # Sparse-text mode misreads a "+" between digits as "4" on large banners
    # ("200315+1251" -> "20031541251"); the number's words alone, as one line with
    # digits only, read it. Only runs that gave no valid number are read again.
    for run in _numberish_runs(words):
        box = _union([w.box for w in run])
        if any(f.valid and _overlaps(f.box, aff.box(box)) for f in found) or deadline.left() < 0.1:
            continue
        source = run[0].source
        if source is not None:
            found += _digits_pass(source, aff, run, deadline)
    return [Reading(text=f.text, method=Method.OCR, position=f.box) for f in _select(found)]


# "SURNAME, Given Names": one (possibly hyphenated) upper-case surname, as the
# machines print it; what comes before it on the line (the hospital) is not part of it.
_NAME = re.compile(
    r"(?<![\w-])([A-ZÅÄÖÉÜ][A-ZÅÄÖÉÜ'\-]+)\s?,\s*"
    r"([A-ZÅÄÖÉÜ][A-Za-zÅÄÖåäöÉéÜü'\-]+(?: [A-ZÅÄÖÉÜ][A-Za-zÅÄÖåäöÉéÜü'\-]+)*)"
)
_DATE = re.compile(
    r"\b(\d{4}-\d{2}-\d{2}|\d{2}[-/.]\d{2}[-/.]\d{4}|\d{1,2}/\d{1,2}/\d{4}|\d{2}-[A-Z]{3}-\d{2,4})\b"
)


def read_overlay_fields(image: Image.Image, *, budget_s: float = 3.0) -> OverlayFields:
    """Name, number and date as the overlay shows them (first of each), and all text read."""
    deadline = _Deadline(budget_s)
    words, _ = _overlay_words(image, deadline, FIELD_LANG)
    lines = [" ".join(w.text for w in line) for line in _lines(words)]
    raw = "\n".join(lines)
    patient = None
    cands = [c for line in lines for c in find_candidates(line)]
    if cands:
        patient = next((c.raw for c in cands if c.valid), cands[0].raw)
    name = None
    date = None
    for line in lines:
        if name is None and (m := _NAME.search(line)):
            name = f"{m.group(1)}, {m.group(2)}"
        if date is None:
            # A date, but not a piece of the identity number.
            for m in _DATE.finditer(line):
                if not any(c.start <= m.start() < c.end for c in find_candidates(line)):
                    date = m.group(1)
                    break
    return OverlayFields(name=name, patient_text=patient, date_text=date, raw_text=raw)
