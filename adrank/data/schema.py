"""Canonical log schema: column roles stored in parquet schema metadata.

adrank's tools agree on what each column of a log is (sparse feature, dense feature, label,
timestamp, key) through the schema metadata key ``adrank.roles``, a JSON object
``{column: role}``. Writers (``adrank synth``, ``adrank import``) set it; readers use it when
present and otherwise infer roles from Arrow types and a few conventional names.

Example::

    >>> import pyarrow as pa
    >>> s = with_roles(pa.schema([("ts", pa.int64()), ("ad_id", pa.int64())]),
    ...                {"ts": ColumnRole.TIMESTAMP, "ad_id": ColumnRole.SPARSE})
    >>> read_roles(s)["ad_id"]
    <ColumnRole.SPARSE: 'sparse'>
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow as pa

from adrank.types import ColumnRole

__all__ = ["ROLES_METADATA_KEY", "with_roles", "read_roles", "infer_role", "declared_roles"]

ROLES_METADATA_KEY = b"adrank.roles"

_LABEL_NAMES = frozenset({"label", "click", "clicked", "is_click"})
_TIMESTAMP_NAMES = frozenset({"ts", "timestamp", "event_ts", "event_time", "time", "hour_ts"})
_KEY_NAMES = frozenset({"request_id", "req_id", "impression_id", "row_id", "created_ts"})


def with_roles(schema: pa.Schema, roles: Mapping[str, ColumnRole]) -> pa.Schema:
    """Return ``schema`` with ``roles`` recorded in its metadata (other metadata kept).

    Raises:
        ValueError: A role names a column the schema lacks (a programming error in a writer).
    """
    missing = sorted(set(roles) - set(schema.names))
    if missing:
        raise ValueError(f"roles name columns not in the schema: {missing}")
    meta = dict(schema.metadata or {})
    meta[ROLES_METADATA_KEY] = json.dumps({k: v.value for k, v in roles.items()}).encode()
    return schema.with_metadata(meta)


def declared_roles(schema: pa.Schema) -> dict[str, ColumnRole] | None:
    """Roles recorded in the schema metadata, or None when the file has none."""
    raw = (schema.metadata or {}).get(ROLES_METADATA_KEY)
    if raw is None:
        return None
    try:
        decoded = json.loads(raw)
        return {name: ColumnRole(role) for name, role in decoded.items() if name in schema.names}
    except (ValueError, TypeError, AttributeError):
        # Unreadable metadata is treated as absent: roles are then inferred from types.
        return None


def infer_role(field: pa.Field) -> ColumnRole | None:
    """Guess a column's role from its name and Arrow type; None if it is not usable.

    Integers and strings are sparse ids, lists of them multi-hot sparse, floats dense; conventional
    names (``label``, ``click``, ``ts``, ``timestamp``, ``request_id``) take precedence.
    """
    name, t = field.name.lower(), field.type
    if name in _LABEL_NAMES:
        return ColumnRole.LABEL
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or name in _TIMESTAMP_NAMES:
        return ColumnRole.TIMESTAMP
    if name in _KEY_NAMES:
        return ColumnRole.KEY
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        vt = t.value_type
        if pa.types.is_integer(vt) or pa.types.is_string(vt) or pa.types.is_large_string(vt):
            return ColumnRole.SPARSE
        if pa.types.is_floating(vt):
            return ColumnRole.DENSE
        return None
    if pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return ColumnRole.SPARSE
    if pa.types.is_dictionary(t):
        return ColumnRole.SPARSE
    if pa.types.is_floating(t):
        return ColumnRole.DENSE
    if pa.types.is_boolean(t):
        return ColumnRole.DENSE
    return None


def read_roles(schema: pa.Schema) -> dict[str, ColumnRole]:
    """Every usable column's role: declared ones from metadata, the rest inferred from types."""
    declared = declared_roles(schema) or {}
    roles: dict[str, ColumnRole] = {}
    for field in schema:
        role = declared.get(field.name) or infer_role(field)
        if role is not None:
            roles[field.name] = role
    return roles
