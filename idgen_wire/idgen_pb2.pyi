import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NextIdRequest(_message.Message):
    __slots__ = ("biz_type", "count")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    count: int
    def __init__(self, biz_type: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class NextIdResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class NextSegmentRequest(_message.Message):
    __slots__ = ("biz_type", "floor", "steps", "above_all")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ABOVE_ALL_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    floor: int
    steps: int
    above_all: bool
    def __init__(self, biz_type: _Optional[str] = ..., floor: _Optional[int] = ..., steps: _Optional[int] = ..., above_all: _Optional[bool] = ...) -> None: ...

class NextSegmentResponse(_message.Message):
    __slots__ = ("biz_type", "start", "end", "delta", "remainder")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REMAINDER_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    start: int
    end: int
    delta: int
    remainder: int
    def __init__(self, biz_type: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., delta: _Optional[int] = ..., remainder: _Optional[int] = ...) -> None: ...

class AcquireLeaseRequest(_message.Message):
    __slots__ = ("biz_type", "name", "holder", "ttl_ms", "epoch")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    name: str
    holder: str
    ttl_ms: int
    epoch: int
    def __init__(self, biz_type: _Optional[str] = ..., name: _Optional[str] = ..., holder: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class AcquireLeaseResponse(_message.Message):
    __slots__ = ("granted", "epoch", "retry_after_ms")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    epoch: int
    retry_after_ms: int
    def __init__(self, granted: _Optional[bool] = ..., epoch: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class ReleaseLeaseRequest(_message.Message):
    __slots__ = ("biz_type", "name", "holder", "epoch")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    name: str
    holder: str
    epoch: int
    def __init__(self, biz_type: _Optional[str] = ..., name: _Optional[str] = ..., holder: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReleaseLeaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "started_at", "serving", "biz_types", "databases")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    BIZ_TYPES_FIELD_NUMBER: _ClassVar[int]
    DATABASES_FIELD_NUMBER: _ClassVar[int]
    version: str
    started_at: _timestamp_pb2.Timestamp
    serving: bool
    biz_types: _containers.RepeatedCompositeFieldContainer[BizTypeStatus]
    databases: _containers.RepeatedCompositeFieldContainer[DatabaseStatus]
    def __init__(self, version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., serving: _Optional[bool] = ..., biz_types: _Optional[_Iterable[_Union[BizTypeStatus, _Mapping]]] = ..., databases: _Optional[_Iterable[_Union[DatabaseStatus, _Mapping]]] = ...) -> None: ...

class SegmentStatus(_message.Message):
    __slots__ = ("start", "end", "delta", "remainder", "ids_left")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REMAINDER_FIELD_NUMBER: _ClassVar[int]
    IDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    delta: int
    remainder: int
    ids_left: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., delta: _Optional[int] = ..., remainder: _Optional[int] = ..., ids_left: _Optional[int] = ...) -> None: ...

class BizTypeStatus(_message.Message):
    __slots__ = ("biz_type", "current", "next", "step", "step_multiplier", "fetches", "waits", "ids_issued")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEP_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    FETCHES_FIELD_NUMBER: _ClassVar[int]
    WAITS_FIELD_NUMBER: _ClassVar[int]
    IDS_ISSUED_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    current: SegmentStatus
    next: SegmentStatus
    step: int
    step_multiplier: int
    fetches: int
    waits: int
    ids_issued: int
    def __init__(self, biz_type: _Optional[str] = ..., current: _Optional[_Union[SegmentStatus, _Mapping]] = ..., next: _Optional[_Union[SegmentStatus, _Mapping]] = ..., step: _Optional[int] = ..., step_multiplier: _Optional[int] = ..., fetches: _Optional[int] = ..., waits: _Optional[int] = ..., ids_issued: _Optional[int] = ...) -> None: ...

class DatabaseStatus(_message.Message):
    __slots__ = ("label", "name", "reachable", "since", "last_error", "rows", "node")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    label: str
    name: str
    reachable: bool
    since: _timestamp_pb2.Timestamp
    last_error: str
    rows: _containers.RepeatedCompositeFieldContainer[DatabaseRowStatus]
    node: str
    def __init__(self, label: _Optional[str] = ..., name: _Optional[str] = ..., reachable: _Optional[bool] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[DatabaseRowStatus, _Mapping]]] = ..., node: _Optional[str] = ...) -> None: ...

class DatabaseRowStatus(_message.Message):
    __slots__ = ("biz_type", "max_id", "step", "delta", "remainder", "range_used")
    BIZ_TYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REMAINDER_FIELD_NUMBER: _ClassVar[int]
    RANGE_USED_FIELD_NUMBER: _ClassVar[int]
    biz_type: str
    max_id: int
    step: int
    delta: int
    remainder: int
    range_used: float
    def __init__(self, biz_type: _Optional[str] = ..., max_id: _Optional[int] = ..., step: _Optional[int] = ..., delta: _Optional[int] = ..., remainder: _Optional[int] = ..., range_used: _Optional[float] = ...) -> None: ...
