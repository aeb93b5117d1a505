"""adrank: embedding sharding and feature store for adaptive ads ranking.

This package holds the shared contracts (types, errors, file formats, id hashing, the canonical
log schema) and the one CLI (:mod:`adrank.cli`). Library code never imports ``adrank.cli``.
"""

from adrank.errors import (
    AdrankError,
    InputError,
    NotFoundError,
    PlanError,
    PlanErrorKind,
    StoreError,
)
from adrank.types import (
    ColumnRole,
    DevicePlan,
    DeviceSpec,
    FeatureSlot,
    OptimizerStateKind,
    PlanMode,
    PoolingType,
    Precision,
    PruningAction,
    PruningPolicy,
    ShardingType,
    ShardPlan,
    ShardSpec,
    TablePlan,
    Topology,
)

__version__ = "0.1.0"

__all__ = [
    "AdrankError",
    "ColumnRole",
    "DevicePlan",
    "DeviceSpec",
    "FeatureSlot",
    "OptimizerStateKind",
    "PlanMode",
    "PoolingType",
    "Precision",
    "PruningAction",
    "PruningPolicy",
    "ShardPlan",
    "ShardSpec",
    "ShardingType",
    "TablePlan",
    "Topology",
    "InputError",
    "NotFoundError",
    "PlanError",
    "PlanErrorKind",
    "StoreError",
    "__version__",
]
