import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptureMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPTURE_MODE_UNSPECIFIED: _ClassVar[CaptureMode]
    CAPTURE_MODE_PHOTO: _ClassVar[CaptureMode]
    CAPTURE_MODE_ASSAULT: _ClassVar[CaptureMode]
    CAPTURE_MODE_ULTRASOUND: _ClassVar[CaptureMode]
    CAPTURE_MODE_VIDEO: _ClassVar[CaptureMode]
    CAPTURE_MODE_AUDIO: _ClassVar[CaptureMode]

class MediaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_KIND_UNSPECIFIED: _ClassVar[MediaKind]
    MEDIA_KIND_IMAGE: _ClassVar[MediaKind]
    MEDIA_KIND_VIDEO: _ClassVar[MediaKind]
    MEDIA_KIND_AUDIO: _ClassVar[MediaKind]
    MEDIA_KIND_DICOM: _ClassVar[MediaKind]

class IdentityMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDENTITY_METHOD_UNSPECIFIED: _ClassVar[IdentityMethod]
    IDENTITY_METHOD_BARCODE: _ClassVar[IdentityMethod]
    IDENTITY_METHOD_OCR: _ClassVar[IdentityMethod]
    IDENTITY_METHOD_DICOM_HEADER: _ClassVar[IdentityMethod]
    IDENTITY_METHOD_EHR_CONTEXT: _ClassVar[IdentityMethod]
    IDENTITY_METHOD_DEVICE: _ClassVar[IdentityMethod]
CAPTURE_MODE_UNSPECIFIED: CaptureMode
CAPTURE_MODE_PHOTO: CaptureMode
CAPTURE_MODE_ASSAULT: CaptureMode
CAPTURE_MODE_ULTRASOUND: CaptureMode
CAPTURE_MODE_VIDEO: CaptureMode
CAPTURE_MODE_AUDIO: CaptureMode
MEDIA_KIND_UNSPECIFIED: MediaKind
MEDIA_KIND_IMAGE: MediaKind
MEDIA_KIND_VIDEO: MediaKind
MEDIA_KIND_AUDIO: MediaKind
MEDIA_KIND_DICOM: MediaKind
IDENTITY_METHOD_UNSPECIFIED: IdentityMethod
IDENTITY_METHOD_BARCODE: IdentityMethod
IDENTITY_METHOD_OCR: IdentityMethod
IDENTITY_METHOD_DICOM_HEADER: IdentityMethod
IDENTITY_METHOD_EHR_CONTEXT: IdentityMethod
IDENTITY_METHOD_DEVICE: IdentityMethod

class Device(_message.Message):
    __slots__ = ("make", "model", "serial")
    MAKE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    make: str
    model: str
    serial: str
    def __init__(self, make: _Optional[str] = ..., model: _Optional[str] = ..., serial: _Optional[str] = ...) -> None: ...

class ManifestEntry(_message.Message):
    __slots__ = ("sha256", "size_bytes", "kind", "relative_path", "capture_time", "device", "media_type")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    kind: MediaKind
    relative_path: str
    capture_time: _timestamp_pb2.Timestamp
    device: Device
    media_type: str
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., kind: _Optional[_Union[MediaKind, str]] = ..., relative_path: _Optional[str] = ..., capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., media_type: _Optional[str] = ...) -> None: ...

class IdentityEvidence(_message.Message):
    __slots__ = ("relative_path", "frame", "method", "symbology", "text", "patient_id", "x", "y", "width", "height")
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SYMBOLOGY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    relative_path: str
    frame: int
    method: IdentityMethod
    symbology: str
    text: str
    patient_id: str
    x: int
    y: int
    width: int
    height: int
    def __init__(self, relative_path: _Optional[str] = ..., frame: _Optional[int] = ..., method: _Optional[_Union[IdentityMethod, str]] = ..., symbology: _Optional[str] = ..., text: _Optional[str] = ..., patient_id: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("session_id", "agent_id", "agent_version", "department_hsa_id", "patient_id", "mode", "manifest", "evidence", "ehr_context")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_HSA_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    EHR_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    agent_id: str
    agent_version: str
    department_hsa_id: str
    patient_id: str
    mode: CaptureMode
    manifest: _containers.RepeatedCompositeFieldContainer[ManifestEntry]
    evidence: _containers.RepeatedCompositeFieldContainer[IdentityEvidence]
    ehr_context: bool
    def __init__(self, session_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., department_hsa_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., mode: _Optional[_Union[CaptureMode, str]] = ..., manifest: _Optional[_Iterable[_Union[ManifestEntry, _Mapping]]] = ..., evidence: _Optional[_Iterable[_Union[IdentityEvidence, _Mapping]]] = ..., ehr_context: _Optional[bool] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id", "committed")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    committed: bool
    def __init__(self, session_id: _Optional[str] = ..., committed: _Optional[bool] = ...) -> None: ...

class BlobDigest(_message.Message):
    __slots__ = ("sha256", "size_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class FindMissingBlobsRequest(_message.Message):
    __slots__ = ("session_id", "blobs")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    blobs: _containers.RepeatedCompositeFieldContainer[BlobDigest]
    def __init__(self, session_id: _Optional[str] = ..., blobs: _Optional[_Iterable[_Union[BlobDigest, _Mapping]]] = ...) -> None: ...

class FindMissingBlobsResponse(_message.Message):
    __slots__ = ("missing",)
    MISSING_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedCompositeFieldContainer[BlobDigest]
    def __init__(self, missing: _Optional[_Iterable[_Union[BlobDigest, _Mapping]]] = ...) -> None: ...

class QueryWriteStatusRequest(_message.Message):
    __slots__ = ("session_id", "blob")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    blob: BlobDigest
    def __init__(self, session_id: _Optional[str] = ..., blob: _Optional[_Union[BlobDigest, _Mapping]] = ...) -> None: ...

class QueryWriteStatusResponse(_message.Message):
    __slots__ = ("committed_size", "complete")
    COMMITTED_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    committed_size: int
    complete: bool
    def __init__(self, committed_size: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("session_id", "blob", "offset", "data", "finish_write")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_WRITE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    blob: BlobDigest
    offset: int
    data: bytes
    finish_write: bool
    def __init__(self, session_id: _Optional[str] = ..., blob: _Optional[_Union[BlobDigest, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., finish_write: _Optional[bool] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("committed_size", "complete")
    COMMITTED_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    committed_size: int
    complete: bool
    def __init__(self, committed_size: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class CommitSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class FileReceipt(_message.Message):
    __slots__ = ("relative_path", "sha256", "size_bytes", "blob_id", "media_item_id")
    RELATIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    relative_path: str
    sha256: str
    size_bytes: int
    blob_id: str
    media_item_id: str
    def __init__(self, relative_path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., blob_id: _Optional[str] = ..., media_item_id: _Optional[str] = ...) -> None: ...

class CommitSessionResponse(_message.Message):
    __slots__ = ("case_id", "receipts", "case_version")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    CASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    receipts: _containers.RepeatedCompositeFieldContainer[FileReceipt]
    case_version: int
    def __init__(self, case_id: _Optional[str] = ..., receipts: _Optional[_Iterable[_Union[FileReceipt, _Mapping]]] = ..., case_version: _Optional[int] = ...) -> None: ...
