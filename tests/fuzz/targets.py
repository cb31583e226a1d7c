"""The fuzz targets: every parser of card content that is ours (issue 13).

Each target takes the fuzzer's bytes and calls one parser the way the agent
does. A *clean refusal* is the parser's own documented error (JpegError,
WavError, ValueError with a sentence, ConfigError, ...): the card or config is
refused with a reason. Anything else escaping a target is a crash.

Seeds (``seeds(name)``) are read from the shared corpus at run time (never
copied), plus a few inputs made here where the corpus has none (WAV, TOML).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import pathlib
import struct
import importlib
import tomllib
from collections.abc import Callable
from typing import Any

import atheris

CORPUS = pathlib.Path(os.environ.get("BILDSLUSS_CORPUS", "/work/shared/corpus"))
ROOT = pathlib.Path(__file__).resolve().parents[2]
TODAY = dt.date(2026, 12, 3)

# Each target's process imports (and instruments for coverage) only what its parser
# needs: importing the whole agent costs seconds a CI run does not have.
_NEEDS: dict[str, tuple[str, ...]] = {
    "detect": ("agent.card.scan",),
    "jpeg": ("agent.card.strip.jpeg",),
    "png": ("agent.card.strip.images",),
    "wav": ("agent.card.strip.wav",),
    "dicom": ("agent.card.strip.dicom_bounds", "agent.card.strip.dicom"),
    "numbers": ("bildsluss_common.identity.numbers", "bildsluss_common.identity.reserve"),
    "agent_config": ("agent.config",),
    "archive_config": ("archive_server.config", "archive_server.errors"),
}
_m: dict[str, Any] = {}


def load(name: str) -> Callable[[bytes], None]:
    """The target ``name``, its modules imported with coverage instrumentation."""
    with atheris.instrument_imports(include=list(_NEEDS[name])):
        for module in _NEEDS[name]:
            _m[module.rsplit(".", 1)[-1]] = importlib.import_module(module)
    if name == "numbers":
        global _FORMATS
        reserve = _m["reserve"]
        # Every shipped reservnummer format, enabled (the unverified ones too: more to parse).
        _FORMATS = reserve.from_config({"reserve_formats": [{"name": n, "allow_unverified": True}
                                                            for n in reserve.BUILTIN]}, today=TODAY)
    return TARGETS[name]


_FORMATS: tuple[Any, ...] = ()


def fuzz_detect(data: bytes) -> None:
    """scan's format detection from a file's first bytes (never raises)."""
    scan = _m["scan"]
    found = scan.detect(data[:4096])
    assert isinstance(found, (str, scan._Format))


def fuzz_jpeg(data: bytes) -> None:
    """The JPEG segment layout, the structure check and the lossless rewrite."""
    jpeg = _m["jpeg"]
    try:
        layout = jpeg._jpeg_layout(data)
    except jpeg.JpegError:
        return
    jpeg.jpeg_structure_problems(data, layout)
    jpeg.jpeg_image_data(data, layout)
    try:
        out, _ = jpeg.rewrite_jpeg(data, layout)
    except jpeg.JpegError:
        return
    jpeg._jpeg_layout(out)  # what we write parses again


def fuzz_png(data: bytes) -> None:
    images = _m["images"]
    try:
        chunks = images.png_chunks(data)
    except ValueError:
        return
    images._png_image_data(chunks)


def fuzz_wav(data: bytes) -> None:
    wav = _m["wav"]
    fh = io.BytesIO(data)
    try:
        found, _others, _end = wav._wav_layout(fh, len(data))
        offset, size = found[b"fmt "]
        wav._wav_format(wav._read_at(fh, offset, size))
    except wav.WavError:
        return


def fuzz_dicom(data: bytes) -> None:
    """The DICOM whitelist writer: read, copy the allowed elements, verify the copy."""
    dicom = _m["dicom"]
    try:
        dicom.deidentify(data, hashlib.sha256(data).hexdigest())
    except (ValueError, RuntimeError):
        return  # "not readable as DICOM: ...", "no pixel data", "the copy failed its check"


def fuzz_numbers(data: bytes) -> None:
    """Barcode payloads and OCR text: find_candidates, validate and parse, reservnummer
    formats enabled."""
    numbers = _m["numbers"]
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    for candidate in numbers.find_candidates(text, TODAY, _FORMATS):
        assert text[candidate.start:candidate.end] == candidate.raw
        numbers.validate(candidate.raw, TODAY, _FORMATS)
    numbers.validate(text, TODAY, _FORMATS)
    numbers.parse(text, TODAY, reserve_formats=_FORMATS)


def _toml(data: bytes) -> dict | None:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def fuzz_agent_config(data: bytes) -> None:
    raw = _toml(data)
    if raw is None:
        return
    agent_config = _m["config"]
    try:
        agent_config.from_dict(raw, source="fuzz.toml")
    except agent_config.ConfigError:
        return


def fuzz_archive_config(data: bytes) -> None:
    raw = _toml(data)
    if raw is None:
        return
    archive_config = _m["config"]
    try:
        archive_config.validate(archive_config.from_dict(raw, source="fuzz.toml"), source="fuzz.toml")
    except _m["errors"].ConfigError:
        return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "detect": fuzz_detect, "jpeg": fuzz_jpeg, "png": fuzz_png, "wav": fuzz_wav, "dicom": fuzz_dicom,
    "numbers": fuzz_numbers, "agent_config": fuzz_agent_config, "archive_config": fuzz_archive_config,
}


# -- seeds ------------------------------------------------------------------------------------


def _files(folder: pathlib.Path, suffixes: tuple[str, ...], max_bytes: int) -> list[pathlib.Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and p.stat().st_size <= max_bytes)


def _wav(extra: bytes = b"") -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    data = b"\x00\x01" * 64
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def made_seeds(name: str) -> list[bytes]:
    """Inputs made here for what the corpus does not hold."""
    if name == "wav":
        return [_wav(), _wav(b"LIST" + struct.pack("<I", 4) + b"INFO"), _wav(b"bext" + struct.pack("<I", 2) + b"ab")]
    if name == "agent_config":
        return [(ROOT / "packaging" / "agent.example.toml").read_bytes(),
                b'[[identity.reserve_formats]]\nname = "x"\nregex = "(?P<birth_year>\\\\d{4})-\\\\d{3}"\n',
                b'[daemon]\nstate_dir = "~nobody/x"\nworkers = 0\n']
    if name == "archive_config":
        return [b'listen = "127.0.0.1:50051"\ndata = "/var/lib/bildsluss-archive"\n[tls]\ncert = "a"\nkey = "b"\n'
                b'client_ca = "c"\n[identity]\nreserve_formats = ["sll"]\n[audit]\nsyslog = "udp://127.0.0.1:514"\n',
                b'[login]\nsession_hours = 8\n[oidc]\nissuer = "https://idp.example"\nclient_id = "x"\n'
                b'http_trusted_proxies = ["127.0.0.1"]\n[blobs]\nurl = "s3://bucket/prefix"\n']
    if name == "numbers":
        return [b"19121212-1212", b"PNR 201012121212 SLL 99120101K", b"121212+1212", b"\xd9\xa1" * 12]
    return []


def corpus_seeds(name: str) -> list[pathlib.Path]:
    """Seed files from the shared corpus for a target (read in place)."""
    exif, dicoms, barcodes = CORPUS / "exif", CORPUS / "dicom", CORPUS / "barcodes"
    if name in ("detect",):
        return _files(exif, (".jpg", ".png", ".tif", ".mov", ".avi", ".heic", ".cr2", ".webp"), 64 << 10) + \
            _files(dicoms, (".dcm",), 64 << 10)
    if name == "jpeg":
        return _files(exif, (".jpg",), 64 << 10)
    if name == "png":
        return _files(exif, (".png",), 256 << 10) + _files(barcodes, (".png",), 32 << 10)
    if name == "dicom":
        return _files(dicoms, (".dcm",), 64 << 10)
    if name == "numbers":
        return _files(barcodes, (".txt",), 4 << 10)
    return []


def dictionary(name: str) -> list[bytes]:
    """libFuzzer dictionary words: the config keys, so that mutations reach the loaders' checks."""
    if name == "agent_config":
        from agent.config import SCHEMA

        words = {f"[{t}]" for t in SCHEMA} | {"[[devices]]", "[[identity.reserve_formats]]"}
        words |= {f"{k} = " for keys in SCHEMA.values() for k in keys}
    elif name == "archive_config":
        from archive_server import config

        words = {f"{k} = " for k in getattr(config, "_TYPES", {})} | {"[tls]", "[audit]", "[identity]", "[login]",
                                                                         "[oidc]", "[blobs]"}
    else:
        return []
    return [w.encode() for w in sorted(words)] + [b'"~"', b"true", b"-1", b"1e309", b'"\\u0000"', b"[]", b"{}"]
