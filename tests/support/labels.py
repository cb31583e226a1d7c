"""Synthetic patient labels and ultrasound overlays, for tests and the benchmark.

Everything here is seeded and deterministic: the same arguments give the same
pixels. Two renderers:

* :func:`render_label`: a white patient label (name, identity number, optional
  barcode) stuck on skin, photographed: rotated, blurred, noisy, with glare,
  JPEG-compressed. Default scene 4000x3000 (12 MP, a typical compact camera).
* :func:`render_overlay`: an ultrasound-like frame (black, speckled sector) with
  the machine's burned-in banner "NAME  NUMBER  DATE" and technical text.

Fonts are real TTF/OTF files from the system (see :data:`FONTS`); a missing font
is an error, never a silent fallback to Pillow's bitmap font.
"""
from __future__ import annotations

import dataclasses
import io
import math
import pathlib
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tests.support.cardgen import make_personnummer

# Fonts used (Debian packages fonts-dejavu-core, fonts-noto-mono, fonts-urw-base35).
FONTS: dict[str, pathlib.Path] = {
    "dejavu-sans": pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    "dejavu-sans-bold": pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    "dejavu-mono": pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"),
    "dejavu-mono-bold": pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"),
    "dejavu-serif": pathlib.Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"),
    "noto-mono": pathlib.Path("/usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf"),
    "nimbus-sans": pathlib.Path("/usr/share/fonts/opentype/urw-base35/NimbusSans-Regular.otf"),
    "nimbus-sans-bold": pathlib.Path("/usr/share/fonts/opentype/urw-base35/NimbusSans-Bold.otf"),
}

SKIN_TONES = [(236, 188, 160), (224, 172, 140), (198, 134, 102), (171, 112, 80), (120, 75, 50)]

SCENE_12MP = (4000, 3000)


def font(name: str, px: int) -> ImageFont.FreeTypeFont:
    path = FONTS[name] if name in FONTS else pathlib.Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"font {name!r} not found at {path}")
    return ImageFont.truetype(str(path), max(4, int(px)))


@dataclasses.dataclass(frozen=True)
class LabelTruth:
    number: str  # as printed, e.g. "19121212-1212"
    name: str
    digits: str  # the number without separator
    symbology: str | None  # barcode printed on the label, or None (print only)
    barcode_text: str | None
    label_box: tuple[int, int, int, int]  # x, y, w, h of the (rotated) sticker in the scene
    number_box: tuple[int, int, int, int]  # x, y, w, h of the printed number in the scene
    rotation: float  # degrees, counter-clockwise
    text_height: int  # cap height of the number in scene pixels (before blur)


@dataclasses.dataclass(frozen=True)
class RenderedLabel:
    image: Image.Image
    truth: LabelTruth


_SYMBOLOGIES = {"Code128", "Code39", "QRCode", "DataMatrix"}


def _barcode(symbology: str, text: str, module_px: int) -> Image.Image:
    import zxingcpp  # only needed when a barcode is asked for

    fmt = getattr(zxingcpp.BarcodeFormat, symbology)
    bmp = np.array(zxingcpp.create_barcode(text, fmt).to_image(scale=1, add_quiet_zones=False), dtype=np.uint8)
    img = Image.fromarray(bmp, "L")
    if symbology in ("Code128", "Code39"):
        # 1D: the bitmap is one module per pixel wide; make it a bar 1/4 as high as wide.
        w = img.width * module_px
        return img.resize((w, max(1, img.height)), Image.NEAREST).resize((w, max(module_px * 20, w // 5)), Image.NEAREST)
    return img.resize((img.width * module_px, img.height * module_px), Image.NEAREST)


def _label_sticker(number: str, name: str, width: int, font_name: str, symbology: str | None,
                   barcode_text: str | None, extra_line: str, printed_number: bool = True,
                   ) -> tuple[Image.Image, tuple[int, int, int, int], int]:
    """The flat label, white on its own; returns image, number box and cap height
    (``printed_number=False``: a barcode-only label, the number box is empty)."""
    pad = max(4, width // 20)
    num_px = max(6, int(width * 0.085))  # a 13-character number fills ~60 % of the width
    name_px = max(5, int(num_px * 0.8))
    f_num, f_name = font(font_name, num_px), font(font_name, name_px)
    lines: list[tuple[str, ImageFont.FreeTypeFont]] = [(name, f_name)]
    if printed_number:
        lines.append((number, f_num))
    if extra_line:
        lines.append((extra_line, f_name))
    bar = None
    if symbology:
        if symbology not in _SYMBOLOGIES:
            raise ValueError(f"unknown symbology {symbology!r}")
        inner = width - 2 * pad
        probe = _barcode(symbology, barcode_text or "", 1)
        module = max(1, inner // (probe.width if symbology in ("Code128", "Code39") else probe.width * 3))
        bar = _barcode(symbology, barcode_text or "", module)
    heights = [f.getbbox("ÅÄg" + t)[3] - f.getbbox("ÅÄg" + t)[1] for t, f in lines]
    gap = max(2, num_px // 3)
    h = pad * 2 + sum(heights) + gap * len(lines) + (bar.height + gap if bar is not None else 0)
    h = max(h, int(width * 0.38))
    img = Image.new("L", (width, h), 246)
    d = ImageDraw.Draw(img)
    y = pad
    number_box = (0, 0, 0, 0)
    cap = 0
    for (text, f), lh in zip(lines, heights):
        bb = d.textbbox((pad, y), text, font=f)
        d.text((pad, y), text, font=f, fill=20)
        if text == number:
            number_box = (bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1])
            cap = bb[3] - bb[1]
        y += lh + gap
    if bar is not None:
        img.paste(bar, (pad, y))
    return img, number_box, cap


def _skin(size: tuple[int, int], rng: np.random.Generator, tone: tuple[int, int, int]) -> Image.Image:
    w, h = size
    low = rng.normal(1.0, 0.08, size=(12, 16, 1)).astype(np.float32)
    low = np.clip(low, 0.7, 1.25)
    base = (low * np.array(tone, dtype=np.float32)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(base, "RGB").resize((w, h), Image.BICUBIC)
    # A few darker blotches (hair, freckles, a wound margin) so that not all is smooth.
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(max(2, w // 200), max(3, w // 30)))
        c = tuple(int(v * rng.uniform(0.55, 0.85)) for v in tone)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c)
    return img.filter(ImageFilter.GaussianBlur(max(1, w // 800)))


def _photographed(scene: Image.Image, blur: float, noise: float, rng: np.random.Generator) -> Image.Image:
    """The lens's blur (a Gaussian radius in scene pixels), then sensor noise (sigma in grey levels)."""
    if blur > 0:
        scene = scene.filter(ImageFilter.GaussianBlur(blur))
    if noise > 0:
        arr = np.asarray(scene, dtype=np.int16)
        n = rng.normal(0, noise, size=arr.shape[:2] + (1,)).astype(np.int16)
        scene = Image.fromarray(np.clip(arr + n, 0, 255).astype(np.uint8), "RGB")
    return scene


def render_label(
    number: str,
    name: str = "ANDERSSON, ANNA",
    *,
    symbology: str | None = None,
    barcode_text: str | None = None,
    font_name: str = "dejavu-sans",
    size: int = 900,
    rotation: float = 0.0,
    blur: float = 0.0,
    noise: float = 0.0,
    glare: float = 0.0,
    jpeg_quality: int | None = 90,
    scene_size: tuple[int, int] = SCENE_12MP,
    extra_line: str = "KIR AVD 12  2026-11-25",
    seed: int = 0,
    printed_number: bool = True,
) -> RenderedLabel:
    """A photographed patient label on skin.

    ``size`` is the sticker's width in scene pixels; ``rotation`` degrees
    counter-clockwise; ``blur`` a Gaussian radius in scene pixels; ``noise`` the
    sensor noise sigma in grey levels; ``glare`` 0..1, the strength of a specular
    highlight over part of the label; ``jpeg_quality`` None for no compression.
    ``barcode_text`` defaults to the number without separator.
    ``printed_number=False``: a barcode-only label (the name and the extra line
    printed, the number only in the barcode).
    """
    rng = np.random.default_rng(seed)
    digits = re.sub(r"[^0-9]", "", number)
    if symbology and barcode_text is None:
        barcode_text = digits
    sticker, nbox, cap = _label_sticker(number, name, size, font_name, symbology, barcode_text, extra_line,
                                        printed_number)
    tone = SKIN_TONES[int(rng.integers(0, len(SKIN_TONES)))]
    scene = _skin(scene_size, rng, tone)
    alpha = Image.new("L", sticker.size, 255)
    rot_sticker = sticker.convert("RGB").rotate(rotation, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    rot_alpha = alpha.rotate(rotation, resample=Image.BICUBIC, expand=True, fillcolor=0)
    sw, sh = rot_sticker.size
    W, H = scene_size
    if sw >= W or sh >= H:
        raise ValueError("label does not fit in the scene")
    x0 = int(rng.integers(0, W - sw)) if W - sw > 0 else 0
    y0 = int(rng.integers(0, H - sh)) if H - sh > 0 else 0
    # A faint shadow under the sticker's edge.
    shadow = Image.new("RGB", rot_sticker.size, tuple(int(v * 0.6) for v in tone))
    scene.paste(shadow, (x0 + max(1, size // 150), y0 + max(1, size // 150)), rot_alpha.filter(ImageFilter.GaussianBlur(max(1, size // 150))))
    scene.paste(rot_sticker, (x0, y0), rot_alpha)

    # Where the number ended up: rotate the corners of its box about the sticker centre.
    cx, cy = sticker.width / 2, sticker.height / 2
    a = math.radians(rotation)
    pts = []
    for px, py in [(nbox[0], nbox[1]), (nbox[0] + nbox[2], nbox[1]), (nbox[0], nbox[1] + nbox[3]), (nbox[0] + nbox[2], nbox[1] + nbox[3])]:
        dx, dy = px - cx, py - cy
        rx = dx * math.cos(a) + dy * math.sin(a)
        ry = -dx * math.sin(a) + dy * math.cos(a)
        pts.append((rx + sw / 2 + x0, ry + sh / 2 + y0))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    number_box = (int(min(xs)), int(min(ys)), int(max(xs) - min(xs)), int(max(ys) - min(ys)))

    if glare > 0:
        g = Image.new("L", scene_size, 0)
        gx = x0 + sw * rng.uniform(0.2, 0.8)
        gy = y0 + sh * rng.uniform(0.2, 0.8)
        r = size * rng.uniform(0.15, 0.3)
        ImageDraw.Draw(g).ellipse((gx - r * 1.6, gy - r, gx + r * 1.6, gy + r), fill=int(255 * min(1.0, glare)))
        g = g.filter(ImageFilter.GaussianBlur(r / 2.5))
        scene = Image.composite(Image.new("RGB", scene_size, (255, 255, 255)), scene, g)
    scene = _photographed(scene, blur, noise, rng)
    if jpeg_quality is not None:
        buf = io.BytesIO()
        scene.save(buf, format="JPEG", quality=int(jpeg_quality))
        buf.seek(0)
        scene = Image.open(buf)
        scene.load()
    truth = LabelTruth(
        number=number, name=name, digits=digits, symbology=symbology, barcode_text=barcode_text,
        label_box=(x0, y0, sw, sh), number_box=number_box, rotation=rotation, text_height=cap,
    )
    return RenderedLabel(image=scene, truth=truth)


@dataclasses.dataclass(frozen=True)
class OverlayTruth:
    name: str
    number: str
    date: str
    banner_box: tuple[int, int, int, int]  # x, y, w, h of the "NAME NUMBER DATE" text
    number_box: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class RenderedOverlay:
    image: Image.Image
    truth: OverlayTruth


def render_overlay(
    name: str,
    number: str,
    date: str,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    *,
    font_name: str = "dejavu-sans",
    text_px: int | None = None,
    grey: int = 235,
    hospital: str = "KAROLINSKA US",
) -> RenderedOverlay:
    """An ultrasound-like frame: black, a speckled sector, burned-in text.

    Top banner: hospital at the left, then ``name``, ``number``, ``date``; a
    side panel of technical values (MI, TIS, frequency, depth) as on real machines.
    """
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), 0)
    # Speckle sector: Rayleigh noise, smoothed, inside a fan below the banner.
    speck = rng.rayleigh(0.35, size=(height // 2, width // 2)).astype(np.float32)
    speck = np.clip(speck * 110, 0, 255).astype(np.uint8)
    sp = Image.fromarray(speck, "L").resize((width, height), Image.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    fan = Image.new("L", (width, height), 0)
    apex = (width // 2, int(height * 0.12))
    r = int(height * 0.85)
    ImageDraw.Draw(fan).pieslice((apex[0] - r, apex[1] - r, apex[0] + r, apex[1] + r), 55, 125, fill=255)
    img.paste(sp, (0, 0), fan)
    d = ImageDraw.Draw(img)
    px = text_px or max(9, height // 34)
    f = font(font_name, px)
    fs = font(font_name, max(8, int(px * 0.85)))
    y = max(2, px // 3)
    d.text((6, y), hospital, font=f, fill=grey)
    x = 6 + d.textlength(hospital + "    ", font=f)
    start = x
    number_box = (0, 0, 0, 0)
    for i, part in enumerate((name, number, date)):
        bb = d.textbbox((x, y), part, font=f)
        d.text((x, y), part, font=f, fill=grey)
        if i == 1:
            number_box = (bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1])
        x = bb[2] + d.textlength("   ", font=f)
    banner_box = (int(start), y, int(x - start), px + 4)
    # Technical text, as on real machines (cf. corpus MANIFEST: "MI 1.1 TIB 0.2", "C5-1 28Hz 11cm").
    tech = ["C5-1", f"{int(rng.integers(20, 50))}Hz", f"{int(rng.integers(8, 18))}cm", "Gen", "2D",
            f"MI {rng.uniform(0.5, 1.4):.1f}", f"TIS {rng.uniform(0.1, 0.9):.1f}"]
    ty = int(height * 0.2)
    for t in tech:
        d.text((6, ty), t, font=fs, fill=int(grey * 0.85))
        ty += int(px * 1.4)
    d.text((width - d.textlength("12:41:07", font=fs) - 6, y + px + 6), "12:41:07", font=fs, fill=grey)
    # Depth scale ticks on the right.
    for k in range(10):
        yy = int(height * 0.15 + k * height * 0.08)
        d.line((width - 18, yy, width - 10, yy), fill=200)
    rgb = img.convert("RGB")
    truth = OverlayTruth(name=name, number=number, date=date, banner_box=banner_box, number_box=number_box)
    return RenderedOverlay(image=rgb, truth=truth)


def valid_numbers(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct valid personnummer in the printed 12-digit form ``YYYYMMDD-NNNC``."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        year = int(rng.integers(1930, 2024))
        month = int(rng.integers(1, 13))
        day = int(rng.integers(1, 29))
        serial = int(rng.integers(1, 1000))  # serial 000 is never issued
        text = make_personnummer(f"{year:04d}{month:02d}{day:02d}", serial)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


# What a look-alike frame shows beside the skin (the identity benchmark's ``--lookalike``):
# bars and print on something bright that are no label.
LOOKALIKES = ("ruler", "stripes", "keyboard")


def lookalike_object(what: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A paper wound ruler (mm ticks, cm numbers), a piece of striped cloth, or a
    keyboard's keys: bar-like or print-like patterns on something bright, which a
    label search may take for a label and a barcode locator for bars. RGB."""
    if what == "ruler":
        w, h = size, max(40, size // int(rng.integers(6, 11)))
        paper = (250, 250, 246) if rng.random() < 0.7 else (246, 236, 170)
        img = Image.new("RGB", (w, h), paper)
        d = ImageDraw.Draw(img)
        cm = int(rng.integers(10, 21))
        pitch = (w - 20) / (cm * 10)
        f = font("dejavu-sans", max(8, h // 4))
        both = rng.random() < 0.5  # ticks along both edges (many paper guides)
        for mm in range(cm * 10 + 1):
            x = 10 + mm * pitch
            t = 0.5 if mm % 10 == 0 else 0.33 if mm % 5 == 0 else 0.2
            lw = max(1, round(pitch / 4))
            d.line((x, 0, x, h * t), fill=(20, 20, 20), width=lw)
            if both:
                d.line((x, h, x, h * (1 - t)), fill=(20, 20, 20), width=lw)
            if mm % 10 == 0 and mm:
                d.text((x + 2, h * 0.52), str(mm // 10), fill=(20, 20, 20), font=f)
        if rng.random() < 0.5:
            d.text((w * 0.6, h * 0.55), "cm", fill=(20, 20, 20), font=f)
        return img
    if what == "stripes":
        w, h = size, int(size * rng.uniform(0.4, 0.9))
        light = (245, 245, 240)
        dark = tuple(int(v) for v in rng.choice([(20, 30, 80), (25, 25, 25), (120, 20, 30), (30, 90, 60)]))
        img = Image.new("RGB", (w, h), light)
        d = ImageDraw.Draw(img)
        width = int(rng.integers(max(3, size // 200), max(5, size // 40)))
        gap = int(width * rng.uniform(0.6, 2.5))
        x = 0
        while x < w:
            d.rectangle((x, 0, x + width - 1, h), fill=dark)
            x += width + gap + int(rng.integers(0, max(1, width // 3)))
        # Cloth folds: a gentle wave across the stripes.
        a = np.asarray(img)
        shift = (np.sin(np.linspace(0, rng.uniform(2, 6), h)) * width * rng.uniform(0, 1.5)).astype(int)
        a = np.stack([np.roll(a[y], shift[y], axis=0) for y in range(h)])
        return Image.fromarray(a)
    # keyboard: light keys with dark letters on a dark frame, or dark keys with light letters
    rows, cols = 4, int(rng.integers(10, 15))
    key = size // cols
    w, h = key * cols, key * rows
    light_keys = rng.random() < 0.6
    key_c, ink, frame_c = ((235, 235, 232), (30, 30, 30), (90, 90, 95)) if light_keys \
        else ((40, 40, 44), (235, 235, 235), (20, 20, 22))
    img = Image.new("RGB", (w, h), frame_c)
    d = ImageDraw.Draw(img)
    f = font("dejavu-sans", max(8, key // 3))
    chars = "1234567890QWERTYUIOPASDFGHJKLZXCVBNM"
    for r in range(rows):
        for c in range(cols):
            x0, y0 = c * key + key // 12, r * key + key // 12
            d.rectangle((x0, y0, x0 + key * 5 // 6, y0 + key * 5 // 6), fill=key_c)
            d.text((x0 + key // 8, y0 + key // 10), chars[(r * cols + c) % len(chars)], fill=ink, font=f)
    return img


def place_lookalike(scene: np.ndarray, what: str, size: int, rotation: float,
                    rng: np.random.Generator, avoid: tuple[int, int, int, int] | None = None
                    ) -> tuple[int, int, int, int]:
    """Lay a look-alike (:func:`lookalike_object`) ``size`` px wide, turned ``rotation``
    degrees, at a random place on ``scene`` (float HxWx3, changed in place); returns
    its box (x, y, w, h). ``avoid``: a box (x, y, w, h; a label) it must not cover."""
    obj = lookalike_object(what, size, rng).convert("RGBA")
    obj = obj.rotate(rotation, resample=Image.BICUBIC, expand=True)
    ow, oh = obj.size
    h, w = scene.shape[:2]
    x, y = int(rng.integers(0, max(1, w - ow))), int(rng.integers(0, max(1, h - oh)))
    for _ in range(200 if avoid is not None else 0):
        ax, ay, aw, ah = avoid  # type: ignore[misc]
        if x + ow <= ax or ax + aw <= x or y + oh <= ay or ay + ah <= y:
            break
        x, y = int(rng.integers(0, max(1, w - ow))), int(rng.integers(0, max(1, h - oh)))
    else:
        if avoid is not None:
            raise ValueError("no room for the look-alike beside the label")
    alpha = np.asarray(obj.getchannel("A"), np.float32)[..., None] / 255
    part = scene[y:y + oh, x:x + ow]
    a = alpha[:part.shape[0], :part.shape[1]]
    part[:] = part * (1 - a) + np.asarray(obj.convert("RGB"), np.float32)[:part.shape[0], :part.shape[1]] * a
    return x, y, part.shape[1], part.shape[0]


def render_lookalike(what: str, size: int, rotation: float = 0.0, blur: float = 0.0, seed: int = 0) -> Image.Image:
    """A 12 MP photograph of skin beside a paper wound ruler, striped cloth or a
    keyboard (``what``, one of :data:`LOOKALIKES`), ``size`` px wide: no label."""
    from tests.support import cardgen

    rng = np.random.default_rng(seed)
    scene = cardgen._scene(*SCENE_12MP, rng)
    place_lookalike(scene, what, size, rotation, rng)
    return cardgen._photograph(scene, rng, blur)


@dataclasses.dataclass(frozen=True)
class StickerSpec:
    """One sticker of :func:`render_touching_labels`."""

    number: str
    name: str = "ANDERSSON, ANNA"
    symbology: str | None = "Code128"
    printed_number: bool = False  # False: a barcode-only label
    rotation: float = 0.0
    extra_line: str = "KIR AVD 12  2026-11-25"


def _rotated_sticker(s: StickerSpec, width: int, font_name: str) -> tuple[Image.Image, Image.Image]:
    digits = re.sub(r"[^0-9]", "", s.number)
    sticker, _, _ = _label_sticker(s.number, s.name, width, font_name, s.symbology,
                                   digits if s.symbology else None, s.extra_line, s.printed_number)
    rgb = sticker.convert("RGB").rotate(s.rotation, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    alpha = Image.new("L", sticker.size, 255).rotate(s.rotation, resample=Image.BICUBIC, expand=True, fillcolor=0)
    return rgb, alpha


def _touching_offset(first: np.ndarray, second: np.ndarray, along: str, gap: int, shift: int) -> tuple[int, int]:
    """Where ``second`` (an alpha mask) goes relative to ``first`` so that the two
    stickers' outlines are ``gap`` px apart at their closest (negative: overlapping):
    to the right of it (``along="right"``) or below it, moved by ``shift`` px along
    the shared edge."""
    a, b = (first > 127), (second > 127)
    if along == "below":
        a, b = a.T, b.T
    dy = shift
    best = None
    for y in range(a.shape[0]):
        yb = y - dy
        if not (0 <= yb < b.shape[0]) or not a[y].any() or not b[yb].any():
            continue
        need = int(np.nonzero(a[y])[0].max()) - int(np.nonzero(b[yb])[0].min()) + 1
        best = need if best is None else max(best, need)
    dx = (best if best is not None else a.shape[1]) + gap
    return (dx, dy) if along == "right" else (dy, dx)


def render_touching_labels(
    first: StickerSpec,
    second: StickerSpec,
    *,
    size: int = 900,
    along: str = "right",
    gap: int = 0,
    shift: int = 0,
    font_name: str = "dejavu-sans",
    blur: float = 0.6,
    noise: float = 3.0,
    scene_size: tuple[int, int] = SCENE_12MP,
    seed: int = 0,
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Two labels stuck so that they touch (``gap`` px between their outlines, 0:
    touching, negative: the second overlaps the first), photographed on skin as
    :func:`render_label` does. ``along``: the second to the right of the first or
    below it; ``shift``: moved by that many px along the shared edge. Returns the
    picture (RGB, not compressed) and the box (x, y, w, h) of both stickers."""
    rng = np.random.default_rng(seed)
    tone = SKIN_TONES[int(rng.integers(0, len(SKIN_TONES)))]
    scene = _skin(scene_size, rng, tone)
    one, one_alpha = _rotated_sticker(first, size, font_name)
    two, two_alpha = _rotated_sticker(second, size, font_name)
    dx, dy = _touching_offset(np.asarray(one_alpha), np.asarray(two_alpha), along, gap, shift)
    x_min, y_min = min(0, dx), min(0, dy)
    x_max, y_max = max(one.width, dx + two.width), max(one.height, dy + two.height)
    W, H = scene_size
    if x_max - x_min >= W or y_max - y_min >= H:
        raise ValueError("labels do not fit in the scene")
    x0 = int(rng.integers(0, W - (x_max - x_min))) - x_min
    y0 = int(rng.integers(0, H - (y_max - y_min))) - y_min
    for img, alpha, (px, py) in ((one, one_alpha, (x0, y0)), (two, two_alpha, (x0 + dx, y0 + dy))):
        off = max(1, size // 150)
        shadow = Image.new("RGB", img.size, tuple(int(v * 0.6) for v in tone))
        scene.paste(shadow, (px + off, py + off), alpha.filter(ImageFilter.GaussianBlur(off)))
        scene.paste(img, (px, py), alpha)
    scene = _photographed(scene, blur, noise, rng)
    return scene, (x0 + x_min, y0 + y_min, x_max - x_min, y_max - y_min)
