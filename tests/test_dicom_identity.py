"""DICOM identity: header, decoded frames, burned-in overlay, DICOMDIR (R3, R8)."""
import pathlib

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from bildsluss_common.readers import Reading
from bildsluss_common.readers.dicom import (
    DicomIdentity,
    DicomReading,
    DicomUnreadable,
    dicom_readings,
    read_dicom,
    read_dicom_identity,
    read_dicomdir,
)
from bildsluss_common.identity.numbers import parse
from agent.card.model import Method
from tests.support.labels import render_overlay

CORPUS = pathlib.Path("/work/shared/corpus/dicom")
CORPUS_FILES = sorted(CORPUS.glob("*/*.dcm"))
BROKEN = {"JPEG-lossy.dcm"}  # corpus MANIFEST: known-malformed 12-bit JPEG, pixels do not decode
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def test_corpus_is_there():
    assert len(CORPUS_FILES) == 27


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_corpus_file_reads_or_raises_the_typed_error(path):
    ident = read_dicom(path)
    assert isinstance(ident, DicomIdentity)
    assert ident.modality
    if path.name in BROKEN:
        with pytest.raises(DicomUnreadable, match="does not decode"):
            ident.frame(0)
        with pytest.raises(DicomUnreadable):
            read_dicom_identity(path)
        return
    frames = list(ident.frames())  # every frame decodes
    assert len(frames) == ident.number_of_frames
    for img in frames:
        assert img.mode in ("L", "RGB")
        assert img.size == (ident.columns, ident.rows)


@pytest.mark.parametrize(
    "name, frames, mode, syntax",
    [
        ("ultrasound/examples_ybr_color.dcm", 30, "RGB", "JPEG Baseline (Process 1)"),  # YBR_FULL_422
        ("ultrasound/OBXXXX1A_rle_2frame.dcm", 2, "RGB", "RLE Lossless"),  # PALETTE COLOR
        ("ultrasound/US1_J2KR.dcm", 1, "RGB", "JPEG 2000 Image Compression (Lossless Only)"),  # YBR_RCT
        ("ultrasound/gdcm-US-ALOKA-16.dcm", 1, "RGB", "Implicit VR Little Endian"),  # 16-bit segmented LUT
        ("other/emri_small.dcm", 10, "L", "Explicit VR Little Endian"),
        ("other/RG3_J2KI.dcm", 1, "L", "JPEG 2000 Image Compression"),  # MONOCHROME1
    ],
)
def test_compressed_and_multiframe_files_decode(name, frames, mode, syntax):
    ident = read_dicom(CORPUS / name)
    assert ident.number_of_frames == frames
    assert ident.transfer_syntax_name == syntax
    imgs = list(ident.frames())
    assert len(imgs) == frames and {i.mode for i in imgs} == {mode}
    assert all(np.asarray(i).std() > 1 for i in imgs)  # real content, not a blank


def test_colour_conversions_look_right():
    # YBR_RCT (J2K lossless) decodes to the same RGB as the uncompressed original.
    a = np.asarray(read_dicom(CORPUS / "ultrasound/US1_UNCR.dcm").frame(0), dtype=int)
    b = np.asarray(read_dicom(CORPUS / "ultrasound/US1_J2KR.dcm").frame(0), dtype=int)
    assert np.abs(a - b).max() == 0
    # MONOCHROME1: stored 0 is white; the collimated corner of this CR is stored as 0.
    cr = np.asarray(read_dicom(CORPUS / "other/RG3_J2KI.dcm").frame(0))
    assert cr[:40, :40].mean() > 250
    # PALETTE COLOR through the LUT: the Philips banner is blue-ish, not grey.
    ob = np.asarray(read_dicom(CORPUS / "ultrasound/OBXXXX1A.dcm").frame(0), dtype=int)
    top = ob[5:25, 100:300]
    assert (top[..., 2] - top[..., 0]).mean() > 20


def test_files_without_pixels_have_no_frames():
    for name in ("other/test-SR.dcm", "other/waveform_ecg.dcm"):
        ident = read_dicom(CORPUS / name)
        assert ident.number_of_frames == 0 and not ident.has_pixels
        assert list(ident.frames()) == []


def test_not_dicom_raises_the_typed_error(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_bytes(b"\xff\xd8\xff\xe0 not dicom at all" * 10)
    with pytest.raises(DicomUnreadable, match="not a DICOM file"):
        read_dicom(p)
    truncated = tmp_path / "t.dcm"
    truncated.write_bytes((CORPUS / "ultrasound/US1_UNCR.dcm").read_bytes()[:3000])
    with pytest.raises(DicomUnreadable):
        list(read_dicom(truncated).frames())


# -- synthetic ultrasound DICOM ------------------------------------------------------


def _us_dicom(path: pathlib.Path, frames: list[np.ndarray], patient_id: str, *, rle: bool = False,
              name: str = "ANDERSSON^ANNA") -> pathlib.Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE if len(frames) == 1 else "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261125", "124107", "1", ""
    ds.Modality = "US"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    h, w, _ = frames[0].shape
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = np.stack(frames).astype(np.uint8).tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def _frame(number: str, seed: int = 0, name: str = "ANDERSSON, ANNA") -> np.ndarray:
    return np.asarray(render_overlay(name, number, "2026-11-25", 640, 480, seed).image)


def _numbers(readings, method: Method) -> set[str]:
    return {n.canonical for r in readings if r.method is method and (n := parse(r.text))}


def test_header_and_overlay_agree(tmp_path):
    path = _us_dicom(tmp_path / "us.dcm", [_frame("19121212-1212")], "19121212-1212", rle=True)
    readings = dicom_readings(path)
    assert all(isinstance(r, Reading) and isinstance(r, DicomReading) for r in readings)
    assert _numbers(readings, Method.DICOM_HEADER) == {"191212121212"}
    assert _numbers(readings, Method.OCR) == {"191212121212"}
    header = [r for r in readings if r.method is Method.DICOM_HEADER]
    assert header[0].text == "19121212-1212" and header[0].frame == 0
    ident = read_dicom(path)
    assert (ident.patient_name, ident.study_date, ident.modality) == ("ANDERSSON^ANNA", "20261125", "US")
    assert ident.transfer_syntax_name == "RLE Lossless"


def test_header_overlay_disagreement_is_detectable(tmp_path):
    # A wrong-patient export: the header says one patient, the pixels show another.
    path = _us_dicom(tmp_path / "us.dcm", [_frame("20090815-2697")], "19121212-1212")
    readings = dicom_readings(path)
    assert _numbers(readings, Method.DICOM_HEADER) == {"191212121212"}
    assert _numbers(readings, Method.OCR) == {"200908152697"}


def test_every_frame_of_a_cine_is_covered_with_few_ocr_runs(tmp_path):
    # The banner is the same on every frame; the speckle changes. Frame 7 shows another number.
    frames = [_frame("19121212-1212", seed=s) for s in range(10)]
    frames[7] = _frame("20090815-2697", seed=7)
    path = _us_dicom(tmp_path / "cine.dcm", frames, "19121212-1212")
    result = read_dicom_identity(path)
    assert result.frames_unread == ()
    assert set(result.frames_ocr) | set(result.frames_carried) == set(range(10))
    assert len(result.frames_ocr) <= 3  # frame 0, frame 7, and frame 8 (back to the first number)
    by_frame = {}
    for r in result.readings:
        if r.method is Method.OCR:
            by_frame.setdefault(r.frame, set()).add(parse(r.text).canonical)
    assert by_frame[7] == {"200908152697"}
    assert all(by_frame[i] == {"191212121212"} for i in range(10) if i != 7)


def test_frames_beyond_the_ocr_limit_are_reported_unread(tmp_path):
    frames = [_frame(n) for n in ("19121212-1212", "20090815-2697", "19121212-1212")]
    path = _us_dicom(tmp_path / "cine.dcm", frames, "19121212-1212")
    result = read_dicom_identity(path, max_ocr_frames=2)
    assert result.frames_ocr == (0, 1) and result.frames_unread == (2,)
    assert not any(r.frame == 2 for r in result.readings if r.method is Method.OCR)


def test_dicomdir_is_followed(tmp_path):
    a = _us_dicom(tmp_path / "a.dcm", [_frame("19121212-1212")], "19121212-1212")
    b = _us_dicom(tmp_path / "b.dcm", [_frame("19121212-1212", seed=1)], "19121212-1212")
    fs = FileSet()
    fs.add(pydicom.dcmread(a))
    fs.add(pydicom.dcmread(b))
    out = tmp_path / "card"
    fs.write(out)
    files = read_dicomdir(out / "DICOMDIR")
    assert len(files) == 2
    ids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert ids == {pydicom.dcmread(a).SOPInstanceUID, pydicom.dcmread(b).SOPInstanceUID}
    for f in files:
        assert _numbers(dicom_readings(f), Method.OCR) == {"191212121212"}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the '..' we write on purpose
def test_dicomdir_with_a_missing_or_escaping_reference_is_refused(tmp_path):
    a = _us_dicom(tmp_path / "a.dcm", [_frame("19121212-1212")], "19121212-1212")
    fs = FileSet()
    fs.add(pydicom.dcmread(a))
    out = tmp_path / "card"
    fs.write(out)
    files = read_dicomdir(out / "DICOMDIR")
    files[0].unlink()
    with pytest.raises(DicomUnreadable, match="does not exist"):
        read_dicomdir(out / "DICOMDIR")
    ds = pydicom.dcmread(out / "DICOMDIR")
    for rec in ds.DirectoryRecordSequence:
        if "ReferencedFileID" in rec:
            rec.ReferencedFileID = ["..", "a.dcm"]
    ds.save_as(out / "DICOMDIR")
    with pytest.raises(DicomUnreadable, match="unsafe"):
        read_dicomdir(out / "DICOMDIR")


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((CORPUS / "ultrasound").glob("*.dcm")), ids=lambda p: p.name)
def test_corpus_ultrasound_readings_invent_no_number(path):
    result = read_dicom_identity(path, max_ocr_frames=3)
    assert [r for r in result.readings if r.method is Method.OCR] == []
