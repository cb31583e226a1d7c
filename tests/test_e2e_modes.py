"""End to end, every mode: assault, ultrasound (JPEG/PNG exports and DICOM), video, audio.

Realistic generated media (tests/support/mediagen.py, labels.py, cardgen.py) and the
real ultrasound DICOM corpus go through the real ``bildsluss-agent ingest`` into a
real archive process (one per module). The rules (R1, R3, R4, R5, R7, R10):

* a refused card is byte-identical afterwards and no case exists for any patient
  it shows (each test uses its own patients, so "no case" is exact);
* an archived card is filed under the true patient, and never another; every
  media file is archived and gone from the card, the rest (ignored housekeeping)
  stays; the exported files carry no identifying metadata and the same pixels /
  packets as the originals.

A product bug found here is marked as a strict xfail whose reason says precisely
what is wrong, so that it fails for exactly that reason and turns into an XPASS (a
failure) once fixed. None is open: the assault clip, the centenarian's "+" overlay,
the MP4 cine and the DICOMDIR tests were such xfails and now pass.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import ARCHIVE, ingest, snapshot
from tests.support.mediagen import (
    US_MODEL, US_SERIAL, overlay_frame, write_dicomdir_card, write_m4a, write_us_dicom,
    write_ultrasound_image, write_video, write_wav,
)

CORPUS_US = pathlib.Path("/work/shared/corpus/dicom/ultrasound")
CAMERA_MP = 1.5  # camera frames: small enough to keep the module fast, big enough to be real


# --------------------------------------------------------------------------- helpers


def canonical(number: str) -> str:
    return number.replace("-", "").replace("+", "")


def ten_digit(number: str, sep: str = "-") -> str:
    """``YYYYMMDD-NNNC`` in the 10-digit form ``YYMMDD-NNNC`` (``+``: 100 or older)."""
    return f"{number[2:8]}{sep}{number[9:]}"


def files_on(card: pathlib.Path) -> set[str]:
    return {str(p.relative_to(card)) for p in card.rglob("*") if p.is_file() or p.is_symlink()}


def _needles(number: str, names: tuple[str, ...]) -> list[str]:
    """Texts that identify the patient (any written form of the number, the name)."""
    digits = canonical(number)
    out = [digits, digits[2:], f"{digits[:8]}-{digits[8:]}", f"{digits[2:8]}-{digits[8:]}",
           f"{digits[2:8]}+{digits[8:]}"]
    for name in names:
        out += [part for part in name.replace(",", " ").replace("^", " ").split() if len(part) > 3]
    return out


_FORBIDDEN_KEY = ("GPS", "Make", "Model", "Serial", "Comment", "Title", "Artist", "Author",
                  "ImageDescription", "Software", "PatientName", "PatientID", "OtherPatientIDs",
                  "PatientBirthDate", "Thumbnail", "Preview")
_STRUCTURAL = {"HandlerDescription", "CompressorName", "PreviewTime", "PreviewDuration"}


def metadata_leaks(paths: list[pathlib.Path], number: str, names: tuple[str, ...] = (),
                   devices: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Per file, what exiftool (every group, unknown tags, embedded data) still finds
    identifying: a tag named like GPS/make/model/serial/comment/title..., or any value
    holding the patient's number (any form), name or the device's names."""
    if not paths:
        return {}
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", "-u", "-ee", *map(str, paths)],
                         capture_output=True, text=True, check=True)
    needles = [n.casefold() for n in (*_needles(number, names), *devices)]
    result: dict[str, list[str]] = {}
    for tags in json.loads(out.stdout):
        leaks = result.setdefault(tags["SourceFile"], [])
        for key, value in tags.items():
            if key == "SourceFile" or key.startswith(("System:", "ExifTool:")):
                continue
            name = key.split(":")[-1]
            if not key.startswith("ICC_Profile:") and name not in _STRUCTURAL and any(
                    f in name for f in _FORBIDDEN_KEY):
                leaks.append(f"{key}={value!r}")
            elif any(n in str(value).casefold() for n in needles):
                leaks.append(f"{key}={value!r}")
    return result


def dicom_leaks(path: pathlib.Path, number: str, names: tuple[str, ...]) -> list[str]:
    """Header elements of an exported DICOM file that still identify the patient."""
    import pydicom

    ds = pydicom.dcmread(path)
    leaks = [f"{kw}={ds.get(kw)!r}" for kw in ("PatientName", "PatientID", "OtherPatientIDs")
             if str(ds.get(kw, "") or "").strip()]
    needles = [n.casefold() for n in (*_needles(number, names), US_SERIAL)]
    for elem in ds.iterall():
        if elem.keyword == "PixelData" or elem.VR in ("OB", "OW", "UN", "SQ"):
            continue
        text = str(elem.value).casefold()
        if any(n in text for n in needles):
            leaks.append(f"{elem.keyword or elem.tag}={elem.value!r}")
    return leaks


def _streamhash(path: pathlib.Path) -> str:
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0",
                           "-c", "copy", "-f", "streamhash", "-hash", "sha256", "-"],
                          capture_output=True, text=True, check=True)
    return done.stdout


def same_essence(original: pathlib.Path, exported: pathlib.Path) -> None:
    """The exported file shows what the original showed: pixels, frames or packets."""
    head = original.read_bytes()[:132]
    if head[128:132] == b"DICM":
        import pydicom

        a, b = pydicom.dcmread(original), pydicom.dcmread(exported)
        assert np.array_equal(a.pixel_array, b.pixel_array), f"{exported}: DICOM pixels changed"
    elif head.startswith((b"\xff\xd8\xff", b"\x89PNG")):
        with Image.open(original) as a, Image.open(exported) as b:
            assert a.size == b.size and a.tobytes() == b.tobytes(), f"{exported}: pixels changed"
    else:
        assert _streamhash(original) == _streamhash(exported), f"{exported}: packets changed"


def all_cases(archive) -> list[dict]:
    """Every case in the archive (latest versions): one CLI call."""
    store = ["--data", str(archive.data), *(["--db", archive.db] if archive.db else [])]
    done = subprocess.run([*ARCHIVE, "cases", *store, "--json"], capture_output=True, text=True,
                          check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def expect_refused(archive, card: pathlib.Path, tmp_path: pathlib.Path, reason: str,
                   patients: tuple[str, ...], *extra: str) -> dict:
    """Ingest ``card``: refused with ``reason``, nothing uploaded, nothing deleted."""
    before = snapshot(card)
    code, out = ingest(card, archive.address, tmp_path, *extra)
    assert code == 3, out
    assert out["outcome"] == "refused" and out["reason"] == reason, out
    assert out["wiped"] is False and out["case_id"] is None and out["patient"] is None, out
    assert out["message"], "staff are told why"
    assert all(f["status"] in ("refused", "ignored") and f["sha256"] is None for f in out["files"]), out
    assert snapshot(card) == before, "a refused card must stay byte-identical (R4, R10)"
    filed = {c["patient"] for c in all_cases(archive)}
    assert not filed & {canonical(p) for p in patients}, "a case exists for a refused card's patient"
    return out


def expect_archived(archive, card: pathlib.Path, tmp_path: pathlib.Path, truth: str, *extra: str,
                    mode: str, names: tuple[str, ...] = (), devices: tuple[str, ...] = ()
                    ) -> tuple[dict, dict]:
    """Ingest ``card``: archived for ``truth`` and only ``truth``, card emptied of media,
    exported files clean (R7) and showing what the card showed. Returns (outcome, case)."""
    originals = tmp_path / "originals"
    shutil.copytree(card, originals, symlinks=True)
    code, out = ingest(card, archive.address, tmp_path, *extra)
    assert code == 0, out
    assert out["outcome"] == "archived" and out["reason"] is None and out["wiped"] is True, out
    assert out["patient"] == canonical(truth), f"WRONG PATIENT: {out['patient']} instead of {truth}"
    assert {e["patient"] for e in out["evidence"] if e["patient"]} == {canonical(truth)}, out["evidence"]
    archived = {f["path"]: f["sha256"] for f in out["files"] if f["status"] == "archived"}
    ignored = {f["path"] for f in out["files"] if f["status"] == "ignored"}
    assert archived and all(len(s) == 64 for s in archived.values())
    assert set(archived) | ignored == {f["path"] for f in out["files"]}

    # The card: no media left; what stays is exactly what the agent ignored.
    left = files_on(card)
    assert not left & set(archived), f"media left on the card: {sorted(left & set(archived))}"
    assert all(any(path == i or path.startswith(i.rstrip("/") + "/") for i in ignored) for path in left), \
        f"left on the card but neither archived nor ignored: {sorted(left - ignored)}"
    # Housekeeping stays, except what belonged to the wiped media (agent/wipe.py): a
    # DICOMDIR, a clip's .THM/.LRV, AppleDouble files, thumbnail caches (test_wipe.py).
    with_media = {i for i in ignored if pathlib.PurePath(i).name.lower() in
                  ("dicomdir", "thumbs.db", "ehthumbs.db", ".ds_store")
                  or i.lower().endswith((".thm", ".lrv")) or pathlib.PurePath(i).name.startswith("._")}
    assert all((card / i).exists() for i in ignored - with_media), "housekeeping must stay on the card"

    # The archive: one case, for the truth, with every file, in this mode.
    everything = all_cases(archive)
    assert [c["patient"] for c in everything if c["case_id"] == out["case_id"]] == [canonical(truth)]
    found = [c for c in everything if c["patient"] == canonical(truth)]
    assert [c["case_id"] for c in found] == [out["case_id"]], found
    case = found[0]
    assert case["media"] == len(archived)  # `cases --json`: a count; the items are media_items
    assert sorted(m["path"] for m in case["media_items"]) == sorted(archived)
    assert case["fields"]["mode"] == mode

    export = tmp_path / "export"
    store = ["--data", str(archive.data), *(["--db", archive.db] if archive.db else [])]
    subprocess.run([*ARCHIVE, "export", out["case_id"], str(export), *store],
                   check=True, capture_output=True)
    assert sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.is_file()) == sorted(archived)
    dicom = {rel for rel in archived if (export / rel).read_bytes()[128:132] == b"DICM"}
    leaks = metadata_leaks([export / rel for rel in sorted(set(archived) - dicom)], truth, names, devices)
    for rel in sorted(dicom):
        leaks[str(export / rel)] = dicom_leaks(export / rel, truth, names)
    for rel, sha in archived.items():
        exported = export / rel
        assert hashlib.sha256(exported.read_bytes()).hexdigest() == sha
        assert leaks.get(str(exported)) == [], f"{rel} still carries {leaks.get(str(exported))} (R7)"
        same_essence(originals / rel, exported)
    return out, case


def evidence_by_file(out: dict) -> dict[str, set[str]]:
    by: dict[str, set[str]] = {}
    for e in out["evidence"]:
        if e["patient"]:
            by.setdefault(e["file"], set()).add(e["method"])
    return by


# --------------------------------------------------------------------------- assault (misshandel)

ASSAULT = make_personnummer("19640312", "482")
ASSAULT_REFUSED = make_personnummer("19711005", "337")
ASSAULT_CLIP = make_personnummer("19930721", "158")


def test_assault_number_on_every_image_is_archived(archive, tmp_path):
    card = tmp_path / "card"
    spec = make_card(card, patient=ASSAULT, n_images=3, label_on="all", seed=101,
                     megapixels=CAMERA_MP)
    out, case = expect_archived(archive, card, tmp_path, ASSAULT, "--mode", "assault", mode="assault",
                                devices=(spec.camera.model,))
    # Single images go to the police: each one carries its own evidence (R3).
    assert set(evidence_by_file(out)) == set(spec.files)
    assert case["fields"]["ehr_context"] is False


def test_assault_image_without_the_label_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    spec = make_card(card, patient=ASSAULT_REFUSED, n_images=3, label_on=(0, 2), seed=102,
                     megapixels=CAMERA_MP)
    out = expect_refused(archive, card, tmp_path, "ID_MISSING_ON_FRAME", (ASSAULT_REFUSED,),
                         "--mode", "assault")
    assert spec.files[1] in out["detail"] and spec.files[0] not in out["detail"]


def test_assault_clip_needs_the_number_in_its_first_and_last_seconds(archive, tmp_path):
    card = tmp_path / "card"
    make_card(card, patient=ASSAULT_CLIP, n_images=2, label_on="all", seed=103,
              megapixels=CAMERA_MP)
    write_video(card / "DCIM/100CANON/MVI_0003.MP4", first=ASSAULT_CLIP, last=None, seconds=6,
                created=dt.datetime(2026, 3, 14, 10, 0, 0))
    out = expect_refused(archive, card, tmp_path, "ID_MISSING_ON_FRAME", (ASSAULT_CLIP,),
                         "--mode", "assault")
    assert "MVI_0003.MP4" in out["detail"]


# --------------------------------------------------------------------------- ultrasound exports (JPEG/PNG)

US = make_personnummer("19880229", "214")
US_NAME = "BERGSTRÖM, KARIN"
US_NO_CONTEXT = make_personnummer("19750618", "062")
US_WRONG_CONTEXT = make_personnummer("19590101", "873")
US_WRONG_CONTEXT_OTHER = make_personnummer("19600202", "445")
US_MIXED = make_personnummer("19811111", "229")
US_MIXED_OTHER = make_personnummer("19450909", "516")
US_OLD = make_personnummer("19200315", "125")  # over 100: printed 200315+125C
US_BLANK = make_personnummer("19990419", "303")
US_CINE = make_personnummer("20010203", "441")


def ultrasound_card(card: pathlib.Path, numbers: list[str], *, name: str = "ANDERSSON, ANNA",
                    fmts: tuple[str, ...] = ("JPEG",), seed: int = 0) -> list[str]:
    """A machine's USB export: EXPORT/US000n.JPG|PNG, 1024x768, overlay on every image."""
    out = []
    for i, number in enumerate(numbers):
        fmt = fmts[i % len(fmts)]
        rel = f"EXPORT/US{i + 1:04d}.{'JPG' if fmt == 'JPEG' else 'PNG'}"
        write_ultrasound_image(card / rel, number, fmt=fmt, name=name, seed=seed + i)
        out.append(rel)
    return out


def test_ultrasound_exports_with_ehr_context_are_archived(archive, tmp_path):
    card = tmp_path / "card"
    files = ultrasound_card(card, [US, US, US], name=US_NAME, fmts=("JPEG", "PNG"), seed=201)
    out, case = expect_archived(archive, card, tmp_path, US, "--mode", "ultrasound", "--expect", US,
                                mode="ultrasound", names=(US_NAME,), devices=(US_MODEL, US_SERIAL))
    # Every image read by OCR of its overlay (R3); the case records the EHR context (R5).
    assert {f: "ocr" in m for f, m in evidence_by_file(out).items()} == {f: True for f in files}
    assert case["fields"]["ehr_context"] is True
    kept = case["fields"]["identity_evidence"]
    assert {e["relative_path"] for e in kept if e["method"] == "ocr" and e["patient_id"]} == set(files)


def test_ultrasound_without_ehr_context_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    ultrasound_card(card, [US_NO_CONTEXT, US_NO_CONTEXT], seed=202)
    expect_refused(archive, card, tmp_path, "EHR_CONTEXT_REQUIRED", (US_NO_CONTEXT,),
                   "--mode", "ultrasound")


def test_ultrasound_of_another_patient_than_the_record_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    ultrasound_card(card, [US_WRONG_CONTEXT, US_WRONG_CONTEXT], seed=203)
    out = expect_refused(archive, card, tmp_path, "EXPECTED_PATIENT_MISMATCH",
                         (US_WRONG_CONTEXT, US_WRONG_CONTEXT_OTHER),
                         "--mode", "ultrasound", "--expect", US_WRONG_CONTEXT_OTHER)
    assert canonical(US_WRONG_CONTEXT) in out["detail"]


def test_ultrasound_frame_of_another_patient_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    files = ultrasound_card(card, [US_MIXED, US_MIXED_OTHER, US_MIXED], seed=204)
    out = expect_refused(archive, card, tmp_path, "MIXED_PATIENTS", (US_MIXED, US_MIXED_OTHER),
                         "--mode", "ultrasound", "--expect", US_MIXED)
    assert canonical(US_MIXED_OTHER) in out["detail"] and files[1] in out["detail"]


def test_ultrasound_overlay_in_the_ten_digit_form_of_a_centenarian(archive, tmp_path):
    """The overlay prints 200315+125C: '+' puts the birth in 1920, not 2020 (R2)."""
    card = tmp_path / "card"
    ultrasound_card(card, [ten_digit(US_OLD, "+")], name="LINDQVIST, ELSA", seed=205)
    out, _ = expect_archived(archive, card, tmp_path, US_OLD, "--mode", "ultrasound",
                             "--expect", ten_digit(US_OLD, "+"), mode="ultrasound",
                             names=("LINDQVIST, ELSA",), devices=(US_MODEL, US_SERIAL))
    assert out["patient"] == canonical(US_OLD) and out["patient"].startswith("1920")


def test_ultrasound_export_without_its_overlay_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    ultrasound_card(card, [US_BLANK, US_BLANK], seed=206)
    # A third export with the banner switched off (the machine's "hide patient data").
    frame = np.asarray(overlay_frame(US_BLANK, size=(1024, 768), seed=207)).copy()
    frame[:60] = 0
    Image.fromarray(frame).save(card / "EXPORT/US0003.JPG", quality=92)
    out = expect_refused(archive, card, tmp_path, "ID_MISSING_ON_FRAME", (US_BLANK,),
                         "--mode", "ultrasound", "--expect", US_BLANK)
    assert "EXPORT/US0003.JPG" in out["detail"]
    # Ultrasound's own sentence, not assault's (issue 12).
    assert "overlay" in out["message"] and "assault" not in out["message"]


def test_ultrasound_cine_exported_as_mp4_is_read_by_its_overlay(archive, tmp_path):
    import av

    card = tmp_path / "card"
    ultrasound_card(card, [US_CINE], seed=208)
    clip = card / "EXPORT/US0002.MP4"
    with av.open(str(clip), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(20):  # 2 s of cine, the banner on every frame
            for p in s.encode(av.VideoFrame.from_image(overlay_frame(US_CINE, size=(640, 480), seed=i))):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out, _ = expect_archived(archive, card, tmp_path, US_CINE, "--mode", "ultrasound",
                             "--expect", US_CINE, mode="ultrasound", devices=(US_MODEL, US_SERIAL))
    assert "ocr" in evidence_by_file(out)["EXPORT/US0002.MP4"]


# --------------------------------------------------------------------------- ultrasound DICOM

DCM = make_personnummer("19770823", "146")
DCM_NAME = "NILSSON^LARS"
DCM_SPLIT = make_personnummer("19580530", "271")
DCM_SPLIT_OTHER = make_personnummer("19900101", "237")
DCM_DIR = make_personnummer("19820415", "238")


def test_ultrasound_dicom_is_archived_with_header_and_overlay_evidence(archive, tmp_path):
    card = tmp_path / "card"
    banner = "NILSSON, LARS"
    # A 3-frame cine (Explicit VR Little Endian) and a still (RLE Lossless).
    write_us_dicom(card / "US0001.DCM",
                   [overlay_frame(DCM, name=banner, size=(640, 480), seed=s) for s in (301, 302, 303)],
                   DCM, name=DCM_NAME)
    write_us_dicom(card / "US0002.DCM", [overlay_frame(DCM, name=banner, size=(640, 480), seed=304)],
                   DCM, name=DCM_NAME, rle=True, instance=2)
    out, case = expect_archived(archive, card, tmp_path, DCM, "--mode", "ultrasound", "--expect", DCM,
                                mode="ultrasound", names=(DCM_NAME,))
    assert evidence_by_file(out) == {"US0001.DCM": {"dicom_header", "ocr"},
                                     "US0002.DCM": {"dicom_header", "ocr"}}
    # Every frame of the cine shows the number (read or carried over from a read frame).
    frames = {e["frame"] for e in out["evidence"]
              if e["file"] == "US0001.DCM" and e["method"] == "ocr" and e["patient"]}
    assert frames == {0, 1, 2}
    assert case["fields"]["ehr_context"] is True


@pytest.mark.parametrize("where", ["header", "cine_frame"])
def test_ultrasound_dicom_showing_two_patients_is_refused(archive, tmp_path, where):
    """Header vs overlay, or one frame of a cine: two valid numbers on the card -> MIXED_PATIENTS
    (decide rule 5; FIRST_LAST_MISMATCH does not apply: DICOM positions are 'every')."""
    card = tmp_path / "card"
    if where == "header":  # a wrong-patient export: the header names another patient
        frames = [overlay_frame(DCM_SPLIT, size=(640, 480), seed=311)]
        write_us_dicom(card / "US0001.DCM", frames, DCM_SPLIT_OTHER)
    else:
        frames = [overlay_frame(DCM_SPLIT, size=(640, 480), seed=s) for s in (312, 313, 314)]
        frames[2] = overlay_frame(DCM_SPLIT_OTHER, size=(640, 480), seed=314)
        write_us_dicom(card / "US0001.DCM", frames, DCM_SPLIT, rle=True)
    write_us_dicom(card / "US0002.DCM", [overlay_frame(DCM_SPLIT, size=(640, 480), seed=315)], DCM_SPLIT)
    out = expect_refused(archive, card, tmp_path, "MIXED_PATIENTS", (DCM_SPLIT, DCM_SPLIT_OTHER),
                         "--mode", "ultrasound", "--expect", DCM_SPLIT)
    assert canonical(DCM_SPLIT_OTHER) in out["detail"]


def _dicomdir_card(tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    """A DICOM media card (DICOMDIR + PT*/ST*/SE*/IM*) whose overlays print the
    10-digit form 820415-2386 while the headers hold the 12 digits."""
    src = tmp_path / "machine"
    files = [write_us_dicom(src / f"{i}.dcm", [overlay_frame(ten_digit(DCM_DIR), name="ERIKSSON, ERIK",
                                                             size=(640, 480), seed=320 + i)],
                            canonical(DCM_DIR), name="ERIKSSON^ERIK", rle=bool(i), instance=i + 1)
             for i in range(2)]
    card = tmp_path / "card"
    return card, write_dicomdir_card(card, files)


def test_dicomdir_card_is_archived(archive, tmp_path):
    card, referenced = _dicomdir_card(tmp_path)
    out, _ = expect_archived(archive, card, tmp_path, DCM_DIR, "--mode", "ultrasound",
                             "--expect", DCM_DIR, mode="ultrasound", names=("ERIKSSON^ERIK",))
    assert sorted(f["path"] for f in out["files"] if f["status"] == "archived") == referenced
    assert [f["path"] for f in out["files"] if f["status"] == "ignored"] == ["DICOMDIR"]
    assert set(evidence_by_file(out)) == set(referenced)


def test_dicomdir_does_not_outlive_the_wipe(archive, tmp_path):
    """The DICOMDIR indexing the wiped images goes with them (agent/wipe.py, docs/media.md)."""
    card, _ = _dicomdir_card(tmp_path)
    code, out = ingest(card, archive.address, tmp_path, "--mode", "ultrasound", "--expect", DCM_DIR)
    assert code == 0 and out["wiped"], out
    assert not (card / "DICOMDIR").exists(), "a stale DICOMDIR naming the patient stays on the card"
    assert files_on(card) == set(), "the card must be empty for the next patient"


# --------------------------------------------------------------------------- video

VID = make_personnummer("19660707", "519")
VID_FIRST = make_personnummer("19700312", "044")
VID_LAST = make_personnummer("19851230", "602")
CLIP = make_personnummer("19520101", "115")
CLIP_FIRST = make_personnummer("19931001", "376")
CLIP_LAST = make_personnummer("19931002", "389")


def test_video_with_the_label_first_and_last_is_archived(archive, tmp_path):
    card = tmp_path / "card"
    write_video(card / "DCIM/100CANON/MVI_0001.MP4", first=VID, last=VID, seconds=4)
    out, case = expect_archived(archive, card, tmp_path, VID, "--mode", "video", mode="video",
                                devices=("Canon EOS 250D", "avd 12"))
    frames = sorted(e["frame"] for e in out["evidence"] if e["patient"])
    assert frames[0] < 20 and frames[-1] >= 20, f"label read in both windows, got frames {frames}"
    assert case["fields"]["ehr_context"] is False


def test_video_ending_on_another_patient_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    write_video(card / "DCIM/100CANON/MVI_0001.MP4", first=VID_FIRST, last=VID_LAST, seconds=6)
    out = expect_refused(archive, card, tmp_path, "FIRST_LAST_MISMATCH", (VID_FIRST, VID_LAST),
                         "--mode", "video")
    assert canonical(VID_FIRST) in out["detail"] and canonical(VID_LAST) in out["detail"]


def _thumbnail(path: pathlib.Path) -> None:
    """Canon's .THM sidecar of a clip: a small JPEG, housekeeping the agent ignores."""
    Image.new("RGB", (160, 120), (198, 134, 102)).save(path, "JPEG")


def test_clip_on_a_photo_card_is_first_by_capture_time(archive, tmp_path):
    """The clip (numbered last) was filmed first and shows the label in its first seconds; the
    last photo shows it too; the photos between do not. First/last follow capture time."""
    card = tmp_path / "card"
    spec = make_card(card, patient=CLIP, n_images=3, label_on=("last",), seed=401,
                     megapixels=CAMERA_MP)
    write_video(card / "DCIM/100CANON/MVI_0004.MP4", first=CLIP, last=None, seconds=4, label_seconds=2.0,
                created=spec.images[0].capture_time - dt.timedelta(minutes=5))
    _thumbnail(card / "DCIM/100CANON/MVI_0004.THM")
    out, _ = expect_archived(archive, card, tmp_path, CLIP, mode="photo",
                             devices=("Canon EOS 250D", "avd 12"))
    assert set(evidence_by_file(out)) == {"DCIM/100CANON/MVI_0004.MP4", spec.files[-1]}
    # The clip's thumbnail shows the patient: it goes with the clip (agent/wipe.py, R10).
    assert not (card / "DCIM/100CANON/MVI_0004.THM").exists()


def test_clip_last_on_a_photo_card_ending_on_another_patient_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    spec = make_card(card, patient=CLIP_FIRST, n_images=3, label_on=("first",), seed=402,
                     megapixels=CAMERA_MP)
    write_video(card / "DCIM/100CANON/MVI_0004.MP4", first=None, last=CLIP_LAST, seconds=4, label_seconds=2.0,
                created=spec.images[-1].capture_time + dt.timedelta(minutes=5))
    out = expect_refused(archive, card, tmp_path, "FIRST_LAST_MISMATCH", (CLIP_FIRST, CLIP_LAST))
    assert spec.files[0] in out["detail"] and "MVI_0004.MP4" in out["detail"]


# --------------------------------------------------------------------------- audio

AUDIO_M4A = make_personnummer("19201130", "028")  # given from the EHR as 201130+028C
AUDIO_WAV = make_personnummer("19690914", "683")
AUDIO_NONE = make_personnummer("19830303", "121")


@pytest.mark.parametrize("kind", ["m4a", "wav"])
def test_audio_with_ehr_context_is_archived(archive, tmp_path, kind):
    card = tmp_path / "card"
    if kind == "m4a":
        truth, expect = AUDIO_M4A, ten_digit(AUDIO_M4A, "+")
        write_m4a(card / "REC/DS0001.M4A", seed=501,
                  tags={"title": f"Dorotea Berg {expect}", "artist": "Dr Karin Lindqvist",
                        "comment": "Olympus DS-9500 diktat"})
        names = ("Dorotea Berg",)
    else:
        truth = expect = AUDIO_WAV
        write_wav(card / "REC/DS0001.WAV", seed=502,
                  info={"INAM": f"Sven Svensson {AUDIO_WAV}", "IART": "Dr Karin Lindqvist",
                        "ICMT": "Philips DPM8000 diktat"})
        names = ("Sven Svensson",)
    out, case = expect_archived(archive, card, tmp_path, truth, "--mode", "audio", "--expect", expect,
                                mode="audio", names=names, devices=("Olympus", "Philips", "Lindqvist"))
    rel = f"REC/DS0001.{kind.upper()}"
    assert [(e["file"], e["method"], e["patient"]) for e in out["evidence"] if e["method"] != "device"] == \
        [(rel, "ehr_context", canonical(truth))]
    assert case["fields"]["ehr_context"] is True


def test_audio_without_ehr_context_is_refused(archive, tmp_path):
    card = tmp_path / "card"
    write_m4a(card / "REC/DS0001.M4A", seed=503, tags={"title": f"Eva Berg {AUDIO_NONE}"})
    write_wav(card / "REC/DS0002.WAV", seed=504)
    expect_refused(archive, card, tmp_path, "EHR_CONTEXT_REQUIRED", (AUDIO_NONE,), "--mode", "audio")


# --------------------------------------------------------------------------- the real corpus

CORPUS_EXPECT = make_personnummer("19610405", "317")


@pytest.mark.skipif(not CORPUS_US.is_dir(), reason="shared corpus not present")
def test_real_ultrasound_dicom_corpus_is_refused_not_crashed(archive, tmp_path):
    """Ten real ultrasound DICOM files (GE, Philips, ALOKA, SonoSite; JPEG 2000, RLE,
    JPEG lossless, big endian, 30-frame YBR cine) carry no valid number: the header
    PatientIDs are hospital ids ('13US1', '98279'), the overlays show no number."""
    card = tmp_path / "card"
    (card / "DICOM").mkdir(parents=True)
    sources = sorted(CORPUS_US.glob("*.dcm"))
    assert len(sources) >= 10
    for p in sources:
        shutil.copyfile(p, card / "DICOM" / p.name)
    out = expect_refused(archive, card, tmp_path, "NO_ID_FOUND", (CORPUS_EXPECT,),
                         "--mode", "ultrasound", "--expect", CORPUS_EXPECT)
    assert not [e for e in out["evidence"] if e["patient"]], "a number was invented from the corpus"
    assert {f["path"] for f in out["files"]} == {f"DICOM/{p.name}" for p in sources}
    assert all(f["status"] == "refused" for f in out["files"])
