"""Reading a posted form: size bounds, the CSRF token, and an audit event for
every refused post (``web.form`` refused, with the reason), so that a forged
or oversized post is seen in the log although nothing was done."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request

from archive_server.audit import append_audit
from archive_server.authz import Principal
from archive_server.errors import ArchiveError, InvalidArgument
from archive_server.logins import ANONYMOUS
from archive_server.web import csrf
from archive_server.web.auth import ctx, origin_of

# A form is a few fields of text; the one upload (an agent certificate) is a PEM of a few KiB.
MAX_FORM_BYTES = 256 << 10
MAX_FIELD_CHARS = 8000


class FormRefused(InvalidArgument):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def audit_refusal(request: Request, who: Principal | None, error: ArchiveError) -> None:
    """One audit event for a post refused before any operation ran."""
    login = who.login_details() if who is not None else {"method": "none", "from": origin_of(request)}
    with ctx(request).db.write() as s:
        append_audit(s, who.actor if who is not None else ANONYMOUS, "web.form", target=request.url.path[:255],
                     outcome="refused", details={"reason": getattr(error, "reason", error.code),
                                                 "message": str(error), "login": login})


async def read_form(request: Request, who: Principal | None, *, max_bytes: int = MAX_FORM_BYTES) -> FormData:
    """The posted form once its size and CSRF token are right; else the
    refusal is audited and raised (answered as a page by errors.py)."""
    try:
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_bytes:
            raise FormRefused("FORM_TOO_LARGE", f"the form is larger than {max_bytes >> 10} KiB")
        form = await request.form(max_files=1, max_fields=200, max_part_size=max_bytes)
        sent = form.get(csrf.FIELD)
        csrf.check(request, sent if isinstance(sent, str) else None)
        for key, value in form.multi_items():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise FormRefused("FIELD_TOO_LONG", f"the field {key[:40]!r} is longer than "
                                                    f"{MAX_FIELD_CHARS} characters")
    except ArchiveError as error:
        await run_in_threadpool(audit_refusal, request, who, error)
        raise
    return form


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
