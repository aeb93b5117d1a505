from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_STRING: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]

class Shape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHAPE_UNSPECIFIED: _ClassVar[Shape]
    SHAPE_SCALAR: _ClassVar[Shape]
    SHAPE_VECTOR: _ClassVar[Shape]
    SHAPE_LIST: _ClassVar[Shape]
DTYPE_UNSPECIFIED: DType
DTYPE_INT64: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_STRING: DType
DTYPE_BOOL: DType
SHAPE_UNSPECIFIED: Shape
SHAPE_SCALAR: Shape
SHAPE_VECTOR: Shape
SHAPE_LIST: Shape

class EntityIds(_message.Message):
    __slots__ = ("int_ids", "string_ids")
    INT_IDS_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    int_ids: _containers.RepeatedScalarFieldContainer[int]
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, int_ids: _Optional[_Iterable[int]] = ..., string_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReadTime(_message.Message):
    __slots__ = ("as_of_us", "now_us")
    AS_OF_US_FIELD_NUMBER: _ClassVar[int]
    NOW_US_FIELD_NUMBER: _ClassVar[int]
    as_of_us: int
    now_us: int
    def __init__(self, as_of_us: _Optional[int] = ..., now_us: _Optional[int] = ...) -> None: ...

class GetFeaturesRequest(_message.Message):
    __slots__ = ("group", "ids", "features", "time")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    group: str
    ids: EntityIds
    features: _containers.RepeatedScalarFieldContainer[str]
    time: ReadTime
    def __init__(self, group: _Optional[str] = ..., ids: _Optional[_Union[EntityIds, _Mapping]] = ..., features: _Optional[_Iterable[str]] = ..., time: _Optional[_Union[ReadTime, _Mapping]] = ...) -> None: ...

class GetFeaturesResponse(_message.Message):
    __slots__ = ("frame",)
    FRAME_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class GetRequestFeaturesRequest(_message.Message):
    __slots__ = ("user_group", "user_id", "user_features", "candidate_group", "candidate_ids", "candidate_features", "time")
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FEATURES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_GROUP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    user_group: str
    user_id: EntityIds
    user_features: _containers.RepeatedScalarFieldContainer[str]
    candidate_group: str
    candidate_ids: EntityIds
    candidate_features: _containers.RepeatedScalarFieldContainer[str]
    time: ReadTime
    def __init__(self, user_group: _Optional[str] = ..., user_id: _Optional[_Union[EntityIds, _Mapping]] = ..., user_features: _Optional[_Iterable[str]] = ..., candidate_group: _Optional[str] = ..., candidate_ids: _Optional[_Union[EntityIds, _Mapping]] = ..., candidate_features: _Optional[_Iterable[str]] = ..., time: _Optional[_Union[ReadTime, _Mapping]] = ...) -> None: ...

class GetRequestFeaturesResponse(_message.Message):
    __slots__ = ("user", "candidates")
    USER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    user: Frame
    candidates: Frame
    def __init__(self, user: _Optional[_Union[Frame, _Mapping]] = ..., candidates: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "dtype", "shape", "dim", "values", "offsets", "valid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: Shape
    dim: int
    values: bytes
    offsets: bytes
    valid: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Union[Shape, str]] = ..., dim: _Optional[int] = ..., values: _Optional[bytes] = ..., offsets: _Optional[bytes] = ..., valid: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("group", "num_rows", "entity_keys", "found", "event_us", "created_us", "columns")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEYS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    EVENT_US_FIELD_NUMBER: _ClassVar[int]
    CREATED_US_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    group: str
    num_rows: int
    entity_keys: bytes
    found: bytes
    event_us: bytes
    created_us: bytes
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, group: _Optional[str] = ..., num_rows: _Optional[int] = ..., entity_keys: _Optional[bytes] = ..., found: _Optional[bytes] = ..., event_us: _Optional[bytes] = ..., created_us: _Optional[bytes] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...
