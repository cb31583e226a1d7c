"""Video and audio on the case page (issue 11): every media item shows as a
thumbnail made on the server from the stored bytes (a video's frame from the
middle of the clip, an audio recording's waveform), without the metadata the
device wrote; the full view plays them from the audited original; a file that
cannot be decoded gets a clear refusal, not a broken picture. Real files: clips
and recordings made with PyAV/libx264 and ffmpeg (tests/support/mediagen.py;
the corpus holds no decodable video or audio), and the corpus's QuickTime.mov,
a header without frames."""
from __future__ import annotations

import io
import pathlib
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.archive.client import personnummer
from tests.archive.world import OWN
from tests.support.mediagen import write_m4a, write_video, write_wav
from tests.support.web import Site, fresh_site, ingest_media

CORPUS = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
STUB_MOV = CORPUS / "exif" / "QuickTime.mov"
SCENE = (198, 134, 102)  # mediagen's wound-like colour between the label frames
WAVE = (120, 200, 235)
# What the devices wrote into the files (mediagen): none of it may reach a picture.
METADATA = [b"Canon", b"EOS 250D", b"59.3496", b"avd 12", b"ANDERSSON", b"191212121212"]


@pytest.fixture(scope="module")
def site(db_backend, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"webmedia-{db_backend}")
    with fresh_site(db_backend, directory) as site:
        yield site


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, tuple[bytes, str, str]]:
    folder = tmp_path_factory.mktemp("recordings")
    mp4 = write_video(folder / "MVI_0001.MP4", first="191212121212", last="191212121212", seconds=4.0)
    mov = folder / "IMG_0002.MOV"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(mp4), "-c", "copy", "-map_metadata", "0",
                    "-f", "mov", str(mov)], check=True)
    wav = write_wav(folder / "DIKT_0003.WAV", seconds=3.0, info={"INAM": "ANDERSSON 191212121212"})
    m4a = write_m4a(folder / "DIKT_0004.M4A", seconds=65.0, tags={"title": "ANDERSSON 191212121212"})
    silent = folder / "TYST_0005.WAV"
    write_wav(silent, seconds=2.0)
    silent.write_bytes(silent.read_bytes()[:44] + bytes(len(silent.read_bytes()) - 44))
    for recording in (mp4, mov, wav, m4a):  # the pictures' check below means something
        assert any(secret in recording.read_bytes() for secret in METADATA), recording
    return {"DCIM/100CANON/MVI_0001.MP4": (mp4.read_bytes(), "video", "video/mp4"),
            "DCIM/100CANON/IMG_0002.MOV": (mov.read_bytes(), "video", "video/quicktime"),
            "REC/DIKT_0003.WAV": (wav.read_bytes(), "audio", "audio/wav"),
            "REC/DIKT_0004.M4A": (m4a.read_bytes(), "audio", "audio/mp4"),
            "REC/TYST_0005.WAV": (silent.read_bytes(), "audio", "audio/wav"),
            "DCIM/100CANON/STUB_0006.MOV": (STUB_MOV.read_bytes(), "video", "video/quicktime")}


def a_case(site: Site, files: dict[str, tuple[bytes, str, str]]) -> tuple[str, dict[str, str]]:
    """The case and its media's SHA-256 by file name."""
    import hashlib

    case_id = ingest_media(site.world, files, patient=personnummer(), department=OWN)
    return case_id, {p.rsplit("/", 1)[-1]: hashlib.sha256(data).hexdigest() for p, (data, _, _) in files.items()}


def picture(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    for secret in METADATA:
        assert secret not in response.content, secret
    img = Image.open(io.BytesIO(response.content))
    img.load()
    assert not img.getexif() and "comment" not in img.info and "icc_profile" not in img.info
    return img


def waveform_columns(img: Image.Image) -> int:
    """How many columns of the picture carry the waveform above its middle line."""
    a = np.asarray(img.convert("RGB"), dtype=np.int16)
    wave = (np.abs(a - np.array(WAVE)).sum(axis=2) < 30)
    middle = img.height // 2 - 10
    return int(wave[: middle - 3].any(axis=0).sum())


def test_video_and_audio_show_as_thumbnails_and_play_in_the_full_view(site, recordings):
    case_id, sha = a_case(site, recordings)
    client = site.logged_in(site.person(OWN, ["case.read"]))
    page = client.get(f"/cases/{case_id}")
    assert page.status_code == 200
    for name in sha:  # every item a picture, none a bare tile
        assert f'src="/cases/{case_id}/media/{sha[name]}/thumb"' in page.text, name
    assert page.text.count('class="picture video"') == 3 and page.text.count('class="picture audio"') == 3

    for name in ("MVI_0001.MP4", "IMG_0002.MOV"):
        thumb = client.get(f"/cases/{case_id}/media/{sha[name]}/thumb")
        assert thumb.headers["content-type"] == "image/jpeg"
        frame = picture(thumb)
        assert frame.size == (320, 240)
        # The middle of the clip, not the label filmed first and last (R3).
        mean = np.asarray(frame.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - SCENE).max() < 12, (name, mean)
        preview = picture(client.get(f"/cases/{case_id}/media/{sha[name]}/preview"))
        assert preview.size == (640, 480)
        view = client.get(f"/cases/{case_id}/view/{sha[name]}")
        assert f'<video id="full" controls preload="metadata" src="/api/v1/cases/{case_id}/media/{sha[name]}"' \
               in view.text and f'poster="/cases/{case_id}/media/{sha[name]}/preview"' in view.text

    sounds = {}
    for name in ("DIKT_0003.WAV", "DIKT_0004.M4A", "TYST_0005.WAV"):
        thumb = client.get(f"/cases/{case_id}/media/{sha[name]}/thumb")
        assert thumb.headers["content-type"] == "image/png"
        sounds[name] = picture(thumb)
        assert sounds[name].size == (320, 180)
        view = client.get(f"/cases/{case_id}/view/{sha[name]}")
        assert f'<audio id="full" controls preload="metadata" src="/api/v1/cases/{case_id}/media/{sha[name]}"' \
               in view.text
    # A waveform of the sound itself: the recordings fill it, silence is a flat line.
    assert waveform_columns(sounds["DIKT_0003.WAV"]) > 250 and waveform_columns(sounds["DIKT_0004.M4A"]) > 250
    assert waveform_columns(sounds["TYST_0005.WAV"]) == 0

    # The players' source: the stored bytes, seekable, audited as a read of the original.
    original = client.get(f"/api/v1/cases/{case_id}/media/{sha['MVI_0001.MP4']}", headers={"Range": "bytes=0-99"})
    assert original.status_code == 206 and original.headers["content-type"] == "video/mp4"
    assert original.content == recordings["DCIM/100CANON/MVI_0001.MP4"][0][:100]
    uses = [(e.details["sha256"], e.details["use"]) for e in site.world.events(action="case.media")
            if e.case_id == case_id]
    assert (sha["MVI_0001.MP4"], "thumb") in uses and (sha["MVI_0001.MP4"], "original") in uses


def test_a_video_without_frames_is_refused_clearly_not_a_broken_picture(site, recordings):
    case_id, sha = a_case(site, {p: f for p, f in recordings.items() if p.endswith(("STUB_0006.MOV", ".WAV"))})
    client = site.logged_in(site.person(OWN, ["case.read"]))
    stub = client.get(f"/cases/{case_id}/media/{sha['STUB_0006.MOV']}/thumb", headers={"Accept": "application/json"})
    assert stub.status_code == 400 and stub.json()["reason"] == "NO_PREVIEW"
    # A sentence for staff, not the decoder's exception ("PermissionError" for a frameless MOV).
    assert "video" in stub.json()["message"] and "download" in stub.json()["message"]
    assert "Error" not in stub.json()["message"]
    wav_as_video = client.get(f"/cases/{case_id}/view/{sha['DIKT_0003.WAV']}")
    assert wav_as_video.status_code == 200 and "<audio" in wav_as_video.text
    # The page still lists it (app.js turns the refused picture into a "Film" tile).
    assert f'src="/cases/{case_id}/media/{sha["STUB_0006.MOV"]}/thumb"' in client.get(f"/cases/{case_id}").text
