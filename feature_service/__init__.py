"""Centralised feature store: RocksDB-backed versioned features, gRPC GetFeatures, and
point-in-time joins to training data. Never imports torch.

The store core (:class:`FeatureStore`) works without gRPC: feature groups with declared schemas,
values versioned by event time (and created time for corrections), "latest" reads as one multi_get
and "as of t" reads as one seek per entity, bulk parquet ingest that is atomic per batch and
resumable (:func:`ingest_parquet`), TTL, compaction and stats.

Online serving over gRPC: :func:`build_server` (``adrank serve-features``) runs a thin servicer
over a read-only store; :class:`FeatureClient` returns the same frames the store returns.
"""

from adrank.errors import DeadlineExceededError, UnauthenticatedError
from feature_service.client import FeatureClient
from feature_service.ingest import DEFAULT_INGEST_BATCH_ROWS, infer_group, ingest_parquet
from feature_service.pit_join import (
    DEFAULT_JOIN_BATCH_ROWS,
    DEFAULT_JOIN_MEMORY_BYTES,
    GroupJoinCounts,
    JoinedBatches,
    JoinReport,
    JoinSpec,
    JoinStrategy,
    VersionCache,
    iter_joined_batches,
    join_to_parquet,
)
from feature_service.server import FeatureServer, ServerConfig, build_server
from feature_service.store import (
    DEFAULT_BLOCK_CACHE_BYTES,
    FeatureStore,
    VersionChunk,
    VersionSeek,
    entity_id_keys,
)
from feature_service.types import (
    CompactionReport,
    Dtype,
    EntityIdKind,
    FeatureColumn,
    FeatureFrame,
    FeatureGroup,
    FeatureRead,
    FeatureSpec,
    FileIngestReport,
    GroupCompaction,
    GroupStats,
    IngestCheckpoint,
    IngestReport,
    RequestFeatures,
    Shape,
)

__all__ = [
    "FeatureStore",
    "VersionChunk",
    "VersionSeek",
    "FeatureClient",
    "FeatureServer",
    "ServerConfig",
    "build_server",
    "DeadlineExceededError",
    "UnauthenticatedError",
    "DEFAULT_BLOCK_CACHE_BYTES",
    "DEFAULT_INGEST_BATCH_ROWS",
    "entity_id_keys",
    "ingest_parquet",
    "infer_group",
    "iter_joined_batches",
    "join_to_parquet",
    "JoinSpec",
    "JoinStrategy",
    "JoinReport",
    "GroupJoinCounts",
    "JoinedBatches",
    "VersionCache",
    "DEFAULT_JOIN_BATCH_ROWS",
    "DEFAULT_JOIN_MEMORY_BYTES",
    "CompactionReport",
    "Dtype",
    "EntityIdKind",
    "FeatureColumn",
    "FeatureFrame",
    "FeatureGroup",
    "FeatureRead",
    "FeatureSpec",
    "FileIngestReport",
    "GroupCompaction",
    "GroupStats",
    "IngestCheckpoint",
    "IngestReport",
    "RequestFeatures",
    "Shape",
]
