from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ids(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("sparse", "dense")
    class SparseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Ids
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Ids, _Mapping]] = ...) -> None: ...
    class DenseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    sparse: _containers.MessageMap[str, Ids]
    dense: _containers.ScalarMap[str, float]
    def __init__(self, sparse: _Optional[_Mapping[str, Ids]] = ..., dense: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("user_id", "context", "ad_ids", "latency_budget_ms", "force_tier", "request_id", "as_of_us")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    FORCE_TIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_US_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    context: Context
    ad_ids: _containers.RepeatedScalarFieldContainer[int]
    latency_budget_ms: float
    force_tier: str
    request_id: int
    as_of_us: int
    def __init__(self, user_id: _Optional[int] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., ad_ids: _Optional[_Iterable[int]] = ..., latency_budget_ms: _Optional[float] = ..., force_tier: _Optional[str] = ..., request_id: _Optional[int] = ..., as_of_us: _Optional[int] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("features_ms", "lookup_ms", "score_ms", "total_ms")
    FEATURES_MS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    features_ms: float
    lookup_ms: float
    score_ms: float
    total_ms: float
    def __init__(self, features_ms: _Optional[float] = ..., lookup_ms: _Optional[float] = ..., score_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("scores", "tier", "reason", "plan_fingerprint", "feature_misses", "timings", "request_id")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MISSES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    tier: str
    reason: str
    plan_fingerprint: str
    feature_misses: int
    timings: StageTimings
    request_id: int
    def __init__(self, scores: _Optional[_Iterable[float]] = ..., tier: _Optional[str] = ..., reason: _Optional[str] = ..., plan_fingerprint: _Optional[str] = ..., feature_misses: _Optional[int] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., request_id: _Optional[int] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("plan_fingerprint", "tiers", "safe_tier", "sparse_context", "sequence_context", "dense_context", "max_sequence_len", "world_size")
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    SAFE_TIER_FIELD_NUMBER: _ClassVar[int]
    SPARSE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DENSE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_LEN_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    plan_fingerprint: str
    tiers: _containers.RepeatedScalarFieldContainer[str]
    safe_tier: str
    sparse_context: _containers.RepeatedScalarFieldContainer[str]
    sequence_context: _containers.RepeatedScalarFieldContainer[str]
    dense_context: _containers.RepeatedScalarFieldContainer[str]
    max_sequence_len: int
    world_size: int
    def __init__(self, plan_fingerprint: _Optional[str] = ..., tiers: _Optional[_Iterable[str]] = ..., safe_tier: _Optional[str] = ..., sparse_context: _Optional[_Iterable[str]] = ..., sequence_context: _Optional[_Iterable[str]] = ..., dense_context: _Optional[_Iterable[str]] = ..., max_sequence_len: _Optional[int] = ..., world_size: _Optional[int] = ...) -> None: ...
