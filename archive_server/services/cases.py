"""gRPC adapter of the Cases service (protos/bildsluss/v1/archive.proto).

A thin servicer: the caller is the user whose session the call's bearer token
names (``authorization: Bearer TOKEN`` metadata, from a login at the archive's
HTTPS endpoint), verified by :class:`archive_server.logins.Logins`; a call
without a valid token is refused (UNAUTHENTICATED, audited), whatever else it
carries — an agent's client certificate alone never reaches a case, and a
user name in the metadata is not read at all. It then calls the same functions
as the command line, which go through the one authorization check and audit
writer, and converts their JSON dicts to messages. Errors become status codes
in :mod:`archive_server.interceptor`.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from archive_server import forms, versions
from archive_server.authz import Principal
from archive_server.cases import normalise_patient, search_cases, show_case
from archive_server.config import ArchiveConfig
from archive_server.db import Database
from archive_server.logins import Logins
from bildsluss.v1 import archive_pb2 as pb
from bildsluss.v1 import archive_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Cases"].full_name  # "bildsluss.v1.Cases"
_STATUS = {"unsigned": pb.CASE_STATUS_UNSIGNED, "signed": pb.CASE_STATUS_SIGNED}


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer TOKEN`` entry, else None."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class CasesServicer(pb_grpc.CasesServicer):
    def __init__(self, db: Database, config: ArchiveConfig, logins: Logins) -> None:
        self.db = db
        self.config = config
        self.logins = logins

    def caller(self, context: grpc.ServicerContext) -> Principal:
        return self.logins.authenticate(bearer_token(context.invocation_metadata()), context.peer())

    def List(self, request: pb.ListCasesRequest, context: grpc.ServicerContext) -> pb.ListCasesResponse:
        who = self.caller(context)  # before anything about the request is answered
        patient = normalise_patient(request.patient_id, self.config.reserve_formats) if request.patient_id else None
        return pb.ListCasesResponse(cases=[case_view(c) for c in search_cases(self.db, who, patient)])

    def Get(self, request: pb.GetCaseRequest, context: grpc.ServicerContext) -> pb.CaseView:
        return case_view(show_case(self.db, self.caller(context), request.case_id, version=request.version or None))

    def Sign(self, request: pb.SignCaseRequest, context: grpc.ServicerContext) -> pb.CaseView:
        return case_view(versions.sign_case(self.db, self.caller(context), request.case_id)["case"])

    def Revise(self, request: pb.ReviseCaseRequest, context: grpc.ServicerContext) -> pb.CaseView:
        who = self.caller(context)
        result = versions.revise_case(
            self.db, who, request.case_id, reason=request.reason,
            patient=normalise_patient(request.patient_id, self.config.reserve_formats) if request.patient_id else None,
            fields=sorted(request.fields.items()), drop_media=list(request.drop_media),
            form_template=request.form_template or None,
            reserve_formats=self.config.reserve_formats)
        return case_view(result["case"])

    def History(self, request: pb.HistoryRequest, context: grpc.ServicerContext) -> pb.HistoryResponse:
        return pb.HistoryResponse(versions=[case_view(v) for v in versions.case_history(
            self.db, self.caller(context), request.case_id)])

    def Compare(self, request: pb.CompareRequest, context: grpc.ServicerContext) -> pb.CompareResponse:
        diff = versions.diff_versions(self.db, self.caller(context), request.case_id, request.from_version,
                                      request.to_version)
        return pb.CompareResponse(
            case_id=diff["case_id"], from_version=diff["from_version"], to_version=diff["to_version"],
            changes=[pb.FieldChange(name=k, from_value=forms.display(c["from"]), to_value=forms.display(c["to"]))
                     for k, c in diff["fields"].items()],
            media_removed=[pb.MediaRef(sha256=m["sha256"], relative_path=m["path"], kind=m["kind"])
                           for m in diff["media_removed"]],
            media_added=[pb.MediaRef(sha256=m["sha256"], relative_path=m["path"], kind=m["kind"])
                         for m in diff["media_added"]],
            media_kept=diff["media_kept"])

    def EmergencyOpen(self, request: pb.EmergencyOpenRequest, context: grpc.ServicerContext) -> pb.CaseView:
        return case_view(show_case(self.db, self.caller(context), request.case_id, version=request.version or None,
                                   emergency_reason=request.reason))


def case_view(case: dict[str, Any]) -> pb.CaseView:
    if case.get("display"):
        return pb.CaseView(case_id=case["case_id"], confidential=True, display=case["display"])
    view = pb.CaseView(
        case_id=case["case_id"], confidential=case["confidential"], version=case["version"],
        latest_version=case["latest_version"], patient_id=case["patient"],
        department_hsa_id=case["department"], status=_STATUS.get(case["status"], pb.CASE_STATUS_UNSPECIFIED),
        media_count=case["media_count"], version_created_by=case["version_created_by"] or "",
        reason=case["reason"] or "", signed_by=case["signed_by"] or "",
        form_template=case["form_template"] or "",
        form={k: forms.display(v) for k, v in case["form"].items()},
        media=[pb.MediaRef(sha256=m["sha256"], relative_path=m["path"], kind=m["kind"],
                           media_type=m["media_type"], size_bytes=m["size"],
                           capture_time=_ts(m["capture_time"])) for m in case["media"]],
    )
    for field, key in (("created", "created"), ("version_created", "version_created_at"),
                       ("signed_at", "signed_at")):
        if case.get(key):
            getattr(view, field).CopyFrom(_ts(case[key]))
    return view


def _ts(text: str | None) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.datetime.fromisoformat(text))
    return ts
