"""Click-log data: the canonical schema, the synthetic generator and readers of public samples.

``adrank synth`` writes synthetic request-structured logs and feature snapshots; ``adrank import``
turns real public samples (Criteo, Avazu, iPinYou, Open Bandit) into the canonical schema. Only
numpy and pyarrow (and adrank's own hashing) are used here.
"""

from adrank.data.importers import IMPORT_METADATA_KEY, ImportSummary, SourceFormat, import_log
from adrank.data.schema import (
    ROLES_METADATA_KEY,
    declared_roles,
    infer_role,
    read_roles,
    with_roles,
)
from adrank.data.synth import SynthConfig, SynthSummary, synthesize

__all__ = [
    "IMPORT_METADATA_KEY",
    "ImportSummary",
    "ROLES_METADATA_KEY",
    "SourceFormat",
    "SynthConfig",
    "SynthSummary",
    "declared_roles",
    "import_log",
    "infer_role",
    "read_roles",
    "synthesize",
    "with_roles",
]
