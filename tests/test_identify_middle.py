"""No label in a middle picture goes unread (issue 12, R4).

A middle picture of a photo series is not required to show the number, but it
must not show another patient's. Its label-like regions are found on the
reduced decode and read fully (barcode on a full-resolution crop, then OCR of
the crop); a label that still reads as nothing refuses the card. Real cards
(tests.support.cardgen), real corpus photos, real zxing-cpp and tesseract.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from agent.card import scan as scan_stage
from agent.card.decide import decide
from agent.card import identify as identify_module
from agent.card.identify import identify, open_reduced, read_frame, read_picture
from agent.card.model import Method, Mode
from agent.card.reasons import Reason, STAFF_MESSAGES, STAFF_MESSAGES_SV, TITLES_SV
from bildsluss_common.readers import barcode
from bildsluss_common.readers import ocr as ocr_reader
from bildsluss_common.readers.regions import find_label_regions
from tests.support import labels
from tests.support.cardgen import make_card, make_personnummer

pytest.importorskip("bildsluss_common.readers.ocr")

PATIENT = "19121212-1212"
CANONICAL = "191212121212"
OTHER = make_personnummer("19820415", "238")
OTHER_CANONICAL = OTHER.replace("-", "")
CORPUS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "corpus"
PHOTOS = CORPUS / "exif" / "exif-samples" / "jpg"
# A generous budget: tesseract is slow on a busy machine, and a budget cut short
# can only refuse a card, never pass one.
BUDGET = 6.0


def run(root: pathlib.Path, mode: Mode = Mode.PHOTO):
    scan = scan_stage.scan(root)
    identified = identify(scan, mode, budget_s=BUDGET)
    return scan, identified, decide(scan, identified, mode, expect=None)


def test_another_patients_print_only_label_in_the_middle_is_read(tmp_path):
    # The case: barcode labels first and last, another patient's label
    # with no barcode in the middle. Before issue 12 it was never OCR'd, and the
    # card was archived for the first patient.
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=4, megapixels=2.0, seed=11,
                     extra_patient_at=2, extra_patient=OTHER, print_only_at=(2,), label_angle=4)
    _, identified, decision = run(spec.root)
    middle = identified.on(spec.files[2])
    assert {e.patient_id for e in middle if e.patient_id} == {OTHER_CANONICAL}
    assert {e.method for e in middle if e.patient_id} == {Method.OCR}
    assert decision.reason == Reason.MIXED_PATIENTS and spec.files[2] in decision.detail
    assert not decision.accepted


def test_another_patients_barcode_only_label_in_the_middle_mixes_the_card(tmp_path):
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=12,
                     extra_patient_at=1, extra_patient=OTHER, barcode_only_at=(1,))
    _, identified, decision = run(spec.root)
    assert {e.patient_id for e in identified.on(spec.files[1]) if e.patient_id} == {OTHER_CANONICAL}
    assert decision.reason == Reason.MIXED_PATIENTS and spec.files[1] in decision.detail


def test_a_middle_label_whose_number_cannot_be_read_refuses_the_card(tmp_path):
    # The label's last four digits are covered ("19820415-XXXX"): a number-like
    # line, but no number. It may be another patient: refuse, never archive.
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=13,
                     extra_patient_at=1, extra_patient=OTHER, payloads={1: "19820415-XXXX"},
                     print_only_at=(1,), label_angle=-3)
    _, identified, decision = run(spec.root)
    unread = [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert [e.relative_path for e in unread] == [spec.files[1]]
    assert "number-like" in unread[0].text and unread[0].patient_id is None
    bx, by, bw, bh = spec.images[1].label_box
    x, y, w, h = unread[0].position  # the region found covers the sticker
    assert x <= bx + bw // 2 <= x + w and y <= by + bh // 2 <= y + h
    assert decision.reason == Reason.UNREADABLE_LABEL_MID_CARD
    assert spec.files[1] in decision.detail and not decision.accepted
    assert unread[0].to_json()["method"] == "unread_label"


def test_a_middle_label_whose_date_part_is_lost_in_glare_refuses_the_card(tmp_path):
    # The identity benchmark's middle:137 (seed 0): another patient's print-only
    # label, a highlight over the middle of its number. OCR reads the name and
    # "195 9219" (the middle digits washed out), no line of 9 digits: it was
    # archived under the card's patient. Here the name is not printed as
    # "SURNAME, Given" (which alone makes a region a patient's label, the test
    # above): seven digits ending in a number's last four are a number partly
    # read, unsure, so refused.
    rendered = labels.render_label("19591212-9219", "Karin Lindqvist", font_name="dejavu-sans-bold", size=683,
                                   rotation=-3.48, blur=0.68, noise=0.93, glare=0.86, jpeg_quality=None,
                                   seed=581090275)
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=14)
    rendered.image.convert("RGB").save(spec.root / spec.files[1], "JPEG", quality=70)
    _, identified, decision = run(spec.root)
    unread = [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert [e.relative_path for e in unread] == [spec.files[1]] and "number-like" in unread[0].text
    assert decision.reason == Reason.UNREADABLE_LABEL_MID_CARD and not decision.accepted


@pytest.mark.parametrize("line, number_like", [
    (["195", "9219"], True),  # 19591212-9219 with its middle lost
    (["19591", "-9219"], True),
    (["12", "13", "14", "15"], False),  # a ruler's cm numbers
    (["AVD", "12", "2026-11-25"], False),  # a ward and a date
    (["1", "2", "3", "4", "5", "6", "7"], False),  # no word of four digits at the end
    (["0", "8", "1234"], False),  # six digits: not enough of a number
])
def test_a_number_partly_read_is_number_like(line, number_like):
    words = [ocr_reader._Word(text=t, conf=80.0, box=(60 * i, 0, 50, 20), line=(1, 1, 1))
             for i, t in enumerate(line)]
    assert bool(ocr_reader._number_like(words)) is number_like


def test_the_unreadable_label_reason_speaks_to_staff():
    reason = Reason.UNREADABLE_LABEL_MID_CARD
    assert "another patient" in STAFF_MESSAGES[reason] and "Nothing was sent" in STAFF_MESSAGES[reason]
    assert "annan patient" in STAFF_MESSAGES_SV[reason] and TITLES_SV[reason]


def _set_capture_time(path: pathlib.Path, when: str) -> None:
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-DateTimeOriginal={when}",
                    f"-CreateDate={when}", str(path)], check=True)


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="the shared corpus is not here")
def test_ordinary_photos_in_the_middle_are_archived(tmp_path):
    # Real photos from the corpus (outdoor scenes with sky and foliage, which the
    # label search finds label-like, and a phone photo) between the first and the
    # last label, plus generated skin photos: no label, no refusal.
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=4, megapixels=2.0, seed=14)
    folder = spec.root / "DCIM" / spec.camera.folder
    _set_capture_time(spec.root / spec.files[-1], "2026:03:14 11:00:00")
    photos = ["gps/DSCN0010.jpg", "gps/DSCN0025.jpg", "orientation/landscape_6.jpg", "mobile/jolla.jpg"]
    for n, name in enumerate(photos):
        target = folder / f"IMG_{9001 + n}.JPG"
        shutil.copyfile(PHOTOS / name, target)
        _set_capture_time(target, f"2026:03:14 10:{10 + n}:00")
    scan, identified, decision = run(spec.root)
    assert len(scan.media) == 8 and scan.media[-1].relative_path == spec.files[-1]
    assert not [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert decision.accepted and decision.patient_id == CANONICAL


def test_a_middle_picture_without_a_label_skips_the_full_decode(tmp_path, monkeypatch):
    # The middle picture of an ordinary card: its reduced decode shows no
    # label-like region, so neither the full decode nor OCR is paid.
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=15)
    from agent.card import identify as identify_module
    calls = []
    monkeypatch.setattr(identify_module, "open_upright",
                        lambda path: calls.append(path) or pytest.fail("full decode of a plain middle picture"))
    assert read_picture(spec.root / spec.files[1], spec.files[1], required=False) == []
    assert calls == []


def test_label_regions_are_found_on_the_reduced_decode(tmp_path):
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=12.0, seed=16,
                     label_on=(1,), label_scale=0.15, print_only_at=(1,))
    small, scale = open_reduced(spec.root / spec.files[1])
    regions = find_label_regions(barcode.to_grey(small), scale=scale)
    assert regions, "a 600 px print-only label on a 12 MP frame was not found"
    bx, by, bw, bh = spec.images[1].label_box
    x, y, w, h = regions[0].box
    assert x <= bx + bw // 2 <= x + w and y <= by + bh // 2 <= y + h
    for plain in (0, 2):  # skin only
        small, scale = open_reduced(spec.root / spec.files[plain])
        assert find_label_regions(barcode.to_grey(small), scale=scale) == []


def test_odd_images_have_no_regions():
    for shape in ((1, 1), (3, 500), (40, 40)):
        assert find_label_regions(np.zeros(shape, np.uint8)) == []
    assert find_label_regions(np.full((300, 400), 255, np.uint8)) == []  # glare: paper, no ink


def test_a_middle_video_frame_with_a_print_only_label_is_read(tmp_path):
    # Video frames (decoded, no reduced pass) in photo mode: a frame that is not
    # required gets the same label search and reading as a middle picture.
    spec = make_card(tmp_path / "card", patient=OTHER, n_images=1, megapixels=2.0, seed=17,
                     print_only_at=(0,), label_angle=2)
    from agent.card.identify import open_upright
    image = open_upright(spec.root / spec.files[0])
    evidence = read_frame(image, "clip.mp4", 12, required=False, budget_s=BUDGET)
    assert {e.patient_id for e in evidence if e.patient_id} == {OTHER_CANONICAL}
    assert all(e.frame == 12 for e in evidence)


def test_a_label_whose_reading_is_cut_short_refuses(tmp_path):
    # A budget too small to read the label's print: unsure, so refused, never archived.
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=1, megapixels=2.0, seed=18,
                     print_only_at=(0,), label_angle=5)
    evidence = read_picture(spec.root / spec.files[0], spec.files[0], required=False, budget_s=0.05)
    assert not any(e.patient_id for e in evidence)
    assert [e.text for e in evidence if e.method == Method.UNREAD_LABEL] == [
        "a label-like region that could not be read within the time budget"]


def test_a_middle_barcode_label_whose_barcode_passes_are_cut_short_refuses(tmp_path, monkeypatch):
    # Another patient's tilted barcode label (no printed number): the quick pass
    # misses it, OCR of the crop reads nothing number-like, and the harder passes
    # read it given their budget. Cut short, they read nothing; that is unsure,
    # never "no label". Before, such a card was archived for the first patient (the
    # identity benchmark's middle:32, an ITF label at 28 degrees, at load 6).
    def card(seed: int):
        return make_card(tmp_path / f"card{seed}", patient=PATIENT, n_images=3, megapixels=2.0, seed=seed,
                         extra_patient_at=1, extra_patient=OTHER, barcode_only_at=(1,), label_angle=28,
                         blur=1.5)

    spec = card(21)
    _, identified, decision = run(spec.root)
    assert decision.reason == Reason.MIXED_PATIENTS
    assert {e.method for e in identified.on(spec.files[1]) if e.patient_id} == {Method.BARCODE}

    monkeypatch.setattr(identify_module, "CROP_BARCODE_SHARE", 1e-6)
    _, identified, decision = run(card(21).root)
    unread = [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert [e.relative_path for e in unread] == [spec.files[1]]
    assert unread[0].text == "a label-like region whose barcode could not be read within the time budget"
    assert decision.reason == Reason.UNREADABLE_LABEL_MID_CARD and not decision.accepted


def test_a_tilted_blurred_barcode_only_label_in_the_middle_is_read(tmp_path):
    # Another patient's Code 39 label with no printed number, at 28 degrees and
    # blurred, in the middle of a card: the located barcode pass reads it on the
    # whole frame, but the label-like region's crop shifted the locator's patch
    # off its bars, OCR saw nothing number-like, and the card was archived for
    # the first patient (a wrong-patient defect).
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=21,
                     extra_patient_at=1, extra_patient=OTHER, barcode_only_at=(1,), label_angle=28,
                     blur=1.5, symbology="Code39")
    _, identified, decision = run(spec.root)
    middle = identified.on(spec.files[1])
    assert {(e.patient_id, e.method) for e in middle if e.patient_id} == {(OTHER_CANONICAL, Method.BARCODE)}
    assert decision.reason == Reason.MIXED_PATIENTS and spec.files[1] in decision.detail
    assert not decision.accepted


def test_a_middle_barcode_only_label_no_pass_decodes_refuses_the_card(tmp_path):
    # Another patient's Code 39 label with no printed number, blurred until no
    # barcode pass decodes it (the whole frame at full resolution reads nothing):
    # OCR finds no number-like line, so before, the region was a false find and
    # the card was archived. Bars that look like a 1D code make it an unread label.
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=22,
                     extra_patient_at=1, extra_patient=OTHER, barcode_only_at=(1,), label_angle=12,
                     blur=2.2, symbology="Code39")
    assert barcode.read_barcodes(identify_module.open_upright(spec.root / spec.files[1]), budget_s=BUDGET) == []
    _, identified, decision = run(spec.root)
    unread = [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert [(e.relative_path, e.text) for e in unread] == [(spec.files[1], identify_module.UNDECODED_BARS)]
    bx, by, bw, bh = spec.images[1].label_box
    x, y, w, h = unread[0].position
    assert x <= bx + bw // 2 <= x + w and y <= by + bh // 2 <= y + h
    assert decision.reason == Reason.UNREADABLE_LABEL_MID_CARD and not decision.accepted
    assert spec.files[1] in decision.detail


def _ruler(width: int, ticks_both_edges: bool) -> np.ndarray:
    """A paper wound ruler, 15 cm of mm ticks with cm numbers, on skin-grey (8-bit grey)."""
    from PIL import Image, ImageDraw

    h = width // 8
    img = Image.new("L", (width + 80, h + 80), 150)
    d = ImageDraw.Draw(img)
    d.rectangle((40, 40, 40 + width, 40 + h), fill=245)
    pitch = (width - 20) / 150
    for mm in range(151):
        x = 50 + mm * pitch
        t = 0.5 if mm % 10 == 0 else 0.33 if mm % 5 == 0 else 0.2
        d.line((x, 40, x, 40 + h * t), fill=25, width=max(1, round(pitch / 4)))
        if ticks_both_edges:
            d.line((x, 40 + h, x, 40 + h * (1 - t)), fill=25, width=max(1, round(pitch / 4)))
        if mm % 10 == 0 and mm:
            d.text((x + 2, 40 + h * 0.55), str(mm // 10), fill=25)
    return np.asarray(img)


def _code(symbology: str, blur: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    from tests.support.cardgen import barcode_image

    bars = barcode_image(OTHER_CANONICAL, symbology)
    bars = bars.resize((bars.width * 3, bars.width * 3 // 5), Image.NEAREST)
    img = Image.new("L", (bars.width + 120, bars.height + 120), 245)
    img.paste(bars, (60, 60))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(blur)))


def test_bars_that_look_like_a_1d_code_and_those_that_do_not():
    # What makes an undecoded bar pattern an unread label: a code's bars (decoded
    # or not), not a ruler's evenly spaced ticks nor a striped cloth.
    for symbology in ("Code39", "Code128", "ITF"):
        for blur in (0.0, 1.5):
            assert barcode.looks_like_1d_code(_code(symbology, blur)), (symbology, blur)
    for width in (600, 1200, 2000):
        for both in (False, True):
            assert not barcode.looks_like_1d_code(_ruler(width, both)), (width, both)
    stripes = np.full((400, 900), 240, np.uint8)
    for x in range(30, 870, 24):
        stripes[30:370, x:x + 10] = 30
    assert not barcode.looks_like_1d_code(stripes)
    assert not barcode.looks_like_1d_code(np.full((200, 300), 128, np.uint8))
    assert not barcode.looks_like_1d_code(np.zeros((3, 3), np.uint8))


def test_the_frames_located_pass_failing_is_a_cut_short_reading(monkeypatch):
    # A reader's own error in the whole frame's located pass must not read as
    # "every patch read, nothing there": the region's reading counts as cut
    # short, and the identify stage refuses the card for it (an unread label).
    from PIL import Image

    def broken(*args, **kwargs):
        raise RuntimeError("reader crashed")

    grey = np.full((400, 600), 240, np.uint8)
    grey[100:300, 100:500:8] = 20  # bars, so that the locator finds a patch
    locator = barcode.FrameLocator(Image.fromarray(grey))
    assert locator.patches_in((0, 0, 600, 400)), "the test needs a located patch"
    monkeypatch.setattr(barcode, "_pass_located", broken)
    read = locator.read_in((0, 0, 600, 400), budget_s=1.0)
    assert read.readings == () and read.complete is False


def test_a_middle_label_whose_number_glare_hides_refuses_the_card(tmp_path):
    # Another patient's print-only label, its number washed out by glare: OCR of the
    # crop reads the name and the ward line but no digits that look like a number,
    # and the card was archived for the first patient (the identity benchmark's
    # middle:137, "LINDQVIST, KARIN" and "195 9219"). A name as labels print it
    # makes the region a patient label: no number read there, so refused.
    from PIL import ImageDraw

    from tests.support import labels

    rendered = labels.render_label(OTHER, "LINDQVIST, KARIN", size=700, rotation=-3.5, blur=0.7, noise=1.0,
                                   jpeg_quality=None, seed=43, scene_size=(1600, 1200))
    x, y, w, h = rendered.truth.number_box
    picture = rendered.image.convert("RGB")
    ImageDraw.Draw(picture).rectangle((x - 4, y - 4, x + w + 4, y + h + 4), fill=(252, 252, 250))
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=2.0, seed=43)
    picture.save(spec.root / spec.files[1], "JPEG", quality=85)
    _, identified, decision = run(spec.root)
    assert not any(e.patient_id for e in identified.on(spec.files[1]))
    unread = [e for e in identified.evidence if e.method == Method.UNREAD_LABEL]
    assert [(e.relative_path, e.text) for e in unread] == [(spec.files[1], identify_module.LABEL_NAME_NO_NUMBER)]
    assert decision.reason == Reason.UNREADABLE_LABEL_MID_CARD and not decision.accepted


@pytest.mark.parametrize("line, named", [
    (["LINDQVIST,", "KARIN"], True),
    (["Tolvansson,", "Tolvan"], True),
    (["ÖSTLUND", ",", "ÅSA"], True),
    (["ANDERSSON,ANNA"], True),
    (["KIR", "AVD", "12", "2026-11-25"], False),
    (["Hello,", "world"], False),  # no capital: prose, not a label's name line
    (["cm"], False),
    (["Q", "W", "E", "R"], False),  # a keyboard's keys
])
def test_a_name_as_labels_print_it(line, named):
    from bildsluss_common.readers import ocr

    words = [ocr._Word(text=t, conf=90.0, box=(10 * k, 0, 10, 20), line=(1, 1, 1)) for k, t in enumerate(line)]
    assert ocr._label_name(words) is named
