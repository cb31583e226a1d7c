import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_IDLE: _ClassVar[AgentState]
    AGENT_STATE_BUSY: _ClassVar[AgentState]
    AGENT_STATE_DEFERRED: _ClassVar[AgentState]
    AGENT_STATE_STARTING: _ClassVar[AgentState]
    AGENT_STATE_STOPPING: _ClassVar[AgentState]
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_IDLE: AgentState
AGENT_STATE_BUSY: AgentState
AGENT_STATE_DEFERRED: AgentState
AGENT_STATE_STARTING: AgentState
AGENT_STATE_STOPPING: AgentState

class CardCounts(_message.Message):
    __slots__ = ("detected", "archived", "refused", "deferred", "interrupted", "failed")
    DETECTED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    detected: int
    archived: int
    refused: int
    deferred: int
    interrupted: int
    failed: int
    def __init__(self, detected: _Optional[int] = ..., archived: _Optional[int] = ..., refused: _Optional[int] = ..., deferred: _Optional[int] = ..., interrupted: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class CardInProgress(_message.Message):
    __slots__ = ("card_key", "reader", "state", "stage", "files_done", "files_total", "bytes_done", "bytes_total", "since", "reason_code")
    CARD_KEY_FIELD_NUMBER: _ClassVar[int]
    READER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    card_key: str
    reader: str
    state: str
    stage: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    since: _timestamp_pb2.Timestamp
    reason_code: str
    def __init__(self, card_key: _Optional[str] = ..., reader: _Optional[str] = ..., state: _Optional[str] = ..., stage: _Optional[str] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason_code: _Optional[str] = ...) -> None: ...

class RefusedCard(_message.Message):
    __slots__ = ("card_key", "reader", "reason_code", "refused_at", "file_count")
    CARD_KEY_FIELD_NUMBER: _ClassVar[int]
    READER_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_AT_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    card_key: str
    reader: str
    reason_code: str
    refused_at: _timestamp_pb2.Timestamp
    file_count: int
    def __init__(self, card_key: _Optional[str] = ..., reader: _Optional[str] = ..., reason_code: _Optional[str] = ..., refused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., file_count: _Optional[int] = ...) -> None: ...

class AgentError(_message.Message):
    __slots__ = ("at", "code", "message")
    AT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    code: str
    message: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "host", "agent_version", "department_hsa_id", "state", "queue_length", "counts", "last_error", "refused", "in_progress", "interval_s", "started_at", "sent_at", "archive_reachable", "spool_free_bytes", "spool_bytes")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPARTMENT_HSA_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    SPOOL_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    host: str
    agent_version: str
    department_hsa_id: str
    state: AgentState
    queue_length: int
    counts: CardCounts
    last_error: AgentError
    refused: _containers.RepeatedCompositeFieldContainer[RefusedCard]
    in_progress: _containers.RepeatedCompositeFieldContainer[CardInProgress]
    interval_s: float
    started_at: _timestamp_pb2.Timestamp
    sent_at: _timestamp_pb2.Timestamp
    archive_reachable: bool
    spool_free_bytes: int
    spool_bytes: int
    def __init__(self, agent_id: _Optional[str] = ..., host: _Optional[str] = ..., agent_version: _Optional[str] = ..., department_hsa_id: _Optional[str] = ..., state: _Optional[_Union[AgentState, str]] = ..., queue_length: _Optional[int] = ..., counts: _Optional[_Union[CardCounts, _Mapping]] = ..., last_error: _Optional[_Union[AgentError, _Mapping]] = ..., refused: _Optional[_Iterable[_Union[RefusedCard, _Mapping]]] = ..., in_progress: _Optional[_Iterable[_Union[CardInProgress, _Mapping]]] = ..., interval_s: _Optional[float] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., archive_reachable: _Optional[bool] = ..., spool_free_bytes: _Optional[int] = ..., spool_bytes: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("server_time", "next_interval_s", "clock_skew_s", "devices")
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEW_S_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    server_time: _timestamp_pb2.Timestamp
    next_interval_s: float
    clock_skew_s: float
    devices: RegisteredDevices
    def __init__(self, server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_interval_s: _Optional[float] = ..., clock_skew_s: _Optional[float] = ..., devices: _Optional[_Union[RegisteredDevices, _Mapping]] = ...) -> None: ...

class RegisteredDevices(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[RegisteredDevice]
    def __init__(self, devices: _Optional[_Iterable[_Union[RegisteredDevice, _Mapping]]] = ...) -> None: ...

class RegisteredDevice(_message.Message):
    __slots__ = ("make", "model", "serial")
    MAKE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    make: str
    model: str
    serial: str
    def __init__(self, make: _Optional[str] = ..., model: _Optional[str] = ..., serial: _Optional[str] = ...) -> None: ...
