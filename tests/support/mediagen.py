"""Realistic non-photo media for the end-to-end mode tests: ultrasound exports
(JPEG/PNG and DICOM with a burned-in overlay), H.264 clips with label frames,
and dictation-style audio (WAV, M4A).

Every generator is seeded and deterministic in content, writes real files with
real tools (Pillow, pydicom, PyAV/libx264, ffmpeg, exiftool) and puts the kind
of metadata on them that the real devices write, so that the strip stage has
something to remove and the tests' read-back proves something:

* ultrasound JPEG exports: EXIF make/model/serial, software and an image
  description holding the patient's name and number (as some machines do);
* ultrasound DICOM: a full patient/study/equipment header, the overlay burned
  into the pixels, ``BurnedInAnnotation YES``, a real transfer syntax
  (Explicit VR Little Endian or RLE Lossless);
* video: QuickTime Keys make/model, a GPS position and a create date;
* audio: title/artist/comment (M4A ilst, WAV LIST/INFO) naming the patient.
"""
from __future__ import annotations

import datetime as dt
import pathlib
import subprocess
import wave
from collections.abc import Sequence

import numpy as np
from PIL import Image

from tests.support.labels import render_label, render_overlay

US_MAKE, US_MODEL, US_SERIAL = "GE Healthcare", "LOGIQ E10", "LE10-556781"


# --------------------------------------------------------------------------- ultrasound images


def overlay_frame(number: str, *, name: str = "ANDERSSON, ANNA", date: str = "2026-11-25",
                  size: tuple[int, int] = (1024, 768), seed: int = 0) -> Image.Image:
    """An ultrasound frame with ``name  number  date`` burned into its banner (RGB)."""
    return render_overlay(name, number, date, size[0], size[1], seed).image


def write_ultrasound_image(path: pathlib.Path, number: str, *, fmt: str = "JPEG",
                           name: str = "ANDERSSON, ANNA", seed: int = 0,
                           size: tuple[int, int] = (1024, 768),
                           capture: dt.datetime | None = None) -> pathlib.Path:
    """An ultrasound machine's JPEG or PNG export, with the machine's metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = overlay_frame(number, name=name, size=size, seed=seed)
    if fmt == "JPEG":
        img.save(path, "JPEG", quality=92)
    else:
        img.save(path, "PNG")
    when = (capture or dt.datetime(2026, 11, 25, 12, 41, 7) + dt.timedelta(seconds=seed * 13))
    stamp = when.strftime("%Y:%m:%d %H:%M:%S")
    tags = ["-Software=LOGIQ E10 R3.1.2", f"-ImageDescription={name} {number}",
            "-Artist=Sonographer KL"]
    if fmt == "JPEG":
        tags += [f"-Make={US_MAKE}", f"-Model={US_MODEL}", f"-SerialNumber={US_SERIAL}",
                 f"-DateTimeOriginal={stamp}", f"-UserComment={name} {number}"]
    else:
        tags += [f"-PNG:CreationTime={stamp}", f"-PNG:Comment={name} {number}"]
    subprocess.run(["exiftool", "-q", "-overwrite_original", *tags, str(path)], check=True)
    return path


# --------------------------------------------------------------------------- ultrasound DICOM

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def write_us_dicom(path: pathlib.Path, frames: Sequence[Image.Image], patient_id: str, *,
                   name: str = "ANDERSSON^ANNA", rle: bool = False,
                   study: str = "20261125", time: str = "124107", instance: int = 1,
                   study_uid: str | None = None, series_uid: str | None = None) -> pathlib.Path:
    """An ultrasound DICOM file (one or more RGB frames), header naming ``patient_id``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    arrays = [np.asarray(f.convert("RGB"), dtype=np.uint8) for f in frames]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE if len(arrays) == 1 else US_MULTIFRAME_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = patient_id.replace("-", "")[:8] if patient_id[:8].isdigit() else ""
    ds.PatientSex = "F"
    ds.OtherPatientIDs = patient_id
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.StudyID, ds.AccessionNumber = "1", "RS26112500041"
    ds.ReferringPhysicianName = "LÄKARE^KARIN"
    ds.InstitutionName = "Karolinska Universitetssjukhuset"
    ds.StationName = "US-KIR-12"
    ds.Manufacturer, ds.ManufacturerModelName = US_MAKE, US_MODEL
    ds.DeviceSerialNumber = US_SERIAL
    ds.SoftwareVersions = "R3.1.2"
    ds.Modality = "US"
    ds.BurnedInAnnotation = "YES"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 1, instance
    h, w, _ = arrays[0].shape
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(arrays) > 1:
        ds.NumberOfFrames = len(arrays)
        ds.FrameTime = 40.0
    ds.PixelData = np.stack(arrays).tobytes()
    if rle:
        ds.compress(RLELossless)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicomdir_card(root: pathlib.Path, files: Sequence[pathlib.Path]) -> list[str]:
    """A DICOM media card: ``DICOMDIR`` plus the referenced files in pydicom's
    standard layout (``PT000000/ST000000/SE000000/IM000000``). Returns the
    referenced files' paths relative to ``root``."""
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()
    for f in files:
        fs.add(pydicom.dcmread(f))
    fs.write(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != "DICOMDIR")


# --------------------------------------------------------------------------- video


def label_scene(number: str, *, size: tuple[int, int] = (640, 480), seed: int = 1,
                symbology: str = "Code128", name: str = "ANDERSSON, ANNA") -> Image.Image:
    return render_label(number, name, symbology=symbology, size=int(size[0] * 0.7),
                        scene_size=size, jpeg_quality=None, seed=seed).image


def write_video(path: pathlib.Path, *, first: str | None, last: str | None, seconds: float = 4.0,
                fps: int = 10, size: tuple[int, int] = (640, 480), label_seconds: float = 1.0,
                created: dt.datetime | None = dt.datetime(2026, 3, 14, 9, 35, 0),
                camera: tuple[str, str] | None = ("Canon", "Canon EOS 250D"), seed: int = 1
                ) -> pathlib.Path:
    """An H.264 MP4 clip: the label showing ``first`` during its first
    ``label_seconds``, ``last`` during its last ones (None: no label), a moving
    wound-like scene in between. QuickTime metadata as a camera writes it."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    head = label_scene(first, size=size, seed=seed) if first else None
    tail = label_scene(last, size=size, seed=seed + 1) if last else None
    base = np.asarray(Image.new("RGB", size, (198, 134, 102)), dtype=np.int16)
    n = int(round(seconds * fps))
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "20"}
        for i in range(n):
            t = i / fps
            if head is not None and t < label_seconds:
                img = head
            elif tail is not None and t >= seconds - label_seconds:
                img = tail
            else:
                noise = rng.normal(0, 6, size=base.shape[:2] + (1,)).astype(np.int16)
                arr = np.clip(base + noise, 0, 255).astype(np.uint8)
                img = Image.fromarray(arr, "RGB")
            for packet in s.encode(av.VideoFrame.from_image(img)):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    tags = []
    if created is not None:
        stamp = created.strftime("%Y:%m:%d %H:%M:%S")
        tags += [f"-QuickTime:CreateDate={stamp}", f"-QuickTime:ModifyDate={stamp}",
                 f"-QuickTime:TrackCreateDate={stamp}", f"-QuickTime:MediaCreateDate={stamp}"]
    if camera is not None:
        tags += [f"-Keys:Make={camera[0]}", f"-Keys:Model={camera[1]}",
                 "-Keys:GPSCoordinates=59.3496, 18.0338, 12", "-UserData:Comment=avd 12 sår"]
    if tags:
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-api", "QuickTimeUTC=0",
                        *tags, str(path)], check=True)
    return path


# --------------------------------------------------------------------------- audio


def _tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A speech-like signal: a few tones with a syllable envelope, some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    sig = sum(np.sin(2 * np.pi * f * t) * a for f, a in ((180, 0.5), (360, 0.3), (720, 0.15)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t) ** 2
    sig = sig * envelope + rng.normal(0, 0.02, t.shape)
    return (np.clip(sig, -1, 1) * 0.6 * 32767).astype("<i2")


def write_wav(path: pathlib.Path, *, seconds: float = 3.0, rate: int = 16000, seed: int = 0,
              info: dict[str, str] | None = None) -> pathlib.Path:
    """A mono 16-bit PCM WAV (a dictaphone's), with a RIFF LIST/INFO chunk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_tone(seconds, rate, seed).tobytes())
    if info:
        body = b"INFO"
        for key, value in info.items():
            data = value.encode("latin-1") + b"\x00"
            if len(data) % 2:
                data += b"\x00"
            body += key.encode("ascii") + len(value.encode("latin-1") + b"\x00").to_bytes(4, "little") + data
        raw = bytearray(path.read_bytes())
        raw += b"LIST" + len(body).to_bytes(4, "little") + body
        raw[4:8] = (len(raw) - 8).to_bytes(4, "little")
        path.write_bytes(bytes(raw))
    return path


def write_m4a(path: pathlib.Path, *, seconds: float = 3.0, seed: int = 0,
              tags: dict[str, str] | None = None,
              created: dt.datetime = dt.datetime(2026, 3, 14, 10, 2, 0)) -> pathlib.Path:
    """An AAC-in-MP4 recording (brand ``M4A``), as a recorder app writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_suffix(".src.wav")
    write_wav(wav, seconds=seconds, rate=44100, seed=seed)
    meta = [a for k, v in (tags or {}).items() for a in ("-metadata", f"{k}={v}")]
    try:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac",
                        "-b:a", "64k", *meta, "-f", "ipod", str(path)], check=True)
    finally:
        wav.unlink(missing_ok=True)
    stamp = created.strftime("%Y:%m:%d %H:%M:%S")
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-api", "QuickTimeUTC=0",
                    f"-QuickTime:CreateDate={stamp}", str(path)], check=True)
    return path
