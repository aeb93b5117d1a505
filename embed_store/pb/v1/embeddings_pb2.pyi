from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ID_SPACE_UNSPECIFIED: _ClassVar[IdSpace]
    ID_SPACE_HASHED: _ClassVar[IdSpace]
    ID_SPACE_ID_KEY: _ClassVar[IdSpace]

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_SUM: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
    POOLING_NONE: _ClassVar[Pooling]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
    PRECISION_INT8: _ClassVar[Precision]
    PRECISION_INT4: _ClassVar[Precision]
ID_SPACE_UNSPECIFIED: IdSpace
ID_SPACE_HASHED: IdSpace
ID_SPACE_ID_KEY: IdSpace
POOLING_UNSPECIFIED: Pooling
POOLING_SUM: Pooling
POOLING_MEAN: Pooling
POOLING_NONE: Pooling
PRECISION_UNSPECIFIED: Precision
PRECISION_FP32: Precision
PRECISION_FP16: Precision
PRECISION_INT8: Precision
PRECISION_INT4: Precision

class JaggedFeature(_message.Message):
    __slots__ = ("name", "ids", "lengths")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ids: bytes
    lengths: bytes
    def __init__(self, name: _Optional[str] = ..., ids: _Optional[bytes] = ..., lengths: _Optional[bytes] = ...) -> None: ...

class JaggedIds(_message.Message):
    __slots__ = ("batch_size", "features")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    features: _containers.RepeatedCompositeFieldContainer[JaggedFeature]
    def __init__(self, batch_size: _Optional[int] = ..., features: _Optional[_Iterable[_Union[JaggedFeature, _Mapping]]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("candidates", "requests", "candidate_request", "id_space")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ID_SPACE_FIELD_NUMBER: _ClassVar[int]
    candidates: JaggedIds
    requests: JaggedIds
    candidate_request: bytes
    id_space: IdSpace
    def __init__(self, candidates: _Optional[_Union[JaggedIds, _Mapping]] = ..., requests: _Optional[_Union[JaggedIds, _Mapping]] = ..., candidate_request: _Optional[bytes] = ..., id_space: _Optional[_Union[IdSpace, str]] = ...) -> None: ...

class PooledEmbeddings(_message.Message):
    __slots__ = ("num_rows", "features", "dims", "values")
    NUM_ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    num_rows: int
    features: _containers.RepeatedScalarFieldContainer[str]
    dims: _containers.RepeatedScalarFieldContainer[int]
    values: bytes
    def __init__(self, num_rows: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., dims: _Optional[_Iterable[int]] = ..., values: _Optional[bytes] = ...) -> None: ...

class SequenceEmbeddings(_message.Message):
    __slots__ = ("feature", "dim", "lengths", "values")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    feature: str
    dim: int
    lengths: bytes
    values: bytes
    def __init__(self, feature: _Optional[str] = ..., dim: _Optional[int] = ..., lengths: _Optional[bytes] = ..., values: _Optional[bytes] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("candidates", "requests", "plan_fingerprint", "sequences")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    candidates: PooledEmbeddings
    requests: PooledEmbeddings
    plan_fingerprint: str
    sequences: _containers.RepeatedCompositeFieldContainer[SequenceEmbeddings]
    def __init__(self, candidates: _Optional[_Union[PooledEmbeddings, _Mapping]] = ..., requests: _Optional[_Union[PooledEmbeddings, _Mapping]] = ..., plan_fingerprint: _Optional[str] = ..., sequences: _Optional[_Iterable[_Union[SequenceEmbeddings, _Mapping]]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureInfo(_message.Message):
    __slots__ = ("name", "table", "dim", "pooling", "hashed_rows", "precision", "num_dedicated_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    HASHED_ROWS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    NUM_DEDICATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    table: str
    dim: int
    pooling: Pooling
    hashed_rows: int
    precision: Precision
    num_dedicated_rows: int
    def __init__(self, name: _Optional[str] = ..., table: _Optional[str] = ..., dim: _Optional[int] = ..., pooling: _Optional[_Union[Pooling, str]] = ..., hashed_rows: _Optional[int] = ..., precision: _Optional[_Union[Precision, str]] = ..., num_dedicated_rows: _Optional[int] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("features", "world_size", "plan_fingerprint", "max_receive_bytes", "max_send_bytes")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_BYTES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureInfo]
    world_size: int
    plan_fingerprint: str
    max_receive_bytes: int
    max_send_bytes: int
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureInfo, _Mapping]]] = ..., world_size: _Optional[int] = ..., plan_fingerprint: _Optional[str] = ..., max_receive_bytes: _Optional[int] = ..., max_send_bytes: _Optional[int] = ...) -> None: ...
