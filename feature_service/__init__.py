"""Centralised feature store: RocksDB-backed versioned features, gRPC GetFeatures, and
point-in-time joins to training data. Never imports torch.

Filled in by the feature_service issue; the package exists so the dependency direction is fixed early.
"""

__all__: list[str] = []
