"""Device policy (R6): registered devices pass; phones are refused, even with an empty register.

Phone traits are read from real phone files of the shared corpus (iPhone JPEG
and HEIC, Pixel, Motorola, Jolla) and from a video with the QuickTime keys an
iPhone writes; the end-to-end tests run ``bildsluss-agent ingest``.
"""
import dataclasses
import pathlib
import shutil
import subprocess

import pytest

from agent.card.devices import check_devices, judge, phone_traits
from agent.card.metadata import MetadataReader
from agent.card.model import Device, MediaFile, MediaKind, Method, Mode, StageError
from agent.card.reasons import Reason
from agent.card.scan import scan
from tests.support.cardgen import make_card
from tests.support.e2e import PATIENT, ingest, snapshot

CANON = Device("Canon", "Canon EOS 250D", "083051006721")
EXIF = pathlib.Path("/work/shared/corpus/exif")
needs_corpus = pytest.mark.skipif(not EXIF.is_dir(), reason="shared corpus not present")


def _media(name: str, device: Device, traits: tuple[str, ...] = ()) -> MediaFile:
    return MediaFile(path=pathlib.Path("/card") / name, relative_path=name, kind=MediaKind.IMAGE,
                     media_type="image/jpeg", size=1, sha256="0" * 64, mtime_ns=0, device=device,
                     device_traits=traits)


def test_registered_device_passes_case_and_space_insensitive():
    check_devices([_media("a.jpg", Device("CANON", "Canon  EOS 250D", "083051006721"))], [CANON], Mode.PHOTO)


@pytest.mark.parametrize(
    "device, why",
    [
        (Device("Apple", "iPhone 15 Pro", ""), "Apple iPhone 15 Pro, a phone"),
        (Device("Canon", "Canon EOS 250D", "999"), "serial 999, not registered"),
        (Device("Nikon", "NIKON D70", ""), "NIKON D70, not registered"),
        (Device(), "names no capture device"),
    ],
)
def test_others_refuse_the_card(device, why):
    with pytest.raises(StageError) as err:
        check_devices([_media("ok.jpg", CANON), _media("bad.jpg", device)], [CANON], Mode.PHOTO)
    assert err.value.reason == Reason.UNREGISTERED_DEVICE
    assert "bad.jpg" in err.value.detail and why in err.value.detail
    assert "ok.jpg" not in err.value.detail


def test_ultrasound_without_device_id_is_judged_by_ehr_context():
    check_devices([_media("us.dcm", Device())], [CANON], Mode.ULTRASOUND)


def test_registration_without_serial_accepts_any_serial():
    check_devices([_media("a.jpg", Device("Canon", "Canon EOS 250D", "1"))],
                  [Device("Canon", "Canon EOS 250D")], Mode.PHOTO)


@pytest.mark.parametrize("device", [
    Device("Apple", "iPhone 7"), Device("samsung", "SM-G991B"), Device("Google", "Pixel 8 Pro"),
    Device("HUAWEI", "ELE-L29"), Device("Xiaomi", "2201123G"), Device("OnePlus", "CPH2449"),
    Device("Sony", "Xperia 1 V"), Device("", "iPhone 12"),
])
def test_phones_are_refused_with_an_empty_register(device):
    with pytest.raises(StageError) as err:
        check_devices([_media("IMG_0001.JPG", device)], [], Mode.PHOTO)
    assert err.value.reason == Reason.UNREGISTERED_DEVICE and "a phone" in err.value.detail


@pytest.mark.parametrize("device", [
    CANON, Device("NIKON CORPORATION", "NIKON D70"), Device("Samsung Techwin", "Digimax i50"),
    Device("SONY", "ILCE-7M4"), Device(),
])
def test_cameras_pass_an_empty_register(device):
    check_devices([_media("IMG_0001.JPG", device)], [], Mode.PHOTO)


def test_phone_traits_refuse_even_under_a_registered_camera_name():
    """A registered camera's name over an Apple maker note: the name was edited."""
    spoofed = _media("IMG_0001.JPG", CANON, ("Apple maker note (MakerNotes:Apple)",))
    with pytest.raises(StageError) as err:
        check_devices([spoofed], [CANON], Mode.PHOTO)
    assert "phone traits" in err.value.detail and "although a camera" in err.value.detail


def test_a_registered_phone_is_a_department_device():
    managed = Device("Apple", "iPhone 15", "")
    [j] = judge([_media("IMG_0001.JPG", managed, ("Apple maker note (MakerNotes:Apple)",))],
                [managed], Mode.PHOTO)
    assert j.accepted and "registered" in j.why


@needs_corpus
@pytest.mark.parametrize("name, trait", [
    ("Apple.jpg", "Apple maker note"),
    ("Apple.jpg", "phone lens"),
    ("Google.jpg", "Google camera XMP"),
    ("Google.jpg", "phone camera software (EXIF:IFD0:Software=HDR+"),
    ("Motorola.jpg", "release-keys"),
    ("exif-samples/heic/IMG_5195.HEIC", "Live Photo"),
])
def test_phone_traits_in_real_phone_files_survive_removing_make_and_model(name, trait):
    with MetadataReader() as reader:
        meta = reader.read_one(EXIF / name)
    anonymous = {k: v for k, v in meta.items() if not k.endswith((":Make", ":Model"))}
    assert any(trait in t for t in phone_traits(anonymous)), phone_traits(anonymous)


@needs_corpus
@pytest.mark.parametrize("name", ["Canon.jpg", "NikonD70.jpg", "exif-samples/jpg/Samsung_Digimax_i50_MP3.jpg",
                                  "Sony.jpg", "GoPro.jpg", "Writer.jpg"])
def test_cameras_show_no_phone_traits(name):
    with MetadataReader() as reader:
        assert phone_traits(reader.read_one(EXIF / name)) == ()


def test_video_with_apple_quicktime_keys_is_a_phone(tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "1",
                    "-c:v", "libx264", "-metadata", "com.apple.quicktime.software=17.1",
                    "-metadata", "com.apple.quicktime.content.identifier=5C9E-11",
                    "-movflags", "use_metadata_tags", str(card / "IMG_0001.MOV")], check=True)
    [m] = scan(card).media
    assert not m.device.known and any("Live Photo" in t for t in m.device_traits)
    [j] = judge([m], [], Mode.VIDEO)
    assert not j.accepted and "phone traits" in j.why


@needs_corpus
def test_judgement_is_evidence_naming_its_fields(tmp_path):
    card = tmp_path / "card"
    (card / "DCIM/100CANON").mkdir(parents=True)
    shutil.copy(EXIF / "Canon.jpg", card / "DCIM/100CANON/IMG_0001.JPG")
    shutil.copy(EXIF / "Apple.jpg", card / "DCIM/100CANON/IMG_0002.JPG")
    media = scan(card).media
    canon = next(m for m in media if m.relative_path.endswith("0001.JPG"))
    assert canon.device_fields == ("EXIF:IFD0:Make=Canon", "EXIF:IFD0:Model=Canon EOS DIGITAL REBEL",
                                   "MakerNotes:Canon:SerialNumber=0560018150")
    registered = [dataclasses.replace(canon.device)]
    evidence = {e.relative_path: e for e in (j.evidence() for j in judge(media, registered, Mode.PHOTO))}
    assert all(e.method == Method.DEVICE and e.patient_id is None for e in evidence.values())
    assert evidence["DCIM/100CANON/IMG_0001.JPG"].text.startswith("accepted: taken with Canon")
    apple = evidence["DCIM/100CANON/IMG_0002.JPG"].text
    assert apple.startswith("refused: taken with Apple iPhone 7, a phone")
    assert "EXIF:IFD0:Make=Apple" in apple and "MakerNotes:Apple" in apple
    assert evidence["DCIM/100CANON/IMG_0002.JPG"].to_json()["method"] == "device"


# --- end to end: bildsluss-agent ingest, no devices registered --------------------------


@needs_corpus
@pytest.mark.parametrize("phone_file, reason", [
    ("Apple.jpg", "UNREGISTERED_DEVICE"),
    ("Google.jpg", "UNREGISTERED_DEVICE"),
    ("exif-samples/heic/IMG_5195.HEIC", "UNREGISTERED_DEVICE"),
])
def test_phone_picture_on_a_camera_card_refuses_it_untouched(archive, tmp_path, phone_file, reason):
    card = tmp_path / "card"
    make_card(card, patient=PATIENT, n_images=2, seed=71, megapixels=0.5)
    target = card / "DCIM/100CANON" / f"IMG_0099{pathlib.Path(phone_file).suffix.upper()}"
    shutil.copy(EXIF / phone_file, target)
    before = snapshot(card)

    code, out = ingest(card, archive.address, tmp_path)

    assert code == 3 and out["outcome"] == "refused" and out["reason"] == reason, out
    assert target.name in out["detail"] and "phone" in out["detail"]
    assert out["wiped"] is False and out["case_id"] is None
    assert snapshot(card) == before
    if target.suffix != ".HEIC":
        device = {e["file"]: e["text"] for e in out["evidence"] if e["method"] == "device"}
        assert device[f"DCIM/100CANON/{target.name}"].startswith("refused: taken with")
        assert all(t.startswith("accepted") for f, t in device.items() if f != f"DCIM/100CANON/{target.name}")


@needs_corpus
def test_heic_of_a_camera_is_refused_as_a_format(tmp_path):
    """A HEIF whose metadata names no phone: FORMAT_NOT_ACCEPTED (not NOT_MEDIA, not a crash)."""
    card = tmp_path / "card"
    card.mkdir()
    heic = card / "IMG_0001.HEIC"
    shutil.copy(EXIF / "exif-samples/heic/IMG_5195.HEIC", heic)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-all=", "-Make=Canon", "-Model=Canon EOS R6",
                    str(heic)], check=True)
    result = scan(card)
    assert result.media == ()
    [refused] = result.refused
    assert refused.reason == Reason.FORMAT_NOT_ACCEPTED and "set the camera to JPEG" in refused.detail
