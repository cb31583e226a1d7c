"""Two barcode labels that touch: the second code is read, or the card is refused (issue 12, R4).

Two stickers stuck so that they touch are one label-like region on the reduced
decode and one white region on the crop. The barcode passes stop at the code that
read a number (the located pass after its patch, a P2 saving), and a barcode-only
sticker has no print for the second-label OCR: another patient's barcode-only
label touching the patient's was archived under the first, in the middle of a
card and on its first picture. Generated 12 MP pictures (tests.support.labels:
two stickers, a few degrees apart, touching), on a real card; real zxing-cpp and
tesseract, the real scan, identify and decide stages.
"""
from __future__ import annotations

import pathlib

import pytest
from PIL import Image

from agent.card import identify as identify_module
from agent.card import scan as scan_stage
from agent.card.decide import decide
from agent.card.identify import identify
from agent.card.model import Method, Mode
from agent.card.reasons import Reason
from bildsluss_common.readers import barcode
from tests.support.cardgen import make_card, make_personnummer
from tests.support.labels import StickerSpec, render_label, render_touching_labels

pytest.importorskip("bildsluss_common.readers.ocr")

PATIENT = "19121212-1212"
CANONICAL = "191212121212"
OTHER = make_personnummer("19820415", "238")
OTHER_CANONICAL = OTHER.replace("-", "")
# Generous: a budget cut short can only refuse a card, never pass one.
BUDGET = 6.0

# Found by a seeded sweep of touching pairs on main at 9aba486: each was archived
# with the patient's number only (the other's Code 39 never read).
SIDE_BY_SIDE = dict(first=StickerSpec(PATIENT, symbology="Code128", rotation=-0.3),
                    second=StickerSpec(OTHER, "NILSSON, LARS", symbology="Code39", rotation=-1.9),
                    size=788, along="right", gap=0, shift=-111, blur=1.28, noise=4.0, seed=6, quality=60)
STACKED = dict(first=StickerSpec(PATIENT, symbology="Code39", rotation=-3.9),
               second=StickerSpec(OTHER, "NILSSON, LARS", symbology="Code39", rotation=4.0),
               size=565, along="below", gap=0, shift=-27, blur=1.33, noise=0.1, seed=12, quality=69)
PRINTED_BESIDE = dict(first=StickerSpec(PATIENT, symbology="Code128", rotation=-3.3, printed_number=True),
                      second=StickerSpec(OTHER, "NILSSON, LARS", symbology="Code39", rotation=0.4),
                      size=632, along="right", gap=-5, shift=30, blur=1.16, noise=2.7, seed=19, quality=67)
QR_ABOVE = dict(first=StickerSpec(PATIENT, symbology="QRCode", rotation=-2.4, printed_number=True),
                second=StickerSpec(OTHER, "NILSSON, LARS", symbology="Code39", rotation=0.4),
                size=585, along="below", gap=-5, shift=-102, blur=0.44, noise=7.9, seed=26, quality=88)


def _picture(case: dict) -> tuple[Image.Image, int]:
    params = dict(case)
    quality = params.pop("quality")
    picture, _ = render_touching_labels(params.pop("first"), params.pop("second"), **params)
    return picture, quality


def _card(tmp_path: pathlib.Path, case: dict, at: int, seed: int):
    """A three-picture card of PATIENT whose picture ``at`` shows ``case`` (12 MP)."""
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=seed)
    picture, quality = _picture(case)
    path = spec.root / spec.files[at]
    with Image.open(path) as original:
        exif = original.info.get("exif", b"")
    picture.convert("RGB").save(path, "JPEG", quality=quality, exif=exif)
    return spec


def _card_with_one_label(tmp_path: pathlib.Path, symbology: str, *, rotation: float, blur: float, noise: float,
                         seed: int):
    """A three-picture card of PATIENT whose middle picture (12 MP) is one barcode-only label of PATIENT."""
    rendered = render_label(PATIENT, symbology=symbology, printed_number=False, rotation=rotation, size=700,
                            blur=blur, noise=noise, jpeg_quality=None, seed=seed)
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=seed)
    rendered.image.convert("RGB").save(spec.root / spec.files[1], "JPEG", quality=85)
    return spec


def _run(root: pathlib.Path):
    scan = scan_stage.scan(root)
    identified = identify(scan, Mode.PHOTO, budget_s=BUDGET)
    return identified, decide(scan, identified, Mode.PHOTO, expect=None)


def _refused_for_the_other(identified, decision, relative_path: str) -> None:
    shown = identified.on(relative_path)
    read_other = OTHER_CANONICAL in {e.patient_id for e in shown}
    unread = [e for e in shown if e.method == Method.UNREAD_LABEL]
    assert read_other or unread, [(e.method, e.patient_id, e.text) for e in shown]
    assert not decision.accepted
    expected = Reason.MIXED_PATIENTS if read_other else Reason.UNREADABLE_LABEL_MID_CARD
    assert decision.reason == expected and relative_path in decision.detail


@pytest.mark.parametrize("case", [SIDE_BY_SIDE, STACKED, QR_ABOVE], ids=["side-by-side", "stacked", "qr-above"])
def test_two_barcode_only_labels_touching_in_the_middle_refuse_the_card(tmp_path, case):
    spec = _card(tmp_path, case, at=1, seed=61)
    identified, decision = _run(spec.root)
    _refused_for_the_other(identified, decision, spec.files[1])


@pytest.mark.parametrize("case", [SIDE_BY_SIDE, PRINTED_BESIDE], ids=["barcode-only", "printed-number"])
def test_another_patients_barcode_only_label_touching_the_first_pictures_label_refuses(tmp_path, case):
    spec = _card(tmp_path, case, at=0, seed=62)
    identified, decision = _run(spec.root)
    assert CANONICAL in {e.patient_id for e in identified.on(spec.files[0])}
    _refused_for_the_other(identified, decision, spec.files[0])


def test_a_second_code_no_pass_decodes_is_an_unread_label(tmp_path, monkeypatch):
    # The other patient's code, as if blurred beyond every reader: its bars are
    # seen beside the patient's code, and the card is refused, never archived.
    spec = _card(tmp_path, SIDE_BY_SIDE, at=0, seed=63)
    original_quick = barcode.read_quick

    def only_the_patients(readings):
        return [r for r in readings if OTHER_CANONICAL not in r.text]

    monkeypatch.setattr(barcode, "read_quick", lambda image: only_the_patients(original_quick(image)))
    monkeypatch.setattr(barcode, "read_patches", lambda grey, patches, budget_s: barcode.FullRead((), True))
    original_fully = barcode.read_barcodes_fully
    monkeypatch.setattr(barcode, "read_barcodes_fully", lambda image, **kw: barcode.FullRead(
        tuple(only_the_patients(original_fully(image, **kw).readings)), True))
    identified, decision = _run(spec.root)
    first = identified.on(spec.files[0])
    assert {e.patient_id for e in first if e.patient_id} == {CANONICAL}
    unread = [e for e in first if e.method == Method.UNREAD_LABEL]
    assert [e.text for e in unread] == [identify_module.UNDECODED_SECOND_CODE]
    assert not decision.accepted and decision.reason == Reason.UNREADABLE_LABEL_MID_CARD
    assert spec.files[0] in decision.detail


def test_a_second_code_check_that_fails_is_unsure_not_none(tmp_path, monkeypatch):
    # The check for a second code failing (a reader's own error) must not count as
    # "no second code": the whole crop is left, read by every pass, and where the
    # number was read by barcode the card is refused, never archived unchecked.
    def broken(grey):
        raise RuntimeError("broken reader")

    monkeypatch.setattr(barcode, "_dark_strokes", broken)
    grey = barcode.to_grey(_picture(SIDE_BY_SIDE)[0])
    assert barcode.undecoded_1d_codes(grey, [(10, 10, 50, 20)]) == [((0, 0, grey.shape[1], grey.shape[0]), 0.0)]
    spec = _card_with_one_label(tmp_path, "Code128", rotation=2.0, blur=0.8, noise=2, seed=65)
    identified, decision = _run(spec.root)
    assert CANONICAL in {e.patient_id for e in identified.on(spec.files[1])}
    assert [e.text for e in identified.on(spec.files[1]) if e.method == Method.UNREAD_LABEL] == [
        identify_module.UNDECODED_SECOND_CODE]
    assert not decision.accepted and decision.reason == Reason.UNREADABLE_LABEL_MID_CARD


def test_one_label_leaves_no_bars_once_its_code_is_painted_over():
    # The other side of the rule: a label's own print, quiet zone and bar ends
    # are no second code once its code is painted over; a touching code is.
    picture, _ = _picture(SIDE_BY_SIDE)
    grey = barcode.to_grey(picture)
    readings = barcode.read_barcodes(picture, budget_s=BUDGET, enough=lambda found: len(found) >= 2)
    mine = [r.position for r in readings if r.text == CANONICAL]
    theirs = [r.position for r in readings if r.text == OTHER_CANONICAL]
    assert mine and theirs
    left = barcode.undecoded_1d_codes(grey, mine)
    assert left and all(barcode._middle_in(box, theirs[0], 1.0) or _overlaps(box, theirs[0]) for box, _ in left)
    assert barcode.undecoded_1d_codes(grey, mine + theirs) == []


def _overlaps(box: tuple[int, int, int, int], position: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    x, y, w, h = position
    return x0 < x + w and x < x1 and y0 < y + h and y < y1


def test_a_single_barcode_only_label_in_the_middle_is_its_patients_only(tmp_path):
    # One barcode-only label of the card's own patient in the middle (12 MP): read,
    # and its own print and bar ends are no second code; the card is archived.
    spec = _card_with_one_label(tmp_path, "Code39", rotation=3.0, blur=1.0, noise=3, seed=64)
    identified, decision = _run(spec.root)
    assert CANONICAL in {e.patient_id for e in identified.on(spec.files[1])}
    assert not [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert decision.accepted and decision.patient_id == CANONICAL, decision.detail
