"""Centralised feature store: RocksDB-backed versioned features, gRPC GetFeatures, and
point-in-time joins to training data. Never imports torch.

The store core (:class:`FeatureStore`) works without gRPC: feature groups with declared schemas,
values versioned by event time (and created time for corrections), "latest" reads as one multi_get
and "as of t" reads as one seek per entity, bulk parquet ingest that is atomic per batch and
resumable (:func:`ingest_parquet`), TTL, compaction and stats.
"""

from feature_service.ingest import DEFAULT_INGEST_BATCH_ROWS, infer_group, ingest_parquet
from feature_service.store import DEFAULT_BLOCK_CACHE_BYTES, FeatureStore, entity_id_keys
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
    "DEFAULT_BLOCK_CACHE_BYTES",
    "DEFAULT_INGEST_BATCH_ROWS",
    "entity_id_keys",
    "ingest_parquet",
    "infer_group",
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
