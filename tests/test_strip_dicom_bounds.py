"""strip (DICOM): sizes a file declares are checked before anything is decoded.

A decoder allocates what a header says, not what the file holds. Fuzzing found a
2 KiB DICOM whose JPEG 2000 codestream declared 2,883,840 x 1024 pixels while the
DICOM header said 256 x 1024: openjpeg asked for 5.6 GiB and libFuzzer stopped at
its 2 GiB limit (CI, issue 13). Each shape below is built from a real corpus file
with one size changed, and must end in the clean STRIP_FAILED refusal, with
nothing in the spool and a small peak memory.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from agent.card.model import MediaFile, MediaKind, StageError
from agent.card.reasons import Reason
from agent.card.strip import strip

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus"))
DICOM = CORPUS / "dicom"
pytestmark = pytest.mark.skipif(not DICOM.is_dir(), reason="shared corpus not present")


def media_for(path: pathlib.Path) -> MediaFile:
    data = path.read_bytes()
    return MediaFile(path=path, relative_path=path.name, kind=MediaKind.DICOM,
                     media_type="application/dicom", size=len(data),
                     sha256=hashlib.sha256(data).hexdigest(), mtime_ns=path.stat().st_mtime_ns)


def _save(ds: pydicom.Dataset, path: pathlib.Path) -> pathlib.Path:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.write_bytes(buf.getvalue())
    return path


def _with_first_frame(name: str, patch, path: pathlib.Path) -> pathlib.Path:
    """The corpus file ``name`` with its encapsulated first frame passed through ``patch``."""
    ds = pydicom.dcmread(DICOM / name)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    frames[0] = patch(bytearray(frames[0]))
    ds.PixelData = encapsulate([bytes(f) for f in frames])
    return _save(ds, path)


def j2k_wide(frame: bytearray) -> bytearray:
    """The fuzzer's shape: the SIZ segment's Xsiz set to 2,883,840 columns."""
    siz = frame.index(b"\xff\x51")
    frame[siz + 6:siz + 10] = (2_883_840).to_bytes(4, "big")
    return frame


def jpeg_tall(frame: bytearray) -> bytearray:
    """The first SOF segment declares 65,535 x 65,535 pixels."""
    at = 2
    while frame[at + 1] not in (0xC0, 0xC1, 0xC2, 0xC3, 0xF7):
        at += 2 + int.from_bytes(frame[at + 2:at + 4], "big")
    frame[at + 5:at + 9] = b"\xff\xff\xff\xff"
    return frame


def _refused(path: pathlib.Path, spool: pathlib.Path) -> str:
    spool.mkdir()
    with pytest.raises(StageError) as err:
        strip(media_for(path), spool)
    assert err.value.reason == Reason.STRIP_FAILED
    assert os.listdir(spool) == []
    return err.value.detail


@pytest.mark.parametrize("name,patch,declared", [
    ("ultrasound/US1_J2KI.dcm", j2k_wide, "2883840"),
    ("other/JPEG2000.dcm", j2k_wide, "2883840"),
    ("other/JPGExtended.dcm", jpeg_tall, "65535 x 65535"),
    ("ultrasound/JPGLosslessP14SV1_1s_1f_8b.dcm", jpeg_tall, "65535 x 65535"),
])
def test_codestream_declaring_another_size_refused(name, patch, declared, tmp_path):
    path = _with_first_frame(name, patch, tmp_path / "hostile.dcm")
    detail = _refused(path, tmp_path / "spool")
    assert "refused before decoding" in detail and declared in detail and "DICOM header" in detail


def test_frame_larger_than_the_cap_refused(tmp_path):
    ds = pydicom.dcmread(DICOM / "ultrasound/OBXXXX1A_rle.dcm")  # RLE: sized from the header
    ds.Rows, ds.Columns = 65535, 65535
    detail = _refused(_save(ds, tmp_path / "huge.dcm"), tmp_path / "spool")
    assert "refused before decoding" in detail and "more than the" in detail


def test_native_frames_beyond_the_pixel_data_refused(tmp_path):
    ds = pydicom.dcmread(DICOM / "ultrasound/US1_UNCR.dcm")
    ds.NumberOfFrames = 100_000
    detail = _refused(_save(ds, tmp_path / "frames.dcm"), tmp_path / "spool")
    assert "100000 frame(s)" in detail and "pixel data holds" in detail


def test_zero_rows_refused(tmp_path):
    ds = pydicom.dcmread(DICOM / "ultrasound/US1_UNCR.dcm")
    ds.Rows = 0
    assert "declared pixel size 0 x" in _refused(_save(ds, tmp_path / "zero.dcm"), tmp_path / "spool")


def test_transfer_syntax_that_is_not_a_uid_refused(tmp_path):
    """Found by fuzzing: the file meta's Transfer Syntax UID re-typed from UI to US
    (explicit VR) reads as a list of numbers; it is refused, not a TypeError."""
    path = _save(pydicom.dcmread(DICOM / "ultrasound/US1_UNCR.dcm"), tmp_path / "us.dcm")
    data = path.read_bytes()
    at = data.index(b"\x02\x00\x10\x00UI")  # (0002,0010) with its VR
    path.write_bytes(data[:at + 4] + b"US" + data[at + 6:])
    assert "transfer syntax is not one UID" in _refused(path, tmp_path / "spool")


CHILD = """
import hashlib, json, sys, warnings
warnings.simplefilter("ignore")
from agent.card.strip.dicom import deidentify
data = open(sys.argv[1], "rb").read()
try:
    deidentify(data, hashlib.sha256(data).hexdigest())
    outcome = "stripped"
except ValueError as exc:
    outcome = str(exc)
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across execve from the
# forking process, so a pytest worker that once held 700 MB would be measured here.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "peak_kib": peak}))
"""


def test_fuzzed_j2k_shape_stays_small_in_memory(tmp_path):
    """The CI failure itself: the whitelist writer on the fuzzer's shape, in its own
    process, peaks far below libFuzzer's 2 GiB (before the bound: over 2.8 GiB)."""
    path = _with_first_frame("ultrasound/US1_J2KI.dcm", j2k_wide, tmp_path / "fuzzed.dcm")
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                         timeout=300, cwd=pathlib.Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["outcome"].startswith("pixel data refused before decoding")
    assert report["peak_kib"] < 512 * 1024, report


def test_deflate_bomb_refused_before_pydicom_inflates_it(tmp_path):
    """Deflated Explicit VR Little Endian: pydicom inflates the whole dataset in one
    call. A 1 MiB file of repeated flushed deflate blocks inflates past 1 GiB."""
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(DICOM / "ultrasound/US1_UNCR.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = packer.compress(b"\0" * (1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    bomb = data[:meta_end] + block * 1100 + packer.flush()
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bomb)
    detail = _refused(path, tmp_path / "spool")
    assert "inflates to more than" in detail
