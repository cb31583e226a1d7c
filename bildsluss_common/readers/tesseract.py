"""Tesseract in this process (tesserocr): the model loaded once, a call per image.

Every OCR of the project goes through :func:`words`: the agent's label and
overlay reading (:mod:`bildsluss_common.readers.ocr`) and the archive's text
detection on teaching copies (:mod:`archive_server.deidentify`). Until issue
12's P2 work each call started the ``tesseract`` program (pytesseract): about
170 ms of CPU per call to start a process and load the model, several calls per
label; a print-only label frame then cost 0.6-1 s of CPU, most of it starts.

- **Engines are kept and reused** (tesserocr's ``PyTessBaseAPI``, one per
  language): a call takes an idle one, or loads one when all are busy (an
  engine is not safe to share between threads), and gives it back; the agent's
  reader workers load theirs with :func:`warm` before they are confined. A
  forked child keeps the idle engines (a copy, the model pages shared), never
  one that another thread was using at the fork.
- **The same call as the program's**: page segmentation mode, character
  whitelist (reset on every call: the engine is reused), the source resolution
  the program assumes for an image without one (70 dpi), and the result as the
  program's TSV (``GetTSVText``: level, block, paragraph, line, word, box,
  confidence, text), so that the readers see what ``tesseract ... tsv`` gave.
- **Single-threaded**: the wheel's libtesseract is built without OpenMP, and
  the call runs in the calling thread: its CPU time is that thread's
  (:func:`time.thread_time`, the readers' budgets), and the cores are used by
  reading several frames at once (:mod:`agent.card.workers`).
- **Timeout**: ``timeout_s`` is wall clock, the engine's own cancel (its
  monitor's deadline, checked between words); layout analysis is not
  interruptible, so a call may overrun it by that part.
- **Model**: the system's traineddata (Debian's ``tesseract-ocr-eng`` and
  ``-swe``, under ``/usr/share/tesseract-ocr/<version>/tessdata``), or
  ``TESSDATA_PREFIX`` when set. A missing language is :class:`TesseractError`.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import threading
from typing import Any

from PIL import Image

# Where the distributions put the models, newest first (Debian 12: 5; 11: 4.00).
_SYSTEM_TESSDATA = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata")
# What the tesseract program assumes for an image that states no resolution (a PNG
# without pHYs, as pytesseract wrote them): the readers were tuned on it.
SOURCE_DPI = 70


class TesseractError(Exception):
    """Tesseract could not run (no model for the language, a bad image): no reading."""


@dataclasses.dataclass(frozen=True)
class Word:
    """One word as tesseract's TSV gives it (level 5)."""

    text: str
    conf: float  # 0-100
    box: tuple[int, int, int, int]  # left, top, width, height in the image given
    line: tuple[int, int, int]  # block, paragraph, line numbers


def tessdata() -> str:
    """The folder holding the traineddata files."""
    env = os.environ.get("TESSDATA_PREFIX")
    return env if env else _system_tessdata()


@functools.cache
def _system_tessdata() -> str:
    for pattern in _SYSTEM_TESSDATA:
        for folder in sorted(glob.glob(pattern), reverse=True):
            if glob.glob(os.path.join(folder, "*.traineddata")):
                return folder
    raise TesseractError("no tesseract language data found (install tesseract-ocr-eng and tesseract-ocr-swe, "
                         "or set TESSDATA_PREFIX)")


# Idle engines by (tessdata folder, language). A call takes one (or makes one when
# all are busy) and gives it back: as many engines as calls at once, not one per
# thread (the archive's request threads are many, its OCR calls few).
_idle: dict[tuple[str, str], list[Any]] = {}
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_new_lock_in_child)


def _take(lang: str) -> tuple[tuple[str, str], Any]:  # a tesserocr.PyTessBaseAPI
    path = tessdata()
    key = (path, lang)
    with _lock:
        if _idle.get(key):
            return key, _idle[key].pop()
    import tesserocr  # a compiled extension: imported where used

    missing = [part for part in lang.split("+") if not os.path.isfile(os.path.join(path, f"{part}.traineddata"))]
    if missing:
        raise TesseractError(f"no tesseract language data for {'+'.join(missing)} in {path}")
    try:
        return key, tesserocr.PyTessBaseAPI(path=path, lang=lang)
    except RuntimeError as exc:
        raise TesseractError(f"tesseract could not load {lang} from {path}: {exc}") from None


def _give(key: tuple[str, str], api: Any) -> None:
    with _lock:
        _idle.setdefault(key, []).append(api)


def loaded(lang: str = "eng") -> int:
    """How many idle engines of ``lang`` (with the current model folder) this process holds."""
    with _lock:
        return len(_idle.get((tessdata(), lang), []))


def warm(langs: tuple[str, ...] = ("eng",)) -> None:
    """Load an engine of each of ``langs`` now, unless one is idle (before a process
    gives up reading its installation, and before a frame's budget starts)."""
    for lang in langs:
        _give(*_take(lang))


def words(image: Image.Image, *, psm: int, lang: str = "eng", whitelist: str | None = None,
          timeout_s: float | None = None) -> list[Word]:
    """The words tesseract reads on ``image`` with page segmentation mode ``psm``.

    ``whitelist``: the only characters it may read (``tessedit_char_whitelist``).
    Raises :class:`TesseractError` when it could not run or ran past ``timeout_s``.
    """
    if image.mode not in ("1", "L", "RGB", "RGBA"):
        image = image.convert("RGB")
    key, api = _take(lang)
    try:
        api.SetPageSegMode(psm)
        api.SetVariable("tessedit_char_whitelist", whitelist or "")
        api.SetImage(image)
        api.SetSourceResolution(SOURCE_DPI)
        ms = 0 if timeout_s is None else max(1, int(timeout_s * 1000))
        if not api.Recognize(timeout=ms):
            raise TesseractError("tesseract stopped: timeout" if ms else "tesseract failed")
        tsv = api.GetTSVText(0) or ""
    except RuntimeError as exc:
        raise TesseractError(f"tesseract failed: {exc}") from None
    finally:
        api.Clear()  # the image and its results: the engine stays loaded
        _give(key, api)
    return _parse_tsv(tsv)


def _parse_tsv(tsv: str) -> list[Word]:
    out = []
    for row in tsv.splitlines():
        fields = row.split("\t", 11)
        if len(fields) < 12 or fields[0] != "5":
            continue
        text = fields[11].strip()
        if not text:
            continue
        try:
            _, _, block, par, line, _, left, top, width, height = (int(v) for v in fields[:10])
            conf = float(fields[10])
        except ValueError:
            continue
        out.append(Word(text=text, conf=conf, box=(left, top, width, height), line=(block, par, line)))
    return out
