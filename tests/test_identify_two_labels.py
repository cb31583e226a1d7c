"""A first or last picture that shows two labels: the second is sought (issue 12, R4).

The first/last picture used to stop at the first number read; a picture that
also shows another patient's label (a barcode of one, the printed text of
another) was archived under the first. Now every label-like region of the
picture that holds no number read yet is read (barcode on a full-resolution
crop, then OCR of the crop). Two labels are composed into one frame from
rendered label photos (tests.support.labels) and a real barcode photo of the
corpus; real zxing-cpp and tesseract, the real scan, identify and decide stages.
"""
from __future__ import annotations

import pathlib

import pytest
from PIL import Image

from agent.card import scan as scan_stage
from agent.card.decide import decide
from agent.card.identify import identify
from agent.card.model import Mode
from agent.card.reasons import Reason
from tests.support.cardgen import make_card, make_personnummer
from tests.support.labels import render_label

pytest.importorskip("bildsluss_common.readers.ocr")

PATIENT = "19121212-1212"
CANONICAL = "191212121212"
OTHER = make_personnummer("19820415", "238")
OTHER_CANONICAL = OTHER.replace("-", "")
CORPUS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "corpus"
PRODUCT_PHOTO = CORPUS / "barcodes" / "code128" / "zxing__code128-2" / "03.png"  # "005-3379497200006"
# Generous: a budget cut short can only refuse a card, never pass one.
BUDGET = 6.0


def _label(number: str, size: tuple[int, int], *, barcode: bool, seed: int) -> tuple[Image.Image, tuple]:
    """A label photographed on skin in a scene of ``size``: the scene, and the sticker's box."""
    rendered = render_label(number, "ANDERSSON, ANNA" if barcode else "NILSSON, LARS",
                            symbology="Code128" if barcode else None, size=size[0] // 4,
                            rotation=5 if barcode else -7, blur=0.6, noise=3, jpeg_quality=None,
                            scene_size=size, seed=seed)
    return rendered.image, rendered.truth.label_box


def _beside(scene: Image.Image, box: tuple, patch: Image.Image) -> Image.Image:
    """``patch`` pasted on ``scene`` on the side away from ``box`` (the first label)."""
    x, y, w, h = box
    right = x + w / 2 < scene.width / 2
    px = int(scene.width * 0.95) - patch.width if right else int(scene.width * 0.05)
    py = max(0, min(scene.height - patch.height, int(y + h / 2 - patch.height / 2)))
    out = scene.copy()
    out.paste(patch, (px, py))
    return out


def _replace_first(card_root: pathlib.Path, first: str, picture: Image.Image) -> None:
    """The card's first picture shows ``picture`` instead; its EXIF (capture time) is kept."""
    path = card_root / first
    with Image.open(path) as original:
        exif = original.info.get("exif", b"")
    picture.convert("RGB").save(path, "JPEG", quality=92, exif=exif)


def _card(tmp_path: pathlib.Path, seed: int):
    spec = make_card(tmp_path / "card", patient=PATIENT, n_images=3, megapixels=4.0, seed=seed)
    with Image.open(spec.root / spec.files[0]) as first:
        size = first.size
    return spec, size


def _run(root: pathlib.Path):
    scan = scan_stage.scan(root)
    identified = identify(scan, Mode.PHOTO, budget_s=BUDGET)
    return identified, decide(scan, identified, Mode.PHOTO, expect=None)


def test_a_barcode_of_one_and_the_printed_label_of_another_are_mixed(tmp_path):
    spec, size = _card(tmp_path, seed=31)
    scene, box = _label(PATIENT, size, barcode=True, seed=1)
    other_scene, other_box = _label(OTHER, size, barcode=False, seed=2)
    ox, oy, ow, oh = other_box
    _replace_first(spec.root, spec.files[0], _beside(scene, box, other_scene.crop((ox, oy, ox + ow, oy + oh))))
    identified, decision = _run(spec.root)
    first = identified.on(spec.files[0])
    assert {e.patient_id for e in first if e.patient_id} == {CANONICAL, OTHER_CANONICAL}
    assert decision.reason == Reason.MIXED_PATIENTS and spec.files[0] in decision.detail
    assert not decision.accepted


def test_two_print_only_labels_of_two_patients_are_mixed(tmp_path):
    spec, size = _card(tmp_path, seed=32)
    scene, box = _label(PATIENT, size, barcode=False, seed=3)
    other_scene, other_box = _label(OTHER, size, barcode=False, seed=4)
    ox, oy, ow, oh = other_box
    _replace_first(spec.root, spec.files[0], _beside(scene, box, other_scene.crop((ox, oy, ox + ow, oy + oh))))
    identified, decision = _run(spec.root)
    assert {e.patient_id for e in identified.on(spec.files[0]) if e.patient_id} == {CANONICAL, OTHER_CANONICAL}
    assert decision.reason == Reason.MIXED_PATIENTS


@pytest.mark.skipif(not PRODUCT_PHOTO.is_file(), reason="the shared corpus is not here")
def test_a_product_barcode_beside_the_patient_label_is_no_second_patient(tmp_path):
    # A real phone photo of a product's Code 128 (the corpus) beside the patient's
    # label: read, no patient number in it, the card is archived for its patient.
    spec, size = _card(tmp_path, seed=33)
    scene, box = _label(PATIENT, size, barcode=True, seed=5)
    with Image.open(PRODUCT_PHOTO) as photo:
        product = photo.convert("RGB")
    _replace_first(spec.root, spec.files[0], _beside(scene, box, product))
    identified, decision = _run(spec.root)
    assert {e.patient_id for e in identified.evidence if e.patient_id} == {CANONICAL}
    assert decision.accepted and decision.patient_id == CANONICAL, decision.detail


def test_another_patients_printed_label_touching_the_barcode_label_is_mixed(tmp_path):
    # Two stickers 4 px apart are one label-like region on the reduced decode; the
    # patient's barcode was read in it, and that used to end the region: the other
    # patient's printed label beside it was never read and the card was archived.
    spec, size = _card(tmp_path, seed=43)
    scene, box = _label(PATIENT, size, barcode=True, seed=43)
    other_scene, other_box = _label(OTHER, size, barcode=False, seed=143)
    ox, oy, ow, oh = other_box
    x, y, w, h = box
    scene.paste(other_scene.crop((ox, oy, ox + ow, oy + oh)), (x + w + 4, y))
    _replace_first(spec.root, spec.files[0], scene)
    identified, decision = _run(spec.root)
    assert {e.patient_id for e in identified.on(spec.files[0]) if e.patient_id} == {CANONICAL, OTHER_CANONICAL}
    assert decision.reason == Reason.MIXED_PATIENTS and spec.files[0] in decision.detail
    assert not decision.accepted
