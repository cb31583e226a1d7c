"""The identify stage on real generated camera cards, then decide on what it read.

Cards come from tests.support.cardgen: real JPEGs with real barcodes, real EXIF
and camera housekeeping; the scan stage finds the media, identify reads every
picture, decide applies the rules. Small cards (2 MP, 3-4 pictures) keep this fast.
"""
from __future__ import annotations

import pytest

from agent.card import scan as scan_stage
from agent.card.decide import decide
from agent.card.identify import evidence_from_reading, identify, required_positions
from bildsluss_common.readers import Reading
from agent.card.model import Method, Mode
from agent.card.reasons import Reason
from tests.support.cardgen import make_card, make_personnummer

PATIENT = "19121212-1212"
CANONICAL = "191212121212"
OTHER = make_personnummer("19820415", "238")
OTHER_CANONICAL = OTHER.replace("-", "")
BUDGET = 1.0
SMALL = dict(megapixels=2.0, n_images=3)


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    """Each card is made once per module, on first use."""
    made: dict[str, object] = {}
    root = tmp_path_factory.mktemp("cards")

    def get(name: str, **options):
        if name not in made:
            spec = make_card(root / name, patient=options.pop("patient", PATIENT),
                             **{**SMALL, "seed": len(made) + 1, **options})
            made[name] = (spec, scan_stage.scan(spec.root))
        return made[name]

    return get


def run(cards, name: str, mode: Mode = Mode.PHOTO, expect: str | None = None,
        budget_s: float = BUDGET, **options):
    spec, scan = cards(name, **options)
    identified = identify(scan, mode, expect=expect, budget_s=budget_s)
    return spec, scan, identified, decide(scan, identified, mode, expect=expect)


def ids_by_file(identified) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in identified.evidence:
        if e.patient_id:
            out.setdefault(e.relative_path, set()).add(e.patient_id)
    return out


# --------------------------------------------------------------------------- photo series


def test_good_card_one_patient_from_first_and_last(cards):
    spec, scan, identified, decision = run(cards, "good", n_images=4)
    files = list(spec.files)
    assert [m.relative_path for m in scan.media] == files  # capture order
    assert identified.examined == tuple(files)  # every picture was read (R4)
    assert ids_by_file(identified) == {files[0]: {CANONICAL}, files[-1]: {CANONICAL}}
    first = identified.on(files[0])[0]
    assert first.method == Method.BARCODE and first.symbology == "Code128" and first.text == CANONICAL
    x, y, w, h = first.position
    bx, by, bw, bh = spec.images[0].label_box
    assert bx - 8 <= x and y >= by - 8 and x + w <= bx + bw + 8 and y + h <= by + bh + 8
    assert decision.accepted and decision.patient_id == CANONICAL and decision.reason is None


def test_another_patient_in_the_middle_is_found_and_mixes_the_card(cards):
    spec, _, identified, decision = run(cards, "mixed", n_images=4, extra_patient_at=2,
                                        extra_patient=OTHER)
    files = list(spec.files)
    assert ids_by_file(identified) == {files[0]: {CANONICAL}, files[2]: {OTHER_CANONICAL},
                                       files[3]: {CANONICAL}}
    assert decision.reason == Reason.MIXED_PATIENTS and files[2] in decision.detail


def test_first_and_last_disagree(cards):
    spec, _, identified, decision = run(cards, "first-last", last_patient=OTHER)
    assert decision.reason == Reason.FIRST_LAST_MISMATCH
    assert spec.files[0] in decision.detail and spec.files[-1] in decision.detail


def test_no_label_is_no_id(cards):
    spec, _, identified, decision = run(cards, "no-label", label_on=())
    assert not any(e.patient_id or e.invalid for e in identified.evidence)
    assert identified.examined == spec.files
    assert decision.reason == Reason.NO_ID_FOUND


def test_label_only_first_is_no_id_naming_the_last(cards):
    spec, _, _, decision = run(cards, "first-only", label_on=("first",))
    assert decision.reason == Reason.NO_ID_FOUND and spec.files[-1] in decision.detail


@pytest.mark.parametrize("symbology", ["DataMatrix", "QRCode", "Code39"])
def test_other_symbologies(cards, symbology):
    _, _, identified, decision = run(cards, f"sym-{symbology}", symbology=symbology)
    assert decision.accepted and decision.patient_id == CANONICAL
    assert {e.symbology for e in identified.evidence if e.patient_id} == {symbology}


def test_a_label_turned_25_degrees(cards):
    _, _, identified, decision = run(cards, "rotated", label_angle=25)
    assert decision.accepted and decision.patient_id == CANONICAL
    assert len([e for e in identified.evidence if e.patient_id]) == 2


def test_a_label_with_a_wrong_check_digit_is_invalid(cards):
    bad = make_personnummer("19121212", "121", valid=False)  # 19121212-1213
    spec, _, identified, decision = run(cards, "bad-luhn", payloads={0: bad, 2: bad})
    assert [(e.relative_path, e.text, e.invalid) for e in identified.evidence] == [
        (spec.files[0], bad, True), (spec.files[2], bad, True)]
    assert decision.reason == Reason.INVALID_ID and bad in decision.detail


def test_a_product_qr_code_in_the_middle_is_recorded_and_ignored(cards):
    url = "https://example.com/dressing/4711?lot=20250101"
    spec, _, identified, decision = run(cards, "url", payloads={1: url}, symbology="QRCode")
    product = [e for e in identified.evidence if e.relative_path == spec.files[1]]
    assert [(e.text, e.patient_id, e.invalid) for e in product] == [(url, None, False)]
    assert decision.accepted and decision.patient_id == CANONICAL
    assert product[0] in decision.evidence


def test_expected_patient(cards):
    _, _, _, ok = run(cards, "good", n_images=4, expect=PATIENT)
    assert ok.accepted and ok.ehr_context
    _, _, _, other = run(cards, "good", n_images=4, expect=OTHER)
    assert other.reason == Reason.EXPECTED_PATIENT_MISMATCH


def test_printed_number_without_barcode_is_read_by_ocr(cards):
    pytest.importorskip("bildsluss_common.readers.ocr")
    # A generous budget: tesseract is slow on a busy CI machine, and a budget
    # cut short reads nothing (which would refuse the card, not pass it).
    _, _, identified, decision = run(cards, "printed", budget_s=6.0, barcode=False, label_angle=3)
    methods = {e.method for e in identified.evidence if e.patient_id}
    assert methods == {Method.OCR}
    assert decision.accepted and decision.patient_id == CANONICAL


# --------------------------------------------------------------------------- assault


def test_assault_every_picture_carries_the_number(cards):
    spec, _, identified, decision = run(cards, "assault-all", Mode.ASSAULT, label_on="all")
    assert set(ids_by_file(identified)) == set(spec.files)
    assert decision.accepted and decision.patient_id == CANONICAL


def test_assault_card_with_an_unlabelled_picture(cards):
    spec, _, _, decision = run(cards, "good", Mode.ASSAULT, n_images=4)
    assert decision.reason == Reason.ID_MISSING_ON_FRAME
    assert spec.files[1] in decision.detail and spec.files[2] in decision.detail


def test_required_positions_by_mode(cards):
    spec, scan, _, _ = run(cards, "good", n_images=4)
    f = spec.files
    assert required_positions(scan.media, Mode.PHOTO) == {f[0]: ("first",), f[3]: ("last",)}
    assert required_positions(scan.media, Mode.ASSAULT) == {p: ("every",) for p in f}
    assert required_positions(scan.media[:1], Mode.PHOTO) == {f[0]: ("first", "last")}
    assert required_positions((), Mode.PHOTO) == {}


# --------------------------------------------------------------------------- readings -> evidence


def reading(text: str, method: Method = Method.BARCODE) -> Reading:
    return Reading(text=text, method=method, symbology="Code128", position=(1, 2, 3, 4))


@pytest.mark.parametrize("text, expected", [
    ("191212121212", [(CANONICAL, False)]),
    ("19121212-1212", [(CANONICAL, False)]),
    ("121212+1212", [(CANONICAL, False)]),
    ("PNR:19121212-1212", [(CANONICAL, False)]),
    ("^19121212-1212^TOLVANSSON^TOLVAN", [(CANONICAL, False)]),
    ("19121212-1213", [(None, True)]),
    ("191212121213", [(None, True)]),
    (f"{PATIENT} {OTHER}", [(CANONICAL, False), (OTHER_CANONICAL, False)]),
    ("https://example.com/p?id=19121212-1212", [(CANONICAL, False)]),
    ("https://example.com/dressing/4711", [(None, False)]),
    ("0107312345678901172512311012345", [(None, False)]),
    ("", [(None, False)]),
])
def test_evidence_from_a_reading(text, expected):
    out = evidence_from_reading(reading(text), "DCIM/100CANON/IMG_0001.JPG", 3)
    assert [(e.patient_id, e.invalid) for e in out] == expected
    assert all(e.text == text and e.frame == 3 and e.position == (1, 2, 3, 4)
               and e.method == Method.BARCODE and e.symbology == "Code128" for e in out)


def test_read_frame_reads_one_picture_as_identify_does(cards):
    from PIL import Image

    from agent.card.identify import read_frame

    spec, _ = cards("good", n_images=4)
    with Image.open(spec.root / spec.files[0]) as img:
        evidence = read_frame(img.convert("RGB"), spec.files[0], budget_s=BUDGET)
    assert [(e.patient_id, e.method) for e in evidence] == [(CANONICAL, Method.BARCODE)]


def test_read_picture_reads_the_file_as_identify_does(cards):
    """The half-size decode and the cheap passes first; the positions are the full picture's."""
    from PIL import Image

    from agent.card.identify import read_picture

    spec, _ = cards("good", n_images=4)
    path = spec.root / spec.files[0]
    evidence = read_picture(path, spec.files[0], budget_s=BUDGET)
    assert [(e.patient_id, e.method) for e in evidence] == [(CANONICAL, Method.BARCODE)]
    x, y, w, h = evidence[0].position
    with Image.open(path) as img:
        assert 0 <= x and 0 <= y and x + w <= img.width and y + h <= img.height
        assert w * h >= 0.002 * img.width * img.height  # a label, not a quarter-size box


# --------------------------------------------------------------------------- CPU-time budgets


def test_budget_is_cpu_time_so_waiting_does_not_spend_it():
    """Other load on the capture PC must not turn into refusals: a frame's budget
    counts the CPU the readers use, not the time the machine makes them wait."""
    import time

    from bildsluss_common.readers.budget import Budget

    b = Budget(0.5)
    time.sleep(0.3)  # no CPU used: as if another process had the core
    assert b.left() > 0.3 and not b.spent()


def test_budget_counts_the_tesseract_processes_and_has_a_wall_clock_backstop():
    import subprocess
    import sys
    import time

    from bildsluss_common.readers.budget import Budget

    b = Budget(30.0)
    before = b.left()
    # A child process burning CPU, waited for (a reader that runs a program waits for it).
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(6_000_000))"], check=True)
    assert before - b.left() > 0.1
    stuck = Budget(5.0, wall_s=0.2)
    time.sleep(0.3)
    assert stuck.spent() and stuck.wall_left() < 0
