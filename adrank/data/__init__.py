"""Click-log data: the canonical schema, the synthetic generator and readers of public samples.

``adrank synth`` writes synthetic request-structured logs and feature snapshots; ``adrank import``
turns real public samples (Criteo, Avazu, iPinYou, Open Bandit) into the canonical schema. Only
numpy and pyarrow (and adrank's own hashing) are used here.
"""

from adrank.data.schema import ROLES_METADATA_KEY, declared_roles, infer_role, read_roles, with_roles

__all__ = ["ROLES_METADATA_KEY", "declared_roles", "infer_role", "read_roles", "with_roles"]
