"""End to end: a camera on a cable through `bildsluss-agent ingest --camera PORT` (issue 16).

The camera is libgphoto2's own Directory Browse camera on a ``disk:`` port over a
real generated card folder, and for the PTP protocol libgphoto2's virtual PTP
camera (``vusb``). Outcomes, reason codes, exit codes and guarantees are those
of the same files on a card: refusals and failures leave the camera as it was.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from tests.support.cardgen import make_card, make_personnummer
from tests.support.e2e import (
    AGENT, DEPARTMENT, PATIENT, PATIENT_CANONICAL, cases, ingest_camera, media_on, snapshot,
)
from tests.test_camera import vusb_env

CORPUS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "corpus"
CONFIG_CANON = '[[devices]]\nmake = "Canon"\nmodel = "Canon EOS 250D"\nserial = "083051006721"\n'


def _card(tmp_path: pathlib.Path, **kw) -> pathlib.Path:
    kw.setdefault("patient", PATIENT)
    kw.setdefault("n_images", 4)
    kw.setdefault("megapixels", 1.0)
    make_card(tmp_path / "camera", **kw)
    return tmp_path / "camera"


def _config(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return str(path)


def test_good_series_is_archived_and_deleted_from_the_camera(archive, tmp_path):
    camera = _card(tmp_path, seed=31)
    jpegs = media_on(camera)

    code, out = ingest_camera(f"disk:{camera}", archive.address, tmp_path,
                              "--config", _config(tmp_path, CONFIG_CANON))

    assert code == 0, out
    assert out["outcome"] == "archived" and out["wiped"] is True and out["reason"] is None
    assert out["patient"] == PATIENT_CANONICAL and "camera" in out["message"]
    archived = {f["path"] for f in out["files"] if f["status"] == "archived"}
    assert archived == set(jpegs)  # the camera's folder/name
    assert media_on(camera) == []
    assert [c["case_id"] for c in cases(archive, PATIENT_CANONICAL)] == [out["case_id"]]
    devices = [e for e in out["evidence"] if e["method"] == "device"]
    assert devices[0]["file"] == f"disk:{camera}" and "does not name itself" in devices[0]["text"]
    assert {e["file"] for e in devices[1:]} == set(jpegs)  # the EXIF check ran per file


def test_mixed_series_is_refused_with_every_file_left(archive, tmp_path):
    camera = _card(tmp_path, seed=32, extra_patient_at=1, extra_patient=make_personnummer("19850704", 321))
    before = snapshot(camera)

    code, out = ingest_camera(f"disk:{camera}", archive.address, tmp_path)

    assert code == 3, out
    assert out["outcome"] == "refused" and out["reason"] == "MIXED_PATIENTS"
    assert "camera" in out["message"] and {f["status"] for f in out["files"]} <= {"refused", "ignored"}
    assert snapshot(camera) == before


@pytest.mark.skipif(not (CORPUS / "exif" / "Apple.jpg").is_file(), reason="shared corpus not present")
def test_phone_pictures_on_the_camera_are_refused(archive, tmp_path):
    camera = _card(tmp_path, seed=33, n_images=2)
    shutil.copy(CORPUS / "exif" / "Apple.jpg", camera / "DCIM" / "100CANON" / "IMG_0003.JPG")
    before = snapshot(camera)

    code, out = ingest_camera(f"disk:{camera}", archive.address, tmp_path)

    assert code == 3, out
    assert out["reason"] == "UNREGISTERED_DEVICE"
    refused = [f for f in out["files"] if f["reason"] == "UNREGISTERED_DEVICE"]
    assert [f["path"] for f in refused] == ["DCIM/100CANON/IMG_0003.JPG"]
    assert snapshot(camera) == before


def _undeletable(path: pathlib.Path):
    """A file the camera refuses to delete: immutable (root), or in a read-only folder."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.parent.chmod(0o555)
    return lambda: path.parent.chmod(0o755)


def test_a_file_the_camera_will_not_delete_leaves_exit_5_and_the_file_pending(archive, tmp_path):
    camera = _card(tmp_path, seed=34, n_images=3)
    stuck = camera / "DCIM" / "100CANON" / "IMG_0002.JPG"
    undo = _undeletable(stuck)
    try:
        code, out = ingest_camera(f"disk:{camera}", archive.address, tmp_path)
    finally:
        undo()

    assert code == 5, out
    assert out["outcome"] == "archived" and out["wiped"] is False and out["reason"] == "WIPE_FAILED"
    assert "Do not use the camera" in out["message"] and "IMG_0002.JPG" in out["detail"]
    status = {f["path"]: (f["status"], f["reason"]) for f in out["files"]}
    assert status["DCIM/100CANON/IMG_0002.JPG"] == ("pending", "WIPE_FAILED")
    assert status["DCIM/100CANON/IMG_0001.JPG"] == ("archived", None)
    assert stuck.exists() and media_on(camera) == ["DCIM/100CANON/IMG_0002.JPG"]
    assert out["case_id"] and len(cases(archive, PATIENT_CANONICAL)) >= 1


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_archive_down_defers_with_the_camera_untouched(tmp_path):
    camera = _card(tmp_path, seed=35, n_images=2)
    before = snapshot(camera)

    code, out = ingest_camera(f"disk:{camera}", _free_port(), tmp_path)

    assert code == 4, out
    assert out["outcome"] == "deferred" and out["reason"] == "ARCHIVE_UNAVAILABLE"
    assert {f["status"] for f in out["files"] if f["status"] != "ignored"} == {"pending"}
    assert snapshot(camera) == before


def test_kill_during_download_leaves_the_camera_and_the_next_run_finishes(archive, tmp_path):
    camera = _card(tmp_path, seed=36, n_images=6)
    before = snapshot(camera)
    spool = tmp_path / "spool"
    proc = subprocess.Popen(
        [*AGENT, "ingest", "--camera", f"disk:{camera}", "--archive", archive.address, "--department",
         DEPARTMENT, "--insecure", "--json", "--spool", str(spool)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # structured logs: kill once the download has begun
            if '"camera connected"' in line:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(camera) == before

    code, out = ingest_camera(f"disk:{camera}", archive.address, tmp_path)  # asserts the spool is empty

    assert code == 0, out
    assert media_on(camera) == []


def test_no_camera_at_the_port_is_a_usage_error(tmp_path):
    result = subprocess.run([*AGENT, "ingest", "--camera", f"disk:{tmp_path / 'none'}", "--archive",
                             "127.0.0.1:1", "--department", DEPARTMENT, "--insecure", "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "camera" in result.stderr
    both = subprocess.run([*AGENT, "ingest", str(tmp_path), "--camera", "usb:", "--archive", "127.0.0.1:1",
                           "--department", DEPARTMENT, "--insecure"], capture_output=True, text=True)
    assert both.returncode == 2 and "either" in both.stderr


# --------------------------------------------------------------------------- over PTP (libgphoto2's vusb)


def test_cameras_lists_a_ptp_camera_with_its_serial(tmp_path):
    camera = _card(tmp_path, seed=37, n_images=1)
    result = subprocess.run([*AGENT, "cameras", "--json"], capture_output=True, text=True,
                            env={**os.environ, **vusb_env(camera)}, check=True)
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(found) == 1
    assert found[0]["port"].startswith("usb:") and found[0]["serial"] == "0.1"
    assert found[0]["manufacturer"] == "GP" and found[0]["connected"] is True


def test_unregistered_ptp_camera_is_refused_before_anything_is_downloaded(archive, tmp_path):
    camera = _card(tmp_path, seed=38, n_images=2)
    code, out = ingest_camera("usb:", archive.address, tmp_path, "--config", _config(tmp_path, CONFIG_CANON),
                              env={**os.environ, **vusb_env(camera)})
    assert code == 3, out
    assert out["reason"] == "UNREGISTERED_DEVICE" and out["files"] == []
    assert "not registered" in out["detail"] and "Nothing was copied" in out["message"]
    assert out["evidence"][0]["method"] == "device" and "SerialNumber=0.1" in out["evidence"][0]["text"]


def test_registered_ptp_camera_goes_through_the_ptp_driver_end_to_end(archive, tmp_path):
    """Listing, download and delete over PTP (vusb deletes virtually; it reports them gone)."""
    camera = _card(tmp_path, seed=39, n_images=3)
    config = _config(tmp_path, CONFIG_CANON + '[[devices]]\nmake = "GP"\nmodel = "VC"\nserial = "0.1"\n')
    code, out = ingest_camera("usb:", archive.address, tmp_path, "--config", config,
                              env={**os.environ, **vusb_env(camera)})
    assert code == 0, out
    archived = sorted(f["path"] for f in out["files"] if f["status"] == "archived")
    assert archived == [f"store_00010001/{p}" for p in media_on(camera)]
    assert out["evidence"][0]["text"].startswith("accepted: camera GP VC serial 0.1, registered")
