"""Reading the patient label's barcode from a photograph (R3).

zxing-cpp is the reader; pyzbar (ZBar) is a second opinion on the harder
passes only. A capture is a 12 MP JPEG in which the label may be small,
tilted up to about 30 degrees and a little blurred, so reading runs in passes
of increasing cost within a budget of CPU time (:mod:`bildsluss_common.readers.budget`),
and stops after the first pass that reads what the caller wants (by default:
anything; the located pass checks after each patch, so that a label read on its
first patch does not pay for its print's patches, 20-50 ms each):

0. **on a reduced copy** (:func:`read_reduced`; the identify stage decodes a
   JPEG at half size with ``Image.draft`` for it, a quarter of the full
   decode's CPU): zxing-cpp once without rotation, inversion or pyramid
   retries (5-50 ms), then the located pass (below) on the copy (30-250 ms).
   On the benchmark's 12 MP labels the first reads about half, the second
   about 90 % of the rest; the full decode is paid only for what is left.
1. **quick** (:func:`read_barcodes` on a full frame; skipped when the caller
   ran 0): the same single zxing-cpp call on a copy about 2000 px wide.
2. **located crops**: a structure-tensor map of the image (on a copy about
   1500 px wide) finds patches of strong, parallel edges: a 1D barcode's bars,
   or a 2D code's modules. Each patch is cut out at full resolution, turned so
   that its bars stand upright, enlarged when small, contrast-stretched, and
   read by zxing-cpp with two binarizers and then by ZBar. This is what reads a
   tilted Code 128 / Code 39 label: a 1D reader needs one scan line that
   crosses every bar, which a wide, short barcode tilted by more than about 12
   degrees no longer has.
3. **full frame**: zxing-cpp on the whole grey image at full resolution with
   every retry (its own pyramid, rotations by 90 degrees, inversion): 200-1300
   ms for 12 MP, and after 0-2 it rarely adds a read (measured: 1 of 36 frames,
   which the located pass read too), so it comes after them.
4. **rotations**: the whole image, at half size, turned by +-12 and +-24
   degrees, for labels the locator missed. Only if budget remains.

The corpus tests (``tests/test_barcode.py``) measure the read rate on the
real photographs of ``corpus/barcodes`` and check that nothing reads wrong.

Measured earlier (tests/test_barcode.py corpus; 72 generated 12 MP frames, four
symbologies, 3 label sizes, 0/15/30 degrees, two blurs): zxing-cpp's full frame
alone reads every corpus folder at or above upstream's threshold but only 7/18
of the Code 128 and 3/18 of the Code 39 frames (it cannot read tilted 1D
codes); with the located pass 18/18 and 9/18 (the Code 39 misses are labels
with 1.5-2.3 px per module, blurred: below what any reader resolves). DataMatrix
and QR: 18/18 with full frame alone. ZBar added no read anywhere. Halving the
resolution (``Image.draft``) loses small labels, which is why the reduced copy
is only the first attempt and the full-resolution passes follow it.

ZBar is kept as the last resort on located patches, and only reads where
zxing-cpp could not; a ZBar reading whose box overlaps a zxing-cpp reading is
dropped (:func:`_dedupe`): where both read the same symbol their texts can
differ in interpretation
(ZBar does not apply Code 39 full-ASCII, nor Code 32), and a text that only
one reader's interpretation produces must not become a second "number".

Every function here takes any image Pillow can open (CMYK, 16-bit, palette,
alpha, 1x1) and never raises for an odd image: a frame that cannot be read
gives no readings, which the decide stage turns into a refusal.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import cv2  # opencv-python-headless: a project dependency (readers/regions.py)
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from bildsluss_common.readers import Method, Reading
from bildsluss_common.readers.budget import Budget

log = logging.getLogger(__name__)

try:
    import zxingcpp
except ImportError:  # pragma: no cover - a dependency; without it only ZBar reads
    zxingcpp = None  # type: ignore[assignment]

try:
    from pyzbar import pyzbar
except Exception:  # pragma: no cover - ImportError, or libzbar0 missing (OSError)
    pyzbar = None

# The symbologies patient labels use (R3), plus ITF and PDF417 that some
# regions' label printers and wristbands use. Retail codes (EAN/UPC) are left
# out on purpose: they are on every product in a clinic, never a patient.
SYMBOLOGIES = ("Code128", "Code39", "DataMatrix", "QRCode", "ITF", "PDF417")

_ZBAR_TYPES = {"CODE128": "Code128", "CODE39": "Code39", "QRCODE": "QRCode",
               "I25": "ITF", "PDF417": "PDF417"}

# Largest side, in pixels, of the copy the locator works on.
_LOCATOR_SIDE = 1500
# Side of one cell of the locator's grid, in locator pixels.
_CELL = 8
# How many located patches are tried, best first.
_MAX_PATCHES = 8
# Largest side, in pixels, of the copy the quick first pass reads.
_QUICK_SIDE = 2000


def _zxing_formats() -> Any:
    if zxingcpp is None:
        return None
    with warnings.catch_warnings():  # '|' on formats is deprecated in zxing-cpp 3
        warnings.simplefilter("ignore", DeprecationWarning)
        fmts = getattr(zxingcpp.BarcodeFormat, SYMBOLOGIES[0])
        for name in SYMBOLOGIES[1:]:
            fmts = fmts | getattr(zxingcpp.BarcodeFormat, name)
    return fmts


_FORMATS = _zxing_formats()


# --------------------------------------------------------------------------- public API


def read_barcodes(
    image: Image.Image,
    *,
    budget_s: float = 1.0,
    enough: Callable[[list[Reading]], bool] | None = None,
    quick: bool = True,
) -> list[Reading]:
    """All barcodes readable on one frame, within about ``budget_s`` CPU seconds.

    The passes run until one has read something ``enough`` accepts (default:
    anything at all); the identify stage asks for an identity-number-looking
    text, so that a product's barcode read by the first pass does not stop the
    search for a tilted patient label in the same picture. Readings of all
    passes run are returned. Positions are ``(x, y, width, height)`` in the
    pixels of ``image`` as given. Identical readings (same symbology and text)
    are reported once, and a ZBar reading where zxing-cpp read a symbol is
    dropped. ``quick=False`` skips the cheap first pass (the caller ran
    :func:`read_reduced` on a reduced decode already). The budget is CPU time
    (:mod:`bildsluss_common.readers.budget`); a pass that has started finishes, so the
    budget may be overrun by one zxing-cpp call. Never raises for the image's
    sake; returns ``[]`` when nothing could be read.
    """
    return list(read_barcodes_fully(image, budget_s=budget_s, enough=enough, quick=quick).readings)


class StepBudget(Budget):
    """A :class:`Budget` that remembers whether it stopped a step: a pass asked
    :meth:`spent` before a patch or an angle and was told to stop. A budget that
    the last step overran stopped nothing: every step was read."""

    stopped = False

    def spent(self) -> bool:
        out = super().spent()
        self.stopped = self.stopped or out
        return out


@dataclasses.dataclass(frozen=True)
class FullRead:
    """What :func:`read_barcodes_fully` read, and whether its passes all ran."""

    readings: tuple[Reading, ...]
    # Every pass ran to its end, or one read ``enough``. False: the budget cut them
    # short, so "nothing read" does not mean "no barcode there".
    complete: bool


def read_barcodes_fully(
    image: Image.Image,
    *,
    budget_s: float = 1.0,
    enough: Callable[[list[Reading]], bool] | None = None,
    quick: bool = True,
    located_last: bool = False,
) -> FullRead:
    """:func:`read_barcodes`, saying whether the passes were cut short by the budget
    (the identify stage refuses a label-like region whose reading was cut short
    rather than taking it for a region without a barcode): ``complete`` is False
    only where the budget ran out before a pass, or before a step of one (a
    patch, an angle), was read; a last step that overran it was read.
    ``located_last``: the whole-image passes before the located pass, for a
    label-sized crop, where they cost tens of milliseconds and the located pass
    may read one large patch for a second (a ruler, a striped cloth): cheapest
    first, so that the budget runs out, if at all, in the located pass."""
    budget = StepBudget(budget_s)
    enough = enough or bool
    try:
        grey = to_grey(image)
    except Exception as exc:  # an image Pillow opened but cannot convert
        log.warning("barcode: cannot convert image for reading: %s", exc)
        return FullRead((), True)
    if grey.size == 0 or min(grey.shape) < 8:
        return FullRead((), True)
    found: list[Reading] = []
    for k, (name, run) in enumerate(_passes(grey, quick=quick, enough=enough, located_last=located_last)):
        if k and budget.spent():
            log.debug("barcode: budget spent before pass %s", name)
            return FullRead(tuple(found), False)
        try:
            found = _dedupe([*found, *(r for r in run(budget) if not is_partial_itf(r))])
        except Exception as exc:  # a reader's own error must not stop the card
            log.warning("barcode: pass %s failed: %s", name, exc)
        if found and enough(found):
            log.debug("barcode: pass %s read enough (%d)", name, len(found))
            return FullRead(tuple(found), True)
        if budget.stopped:
            log.debug("barcode: budget spent within pass %s", name)
            return FullRead(tuple(found), False)
    # Every pass ran to its end (the last may have overrun the budget: a step
    # that has started finishes): nothing was left unread.
    return FullRead(tuple(found), True)


@dataclasses.dataclass(frozen=True)
class ReducedRead:
    """What the cheap passes read on a reduced copy of a frame (:func:`read_reduced`)."""

    readings: tuple[Reading, ...]
    located: int | None  # barcode-like patches found on the copy; None: the locator did not run


def read_reduced(
    image: Image.Image | np.ndarray,
    *,
    scale: float = 1.0,
    budget_s: float = 1.0,
    enough: Callable[[list[Reading]], bool] | None = None,
    within: Sequence[tuple[int, int, int, int]] | None = None,
    with_located: bool = True,
) -> ReducedRead:
    """The cheap passes on a reduced copy of a frame (a half-size JPEG decode).

    1. zxing-cpp once on the copy, without rotation, inversion or pyramid retries
       (5-50 ms for 2000x1500); 2. the located pass on the copy (30-250 ms).
    Measured on 12 MP benchmark labels: 1 reads about half of them, 2 about 90 %
    of the rest; the full decode and the full-resolution passes
    (:func:`read_barcodes` with ``quick=False``) are left for small labels.
    ``scale`` maps the copy's pixels to the frame's, so that positions refer to
    the full frame. Stops like :func:`read_barcodes`. Never raises.
    ``within`` (boxes x, y, w, h in the frame's pixels: the label-like regions):
    the located pass reads only the patches whose middle lies in one of them
    (the locator also fires on skin texture, 3-5 patches on a plain photo);
    ``located`` still counts every patch found. ``with_located=False``: pass 1
    only (a middle picture, whose label-like regions are read fully instead).
    """
    budget = Budget(budget_s)
    enough = enough or bool
    try:
        grey = image if isinstance(image, np.ndarray) else to_grey(image)
    except Exception as exc:
        log.warning("barcode: cannot convert image for reading: %s", exc)
        return ReducedRead((), None)
    if grey.size == 0 or min(grey.shape) < 8:
        return ReducedRead((), None)
    found: list[Reading] = []
    located: int | None = None

    def quick(_budget: Budget) -> list[Reading]:
        return [_to_reading(r, _identity) for r in _zxing(grey, downscale=False, rotate=False, invert=False)]

    def located_pass(b: Budget) -> list[Reading]:
        nonlocal located
        patches = locate(grey)
        located = len(patches)
        if within is not None:
            patches = [p for p in patches if any(_middle_in(p[0], box, scale) for box in within)]
        return _pass_located(grey, b, patches, enough=enough)

    passes = (("quick", quick), ("located", located_pass)) if with_located else (("quick", quick),)
    for name, run in passes:
        try:
            found = _dedupe([*found, *(r for r in run(budget) if not is_partial_itf(r))])
        except Exception as exc:  # a reader's own error must not stop the card
            log.warning("barcode: pass %s (reduced) failed: %s", name, exc)
        if (found and enough(found)) or budget.spent():
            break
    return ReducedRead(tuple(_scaled(r, scale) for r in found), located)


@dataclasses.dataclass
class FrameLocator:
    """The located pass with the whole frame's locator, for one label-like region at a time.

    A region's crop is read with every pass (:func:`read_barcodes_fully`), but
    the locator then works on the crop: a grid and a threshold of the crop's
    own, so its patch around a tilted, blurred 1D code may cut the bars' ends or
    miss their angle, where the same locator on the whole frame reads it (a
    Code 39 label with no printed number at 28 degrees, archived so once). The
    whole frame's grey copy and its patches are made once per frame, on first
    use, and shared by the frame's regions.
    """

    image: Image.Image
    _grey: np.ndarray | None = None
    _patches: list[tuple[tuple[int, int, int, int], float]] | None = None

    def patches_in(self, box: tuple[int, int, int, int]) -> list[tuple[tuple[int, int, int, int], float]]:
        if self._patches is None:
            self._grey = to_grey(self.image)
            self._patches = locate(self._grey) if self._grey.size and min(self._grey.shape) >= 8 else []
        return [p for p in self._patches if _middle_in(p[0], box, 1.0)]

    def code_pattern_in(self, box: tuple[int, int, int, int]) -> bool:
        """Whether a barcode-like patch in ``box`` shows a 1D code's bars
        (:func:`looks_like_1d_code`), decoded or not."""
        patches = self.patches_in(box)
        assert self._grey is not None
        return any(looks_like_1d_code(self._grey[y0:y1, x0:x1]) for (x0, y0, x1, y1), _ in patches)

    def read_in(self, box: tuple[int, int, int, int], *, budget_s: float) -> FullRead:
        """The located pass on the frame's patches whose middle lies in ``box``
        (x, y, w, h, the frame's pixels). ``complete`` False: the budget stopped
        it before every patch was read. Never raises."""
        try:
            # The frame's patches are found once per frame (the first region pays
            # it), before the budget for reading this region's patches starts.
            patches = self.patches_in(box)
            if not patches:
                return FullRead((), True)
            assert self._grey is not None
            budget = StepBudget(budget_s)
            found = _dedupe(r for r in _pass_located(self._grey, budget, patches) if not is_partial_itf(r))
        except Exception as exc:  # a reader's own error must not stop the card
            log.warning("barcode: located pass on the frame failed: %s", exc)
            return FullRead((), False)
        return FullRead(tuple(found), bool(found) or not budget.stopped)


def read_patches(grey: np.ndarray, patches: Sequence[tuple[tuple[int, int, int, int], float]], *,
                 budget_s: float) -> FullRead:
    """The located pass on the given patches of ``grey`` (as :func:`locate` gives
    them), every one of them; ``complete`` False: the budget stopped it first. Never raises."""
    budget = Budget(budget_s)
    try:
        found = _dedupe(r for r in _pass_located(grey, budget, list(patches)) if not is_partial_itf(r))
    except Exception as exc:  # a reader's own error must not stop the card
        log.warning("barcode: located pass on given patches failed: %s", exc)
        return FullRead((), False)
    return FullRead(tuple(found), not budget.spent())


def _middle_in(patch: tuple[int, int, int, int], box: tuple[int, int, int, int], scale: float) -> bool:
    """Whether the middle of ``patch`` (x0, y0, x1, y1 on the copy) lies in ``box`` (the frame's)."""
    cx, cy = (patch[0] + patch[2]) / 2 * scale, (patch[1] + patch[3]) / 2 * scale
    return box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]


def read_quick(image: Image.Image) -> list[Reading]:
    """zxing-cpp once on ``image`` (the first of :func:`read_barcodes`' passes, no
    retries): a label's barcode in a crop of it, in milliseconds. Never raises."""
    try:
        grey = to_grey(image)
        if grey.size == 0 or min(grey.shape) < 8:
            return []
        return _dedupe(r for r in _pass_quick(grey) if not is_partial_itf(r))
    except Exception as exc:  # a reader's own error must not stop the card
        log.warning("barcode: quick pass failed: %s", exc)
        return []


def _scaled(r: Reading, scale: float) -> Reading:
    if scale == 1:
        return r
    x, y, w, h = r.position
    return dataclasses.replace(r, position=(int(x * scale), int(y * scale),
                                            max(1, int(round(w * scale))), max(1, int(round(h * scale)))))


def is_partial_itf(reading: Reading) -> bool:
    """ITF has no start/stop guard strong enough against a partial read: a tilted
    12-digit ITF label yields 6-digit pieces (benchmarks/identity.py), and a
    10-digit piece could form a valid, wrong personnummer. Patient labels in ITF
    carry the canonical 12 digits, so any other length is dropped."""
    return reading.symbology == "ITF" and not (len(reading.text) == 12 and reading.text.isdigit())


def decode_image_file(
    path: str | pathlib.Path,
    *,
    budget_s: float = 1.0,
    enough: Callable[[list[Reading]], bool] | None = None,
) -> list[Reading]:
    """Open one image file, turn it upright (EXIF orientation) and read it.

    Positions refer to the upright image. The full decode here; the identify
    stage's own path (``agent.card.identify.read_picture``) tries a half-size decode
    first. Never raises: a file that cannot be decoded gives ``[]`` (the scan
    stage has already judged it media).
    """
    budget = Budget(budget_s)
    try:
        with Image.open(path) as img:
            img.load()
            upright = _upright(img)
    except Exception as exc:
        log.warning("barcode: cannot decode %s: %s", path, exc)
        return []
    return read_barcodes(upright, budget_s=max(budget.left(), 0.2 * budget_s), enough=enough)


# --------------------------------------------------------------------------- images


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block: read the pixels as stored
        return img


def to_grey(image: Image.Image) -> np.ndarray:
    """An 8-bit grey array of any Pillow image (16-bit and float scaled, alpha on white)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            return np.zeros(a.shape[:2], np.uint8)
        lo, hi = float(a[finite].min()), float(a[finite].max())
        if hi <= lo:
            return np.zeros(a.shape[:2], np.uint8)
        a = np.where(finite, a, lo)
        return np.ascontiguousarray(((a - lo) * (255.0 / (hi - lo))).astype(np.uint8))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if mode != "L":
        image = image.convert("L")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _stretch(a: np.ndarray) -> np.ndarray:
    """Contrast stretch to the 1st..99th percentile.

    Of an 8-bit patch: the percentiles from its histogram and the stretch as a
    table of its 256 values, the very numbers ``np.percentile`` and a float
    image would give at a tenth of the cost (the located pass stretches every
    patch it cannot read otherwise: most of them print, not bars)."""
    if a.dtype != np.uint8 or a.size <= 64:
        lo, hi = np.percentile(a, (1, 99)) if a.size > 64 else (a.min(), a.max())
        if hi - lo < 8:
            return a
        out = (a.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return cast(np.ndarray, np.clip(out, 0, 255).astype(np.uint8))
    lo, hi = _percentiles_u8(a, (1, 99))
    if hi - lo < 8:
        return a
    # In float64, as the float32 image minus np.percentile's float64 scalars is.
    table = (np.arange(256, dtype=np.float64) - lo) * (255.0 / (hi - lo))
    return cast(np.ndarray, np.clip(table, 0, 255).astype(np.uint8)[a])


def _percentiles_u8(a: np.ndarray, qs: tuple[float, ...]) -> tuple[float, ...]:
    """``np.percentile(a, qs)`` (linear interpolation) of an 8-bit array, from its histogram."""
    cumulative = np.cumsum(np.bincount(a.ravel(), minlength=256))
    n = int(cumulative[-1])
    out = []
    for q in qs:
        rank = q / 100 * (n - 1)
        k = int(math.floor(rank))
        below = int(np.searchsorted(cumulative, k, side="right"))  # the k-th smallest value (0-based)
        above = int(np.searchsorted(cumulative, min(k + 1, n - 1), side="right"))
        out.append(below + (above - below) * (rank - k))
    return tuple(out)


# --------------------------------------------------------------------------- readers


# A reading before mapping to the original image: text, symbology, 4 corner points.
_Raw = tuple[str, str, list[tuple[float, float]]]


def _zxing(a: np.ndarray, *, binarizer: str = "LocalAverage",
           downscale: bool = True, rotate: bool = True, invert: bool = True) -> list[_Raw]:
    if zxingcpp is None:
        return []
    results = zxingcpp.read_barcodes(
        a, formats=_FORMATS, try_rotate=rotate, try_downscale=downscale, try_invert=invert,
        text_mode=zxingcpp.TextMode.Plain,
        binarizer=getattr(zxingcpp.Binarizer, binarizer),
    )
    out = []
    for r in results:
        if not r.valid:
            continue
        p = r.position
        pts = [(float(q.x), float(q.y)) for q in (p.top_left, p.top_right, p.bottom_right,
                                                   p.bottom_left)]
        sym = getattr(r.symbology, "name", None) or str(r.format)
        out.append((r.text, sym, pts))
    return out


def _zbar(a: np.ndarray) -> list[_Raw]:
    if pyzbar is None:
        return []
    h, w = a.shape
    symbols = [getattr(pyzbar.ZBarSymbol, t) for t in _ZBAR_TYPES]
    out = []
    for r in pyzbar.decode((a.tobytes(), w, h), symbols=symbols):
        try:
            text = r.data.decode("utf-8")
        except UnicodeDecodeError:
            text = r.data.decode("latin-1")
        x, y, rw, rh = r.rect
        pts = [(x, y), (x + rw, y), (x + rw, y + rh), (x, y + rh)]
        out.append((text, _ZBAR_TYPES.get(r.type, r.type), pts))
    return out


def _to_reading(raw: _Raw, transform: Callable[[float, float], tuple[float, float]],
                reader: str = "zxing-cpp") -> Reading:
    text, sym, pts = raw
    mapped = [transform(x, y) for x, y in pts]
    xs = [p[0] for p in mapped]
    ys = [p[1] for p in mapped]
    x0, y0 = int(math.floor(min(xs))), int(math.floor(min(ys)))
    x1, y1 = int(math.ceil(max(xs))), int(math.ceil(max(ys)))
    return Reading(text=text, method=Method.BARCODE, symbology=sym,
                   position=(max(x0, 0), max(y0, 0), max(x1 - x0, 1), max(y1 - y0, 1)), reader=reader)


def _identity(x: float, y: float) -> tuple[float, float]:
    return x, y


def _dedupe(readings: Iterable[Reading]) -> list[Reading]:
    """One reading per (symbology, text); no ZBar reading of a symbol zxing-cpp read.

    Where both read one symbol their texts can differ in interpretation (ZBar
    applies neither Code 39 full-ASCII nor Code 32), and a text only one reader's
    interpretation gives must not become a second "number" on the frame.
    """
    seen: dict[tuple[str, str], Reading] = {}
    for r in readings:
        seen.setdefault((r.symbology, r.text), r)
    kept = list(seen.values())
    zxing_boxes = [r.position for r in kept if r.reader != "zbar"]
    return [r for r in kept if r.reader != "zbar" or not any(_overlap(r.position, b) for b in zxing_boxes)]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# --------------------------------------------------------------------------- passes


def _passes(grey: np.ndarray, *, quick: bool = True,
            enough: Callable[[list[Reading]], bool] | None = None, located_last: bool = False
            ) -> list[tuple[str, Callable[[Budget], list[Reading]]]]:
    # Order by measured cost per read (benchmarks/identity.py, 12 MP): the quick pass
    # reads about half the labels in 5-50 ms; the located pass nearly all the rest in
    # 100-500 ms; the full-frame pass (200-1300 ms) rarely adds a read after those two.
    # On a label-sized crop (``located_last``) the full-frame pass and the rotations
    # cost 5-150 ms, the located pass up to seconds on a crop that is one big patch.
    located = ("located", lambda budget: _pass_located(grey, budget, enough=enough))
    passes = [
        ("quick", lambda budget: _pass_quick(grey)),
        ("full-frame", lambda budget: _pass_full(grey)),
        ("rotations", lambda budget: _pass_rotations(grey, budget)),
    ]
    passes = [*passes, located] if located_last else [passes[0], located, *passes[1:]]
    return passes if quick else passes[1:]


def _pass_quick(grey: np.ndarray) -> list[Reading]:
    """zxing-cpp once on a copy about 2000 px wide, no retries: most labels, cheaply."""
    factor = max(1, round(max(grey.shape) / _QUICK_SIDE))
    small = np.asarray(Image.fromarray(grey).reduce(factor)) if factor > 1 else grey
    raws = _zxing(small, downscale=False, rotate=False, invert=False)
    return [_scaled(_to_reading(r, _identity), grey.shape[1] / small.shape[1]) for r in raws]


def _pass_full(grey: np.ndarray) -> list[Reading]:
    return [_to_reading(r, _identity) for r in _zxing(grey)]


def _read_patch(patch: Image.Image, scale: float) -> tuple[list[_Raw], str]:
    """The harder readers on one small, upright patch, best first.

    As it is; sharpened (an unsharp mask undoes some of a camera's defocus,
    measured to read blurred small labels that nothing else read); contrast
    stretched with the global-histogram binarizer (uneven light); and ZBar on
    the sharpened patch.
    """
    plain = np.asarray(patch)
    found = _zxing(plain, downscale=False)
    if found:
        return found, "zxing-cpp"
    sharp = np.asarray(patch.filter(ImageFilter.UnsharpMask(radius=2 * scale, percent=150,
                                                            threshold=0)))
    found = _zxing(sharp, downscale=False)
    if found:
        return found, "zxing-cpp"
    found = _zxing(_stretch(plain), binarizer="GlobalHistogram", downscale=False)
    if found:
        return found, "zxing-cpp"
    return _zbar(sharp), "zbar"


def _pass_located(grey: np.ndarray, budget: Budget,
                  patches: list[tuple[tuple[int, int, int, int], float]] | None = None,
                  *, enough: Callable[[list[Reading]], bool] | None = None) -> list[Reading]:
    """Each located patch, best first, turned upright and read (:func:`_read_patch`),
    until the budget is spent or the patches read what ``enough`` accepts (the
    passes' own stopping rule, applied after each patch: the rest are mostly the
    label's print, which every reader fails on at 20-50 ms a patch)."""
    out: list[Reading] = []
    for box, angle in (locate(grey) if patches is None else patches)[:_MAX_PATCHES]:
        if budget.spent() or (enough is not None and out
                              and enough([r for r in out if not is_partial_itf(r)])):
            break
        x0, y0, x1, y1 = box
        crop = Image.fromarray(grey[y0:y1, x0:x1])
        # Enlarge small patches: zxing-cpp wants 2+ pixels per module.
        scale = 1.0
        if max(crop.size) < 600:
            scale = min(3.0, 600 / max(crop.size))
            crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                               Image.Resampling.BICUBIC)
        fill = int(np.median(np.asarray(crop)))
        turned = crop.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill) \
            if abs(angle) > 2 else crop
        found, reader = _read_patch(turned, scale)
        if not found:
            continue
        transform = _patch_transform(x0, y0, scale, crop.size, turned.size, angle if abs(angle) > 2 else 0)
        out.extend(_to_reading(r, transform, reader) for r in found)
    return out


def _patch_transform(x0: int, y0: int, scale: float, size: tuple[int, int],
                     turned: tuple[int, int], angle: float
                     ) -> Callable[[float, float], tuple[float, float]]:
    """Map a point in the turned, enlarged patch back to the original frame."""
    cw, ch = size
    tw, th = turned
    rad = math.radians(angle)
    cos, sin = math.cos(rad), math.sin(rad)

    def transform(x: float, y: float) -> tuple[float, float]:
        # Undo Image.rotate(angle, expand=True): it turns counter-clockwise
        # about the centre; the inverse turns clockwise.
        dx, dy = x - tw / 2, y - th / 2
        ux = cos * dx - sin * dy + cw / 2
        uy = sin * dx + cos * dy + ch / 2
        return x0 + ux / scale, y0 + uy / scale

    return transform


def _pass_rotations(grey: np.ndarray, budget: Budget) -> list[Reading]:
    h, w = grey.shape
    factor = 2 if max(h, w) > 2400 else 1
    base = Image.fromarray(grey)
    if factor > 1:
        base = base.reduce(factor)
    fill = int(np.median(grey[:: max(1, h // 64), :: max(1, w // 64)]))
    out: list[Reading] = []
    for angle in (12, -12, 24, -24):
        if budget.spent():
            break
        turned = base.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
        found = _zxing(np.asarray(turned))
        if found:
            t = _patch_transform(0, 0, 1 / factor, base.size, turned.size, angle)
            out.extend(_to_reading(r, t) for r in found)
            break
    return out


# --------------------------------------------------------------------------- locator


def locate(grey: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
    """Patches that look like a barcode, best first.

    Returns ``((x0, y0, x1, y1), angle)`` in full-resolution pixels, where
    ``angle`` (degrees, counter-clockwise, as ``Image.rotate`` takes it) turns
    the patch so that a 1D code's bars stand upright (0 when the patch shows
    no parallel bars: a 2D code, which zxing-cpp reads at any angle).

    Where: the edge energy of the image, on a copy about 1500 px wide, summed
    over cells; barcodes (1D or 2D) are the densest sharp black/white edges in
    a clinical photograph, so cells above a threshold are grouped into
    connected patches. How it is turned: see :func:`bar_angle`, measured at
    full resolution because a small label's bars alias away on the copy.
    """
    return [(box, angle if angle is not None else 0.0) for box, angle in _locate(grey)]


def _edge_energy(grey: np.ndarray, factor: int) -> np.ndarray | None:
    """Edge energy per pixel of each 3x3-cell window of ``grey`` reduced by ``factor``;
    a sharp black/white edge every few pixels gives thousands, skin texture tens to a
    few hundred. None: too small for the grid."""
    small = Image.fromarray(grey)
    if factor > 1:
        small = small.reduce(factor)
    a = np.asarray(small, dtype=np.float32)
    sh, sw = a.shape
    if sh < 3 * _CELL or sw < 3 * _CELL:
        return None
    gx, gy = _gradient(a)
    return cast(np.ndarray, _cell_sum(gx * gx + gy * gy, _CELL) / (9 * _CELL * _CELL))


def _locate(grey: np.ndarray, side: int | None = None, floor_of: np.ndarray | None = None
            ) -> list[tuple[tuple[int, int, int, int], float | None]]:
    """:func:`locate`, the angle None where the patch shows no parallel bars.
    ``side``: the long side of the frame ``grey`` was cut from (its grid, not the
    crop's). ``floor_of``: the picture whose edge energy sets the threshold (the
    same size as ``grey``), when not ``grey`` itself."""
    h, w = grey.shape
    factor = max(1, math.ceil((side or max(h, w)) / _LOCATOR_SIDE))
    per_px = _edge_energy(grey, factor)
    if per_px is None:
        return []
    reference = per_px if floor_of is None else _edge_energy(floor_of, factor)
    floor = max(600.0, float(np.percentile(reference if reference is not None else per_px, 99)) * 0.25)
    patches: list[tuple[float, tuple[int, int, int, int]]] = []
    for comp in _components(per_px > floor):
        if len(comp) < 3:
            continue
        ys = np.array([c[0] for c in comp])
        xs = np.array([c[1] for c in comp])
        score = float(per_px[ys, xs].sum())
        cy0, cy1 = int(ys.min()), int(ys.max()) + 1
        cx0, cx1 = int(xs.min()), int(xs.max()) + 1
        # Cells to full-resolution pixels, with a margin for the quiet zone
        # and for the ends of bars the threshold cut off.
        bw, bh = (cx1 - cx0) * _CELL * factor, (cy1 - cy0) * _CELL * factor
        m = int(0.3 * max(bw, bh)) + 3 * _CELL * factor
        x0 = max(0, cx0 * _CELL * factor - m)
        y0 = max(0, cy0 * _CELL * factor - m)
        x1 = min(w, cx1 * _CELL * factor + m)
        y1 = min(h, cy1 * _CELL * factor + m)
        patches.append((score, (x0, y0, x1, y1)))
    patches.sort(key=lambda p: -p[0])
    return [((x0, y0, x1, y1), bar_angle(grey[y0:y1, x0:x1])) for _, (x0, y0, x1, y1) in patches[:_MAX_PATCHES]]


# What a 1D code's bars look like once turned upright (looks_like_1d_code). Fitted
# on the identity benchmark's barcode-only labels mid-card (seed 0: of the 30 Code 128,
# Code 39 and ITF labels at +-30 degrees, blurred, 23 pass, among them the 3 that no
# pass decodes) against 90 frames of skin beside a paper wound ruler, striped cloth
# or a keyboard and the corpus's 21 ordinary photos (none pass). Fitted on those
# frames, so the margins are thin (fewest bars 15 against 14 on a keyboard, clean
# share 0.7 against 0.66 on a ruler): README, "Benchmarks"; docs/identity-reading.md.
CODE_MIN_BARS = 15  # a 12-digit Code 128 has 27 bars, ITF 34, Code 39 70
CODE_HEIGHT_RATIO = (0.07, 0.7)  # bar height / symbol width: a ruler's ticks are short
CODE_MIN_CLEAN = 0.4  # share of columns dark or light over the whole bar height
CODE_MIN_WIDTH_CV = 0.2  # bars and gaps of several widths; a ruler's or a cloth's repeat
# Share of the bars dark over (nearly) the whole bar block: a code's bars are all as
# tall; a ruler's mm, 5 mm and cm ticks are not (about half its "bars" are short).
CODE_MIN_FULL_HEIGHT = 0.8
# The same, dark against each row's neighbourhood (a code blurred until its bars are
# grey: Otsu puts them with the skin); a code 2.2 px blurred on a 2 MP card passes.
CODE_BLURRED_HEIGHT_RATIO = (0.15, 0.7)
CODE_BLURRED_MIN_CLEAN = 0.7
CODE_BLURRED_MIN_WIDTH_CV = 0.4
# A second code beside one read (undecoded_1d_codes) is judged in a crop full of the
# label's print, its printed number too, where no ruler or cloth lies: a line of
# digits has many strokes as tall as each other (two of 240 label frames' printed
# lines passed the test above, at a height ratio of 0.07 and 0.5-0.64 clean
# columns, 0.37-0.57 against each row's neighbourhood); a code's columns are clean
# (0.82-1.0 on the touching pairs of tests/test_identify_touching.py's sweep) and
# its bars taller. The spread of widths is the general test's (a blurred Code 39
# beside the code read: 0.31 against each row's neighbourhood, 0.11 by Otsu).
SECOND_CODE_MIN_CLEAN = 0.8
SECOND_CODE_HEIGHT_RATIO = (0.1, 0.15)  # least bar height / symbol width: by Otsu, against the neighbourhood


def looks_like_1d_code(patch: np.ndarray) -> bool:
    """Whether a grey patch shows a 1D barcode's bars, even one no reader decodes.

    Turned so that its parallel bars (:func:`bar_angle`) stand upright and
    binarised (Otsu), the longest band of rows crossing at least
    ``CODE_MIN_BARS`` dark runs is the bar block; across it, the longest stretch
    of narrow runs (a quiet zone, the label's edge or skin ends it) is the
    symbol. A code's symbol has many bars, bars as tall as a good share of its
    width, columns that are dark or light all the way down, and bars and gaps of
    several widths: a ruler's ticks are short and evenly spaced, a striped
    cloth repeats, print and foliage are not dark the whole height. Never raises.
    """
    try:
        return _looks_like_1d_code(patch)
    except Exception as exc:  # a malformed patch is no code; the caller's readers ran already
        log.warning("barcode: bar pattern check failed: %s", exc)
        return False


def _looks_like_1d_code(patch: np.ndarray) -> bool:
    angle = bar_angle(patch)
    if angle is None:
        return False
    turned = np.asarray(Image.fromarray(patch).rotate(angle, resample=Image.Resampling.BICUBIC, expand=True,
                                                      fillcolor=int(np.median(patch)))).astype(np.float32)
    if _code_shaped(code_features(turned, local=False), CODE_HEIGHT_RATIO, CODE_MIN_CLEAN, CODE_MIN_WIDTH_CV):
        return True
    # A code blurred so far that its bars are grey: stricter, a ruler's ticks pass the
    # local threshold too (their clean share 0.44-0.66, their spread 0.21-0.38).
    return _code_shaped(code_features(turned, local=True), CODE_BLURRED_HEIGHT_RATIO, CODE_BLURRED_MIN_CLEAN,
                        CODE_BLURRED_MIN_WIDTH_CV)


def _code_shaped(f: dict[str, float] | None, height_ratio: tuple[float, float], min_clean: float,
                 min_width_cv: float) -> bool:
    """Whether :func:`code_features` of a turned patch are a 1D code's, by the given thresholds
    (many bars, as tall as ``height_ratio`` of the symbol's width, clean columns, several widths)."""
    return bool(f is not None and f["bars"] >= CODE_MIN_BARS
                and height_ratio[0] <= f["height_ratio"] <= height_ratio[1]
                and f["clean"] >= min_clean and f["width_cv"] >= min_width_cv
                and f["full_height"] >= CODE_MIN_FULL_HEIGHT)


def undecoded_1d_codes(grey: np.ndarray, read: Sequence[tuple[int, int, int, int]], *, frame_side: int | None = None
                       ) -> list[tuple[tuple[int, int, int, int], float]]:
    """The located patches of ``grey`` (a label-like region's crop) that show a 1D
    code's bars (:func:`looks_like_1d_code`) once the codes already ``read`` there
    (x, y, w, h in ``grey``'s pixels) are painted over: a second code beside the one
    read, as two stickers that touch show it. ``((x0, y0, x1, y1), angle)`` as
    :func:`locate` gives them. Never raises: where the check itself fails, the
    whole crop is returned, as if a code were left there (unsure, so not "none").

    Each code read is painted over with the paper's brightness, grown along its long
    side by its quiet zone and across by a quarter of its length: a 1D code's
    position is where its scan lines decoded, which may be a band of its bars'
    height only, and its bars' stubs must not pass for a code (a sticker touching
    it is further away: its own print and margins lie between the two codes).
    ``frame_side``: the long side of the frame the crop was cut from; the locator
    works on the frame's grid (its cells, a ninth of the pixels on 12 MP), as on
    the whole frame."""
    try:
        painted = grey.copy()
        # The paper's brightness: a code painted over with skin's (the crop's median)
        # left a grey block whose edge under the label's print passed for bars.
        fill = int(_percentiles_u8(grey, (90,))[0]) if grey.size else 0
        h, w = grey.shape
        bars = _dark_strokes(grey) if read else None
        for x, y, cw, ch in read:
            along, across = (0.08 * cw, 0.25 * cw) if cw >= ch else (0.25 * ch, 0.08 * ch)
            x0, y0 = max(0, int(x - along)), max(0, int(y - across))
            x1, y1 = min(w, int(math.ceil(x + cw + along))), min(h, int(math.ceil(y + ch + across)))
            if x1 > x0 and y1 > y0:
                painted[y0:y1, x0:x1] = fill
            if bars is not None:
                _paint_strokes(painted, bars, (x, y, cw, ch), fill)
        found = []
        # The threshold is the crop's as it was, set by the code read: a second code in
        # the same photograph is as sharp (the same blur, light and print), while the
        # label's print, the most edged thing left once the code is painted over,
        # falls below it and costs no bar test (about 20 ms a patch).
        for box, angle in _locate(painted, frame_side, floor_of=grey):
            x0, y0, x1, y1 = box
            if angle is not None and _looks_like_second_code(_bars_upright(painted[y0:y1, x0:x1], angle)):
                found.append((box, angle))
        return found
    except Exception as exc:  # unsure whether a second code is there: the caller reads the whole crop
        log.warning("barcode: second-code check failed: %s", exc)
        return [((0, 0, grey.shape[1], grey.shape[0]), 0.0)] if grey.ndim == 2 else []


def _dark_strokes(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected strokes darker than their neighbourhood (bars, letters): labels and stats."""
    dark = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 51, 15)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    return labels, stats


def _paint_strokes(painted: np.ndarray, strokes: tuple[np.ndarray, np.ndarray],
                   position: tuple[int, int, int, int], fill: int) -> None:
    """Paint over every stroke that crosses a code's read position: its bars, whole.
    A 1D code read along one scan line has that line as its position, and a tilted
    code's bars reach well beyond it; each bar is a stroke the line crosses. A
    stroke larger than the code (bars joined to the sticker's shadowed edge) is
    left: painting it could paint a touching sticker's code too."""
    labels, stats = strokes
    x, y, w, h = position
    hit = np.unique(labels[max(0, y):y + max(1, h), max(0, x):x + max(1, w)])
    limit = 1.5 * max(w, h)
    for i in hit[hit > 0]:
        sx, sy, sw, sh, _ = stats[i]
        if sw <= limit and sh <= limit:
            window = labels[sy:sy + sh, sx:sx + sw] == i
            painted[sy:sy + sh, sx:sx + sw][window] = fill


def _bars_upright(patch: np.ndarray, angle: float) -> np.ndarray:
    """The patch turned by ``angle`` degrees counter-clockwise (its bars upright),
    expanded to hold it all, as float32: ``Image.rotate(angle, BICUBIC, expand=True)``
    by OpenCV's bicubic warp, at half its CPU time (the second-code test turns every
    patch of a label's print: about 20 ms per 12 MP label frame saved; the same
    decision on every patch of 40 benchmark label frames)."""
    h, w = patch.shape
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
    out_w, out_h = int(math.ceil(w * cos + h * sin)), int(math.ceil(w * sin + h * cos))
    turn[0, 2] += out_w / 2 - w / 2
    turn[1, 2] += out_h / 2 - h / 2
    turned = cv2.warpAffine(patch, turn, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=int(np.median(patch)))
    return cast(np.ndarray, turned.astype(np.float32))


def _looks_like_second_code(turned: np.ndarray) -> bool:
    """:func:`looks_like_1d_code`'s test with the second-code thresholds, on a turned patch."""
    return any(_code_shaped(code_features(turned, local=local), (min_height, CODE_HEIGHT_RATIO[1]),
                            SECOND_CODE_MIN_CLEAN, CODE_MIN_WIDTH_CV)
               for local, min_height in ((False, SECOND_CODE_HEIGHT_RATIO[0]), (True, SECOND_CODE_HEIGHT_RATIO[1])))


def code_features(turned: np.ndarray, *, local: bool) -> dict[str, float] | None:
    """The measures :func:`looks_like_1d_code` judges on a patch turned so that
    its bars stand upright (None: no band of rows crossing enough dark runs).
    ``local``: dark against each row's neighbourhood rather than the patch's
    Otsu threshold. Public for tuning the thresholds."""
    if local:
        # Dark against the row's own neighbourhood, after smoothing along the bars:
        # a blurred code's bars are grey, darker only than the gaps beside them.
        along = cv2.blur(turned, (1, 7))
        dark = along < cv2.blur(along, (31, 1)) - 4
    else:
        threshold, _ = cv2.threshold(turned.astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        dark = turned <= threshold  # cv2: above the threshold is light
    runs_per_row = (np.diff(dark.astype(np.int8), axis=1) == 1).sum(axis=1)
    top, bottom = _longest_band(runs_per_row >= CODE_MIN_BARS, gap=2)
    if bottom - top < 6:
        return None
    column = dark[top:bottom].mean(axis=0)
    profile = (column > 0.5).astype(np.int8)
    edges = np.concatenate([[0], np.nonzero(np.diff(profile))[0] + 1, [len(profile)]])
    widths = np.diff(edges)
    narrow = widths <= 6 * float(np.median(widths))
    first, last = _longest_band(narrow, gap=0)
    if last - first < 3:
        return None
    seg = slice(first, last)
    is_bar = profile[edges[:-1]][seg] == 1
    w = widths[seg].astype(np.float64)
    x0, x1 = int(edges[first]), int(edges[last])

    def spread(v: np.ndarray) -> float:
        return float(v.std() / v.mean()) if len(v) > 2 else 0.0

    bar_runs = [k for k in range(first, last) if profile[edges[k]] == 1]
    full_height = float(np.mean([column[edges[k]:edges[k + 1]].max() >= 0.75 for k in bar_runs])) \
        if bar_runs else 0.0
    return dict(bars=float(is_bar.sum()), height_ratio=(bottom - top) / max(1, x1 - x0), full_height=full_height,
                clean=float(((column[x0:x1] < 0.2) | (column[x0:x1] > 0.8)).mean()),
                width_cv=min(spread(w[is_bar]), spread(w[~is_bar])))


def _longest_band(flags: np.ndarray, *, gap: int) -> tuple[int, int]:
    """The longest run of True in ``flags`` (gaps of up to ``gap`` False closed): (start, end)."""
    best, start, misses, end = (0, 0), None, 0, 0
    for i, flag in enumerate([*flags.tolist(), *([False] * (gap + 1))]):
        if flag:
            start = i if start is None else start
            misses, end = 0, i + 1
        elif start is not None:
            misses += 1
            if misses > gap:
                if end - start > best[1] - best[0]:
                    best = (start, end)
                start, misses = None, 0
    return best


def bar_angle(patch: np.ndarray) -> float | None:
    """The angle that turns the patch's parallel bars upright, or None.

    Per cell of the patch, the structure tensor gives the direction of the
    gradient and how parallel the edges are (coherence). The bars' direction is
    the peak of a histogram of the cells' directions, weighted by energy and
    coherence, so that print or the label's edge beside the barcode do not
    pull it off. None when too few cells are parallel-edged (a 2D code, print).
    """
    ph, pw = patch.shape
    cell = 8
    if ph < 3 * cell or pw < 3 * cell:
        return None
    a = patch.astype(np.float32)
    gx, gy = _gradient(a)
    jxx, jyy, jxy = (_cell_sum(v, cell) for v in (gx * gx, gy * gy, gx * gy))
    energy = jxx + jyy
    per_px = energy / (9 * cell * cell)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.maximum(energy, 1e-6)
    good = (coherence > 0.8) & (per_px > 600)
    if good.sum() < 4:
        return None
    theta = np.degrees(0.5 * np.arctan2(2 * jxy[good], jxx[good] - jyy[good]))
    weight = (per_px[good] * coherence[good]).astype(np.float64)
    hist, edges = np.histogram(theta, bins=90, range=(-90, 90), weights=weight)
    # Circular smoothing over neighbouring bins (-90 and +90 are the same direction).
    smooth = hist + np.roll(hist, 1) + np.roll(hist, -1)
    peak = int(np.argmax(smooth))
    centre = (edges[peak] + edges[peak + 1]) / 2
    diff = (theta - centre + 90) % 180 - 90
    near = np.abs(diff) <= 5
    if weight[near].sum() < 0.3 * weight.sum():
        return None
    angle = centre + float(np.average(diff[near], weights=weight[near]))
    return float((angle + 90) % 180 - 90)


def _gradient(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, 1:-1] = a[:, 2:] - a[:, :-2]
    gy[1:-1, :] = a[2:, :] - a[:-2, :]
    return gx, gy


def _cell_sum(v: np.ndarray, cell: int) -> np.ndarray:
    """Sum over cells of ``cell`` pixels, then over each cell's 3x3 neighbourhood."""
    ch, cw = v.shape[0] // cell, v.shape[1] // cell
    v = v[: ch * cell, : cw * cell].reshape(ch, cell, cw, cell).sum(axis=(1, 3))
    p = np.pad(v, 1, mode="edge")
    return cast(np.ndarray, sum(p[i:i + ch, j:j + cw] for i in range(3) for j in range(3)))


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components of a small boolean grid."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    comps = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack = [(int(y), int(x))]
        seen[y, x] = True
        comp = []
        while stack:
            cy, cx = stack.pop()
            comp.append((cy, cx))
            for ny in (cy - 1, cy, cy + 1):
                for nx in (cx - 1, cx, cx + 1):
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        comps.append(comp)
    return comps
