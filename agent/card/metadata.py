"""Reading a media file's own metadata with one long-lived exiftool (R6, R7).

:class:`MetadataReader` keeps one ``exiftool -stay_open`` process (through
pyexiftool) for a whole card: starting exiftool costs about as much as reading
a dozen files with it, so the scan reads every file of a card in one batch and
the strip stage reuses one process for its read-backs, and each reader process
one for its writes (``benchmarks/strip.py`` prints the figure).

Keys are exiftool's ``-G0:1`` names, e.g. ``"EXIF:ExifIFD:DateTimeOriginal"``,
``"MakerNotes:Canon:SerialNumber"``, ``"QuickTime:CreateDate"``; values are
print-converted, as exiftool shows them to people (not ``-n``): a serial number
reads as the camera and its owner write it (Canon's ``0560018150``, not the raw
integer ``560018150``), which is what the device register (R6) holds.

Safety: exiftool's stay-open protocol takes one argument per line, so an
argument holding a line break could smuggle options in; such arguments are
refused (the scan refuses such file names anyway, UNSAFE_PATH). File names are
always passed absolute, so a name starting with ``-`` is never read as an option.

The helpers below turn a metadata dict into the fields the archive records
next to the file (R7): capture time, device (R6), orientation.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import exiftool

from agent.card import sandbox
from agent.card.model import Device

Metadata = dict[str, Any]

# Options given to every read: JSON, family 0 and 1 group names, duplicates
# kept (-a). The strip stage's read-back adds -u
# (unknown tags) and -ee (embedded streams) so that it sees all it can name.
READ_ARGS = ("-j", "-G0:1", "-a")


class ExifToolError(RuntimeError):
    """exiftool could not do what it was asked (its stderr is in the message)."""


def _arg(value: str | bytes | os.PathLike[str]) -> bytes:
    if isinstance(value, os.PathLike):
        value = os.fsencode(pathlib.Path(value).absolute())
    elif isinstance(value, str):
        value = os.fsencode(value)
    if b"\n" in value or b"\r" in value:
        raise ValueError(f"exiftool argument holds a line break: {value!r}")
    return value


class _ExifTool(exiftool.ExifTool):  # type: ignore[misc]  # pyexiftool has no type information
    """pyexiftool's stay-open ExifTool, started without a ``preexec_fn``.

    pyexiftool's :meth:`run` passes Popen a ``preexec_fn`` (a ctypes prctl()
    that sets a parent-death signal). Python's documentation warns that a
    preexec_fn is not safe in a threaded program: the forked child can deadlock
    before it execs. The daemon is threaded (gRPC, the control socket, several
    cards), and under load a card's thread did wait for ever on an exiftool
    that never started. Without it Popen forks and execs in C only. Nothing is
    lost: exiftool reads its commands from our pipe and ends when the pipe
    closes, which it does when we die; under systemd the unit's control group
    is killed on stop anyway.

    The version is asked with the first request, not when the process starts:
    exiftool (a Perl program) takes a few hundred milliseconds to answer, and a
    card's run starts its two exiftools and its reader processes at once and
    goes on walking the card meanwhile (issue 12: the agent's start).
    """

    confinement: sandbox.Confinement | None = None  # a card's reader: run confined (issue 13)
    _asked_version = False

    def run(self) -> None:
        if self.running:
            return
        args = [self._executable, "-stay_open", "True", "-@", "-"]
        if self._common_args:
            args += ["-common_args", *self._common_args]
        if self.confinement is not None:
            args = sandbox.command(self.confinement, args)
        self._process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        if self._process.poll() is not None:
            self._process = None  # type: ignore[assignment]  # pyexiftool's own idle state
            raise ExifToolError("exiftool did not start")
        self._running = True
        self._asked_version = False

    def execute(self, *params: str | bytes, raw_bytes: bool = False) -> str | bytes:
        if not self._asked_version:
            self._asked_version = True
            try:
                self._ver = self._parse_ver()
            except ValueError:
                self.terminate()
                raise ExifToolError(
                    "exiftool answered no version: is it Phil Harvey's ExifTool 12.15 or newer?") from None
        out: str | bytes = super().execute(*params, raw_bytes=raw_bytes)
        return out


class MetadataReader:
    """One running exiftool, for reads (:meth:`read`) and writes (:meth:`run`).

    Use as a context manager, or call :meth:`close`. Not thread-safe: one
    process answers one request at a time.
    """

    def __init__(self, executable: str | None = None, *,
                 confinement: sandbox.Confinement | None = None) -> None:
        """``confinement``: exiftool runs as a card's parser (:func:`agent.card.sandbox.command`),
        reading what the confinement lets it read (the card; for the strip stage's
        read-back also root's copies of that card, never writing them)."""
        self._tool = _ExifTool(executable=executable, common_args=[], encoding="utf-8")
        self._tool.confinement = confinement
        self._tool.run()

    @property
    def confinement(self) -> sandbox.Confinement | None:
        return self._tool.confinement

    @property
    def pid(self) -> int | None:
        process = getattr(self._tool, "_process", None)
        return process.pid if process is not None else None

    def __enter__(self) -> MetadataReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tool.running:
            self._tool.terminate()

    @property
    def running(self) -> bool:
        return bool(self._tool.running)

    def run(self, *args: str | bytes | os.PathLike[str]) -> tuple[int, str, str]:
        """Run one exiftool command; returns (exit status, stdout, stderr).

        Path-like arguments are passed absolute; str/bytes verbatim.
        """
        out = self._tool.execute(*(_arg(a) for a in args))
        assert isinstance(out, str)
        return self._tool.last_status, out, self._tool.last_stderr

    def read(
        self, paths: Sequence[pathlib.Path], *, extra: Iterable[str] = ()
    ) -> dict[pathlib.Path, Metadata]:
        """Metadata of every path, in one exiftool call.

        A file exiftool cannot read gets a dict with an ``"ExifTool:Error"`` key
        (exiftool's own convention) rather than failing the batch.
        """
        if not paths:
            return {}
        absolute = [pathlib.Path(p).absolute() for p in paths]
        _, out, err = self.run(*READ_ARGS, *extra, *absolute)
        try:
            records = json.loads(out) if out.strip() else []
        except json.JSONDecodeError as exc:
            raise ExifToolError(f"unreadable exiftool output: {exc}; {err.strip()}") from None
        by_name = {str(r.get("SourceFile")): r for r in records}
        result: dict[pathlib.Path, Metadata] = {}
        for original, path in zip(paths, absolute):
            record = by_name.get(str(path))
            if record is None:
                record = {"ExifTool:Error": err.strip() or "exiftool returned nothing"}
            result[pathlib.Path(original)] = record
        return result

    def read_one(self, path: pathlib.Path, *, extra: Iterable[str] = ()) -> Metadata:
        return self.read([path], extra=extra)[pathlib.Path(path)]


# --- helpers over one file's metadata ---------------------------------------------------


def tag_values(meta: Mapping[str, Any], name: str) -> list[tuple[str, Any]]:
    """Every (full key, value) whose tag name (after the last ':') is ``name``."""
    suffix = ":" + name
    return [(k, v) for k, v in meta.items() if k.endswith(suffix) or k == name]


def first_value(meta: Mapping[str, Any], name: str, *, groups: Sequence[str] = ()) -> Any:
    """The value of tag ``name``, preferring keys that start with one of ``groups``
    (in that order), then any group. Empty strings count as absent."""
    found = [(k, v) for k, v in tag_values(meta, name) if v not in ("", None)]
    for prefix in groups:
        for k, v in found:
            if k.startswith(prefix):
                return v
    return found[0][1] if found else None


_DATE_RE = re.compile(
    r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?"
)


def parse_exif_datetime(
    value: Any, *, subsec: Any = None, offset: Any = None
) -> dt.datetime | None:
    """``2024:05:01 10:00:00`` (+ sub-seconds, + ``+02:00``) as a datetime.

    Aware when an offset is known (in the value or given), naive otherwise;
    None for empty or all-zero dates that cameras write when their clock is unset.
    """
    if not isinstance(value, str):
        return None
    m = _DATE_RE.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if year == 0 or month == 0 or day == 0:
        return None
    frac = m.group(7) or (str(subsec).strip() if subsec not in (None, "") else "")
    micro = int((frac + "000000")[:6]) if frac.isdigit() else 0
    try:
        stamp = dt.datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        return None
    tz_text = m.group(8) or (offset.strip() if isinstance(offset, str) else None)
    tz = _parse_offset(tz_text) if tz_text else None
    return stamp.replace(tzinfo=tz) if tz else stamp


def _parse_offset(text: str) -> dt.timezone | None:
    if text == "Z":
        return dt.timezone.utc
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text.strip())
    if not m:
        return None
    sign = -1 if m.group(1) == "-" else 1
    delta = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    if delta > dt.timedelta(hours=14):
        return None
    return dt.timezone(sign * delta)


def capture_time(meta: Mapping[str, Any]) -> dt.datetime | None:
    """When the media was captured, from the file's own metadata.

    EXIF DateTimeOriginal (+ SubSecTimeOriginal, OffsetTimeOriginal), then EXIF
    CreateDate (DateTimeDigitized, + SubSecTimeDigitized, OffsetTimeDigitized),
    then QuickTime CreateDate (the movie header's date; the QuickTime spec says
    UTC, but many cameras write local time there, so it is returned naive),
    then any other DateTimeOriginal exiftool found (RIFF/AVI, H.264 in MTS).
    Aware only when the file states its offset.
    """
    exif = ("EXIF:ExifIFD:", "EXIF:")
    for tag, sub, off in (
        ("DateTimeOriginal", "SubSecTimeOriginal", "OffsetTimeOriginal"),
        ("CreateDate", "SubSecTimeDigitized", "OffsetTimeDigitized"),
    ):
        for key, value in tag_values(meta, tag):
            if key.startswith(exif):
                stamp = parse_exif_datetime(
                    value,
                    subsec=first_value(meta, sub, groups=exif),
                    offset=first_value(meta, off, groups=exif),
                )
                if stamp:
                    return stamp
    for key, value in tag_values(meta, "CreateDate"):
        if key in ("QuickTime:CreateDate", "QuickTime:QuickTime:CreateDate"):
            stamp = parse_exif_datetime(value)
            if stamp:
                return stamp.replace(tzinfo=None)
    for key, value in tag_values(meta, "DateTimeOriginal"):
        if not key.startswith(("XMP", "MakerNotes")):
            stamp = parse_exif_datetime(value)
            if stamp:
                return stamp
    return None


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value not in (None, "") else ""


def _first_item(meta: Mapping[str, Any], name: str, *, groups: Sequence[str] = ()) -> tuple[str, Any]:
    """Like :func:`first_value`, but (key, value); ("", None) when absent."""
    found = [(k, v) for k, v in tag_values(meta, name) if v not in ("", None)]
    for prefix in groups:
        for k, v in found:
            if k.startswith(prefix):
                return k, v
    return found[0] if found else ("", None)


def device_sources(meta: Mapping[str, Any]) -> tuple[Device, tuple[str, ...]]:
    """The capture device the file names (R6) and the fields it was read from
    (``"EXIF:IFD0:Make=Canon"``), for the case's evidence.

    Make and model from EXIF IFD0 (then any group, e.g. QuickTime user data or
    Keys); serial from EXIF BodySerialNumber (exiftool's ExifIFD:SerialNumber),
    then the maker note's SerialNumber, then its InternalSerialNumber.
    """
    order = ("EXIF:IFD0:", "EXIF:", "QuickTime:", "MakerNotes:")
    make = _first_item(meta, "Make", groups=order)
    model = _first_item(meta, "Model", groups=order)
    serial = ("", None)
    if any(k.startswith("EXIF:") for k, _ in tag_values(meta, "SerialNumber")):
        serial = _first_item(meta, "SerialNumber", groups=("EXIF:ExifIFD:", "EXIF:"))
    if serial[1] in (None, ""):
        serial = _first_item(meta, "SerialNumber", groups=("MakerNotes:", "QuickTime:"))
    if serial[1] in (None, ""):
        serial = _first_item(meta, "InternalSerialNumber", groups=("MakerNotes:",))
    found = Device(make=_text(make[1]), model=_text(model[1]), serial=_text(serial[1]))
    sources = tuple(f"{k}={_text(v)}" for k, v in (make, model, serial) if k and _text(v))
    return found, sources


def device(meta: Mapping[str, Any]) -> Device:
    """The capture device the file names (R6); see :func:`device_sources`."""
    return device_sources(meta)[0]


_ORIENTATIONS = {
    "Horizontal (normal)": 1, "Mirror horizontal": 2, "Rotate 180": 3, "Mirror vertical": 4,
    "Mirror horizontal and rotate 270 CW": 5, "Rotate 90 CW": 6,
    "Mirror horizontal and rotate 90 CW": 7, "Rotate 270 CW": 8,
}


def orientation(meta: Mapping[str, Any]) -> int | None:
    """EXIF Orientation 1..8, or None when absent or invalid."""
    value = first_value(meta, "Orientation", groups=("EXIF:IFD0:", "EXIF:"))
    if isinstance(value, str) and value in _ORIENTATIONS:
        return _ORIENTATIONS[value]
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= 8 else None


def file_type(meta: Mapping[str, Any]) -> str:
    """exiftool's own judgement of the format (``File:FileType``), e.g. "JPEG"."""
    return str(meta.get("File:FileType") or "")
