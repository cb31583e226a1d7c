#!/usr/bin/env python3
"""Realistic camera memory cards for tests and the README demo.

A card is a folder laid out like a camera's (DCF): ``DCIM/100CANON/IMG_0001.JPG``
and on. Each JPEG is a clinical-looking photograph (textured skin with noise,
light fall-off, a little blur, JPEG compression). The first and the last image
(or any chosen ones) show a printed patient label: a white sticker, slightly
rotated and in perspective, with a real barcode (rendered by zxing-cpp)
encoding the patient's number and the number and a name printed below it in a
real TrueType font. Each image carries real camera metadata: the maker notes
and tags of a real camera file from the shared corpus
(``/work/shared/corpus/exif``) copied with exiftool, then make, model, serial,
an increasing DateTimeOriginal (so capture order is defined) and a GPS
position. Next to the media lies the housekeeping a camera and the computers it
met leave on a card (the camera's catalogue file, macOS and Windows indexes,
AppleDouble files).

Use :func:`make_card` from tests; run the module as a script for a card on disk::

    python tests/support/cardgen.py OUT --patient 19121212-1212 --images 4

The corpus is only read; without it the metadata is written by exiftool alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

try:  # zxing-cpp renders the barcodes; it is a dependency of the agent itself.
    import zxingcpp
except ImportError:  # pragma: no cover - the agent cannot read barcodes either
    zxingcpp = None

CORPUS_EXIF = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus")) / "exif"

# Skatteverket's classic test personnummer and its test person's name.
TEST_PATIENT = "19121212-1212"
TEST_NAME = "Tolvan Tolvansson"
_NAMES = ("Tolvan Tolvansson", "Anna Andersson", "Erik Eriksson", "Karin Lindqvist",
          "Lars Nilsson", "Maria Johansson", "Sven Svensson", "Eva Berg")

SYMBOLOGIES = ("Code128", "DataMatrix", "QRCode", "Code39")


# --------------------------------------------------------------------------- numbers


def luhn_digit(nine: str) -> int:
    """The Luhn check digit for the nine digits ``YYMMDDNNN``."""
    total = 0
    for i, ch in enumerate(nine):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def make_personnummer(date: str | dt.date, serial: str | int, *, coordination: bool = False,
                      valid: bool = True) -> str:
    """A personnummer ``YYYYMMDD-NNNC`` with a correct Luhn digit.

    ``date`` is ``YYYYMMDD`` (or a date), ``serial`` three digits. With
    ``coordination`` the day is given 60 more (a samordningsnummer). With
    ``valid=False`` the check digit is deliberately wrong, for refusal tests.
    """
    if isinstance(date, dt.date):
        date = date.strftime("%Y%m%d")
    date = date.replace("-", "")
    if len(date) != 8 or not date.isdigit():
        raise ValueError(f"date must be YYYYMMDD, got {date!r}")
    dt.date(int(date[:4]), int(date[4:6]), int(date[6:]))  # raises on an impossible date
    if coordination:
        date = date[:6] + f"{int(date[6:]) + 60:02d}"
    serial = f"{int(serial):03d}"
    check = luhn_digit(date[2:] + serial)
    if not valid:
        check = (check + 1) % 10
    return f"{date}-{serial}{check}"


def compact(number: str) -> str:
    """``19121212-1212`` -> ``191212121212`` (what the labels' barcodes carry)."""
    return "".join(ch for ch in number if ch.isdigit())


# --------------------------------------------------------------------------- cameras


@dataclasses.dataclass(frozen=True)
class Camera:
    make: str
    model: str
    serial: str
    folder: str  # DCF folder under DCIM
    pattern: str  # file name with {n}
    corpus_file: str  # real file whose tags and maker notes are copied
    housekeeping: tuple[tuple[str, bytes], ...] = ()  # what the camera itself writes


CAMERAS: dict[str, Camera] = {
    "canon": Camera("Canon", "Canon EOS 250D", "083051006721", "100CANON", "IMG_{n:04d}.JPG",
                    "Canon.jpg", (("DCIM/CANONMSC/M0100.CTG", b"CTG\x00" + bytes(508)),)),
    "nikon": Camera("NIKON CORPORATION", "NIKON D7500", "3051742", "100NIKON", "DSC_{n:04d}.JPG",
                    "Nikon.jpg"),
    "sony": Camera("SONY", "ILCE-6400", "4294967", "100MSDCF", "DSC{n:05d}.JPG", "Sony.jpg"),
    "olympus": Camera("OLYMPUS CORPORATION", "E-M10MarkIII", "BHK213456", "100OLYMP",
                      "P{n:07d}.JPG", "Olympus.jpg"),
    "panasonic": Camera("Panasonic", "DC-TZ90", "WB8KA001234", "100_PANA", "P10{n:05d}.JPG",
                        "Panasonic.jpg"),
    "fujifilm": Camera("FUJIFILM", "X-T30", "8AQ12345", "100_FUJI", "DSCF{n:04d}.JPG",
                       "FujiFilm.jpg"),
}

# What computers leave on a card that has been in them (never media).
_APPLEDOUBLE = (b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"
                + bytes(4082))


def _computer_housekeeping(first_media: str) -> list[tuple[str, bytes]]:
    folder, name = first_media.rsplit("/", 1)
    return [
        (".Spotlight-V100/VolumeConfiguration.plist",
         b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict/></plist>\n'),
        (f"{folder}/._{name}", _APPLEDOUBLE),
        ("System Volume Information/IndexerVolumeGuid",
         "{8F2A9C4E-1B3D-4E5F-9A7B-2C4D6E8F0A1B}".encode("utf-16-le")),
    ]


# --------------------------------------------------------------------------- the card


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    relative_path: str
    label: str | None  # the number shown on this image's label (as printed), or None
    payload: str | None  # what the label's barcode encodes
    capture_time: dt.datetime
    label_box: tuple[int, int, int, int] | None = None  # x, y, w, h of the sticker


@dataclasses.dataclass(frozen=True)
class CardSpec:
    """What :func:`make_card` wrote, and the truth a test checks against."""

    root: pathlib.Path
    images: tuple[ImageSpec, ...]  # in capture order
    housekeeping: tuple[str, ...]  # relative paths of non-media files
    camera: Camera
    symbology: str
    exif_source: str | None  # corpus file whose tags were copied, or None

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(i.relative_path for i in self.images)

    @property
    def patients(self) -> tuple[str, ...]:
        """Distinct numbers shown anywhere on the card (12 digits), in order of appearance."""
        out: list[str] = []
        for i in self.images:
            if i.label and compact(i.label) not in out:
                out.append(compact(i.label))
        return tuple(out)

    def describe(self) -> str:
        lines = [f"card {self.root} ({self.camera.make} {self.camera.model}, {self.symbology})"]
        for i in self.images:
            shown = f"label {i.label} (barcode {i.payload!r})" if i.label else "no label"
            lines.append(f"  {i.relative_path}  {i.capture_time:%Y-%m-%d %H:%M:%S}  {shown}")
        for h in self.housekeeping:
            lines.append(f"  {h}  (housekeeping)")
        return "\n".join(lines)


def make_card(
    root: pathlib.Path | str,
    *,
    patient: str | None,
    n_images: int = 4,
    last_patient: str | None = None,
    extra_patient_at: int | None = None,
    extra_patient: str | None = None,
    symbology: str = "Code128",
    megapixels: float = 3.0,
    camera: str = "canon",
    seed: int = 0,
    label_on: Sequence[str | int] | str = ("first", "last"),
    housekeeping: bool = True,
    printed_number: bool = True,
    barcode: bool = True,
    print_only_at: Sequence[int] = (),
    barcode_only_at: Sequence[int] = (),
    label_angle: float | None = None,
    label_scale: float = 0.30,
    payloads: dict[int, str] | None = None,
    blur: float = 0.6,
    exif: bool = True,
    start: dt.datetime = dt.datetime(2026, 3, 14, 9, 30, 0),
    quality: int = 90,
    subsampling: str = "4:2:0",
) -> CardSpec:
    """Write a camera card under ``root`` and return what it holds.

    ``patient`` is shown on the images named by ``label_on`` (``"first"``,
    ``"last"``, ``"all"`` or 0-based indexes); ``last_patient`` replaces it on
    the last image; ``extra_patient`` (default: a second valid number) is shown
    on image ``extra_patient_at`` (0-based). ``payloads`` overrides what the
    barcode on image *i* encodes (e.g. a number with a wrong check digit); the
    printed text follows it. ``label_angle`` fixes the label's rotation in
    degrees (default: a random tilt within +-8). ``barcode=False`` prints the
    number only; ``printed_number=False`` leaves out the printed digits.
    ``print_only_at`` and ``barcode_only_at`` do the same for single images
    (0-based), e.g. another patient's print-only label in the middle of a card.
    ``quality`` and ``subsampling`` are the JPEG encoder's: the default makes
    small files for fast tests (about 1.6 MB per 12 MP frame); a camera's fine
    JPEG is about ``quality=96, subsampling="4:2:2"`` (about 3.5 MB per 12 MP
    frame, as on the card issue 12 measured: 100 frames, 336 MB).
    """
    root = pathlib.Path(root)
    if n_images < 1:
        raise ValueError("a card holds at least one image")
    if symbology not in SYMBOLOGIES:
        raise ValueError(f"symbology must be one of {SYMBOLOGIES}")
    cam = CAMERAS[camera]
    rng = np.random.default_rng(seed)
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5 / 16)) * 16
    height = width * 3 // 4

    shown = _labels_per_image(n_images, patient, label_on, last_patient, extra_patient_at,
                              extra_patient)
    if payloads and not all(0 <= i < n_images for i in payloads):
        raise ValueError(f"payloads: image index outside 0..{n_images - 1}")
    folder = root / "DCIM" / cam.folder
    folder.mkdir(parents=True, exist_ok=True)
    specs: list[ImageSpec] = []
    for i in range(n_images):
        rel = f"DCIM/{cam.folder}/{cam.pattern.format(n=i + 1)}"
        label = shown[i]
        payload = None
        if payloads and i in payloads:
            payload = payloads[i]
            label = label or payload
        elif label is not None:
            payload = compact(label)
        scene = _scene(width, height, rng)
        box = None
        if label is not None:
            angle = label_angle if label_angle is not None else float(rng.uniform(-8, 8))
            printed = payloads[i] if payloads and i in payloads else label
            coded = barcode and i not in print_only_at
            sticker = _sticker(
                printed=printed, payload=payload if coded else None, symbology=symbology,
                name=TEST_NAME if label == TEST_PATIENT
                else _NAMES[sum(map(ord, compact(label))) % len(_NAMES)],
                printed_number=printed_number and i not in barcode_only_at,
            )
            box = _place(scene, sticker, angle, label_scale, rng)
        img = _photograph(scene, rng, blur)
        img.save(root / rel, "JPEG", quality=quality, subsampling=subsampling, optimize=False)
        when = start + dt.timedelta(seconds=37 * i + int(rng.integers(0, 20)))
        specs.append(ImageSpec(rel, label, payload if barcode and i not in print_only_at else None,
                               when, box))

    exif_source = _write_metadata(root, specs, cam, rng) if exif else None

    extra: list[str] = []
    if housekeeping:
        for rel, data in [*cam.housekeeping, *_computer_housekeeping(specs[0].relative_path)]:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            extra.append(rel)
    return CardSpec(root, tuple(specs), tuple(extra), cam, symbology, exif_source)


def _labels_per_image(n: int, patient: str | None, label_on: Sequence[str | int] | str,
                      last_patient: str | None, extra_at: int | None,
                      extra_patient: str | None) -> list[str | None]:
    where = (label_on,) if isinstance(label_on, (str, int)) else tuple(label_on)
    shown: list[str | None] = [None] * n
    for w in where:
        idx = {"first": [0], "last": [n - 1], "all": list(range(n))}.get(w, None) \
            if isinstance(w, str) else [w]
        if idx is None or not all(0 <= i < n for i in idx):
            raise ValueError(f"label_on: no such position {w!r}")
        for i in idx:
            shown[i] = patient
    if last_patient is not None:
        shown[n - 1] = last_patient
    if extra_at is not None:
        if not 0 <= extra_at < n:
            raise ValueError("extra_patient_at is outside the card")
        shown[extra_at] = extra_patient or make_personnummer("19820415", "238")
    return shown


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=None)
def font_path(bold: bool = False) -> str | None:
    """A real TrueType font on this system (DejaVu Sans if present), or None."""
    names = ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf") if bold else \
        ("DejaVuSans.ttf", "LiberationSans-Regular.ttf")
    for base in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation",
                 "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu"):
        for n in names:
            p = pathlib.Path(base) / n
            if p.exists():
                return str(p)
    if shutil.which("fc-match"):
        out = subprocess.run(["fc-match", "-f", "%{file}", "sans:bold" if bold else "sans"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.endswith((".ttf", ".otf")):
            return out.stdout
    return None


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path(bold)
    if path:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def barcode_image(payload: str, symbology: str) -> Image.Image:
    """The bare symbol (one pixel per module, no quiet zone), as zxing-cpp writes it."""
    if zxingcpp is None:  # pragma: no cover
        raise RuntimeError("zxing-cpp is needed to render barcodes")
    fmt = getattr(zxingcpp.BarcodeFormat, symbology)
    code = zxingcpp.create_barcode(payload, fmt)
    return Image.fromarray(np.asarray(code.to_image(scale=1, add_quiet_zones=False)), "L")


def _sticker(*, printed: str, payload: str | None, symbology: str, name: str,
             printed_number: bool) -> Image.Image:
    """The label as printed: white sticker, barcode, number and name. RGBA."""
    w, h = 900, 420
    img = Image.new("RGB", (w, h), (250, 250, 246))
    draw = ImageDraw.Draw(img)
    text_x, text_y = 40, 40
    if payload is not None:
        code = barcode_image(payload, symbology)
        if symbology in ("DataMatrix", "QRCode"):
            side = 300
            module = max(1, side // code.width)
            code = code.resize((code.width * module, code.height * module), Image.NEAREST)
            img.paste(code, (40, (h - code.height) // 2))
            text_x, text_y = 40 + code.width + 40, 70
        else:
            module = max(1, (w - 120) // code.width)
            code = code.resize((code.width * module, 190), Image.NEAREST)
            img.paste(code, ((w - code.width) // 2, 36))
            text_x, text_y = 60, 250
    if printed_number:
        draw.text((text_x, text_y), printed, fill=(15, 15, 15), font=_font(58, bold=True))
        text_y += 72
    draw.text((text_x, text_y), name, fill=(30, 30, 30), font=_font(44))
    draw.text((text_x, text_y + 56), "Hudkliniken  2026-03-14", fill=(60, 60, 60), font=_font(30))
    return img


def _scene(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A skin-like clinical photograph, float32 HxWx3 in 0..255.

    Everything smooth (shading, mottling, a lesion, hair-thin lines) is drawn
    on a grid an eighth of the size and upsampled; only the fine texture and
    noise are made at full size, which keeps a 12 MP frame fast to make.
    """
    sw, sh = width // 8 + 1, height // 8 + 1
    base = np.array([222, 170, 142], np.float32) * rng.uniform(0.88, 1.04, 3).astype(np.float32)

    def field(cell: int) -> np.ndarray:
        coarse = rng.standard_normal((sh // cell + 2, sw // cell + 2), dtype=np.float32)
        im = Image.fromarray(coarse).resize((sw, sh), Image.BICUBIC)
        return np.asarray(im, np.float32)

    lum = field(24) * 9 + field(4) * 3  # broad shading plus mottling
    red = field(6) * 4  # blotchy redness
    yy, xx = np.ogrid[:sh, :sw]
    cx, cy = sw * rng.uniform(0.3, 0.7), sh * rng.uniform(0.3, 0.7)
    rx, ry = sw * rng.uniform(0.05, 0.12), sh * rng.uniform(0.05, 0.12)
    edge = 1 + 0.25 * field(3)  # an irregular border
    lesion = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) * 2 * edge)[..., None]
    small = base + lum[..., None] + red[..., None] * np.array([1, -0.3, -0.3], np.float32)
    small = small * (1 - 0.45 * lesion) + lesion * np.array([35, -5, 0], np.float32)
    img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):  # a few fine hairs
        x0, y0 = rng.uniform(0, sw), rng.uniform(0, sh)
        ang, length = rng.uniform(0, np.pi), rng.uniform(8, 30)
        draw.line((x0, y0, x0 + length * np.cos(ang), y0 + length * np.sin(ang)),
                  fill=(96, 66, 52), width=1)
    out = np.asarray(img.resize((width, height), Image.BICUBIC), np.float32)
    out += rng.standard_normal((height, width, 1), dtype=np.float32) * 4  # pores, texture
    return out


def _perspective(sticker: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = sticker.size
    j = lambda s: float(rng.uniform(-s, s))  # noqa: E731
    quad = (j(w * .03), j(h * .04), j(w * .03), h + j(h * .04),
            w + j(w * .03), h + j(h * .04), w + j(w * .03), j(h * .04))
    return sticker.transform((w, h), Image.QUAD, quad, Image.BICUBIC,
                             fillcolor=(250, 250, 246))


def _place(scene: np.ndarray, sticker: Image.Image, angle: float, scale: float,
           rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Paste the sticker onto the scene (in place); return its bounding box."""
    height, width = scene.shape[:2]
    target_w = max(120, int(width * scale))
    target_h = max(40, int(sticker.height * target_w / sticker.width))
    st = _perspective(sticker, rng).resize((target_w, target_h), Image.LANCZOS).convert("RGBA")
    st = st.rotate(angle, resample=Image.BICUBIC, expand=True)
    sw, sh = st.size
    if sw >= width or sh >= height:
        raise ValueError("label_scale too large for the image")
    x = int(rng.integers(int(width * 0.04), width - sw - int(width * 0.04) + 1))
    y = int(rng.integers(int(height * 0.04), height - sh - int(height * 0.04) + 1))
    alpha = np.asarray(st.getchannel("A"), np.float32)[..., None] / 255
    rgb = np.asarray(st.convert("RGB"), np.float32)
    # A soft shadow down and to the right, then the sticker.
    shadow = np.asarray(st.getchannel("A").filter(ImageFilter.GaussianBlur(6)), np.float32)[..., None] / 255
    off = max(2, sw // 120)
    region = scene[y + off:y + off + sh, x + off:x + off + sw]
    region *= 1 - 0.35 * shadow[:region.shape[0], :region.shape[1]]
    region = scene[y:y + sh, x:x + sw]
    # Light falls unevenly on the sticker.
    gradient = np.linspace(rng.uniform(0.85, 0.95), rng.uniform(0.97, 1.0), sw, dtype=np.float32)
    region[:] = region * (1 - alpha) + rgb * gradient[None, :, None] * alpha
    return (x, y, sw, sh)


def _photograph(scene: np.ndarray, rng: np.random.Generator, blur: float) -> Image.Image:
    height, width = scene.shape[:2]
    # Vignetting: the corners a little darker.
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    scene = scene * (1 - 0.12 * (xx * xx + yy * yy))[..., None]
    scene += rng.standard_normal((height, width, 3), dtype=np.float32) * 2.0  # sensor noise
    img = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8), "RGB")
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return img


# --------------------------------------------------------------------------- metadata


def _write_metadata(root: pathlib.Path, specs: Sequence[ImageSpec], cam: Camera,
                    rng: np.random.Generator) -> str | None:
    """Real EXIF, maker notes and GPS via one exiftool process; returns the source used."""
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        raise RuntimeError("exiftool is needed to write camera metadata")
    source = CORPUS_EXIF / cam.corpus_file
    have_source = source.is_file()
    lat = 59.3493 + float(rng.uniform(-0.002, 0.002))  # Karolinska, Solna
    lon = 18.0325 + float(rng.uniform(-0.002, 0.002))
    args: list[str] = []
    thumbs: list[pathlib.Path] = []
    for n, spec in enumerate(specs):
        when = spec.capture_time.strftime("%Y:%m:%d %H:%M:%S")
        if have_source:
            args += ["-tagsFromFile", str(source), "-all:all", "-makernotes"]
        # The camera's own 160x120 thumbnail in IFD1, as every camera writes one.
        thumb = root / f".cardgen-thumb-{n}.jpg"
        with Image.open(root / spec.relative_path) as full:
            full.draft("RGB", (320, 240))
            full.convert("RGB").resize((160, 120)).save(thumb, "JPEG", quality=80)
        thumbs.append(thumb)
        args += [f"-ThumbnailImage<={thumb}"]
        args += [
            f"-Make={cam.make}", f"-Model={cam.model}", f"-SerialNumber={cam.serial}",
            "-Orientation#=1", f"-DateTimeOriginal={when}", f"-CreateDate={when}",
            f"-ModifyDate={when}", "-OffsetTimeOriginal=+01:00",
            f"-GPSLatitude={lat:.6f}", "-GPSLatitudeRef=N",
            f"-GPSLongitude={lon:.6f}", "-GPSLongitudeRef=E",
            "-Software=Firmware Version 1.0.1",
            "-overwrite_original", "-q", "-q", str(root / spec.relative_path), "-execute",
        ]
    argfile = root / ".cardgen-exiftool.args"
    argfile.write_text("\n".join(args) + "\n", encoding="utf-8")
    try:
        result = subprocess.run([exiftool, "-@", str(argfile)], capture_output=True, text=True)
    finally:
        argfile.unlink()
        for thumb in thumbs:
            thumb.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"exiftool failed: {result.stderr.strip()}")
    return cam.corpus_file if have_source else None


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path, help="folder to write the card into")
    parser.add_argument("--patient", default=TEST_PATIENT,
                        help="number on the first and last label (default %(default)s)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--last-patient", help="a different number on the last label")
    parser.add_argument("--extra-patient-at", type=int, help="0-based image showing another patient")
    parser.add_argument("--extra-patient", help="that other patient's number")
    parser.add_argument("--symbology", choices=SYMBOLOGIES, default="Code128")
    parser.add_argument("--camera", choices=sorted(CAMERAS), default="canon")
    parser.add_argument("--megapixels", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-label", action="store_true", help="no label on any image")
    parser.add_argument("--label-on-all", action="store_true", help="label on every image (assault)")
    parser.add_argument("--no-housekeeping", action="store_true")
    args = parser.parse_args(argv)
    label_on: tuple[str, ...] = () if args.no_label else \
        ("all",) if args.label_on_all else ("first", "last")
    spec = make_card(args.out, patient=args.patient, n_images=args.images,
                     last_patient=args.last_patient, extra_patient_at=args.extra_patient_at,
                     extra_patient=args.extra_patient, symbology=args.symbology,
                     megapixels=args.megapixels, camera=args.camera, seed=args.seed,
                     label_on=label_on, housekeeping=not args.no_housekeeping)
    print(spec.describe())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    sys.exit(main())
