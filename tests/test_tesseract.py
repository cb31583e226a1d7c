"""Tesseract in the process (bildsluss_common/readers/tesseract.py, issue 12 P2).

Real tesseract (tesserocr's libtesseract, the system's models), real confined
reader workers. One engine per language and thread, loaded once and reused:
what one call sets (a whitelist) must not leak into the next; a missing model,
a timeout or a failure is "no reading" for the readers, never a guess; a
confined worker has its model loaded before it gives up reading the installation.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pathlib
import resource
import shutil
import tempfile
import threading

import pytest
from PIL import Image, ImageDraw

from agent.card import sandbox, workers
from bildsluss_common.identity.numbers import parse
from bildsluss_common.readers import ocr, tesseract
from bildsluss_common.readers.budget import Budget
from tests.support.labels import font, render_label

NUMBER = "19121212-1212"


def _line(text: str, size: tuple[int, int] = (900, 80)) -> Image.Image:
    img = Image.new("L", size, 255)
    ImageDraw.Draw(img).text((20, 15), text, font=font("dejavu-sans", 40), fill=0)
    return img


def test_a_call_reads_words_with_boxes_lines_and_confidence():
    words = tesseract.words(_line(f"ANDERSSON {NUMBER}"), psm=7)
    assert [w.text for w in words] == ["ANDERSSON", NUMBER]
    assert all(w.conf > 70 and w.line == words[0].line for w in words)
    assert words[0].box[0] < words[1].box[0] and all(w.box[2] > 0 and w.box[3] > 0 for w in words)


def test_the_engine_is_loaded_once_and_a_whitelist_does_not_outlive_its_call():
    tesseract.warm()
    idle = tesseract.loaded()
    key, engine = tesseract._take("eng")
    tesseract._give(key, engine)
    digits = tesseract.words(_line(f"ANDERSSON {NUMBER}"), psm=7, whitelist=ocr.DIGIT_WHITELIST)
    assert not any(ch.isalpha() for w in digits for ch in w.text)
    # The letters are back (the whitelist was reset), and no engine was loaded anew.
    assert [w.text for w in tesseract.words(_line("ANDERSSON ANNA"), psm=7)] == ["ANDERSSON", "ANNA"]
    assert tesseract.loaded() == idle
    key, again = tesseract._take("eng")
    tesseract._give(key, again)
    assert idle >= 1 and (again is engine or idle > 1)


def test_calls_at_once_get_engines_of_their_own_and_leave_them_for_the_next():
    tesseract.warm()
    idle = tesseract.loaded()
    start = threading.Barrier(idle + 1)
    read: list[list[str]] = []

    def one() -> None:
        start.wait()
        read.append([w.text for w in tesseract.words(_line(NUMBER), psm=7)])

    threads = [threading.Thread(target=one) for _ in range(idle + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read == [[NUMBER]] * (idle + 1)
    # At most one more than were idle (when every call ran at once), and all idle again.
    assert idle <= tesseract.loaded() <= idle + 1


def test_a_missing_model_is_an_error_and_no_reading(monkeypatch):
    with pytest.raises(tesseract.TesseractError, match="no tesseract language data for xxx"):
        tesseract.words(_line(NUMBER), psm=7, lang="xxx")
    empty = tempfile.mkdtemp(prefix="bildsluss-tessdata-")
    try:
        monkeypatch.setenv("TESSDATA_PREFIX", empty)
        with pytest.raises(tesseract.TesseractError):
            tesseract.words(_line(NUMBER), psm=7)
        # The readers: nothing read, never an exception (the caller refuses).
        assert ocr._ocr_words(_line(NUMBER), 7, Budget(5.0)) == []
    finally:
        os.rmdir(empty)


def test_a_call_past_its_timeout_stops_and_reads_nothing():
    page = Image.new("L", (2400, 3000), 255)
    draw = ImageDraw.Draw(page)
    for y in range(40, 2950, 40):
        draw.text((30, y), f"ANDERSSON ANNA {NUMBER} KIR AVD 12 2026-11-25", font=font("dejavu-sans", 28), fill=0)
    with pytest.raises(tesseract.TesseractError, match="timeout"):
        tesseract.words(page, psm=6, timeout_s=0.05)
    # The engine is fine afterwards.
    assert [w.text for w in tesseract.words(_line(NUMBER), psm=7)] == [NUMBER]


def test_ocr_starts_no_process():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = render_label(NUMBER, size=700, rotation=10, scene_size=(1600, 1200), seed=3)
    readings = ocr.read_printed_numbers(r.image, budget_s=4.0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert {n.canonical for n in (parse(x.text) for x in readings) if n} == {"191212121212"}
    assert (after.ru_utime, after.ru_stime) == (before.ru_utime, before.ru_stime)


# -- in a confined reader worker --------------------------------------------------------


def _read_label(image: Image.Image) -> tuple[list[str], int, bool]:
    """In the worker: what OCR reads, the user, and whether the model was loaded before."""
    loaded = tesseract.loaded("eng") > 0
    readings = ocr.read_printed_numbers(image, budget_s=4.0)
    return [x.text for x in readings], os.geteuid(), loaded


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to the parser user needs root")
def test_a_confined_worker_reads_a_label_with_the_model_it_loaded_before_confinement(monkeypatch):
    """The model in a folder Landlock does not let the worker read (TESSDATA_PREFIX
    outside the system paths): only a model loaded before the confinement reads it."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="bildsluss-ocr-worker-"))
    try:
        base.chmod(0o711)
        (base / "card").mkdir()
        (base / "spool").mkdir(mode=0o700)
        models = base / "models"
        models.mkdir()
        shutil.copy2(pathlib.Path(tesseract.tessdata()) / "eng.traineddata", models / "eng.traineddata")
        models.chmod(0o755)
        monkeypatch.setenv("TESSDATA_PREFIX", str(models))
        confinement = sandbox.confinement_for(base / "card", base / "spool")
        sandbox.hand_over(confinement)
        image = render_label(NUMBER, size=700, rotation=-12, scene_size=(1600, 1200), seed=4).image
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context,
                                                    initializer=workers._start_worker,
                                                    initargs=(confinement,)) as pool:
            texts, euid, loaded = pool.submit(_read_label, image).result(timeout=120)
        assert {n.canonical for n in (parse(t) for t in texts) if n} == {"191212121212"}
        assert euid != 0 and loaded
    finally:
        shutil.rmtree(base, ignore_errors=True)
