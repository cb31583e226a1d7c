"""The read-back: one exiftool call reads every stripped copy (``-a -u -ee``) and
only what the allow-list names may be there (:func:`forbidden_tags`)."""
from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent.card import metadata as md
from agent.card.metadata import MetadataReader
from agent.card.strip.common import Written, fail

QUICKTIME = {"video/mp4", "video/quicktime", "audio/mp4"}
WAV_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}

# --- the read-back checklist ----------------------------------------------------------

_FORBIDDEN_NAME = re.compile(
    r"GPS|Location|Latitude|Longitude|Altitude|\bMake|Model|Serial|Thumbnail|Preview|JpgFromRaw|"
    r"OtherImage|CoverArt|MPImage|EmbeddedImage|Comment|Owner|Author|Artist|Creator|Copyright|"
    r"Software|Firmware|Keyword|Title|Description|Lens|UniqueID|ImageUniqueID|Person|Face|"
    r"Region|City|Country|Address|Name$",
    re.IGNORECASE,
)
# Structural fields whose names look suspicious: movie-header times of the
# poster/preview frame (numbers, not images), handler and codec descriptions.
_ALLOWED_NAMES = {"HandlerDescription", "CompressorName", "PreviewTime", "PreviewDuration",
                  "SampleGroupDescription", "CopyrightFlag",
                  "ImplementationVersionName"}  # DICOM: the writing library (pydicom), set by us
#: Groups (family 0) that hold only stream structure for a media type; within
#: them the forbidden names and dates still apply.
# None: any name that is not forbidden; a set: only those names. exiftool's
# H264 group also carries what camcorders write into the stream (MDPM: make,
# model, GPS, dates, camera settings); only the frame size may remain.
_STRUCTURE_GROUPS: dict[str, dict[str, set[str] | None]] = {
    "audio/mpeg": {"MPEG": None},
    "video/x-msvideo": {"RIFF": None},
    "audio/wav": {"RIFF": None},
    "video/mp2t": {"M2TS": None, "MPEG": None, "H264": {"ImageWidth", "ImageHeight"}},
    "application/dicom": {"DICOM": None},
}
# DICOM elements that identify a patient, a study, a place, a person or a
# device, and private or unknown elements, as exiftool names them: a second,
# independent check after strip_dicom's own whitelist (exiftool's DICOM names
# are not pydicom's keywords, so the whitelist itself is not repeated here).
_DICOM_FORBIDDEN = re.compile(
    r"Patient|Study|Series|Accession|Institution|Physician|Operator|Station|Manufacturer|"
    r"Referring|Performing|Requesting|Private|^Unknown|^[0-9A-F]{4}_[0-9A-F]{4}|Time$|UID$",
    re.IGNORECASE,
)
_DICOM_ALLOWED = {"FrameTime", "FrameTimeVector", "SOPClassUID", "SOPInstanceUID",
                  "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
                  "ImplementationClassUID", "SequenceOfUltrasoundRegions"}
_ZERO_DATE = re.compile(r"^[0: ]*$")
_EXIF_IFD0_ALWAYS = {"Orientation", "XResolution", "YResolution", "ResolutionUnit",
                     "YCbCrPositioning"}
_TIFF_STRUCTURE = {
    "SubfileType", "OldSubfileType", "ImageWidth", "ImageHeight", "BitsPerSample", "Compression",
    "PhotometricInterpretation", "FillOrder", "StripOffsets", "SamplesPerPixel", "RowsPerStrip",
    "StripByteCounts", "PlanarConfiguration", "Predictor", "TileWidth", "TileLength",
    "TileOffsets", "TileByteCounts", "ExtraSamples", "SampleFormat", "ColorMap",
    "YCbCrCoefficients", "YCbCrSubSampling", "ReferenceBlackWhite", "WhitePoint",
    "PrimaryChromaticities", "TransferFunction", "MinSampleValue", "MaxSampleValue",
    "T4Options", "T6Options", "JPEGTables", "InkSet", "Threshholding", "CellWidth", "CellLength",
}
_FILE_ALLOWED = {"FileType", "FileTypeExtension", "MIMEType", "ExifByteOrder", "ImageWidth",
                 "ImageHeight", "EncodingProcess", "BitsPerSample", "ColorComponents",
                 "YCbCrSubSampling"}
# An AVI video stream's BITMAPINFOHEADER, which exiftool shows in its File group.
_FILE_AVI_BITMAP = {"BMPVersion", "Planes", "BitDepth", "Compression", "ImageLength",
                    "PixelsPerMeterX", "PixelsPerMeterY", "NumColors", "NumImportantColors",
                    "RedMask", "GreenMask", "BlueMask", "AlphaMask", "ColorSpace"}
_COMPOSITE_ALLOWED = {"ImageSize", "Megapixels", "AvgBitrate", "Rotation", "Duration",
                      "YCbCrSubSampling"}
_ADOBE_ALLOWED = {"DCTEncodeVersion", "APP14Flags0", "APP14Flags1", "ColorTransform"}
QUICKTIME_GROUP1 = re.compile(r"^(QuickTime|Track\d+|Video|Audio)$")


def forbidden_tags(meta: Mapping[str, Any], media_type: str) -> list[str]:
    """Every key of an exiftool ``-G0:1`` read-back that must not be in a stripped file."""
    bad = []
    for key in meta:
        if key == "SourceFile":
            continue
        parts = key.split(":")
        group0, name = parts[0], parts[-1]
        group1 = parts[1] if len(parts) == 3 else ""
        if group0 == "ICC_Profile" or group0 == "ExifTool" and name in ("ExifToolVersion",):
            continue
        if group0 == "ExifTool" and name in ("Warning", "Error"):
            continue  # exiftool's remarks, not file content (the writer checks its own)
        if group0 == "File":
            if group1 == "System" or name in _FILE_ALLOWED or (
                    media_type == "video/x-msvideo" and name in _FILE_AVI_BITMAP):
                continue
            bad.append(key)
            continue
        if group0 == "Composite":
            if name not in _COMPOSITE_ALLOWED:
                bad.append(key)
            continue
        dicom_allowed = media_type == "application/dicom" and name in _DICOM_ALLOWED
        if name not in _ALLOWED_NAMES and not dicom_allowed and _FORBIDDEN_NAME.search(name):
            bad.append(key)
            continue
        if "Date" in name and not _ZERO_DATE.match(str(meta[key])):
            bad.append(key)  # QuickTime's zeroed header dates pass; a real date does not
            continue
        if media_type == "application/dicom" and not dicom_allowed and _DICOM_FORBIDDEN.search(name):
            bad.append(key)
            continue
        structure = _STRUCTURE_GROUPS.get(media_type, {})
        if group0 in structure:
            names = structure[group0]
            if names is not None and name not in names:
                bad.append(key)
            continue
        if group0 == "EXIF":
            allowed = _EXIF_IFD0_ALWAYS | (_TIFF_STRUCTURE if media_type == "image/tiff" else set())
            if group1 != "IFD0" or name not in allowed:
                bad.append(key)
        elif group0 == "APP14" and group1 == "Adobe" and media_type == "image/jpeg":
            if name not in _ADOBE_ALLOWED:
                bad.append(key)
        elif group0 == "JFIF" and media_type == "image/jpeg":
            continue  # density only; a JFXX thumbnail is caught by its name
        elif group0 == "PNG" and media_type == "image/png":
            if name.startswith(("Text", "Modify", "Date")) or group1 not in ("PNG", ""):
                bad.append(key)
        elif group0 == "QuickTime" and media_type in QUICKTIME:
            if not QUICKTIME_GROUP1.match(group1 or "QuickTime"):
                bad.append(key)
        else:
            bad.append(key)
    return bad


def read_back(written: Sequence[Written], reader: MetadataReader) -> None:
    """One exiftool call reads every copy back (``-a -u -ee``): only the
    allow-listed tags may be there, and images keep their orientation."""
    todo = [w for w in written if w.needs_readback and not w.read_back_done]
    if not todo:
        return
    # JPEG copies are read with -fast (exiftool stops at the first scan instead
    # of reading the entropy-coded data to look for a trailer): the copy was
    # just taken apart to its EOI and proven to end there. One call per kind.
    metas: dict[pathlib.Path, md.Metadata] = {}
    jpegs = [w.out for w in todo if w.media.media_type == "image/jpeg"]
    others = [w.out for w in todo if w.media.media_type != "image/jpeg"]
    if jpegs:
        metas.update(reader.read(jpegs, extra=("-u", "-ee", "-fast")))
    if others:
        metas.update(reader.read(others, extra=("-u", "-ee")))
    for w in todo:
        after = metas[w.out]
        media_type = "audio/wav" if w.media.media_type in WAV_TYPES else w.media.media_type
        if "ExifTool:Error" in after:
            raise fail(w.media, f"the stripped copy cannot be read back: {after['ExifTool:Error']}")
        bad = forbidden_tags(after, media_type)
        if bad:
            raise fail(w.media, "metadata left after stripping: " + ", ".join(sorted(bad)[:10]))
        if media_type.startswith("image/"):
            got = md.orientation(after)
            if (w.orientation or 1) != (got or 1):
                raise fail(w.media, f"orientation {w.orientation} not kept (now {got})")
