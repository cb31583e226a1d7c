"""strip (DICOM): whitelisted copy, identical pixel data, nothing identifying left.

Checked independently of the module's own verification: a fresh pydicom read
of the written file, a separate exiftool process (``-j -a -u -G1``), and a
byte search for the original's identifying values in the copy.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import stat
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, iter_pixels
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UltrasoundImageStorage,
)

from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason
from agent.card.strip import strip
from agent.card.strip.dicom import ITEM_KEEP, KEEP, new_instance_uid

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus"))
DICOM = CORPUS / "dicom"
pytestmark = pytest.mark.skipif(not DICOM.is_dir(), reason="shared corpus not present")

NO_PIXELS = {"other/test-SR.dcm", "other/waveform_ecg.dcm"}
BROKEN = {"other/JPEG-lossy.dcm"}  # malformed 12-bit JPEG: pixel decode fails
CORPUS_FILES = sorted(
    str(p.relative_to(DICOM)) for sub in ("ultrasound", "other") for p in (DICOM / sub).glob("*.dcm")
) if DICOM.is_dir() else []
IMAGES = [f for f in CORPUS_FILES if f not in NO_PIXELS]

# Names that must not appear among exiftool's DICOM tags of a copy.
EXIF_FORBIDDEN = ("Patient", "Date", "Institution", "Serial", "Manufacturer", "Station",
                  "Physician", "Operator", "Accession", "StudyInstance", "SeriesInstance",
                  "StudyID", "Software", "Private", "Unknown", "Overlay", "Curve", "Icon",
                  "Description", "Comment", "Transducer", "Referenced", "Name")
EXIF_ALLOWED = {"ImplementationVersionName"}  # pydicom's own version, e.g. "PYDICOM 3.0.2"
IDENTIFYING_VRS = {"PN", "LO", "SH", "DA", "DT", "TM", "AE", "ST", "LT", "UT", "UC", "AS"}


def media_for(path: pathlib.Path) -> MediaFile:
    data = path.read_bytes()
    return MediaFile(path=path, relative_path=path.name, kind=MediaKind.DICOM,
                     media_type="application/dicom", size=len(data),
                     sha256=hashlib.sha256(data).hexdigest(), mtime_ns=path.stat().st_mtime_ns)


def exiftool_json(*paths: pathlib.Path) -> dict | list[dict]:
    """An independent exiftool process (not the agent's stay-open one)."""
    out = subprocess.run(["exiftool", "-j", "-a", "-u", "-G1", *map(str, paths)],
                         capture_output=True, check=True).stdout
    records = json.loads(out)
    return records[0] if len(paths) == 1 else records


def walk(ds: Dataset, where: str = ""):
    for elem in ds:
        yield where, elem
        if elem.VR == "SQ":
            for n, item in enumerate(elem.value or ()):
                yield from walk(item, f"{where}{elem.keyword or elem.tag}[{n}].")


def identifying_values(ds: Dataset) -> set[str]:
    """The original's values that must not reappear: texts (names, ids, dates, places,
    devices) of 4+ characters and every UID but the SOP class and well-known ones."""
    keep_uids = {str(ds.SOPClassUID)}
    values = set()
    for _, elem in walk(ds):
        if elem.VR in IDENTIFYING_VRS or elem.VR == "UI":
            vals = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            for v in vals:
                text = str(v or "").strip(" \x00")
                if elem.VR == "UI":
                    if text in keep_uids or pydicom.uid.UID(text).is_private is False and \
                            pydicom.uid.UID(text).name != text:
                        continue  # a standard UID (SOP class, coding scheme...), not an identifier
                if len(text) >= 4:
                    values.add(text)
    return values


def header_part(written: bytes, pixel_value: bytes) -> bytes:
    """The copy without its pixel element's value (pixels may hold any byte pattern)."""
    at = written.rfind(pixel_value)
    assert at > 0
    return written[:at]


def frames(ds: Dataset) -> list[np.ndarray]:
    return list(iter_pixels(ds, raw=True))


def test_corpus_covers_the_cases():
    assert len(IMAGES) == 25 and BROKEN <= set(IMAGES)
    assert {"ultrasound/ExplVR_BigEnd.dcm", "ultrasound/gdcm-US-ALOKA-16.dcm"} <= set(IMAGES)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # rtdose.dcm has a bad UID
@pytest.mark.parametrize("name", IMAGES)
def test_corpus_dicom_stripped(name, tmp_path):
    source = DICOM / name
    original_bytes = source.read_bytes()
    media = media_for(source)
    if name in BROKEN:
        with pytest.raises(StageError) as err:
            strip(media, tmp_path)
        assert err.value.reason == Reason.STRIP_FAILED
        assert "cannot be decoded" in err.value.detail and source.name in err.value.detail
        assert "\n" not in err.value.detail
        assert os.listdir(tmp_path) == []
        return
    result = strip(media, tmp_path)
    written = result.spool_path.read_bytes()
    assert source.read_bytes() == original_bytes  # the card's file is never touched
    assert os.listdir(tmp_path) == [result.spool_path.name]
    assert stat.S_IMODE(result.spool_path.stat().st_mode) == 0o600
    assert result.sha256 == hashlib.sha256(written).hexdigest() and result.size == len(written)
    assert written[:128] == b"\x00" * 128 and written[128:132] == b"DICM"

    src = pydicom.dcmread(io.BytesIO(original_bytes))
    out = pydicom.dcmread(io.BytesIO(written))
    # The image: raw value byte-identical, every frame decodes identically.
    assert out.PixelData == src.PixelData
    a, b = frames(src), frames(out)
    assert len(a) == len(b) == int(src.get("NumberOfFrames", 1) or 1)
    for fa, fb in zip(a, b):
        assert fa.dtype == fb.dtype and np.array_equal(fa, fb)
    if src.PhotometricInterpretation == "PALETTE COLOR":
        assert np.array_equal(apply_color_lut(a[0], src), apply_color_lut(b[0], out))
    # Transfer syntax: encapsulated and explicit LE kept; implicit LE and 8-bit
    # big endian become explicit LE.
    src_ts = src.file_meta.TransferSyntaxUID
    want = ExplicitVRLittleEndian if src_ts in (ImplicitVRLittleEndian, ExplicitVRBigEndian) else src_ts
    assert out.file_meta.TransferSyntaxUID == want
    # Identity: nothing of it, at any depth.
    for where, elem in walk(out):
        assert not elem.tag.is_private, f"{where}{elem.tag}"
        assert elem.VR not in IDENTIFYING_VRS, f"{where}{elem.keyword} {elem.VR}"
        assert int(elem.tag) in (KEEP if not where else ITEM_KEEP[int(out[where.split('[')[0]].tag)])
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "SeriesDate",
               "AcquisitionDate", "ContentDate", "AcquisitionDateTime", "InstitutionName",
               "DeviceSerialNumber", "StationName", "Manufacturer", "StudyInstanceUID",
               "SeriesInstanceUID", "ReferringPhysicianName", "OperatorsName"):
        assert kw not in out
    assert not [e for e in out if e.tag.group in range(0x6000, 0x6020, 2) or
                e.tag.group in range(0x5000, 0x5020, 2)]  # overlays, curves
    assert out.SOPClassUID == src.SOPClassUID == out.file_meta.MediaStorageSOPClassUID
    assert out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID == new_instance_uid(media.sha256)
    assert out.SOPInstanceUID != src.SOPInstanceUID
    assert set(out.file_meta.keys()) <= {0x00020000, 0x00020001, 0x00020002, 0x00020003,
                                         0x00020010, 0x00020012, 0x00020013}
    header = header_part(written, out.PixelData)
    leaked = [v for v in identifying_values(src) if v.encode("latin-1", "replace") in header]
    assert leaked == []
    # The calibration and the image-pixel description are all still there.
    for tag in KEEP - {0x00080018, 0x00280009}:  # new SOPInstanceUID; FIP may be dropped
        if tag in src and src[tag].VR != "SQ":
            assert out[tag].value == src[tag].value, pydicom.datadict.keyword_for_tag(tag)
    if "SequenceOfUltrasoundRegions" in src:
        regions_in, regions_out = src.SequenceOfUltrasoundRegions, out.SequenceOfUltrasoundRegions
        assert len(regions_in) == len(regions_out)
        for ri, ro in zip(regions_in, regions_out):
            assert ro.PhysicalDeltaX == ri.PhysicalDeltaX and ro.PhysicalDeltaY == ri.PhysicalDeltaY
            assert ro.RegionLocationMinX0 == ri.RegionLocationMinX0
            assert "TransducerType" not in ro
    # exiftool, a separate parser, agrees.
    meta, original_meta = exiftool_json(result.spool_path, source)
    dicom_tags = [k.split(":", 1)[1] for k in meta if k.startswith("DICOM:")]
    assert dicom_tags and "PixelData" in dicom_tags
    bad = [t for t in dicom_tags if t not in EXIF_ALLOWED and any(f in t for f in EXIF_FORBIDDEN)]
    assert bad == []
    # (exiftool shows class and syntax UIDs by their standard names: not values)
    texts = [str(v) for k, v in meta.items()
             if k.startswith("DICOM:") and not k.endswith(("ClassUID", "TransferSyntaxUID"))]
    assert not [v for v in identifying_values(src) if any(v in t for t in texts)]
    # the forbidden names were there before
    assert any(k.startswith("DICOM:") and any(f in k for f in EXIF_FORBIDDEN) for k in original_meta)


def test_same_original_gives_the_same_copy(tmp_path):
    """Deterministic output: a card stripped again keeps its ingest session id."""
    media = media_for(DICOM / "ultrasound/OBXXXX1A_rle_2frame.dcm")
    first = strip(media, tmp_path)
    second = strip(media, tmp_path)
    assert first.spool_path != second.spool_path
    assert first.sha256 == second.sha256
    other = strip(media_for(DICOM / "ultrasound/OBXXXX1A_rle.dcm"), tmp_path)
    assert pydicom.dcmread(other.spool_path).SOPInstanceUID != pydicom.dcmread(first.spool_path).SOPInstanceUID


def test_big_endian_8bit_becomes_little_endian(tmp_path):
    source = DICOM / "ultrasound/ExplVR_BigEnd.dcm"
    src = pydicom.dcmread(source)
    assert src.file_meta.TransferSyntaxUID == ExplicitVRBigEndian and src.BitsAllocated == 8
    out = pydicom.dcmread(strip(media_for(source), tmp_path).spool_path)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PixelData == src.PixelData
    assert np.array_equal(out.pixel_array, src.pixel_array)
    assert "PatientName" in src and "DeviceSerialNumber" in src and "StudyDate" in src


def _write(path: pathlib.Path, ds: Dataset, syntax, preamble: bytes = b"\x00" * 128) -> pathlib.Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.SourceApplicationEntityTitle = "SONO_ROOM_3"
    ds.preamble = preamble
    ds.save_as(path, enforce_file_format=True)
    return path


def test_big_endian_16bit_keeps_big_endian(tmp_path):
    """16-bit native pixels would need byte-swapping for little endian, so the
    copy keeps Explicit VR Big Endian and the pixel bytes stay identical."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 4096, size=(16, 24), dtype=np.uint16)
    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.8.9.1"
    ds.Modality = "US"
    ds.PatientName = "Svensson^Karin"
    ds.PatientID = "191212121212"
    ds.StudyDate = "20240501"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(">u2").tobytes()
    ds["PixelData"].VR = "OW"
    path = _write(tmp_path / "be16.dcm", ds, ExplicitVRBigEndian)
    src = pydicom.dcmread(path)
    assert np.array_equal(src.pixel_array, pixels)
    spool = tmp_path / "spool"
    spool.mkdir()
    result = strip(media_for(path), spool)
    out = pydicom.dcmread(result.spool_path)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert out.PixelData == src.PixelData
    assert np.array_equal(out.pixel_array, pixels)
    assert "PatientName" not in out and "PatientID" not in out and "StudyDate" not in out
    assert b"Svensson" not in result.spool_path.read_bytes()


NAME, PNR = "Andersson^Anna^Maria", "19121212-1212"


def identifying_dataset() -> Dataset:
    """A small ultrasound image carrying every kind of identifying element."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = "1.2.752.99.1.2.3.4.5.1"
    ds.StudyInstanceUID = "1.2.752.99.1.2.3.4.5.2"
    ds.SeriesInstanceUID = "1.2.752.99.1.2.3.4.5.3"
    ds.FrameOfReferenceUID = "1.2.752.99.1.2.3.4.5.4"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240501"
    ds.StudyTime = ds.ContentTime = "101530"
    ds.AcquisitionDateTime = "20240501101530"
    ds.AccessionNumber = "ACC778899"
    ds.Modality = "US"
    ds.Manufacturer = "Acme Ultrasound"
    ds.ManufacturerModelName = "SonoStar 9000"
    ds.DeviceSerialNumber = "SN-4711-0815"
    ds.SoftwareVersions = "FW 12.4.1"
    ds.StationName = "KVINNO-US3"
    ds.InstitutionName = "Sahlgrenska Universitetssjukhuset"
    ds.InstitutionAddress = "Blå stråket 5, Göteborg"
    ds.ReferringPhysicianName = "Berg^Erik"
    ds.OperatorsName = "Lind^Sofia"
    ds.PatientName = NAME
    ds.PatientID = PNR
    ds.PatientBirthDate = "19121212"
    ds.PatientSex = "F"
    ds.PatientAddress = "Storgatan 1, Mölndal"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "121212-1212"
    ds.OtherPatientIDsSequence[0].IssuerOfPatientID = "Region Västra Götaland"
    ds.StudyDescription = "Graviditet v20, Anna Andersson"
    ds.ImageComments = "Pat. Andersson 19121212-1212"
    req = Dataset()
    req.RequestedProcedureID = "RP-5566"
    req.ScheduledProcedureStepID = "SPS-5566"
    req.RequestingPhysician = "Holm^Greta"
    ds.RequestAttributesSequence = Sequence([req])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = 32, 48
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BurnedInAnnotation = "YES"
    ds.WindowCenter, ds.WindowWidth = "128", "256"
    ds.WindowCenterWidthExplanation = "Andersson preset"
    ds.LossyImageCompression = "00"
    # Calibration sequence: numbers kept; a text field, a private tag, a nested
    # private sequence with a name all go.
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 2
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 4, 4
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 43, 27
    region.ReferencePixelX0, region.ReferencePixelY0 = 20, 0
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.0262
    region.TransducerType = "CURVED LINEAR"
    block = region.private_block(0x0019, "ACME US 1.0", create=True)
    block.add_new(0x01, "LO", NAME)
    nested = Dataset()
    nested.PatientName = NAME
    nb = nested.private_block(0x0029, "ACME US 1.0", create=True)
    nb.add_new(0x02, "LT", f"operator Lind, patient {PNR}")
    block.add_new(0x02, "SQ", Sequence([nested]))
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    top = ds.private_block(0x0099, "ACME US 1.0", create=True)
    top.add_new(0x10, "LO", PNR)
    top.add_new(0x11, "UN", f"{NAME} {PNR}".encode())
    # An overlay plane and a curve, an icon with its own pixel data.
    ds.add_new(0x60000010, "US", 32)
    ds.add_new(0x60000011, "US", 48)
    ds.add_new(0x60000022, "LO", f"Overlay {NAME}")
    ds.add_new(0x60003000, "OW", b"\x00" * (32 * 48 // 8))
    ds.add_new(0x50000022, "LO", f"Curve {NAME}")
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel = 4, 4, 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = b"\x01" * 16
    ds.IconImageSequence = Sequence([icon])
    pixels = np.zeros((32, 48), dtype=np.uint8)
    pixels[8:24, 10:30] = 200
    ds.PixelData = pixels.tobytes()
    return ds


IDENTIFYING_TEXTS = ["Andersson", "19121212", "121212-1212", "Sahlgrenska", "SN-4711", "SonoStar",
                     "Acme", "KVINNO", "Berg", "Lind", "Holm", "ACC778899", "20240501", "101530",
                     "Storgatan", "SONO_ROOM_3", "1.2.752.99", "ACME US", "RP-5566", "CURVED",
                     "preset", "FW 12"]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    DeflatedExplicitVRLittleEndian])
def test_synthetic_identifying_dicom_all_gone(syntax, tmp_path):
    ds = identifying_dataset()
    preamble = (b"II*\x00" + f"{NAME} {PNR}".encode()).ljust(128, b"\x00")  # dual-personality
    path = _write(tmp_path / "IMG0001.dcm", ds, syntax, preamble=preamble)
    raw = path.read_bytes()
    if syntax != DeflatedExplicitVRLittleEndian:
        assert all(t.encode() in raw for t in IDENTIFYING_TEXTS)
    else:
        assert NAME.encode() in raw[:128]  # the rest is compressed
    src = pydicom.dcmread(path)
    assert src.PatientName == NAME and src.OtherPatientIDsSequence[0].PatientID == "121212-1212"
    spool = tmp_path / "spool"
    spool.mkdir()
    result = strip(media_for(path), spool)
    written = result.spool_path.read_bytes()
    assert path.read_bytes() == raw
    assert [t for t in IDENTIFYING_TEXTS if t.encode() in written] == []  # anywhere, pixels included
    out = pydicom.dcmread(result.spool_path)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert [e.keyword for e in out] == [
        "SOPClassUID", "SOPInstanceUID", "Modality", "SequenceOfUltrasoundRegions",
        "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
        "BitsStored", "HighBit", "PixelRepresentation", "BurnedInAnnotation", "WindowCenter",
        "WindowWidth", "LossyImageCompression", "PixelData"]
    [region] = out.SequenceOfUltrasoundRegions
    assert sorted(e.keyword for e in region) == sorted(
        ["RegionSpatialFormat", "RegionDataType", "RegionFlags", "RegionLocationMinX0",
         "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1", "ReferencePixelX0",
         "ReferencePixelY0", "PhysicalUnitsXDirection", "PhysicalUnitsYDirection",
         "PhysicalDeltaX", "PhysicalDeltaY"])
    assert region.PhysicalDeltaX == 0.0262 and region.ReferencePixelX0 == 20
    assert out.PixelData == ds.PixelData
    assert np.array_equal(out.pixel_array, pydicom.dcmread(path).pixel_array)
    meta = exiftool_json(result.spool_path)
    assert not [k for k in meta if k.startswith("DICOM:") and k.split(":")[1] not in EXIF_ALLOWED
                and any(f in k for f in EXIF_FORBIDDEN)]
    assert not [v for v in meta.values() if any(t in str(v) for t in IDENTIFYING_TEXTS)]


def test_cine_keeps_frame_timing(tmp_path):
    ds = identifying_dataset()
    del ds.IconImageSequence
    frames_ = np.stack([np.full((32, 48), i * 40, dtype=np.uint8) for i in range(4)])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.NumberOfFrames = 4
    ds.FrameTime = "33.3"
    ds.FrameIncrementPointer = 0x00181063
    ds.RecommendedDisplayFrameRate = 30
    ds.PixelData = frames_.tobytes()
    path = _write(tmp_path / "CINE.dcm", ds, ExplicitVRLittleEndian)
    spool = tmp_path / "spool"
    spool.mkdir()
    out = pydicom.dcmread(strip(media_for(path), spool).spool_path)
    assert out.NumberOfFrames == 4 and out.FrameTime == 33.3 and out.RecommendedDisplayFrameRate == 30
    assert out.FrameIncrementPointer == 0x00181063
    assert np.array_equal(out.pixel_array, frames_)


def test_frame_increment_pointer_to_a_dropped_element_is_dropped(tmp_path):
    out = pydicom.dcmread(strip(media_for(DICOM / "other/rtdose.dcm"), tmp_path).spool_path)
    assert "FrameIncrementPointer" not in out and out.NumberOfFrames == 15


@pytest.mark.parametrize("name", sorted(NO_PIXELS))
def test_dicom_without_pixels_refused(name, tmp_path):
    with pytest.raises(StageError) as err:
        strip(media_for(DICOM / name), tmp_path)
    assert err.value.reason == Reason.STRIP_FAILED and "without pixel data" in err.value.detail
    assert os.listdir(tmp_path) == []


def test_changed_card_file_is_card_changed(tmp_path):
    path = tmp_path / "US0001.dcm"
    path.write_bytes((DICOM / "ultrasound/OBXXXX1A_rle.dcm").read_bytes())
    media = media_for(path)
    path.write_bytes((DICOM / "ultrasound/US1_J2KI.dcm").read_bytes())
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(StageError) as err:
        strip(media, spool)
    assert err.value.reason == Reason.CARD_CHANGED
    assert os.listdir(spool) == []


def test_scanned_card_then_strip(tmp_path):
    """Through the scan stage: what it calls DICOM is what strip takes."""
    from agent.card.scan import scan

    card = tmp_path / "card"
    (card / "US").mkdir(parents=True)
    for name in ("ultrasound/OBXXXX1A_rle.dcm", "ultrasound/examples_ybr_color.dcm"):
        (card / "US" / pathlib.Path(name).name.upper()).write_bytes((DICOM / name).read_bytes())
    result = scan(card)
    assert [m.media_type for m in result.media] == ["application/dicom"] * 2
    spool = tmp_path / "spool"
    spool.mkdir()
    for m in result.media:
        s = strip(m, spool)
        out = pydicom.dcmread(s.spool_path)
        assert out.PixelData == pydicom.dcmread(m.path).PixelData and "PatientID" not in out


def test_exiftool_read_back_flags_what_identifies(tmp_path):
    """The strip stage's second, exiftool-based check on DICOM is not empty: on an
    original it names the patient, study, manufacturer and time elements."""
    from agent.card.metadata import MetadataReader
    from agent.card.strip import forbidden_tags

    source = CORPUS / "dicom/ultrasound/OBXXXX1A.dcm"
    with MetadataReader() as reader:
        bad = forbidden_tags(reader.read_one(source, extra=("-u",)), "application/dicom")
        copy = strip(MediaFile(path=source, relative_path=source.name, kind=MediaKind.DICOM,
                               media_type="application/dicom", size=source.stat().st_size,
                               sha256=hashlib.sha256(source.read_bytes()).hexdigest(), mtime_ns=0),
                     tmp_path, tool=reader)
        assert forbidden_tags(reader.read_one(copy.spool_path, extra=("-u", "-ee")), "application/dicom") == []
    names = {k.split(":")[-1] for k in bad}
    assert {"PatientName", "PatientID", "Manufacturer", "StudyDate"} <= names, sorted(names)
