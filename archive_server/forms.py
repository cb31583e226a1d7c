"""Form templates and form data (R13).

A template is a name, a title and a list of typed fields, shared across
departments. A case version holds its form data as a JSON object checked
against its template: ``parse_value`` turns the text given on the command line
(``--field K=V``) or over gRPC into the field's type, and ``missing_required``
says what keeps a case from being signed.

Field specifications as the admin command takes them: ``NAME:TYPE`` or
``NAME:TYPE:required``, where TYPE is ``text``, ``int``, ``bool``, ``date``
(YYYY-MM-DD), ``datetime`` (ISO 8601) or ``choice(a|b|c)``.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from archive_server.errors import InvalidArgument

FIELD_TYPES = ("text", "int", "bool", "date", "datetime", "choice")
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SPEC = re.compile(r"^(?P<name>[^:]+):(?P<type>[a-z]+)(?:\((?P<options>[^)]*)\))?(?::(?P<req>required|optional))?$")
_TRUE = {"true", "yes", "ja", "1"}
_FALSE = {"false", "no", "nej", "0"}
MAX_TEXT = 4000

# What R13 asks every case to say: what was captured, why, the patient's
# verbal consent to the capture, who captured it and when.
DEFAULT_TEMPLATE: dict[str, Any] = {
    "name": "klinisk-dokumentation",
    "title": "Klinisk bilddokumentation",
    "fields": [
        {"name": "what", "type": "text", "required": True, "label": "Vad som dokumenterats"},
        {"name": "why", "type": "text", "required": True, "label": "Varför (indikation)"},
        {"name": "verbal_consent", "type": "bool", "required": True,
         "label": "Patientens muntliga samtycke till fotografering"},
        {"name": "captured_by", "type": "text", "required": True, "label": "Fotograferat av"},
        {"name": "captured_at", "type": "datetime", "required": True, "label": "Tidpunkt"},
        {"name": "note", "type": "text", "required": False, "label": "Anteckning"},
    ],
}


def parse_field_spec(spec: str) -> dict[str, Any]:
    """'what:text:required' -> {"name": "what", "type": "text", "required": True, "label": "what"}."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise InvalidArgument(f"a field is NAME:TYPE or NAME:TYPE:required, got {spec!r}")
    name, kind = m["name"], m["type"]
    if not FIELD_NAME.match(name):
        raise InvalidArgument(f"field name {name!r} must be lower-case letters, digits and _")
    if kind not in FIELD_TYPES:
        raise InvalidArgument(f"field {name}: type must be one of {', '.join(FIELD_TYPES)}, got {kind!r}")
    field: dict[str, Any] = {"name": name, "type": kind, "required": m["req"] == "required", "label": name}
    if kind == "choice":
        options = [o.strip() for o in (m["options"] or "").split("|") if o.strip()]
        if not options:
            raise InvalidArgument(f"field {name}: choice needs options, e.g. choice(a|b)")
        field["options"] = options
    elif m["options"] is not None:
        raise InvalidArgument(f"field {name}: only choice takes options")
    return field


def check_template(name: str, fields: list[dict[str, Any]]) -> None:
    if not TEMPLATE_NAME.match(name):
        raise InvalidArgument(f"form name must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    if not fields:
        raise InvalidArgument("a form needs at least one field")
    names = [f["name"] for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArgument(f"field(s) named twice: {', '.join(duplicates)}")


def parse_assignment(text: str) -> tuple[str, str]:
    """'K=V' -> (K, V)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidArgument(f"--field takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def parse_value(field: dict[str, Any], text: str) -> Any:
    """The typed value of ``text`` for ``field``; an empty text clears the field (None)."""
    name, kind = field["name"], field["type"]
    text = text.strip()
    if text == "":
        return None
    if kind == "text":
        if len(text) > MAX_TEXT:
            raise InvalidArgument(f"field {name} is longer than {MAX_TEXT} characters")
        return text
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise InvalidArgument(f"field {name} must be a whole number") from None
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidArgument(f"field {name} must be yes or no (ja/nej, true/false)")
    if kind == "date":
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            raise InvalidArgument(f"field {name} must be a date like 2026-03-01") from None
    if kind == "datetime":
        try:
            return dt.datetime.fromisoformat(text).isoformat()
        except ValueError:
            raise InvalidArgument(f"field {name} must be a time like 2026-03-01T14:30") from None
    if kind == "choice":
        if text not in field["options"]:
            raise InvalidArgument(f"field {name} must be one of {', '.join(field['options'])}")
        return text
    raise InvalidArgument(f"field {name} has an unknown type {kind!r}")


def apply_fields(template: dict[str, Any] | list[dict[str, Any]], form: dict[str, Any],
                 assignments: list[tuple[str, str]]) -> dict[str, Any]:
    """``form`` with ``assignments`` applied, each checked against the template."""
    fields = template if isinstance(template, list) else template["fields"]
    by_name = {f["name"]: f for f in fields}
    result = dict(form)
    for key, text in assignments:
        field = by_name.get(key)
        if field is None:
            raise InvalidArgument(f"the form has no field {key!r}; its fields are {', '.join(by_name)}")
        value = parse_value(field, text)
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def missing_required(fields: list[dict[str, Any]], form: dict[str, Any]) -> list[str]:
    return [f["name"] for f in fields if f.get("required") and form.get(f["name"]) in (None, "")]


def display(value: Any) -> str:
    """A form value as text (gRPC, PDF)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "ja" if value else "nej"
    return str(value)
