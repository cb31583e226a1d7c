#!/usr/bin/env python3
"""Identity read rate, wrong reads and time per 12 MP frame (issue "Identity a clinic can trust", "Measured").

Generates seeded, reproducible synthetic frames of the kinds the product meets
and reads each one the way the agent does, on ONE core:

* **barcode labels** (default 500): a patient label photographed on skin in a
  12 MP scene (4000x3000), with a Code 128, Code 39, DataMatrix, QR, ITF or
  PDF417 barcode of the 12-digit number (symbologies in turn), the number and a
  name printed in one of several fonts; label sizes, rotations to +-30 degrees,
  blur, sensor noise, glare, perspective and JPEG quality drawn at random
  (:func:`tests.support.labels.render_label`, then a whole-scene perspective
  warp and JPEG encode here);
* **print-only labels** (default 100): the same without a barcode, so the
  agent's OCR fallback must read the printed number;
* **ultrasound overlay frames** (default 50): :func:`tests.support.labels.render_overlay`,
  read as the agent reads an image in ultrasound mode (barcode, then overlay OCR);
* **middle frames** (``--middle``, ``--barcode-only``, ``--plain``, ``--lookalike``):
  another patient's label in the middle of a card (barcode and print-only in
  turn; ``barcode-only``: a barcode and no printed number, six symbologies in
  turn, the same +-30 degrees and degradations, so OCR cannot help), plain skin
  photos, and skin beside a paper wound ruler, striped cloth or a keyboard (in
  turn: stripes and print that are no label), each read as a middle picture and
  judged by the decide stage; every label must refuse the card, no plain or
  look-alike frame may;

and then runs the real barcode corpus (``/work/shared/corpus/barcodes``) through
the agent's barcode reader, per folder, against zxing-cpp's own pass thresholds.

Per synthetic frame the truth is known. A label frame is read from its file
by the agent's own public function ``agent.card.identify.read_picture``, decode
included, exactly as ``identify()`` reads the first/last picture of a photo
series (``required=True``): the cheap barcode passes on a half-size decode, then
only if they read no number the full decode, the full-resolution passes and OCR
of the printed number. Ultrasound frames are decoded and read by
``agent.card.identify.read_ultrasound_frame``. Classification:

* read    -- a valid number was read and every valid number equals the truth;
* not read -- no valid number (the agent refuses: a re-shoot);
* WRONG   -- a valid number that is not the truth (must be 0; each one is
  printed with its seed and parameters, reproducible with ``--only``).

Timing is CPU time on ONE core (this process, tesseract included, plus any
children, ``getrusage``), decode included, and wall clock beside it: the process
is pinned with ``os.sched_setaffinity(0, {0})`` and ``OMP_THREAD_LIMIT=1`` is set
before anything is imported (tesseract runs in the process since issue 12's P2
work; as a program before, it inherited both). The targets are judged on CPU time, because other sessions load the
machine and the agent's budgets are CPU time too; the load average is printed.
Baselines measured in the same run on the same files: the full JPEG decode
alone, and a plain full-frame ``zxingcpp.read_barcodes(image)`` (default
options) on it.

    .venv/bin/python benchmarks/identity.py               # the issue's run (~25-30 min on 2 loaded cores)
    .venv/bin/python benchmarks/identity.py --quick       # ~60 images, ~3 min
    .venv/bin/python benchmarks/identity.py --only barcode:17,print:3 --seed 0 --keep /tmp/x
    .venv/bin/python benchmarks/identity.py --json out.json

Frames are generated ahead by a process pool (``--jobs``). While a frame is
timed the generators may only run on the OTHER CPUs (the timing CPU is left to
the reader; the pool gets every CPU while the timer waits for a frame), which
keeps the default run near 25 minutes on 2 cores; ``--no-overlap`` stops them
(SIGSTOP) while a frame is timed instead, for the cleanest timings (slower).
"""
from __future__ import annotations

import os
import sys

# Before numpy / Pillow / tesseract are imported: one core, one tesseract thread.
os.environ["OMP_THREAD_LIMIT"] = "1"
_ALL_CPUS = frozenset(os.sched_getaffinity(0))
_TIMING_CPU = 0 if 0 in _ALL_CPUS else min(_ALL_CPUS)
if __name__ == "__main__":
    os.sched_setaffinity(0, {_TIMING_CPU})

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zxingcpp  # noqa: E402

from agent.card import identify  # noqa: E402
from bildsluss_common.readers import barcode, ocr, regions  # noqa: E402
from agent.card.model import Method  # noqa: E402
from tests.support import cardgen, labels  # noqa: E402

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus")) / "barcodes"

SYMBOLOGIES = ("Code128", "Code39", "DataMatrix", "QRCode", "ITF", "PDF417")
FONTS = tuple(labels.FONTS)
NAMES = ("ANDERSSON, ANNA", "Tolvansson, Tolvan", "ÖSTLUND, ÅSA", "Eriksson, Erik", "LINDQVIST, KARIN",
         "Nilsson, Lars", "ÄNGQUIST, BJÖRN", "Johansson, Maria", "Berg, Eva", "SVENSSON, SVEN")
EXTRA_LINES = ("KIR AVD 12  2026-11-25", "Hudkliniken  2026-03-14", "", "Akutmott. 2026-01-07 08:15",
               "Ortopedi avd 41")
HOSPITALS = ("KAROLINSKA US", "SAHLGRENSKA", "SUS MALMÖ", "AKADEMISKA", "NUS UMEÅ")
OVERLAY_SIZES = ((640, 480), (800, 600), (1024, 768))

# Targets from the issue.
TARGET_BARCODE = 0.99
TARGET_PRINT = 0.95
TARGET_MEDIAN_S = 0.150
TARGET_P95_S = 0.400


# zxing-cpp's and zxing's own pass thresholds at 0 degrees (corpus MANIFEST.md), per folder:
# (images that must read, description). Folders not listed: all must read.
THRESHOLDS = {
    "zxing-cpp__datamatrix-3": (27, "zxing-cpp: 27/28 slow (26/28 fast)"),
    "zxing-cpp__code128-2": (13, "zxing-cpp: 13/14"),
    # zxing Java: 36/40 (39/40 try-harder) over all 40; our 18-image subset may miss
    # at most 4 (1 with try-harder). The stricter try-harder bound is used.
    "zxing__code128-2": (17, "zxing Java: 36/40, 39/40 try-harder; subset of 18 -> >= 17"),
    "zxing__code39-3": (None, "zxing Java: 17/17 -> all 6"),
}

log = logging.getLogger("benchmarks.identity")


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class Spec:
    """One synthetic frame: everything needed to render it again."""

    kind: str  # "barcode" | "print" | "overlay" | "middle" | "barcode-only" | "plain" | "lookalike"
    index: int
    seed: int  # the renderer's seed
    truth: str  # canonical 12 digits
    printed: str  # the number as printed on the label / overlay
    symbology: str | None = None
    font: str = "dejavu-sans"
    size: int = 0  # label width in scene pixels (labels), text px (overlays; 0 = renderer default)
    rotation: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    glare: float = 0.0
    perspective: float = 0.0  # max inward corner shift, fraction of the frame
    jpeg_quality: int | None = 90  # None: PNG (overlays)
    name: str = ""
    extra_line: str = ""
    coordination: bool = False
    form: str = "12"  # how the number is printed: "12" YYYYMMDD-NNNC, "10" YYMMDD-NNNC, "12c" 12 digits
    overlay_size: tuple[int, int] = (0, 0)
    grey: int = 235
    hospital: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.index}"

    def params(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("kind", "index", "truth"):
            d.pop(k)
        if self.kind != "overlay":
            for k in ("overlay_size", "grey", "hospital"):
                d.pop(k)
        return d


_KIND_CODE = {"barcode": 1, "print": 2, "overlay": 3, "middle": 4, "plain": 5, "barcode-only": 6, "lookalike": 7}


def _number(rng: np.random.Generator) -> tuple[str, bool]:
    """A valid personnummer (90 %) or samordningsnummer (10 %), printed YYYYMMDD-NNNC."""
    coordination = bool(rng.random() < 0.10)
    year = int(rng.integers(1930, 2024))
    born = dt.date(year, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    # Serial 001-999: 000 is never issued (numbers.validate refuses it).
    return cardgen.make_personnummer(born, int(rng.integers(1, 1000)), coordination=coordination), coordination


def _printed(number: str, form: str) -> str:
    if form == "10":
        return number[2:]
    if form == "12c":
        return number.replace("-", "")
    return number


def make_spec(kind: str, index: int, seed: int) -> Spec:
    """Spec ``index`` of ``kind``: a function of (seed, kind, index) only, so ids are stable."""
    rng = np.random.default_rng([seed, _KIND_CODE[kind], index])
    number, coordination = _number(rng)
    truth = cardgen.compact(number)
    form = str(rng.choice(["12", "10", "12c"], p=[0.7, 0.2, 0.1]))
    render_seed = int(rng.integers(0, 2**31 - 1))
    if kind == "overlay":
        w, h = OVERLAY_SIZES[int(rng.integers(0, len(OVERLAY_SIZES)))]
        text_px = int(rng.integers(max(11, h // 40), h // 24 + 1)) if rng.random() < 0.7 else 0
        return Spec(kind, index, render_seed, truth, _printed(number, form), font=str(rng.choice(FONTS)),
                    size=text_px, jpeg_quality=None if rng.random() < 0.5 else int(rng.integers(75, 96)),
                    name=str(rng.choice(NAMES)), coordination=coordination, form=form,
                    overlay_size=(w, h), grey=int(rng.integers(180, 256)), hospital=str(rng.choice(HOSPITALS)))
    symbology = SYMBOLOGIES[index % len(SYMBOLOGIES)] if kind == "barcode" else None
    if kind == "middle":  # another patient's label mid-card: barcode labels and print-only in turn
        symbology = SYMBOLOGIES[(index // 2) % len(SYMBOLOGIES)] if index % 2 == 0 else None
    if kind == "barcode-only":  # another patient's label mid-card with no printed number: OCR cannot help
        symbology = SYMBOLOGIES[index % len(SYMBOLOGIES)]
    spec = Spec(
        kind, index, render_seed, truth, _printed(number, form),
        symbology=symbology,
        font=str(rng.choice(FONTS)),
        size=int(round(math.exp(rng.uniform(math.log(450), math.log(1400))))),
        rotation=round(float(rng.uniform(-30, 30)), 2),
        blur=0.0 if rng.random() < 0.3 else round(float(rng.uniform(0.3, 2.0)), 2),
        noise=round(float(rng.uniform(0, 10)), 2),
        glare=0.0 if rng.random() < 0.6 else round(float(rng.uniform(0.3, 0.9)), 2),
        perspective=0.0 if rng.random() < 0.5 else round(float(rng.uniform(0.02, 0.08)), 3),
        jpeg_quality=int(rng.integers(55, 96)),
        name=str(rng.choice(NAMES)),
        extra_line=str(rng.choice(EXTRA_LINES)),
        coordination=coordination,
        form=form,
    )
    if kind == "lookalike":  # a ruler or a piece of cloth may span a good part of the frame
        spec = dataclasses.replace(spec, size=int(round(math.exp(rng.uniform(math.log(600), math.log(2600))))))
    return spec


# --------------------------------------------------------------------------- rendering


def _symbol_bitmap(symbology: str, text: str, module_px: int) -> Image.Image:
    """ITF and PDF417, which tests/support/labels.py does not render itself."""
    fmt = getattr(zxingcpp.BarcodeFormat, symbology)
    bmp = np.array(zxingcpp.create_barcode(text, fmt).to_image(scale=1, add_quiet_zones=False), dtype=np.uint8)
    img = Image.fromarray(bmp, "L")
    if symbology == "ITF":  # 1D, sized exactly as labels.py sizes Code 128 / Code 39
        w = img.width * module_px
        return img.resize((w, 1), Image.NEAREST).resize((w, max(module_px * 20, w // 5)), Image.NEAREST)
    return img.resize((img.width * module_px, img.height * module_px), Image.NEAREST)


@contextlib.contextmanager
def _label_symbology(symbology: str | None):
    """The ``symbology`` argument for render_label, rendering ITF / PDF417 in this process.

    labels.render_label knows Code128, Code39, QRCode and DataMatrix. For ITF and
    PDF417 its symbol renderer (``labels._barcode``) is replaced for the duration
    of one call, and "Code128" is passed so that the label lays the symbol out
    across the label's full width (as a 1D code; PDF417 is also that wide on real
    labels); the module size follows from the width exactly as for Code 128.
    """
    if symbology not in ("ITF", "PDF417"):
        yield symbology
        return
    original = labels._barcode
    labels._barcode = lambda _sym, text, module_px: _symbol_bitmap(symbology, text, module_px)
    try:
        yield "Code128"
    finally:
        labels._barcode = original


def _inside(quad: list[tuple[float, float]], pts: list[tuple[float, float]]) -> bool:
    """All points inside the convex quadrilateral (corners in order)."""
    for px, py in pts:
        signs = []
        for (ax, ay), (bx, by) in zip(quad, quad[1:] + quad[:1]):
            signs.append((bx - ax) * (py - ay) - (by - ay) * (px - ax))
        if not (all(s >= 0 for s in signs) or all(s <= 0 for s in signs)):
            return False
    return True


def _perspective(img: Image.Image, amount: float, label_box: tuple[int, int, int, int],
                 rng: np.random.Generator) -> Image.Image:
    """A camera not square to the skin: a homography of the whole scene.

    The source quadrilateral's corners move inward by up to ``amount`` of the frame
    (so no fill is needed), shrunk until it still holds the whole label.
    """
    w, h = img.size
    jit = rng.uniform(0, 1, size=(4, 2))
    x0, y0, lw, lh = label_box
    corners = [(x0, y0), (x0 + lw, y0), (x0 + lw, y0 + lh), (x0, y0 + lh)]
    a = amount
    for _ in range(8):
        ul = (jit[0, 0] * a * w, jit[0, 1] * a * h)
        ll = (jit[1, 0] * a * w, h - jit[1, 1] * a * h)
        lr = (w - jit[2, 0] * a * w, h - jit[2, 1] * a * h)
        ur = (w - jit[3, 0] * a * w, jit[3, 1] * a * h)
        if _inside([ul, ur, lr, ll], corners):
            break
        a /= 2
    else:
        return img
    quad = (*ul, *ll, *lr, *ur)
    return img.transform((w, h), Image.QUAD, quad, Image.BICUBIC)


# What a "lookalike" middle frame shows beside the skin, in turn: stripes that are no barcode.
LOOKALIKES = labels.LOOKALIKES


def _render_lookalike(spec: Spec) -> Image.Image:
    return labels.render_lookalike(LOOKALIKES[spec.index % len(LOOKALIKES)], spec.size, spec.rotation, spec.blur,
                                   spec.seed)


def render(spec: Spec) -> Image.Image:
    """The frame as the camera (or ultrasound machine) would store it, encoded and decoded once."""
    if spec.kind == "plain":  # an ordinary clinical photograph: skin, a lesion, hairs; no label
        rng = np.random.default_rng(spec.seed)
        return cardgen._photograph(cardgen._scene(*labels.SCENE_12MP, rng), rng, spec.blur)
    if spec.kind == "lookalike":  # skin beside a wound ruler, striped cloth or a keyboard; no label
        return _render_lookalike(spec)
    if spec.kind == "overlay":
        w, h = spec.overlay_size
        img = labels.render_overlay(spec.name, spec.printed, "2026-03-14", w, h, spec.seed, font_name=spec.font,
                                    text_px=spec.size or None, grey=spec.grey, hospital=spec.hospital).image
        return img
    with _label_symbology(spec.symbology) as sym:
        rl = labels.render_label(
            spec.printed, spec.name, symbology=sym,
            barcode_text=spec.truth if spec.symbology else None,  # the 12 digits, all symbologies
            font_name=spec.font, size=spec.size, rotation=spec.rotation, blur=spec.blur,
            noise=spec.noise, glare=spec.glare, jpeg_quality=None, extra_line=spec.extra_line,
            seed=spec.seed, printed_number=spec.kind != "barcode-only",
        )
    img = rl.image
    if spec.perspective > 0:
        img = _perspective(img, spec.perspective, rl.truth.label_box, np.random.default_rng(spec.seed))
    return img


def _render_to_file(args: tuple[Spec, str]) -> tuple[str, str, float]:
    spec, folder = args
    t0 = time.perf_counter()
    img = render(spec)
    path = pathlib.Path(folder) / f"{spec.kind}_{spec.index:04d}.{'png' if spec.jpeg_quality is None else 'jpg'}"
    if spec.jpeg_quality is None:
        img.save(path, "PNG")
    else:
        img.save(path, "JPEG", quality=int(spec.jpeg_quality))
    return spec.id, str(path), time.perf_counter() - t0


def _kept_frame(folder: pathlib.Path, spec: Spec) -> pathlib.Path | None:
    """The file a --keep run wrote for ``spec`` (same name as generated), or None."""
    path = folder / f"{spec.kind}_{spec.index:04d}.{'png' if spec.jpeg_quality is None else 'jpg'}"
    return path if path.is_file() else None


def _pool_init() -> None:
    os.sched_setaffinity(0, _ALL_CPUS)  # generation may use every core; timing never runs meanwhile


# --------------------------------------------------------------------------- instrumentation


class Stages:
    """Wall time per reader stage, and which barcode pass read (wrappers, no behaviour change)."""

    def __init__(self) -> None:
        self.reset()
        self._wrap(barcode, "to_grey", "grey")
        self._wrap(identify, "open_reduced", "decode_reduced")
        self._wrap(identify, "open_upright", "decode_full")
        self._wrap(barcode, "read_reduced", "bc_reduced")
        self._wrap(barcode, "_pass_quick", "bc_quick")
        self._wrap(barcode, "_pass_full", "bc_full")
        self._wrap(barcode, "_pass_located", "bc_located")
        self._wrap(barcode, "_pass_rotations", "bc_rotations")
        self._wrap(barcode, "locate", "bc_locate")
        self._wrap(ocr, "_ocr_words", "tesseract")
        self._wrap(ocr, "read_printed_numbers", "ocr_printed")
        self._wrap(ocr, "read_label_text", "ocr_label")
        self._wrap(regions, "find_label_regions", "regions")

    def reset(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.read_by: str | None = None
        self.inside_reduced = False
        self.found = 0  # label-like regions found (middle frames)

    def _wrap(self, module, attr: str, key: str) -> None:
        fn = getattr(module, attr)

        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            outer = key == "bc_reduced"
            self.inside_reduced |= outer
            try:
                out = fn(*a, **kw)
            finally:
                self.t[key] += time.perf_counter() - t0
                self.calls[key] += 1
                if outer:
                    self.inside_reduced = False
            if key == "regions":
                self.found += len(out)
            if key.startswith("bc_") and key != "bc_locate" and (outer or not self.inside_reduced) and (
                    out.readings if outer else out) and self.read_by is None:
                self.read_by = key[3:]
            return out

        setattr(module, attr, wrapper)


# --------------------------------------------------------------------------- reading as the agent does


def agent_read_picture(path: str, budget_s: float) -> list:
    """The agent's own reading of a picture file (public ``agent.card.identify.read_picture``),
    decode included, as for the first/last picture of a series: the cheap barcode passes
    on a half-size decode, then the full decode, the full-resolution passes and OCR."""
    return identify.read_picture(path, "frame", required=True, budget_s=budget_s)


def _has_identity(readings) -> bool:
    return any(identify.is_identity(e) for r in readings for e in identify.evidence_from_reading(r, ""))


def agent_read_ultrasound(image: Image.Image, budget_s: float) -> list:
    """The agent's own reading of an ultrasound image (public ``agent.card.identify.read_ultrasound_frame``)."""
    return identify.read_ultrasound_frame(image, "frame", 0, budget_s=budget_s)


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def classify(evidence: list, truth: str) -> tuple[str, list[str], str | None]:
    """("read" | "not_read" | "wrong", wrong numbers, method that read the truth)."""
    valid = {e.patient_id for e in evidence if e.patient_id}
    wrong = sorted(valid - {truth})
    if wrong:
        return "wrong", wrong, None
    if truth in valid:
        methods = {e.method for e in evidence if e.patient_id == truth}
        return "read", [], "barcode" if Method.BARCODE in methods else "ocr"
    return "not_read", [], None


def measure(spec: Spec, path: str, budget_s: float, stages: Stages, baseline: bool = True) -> dict:
    """One frame: the agent's reading, decode included (CPU and wall), then (``baseline``)
    the baselines on the same file: the full decode alone and plain full-frame zxing-cpp."""
    stages.reset()
    c0, t0 = _cpu(), time.perf_counter()
    if spec.kind == "overlay":
        image = identify.open_upright(path)
        evidence = agent_read_ultrasound(image, budget_s)
        image.close()
    elif spec.kind in MIDDLE_KINDS:
        evidence = identify.read_picture(path, "frame", required=False, budget_s=budget_s)
    else:
        evidence = agent_read_picture(path, budget_s)
    t_total, cpu_total = time.perf_counter() - t0, _cpu() - c0
    if spec.kind in MIDDLE_KINDS:
        return middle_record(spec, evidence, t_total, cpu_total, stages)
    fallback = stages.calls["ocr_printed"] > 0
    outcome, wrong, method = classify(evidence, spec.truth)
    barcode_ok = any(e.patient_id == spec.truth and e.method == Method.BARCODE for e in evidence)
    rec = dict(id=spec.id, kind=spec.kind, symbology=spec.symbology, outcome=outcome, wrong=wrong,
               method=method, barcode_ok=barcode_ok, fallback=fallback,
               invalid_seen=any(e.invalid for e in evidence),
               unread=_unread(evidence),  # an unread label beside the one read: the card is refused
               texts=sorted({e.text for e in evidence if identify.is_identity(e)}),
               t_total=t_total, cpu_total=cpu_total,
               stages=dict(stages.t), read_by=stages.read_by, params=spec.params(), truth=spec.truth)
    if spec.kind != "overlay" and baseline:
        # Baselines on the same file: the full decode alone, and plain full-frame zxing-cpp
        # (default options) on that decode.
        c0, t0 = _cpu(), time.perf_counter()
        with Image.open(path) as im:
            im.load()
            image = im.copy()
        rec["t_decode"], rec["cpu_decode"] = time.perf_counter() - t0, _cpu() - c0
        c0, t0 = _cpu(), time.perf_counter()
        plain = zxingcpp.read_barcodes(image)
        rec["t_zxing"], rec["cpu_zxing"] = time.perf_counter() - t0, _cpu() - c0
        rec["zxing_ok"] = any(r.text == spec.truth for r in plain)
        image.close()
    return rec


# --------------------------------------------------------------------------- middle frames (issue 12)

MIDDLE_KINDS = ("middle", "barcode-only", "plain", "lookalike")
# The card's own patient, on its first and last picture (the middle frame's label is another's).
CARD_PATIENT = "191212121212"
# Ordinary photographs of the corpus read as middle frames (no label; decodable, 300 px or more).
CORPUS_PHOTOS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus")) / "exif" / "exif-samples"


def card_decision(evidence: list):
    """What the decide stage makes of a three-picture photo card whose first and last
    picture show the card's patient by barcode and whose middle picture read ``evidence``."""
    from agent.card.decide import decide
    from agent.card.identify import IdentifyResult
    from agent.card.model import Evidence, MediaFile, MediaKind, Mode, ScanResult

    paths = ("first.jpg", "frame", "last.jpg")
    media = tuple(MediaFile(path=pathlib.Path(p), relative_path=p, kind=MediaKind.IMAGE, media_type="image/jpeg",
                            size=1, sha256="", mtime_ns=0) for p in paths)
    ends = [Evidence(relative_path=p, frame=0, method=Method.BARCODE, text=CARD_PATIENT, patient_id=CARD_PATIENT)
            for p in (paths[0], paths[2])]
    identified = IdentifyResult(evidence=(ends[0], *evidence, ends[1]), examined=paths)
    return decide(ScanResult(root=pathlib.Path("."), media=media, skipped=()), identified, Mode.PHOTO, expect=None)


def middle_record(spec: Spec, evidence: list, t_total: float, cpu_total: float, stages: Stages) -> dict:
    """A middle frame: is the card refused (a label of another patient) or archived (a plain photo)?"""
    decision = card_decision(evidence)
    valid = {e.patient_id for e in evidence if e.patient_id}
    how = ("barcode" if any(e.patient_id == spec.truth and e.method == Method.BARCODE for e in evidence)
           else "ocr" if spec.truth in valid
           else "unread_label" if any(e.method == Method.UNREAD_LABEL for e in evidence)
           else "invalid" if any(e.invalid for e in evidence) else None)
    return dict(id=spec.id, kind=spec.kind, symbology=spec.symbology, truth=spec.truth,
                refused=not decision.accepted, reason=decision.reason.value if decision.reason else None,
                how=how, wrong=sorted(valid - {spec.truth}), why=_unread(evidence), t_total=t_total,
                cpu_total=cpu_total,
                regions=stages.calls["regions"], found=stages.found, ocr_label=stages.calls["ocr_label"],
                decoded_full=stages.calls["decode_full"] > 0, stages=dict(stages.t), params=spec.params())


def _unread(evidence: list) -> list[str]:
    """Why the frame's label-like regions count as unread labels (the evidence's texts)."""
    return sorted({e.text for e in evidence if e.method == Method.UNREAD_LABEL})


def _bars_only(r: dict) -> bool:
    """A card refused only because a label-like region showed bars no pass decoded."""
    return r["refused"] and r["why"] == [identify.UNDECODED_BARS]


def run_plain_corpus(budget_s: float, stages: Stages) -> list[dict]:
    """The corpus's ordinary photographs (no label) as middle frames: what the label search costs."""
    out = []
    for p in sorted(CORPUS_PHOTOS.glob("**/*")):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".tif", ".tiff"):
            continue
        with Image.open(p) as im:
            if max(im.size) < 300:
                continue
        stages.reset()
        c0, t0 = _cpu(), time.perf_counter()
        evidence = identify.read_picture(p, "frame", required=False, budget_s=budget_s)
        t, c = time.perf_counter() - t0, _cpu() - c0
        out.append(dict(id=str(p.relative_to(CORPUS_PHOTOS)), refused=not card_decision(evidence).accepted,
                        why=_unread(evidence),
                        regions=stages.calls["regions"], found=stages.found, ocr_label=stages.calls["ocr_label"],
                        decoded_full=stages.calls["decode_full"] > 0, t_total=t, cpu_total=c))
    return out


def report_middle(records: list[dict], corpus_plain: list[dict] | None) -> tuple[dict, list]:
    """The middle-frame figures and targets (issue 12)."""
    out: dict = {}
    targets = []
    mid = [r for r in records if r["kind"] == "middle"]
    only = [r for r in records if r["kind"] == "barcode-only"]
    plain = [r for r in records if r["kind"] == "plain"]
    lookalike = [r for r in records if r["kind"] == "lookalike"]
    if mid or only:
        print()
        print("== Middle-frame labels: another patient's label in the middle of a card (read as a middle "
              "picture, then decide on a card whose first/last show the card's patient)")
        print(f"{'group':<22}{'n':>5}{'refused':>9}{'ARCHIVED':>10}{'by barcode':>12}{'by OCR':>8}"
              f"{'unread lbl':>12}{'invalid':>9}{'wrong':>7}{'CPU med':>9}{'p95 ms':>8}")
        for name, rs in (("barcode labels", [r for r in mid if r["symbology"]]),
                         ("print-only labels", [r for r in mid if not r["symbology"]]), ("all", mid),
                         *((f"barcode-only {sym}", [r for r in only if r["symbology"] == sym]) for sym in SYMBOLOGIES),
                         ("barcode-only, all", only)):
            if not rs:
                continue
            tc = [r["cpu_total"] for r in rs]
            c = Counter(r["how"] for r in rs)
            print(f"{name:<22}{len(rs):>5}{sum(r['refused'] for r in rs):>9}{sum(not r['refused'] for r in rs):>10}"
                  f"{c['barcode']:>12}{c['ocr']:>8}{c['unread_label']:>12}{c['invalid']:>9}"
                  f"{sum(bool(r['wrong']) for r in rs):>7}{_ms(statistics.median(tc)):>9}{_ms(_q(tc, .95)):>8}")
        archived = [r for r in [*mid, *only] if not r["refused"]]
        for r in archived:
            print(f"   ARCHIVED {r['id']} truth {r['truth']} {json.dumps(r['params'], ensure_ascii=False)}")
        for key, rs in (("middle", mid), ("barcode_only", only)):
            if not rs:
                continue
            lost = [r["id"] for r in rs if not r["refused"]]
            bars = [r["id"] for r in rs if _bars_only(r)]
            print(f"   {key}: refused only for undecoded bars in a label-like region: {len(bars)} {bars or ''}")
            out[key] = dict(n=len(rs), refused=sum(r["refused"] for r in rs), archived=lost, refused_bars_only=bars,
                            how=dict(Counter(r["how"] for r in rs)),
                            reasons=dict(Counter(r["reason"] for r in rs)))
            what = "middle-frame labels" if key == "middle" else "barcode-only labels mid-card"
            targets.append((f"{what}: every card refused, 0 archived", f"{len(lost)} archived of {len(rs)}",
                            not lost))
    for name, rs in (("generated skin photos (12 MP)", plain),
                     *((f"skin beside a {what} (12 MP)",
                        [r for r in lookalike if int(r["id"].split(":")[1]) % len(LOOKALIKES) == k])
                       for k, what in enumerate(LOOKALIKES)),
                     ("corpus photos", corpus_plain or [])):
        if not rs:
            continue
        print()
        print(f"== Ordinary middle frames, no label: {name}")
        tc = [r["cpu_total"] for r in rs]
        found = sum(r["found"] > 0 for r in rs)
        ocr_n = sum(r["ocr_label"] > 0 for r in rs)
        refused = [r["id"] for r in rs if r["refused"]]
        print(f"   {len(rs)} frames: a label-like region found on {found}, OCR of a crop on {ocr_n}, "
              f"full decode on {sum(r['decoded_full'] for r in rs)}, card refused {len(refused)} {refused or ''}")
        bars = [r["id"] for r in rs if _bars_only(r)]
        print(f"   of those refused only for undecoded bars in a label-like region: {len(bars)} {bars or ''}; "
              f"why: {dict(Counter(w for r in rs for w in r['why']))}")
        print(f"   CPU per frame (decode included): median {_ms(statistics.median(tc)).strip()} ms, "
              f"p95 {_ms(_q(tc, .95)).strip()} ms, mean {_ms(statistics.mean(tc)).strip()} ms")
        out[name] = dict(n=len(rs), with_region=found, ocr=ocr_n, refused=refused, refused_bars_only=bars,
                         cpu_median=statistics.median(tc), cpu_p95=_q(tc, .95), cpu_mean=statistics.mean(tc))
        if name.startswith("generated"):
            targets.append(("plain skin middle frames: 0 refused", f"{len(refused)} refused of {len(rs)}", not refused))
    if lookalike:
        refused = [r["id"] for r in lookalike if r["refused"]]
        targets.append(("rulers, stripes, keyboards mid-card: 0 refused", f"{len(refused)} refused of {len(lookalike)}",
                        not refused))
    regions_t = [r["stages"].get("regions", 0.0) for r in [*mid, *plain]]
    if regions_t:
        print(f"   label-region search (find_label_regions) wall per frame: median {_ms(statistics.median(regions_t)).strip()} ms, "
              f"max {_ms(max(regions_t)).strip()} ms")
        out["region_search_ms"] = dict(median=1000 * statistics.median(regions_t), max=1000 * max(regions_t))
    return out, targets


# --------------------------------------------------------------------------- corpus


def _expected(image: pathlib.Path) -> tuple[str | None, bytes | None]:
    txt = image.with_suffix(".txt")
    if txt.is_file():
        return txt.read_bytes().decode("utf-8"), None
    binf = image.with_suffix(".bin")
    if binf.is_file():
        return None, binf.read_bytes()
    return None, None


def _matches(text: str, exp_text: str | None, exp_bin: bytes | None) -> bool:
    if exp_text is not None:
        return text == exp_text
    if exp_bin is not None:
        try:
            return text.encode("latin-1") == exp_bin
        except UnicodeEncodeError:
            return False
    return False


def run_corpus(budget_s: float, stages: Stages) -> dict:
    """Every corpus image through the agent's barcode reader (budget as on a required frame)."""
    folders: dict[str, dict] = {}
    images = sorted(p for p in CORPUS.glob("*/*/*")
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"))
    for p in images:
        folder = p.parent.name
        f = folders.setdefault(folder, dict(symbology=p.parent.parent.name, n=0, agent=0, zxing=0,
                                            wrong=[], other=[], missed=[], times=[], no_truth=[]))
        exp_text, exp_bin = _expected(p)
        if exp_text is None and exp_bin is None:
            f["no_truth"].append(p.name)
            continue
        f["n"] += 1
        image = identify.open_upright(str(p))
        stages.reset()
        t0 = time.perf_counter()
        readings = barcode.read_barcodes(image, budget_s=budget_s * identify.BARCODE_SHARE, enough=_has_identity)
        f["times"].append(time.perf_counter() - t0)
        ok = any(_matches(r.text, exp_text, exp_bin) for r in readings)
        f["agent"] += ok
        if not ok:
            f["missed"].append(p.name)
        plain = zxingcpp.read_barcodes(image)
        f["zxing"] += any(_matches(r.text, exp_text, exp_bin) for r in plain)
        plain_texts = {r.text for r in plain}
        for r in readings:
            if _matches(r.text, exp_text, exp_bin):
                continue
            entry = dict(file=p.name, symbology=r.symbology, text=r.text,
                         expected=exp_text if exp_text is not None else repr(exp_bin[:16]),
                         identity=bool(identify.is_identity(identify.evidence_from_reading(r, p.name)[0])))
            # A second symbol in the photo (plain zxing-cpp reads it too) is not a wrong text.
            f["other" if r.text in plain_texts else "wrong"].append(entry)
        image.close()
    return folders


# --------------------------------------------------------------------------- report


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _ms(x: float) -> str:
    return "   n/a" if x != x else f"{x * 1000:6.0f}"


def _pct(a: int, n: int) -> str:
    return "   n/a" if n == 0 else f"{100 * a / n:5.1f}%"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _bins(records: list[dict]) -> list[tuple[str, str, list[dict]]]:
    def b(name, fn, edges):
        out = []
        for lo, hi in zip(edges, edges[1:]):
            sel = [r for r in records if lo <= fn(r) < hi]
            out.append((name, f"[{lo:g},{hi:g})", sel))
        return out

    p = lambda r: r["params"]  # noqa: E731
    rows = []
    rows += b("size px", lambda r: p(r)["size"], [0, 600, 800, 1000, 1401])
    rows += b("|rotation|", lambda r: abs(p(r)["rotation"]), [0, 10, 20, 30.01])
    rows += b("blur", lambda r: p(r)["blur"], [0, 0.001, 1, 1.5, 2.01])
    rows += b("noise", lambda r: p(r)["noise"], [0, 5, 10.01])
    rows += b("glare", lambda r: p(r)["glare"], [0, 0.001, 0.6, 0.91])
    rows += b("perspective", lambda r: p(r)["perspective"], [0, 0.001, 0.05, 0.081])
    rows += b("jpeg q", lambda r: p(r)["jpeg_quality"], [55, 70, 85, 96])
    for font in FONTS:
        rows.append(("font", font, [r for r in records if p(r)["font"] == font]))
    for form in ("12", "10", "12c"):
        rows.append(("printed form", form, [r for r in records if p(r)["form"] == form]))
    return rows


def report(records: list[dict], corpus: dict | None, args, meta: dict) -> dict:
    out: dict = {"meta": meta}
    bc = [r for r in records if r["kind"] == "barcode"]
    pr = [r for r in records if r["kind"] == "print"]
    ov = [r for r in records if r["kind"] == "overlay"]
    labels12 = bc + pr
    print()
    print("== Read rate (agent per-frame reading: barcode first, OCR fallback; synthetic, truth known)")
    print(f"{'group':<22}{'n':>5}{'read':>8}{'rate':>8}{'not read':>10}{'WRONG':>7}"
          f"{'by barcode':>12}{'by OCR':>8}{'plain zxing':>13}")
    rates = {}

    def line(name, rs, show_zx=True):
        n = len(rs)
        read = sum(r["outcome"] == "read" for r in rs)
        wrong = sum(r["outcome"] == "wrong" for r in rs)
        byb = sum(r["barcode_ok"] and r["outcome"] == "read" for r in rs)
        byo = sum(r["method"] == "ocr" for r in rs)
        based = [r for r in rs if "zxing_ok" in r]  # the frames the baseline ran on
        zx = sum(r["zxing_ok"] for r in based)
        zx_s = _pct(zx, len(based)) if show_zx else "      "
        print(f"{name:<22}{n:>5}{read:>8}{_pct(read, n):>8}{n - read - wrong:>10}{wrong:>7}"
              f"{_pct(byb, n):>12}{_pct(byo, n):>8}{zx_s:>13}")
        rates[name] = dict(n=n, read=read, wrong=wrong, rate=read / n if n else None,
                           by_barcode=byb, by_ocr=byo, plain_zxing=zx if show_zx else None,
                           plain_zxing_n=len(based))

    for sym in SYMBOLOGIES:
        line(f"barcode {sym}", [r for r in bc if r["symbology"] == sym])
    line("barcode labels, all", bc)
    line("print-only labels", pr)
    line("ultrasound overlays", ov, show_zx=False)
    out["read_rates"] = rates

    print()
    print("== Read rate per method")
    fb = [r for r in labels12 if r["fallback"]]
    m = {
        "barcode (barcode labels, barcode reader alone)": (sum(r["barcode_ok"] for r in bc), len(bc)),
        "OCR fallback (every 12 MP frame where it ran)": (sum(r["method"] == "ocr" for r in fb), len(fb)),
        "  of which barcode labels the barcode missed": (
            sum(r["method"] == "ocr" for r in fb if r["kind"] == "barcode"),
            sum(1 for r in fb if r["kind"] == "barcode")),
        "  of which print-only labels": (sum(r["method"] == "ocr" for r in pr), len(pr)),
        "overlay OCR (ultrasound frames)": (sum(r["outcome"] == "read" for r in ov), len(ov)),
    }
    for k, (a, n) in m.items():
        print(f"  {k:<52}{a:>5}/{n:<5}{_pct(a, n):>8}")
    out["methods"] = {k: dict(read=a, n=n) for k, (a, n) in m.items()}
    inv = sum(r["invalid_seen"] and r["outcome"] != "read" for r in records)
    print(f"  not read but an INVALID number-like text was seen (agent says INVALID_ID): {inv}")
    unread = [r for r in labels12 if r.get("unread")]
    print(f"  one label, yet an unread label seen beside it (its card refused UNREADABLE_LABEL_MID_CARD): "
          f"{len(unread)}" + "".join(f"\n    {r['id']}: {'; '.join(r['unread'])}" for r in unread))
    out["label_frames_with_unread_label"] = [dict(id=r["id"], why=r["unread"]) for r in unread]

    wrong = [r for r in records if r["outcome"] == "wrong"]
    print()
    print(f"== WRONG reads (a valid number that is not the truth): {len(wrong)}")
    for r in wrong:
        print(f"  {r['id']} truth {r['truth']} read {r['wrong']} texts {r['texts']}  "
              f"reproduce: --seed {args.seed} --only {r['id']}  params {json.dumps(r['params'], ensure_ascii=False)}")
    out["wrong"] = [dict(id=r["id"], truth=r["truth"], read=r["wrong"], texts=r["texts"], params=r["params"])
                    for r in wrong]

    print()
    print("== Where the readers miss (synthetic 12 MP labels; rate = agent read, barcode = barcode reader alone)")
    for title, rs in (("barcode labels", bc), ("print-only labels", pr)):
        if not rs:
            continue
        print(f"  {title}:")
        for name, b, sel in _bins(rs):
            if not sel:
                continue
            n = len(sel)
            read = sum(r["outcome"] == "read" for r in sel)
            byb = sum(r["barcode_ok"] for r in sel)
            extra = f"  barcode {_pct(byb, n)}" if title == "barcode labels" else ""
            print(f"    {name:<13}{b:<18}n={n:<4} read {_pct(read, n)}{extra}")
        missed = [r for r in rs if r["outcome"] != "read"]
        if missed:
            print(f"    not read ({len(missed)}):")
            for r in missed:
                p = r["params"]
                print(f"      {r['id']:<13}{(r['symbology'] or 'print'):<11} size {p['size']:>4} rot {p['rotation']:>6} "
                      f"blur {p['blur']:>4} noise {p['noise']:>5} glare {p['glare']:>4} persp {p['perspective']:>5} "
                      f"q {p['jpeg_quality']:>2} {p['font']:<16} form {p['form']:<3} "
                      f"{'invalid-seen' if r['invalid_seen'] else ''} cpu {r['cpu_total'] * 1000:.0f} ms")
        bmiss = [r for r in rs if r["kind"] == "barcode" and not r["barcode_ok"]]
        if bmiss:
            print(f"    barcode reader missed ({len(bmiss)}): " + ", ".join(
                f"{r['id']}({r['symbology']},s{r['params']['size']},b{r['params']['blur']})" for r in bmiss))
    if ov:
        missed = [r for r in ov if r["outcome"] != "read"]
        print(f"  overlays not read ({len(missed)}): " + ", ".join(
            f"{r['id']}({r['params']['overlay_size'][0]}x{r['params']['overlay_size'][1]},"
            f"px{r['params']['size']},{r['params']['font']},grey{r['params']['grey']},form{r['params']['form']})"
            for r in missed))

    print()
    print(f"== Time per frame, decode included: CPU time on ONE core (this process, tesseract "
          f"included; the process is pinned to CPU {_TIMING_CPU}, OMP_THREAD_LIMIT="
          f"{os.environ.get('OMP_THREAD_LIMIT')}) and wall clock, ms")
    print(f"   per-frame budget {args.budget} s of CPU as identify() (barcode share {identify.BARCODE_SHARE}); "
          "the targets are judged on CPU time: wall time depends on what else runs on the machine")
    print(f"{'frames':<30}{'n':>5}{'cpu med':>9}{'cpu p95':>9}{'wall med':>10}{'wall p95':>10}"
          f"{'decode cpu':>12}{'zxing cpu':>11}{'zxing p95':>11}")
    timing = {}

    def tline(name, rs):
        if not rs:
            return
        tc = [r["cpu_total"] for r in rs]
        tt = [r["t_total"] for r in rs]
        td = [r["cpu_decode"] for r in rs if "cpu_decode" in r]
        tz = [r["cpu_zxing"] for r in rs if "cpu_zxing" in r]
        print(f"{name:<30}{len(rs):>5}{_ms(statistics.median(tc)):>9}{_ms(_q(tc, .95)):>9}"
              f"{_ms(statistics.median(tt)):>10}{_ms(_q(tt, .95)):>10}"
              f"{_ms(statistics.median(td) if td else float('nan')):>12}"
              f"{_ms(statistics.median(tz) if tz else float('nan')):>11}{_ms(_q(tz, .95)):>11}")
        timing[name] = dict(n=len(rs), cpu_median=statistics.median(tc), cpu_p95=_q(tc, .95),
                            wall_median=statistics.median(tt), wall_p95=_q(tt, .95),
                            decode_cpu_median=statistics.median(td) if td else None,
                            zxing_cpu_median=statistics.median(tz) if tz else None,
                            zxing_cpu_p95=_q(tz, .95) if tz else None)

    tline("12 MP barcode labels", bc)
    for sym in SYMBOLOGIES:
        tline(f"  {sym}", [r for r in bc if r["symbology"] == sym])
    tline("  read by reduced passes", [r for r in bc if r["read_by"] == "reduced"])
    tline("  read by full-res located pass", [r for r in bc if r["read_by"] == "located"])
    tline("  read by full-frame pass", [r for r in bc if r["read_by"] == "full"])
    tline("  read by rotations pass", [r for r in bc if r["read_by"] == "rotations"])
    tline("  barcode missed (OCR ran)", [r for r in bc if r["fallback"]])
    tline("12 MP print-only labels", pr)
    tline("12 MP all label frames", labels12)
    tline("ultrasound overlays (small)", ov)
    out["timing"] = timing

    if labels12:
        print()
        print(f"   baseline ratios (CPU medians over the frames the baselines ran on, every "
              f"{args.baseline_every}th; same run):")
        for name, rs in (("barcode labels", bc), ("all 12 MP", labels12)):
            rs = [r for r in rs if "cpu_zxing" in r]
            if not rs:
                continue
            tt = statistics.median(r["cpu_total"] for r in rs)
            tz = statistics.median(r["cpu_zxing"] for r in rs)
            td = statistics.median(r["cpu_decode"] for r in rs)
            print(f"   {name:<16} agent (decode+read) / plain zxing {tt / tz:5.2f}x   agent / full JPEG decode "
                  f"{tt / td:5.2f}x   plain zxing / full JPEG decode {tz / td:5.2f}x")
        print("   where the time goes (wall, sum over frames, share of the agent's wall time):")
        tot = sum(r["t_total"] for r in labels12)
        agg: dict[str, float] = defaultdict(float)
        for r in labels12:
            for k, v in r["stages"].items():
                agg[k] += v
        names = {"decode_reduced": "half-size decode (Image.draft)", "decode_full": "full decode",
                 "grey": "to_grey (RGB->L)", "bc_reduced": "barcode passes on the half-size copy",
                 "bc_located": "barcode located passes (both sizes)", "bc_locate": "  locate() alone (both)",
                 "bc_full": "barcode full-frame pass", "bc_rotations": "barcode rotations pass",
                 "tesseract": "tesseract calls"}
        for k, label in names.items():
            print(f"     {label:<38}{agg[k]:8.1f} s  {100 * agg[k] / tot if tot else 0:5.1f}%")
        ocr_total = sum(r["stages"].get("ocr_printed", 0.0) for r in labels12)
        print(f"     {'OCR fallback total (incl. tesseract)':<38}{ocr_total:8.1f} s  "
              f"{100 * ocr_total / tot if tot else 0:5.1f}%")
        out["stage_seconds"] = dict(agg)

    if corpus is not None:
        print()
        print("== Real corpus (/work/shared/corpus/barcodes), agent barcode reader at 0 degrees, "
              f"budget {args.budget * identify.BARCODE_SHARE:g} s; exact text compare")
        print("  WRONG = a text no other reader gives for any symbol in the image; a second symbol that plain "
              "zxing-cpp also reads is listed, not counted")
        print(f"{'folder':<28}{'n':>4}{'agent':>7}{'need':>6}{'':>6}{'plain zxing':>13}{'median ms':>11}"
              f"{'max ms':>8}  wrong texts / missed")
        cj = {}
        all_ok = True
        for name in sorted(corpus, key=lambda k: (corpus[k]["symbology"], k)):
            f = corpus[name]
            need, note = THRESHOLDS.get(name, (None, "all"))
            need = f["n"] if need is None else min(need, f["n"])
            ok = f["agent"] >= need
            all_ok &= ok
            wrongs = "; ".join(f"{w['file']}: {w['symbology']} {w['text']!r} (expected {w['expected']!r})"
                               for w in f["wrong"])
            others = ", ".join(f"{w['file']}: {w['text']!r}" for w in f["other"])
            print(f"{name:<28}{f['n']:>4}{f['agent']:>7}{need:>6}{_verdict(ok):>6}{f['zxing']:>9}/{f['n']:<3}"
                  f"{_ms(statistics.median(f['times']) if f['times'] else float('nan')):>11}"
                  f"{_ms(max(f['times']) if f['times'] else float('nan')):>8}  "
                  f"{('WRONG: ' + wrongs) if wrongs else ''}{' missed: ' + ', '.join(f['missed']) if f['missed'] else ''}"
                  f"{(' second symbol (plain zxing reads it too): ' + others) if others else ''}")
            cj[name] = dict(n=f["n"], agent=f["agent"], need=need, threshold=note, plain_zxing=f["zxing"],
                            wrong=f["wrong"], other_symbols=f["other"], missed=f["missed"], no_truth=f["no_truth"])
        n_wrong = sum(len(f["wrong"]) for f in corpus.values())
        print(f"  corpus: {sum(f['agent'] for f in corpus.values())}/{sum(f['n'] for f in corpus.values())} read, "
              f"{n_wrong} wrong text(s); every folder at or above zxing's threshold: {_verdict(all_ok)}")
        out["corpus"] = cj

    print()
    print("== Targets (issue 'Identity a clinic can trust')")
    targets = []
    bc_rate = sum(r["outcome"] == "read" for r in bc) / len(bc) if bc else float("nan")
    pr_rate = sum(r["outcome"] == "read" for r in pr) / len(pr) if pr else float("nan")
    n_wrong = len(wrong)
    if bc:
        targets.append(("barcode labels read >= 99 %", f"{100 * bc_rate:.1f} %", bc_rate >= TARGET_BARCODE))
        bco = sum(r["barcode_ok"] for r in bc) / len(bc)
        targets.append(("  (barcode reader alone >= 99 %)", f"{100 * bco:.1f} %", bco >= TARGET_BARCODE))
    if pr:
        targets.append(("print-only labels read >= 95 %", f"{100 * pr_rate:.1f} %", pr_rate >= TARGET_PRINT))
    if records:
        targets.append(("wrong reads = 0 (synthetic)", str(n_wrong), n_wrong == 0))
    if corpus is not None:
        cw = sum(len(f["wrong"]) for f in corpus.values())
        targets.append(("wrong texts = 0 (real corpus)", str(cw), cw == 0))
    for name, rs in (("barcode-label frames", bc), ("all 12 MP label frames", labels12)):
        if not rs:
            continue
        tc = [r["cpu_total"] for r in rs]
        tt = [r["t_total"] for r in rs]
        med, p95 = statistics.median(tc), _q(tc, .95)
        wall = f"(wall {statistics.median(tt) * 1000:.0f} / {_q(tt, .95) * 1000:.0f} ms)"
        targets.append((f"median <= 150 ms CPU, {name}", f"{med * 1000:.0f} ms {wall}", med <= TARGET_MEDIAN_S))
        targets.append((f"p95 <= 400 ms CPU, {name}", f"{p95 * 1000:.0f} ms", p95 <= TARGET_P95_S))
    for name, value, ok in targets:
        print(f"  {_verdict(ok)}  {name:<52} {value}")
    out["targets"] = [dict(target=n, value=v, passed=ok) for n, v, ok in targets]
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500,
                    help="synthetic barcode labels (print-only: count/5, overlays: count/10); default 500")
    ap.add_argument("--quick", action="store_true", help="smoke run: 36 barcode + 12 print-only + 12 overlays, "
                    "12 middle-frame labels + 6 barcode-only + 6 plain + 6 look-alike middle frames, no corpus")
    ap.add_argument("--middle", type=int, default=200,
                    help="middle-frame labels of another patient (barcode and print-only in turn); default 200")
    ap.add_argument("--barcode-only", type=int, default=60,
                    help="middle-frame labels of another patient with a barcode and no printed number "
                         "(symbologies in turn); default 60")
    ap.add_argument("--lookalike", type=int, default=60,
                    help="12 MP skin photos beside a paper wound ruler, striped cloth or a keyboard (in turn), "
                         "read as middle frames: none may be refused; default 60")
    ap.add_argument("--plain", type=int, default=50, help="plain 12 MP skin photos read as middle frames; default 50")
    ap.add_argument("--middle-only", action="store_true",
                    help="only the middle-frame sets (labels, plain frames, corpus photos)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=len(_ALL_CPUS), help="generation processes (timing: one core)")
    ap.add_argument("--budget", type=float, default=2.0, help="per-frame budget, s (agent default 2.0)")
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here")
    ap.add_argument("--only", help="comma-separated ids to run alone, e.g. barcode:17,print:3 (reproduce a case)")
    ap.add_argument("--keep", type=pathlib.Path, help="keep the generated frames in this folder")
    ap.add_argument("--frames", type=pathlib.Path,
                    help="read the frames a --keep run of the same seed and counts left in this folder instead "
                         "of generating them: a before/after comparison of the reader in one session, "
                         "without the generators on the CPUs")
    ap.add_argument("--no-corpus", action="store_true", help="skip the real corpus")
    ap.add_argument("--baseline-every", type=int, default=5,
                    help="measure the baselines (full decode, plain zxing-cpp: about 1 s of CPU per 12 MP "
                         "frame) on every Nth frame of each kind; default 5, 1 = all")
    ap.add_argument("--no-overlap", action="store_true",
                    help="stop the generators while a frame is timed (default: they run on the other CPUs)")
    ap.add_argument("--share-timing-cpu", action="store_true",
                    help="let the generators use the timing CPU too while a frame is timed: faster on a "
                         "loaded machine; the CPU-time figures hold, the wall-clock ones grow")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    n_bc, n_pr, n_ov = (36, 12, 12) if args.quick else (args.count, args.count // 5, args.count // 10)
    n_mid, n_only, n_plain, n_look = (12, 6, 6, 6) if args.quick else (args.middle, args.barcode_only, args.plain,
                                                                        args.lookalike)
    if args.middle_only:
        n_bc = n_pr = n_ov = 0
    if args.only:
        specs = []
        for item in args.only.split(","):
            kind, idx = item.strip().split(":")
            specs.append(make_spec(kind, int(idx), args.seed))
    else:
        specs = ([make_spec("barcode", i, args.seed) for i in range(n_bc)]
                 + [make_spec("print", i, args.seed) for i in range(n_pr)]
                 + [make_spec("overlay", i, args.seed) for i in range(n_ov)]
                 + [make_spec("middle", i, args.seed) for i in range(n_mid)]
                 + [make_spec("barcode-only", i, args.seed) for i in range(n_only)]
                 + [make_spec("plain", i, args.seed) for i in range(n_plain)]
                 + [make_spec("lookalike", i, args.seed) for i in range(n_look)])
    run_corpus_now = not (args.no_corpus or args.quick or args.only or args.middle_only)

    missing_fonts = [name for name, path in labels.FONTS.items() if not path.is_file()]
    if missing_fonts:
        print(f"fonts missing: {missing_fonts}; run scripts/setup.sh (fonts-noto-mono, fonts-urw-base35)",
              file=sys.stderr)
        return 2
    meta = dict(
        started=dt.datetime.now().isoformat(timespec="seconds"), seed=args.seed, budget_s=args.budget,
        counts=dict(barcode=sum(s.kind == "barcode" for s in specs), print=sum(s.kind == "print" for s in specs),
                    middle=sum(s.kind == "middle" for s in specs),
                    barcode_only=sum(s.kind == "barcode-only" for s in specs),
                    plain=sum(s.kind == "plain" for s in specs),
                    lookalike=sum(s.kind == "lookalike" for s in specs),
                    overlay=sum(s.kind == "overlay" for s in specs)),
        cpus=sorted(_ALL_CPUS), timing_cpu=_TIMING_CPU, omp_thread_limit=os.environ.get("OMP_THREAD_LIMIT"),
        loadavg_start=os.getloadavg(), python=platform.python_version(),
        zxing_cpp=getattr(zxingcpp, "__version__", None),
    )
    print(f"Bildsluss identity benchmark  seed {args.seed}  budget {args.budget} s/frame  "
          f"{meta['counts']}  {dt.datetime.now():%Y-%m-%d %H:%M}")
    print(f"machine: {len(_ALL_CPUS)} CPUs; timing pinned to CPU {_TIMING_CPU} (os.sched_setaffinity(0, {{{_TIMING_CPU}}})), "
          f"OMP_THREAD_LIMIT={os.environ['OMP_THREAD_LIMIT']} set before import; generation: {args.jobs} processes, "
          + ("stopped while a frame is timed" if args.no_overlap or len(_ALL_CPUS) < 2
             else "on every CPU while a frame is timed (--share-timing-cpu)" if args.share_timing_cpu
             else f"on CPU(s) {sorted(_ALL_CPUS - {_TIMING_CPU})} only while a frame is timed (--no-overlap to stop them)"))
    print("load average at start (1/5/15 min): %.2f %.2f %.2f  -- other sessions share this machine" % os.getloadavg())
    print("per-frame reading: agent.card.identify.read_picture (public; the file decoded as identify() decodes it, "
          "barcode first, OCR fallback, required frame); ultrasound frames: agent.card.identify.read_ultrasound_frame")

    stages = Stages()
    # Warm up (imports, zxing-cpp and tesseract first-call costs) outside the figures.
    warm = render(make_spec("print", 10**6, args.seed))
    barcode.read_barcodes(warm, budget_s=0.5)
    ocr.read_printed_numbers(warm, budget_s=1.0)
    regions.find_label_regions(barcode.to_grey(warm))
    zxingcpp.read_barcodes(warm)

    folder = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-identity-bench-"))
    records: list[dict] = []
    waited = 0.0
    t_start = time.perf_counter()
    loads: list[float] = []
    others = _ALL_CPUS - {_TIMING_CPU}
    overlap = bool(others) and not args.no_overlap
    ctx = multiprocessing.get_context("fork")
    if args.frames:
        kept = [_kept_frame(args.frames, s) for s in specs]
        missing = [s.id for s, path in zip(specs, kept) if path is None]
        if missing:
            print(f"--frames {args.frames}: {len(missing)} frames missing (first {missing[0]}); keep them with "
                  "--keep and the same --seed and counts", file=sys.stderr)
            return 2
    try:
        if args.frames:
            for k, (spec, path) in enumerate(zip(specs, kept)):
                if k % 25 == 0:
                    loads.append(os.getloadavg()[0])
                records.append(measure(spec, str(path), args.budget, stages,
                                       baseline=spec.index % max(1, args.baseline_every) == 0))
                if (k + 1) % 25 == 0 or k + 1 == len(specs):
                    print(f"  {k + 1}/{len(specs)} frames  {time.perf_counter() - t_start:.0f} s (kept frames)  "
                          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        else:
            with ctx.Pool(max(1, args.jobs), initializer=_pool_init) as pool:
                workers = [w.pid for w in getattr(pool, "_pool", [])]

                def give(cpus: frozenset) -> None:
                    for pid in workers:
                        with contextlib.suppress(OSError):
                            os.sched_setaffinity(pid, cpus)

                def hold(stop: bool) -> None:  # --no-overlap: generators stopped while a frame is timed
                    for pid in workers:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)

                try:
                    it = pool.imap(_render_to_file, [(s, str(folder)) for s in specs], chunksize=1)
                    by_spec = {s.id: s for s in specs}
                    for k in range(len(specs)):
                        # While a frame is timed the generators may only use the other CPUs
                        # (--no-overlap: they are idle); while waiting for a frame, every CPU.
                        try:
                            sid, path, _ = it.next(timeout=0)
                        except multiprocessing.TimeoutError:
                            t0 = time.perf_counter()
                            give(_ALL_CPUS)
                            hold(False)
                            sid, path, _ = it.next()
                            waited += time.perf_counter() - t0
                        if overlap and not args.share_timing_cpu:
                            give(others)
                        elif not overlap:
                            hold(True)
                        spec = by_spec[sid]
                        if k % 25 == 0:
                            loads.append(os.getloadavg()[0])
                        rec = measure(spec, path, args.budget, stages,
                                      baseline=spec.index % max(1, args.baseline_every) == 0)
                        records.append(rec)
                        if args.only:
                            print(f"{spec.id}: {rec.get('outcome', rec.get('reason'))} texts {rec.get('texts', rec.get('how'))} wrong {rec['wrong']} "
                                  f"cpu {rec['cpu_total'] * 1000:.0f} ms wall {rec['t_total'] * 1000:.0f} ms  {json.dumps(spec.params(), ensure_ascii=False)}")
                        if args.keep:
                            args.keep.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(path, args.keep / pathlib.Path(path).name)
                        os.unlink(path)
                        if (k + 1) % 25 == 0 or k + 1 == len(specs):
                            print(f"  {k + 1}/{len(specs)} frames  {time.perf_counter() - t_start:.0f} s "
                                  f"(waited for generation {waited:.0f} s)  load {os.getloadavg()[0]:.2f}",
                                  file=sys.stderr, flush=True)
                finally:
                    give(_ALL_CPUS)
                    hold(False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    loads.append(os.getloadavg()[0])

    corpus = None
    if run_corpus_now and CORPUS.is_dir():
        t0 = time.perf_counter()
        corpus = run_corpus(args.budget, stages)
        meta["corpus_s"] = time.perf_counter() - t0
    meta.update(waited_for_generation_s=waited, overlap=overlap, total_s=time.perf_counter() - t_start, loadavg_end=os.getloadavg(),
                loadavg_1min_during=dict(min=min(loads), median=statistics.median(loads), max=max(loads)) if loads else None)
    corpus_plain = None
    if not (args.no_corpus or args.only) and CORPUS_PHOTOS.is_dir() and (n_mid or n_only or n_plain or n_look):
        corpus_plain = run_plain_corpus(args.budget, stages)
    main_records = [r for r in records if r["kind"] not in MIDDLE_KINDS]
    out = report(main_records, corpus, args, meta) if main_records or corpus else {"meta": meta}
    middle, middle_targets = report_middle(records, corpus_plain)
    for name, value, ok in middle_targets:
        print(f"  {_verdict(ok)}  {name:<52} {value}")
    out["middle"] = middle
    out["targets"] = out.get("targets", []) + [dict(target=n, value=v, passed=ok) for n, v, ok in middle_targets]
    print()
    print(f"run: {meta['total_s'] / 60:.1f} min ({args.jobs} generator processes, waited for them "
          f"{waited / 60:.1f} min; {'overlapping timing on the other CPUs' if overlap else 'never during timing'}); "
          "load average 1-min during the run min/median/max %.2f/%.2f/%.2f; at end %.2f %.2f %.2f"
          % (min(loads), statistics.median(loads), max(loads), *os.getloadavg()))
    if args.json:
        out["records"] = records
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False, default=str))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
