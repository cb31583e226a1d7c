"""The decide stage's rules (agent/decide.py), one branch at a time, on plain data.

No images: the scan and the identify stage's evidence are built by hand, so
every rule and the order between rules is pinned down exactly.
"""
from __future__ import annotations

import pathlib

import pytest

from agent.card.decide import canonical_expect, decide
from agent.card.identify import FileProblem, IdentifyResult, VideoWindows
from agent.card.model import Evidence, MediaFile, MediaKind, Method, Mode, ScanResult
from agent.card.reasons import Reason
from tests.support.cardgen import make_personnummer

A = "191212121212"  # Skatteverket's test personnummer, canonical
A_TEXT = "19121212-1212"
B_TEXT = make_personnummer("19820415", "238")
B = B_TEXT.replace("-", "")
C = make_personnummer("20010101", "123").replace("-", "")
ROOT = pathlib.Path("/card")


def media(name: str, kind: MediaKind = MediaKind.IMAGE) -> MediaFile:
    types = {MediaKind.IMAGE: "image/jpeg", MediaKind.VIDEO: "video/mp4",
             MediaKind.AUDIO: "audio/x-wav", MediaKind.DICOM: "application/dicom"}
    return MediaFile(path=ROOT / name, relative_path=name, kind=kind, media_type=types[kind],
                     size=1000, sha256="0" * 64, mtime_ns=0)


def card(*names: str, kinds: dict[str, MediaKind] | None = None) -> ScanResult:
    kinds = kinds or {}
    return ScanResult(root=ROOT, media=tuple(media(n, kinds.get(n, MediaKind.IMAGE)) for n in names),
                      skipped=())


def photos(n: int) -> ScanResult:
    return card(*[f"DCIM/100CANON/IMG_{i:04d}.JPG" for i in range(1, n + 1)])


def ev(path: str, patient: str | None, *, text: str | None = None, invalid: bool = False,
       method: Method = Method.BARCODE, frame: int = 0) -> Evidence:
    return Evidence(relative_path=path, frame=frame, method=method,
                    text=text if text is not None else (patient or "junk"),
                    patient_id=patient, symbology="Code128" if method == Method.BARCODE else "",
                    invalid=invalid)


def result(scan: ScanResult, *evidence: Evidence, examined: tuple[str, ...] | None = None,
           **kw) -> IdentifyResult:
    if examined is None:
        examined = tuple(m.relative_path for m in scan.media if m.kind != MediaKind.AUDIO)
    return IdentifyResult(evidence=tuple(evidence), examined=examined, **kw)


def paths(scan: ScanResult) -> list[str]:
    return [m.relative_path for m in scan.media]


# --------------------------------------------------------------------------- accepted


def test_first_and_last_agree_accepts_the_patient():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[3], A)), Mode.PHOTO, expect=None)
    assert d.accepted and d.patient_id == A and d.reason is None
    assert [e.relative_path for e in d.evidence] == [p[0], p[3]]
    assert d.ehr_context is False


def test_a_single_picture_is_first_and_last():
    s = photos(1)
    d = decide(s, result(s, ev(paths(s)[0], A)), Mode.PHOTO, expect=None)
    assert d.accepted and d.patient_id == A


def test_same_patient_in_the_middle_too_is_fine():
    s = photos(3)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[1], A), ev(p[2], A)), Mode.PHOTO, expect=None)
    assert d.accepted and d.patient_id == A


def test_barcodes_that_are_not_numbers_are_ignored_but_kept():
    s = photos(3)
    p = paths(s)
    url = ev(p[1], None, text="https://example.com/dressing/4711")
    d = decide(s, result(s, ev(p[0], A), url, ev(p[2], A)), Mode.PHOTO, expect=None)
    assert d.accepted and d.patient_id == A
    assert url in d.evidence


def test_expected_patient_matches_sets_ehr_context():
    s = photos(2)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[1], A)), Mode.PHOTO, expect=A_TEXT)
    assert d.accepted and d.patient_id == A and d.ehr_context is True


def test_expect_in_any_valid_form_is_canonicalised():
    assert canonical_expect("121212+1212") == A  # "+": 100 or older
    assert canonical_expect("121212-1212") == "20" + A[2:]  # the 10-digit form: born 2012
    assert canonical_expect("191212121212") == A
    assert canonical_expect("19121212-1213") is None
    assert canonical_expect(None) is None


# --------------------------------------------------------------------------- 1 EMPTY_CARD


def test_no_media_is_an_empty_card():
    s = card()
    d = decide(s, result(s), Mode.PHOTO, expect=None)
    assert d.reason == Reason.EMPTY_CARD and not d.accepted and d.patient_id is None


def test_empty_card_outranks_missing_context():
    s = card()
    assert decide(s, result(s), Mode.AUDIO, expect=None).reason == Reason.EMPTY_CARD


# --------------------------------------------------------------------------- 2 EHR_CONTEXT_REQUIRED


@pytest.mark.parametrize("mode", [Mode.ULTRASOUND, Mode.AUDIO])
def test_ultrasound_and_audio_need_the_ehr_context(mode):
    kinds = {"a.wav": MediaKind.AUDIO} if mode == Mode.AUDIO else {}
    s = card("a.wav" if mode == Mode.AUDIO else "us1.jpg", kinds=kinds)
    ids = () if mode == Mode.AUDIO else (ev("us1.jpg", A, method=Method.OCR),)
    d = decide(s, result(s, *ids), mode, expect=None)
    assert d.reason == Reason.EHR_CONTEXT_REQUIRED and mode.value in d.detail


def test_an_audio_file_on_a_photo_card_needs_the_context():
    s = card("IMG_0001.JPG", "VOICE001.WAV", "IMG_0002.JPG", kinds={"VOICE001.WAV": MediaKind.AUDIO})
    r = result(s, ev("IMG_0001.JPG", A), ev("IMG_0002.JPG", A))
    d = decide(s, r, Mode.PHOTO, expect=None)
    assert d.reason == Reason.EHR_CONTEXT_REQUIRED and "VOICE001.WAV" in d.detail
    ok = decide(s, r, Mode.PHOTO, expect=A_TEXT)
    assert ok.accepted and ok.patient_id == A
    ehr = [e for e in ok.evidence if e.method == Method.EHR_CONTEXT]
    assert [(e.relative_path, e.patient_id) for e in ehr] == [("VOICE001.WAV", A)]


def test_audio_takes_the_patient_from_the_context():
    s = card("REC001.WAV", "REC002.WAV", kinds={"REC001.WAV": MediaKind.AUDIO,
                                                "REC002.WAV": MediaKind.AUDIO})
    d = decide(s, result(s), Mode.AUDIO, expect="121212+1212")
    assert d.accepted and d.patient_id == A and d.ehr_context is True
    assert {e.method for e in d.evidence} == {Method.EHR_CONTEXT}
    assert {e.relative_path for e in d.evidence} == {"REC001.WAV", "REC002.WAV"}


def test_an_invalid_expected_number_refuses():
    s = photos(2)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[1], A)), Mode.PHOTO, expect="19121212-1213")
    assert d.reason == Reason.INVALID_ID and "expected" in d.detail


# --------------------------------------------------------------------------- 3 not examined


def test_a_file_identify_did_not_read_refuses():
    s = photos(3)
    p = paths(s)
    r = result(s, ev(p[0], A), ev(p[2], A), examined=(p[0], p[2]))
    d = decide(s, r, Mode.PHOTO, expect=None)
    assert d.reason == Reason.INTERNAL_ERROR and p[1] in d.detail


# --------------------------------------------------------------------------- 4 FIRST_LAST_MISMATCH


def test_first_and_last_disagree():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[3], B)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.FIRST_LAST_MISMATCH
    assert p[0] in d.detail and p[3] in d.detail and A in d.detail and B in d.detail


def test_first_last_mismatch_outranks_mixed_and_expected():
    s = photos(4)
    p = paths(s)
    r = result(s, ev(p[0], A), ev(p[1], C), ev(p[3], B))
    assert decide(s, r, Mode.PHOTO, expect=A_TEXT).reason == Reason.FIRST_LAST_MISMATCH


# --------------------------------------------------------------------------- 5 MIXED_PATIENTS


def test_another_patient_in_the_middle_mixes_the_card():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[2], B), ev(p[3], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.MIXED_PATIENTS
    assert f"{B} on {p[2]}" in d.detail and A in d.detail


def test_two_labels_in_the_first_picture_mix_the_card():
    s = photos(2)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[0], B), ev(p[1], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.MIXED_PATIENTS


def test_barcode_and_ocr_disagreeing_mix_the_card():
    s = photos(2)
    p = paths(s)
    r = result(s, ev(p[0], A), ev(p[1], A), ev(p[1], B, method=Method.OCR))
    assert decide(s, r, Mode.PHOTO, expect=None).reason == Reason.MIXED_PATIENTS


def test_mixed_outranks_expected_and_invalid():
    s = photos(3)
    p = paths(s)
    r = result(s, ev(p[0], A), ev(p[1], B), ev(p[1], None, text="19121212-1213", invalid=True),
               ev(p[2], A))
    assert decide(s, r, Mode.PHOTO, expect=B_TEXT).reason == Reason.MIXED_PATIENTS


def test_dicom_header_and_overlay_disagreeing_mix_the_card():
    s = card("US0001.dcm", kinds={"US0001.dcm": MediaKind.DICOM})
    r = result(s, ev("US0001.dcm", A, method=Method.DICOM_HEADER),
               ev("US0001.dcm", B, method=Method.OCR, frame=1))
    assert decide(s, r, Mode.ULTRASOUND, expect=A_TEXT).reason == Reason.MIXED_PATIENTS


# --------------------------------------------------------------------------- 6 EXPECTED_PATIENT_MISMATCH


def test_the_card_shows_another_patient_than_the_record():
    s = photos(3)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[2], A)), Mode.PHOTO, expect=B_TEXT)
    assert d.reason == Reason.EXPECTED_PATIENT_MISMATCH and B in d.detail and A in d.detail


def test_expected_mismatch_outranks_invalid_and_missing():
    s = photos(3)
    p = paths(s)
    r = result(s, ev(p[0], A), ev(p[1], None, text="19121212-1213", invalid=True))
    assert decide(s, r, Mode.PHOTO, expect=B_TEXT).reason == Reason.EXPECTED_PATIENT_MISMATCH


def test_ultrasound_must_match_the_record():
    s = card("US1.dcm", "US2.dcm", kinds={"US1.dcm": MediaKind.DICOM, "US2.dcm": MediaKind.DICOM})
    r = result(s, ev("US1.dcm", A, method=Method.DICOM_HEADER),
               ev("US2.dcm", A, method=Method.DICOM_HEADER))
    assert decide(s, r, Mode.ULTRASOUND, expect=A_TEXT).accepted
    assert decide(s, r, Mode.ULTRASOUND, expect=B_TEXT).reason == Reason.EXPECTED_PATIENT_MISMATCH


# --------------------------------------------------------------------------- 7 unreadable files


def test_a_file_identify_could_not_read_refuses_with_its_reason():
    s = photos(3)
    p = paths(s)
    r = result(s, ev(p[0], A), ev(p[2], A),
               problems=(FileProblem(p[1], Reason.NOT_MEDIA, "cannot decode the image"),))
    d = decide(s, r, Mode.PHOTO, expect=None)
    assert d.reason == Reason.NOT_MEDIA and p[1] in d.detail


def test_dicom_frames_not_checked_refuse():
    s = card("US1.dcm", kinds={"US1.dcm": MediaKind.DICOM})
    r = result(s, ev("US1.dcm", A, method=Method.DICOM_HEADER),
               problems=(FileProblem("US1.dcm", Reason.ID_MISSING_ON_FRAME, "frames 30-59 ..."),))
    assert decide(s, r, Mode.ULTRASOUND, expect=A_TEXT).reason == Reason.ID_MISSING_ON_FRAME


# --------------------------------------------------------------------------- 8 INVALID_ID


@pytest.mark.parametrize("where", [0, 1, 3])
def test_a_number_that_does_not_validate_refuses_wherever_it_is(where):
    s = photos(4)
    p = paths(s)
    bad = ev(p[where], None, text="19121212-1213", invalid=True)
    r = result(s, ev(p[0], A), bad, ev(p[3], A))
    d = decide(s, r, Mode.PHOTO, expect=None)
    assert d.reason == Reason.INVALID_ID and p[where] in d.detail and "19121212-1213" in d.detail


def test_a_smudged_first_label_is_invalid_not_missing():
    s = photos(3)
    p = paths(s)
    r = result(s, ev(p[0], None, text="19121212-1213", invalid=True), ev(p[2], A))
    assert decide(s, r, Mode.PHOTO, expect=None).reason == Reason.INVALID_ID


def test_invalid_ocr_reading_on_an_otherwise_empty_card_is_invalid():
    s = photos(2)
    p = paths(s)
    r = result(s, ev(p[0], None, text="191212-l2l2", invalid=True, method=Method.OCR))
    assert decide(s, r, Mode.PHOTO, expect=None).reason == Reason.INVALID_ID


# --------------------------------------------------------------------------- 9 NO_ID_FOUND


def test_no_number_anywhere():
    s = photos(3)
    d = decide(s, result(s), Mode.PHOTO, expect=None)
    assert d.reason == Reason.NO_ID_FOUND and all(x in d.detail for x in paths(s))


def test_only_product_barcodes_is_no_id():
    s = photos(2)
    p = paths(s)
    r = result(s, ev(p[0], None, text="https://example.com"), ev(p[1], None, text="4711-ABC"))
    assert decide(s, r, Mode.PHOTO, expect=None).reason == Reason.NO_ID_FOUND


def test_number_on_the_first_but_not_on_the_last_is_not_found():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.NO_ID_FOUND
    assert f"last picture, {p[3]}" in d.detail and f"first picture, {p[0]} shows {A}" in d.detail


def test_number_on_the_last_but_not_on_the_first_is_not_found():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[3], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.NO_ID_FOUND and f"first picture, {p[0]}" in d.detail


def test_number_only_in_the_middle_is_not_enough():
    s = photos(3)
    p = paths(s)
    assert decide(s, result(s, ev(p[1], A)), Mode.PHOTO, expect=None).reason == Reason.NO_ID_FOUND


def test_the_record_does_not_replace_the_label_in_photo_mode():
    s = photos(2)
    assert decide(s, result(s), Mode.PHOTO, expect=A_TEXT).reason == Reason.NO_ID_FOUND


# --------------------------------------------------------------------------- 10 ID_MISSING_ON_FRAME


def test_assault_every_picture_shows_the_number():
    s = photos(3)
    p = paths(s)
    ok = decide(s, result(s, *(ev(x, A) for x in p)), Mode.ASSAULT, expect=None)
    assert ok.accepted and ok.patient_id == A
    d = decide(s, result(s, ev(p[0], A), ev(p[2], A)), Mode.ASSAULT, expect=None)
    assert d.reason == Reason.ID_MISSING_ON_FRAME and p[1] in d.detail and p[0] not in d.detail


def test_assault_with_no_number_at_all_is_not_found():
    s = photos(2)
    assert decide(s, result(s), Mode.ASSAULT, expect=None).reason == Reason.NO_ID_FOUND


def test_ultrasound_every_image_shows_the_number():
    s = card("US1.jpg", "US2.jpg")
    r = result(s, ev("US1.jpg", A, method=Method.OCR))
    d = decide(s, r, Mode.ULTRASOUND, expect=A_TEXT)
    assert d.reason == Reason.ID_MISSING_ON_FRAME and "US2.jpg" in d.detail


# --------------------------------------------------------------------------- video


def test_video_label_must_be_in_the_first_and_last_seconds():
    s = card("MVI_0001.MP4", kinds={"MVI_0001.MP4": MediaKind.VIDEO})
    windows = (VideoWindows("MVI_0001.MP4", head=(0, 12, 24), tail=(276, 288, 299)),)
    both = result(s, ev("MVI_0001.MP4", A, frame=12), ev("MVI_0001.MP4", A, frame=299), videos=windows)
    assert decide(s, both, Mode.VIDEO, expect=None).accepted
    head_only = result(s, ev("MVI_0001.MP4", A, frame=0), videos=windows)
    d = decide(s, head_only, Mode.VIDEO, expect=None)
    assert d.reason == Reason.NO_ID_FOUND and "last seconds of MVI_0001.MP4" in d.detail
    differ = result(s, ev("MVI_0001.MP4", A, frame=0), ev("MVI_0001.MP4", B, frame=288),
                    videos=windows)
    assert decide(s, differ, Mode.VIDEO, expect=None).reason == Reason.FIRST_LAST_MISMATCH


def test_assault_clip_needs_the_number_in_its_first_and_last_seconds():
    """Assault mode wants the number on every picture; a clip is two pictures: its first
    and its last seconds. A label only at the start is not enough (it was enough before:
    'every' accepted any sampled frame)."""
    s = card("IMG_0001.JPG", "MVI_0002.MP4", kinds={"MVI_0002.MP4": MediaKind.VIDEO})
    windows = (VideoWindows("MVI_0002.MP4", head=(0, 12, 24), tail=(276, 288, 299)),)
    both = result(s, ev("IMG_0001.JPG", A), ev("MVI_0002.MP4", A, frame=24),
                  ev("MVI_0002.MP4", A, frame=288), videos=windows)
    assert decide(s, both, Mode.ASSAULT, expect=None).accepted
    for frame, gap in ((0, "last"), (299, "first")):
        one = result(s, ev("IMG_0001.JPG", A), ev("MVI_0002.MP4", A, frame=frame), videos=windows)
        d = decide(s, one, Mode.ASSAULT, expect=None)
        assert d.reason == Reason.ID_MISSING_ON_FRAME, d
        assert f"MVI_0002.MP4 (its {gap} seconds)" in d.detail and "IMG_0001.JPG" not in d.detail
    # Evidence on a frame that was not sampled in either window does not count.
    stray = result(s, ev("IMG_0001.JPG", A), ev("MVI_0002.MP4", A, frame=0),
                   ev("MVI_0002.MP4", A, frame=150), videos=windows)
    assert decide(s, stray, Mode.ASSAULT, expect=None).reason == Reason.ID_MISSING_ON_FRAME


def test_ultrasound_cine_needs_the_number_on_every_sampled_frame():
    s = card("US0001.JPG", "US0002.MP4", kinds={"US0002.MP4": MediaKind.VIDEO})
    windows = (VideoWindows("US0002.MP4", head=(0, 5, 10), tail=(10, 15, 19)),)
    frames = (0, 5, 10, 15, 19)
    every = result(s, ev("US0001.JPG", A, method=Method.OCR),
                   *(ev("US0002.MP4", A, method=Method.OCR, frame=f) for f in frames), videos=windows)
    assert decide(s, every, Mode.ULTRASOUND, expect=A_TEXT).accepted
    gap = result(s, ev("US0001.JPG", A, method=Method.OCR),
                 *(ev("US0002.MP4", A, method=Method.OCR, frame=f) for f in frames if f != 10),
                 videos=windows)
    d = decide(s, gap, Mode.ULTRASOUND, expect=A_TEXT)
    assert d.reason == Reason.ID_MISSING_ON_FRAME and "US0002.MP4 (frame 10)" in d.detail
    assert "frame 5" not in d.detail


def test_video_without_sampled_windows_is_not_trusted():
    s = card("MVI_0001.MP4", kinds={"MVI_0001.MP4": MediaKind.VIDEO})
    r = result(s, ev("MVI_0001.MP4", A, frame=0))
    assert decide(s, r, Mode.VIDEO, expect=None).reason == Reason.NO_ID_FOUND


def test_photo_series_ending_with_a_clip():
    s = card("IMG_0001.JPG", "MVI_0002.MP4", kinds={"MVI_0002.MP4": MediaKind.VIDEO})
    windows = (VideoWindows("MVI_0002.MP4", head=(0,), tail=(100,)),)
    r = result(s, ev("IMG_0001.JPG", A), ev("MVI_0002.MP4", A, frame=100), videos=windows)
    assert decide(s, r, Mode.PHOTO, expect=None).accepted
    r = result(s, ev("IMG_0001.JPG", A), ev("MVI_0002.MP4", A, frame=0), videos=windows)
    assert decide(s, r, Mode.PHOTO, expect=None).reason == Reason.NO_ID_FOUND


# --------------------------------------------------------------------------- output


def test_refusals_carry_all_evidence_and_no_patient():
    s = photos(4)
    p = paths(s)
    evidence = (ev(p[0], A), ev(p[2], B), ev(p[3], A))
    d = decide(s, result(s, *evidence), Mode.PHOTO, expect=None)
    assert d.patient_id is None and not d.accepted and d.evidence == evidence


def test_detail_names_at_most_a_few_files():
    s = photos(40)
    d = decide(s, result(s), Mode.PHOTO, expect=None)
    assert "and 34 more" in d.detail


def test_expected_reservnummer_needs_the_configured_formats():
    """A reservnummer in EHR context matches only when its region format is enabled."""
    from bildsluss_common.identity.reserve import from_config

    formats = from_config({"reserve_formats": ["sll"]})
    reserve = "991981000010"
    s = photos(2)
    p = paths(s)
    r = result(s, ev(p[0], reserve), ev(p[1], reserve))
    accepted = decide(s, r, Mode.PHOTO, expect=reserve, reserve_formats=formats)
    assert accepted.accepted and accepted.patient_id == reserve
    refused = decide(s, r, Mode.PHOTO, expect=reserve)
    assert not refused.accepted and refused.reason == Reason.INVALID_ID


# --------------------------------------------------------------------------- unread labels (issue 12)


def unread(path: str) -> Evidence:
    return Evidence(relative_path=path, frame=0, method=Method.UNREAD_LABEL,
                    text="a label-like region with a number-like line that is not a patient number",
                    patient_id=None, position=(10, 20, 300, 120))


def test_an_unread_label_in_the_middle_refuses_the_card():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), unread(p[2]), ev(p[3], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.UNREADABLE_LABEL_MID_CARD and not d.accepted
    assert p[2] in d.detail and "number-like" in d.detail
    assert d.evidence[1].to_json()["method"] == "unread_label"
    # With the EHR's own patient on the ends, still refused: the label may be another's.
    d = decide(s, result(s, ev(p[0], A), unread(p[2]), ev(p[3], A)), Mode.PHOTO, expect=A_TEXT)
    assert d.reason == Reason.UNREADABLE_LABEL_MID_CARD


def test_another_patient_read_elsewhere_says_mixed_before_unread():
    s = photos(4)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), unread(p[1]), ev(p[2], B), ev(p[3], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.MIXED_PATIENTS


def test_a_misread_number_says_invalid_before_unread():
    s = photos(3)
    p = paths(s)
    d = decide(s, result(s, ev(p[0], A), ev(p[1], None, text="19121212-1213", invalid=True),
                         unread(p[1]), ev(p[2], A)), Mode.PHOTO, expect=None)
    assert d.reason == Reason.INVALID_ID
