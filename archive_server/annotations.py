"""The annotation layer (issue 11): arrows, circles, text and measured
lengths drawn on a case's picture, kept as data beside the stored file and
never burned into it (the archived bytes and their SHA-256 never change).

A version's ``annotations`` map a media item's SHA-256 to its shapes, in
coordinates relative to the picture (0..1 on each axis), so that they fit a
thumbnail, the full view and a print alike:

    {"type": "arrow",  "x1": .2, "y1": .3, "x2": .5, "y2": .5}
    {"type": "circle", "cx": .5, "cy": .5, "r": .1}
    {"type": "text",   "x": .1, "y": .1, "text": "sårkant"}
    {"type": "length", "x1": .2, "y1": .8, "x2": .6, "y2": .8, "value": 3.5, "unit": "cm"}

Annotating is versioned like the form (R14): on an unsigned case the latest
version is changed in place, on a signed one a new version is made, with the
reason; it needs ``case.revise`` and is audited as ``case.annotate`` with the
shapes before and after.
"""
from __future__ import annotations

import math
from typing import Any

from archive_server.authz import Principal, ReasonRequired, operation
from archive_server.cases import case_json, load_version
from archive_server.db import Database
from archive_server.errors import InvalidArgument, NotFound
from archive_server.models import utcnow

MAX_SHAPES = 50
MAX_TEXT = 200
UNITS = ("mm", "cm", "m", "px")
_COORDS = {"arrow": ("x1", "y1", "x2", "y2"), "circle": ("cx", "cy", "r"), "text": ("x", "y"),
           "length": ("x1", "y1", "x2", "y2")}


class BadShape(InvalidArgument):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "BAD_ANNOTATION"


def check_shapes(shapes: Any) -> list[dict[str, Any]]:
    """The shapes, each checked and reduced to its known keys; BadShape otherwise."""
    if not isinstance(shapes, list):
        raise BadShape("annotations are a list of shapes")
    if len(shapes) > MAX_SHAPES:
        raise BadShape(f"at most {MAX_SHAPES} annotations on one picture")
    clean = []
    for n, shape in enumerate(shapes, start=1):
        if not isinstance(shape, dict) or shape.get("type") not in _COORDS:
            raise BadShape(f"annotation {n}: type must be one of {', '.join(_COORDS)}")
        kind = shape["type"]
        out: dict[str, Any] = {"type": kind}
        for key in _COORDS[kind]:
            value = shape.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 <= value <= 1:
                raise BadShape(f"annotation {n} ({kind}): {key} must be a number from 0 to 1")
            out[key] = round(float(value), 5)
        if kind == "text":
            text = shape.get("text")
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                raise BadShape(f"annotation {n} (text): 1 to {MAX_TEXT} characters of text")
            out["text"] = text.strip()
        if kind == "length":
            value, unit = shape.get("value"), shape.get("unit")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 < value < 1e6:
                raise BadShape(f"annotation {n} (length): the measured value must be a positive number")
            if unit not in UNITS:
                raise BadShape(f"annotation {n} (length): the unit must be one of {', '.join(UNITS)}")
            out["value"], out["unit"] = float(value), unit
        clean.append(out)
    return clean


def annotate(db: Database, principal: Principal, case_id: str, sha256: str, shapes: Any, *, reason: str,
             emergency_reason: str | None = None) -> dict[str, Any]:
    """Set the shapes on one media item of the case's latest version (replacing
    its earlier ones); a signed case gets a new version. Returns the version."""
    from archive_server.versions import next_version

    with operation(db, principal, "case.annotate", why=reason.strip() or None) as op:
        case = op.case(case_id, "case.revise", emergency_reason=emergency_reason, lock=True)
        clean = check_shapes(shapes)
        if not reason.strip():
            raise ReasonRequired("annotating needs a reason (why), which is kept with the version")
        s = op.session
        latest = load_version(s, case)
        if sha256 not in {m.blob_sha256 for m in latest.media}:
            raise NotFound(f"case {case_id} version {latest.version} has no media {sha256[:64]}")
        before = list((latest.annotations or {}).get(sha256, []))
        target = latest if latest.status != "signed" else next_version(s, case, latest, principal, reason.strip())
        layer = dict(target.annotations or {})
        if clean:
            layer[sha256] = clean
        else:
            layer.pop(sha256, None)
        target.annotations = layer
        if target is latest:
            target.edited_by, target.edited_at = principal.actor, utcnow()
            if reason.strip() not in (target.reason or ""):
                target.reason = "; ".join(x for x in (target.reason, reason.strip()) if x)
        op.details.update(version=target.version, new_version=target is not latest, sha256=sha256,
                          shapes={"from": before, "to": clean})
        s.flush()
        return {"case_id": case_id, "version": target.version, "new_version": target is not latest,
                "case": case_json(s, case, load_version(s, case, target.version))}
