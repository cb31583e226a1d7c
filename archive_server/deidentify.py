"""De-identified teaching copies of clinical images (R20).

:func:`deidentify_image` takes an image file's bytes (or a DICOM file's: one
frame, rendered as the agent renders it, its header left behind) and returns a
*new* image file: turned upright (EXIF orientation), with solid boxes over every barcode,
every region of text and every face it finds, and with no metadata at all (no
EXIF, XMP, IPTC, ICC profile, comment or thumbnail: the pixels are copied into
a fresh image and encoded anew). The original bytes are never changed; the
caller keeps the original in the archive untouched.

What finds what:

* **Barcodes**: the agent's reader (:func:`bildsluss_common.readers.barcode.read_barcodes`,
  zxing-cpp in passes: full frame, located and turned patches, rotations) with
  no early stop, so every readable code is found, not only the first.
* **Text**: tesseract in sparse-text mode (``--psm 11``, in this process as the
  agent runs it: :mod:`bildsluss_common.readers.tesseract`) on the grey image,
  and on its negative too when the image is mostly dark (ultrasound overlays
  are light on black); small frames are read at twice their size. A line
  counts as text when it holds a confident word (see :func:`_strong`: this
  keeps tesseract's guesses on skin texture out) or anything shaped like an
  identity number or a 6+ digit run, whatever the confidence. The words of one
  line become one box, boxes are padded by half a line and merged, so a
  label's name, number and date lines become one region. Where a sticker is
  seen, the agent's tilt-tolerant number reader
  (:func:`bildsluss_common.readers.ocr.read_printed_numbers`) adds the printed number on
  a turned label, which tesseract's page layout may miss.
* **Labels**: a bright, unsaturated sticker (the agent's label locator) that
  holds a found barcode or text is masked whole, so lines OCR did not read (a
  blurred name, a handwritten note) go with it.
* **Faces**: OpenCV's bundled Haar cascade ``haarcascade_frontalface_alt2``
  with 8 neighbours, on a copy 1000 px on the long side, padded to cover the
  head. Measured on the corpus (83 photographs and barcode images): the one
  real face found, no false face; the default cascade with 5 neighbours marked
  22 false faces, 4 of them on a leaf close-up that looks much like a wound
  photograph. 0.1-0.2 s per image. Frontal faces only: a profile, a turned or a
  partly covered face is not found.

After masking, the barcode reader and the identity-number check run again on
the masked image (at most :data:`MAX_ROUNDS` rounds); a barcode or an identity
number still readable after the last round refuses the copy
(:class:`DeidentifyError`) rather than hand it out. Time: a 1600x1200 photo
with two labels about 8 s, a 640x480 ultrasound frame about 4 s (2-core
machine under load); teaching copies are made one at a time, on request. This is best effort, not a guarantee: a person must look at every
teaching copy before it is used (docs/archive-printing-teaching.md).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import logging
import pathlib
import tempfile
import warnings
from collections.abc import Collection, Iterable

import numpy as np
from PIL import Image, ImageCms, ImageDraw, ImageOps, UnidentifiedImageError

from bildsluss_common.readers import tesseract
from bildsluss_common.readers.barcode import read_barcodes, to_grey
from bildsluss_common.readers.dicom import DicomError, read_dicom
from bildsluss_common.identity.numbers import find_candidates
from bildsluss_common.readers.ocr import label_regions, read_printed_numbers

log = logging.getLogger(__name__)

# Image formats taken as input, by their content (never EPS/PDF: Pillow would
# hand those to Ghostscript).
INPUT_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")  # JPEG includes MPO
# Larger images are refused before decoding (a decompression bomb, or not a photograph).
MAX_PIXELS = 100_000_000
JPEG_QUALITY = 92
# Detection rounds: detect, mask, detect again on the masked image...
MAX_ROUNDS = 3
# Text detection works on a copy at most this many pixels on the long side
# (tesseract's time grows with the area; a label's text stays 15+ px high).
OCR_SIDE = 2400
# Smaller images are read at twice their size (a 640x480 ultrasound export's text is 10-15 px).
SMALL_SIDE = 900
# Tesseract's confidence for a word to count as text (see _strong).
MIN_WORD_CONF = 60.0
MIN_DIGIT_WORD_CONF = 30.0
# Median grey below which an image is read as its negative too (ultrasound).
DARK_MEDIAN = 64
BARCODE_BUDGET_S = 3.0
NUMBER_BUDGET_S = 2.0
OCR_TIMEOUT_S = 30.0
# A label region larger than this share of the image is a sheet or a wall, not a sticker.
MAX_LABEL_SHARE = 0.25
FACE_SIDE = 1000
FACE_CASCADE = "haarcascade_frontalface_alt2.xml"
FACE_NEIGHBOURS = 8

WHY = ("barcode", "text", "face")


class DeidentifyError(Exception):
    """The input cannot be made into a teaching copy: not an image, too large,
    several frames, or something identifying is still readable after masking.
    Nothing was produced; the original is unchanged."""


@dataclasses.dataclass(frozen=True)
class MaskedRegion:
    """A solid box over something identifying, in pixels of the upright image."""

    x: int
    y: int
    w: int
    h: int
    why: str  # "barcode" | "text" | "face"


@dataclasses.dataclass(frozen=True)
class DeidentifiedImage:
    data: bytes  # a new image file with no metadata
    media_type: str  # "image/jpeg" or "image/png"
    masked: list[MaskedRegion]


Box = tuple[int, int, int, int]  # x, y, w, h


def deidentify_image(data: bytes, *, detect: Collection[str] = WHY,
                     dicom_frame: int | None = None) -> DeidentifiedImage:
    """A de-identified copy of one image file; see the module notes.

    ``detect`` limits what is looked for (default: barcodes, text and faces).
    A DICOM file gives a PNG of one frame: its only frame, or ``dicom_frame``
    of a multi-frame file (a clip). Raises :class:`DeidentifyError` for input
    it cannot handle or an image it cannot clear.
    """
    unknown = set(detect) - set(WHY)
    if unknown:
        raise ValueError(f"unknown detector(s) {sorted(unknown)}; choose from {WHY}")
    data = bytes(data)
    if data[128:132] == b"DICM":
        image, source_format = _decode_dicom(data, dicom_frame), "PNG"
    else:
        image, source_format = _decode(data)
    masked: list[MaskedRegion] = []
    for round_no in range(1, MAX_ROUNDS + 1):
        found = _detect(image, detect, verify=round_no > 1)
        if not found:
            break
        log.info("deidentify: round %d masks %d region(s)", round_no, len(found),
                 extra={"round": round_no, "regions": len(found)})
        image = _mask(image, found)
        masked.extend(found)
    else:
        left = _detect(image, detect, verify=True)
        if left:
            raise DeidentifyError(
                f"after {MAX_ROUNDS} rounds of masking, {left[0].why} is still readable at "
                f"{left[0].x},{left[0].y}; no teaching copy was made")
    out = io.BytesIO()
    clean = Image.fromarray(np.asarray(image))  # fresh image: no info, no EXIF, no ICC
    if source_format == "PNG":
        clean.save(out, "PNG")
        media_type = "image/png"
    else:
        clean.save(out, "JPEG", quality=JPEG_QUALITY)
        media_type = "image/jpeg"
    return DeidentifiedImage(data=out.getvalue(), media_type=media_type, masked=masked)


# --------------------------------------------------------------------------- input


def _decode(data: bytes) -> tuple[Image.Image, str]:
    """The upright 8-bit RGB or L pixels in sRGB, and the input's format."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
            if img.width * img.height > MAX_PIXELS:
                raise DeidentifyError(
                    f"image of {img.width}x{img.height} pixels is larger than the {MAX_PIXELS // 1_000_000} MP "
                    "a teaching copy is made of (a decompression bomb, or not a photograph)")
            frames = getattr(img, "n_frames", 1)
            if frames > 1 and img.format != "MPO":  # MPO: the first frame is the photograph
                raise DeidentifyError(f"{img.format} with {frames} frames; make a copy of one still image")
            img.load()
            fmt = img.format or ""
            upright = ImageOps.exif_transpose(img) or img
            icc = img.info.get("icc_profile")
    except DeidentifyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DeidentifyError(f"refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise DeidentifyError("not an image a teaching copy can be made of "
                              "(JPEG, PNG, TIFF, WebP, BMP, GIF or DICOM)") from None
    except Exception as exc:  # not an image Pillow may open, or a damaged one
        raise DeidentifyError(f"not an image a teaching copy can be made of ({exc})") from None
    pixels = _to_8bit(upright)
    if icc and pixels.mode == "RGB":
        pixels = _to_srgb(pixels, icc)
    return pixels, fmt


def _decode_dicom(data: bytes, frame: int | None) -> Image.Image:
    """One frame of a DICOM file as the agent renders it (8-bit L or RGB).
    The header, with its patient fields, is not carried over: only pixels are."""
    with tempfile.TemporaryDirectory(prefix="bildsluss-deid-") as tmp:
        path = pathlib.Path(tmp) / "frame.dcm"
        path.write_bytes(data)
        try:
            dicom = read_dicom(path)
            if not dicom.has_pixels:
                raise DeidentifyError("the DICOM file holds no image (a report or a waveform)")
            if dicom.rows * dicom.columns > MAX_PIXELS:
                raise DeidentifyError(f"DICOM frame of {dicom.columns}x{dicom.rows} pixels is too large")
            if frame is None and dicom.number_of_frames > 1:
                raise DeidentifyError(f"DICOM clip with {dicom.number_of_frames} frames; "
                                      "choose the frame to make a teaching copy of")
            index = frame or 0
            if not 0 <= index < dicom.number_of_frames:
                raise DeidentifyError(f"frame {index} asked for, the DICOM file has {dicom.number_of_frames}")
            return dicom.frame(index)
        except DicomError as exc:
            raise DeidentifyError(f"DICOM file cannot be read: {exc.detail if hasattr(exc, 'detail') else exc}") \
                from None


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("RGB", "L"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(to_grey(img), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """The profile is dropped with the metadata, so its colours are converted first."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        return converted if converted is not None else img  # None only when converted in place
    except Exception as exc:  # a broken profile: the pixels as they are
        log.warning("deidentify: ICC profile not applied: %s", exc)
        return img


# --------------------------------------------------------------------------- detection


def _detect(image: Image.Image, detect: Collection[str], *, verify: bool) -> list[MaskedRegion]:
    """Regions to mask. The first round looks for everything; the later rounds
    (``verify``) only for what must not survive: readable barcodes and
    identity-number-like text."""
    W, H = image.size
    found: list[MaskedRegion] = []
    if "barcode" in detect:
        found += [_region(_pad(b, 0.15, W, H), "barcode") for b in _barcodes(image)]
    if "text" in detect:
        found += [_region(b, "text") for b in _text_regions(image, numbers_only=verify)]
    if found and not verify:
        found += _labels_holding(image, found)
    if "face" in detect and not verify:
        found += [_region(b, "face") for b in _faces(image)]
    # Something read again where a mask already is (a reader's position was
    # off) counts too: after the last round it refuses the copy.
    return _merge_same_why(found)


def _barcodes(image: Image.Image) -> list[Box]:
    readings = read_barcodes(image, budget_s=BARCODE_BUDGET_S, enough=lambda _: False)
    return [r.position for r in readings]


def _text_regions(image: Image.Image, *, numbers_only: bool) -> list[Box]:
    """Padded boxes over lines of text (or, with ``numbers_only``, over lines
    holding an identity-number-like text), merged into regions."""
    W, H = image.size
    boxes = []
    for words, scale in _ocr_passes(image):
        for line in _lines(words):
            text = " ".join(w.text for w in line)
            numberish = bool(find_candidates(text)) or any(_digits(w.text) >= 6 for w in line)
            if not numberish and (numbers_only or not any(_strong(w) for w in line)):
                continue
            box = _scale_box(_union([w.box for w in line]), scale)
            line_h = max(w.box[3] for w in line) * scale
            boxes.append(_pad_px(box, int(0.5 * line_h) + 2, W, H))
    if not numbers_only and label_regions(image):
        # The printed number on a turned sticker, which tesseract's layout may miss.
        numbers = read_printed_numbers(image, budget_s=NUMBER_BUDGET_S)
        boxes += [_pad(r.position, 0.3, W, H) for r in numbers]
    return _merge_overlapping(boxes)


@dataclasses.dataclass(frozen=True)
class _Word:
    text: str
    conf: float
    line: tuple[int, int, int, int]  # pass, block, paragraph, line
    box: Box  # in OCR pixels


def _strong(word: _Word) -> bool:
    """Text rather than texture. Measured on a leaf close-up (a wound-like
    photograph): tesseract's garbage there is 1-3 characters below 60 %
    confidence ("#3", "i*", "nat"), while label and overlay words score 85-96;
    words with digits (numbers, dates, machine values) are kept lower."""
    alnum = sum(ch.isalnum() for ch in word.text)
    return (alnum >= 2 and word.conf >= MIN_WORD_CONF) or (
        alnum >= 4 and _digits(word.text) >= 1 and word.conf >= MIN_DIGIT_WORD_CONF)


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _ocr_passes(image: Image.Image) -> list[tuple[list[_Word], float]]:
    """Tesseract's words, with the factor from OCR pixels to image pixels: on
    the grey image, and on its negative too when the image is mostly dark
    (light text on black, as ultrasound machines burn it in)."""
    grey = image.convert("L")
    scale = 1.0
    if max(grey.size) > OCR_SIDE:
        scale = max(grey.size) / OCR_SIDE
        grey = grey.resize((round(grey.width / scale), round(grey.height / scale)), Image.Resampling.LANCZOS)
    elif max(grey.size) < SMALL_SIDE:
        # Small frames (a 640x480 ultrasound export): tesseract wants 20+ px text.
        grey = grey.resize((grey.width * 2, grey.height * 2), Image.Resampling.BICUBIC)
        scale = 0.5
    images = [grey]
    if float(np.median(np.asarray(grey))) < DARK_MEDIAN:
        images.append(ImageOps.invert(grey))
    return [(_ocr_words(img, n), scale) for n, img in enumerate(images)]


def _ocr_words(img: Image.Image, pass_no: int) -> list[_Word]:
    try:
        read = tesseract.words(img, psm=11, lang="eng", timeout_s=OCR_TIMEOUT_S)
    except tesseract.TesseractError as exc:
        # Text that cannot be looked for cannot be said to be absent.
        raise DeidentifyError(f"text detection (tesseract) failed: {exc}") from None
    return [_Word(text=w.text, conf=w.conf, line=(pass_no, *w.line), box=w.box)
            for w in read if any(ch.isalnum() for ch in w.text)]


def _lines(words: list[_Word]) -> list[list[_Word]]:
    by_line: dict[tuple[int, int, int, int], list[_Word]] = {}
    for w in words:
        by_line.setdefault(w.line, []).append(w)
    return list(by_line.values())


def _labels_holding(image: Image.Image, found: list[MaskedRegion]) -> list[MaskedRegion]:
    """Whole stickers around found barcodes and text (see the module notes)."""
    W, H = image.size
    out = []
    for region in label_regions(image):
        box = region.box
        if box[2] * box[3] > MAX_LABEL_SHARE * W * H:
            continue
        inner = [r for r in found if _overlap(_box(r), box)]
        if inner:
            out.append(_region(_pad(box, 0.05, W, H), inner[0].why))
    return out


@functools.cache
def _face_cascade():
    import cv2  # imported here: only teaching copies need OpenCV

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + FACE_CASCADE)  # type: ignore[attr-defined]  # not in cv2's stubs
    if cascade.empty():
        raise DeidentifyError(f"OpenCV's face cascade {FACE_CASCADE} is missing; "
                              "install opencv-python-headless < 5")
    return cascade


def _faces(image: Image.Image) -> list[Box]:
    import cv2

    W, H = image.size
    factor = FACE_SIDE / max(W, H)
    small = image.convert("L").resize((max(1, round(W * factor)), max(1, round(H * factor))), Image.Resampling.BILINEAR)
    a = cv2.equalizeHist(np.asarray(small))
    side = max(24, min(a.shape) // 20)
    hits = _face_cascade().detectMultiScale(a, scaleFactor=1.1, minNeighbors=FACE_NEIGHBOURS,
                                            minSize=(side, side))
    boxes = []
    for x, y, w, h in (hits if len(hits) else []):
        box = (int(x / factor), int(y / factor), int(np.ceil(w / factor)), int(np.ceil(h / factor)))
        boxes.append(_pad(box, 0.35, W, H))  # the cascade's box is eyes to mouth; mask the head
    return boxes


# --------------------------------------------------------------------------- masking


def _mask(image: Image.Image, regions: Iterable[MaskedRegion]) -> Image.Image:
    masked = image.copy()
    draw = ImageDraw.Draw(masked)
    fill = 0 if masked.mode == "L" else (0, 0, 0)
    for r in regions:
        draw.rectangle((r.x, r.y, r.x + r.w - 1, r.y + r.h - 1), fill=fill)
    return masked


# --------------------------------------------------------------------------- boxes


def _region(box: Box, why: str) -> MaskedRegion:
    return MaskedRegion(x=int(box[0]), y=int(box[1]), w=int(box[2]), h=int(box[3]), why=why)


def _box(r: MaskedRegion) -> Box:
    return (r.x, r.y, r.w, r.h)


def _pad(box: Box, share: float, W: int, H: int) -> Box:
    return _pad_px(box, int(share * max(box[2], box[3])) + 2, W, H)


def _pad_px(box: Box, px: int, W: int, H: int) -> Box:
    x0, y0 = max(0, box[0] - px), max(0, box[1] - px)
    x1, y1 = min(W, box[0] + box[2] + px), min(H, box[1] + box[3] + px)
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def _scale_box(box: Box, scale: float) -> Box:
    return (int(box[0] * scale), int(box[1] * scale), int(np.ceil(box[2] * scale)), int(np.ceil(box[3] * scale)))


def _union(boxes: list[Box]) -> Box:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    """Union overlapping boxes until none overlap (lines of one label become one region)."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for b in merged:
            for i, o in enumerate(out):
                if _overlap(b, o):
                    out[i] = _union([b, o])
                    changed = True
                    break
            else:
                out.append(b)
        merged = out
    return merged


def _merge_same_why(regions: list[MaskedRegion]) -> list[MaskedRegion]:
    out = []
    for why in WHY:
        boxes = _merge_overlapping([_box(r) for r in regions if r.why == why])
        out += [_region(b, why) for b in boxes]
    return out
