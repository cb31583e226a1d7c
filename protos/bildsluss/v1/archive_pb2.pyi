import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CASE_STATUS_UNSPECIFIED: _ClassVar[CaseStatus]
    CASE_STATUS_UNSIGNED: _ClassVar[CaseStatus]
    CASE_STATUS_SIGNED: _ClassVar[CaseStatus]
CASE_STATUS_UNSPECIFIED: CaseStatus
CASE_STATUS_UNSIGNED: CaseStatus
CASE_STATUS_SIGNED: CaseStatus

class MediaRef(_message.Message):
    __slots__ = ("sha256", "relative_path", "kind", "media_type", "size_bytes", "capture_time")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    relative_path: str
    kind: str
    media_type: str
    size_bytes: int
    capture_time: _timestamp_pb2.Timestamp
    def __init__(self, sha256: _Optional[str] = ..., relative_path: _Optional[str] = ..., kind: _Optional[str] = ..., media_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CaseView(_message.Message):
    __slots__ = ("case_id", "confidential", "display", "version", "latest_version", "patient_id", "department_hsa_id", "status", "media_count", "created", "version_created", "version_created_by", "reason", "signed_by", "signed_at", "form_template", "form", "media")
    class FormEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENTIAL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_HSA_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    VERSION_CREATED_FIELD_NUMBER: _ClassVar[int]
    VERSION_CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SIGNED_BY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    FORM_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    FORM_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    confidential: bool
    display: str
    version: int
    latest_version: int
    patient_id: str
    department_hsa_id: str
    status: CaseStatus
    media_count: int
    created: _timestamp_pb2.Timestamp
    version_created: _timestamp_pb2.Timestamp
    version_created_by: str
    reason: str
    signed_by: str
    signed_at: _timestamp_pb2.Timestamp
    form_template: str
    form: _containers.ScalarMap[str, str]
    media: _containers.RepeatedCompositeFieldContainer[MediaRef]
    def __init__(self, case_id: _Optional[str] = ..., confidential: _Optional[bool] = ..., display: _Optional[str] = ..., version: _Optional[int] = ..., latest_version: _Optional[int] = ..., patient_id: _Optional[str] = ..., department_hsa_id: _Optional[str] = ..., status: _Optional[_Union[CaseStatus, str]] = ..., media_count: _Optional[int] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version_created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version_created_by: _Optional[str] = ..., reason: _Optional[str] = ..., signed_by: _Optional[str] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., form_template: _Optional[str] = ..., form: _Optional[_Mapping[str, str]] = ..., media: _Optional[_Iterable[_Union[MediaRef, _Mapping]]] = ...) -> None: ...

class ListCasesRequest(_message.Message):
    __slots__ = ("patient_id",)
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    def __init__(self, patient_id: _Optional[str] = ...) -> None: ...

class ListCasesResponse(_message.Message):
    __slots__ = ("cases",)
    CASES_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[CaseView]
    def __init__(self, cases: _Optional[_Iterable[_Union[CaseView, _Mapping]]] = ...) -> None: ...

class GetCaseRequest(_message.Message):
    __slots__ = ("case_id", "version")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    version: int
    def __init__(self, case_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SignCaseRequest(_message.Message):
    __slots__ = ("case_id",)
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    def __init__(self, case_id: _Optional[str] = ...) -> None: ...

class ReviseCaseRequest(_message.Message):
    __slots__ = ("case_id", "reason", "patient_id", "fields", "drop_media", "form_template")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DROP_MEDIA_FIELD_NUMBER: _ClassVar[int]
    FORM_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    reason: str
    patient_id: str
    fields: _containers.ScalarMap[str, str]
    drop_media: _containers.RepeatedScalarFieldContainer[str]
    form_template: str
    def __init__(self, case_id: _Optional[str] = ..., reason: _Optional[str] = ..., patient_id: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., drop_media: _Optional[_Iterable[str]] = ..., form_template: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("case_id",)
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    def __init__(self, case_id: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[CaseView]
    def __init__(self, versions: _Optional[_Iterable[_Union[CaseView, _Mapping]]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("case_id", "from_version", "to_version")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    from_version: int
    to_version: int
    def __init__(self, case_id: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ...) -> None: ...

class FieldChange(_message.Message):
    __slots__ = ("name", "from_value", "to_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_VALUE_FIELD_NUMBER: _ClassVar[int]
    TO_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_value: str
    to_value: str
    def __init__(self, name: _Optional[str] = ..., from_value: _Optional[str] = ..., to_value: _Optional[str] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("case_id", "from_version", "to_version", "changes", "media_removed", "media_added", "media_kept")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_REMOVED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ADDED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_KEPT_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    from_version: int
    to_version: int
    changes: _containers.RepeatedCompositeFieldContainer[FieldChange]
    media_removed: _containers.RepeatedCompositeFieldContainer[MediaRef]
    media_added: _containers.RepeatedCompositeFieldContainer[MediaRef]
    media_kept: int
    def __init__(self, case_id: _Optional[str] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[FieldChange, _Mapping]]] = ..., media_removed: _Optional[_Iterable[_Union[MediaRef, _Mapping]]] = ..., media_added: _Optional[_Iterable[_Union[MediaRef, _Mapping]]] = ..., media_kept: _Optional[int] = ...) -> None: ...

class EmergencyOpenRequest(_message.Message):
    __slots__ = ("case_id", "reason", "version")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    reason: str
    version: int
    def __init__(self, case_id: _Optional[str] = ..., reason: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...
