from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

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
