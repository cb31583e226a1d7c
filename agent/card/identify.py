"""The identify stage: every identity number the card's media show, and where (R3, R4).

``identify(scan, mode)`` reads; it does not judge. It returns plain
:class:`Evidence` values (what was read, on which file and frame, how, and the
canonical number when the text validated) and the decide stage
(:mod:`agent.card.decide`) applies the rules. Nothing here writes to the card.

What is read, per kind of file (mode-specific choices are small functions
below, ``_read_<kind>``):

* **Images** (all modes but ultrasound): the barcodes of EVERY image, not only
  the first and last, because R4 refuses a card with more than one valid number
  anywhere on it. Every image's label-like regions (:func:`_read_regions`,
  issue 12), found cheaply on the reduced decode, are read fully where no
  number was read in them yet (barcode on a full-resolution crop, OCR of the
  crop): a frame may show two labels. A region that shows a number-like line
  but reads as no number refuses the card (``unread_label`` evidence,
  UNREADABLE_LABEL_MID_CARD). Where the rules require the number (the first
  and last image of a photo series; every image in assault mode) and neither
  the barcodes nor a region gave one, the whole frame is read (full-resolution
  barcode passes, then OCR of the printed number,
  :mod:`bildsluss_common.readers.ocr`). ``docs/identity-reading.md``.
* **Ultrasound images and cine clips** (ultrasound mode): the burned-in overlay
  by OCR, on the image and on every sampled frame of a clip (an MP4 cine export).
* **DICOM files**: the header's PatientID and the overlay of every frame
  (:mod:`bildsluss_common.readers.dicom`).
* **Video**: the first and last seconds (:mod:`agent.card.video`), each
  sampled frame read like an image (barcode, then OCR on the frames of the
  window where the number is required; a middle clip's frames like a middle
  image, label-like regions included); in ultrasound mode like an ultrasound
  image (its overlay).
* **Audio**: nothing to read; the patient comes from the EHR context (decide).

Turning a reading into evidence (:func:`evidence_from_reading`): every
substring that :func:`bildsluss_common.identity.numbers.find_candidates` says looks like an
identity number becomes one Evidence, valid (``patient_id`` set) or not
(``invalid=True``). A barcode whose payload holds no such substring (a product's
Code 128, a URL in a QR code, a GS1 code on a dressing pack) is recorded with
``patient_id=None, invalid=False`` so that ops can see it, and the decide stage
ignores it. A payload that does hold a number, valid or not, always counts,
even inside a URL or with a prefix: if it is another patient's number the card
must be refused (R4), and if it is unreadable we are unsure (R1). We err
towards refusing.

For benchmarks and tools the per-frame readings are public and read exactly as
:func:`identify` does: :func:`read_picture` (a picture file, decode included),
:func:`read_frame` (a decoded photo or video frame), :func:`read_ultrasound_frame`.

The OCR, DICOM and video readers are imported when a card needs them. If one is
missing, a mode that depends on it refuses the card (``StageError``,
INTERNAL_ERROR: the agent is incomplete, staff should call IT); in photo mode
the OCR fallback is simply skipped.

``budget_s`` is the reading budget per frame (barcode passes plus OCR) in CPU
seconds, not wall-clock (:mod:`bildsluss_common.readers.budget`: other load on the PC must
not turn into refusals); frames are read one after another (zxing-cpp holds the
GIL, so threads do not help; :mod:`agent.card.workers` reads files in parallel
processes). A first or last picture is first decoded at half size for the cheap
barcode passes; a middle picture at a quarter of its width (12 MP;
:func:`middle_reduction`), read by one zxing-cpp call and searched for
label-like regions (``docs/identity-reading.md``). The full decode is paid only
where a label-like region is read or a required frame read no number.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from bildsluss_common.readers import Method, Reading

from bildsluss_common.identity import numbers
from bildsluss_common.readers import barcode as barcode_reader
from bildsluss_common.readers import regions as label_regions
from bildsluss_common.readers.budget import Budget
from agent.card.model import Evidence, MediaFile, MediaKind, Mode, ScanResult, StageError
from agent.card.reasons import Reason

# A picture as Pillow opens it: a file's path, or its bytes already read (the scan's).
PictureSource = str | os.PathLike[str] | IO[bytes]

log = logging.getLogger(__name__)

# Share of the per-frame budget the barcode reader may use before OCR.
BARCODE_SHARE = 0.5
# Share of what is left that the full-resolution barcode passes may use when the
# cheap passes on a reduced decode read nothing (they then mostly miss: small labels).
REDUCED_MISS_SHARE = 0.3
# Share of the per-frame budget the harder barcode passes get on a label-like
# region's crop (where the quick pass and OCR read no number).
CROP_BARCODE_SHARE = 0.5
# Why a label-like region where nothing was read, but whose bars look like a 1D
# code's (barcode.looks_like_1d_code), is an unread label: a label with a barcode
# and no printed number that no pass decodes is read by nothing at all.
UNDECODED_BARS = "a label-like region with a barcode that no barcode pass could decode"
# Why a label-like region in which a number was read is an unread label all the same:
# it shows a 1D code's bars that no code read there explains and no pass decodes
# (barcode.undecoded_1d_codes). Two stickers that touch are one region, and the
# passes stop at the code that read a number: another patient's barcode-only label
# touching the patient's was archived under the first.
UNDECODED_SECOND_CODE = "a label-like region with a second barcode, beside the number read, that no barcode pass could decode"
# Why a label-like region where OCR read a name as a patient label prints it
# ("SURNAME, Given") but no number is an unread label.
LABEL_NAME_NO_NUMBER = "a label-like region with a patient's name and no number read"
# Seconds of video at the start and at the end that must show the label (R3).
VIDEO_WINDOW_S = 2.0


@dataclasses.dataclass(frozen=True)
class VideoWindows:
    """Which sampled frames of a video were its first and its last seconds."""

    relative_path: str
    head: tuple[int, ...]
    tail: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class FileProblem:
    """A media file that could not be read for identity, with the reason to refuse."""

    relative_path: str
    reason: Reason
    detail: str


@dataclasses.dataclass(frozen=True)
class IdentifyResult:
    """Everything the identify stage read from a card, for the decide stage."""

    evidence: tuple[Evidence, ...]
    examined: tuple[str, ...]  # relative paths read, in capture order
    videos: tuple[VideoWindows, ...] = ()
    problems: tuple[FileProblem, ...] = ()

    def on(self, relative_path: str) -> tuple[Evidence, ...]:
        return tuple(e for e in self.evidence if e.relative_path == relative_path)


# --------------------------------------------------------------------------- readings -> evidence


def evidence_from_reading(
    reading: Reading,
    relative_path: str,
    frame: int = 0,
    *,
    reserve_formats: Sequence[Any] = (),
) -> list[Evidence]:
    """One Evidence per identity-number-looking substring of the reading's text.

    Returns a single Evidence with ``patient_id=None, invalid=False`` when the
    text holds nothing that looks like a number (recorded, ignored by decide).
    """
    text = reading.text
    out: list[Evidence] = []
    seen: set[tuple[str | None, bool]] = set()

    def add(patient_id: str | None, invalid: bool) -> None:
        if (patient_id, invalid) not in seen:
            seen.add((patient_id, invalid))
            out.append(Evidence(patient_id=patient_id, invalid=invalid, relative_path=relative_path,
                                frame=frame, method=reading.method, text=text,
                                symbology=reading.symbology, position=reading.position))

    find = getattr(numbers, "find_candidates", None)
    if find is not None:
        for cand in find(text, reserve_formats=reserve_formats):
            add(cand.number.canonical if cand.number else None, cand.number is None)
    whole = _parse(text, reserve_formats)
    if whole is not None:
        add(whole, False)
    elif find is None and _looks_like(text):
        add(None, True)
    if not out:
        add(None, False)
    return out


def _parse(text: str, reserve_formats: Sequence[Any]) -> str | None:
    try:
        number = numbers.parse(text, reserve_formats=reserve_formats) if reserve_formats \
            else numbers.parse(text)
    except Exception:  # a validator's own error must not pass a number
        log.exception("identity: a validator failed on a reading (%d characters)", len(text))
        return None
    return number.canonical if number is not None else None


def _looks_like(text: str) -> bool:
    check = getattr(numbers, "looks_like_personnummer", None)
    if check is not None:
        return bool(check(text))
    digits = "".join(ch for ch in text if ch.isdigit())
    return len(digits) in (10, 12) and len(text.strip()) <= 13


def is_identity(e: Evidence) -> bool:
    """True for evidence that counts for the decision: a number, valid or not."""
    return e.patient_id is not None or e.invalid


# --------------------------------------------------------------------------- optional readers


# The readers that need an optional library (tesseract, pydicom, PyAV) are
# imported when a mode needs them, so that a missing one refuses only that mode.
_READERS = {
    "ocr": "bildsluss_common.readers.ocr",
    "dicom": "bildsluss_common.readers.dicom",
    "video": "agent.card.video",
}


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(_READERS[name])
    except ImportError as exc:
        log.warning("identity reader %s is not available: %s", _READERS[name], exc)
        return None


def _required(name: str, mode: Mode) -> ModuleType:
    module = _optional(name)
    if module is None:
        raise StageError(Reason.INTERNAL_ERROR,
                         f"{mode.value} mode needs the {name} reader ({_READERS[name]}), "
                         "which is not installed")
    return module


# --------------------------------------------------------------------------- per-file strategies


@dataclasses.dataclass
class _Context:
    mode: Mode
    budget_s: float
    reserve_formats: Sequence[Any]
    ocr: ModuleType | None
    evidence: list[Evidence] = dataclasses.field(default_factory=list)
    videos: list[VideoWindows] = dataclasses.field(default_factory=list)
    problems: list[FileProblem] = dataclasses.field(default_factory=list)

    def has_identity(self, readings: Sequence[Reading]) -> bool:
        """Whether any reading holds an identity-number-looking text (barcode: stop early)."""
        return any(is_identity(e) for r in readings
                   for e in evidence_from_reading(r, "", reserve_formats=self.reserve_formats))

    def add(self, readings: Sequence[Reading], path: str, frame: int = 0) -> list[Evidence]:
        new = [e for r in readings
               for e in evidence_from_reading(r, path, frame, reserve_formats=self.reserve_formats)]
        self.evidence.extend(new)
        return new


_ORIENTATION = 0x0112  # EXIF Orientation


def open_upright(path: PictureSource) -> Image.Image:
    """Decode a picture and apply its EXIF orientation, as staff saw it."""
    with Image.open(path) as img:
        img.load()
        try:
            if img.getexif().get(_ORIENTATION, 1) in (0, 1):
                return img  # already upright: no 12 MP copy (about 30 ms)
            return ImageOps.exif_transpose(img) or img
        except Exception:
            return img


def no_coarser(width: int, height: int, reduction: int) -> int:
    """``reduction`` (a power of two), halved until the reduced decode keeps at
    least ``regions.WORK_SIDE`` px on its long side, where the picture has them:
    the label search then never works on a coarser picture than it is built for.
    (A 0.8 MP picture's half-size decode, 520 px, split one label into fragments
    whose crops read as an unread second label; a 12 MP one is unchanged.)"""
    while reduction > 1 and max(width, height) / reduction < label_regions.WORK_SIDE:
        reduction //= 2
    return reduction


def middle_reduction(width: int, height: int) -> int:
    """How much smaller a middle picture's reduced decode is: a quarter of its
    width where the label search (which works on about ``regions.WORK_SIDE`` px)
    then sees it at no lower resolution than on the half-size decode (12 MP:
    1000 px either way), else half, as a first or last picture's."""
    def work_side(reduction: int) -> float:
        side = max(width, height) / reduction
        return side / max(1, round(side / label_regions.WORK_SIDE))

    return 4 if work_side(4) >= work_side(2) else 2


def open_reduced(path: PictureSource, reduction: int | None = 2) -> tuple[Image.Image, float]:
    """An upright copy of a picture at about 1/``reduction`` of its width, cheaply
    (None: :func:`middle_reduction` of its size): a JPEG is decoded at reduced
    scale and in grey (``Image.draft``: libjpeg's DCT scaling, which still decodes
    every entropy-coded block; about a quarter of the full decode's CPU time at
    half size). Other formats are decoded as they are (scale 1). Returns the copy
    and the factor from its pixels to the full picture's."""
    with Image.open(path) as img:
        full_width = img.width
        if img.format == "JPEG":
            if reduction is None:
                reduction = middle_reduction(img.width, img.height)
            reduction = no_coarser(img.width, img.height, reduction)
            img.draft("L", (img.width // reduction, img.height // reduction))
        img.load()
        small: Image.Image = img
        scale = full_width / small.width
        try:
            if img.getexif().get(_ORIENTATION, 1) not in (0, 1):
                small = ImageOps.exif_transpose(small) or small
        except Exception:
            pass
        return small, scale


def _read_frame(ctx: _Context, image: Image.Image | Callable[[], Image.Image], path: str, frame: int,
                *, required: bool, reduced: barcode_reader.ReducedRead | None = None,
                budget: Budget | None = None,
                regions: Sequence[label_regions.LabelRegion] | None = None) -> None:
    """Barcodes on one photo or video frame, then every label-like region not yet read.

    ``image`` may be a function that decodes it, called only when needed;
    ``reduced`` what the cheap barcode passes read on a reduced decode, when the
    caller ran them (:func:`barcode_reader.read_reduced`), within ``budget``;
    ``regions`` the label-like regions found on that reduced decode.

    A frame that shows two labels must show both (R4: a second patient's label
    beside the first refuses the card), so a number read does not end the
    frame: every label-like region that does not hold a number already read is
    read fully (:func:`_read_regions`). Where the number is ``required`` (a
    first/last picture, every picture in assault mode) and no region gave one,
    the whole frame is read by OCR as before issue 12 (a close-up of the label,
    or a label the search missed).
    """
    budget = budget or Budget(ctx.budget_s)
    seen: set[tuple[str, str]] = set()
    if reduced is not None:
        ctx.add(reduced.readings, path, frame)
        seen = {(r.symbology, r.text) for r in reduced.readings}
    if reduced is None:  # a decoded video frame: the quick passes at full size
        readings = barcode_reader.read_barcodes(image() if callable(image) else image,
                                                budget_s=budget.left() * (BARCODE_SHARE if required else 1.0),
                                                enough=ctx.has_identity, quick=True)
        ctx.add(readings, path, frame)
        seen |= {(r.symbology, r.text) for r in readings}
    unread = _read_regions(ctx, image, path, frame, regions=regions, seen=seen)
    if required and not _read_a_number(ctx, path, frame):
        # Neither the cheap passes nor a label-like region gave a number: the whole
        # frame, as before issue 12 (a close-up of the label, a small barcode the
        # label search missed). The full-resolution passes find small labels; where
        # the cheap passes located nothing barcode-like they find next to nothing,
        # and OCR gets the time.
        if callable(image):
            image = image()
        if reduced is not None and reduced.located != 0:
            share = REDUCED_MISS_SHARE if ctx.ocr is not None else 1.0
            readings = barcode_reader.read_barcodes(image, budget_s=budget.left() * share,
                                                    enough=ctx.has_identity, quick=False)
            ctx.add([r for r in readings if (r.symbology, r.text) not in seen], path, frame)
        if ctx.ocr is not None and not _read_a_number(ctx, path, frame):
            try:
                printed = ctx.ocr.read_printed_numbers(image, budget_s=max(budget.left(), 0.3 * ctx.budget_s))
            except Exception as exc:  # OCR trouble is "nothing read", never a pass
                log.warning("identity: OCR failed on %s frame %d: %s", path, frame, exc)
                printed = []
            ctx.add(printed, path, frame)
    # A region the whole-frame OCR read after all is no unread label. Where the
    # number is required and none was read, the frame is refused for that
    # (NO_ID_FOUND, ID_MISSING_ON_FRAME: photograph the label again); an unread
    # region counts beside a number read (a second label).
    read_at = _number_positions(ctx, path, frame)
    if required and not read_at:
        unread = []
    for e in unread:
        if not any(_inside(p, e.position) for p in read_at):
            ctx.evidence.append(e)
            log.info("identity: %s frame %d shows a label-like region at %s that could not be read (%s)",
                     path, frame, e.position, e.text)


def _number_positions(ctx: _Context, path: str, frame: int) -> list[tuple[int, int, int, int]]:
    """Where numbers (valid or not) were read on this frame."""
    return [e.position for e in ctx.evidence
            if e.relative_path == path and e.frame == frame and is_identity(e)]


def _read_a_number(ctx: _Context, path: str, frame: int) -> bool:
    return bool(_number_positions(ctx, path, frame))


def _read_regions(ctx: _Context, image: Image.Image | Callable[[], Image.Image], path: str, frame: int,
                  *, regions: Sequence[label_regions.LabelRegion] | None,
                  seen: set[tuple[str, str]]) -> list[Evidence]:
    """Every label-like region of a frame that holds no number read yet, read fully.

    R4 wants every frame checked for another patient, and a frame may show two
    labels. Each label-like region (:mod:`bildsluss_common.readers.regions`;
    found on the reduced decode, or here on a reduced copy of a decoded video
    frame) in which no number was read yet is read fully: a full-resolution
    crop, every barcode pass on it, then OCR of the crop. A region from
    which nothing identity-like is read although OCR saw a number-like word
    there (one that is not the printed text of a product's barcode on the
    frame), or whose reading the budget cut short before OCR read anything or
    before print it saw was read (unless a barcode without a number was read
    there: a product), or whose harder barcode passes the budget stopped before
    they were done (unless a product's barcode was read there), or where no OCR
    reader is installed, is an unread label:
    returned as ``UNREAD_LABEL`` evidence (not yet added; the caller drops one
    that a later whole-frame reading explains), and the decide stage refuses
    the card (UNREADABLE_LABEL_MID_CARD). Without a label-like region to read,
    no full decode is paid.
    """
    if regions is None:
        if callable(image):
            image = image()
        grey, scale = reduced_grey(image)
        regions = label_regions.find_label_regions(grey, scale=scale)
    read_at = _number_positions(ctx, path, frame)
    labelled = [r for r in regions if any(_inside(p, r.box) for p in read_at)]
    todo = [r for r in regions if r not in labelled]
    if not todo and not labelled:
        return []
    if callable(image):
        image = image()
    for region in labelled:
        _read_beside_a_number(ctx, image, region, path, frame)
        _read_rest_of_region(ctx, image, region, path, frame, seen, quick_done=False)
    frame_locator = barcode_reader.FrameLocator(image)
    unread: list[Evidence] = []
    for region in todo:
        if any(_inside(p, region.box) for p in _number_positions(ctx, path, frame)):
            continue  # a region read beside it held this one's number too (they overlap)
        # Each region found is read with the frame's whole budget of its own (and the
        # budget's generous wall-clock backstop): a region cut short is a refusal, so
        # neither the cheap passes, nor a false find beside the label, nor a loaded PC
        # may use up the time its reading needs.
        budget = Budget(ctx.budget_s)
        crop, (x0, y0) = _crop(image, region.box)
        if crop is None:
            continue
        # Cheapest first: zxing-cpp once on the crop (milliseconds), then OCR of the
        # crop (a print-only label: one tesseract call, usually); the harder
        # barcode passes (hundreds of ms on a crop full of print, which they take
        # for bars) only where OCR read no valid number.
        readings = _new(barcode_reader.read_quick(crop), (x0, y0), seen)
        if any(is_identity(e) for e in ctx.add(readings, path, frame)):
            _read_beside_a_number(ctx, image, region, path, frame)
            _read_rest_of_region(ctx, image, region, path, frame, seen, quick_done=True)
            continue  # this label is read; the next region may be another
        text = _ocr_label_crop(ctx, crop, path, frame, budget)
        printed = [_moved(r, x0, y0) for r in text.readings] if not isinstance(text, str) else []
        found = [e for r in printed for e in evidence_from_reading(r, path, frame,
                                                                    reserve_formats=ctx.reserve_formats)]
        barcodes_cut = False
        if not any(e.patient_id for e in found):
            # A budget of their own, the same on every frame, not what quick reading
            # and OCR left over: what they are given must not depend on how long
            # OCR took, and a cut-short reading refuses (below).
            # Cheapest first on a crop (located_last): a ruler or a striped cloth is one
            # large barcode-like patch whose reading takes about a second, and the
            # whole-crop passes were skipped behind it (the crop refused as cut short).
            hard = barcode_reader.read_barcodes_fully(crop, budget_s=ctx.budget_s * CROP_BARCODE_SHARE,
                                                      enough=ctx.has_identity, quick=False, located_last=True)
            readings = _new(list(hard.readings), (x0, y0), seen)
            if any(is_identity(e) for e in ctx.add(readings, path, frame)):
                # The barcode read what OCR misread (a number that does not validate).
                _read_rest_of_region(ctx, image, region, path, frame, seen, quick_done=True)
                continue
            # The crop's own locator may cut a tilted, blurred code's patch short
            # where the whole frame's locator frames it: its patches in this region
            # too (a barcode-only label of another patient was archived so once).
            located = frame_locator.read_in(region.box, budget_s=ctx.budget_s * CROP_BARCODE_SHARE)
            if any(is_identity(e) for e in ctx.add(_new(list(located.readings), (0, 0), seen), path, frame)):
                _read_rest_of_region(ctx, image, region, path, frame, seen, quick_done=True)
                continue
            barcodes_cut = not (hard.complete and located.complete)
        ctx.evidence.extend(found)
        if any(is_identity(e) for e in found):
            _read_rest_of_region(ctx, image, region, path, frame, seen, quick_done=True)
            continue
        product_label = any(e.method == Method.BARCODE and e.relative_path == path and e.frame == frame
                            and _inside(e.position, region.box) for e in ctx.evidence)
        why = _unread_why(text, products=[t for _, t in seen], product_label=product_label,
                          barcodes_cut=barcodes_cut,
                          bars=not product_label and frame_locator.code_pattern_in(region.box))
        if why:
            unread.append(Evidence(relative_path=path, frame=frame, method=Method.UNREAD_LABEL,
                                   text=why, patient_id=None, position=region.box))
    return unread


def _read_beside_a_number(ctx: _Context, image: Image.Image, region: label_regions.LabelRegion,
                          path: str, frame: int) -> None:
    """The print of a label-like region in which a number was read, by OCR, for a second label.

    Two stickers side by side (a few pixels apart, or touching) are one region
    on the reduced decode, and a number read in it used to end the region: the
    printed label of another patient beside the patient's barcode label was
    archived under the first. Every white region of the crop (a sticker) that
    does not hold a number read is read by OCR; a valid number other than those
    read on the frame is added (another patient: MIXED_PATIENTS). A crop that is
    one sticker costs the white-region search only, no OCR (but the frame's full
    decode, which the caller makes for the crop). A number-like line that does
    not validate is not held against the card here: it is most often OCR's
    misreading of the label whose number was read, and refusing on it would
    refuse good cards.
    """
    crop, (x0, y0) = _crop(image, region.box)
    if crop is None:
        return
    read_at = [(x - x0, y - y0, w, h) for x, y, w, h in _number_positions(ctx, path, frame)]
    text = _ocr_label_crop(ctx, crop, path, frame, Budget(ctx.budget_s), besides=read_at)
    if isinstance(text, str):
        return
    known = {e.patient_id for e in ctx.evidence if e.relative_path == path and e.frame == frame and e.patient_id}
    for r in text.readings:
        for e in evidence_from_reading(_moved(r, x0, y0), path, frame, reserve_formats=ctx.reserve_formats):
            if e.patient_id and not e.invalid and e.patient_id not in known:
                ctx.evidence.append(e)
                log.info("identity: %s frame %d shows a second number beside the one read, at %s",
                         path, frame, e.position)


def _read_rest_of_region(ctx: _Context, image: Image.Image, region: label_regions.LabelRegion, path: str,
                         frame: int, seen: set[tuple[str, str]], *, quick_done: bool) -> None:
    """The codes of a label-like region in which a number was read that no reading reached.

    Two stickers that touch are one region (and one white region, so
    :func:`_read_beside_a_number` reads neither), and the barcode passes stop at
    the code that read a number (the located pass after its patch): another
    patient's barcode-only label touching the patient's was archived under the
    first. So zxing-cpp reads the region's full-resolution crop once (unless the
    caller just did), and the crop's located patches that still show a 1D code's
    bars once every code read on the frame is painted over
    (:func:`barcode_reader.undecoded_1d_codes`) are read: by the located pass,
    then, where bars are still left, by every pass on the crop. A number read is
    evidence like any other (another patient's: MIXED_PATIENTS); where the
    region's number was read by barcode, bars that no pass decodes are an unread
    label (UNREADABLE_LABEL_MID_CARD), added here, not left to the caller's
    filter, which drops an unread region holding a number. Where OCR read it,
    they may be the label's own code, blurred beyond the readers: not held
    against the card.
    A crop of one label costs zxing-cpp once and the painted crop's locator with
    a bar test of its patches (the label's print), no barcode pass. 2D codes are
    not judged by the bar test (they decode far more easily: the first step).
    """
    crop, (x0, y0) = _crop(image, region.box)
    if crop is None:
        return
    grey = barcode_reader.to_grey(crop)
    if not quick_done:  # on the grey copy made once for both (to_grey of it is the same array)
        ctx.add(_new(barcode_reader.read_quick(Image.fromarray(grey)), (x0, y0), seen), path, frame)

    def left() -> list[tuple[tuple[int, int, int, int], float]]:
        read = [(x - x0, y - y0, w, h) for e in ctx.evidence
                if e.method == Method.BARCODE and e.relative_path == path and e.frame == frame
                for x, y, w, h in (e.position,)]
        return barcode_reader.undecoded_1d_codes(grey, read, frame_side=max(image.size))

    bars = left()
    if not bars:
        return
    located = barcode_reader.read_patches(grey, bars, budget_s=ctx.budget_s * CROP_BARCODE_SHARE)
    ctx.add(_new(list(located.readings), (x0, y0), seen), path, frame)
    bars = left()
    if bars:  # a code the located pass could not read on its patch: every pass on the crop
        hard = barcode_reader.read_barcodes_fully(crop, budget_s=ctx.budget_s * CROP_BARCODE_SHARE,
                                                  enough=lambda _found: False, quick=False)
        ctx.add(_new(list(hard.readings), (x0, y0), seen), path, frame)
        bars = left()
    # A label whose number OCR read may carry a code that no pass decodes (blurred):
    # those bars are its own, not a second label's. Only where the region's number
    # was read by barcode are bars that nothing explains another code.
    by_barcode = any(e.method == Method.BARCODE and is_identity(e) and e.relative_path == path and e.frame == frame
                     and _inside(e.position, region.box) for e in ctx.evidence)
    if bars and by_barcode:
        (bx0, by0, bx1, by1), _ = bars[0]
        ctx.evidence.append(Evidence(relative_path=path, frame=frame, method=Method.UNREAD_LABEL,
                                     text=UNDECODED_SECOND_CODE, patient_id=None,
                                     position=(x0 + bx0, y0 + by0, bx1 - bx0, by1 - by0)))
        log.info("identity: %s frame %d shows a second barcode beside the number read, at %s, that no pass "
                 "decoded", path, frame, (x0 + bx0, y0 + by0))


def _new(readings: Sequence[Reading], origin: tuple[int, int], seen: set[tuple[str, str]]) -> list[Reading]:
    """A crop's barcode readings in the frame's pixels, less those already read; marks them seen."""
    out = [_moved(r, *origin) for r in readings if (r.symbology, r.text) not in seen]
    seen |= {(r.symbology, r.text) for r in out}
    return out


def _ocr_label_crop(ctx: _Context, crop: Image.Image, path: str, frame: int, budget: Budget,
                   besides: Sequence[tuple[int, int, int, int]] | None = None) -> Any:
    """OCR of one label-like crop (``ocr.read_label_text``), or why it could not run (a str)."""
    if ctx.ocr is None or not hasattr(ctx.ocr, "read_label_text"):
        return "a label-like region, and no OCR reader is installed to read it"
    try:
        return ctx.ocr.read_label_text(crop, budget_s=max(budget.left(), 0.1),
                                       wall_s=max(budget.wall_left(), 1.0), besides=besides)
    except Exception as exc:  # OCR trouble is "could not read", never a pass
        log.warning("identity: OCR failed on a label-like region of %s frame %d: %s", path, frame, exc)
        return f"a label-like region; OCR failed: {type(exc).__name__}"


def _unread_why(text: Any, products: Sequence[str] = (), product_label: bool = False,
                barcodes_cut: bool = False, bars: bool = False) -> str:
    """Why a region from which no number was read counts as an unread label, or ""
    when OCR saw nothing number-like there and the barcode passes read it to the
    end (not a label: a false find).

    ``text``: what :func:`_ocr_label_crop` gave. ``products``: the texts of the
    frame's barcodes that hold no number (a dressing's lot code). A number-like
    line that is part of one of them is the barcode's printed text, not an
    unread patient number. ``barcodes_cut``: the budget stopped the barcode
    passes on the crop before they were done; unless a barcode without a number
    was read there (a product), the label may hold a barcode they did not reach:
    unsure, so unread (a tilted, blurred ITF label was archived so once)."""
    if isinstance(text, str):
        return text
    unexplained = [t for t in text.number_like if not any(t in p for p in products)]
    if unexplained:
        return "a label-like region with a number-like line that is not a patient number"
    if text.named:
        # A patient's name as labels print it, and no number read: a patient label
        # whose number glare or a fold hides (another patient's was archived so).
        return LABEL_NAME_NO_NUMBER
    if not text.complete and (not text.words or (text.printed and not product_label)):
        # Cut short by the budget (on a loaded PC, its wall-clock backstop) before
        # OCR read a word, or before the print it saw was read line by line: unsure.
        # A region whose barcode was read and holds no number is a product's label.
        return "a label-like region that could not be read within the time budget"
    if barcodes_cut and not product_label:
        return "a label-like region whose barcode could not be read within the time budget"
    if bars:
        return UNDECODED_BARS
    return ""


def _crop(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[Image.Image | None, tuple[int, int]]:
    """The region of the full-resolution frame, with a margin of a tenth of its size."""
    x, y, w, h = box
    m = max(w, h) // 10
    x0, y0 = max(0, x - m), max(0, y - m)
    x1, y1 = min(image.width, x + w + m), min(image.height, y + h + m)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None, (0, 0)
    return image.crop((x0, y0, x1, y1)), (x0, y0)


_inside = label_regions.middle_inside


def _moved(r: Reading, dx: int, dy: int) -> Reading:
    x, y, w, h = r.position
    return dataclasses.replace(r, position=(x + dx, y + dy, w, h))


def reduced_grey(image: Image.Image) -> tuple[np.ndarray, float]:
    """A grey copy of a decoded frame about 2000 px wide (as a JPEG's reduced decode
    is), for the label-region search; and the factor from its pixels to the frame's."""
    factor = max(1, round(max(image.size) / 2000))
    small = image.reduce(factor) if factor > 1 else image
    return barcode_reader.to_grey(small), image.width / small.width


def read_frame(
    image: Image.Image,
    relative_path: str = "",
    frame: int = 0,
    *,
    required: bool = True,
    budget_s: float = 2.0,
    reserve_formats: Sequence[Any] = (),
) -> list[Evidence]:
    """Read one upright photo or video frame exactly as :func:`identify` does.

    Barcodes first; where ``required`` (a first/last picture, every picture in
    assault mode) and no identity-looking barcode was read, OCR of the printed
    number when :mod:`bildsluss_common.readers.ocr` is installed. For benchmarks and tools.
    """
    ctx = _Context(mode=Mode.PHOTO, budget_s=budget_s, reserve_formats=reserve_formats,
                   ocr=_optional("ocr"))
    _read_frame(ctx, image, relative_path, frame, required=required)
    return ctx.evidence


def read_picture(
    path: PictureSource,
    relative_path: str = "",
    *,
    required: bool = True,
    budget_s: float = 2.0,
    reserve_formats: Sequence[Any] = (),
) -> list[Evidence]:
    """Read one picture file exactly as :func:`identify` does (decode included):
    the quick barcode pass on a half-size decode, then, only when that read no
    identity number, the full decode, the harder passes and OCR. For benchmarks
    and tools. Raises what Pillow raises for an undecodable file."""
    ctx = _Context(mode=Mode.PHOTO, budget_s=budget_s, reserve_formats=reserve_formats,
                   ocr=_optional("ocr"))
    _read_picture(ctx, path, relative_path, required=required)
    return ctx.evidence


def _read_picture(ctx: _Context, path: PictureSource, relative_path: str, *, required: bool,
                  reduced: tuple[Image.Image, float] | None = None) -> None:
    # Most labels read on a half-size copy in 20-150 ms: the full 12 MP decode
    # (about 100 ms) and the full-resolution passes are spent only on the rest.
    # ``reduced``: what open_reduced(path) gave the caller (the scan's decode), not decoded twice.
    budget = Budget(ctx.budget_s)
    small, scale = reduced if reduced is not None else open_reduced(path, 2 if required else None)
    share = BARCODE_SHARE if required and ctx.ocr is not None else 1.0
    grey = barcode_reader.to_grey(small)
    regions = label_regions.find_label_regions(grey, scale=scale)  # a few ms: every picture
    # A required picture's located pass reads the barcode-like patches in its
    # label-like regions only (a patch elsewhere is mostly skin texture, and a
    # label the search missed is read by the whole-frame passes that follow).
    within = [r.box for r in regions] if required and regions else None
    # A middle picture gets the one quick zxing-cpp call only: the located pass
    # (about 150 ms, on the 3-7 patches of skin texture every photo shows) reads
    # nothing the label search does not find, and each label-like region is
    # then read at full resolution with every barcode pass and OCR (_read_middle).
    cheap = barcode_reader.read_reduced(grey, scale=scale, budget_s=budget.left() * share,
                                        enough=ctx.has_identity, within=within, with_located=required)
    _read_frame(ctx, lambda: open_upright(path), relative_path, 0, required=required,
                reduced=cheap, budget=budget, regions=regions)


def _read_image(ctx: _Context, media: MediaFile, *, required: bool,
                reduced: tuple[Image.Image, float] | None = None) -> None:
    try:
        _read_picture(ctx, media.path, media.relative_path, required=required, reduced=reduced)
    except Exception as exc:
        ctx.problems.append(FileProblem(media.relative_path, Reason.NOT_MEDIA,
                                        f"cannot decode the image: {exc}"))


def _read_ultrasound_frame(ctx: _Context, image: Image.Image, path: str, frame: int) -> None:
    """An ultrasound image or cine frame: the burned-in overlay by OCR (R3)."""
    ocr = ctx.ocr or _required("ocr", ctx.mode)
    # A label photographed on the machine's screen reads as a barcode too.
    ctx.add(barcode_reader.read_barcodes(image, budget_s=ctx.budget_s * 0.25,
                                         enough=ctx.has_identity), path, frame)
    try:
        overlay = ocr.read_overlay(image, budget_s=ctx.budget_s)
    except Exception as exc:
        log.warning("identity: overlay OCR failed on %s frame %d: %s", path, frame, exc)
        overlay = []
    ctx.add(overlay, path, frame)


def read_ultrasound_frame(
    image: Image.Image,
    relative_path: str = "",
    frame: int = 0,
    *,
    budget_s: float = 2.0,
    reserve_formats: Sequence[Any] = (),
) -> list[Evidence]:
    """Read one ultrasound image or cine frame exactly as :func:`identify` does in
    ultrasound mode (barcode, then the overlay by OCR). For benchmarks and tools."""
    ctx = _Context(mode=Mode.ULTRASOUND, budget_s=budget_s, reserve_formats=reserve_formats,
                   ocr=_required("ocr", Mode.ULTRASOUND))
    _read_ultrasound_frame(ctx, image, relative_path, frame)
    return ctx.evidence


def _read_ultrasound_image(ctx: _Context, media: MediaFile, *, required: bool) -> None:
    try:
        image = open_upright(media.path)
    except Exception as exc:
        ctx.problems.append(FileProblem(media.relative_path, Reason.NOT_MEDIA,
                                        f"cannot decode the image: {exc}"))
        return
    _read_ultrasound_frame(ctx, image, media.relative_path, 0)


def _read_dicom(ctx: _Context, media: MediaFile, *, required: bool) -> None:
    dicom = _required("dicom", ctx.mode)
    try:
        if hasattr(dicom, "read_dicom_identity"):
            result = dicom.read_dicom_identity(media.path, budget_s=ctx.budget_s)
            readings, unread = result.readings, result.frames_unread
        else:
            readings, unread = dicom.dicom_readings(media.path), ()
    except Exception as exc:  # DicomUnreadable, or a reader bug: refuse, never pass
        ctx.problems.append(FileProblem(media.relative_path, Reason.NOT_MEDIA,
                                        f"cannot read the DICOM file: {exc}"))
        return
    for r in readings:
        ctx.add([r], media.relative_path, int(getattr(r, "frame", 0)))
    if unread:
        ctx.problems.append(FileProblem(
            media.relative_path, Reason.ID_MISSING_ON_FRAME,
            f"frames {_ranges(unread)} could not be checked for the patient number"))


def _read_video(ctx: _Context, media: MediaFile, *, required: bool) -> None:
    video = _required("video", ctx.mode)
    try:
        frames = video.sample_frames(media.path, seconds=VIDEO_WINDOW_S)
    except Exception as exc:
        ctx.problems.append(FileProblem(media.relative_path, Reason.NOT_MEDIA,
                                        f"cannot decode the video: {exc}"))
        return
    head, tail = _video_windows(video, media, [i for i, _ in frames])
    ctx.videos.append(VideoWindows(media.relative_path, head, tail))
    for index, image in frames:
        if ctx.mode == Mode.ULTRASOUND:  # a cine loop: the overlay is burned into every frame
            _read_ultrasound_frame(ctx, image, media.relative_path, index)
        else:
            _read_frame(ctx, image, media.relative_path, index, required=required)


def _video_windows(video: ModuleType, media: MediaFile, indexes: list[int]
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split sampled frame indexes into the first and the last seconds."""
    if not indexes:
        return (), ()
    try:
        info = video.probe(media.path)
        fps, duration = float(info.fps), float(info.duration_s)
    except Exception:
        fps = duration = 0.0
    if fps > 0 and duration > 0:
        head = tuple(i for i in indexes if i / fps < VIDEO_WINDOW_S + 1e-6)
        tail = tuple(i for i in indexes if i / fps >= duration - VIDEO_WINDOW_S - 1 / fps)
    else:  # unknown timing: the first half of the samples, and the second
        half = (len(indexes) + 1) // 2
        head, tail = tuple(indexes[:half]), tuple(indexes[len(indexes) - half:])
    return head or (indexes[0],), tail or (indexes[-1],)


def _ranges(frames: Sequence[int]) -> str:
    frames = sorted(frames)
    parts, start, prev = [], frames[0], frames[0]
    for f in [*frames[1:], None]:
        if f is not None and f == prev + 1:
            prev = f
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if f is not None:
            start = prev = f
    return ", ".join(parts)


# --------------------------------------------------------------------------- the stage


def required_positions(media: Sequence[MediaFile], mode: Mode) -> dict[str, tuple[str, ...]]:
    """Which files must show the number, by rule (R3), for each media file path.

    Returns ``{relative_path: (position, ...)}`` with positions ``"first"``,
    ``"last"`` (photo and video series: the first and last picture or clip) or
    ``"every"`` (assault and ultrasound images, every DICOM file). Audio files
    and middle pictures of a series are not listed. Shared with decide.
    """
    out: dict[str, tuple[str, ...]] = {}
    visual = [m for m in media if m.kind in (MediaKind.IMAGE, MediaKind.VIDEO)]
    for m in media:
        if m.kind == MediaKind.DICOM:
            out[m.relative_path] = ("every",)
        elif m.kind in (MediaKind.IMAGE, MediaKind.VIDEO) and mode in (Mode.ASSAULT, Mode.ULTRASOUND):
            out[m.relative_path] = ("every",)
    if visual and mode not in (Mode.ASSAULT, Mode.ULTRASOUND):
        first, last = visual[0].relative_path, visual[-1].relative_path
        out[first] = ("first",) if first != last else ("first", "last")
        if first != last:
            out[last] = ("last",)
    return out


@dataclasses.dataclass(frozen=True)
class FileReading:
    """What one file showed (:func:`read_media`): plain data, so that a worker
    process can read a file and send this back (:mod:`agent.card.workers`)."""

    relative_path: str
    evidence: tuple[Evidence, ...] = ()
    videos: tuple[VideoWindows, ...] = ()
    problems: tuple[FileProblem, ...] = ()


def read_media(
    media: MediaFile,
    mode: Mode,
    *,
    required: bool,
    budget_s: float = 2.0,
    reserve_formats: Sequence[Any] = (),
    reduced: tuple[Image.Image, float] | None = None,
) -> FileReading | None:
    """Read one media file exactly as :func:`identify` does; None for a file with
    nothing to read (audio). ``required``: the rules want the number on this file
    (:func:`required_positions`). ``reduced``: the picture's :func:`open_reduced`
    when the caller already decoded it (a photo read with :func:`_read_image`).
    Raises StageError INTERNAL_ERROR when the mode needs a reader that is missing."""
    strategy = _strategy(media, mode)
    if strategy is None:
        return None
    ocr = _required("ocr", mode) if mode in (Mode.ULTRASOUND,) else _optional("ocr")
    ctx = _Context(mode=mode, budget_s=budget_s, reserve_formats=reserve_formats, ocr=ocr)
    t0 = time.monotonic()
    if reduced is not None and strategy is _read_image:
        _read_image(ctx, media, required=required, reduced=reduced)
    else:
        strategy(ctx, media, required=required)
    log.debug("identity: read %s in %.0f ms", media.relative_path, (time.monotonic() - t0) * 1000)
    return FileReading(media.relative_path, tuple(ctx.evidence), tuple(ctx.videos), tuple(ctx.problems))


def gather(readings: Sequence[FileReading | None]) -> IdentifyResult:
    """The card's result from its files' readings, in capture order."""
    read = [r for r in readings if r is not None]
    return IdentifyResult(
        evidence=tuple(e for r in read for e in r.evidence),
        examined=tuple(r.relative_path for r in read),
        videos=tuple(v for r in read for v in r.videos),
        problems=tuple(p for r in read for p in r.problems),
    )


def identify(
    scan: ScanResult,
    mode: Mode,
    *,
    expect: str | None = None,
    budget_s: float = 2.0,
    reserve_formats: Sequence[Any] = (),
) -> IdentifyResult:
    """Read every identity number on the card's media (see the module notes).

    ``expect`` (the EHR's patient, R5) does not change what is read: every file
    is read and judged the same way with or without it; decide compares.
    Raises :class:`StageError` (INTERNAL_ERROR) when the mode needs a reader
    that is not installed. Never writes to the card. One file after another;
    :mod:`agent.card.workers` reads them with :func:`read_media` on every core.
    """
    del expect  # read the same way with or without context; decide compares
    if mode in (Mode.ULTRASOUND,):
        _required("ocr", mode)
    positions = required_positions(scan.media, mode)
    return gather([read_media(m, mode, required=m.relative_path in positions, budget_s=budget_s,
                              reserve_formats=reserve_formats) for m in scan.media])


def _strategy(media: MediaFile, mode: Mode) -> Callable[..., None] | None:
    if media.kind == MediaKind.AUDIO:
        return None
    if media.kind == MediaKind.DICOM:
        return _read_dicom
    if media.kind == MediaKind.VIDEO:
        return _read_video
    if mode == Mode.ULTRASOUND:
        return _read_ultrasound_image
    return _read_image
