"""Feature group schemas: validation, the registry's compatibility rules, JSON form, Arrow mapping.

The store keeps each group's definition in its ``meta`` column family as a versioned JSON document
(:func:`group_to_json`). Registering a group again goes through :func:`merge_group`:

* the same features (any order) with the same dtype and shape: nothing changes (a new TTL is taken);
* new features, when allowed: they are appended under the next ``schema_version``, and values
  written before read them as null;
* anything else (a changed dtype or shape, a removed feature, another entity type or id kind) is an
  InputError naming every offending feature, because stored values could no longer be decoded or
  would silently change meaning.

Pure Python: nothing here touches RocksDB.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from adrank.errors import InputError
from feature_service.types import Dtype, EntityIdKind, FeatureGroup, FeatureSpec, Shape

__all__ = [
    "GROUP_DOCUMENT_KIND",
    "GROUP_FORMAT_VERSION",
    "RESERVED_NAMES",
    "validate_group",
    "merge_group",
    "group_to_json",
    "group_from_json",
    "spec_from_arrow_field",
    "entity_kind_from_arrow",
]

GROUP_DOCUMENT_KIND = "adrank.feature_group"
GROUP_FORMAT_VERSION = 1

RESERVED_NAMES = frozenset({"entity_key", "found", "event_ts", "created_ts"})
"""Column names of read results (:meth:`FeatureFrame.to_arrow`); no feature may take them."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_MAX_VECTOR_DIM = 1 << 20


def _name_problem(what: str, name: str) -> str | None:
    if not isinstance(name, str) or not _NAME.match(name):
        return (
            f"{what} {name!r} is not a valid name (expected a letter or _, then up to 127 letters, "
            "digits, _, . or -)"
        )
    return None


def validate_group(group: FeatureGroup) -> None:
    """Check a group declaration before it is stored.

    Raises:
        InputError: Every problem found (bad names, duplicate or reserved feature names, bad dims,
            unsupported dtype/shape combinations, a non-positive TTL), each naming its feature.
    """
    problems: list[InputError] = []
    src = f"group {group.name!r}"
    for what, name in (("group name", group.name), ("entity type", group.entity_type)):
        p = _name_problem(what, name)
        if p:
            problems.append(InputError(p, source=src))
    if not group.features:
        problems.append(InputError("a feature group needs at least one feature", source=src))
    if group.ttl_s is not None and (not isinstance(group.ttl_s, int) or group.ttl_s <= 0):
        problems.append(
            InputError(
                f"ttl_s must be a positive integer or None, found {group.ttl_s!r}", source=src
            )
        )
    seen: set[str] = set()
    for spec in group.features:
        fsrc = f"{group.name}.{spec.name}"
        p = _name_problem("feature name", spec.name)
        if p:
            problems.append(InputError(p, source=fsrc))
        if spec.name in RESERVED_NAMES:
            problems.append(
                InputError(
                    f"feature name {spec.name!r} is reserved for read results "
                    f"({', '.join(sorted(RESERVED_NAMES))})",
                    source=fsrc,
                    hint="rename the column, or pass it as the entity/timestamp/created column",
                )
            )
        if spec.name in seen:
            problems.append(InputError(f"feature {spec.name!r} is declared twice", source=fsrc))
        seen.add(spec.name)
        if spec.shape is Shape.VECTOR and not 0 < spec.dim <= _MAX_VECTOR_DIM:
            problems.append(
                InputError(
                    f"vector feature {spec.name!r} needs 0 < dim <= {_MAX_VECTOR_DIM}, found "
                    f"{spec.dim}",
                    source=fsrc,
                )
            )
        if spec.shape is not Shape.VECTOR and spec.dim != 0:
            problems.append(
                InputError(
                    f"feature {spec.name!r} is {spec.shape.value} but has dim={spec.dim}",
                    source=fsrc,
                )
            )
        if spec.dtype is Dtype.STRING and spec.shape is not Shape.SCALAR:
            problems.append(
                InputError(
                    f"feature {spec.name!r}: strings are supported only as scalars, found "
                    f"{spec.shape.value}",
                    source=fsrc,
                    hint="hash string ids to int64 keys (adrank.hashing.string_id_keys) for "
                    "list features",
                )
            )
        if not 1 <= spec.since_version <= group.schema_version:
            problems.append(
                InputError(
                    f"feature {spec.name!r} has since_version {spec.since_version} outside "
                    f"1..{group.schema_version}",
                    source=fsrc,
                )
            )
    if group.schema_version < 1 or group.schema_version > 0xFFFF:
        problems.append(
            InputError(
                f"schema_version must be in 1..65535, found {group.schema_version}", source=src
            )
        )
    if problems:
        raise InputError.from_problems(problems)


def merge_group(
    stored: FeatureGroup,
    incoming: FeatureGroup,
    *,
    allow_new_features: bool = False,
    source: str | None = None,
) -> tuple[FeatureGroup, bool]:
    """Apply the registry's compatibility rules to a re-registration.

    Args:
        stored: The group as stored.
        incoming: The declaration being registered (its ``since_version``/``schema_version`` are
            ignored).
        allow_new_features: Append features the stored group lacks instead of refusing them.
        source: Where ``incoming`` comes from (a file path): errors then name ``source:feature``.

    Returns:
        ``(group, changed)``: the group to store and whether it differs from ``stored``.

    Raises:
        InputError: Incompatible declaration; the message names every offending feature.
    """
    problems: list[InputError] = []
    src = source or f"group {stored.name!r}"

    def where(feature: str) -> str:
        return f"{source}:{feature}" if source else f"{stored.name}.{feature}"

    if incoming.entity_type != stored.entity_type:
        problems.append(
            InputError(
                f"group {stored.name!r} holds entity type {stored.entity_type!r}, not "
                f"{incoming.entity_type!r}",
                source=src,
                hint="use another group name for another entity type",
            )
        )
    if incoming.entity_id_kind is not stored.entity_id_kind:
        problems.append(
            InputError(
                f"group {stored.name!r} has {stored.entity_id_kind.value} entity ids, not "
                f"{incoming.entity_id_kind.value}",
                source=src,
                hint="cast the entity column to the stored id type",
            )
        )
    by_name = {f.name: f for f in incoming.features}
    for spec in stored.features:
        new = by_name.get(spec.name)
        if new is None:
            problems.append(
                InputError(
                    f"feature {spec.name!r} ({spec.describe()}) is stored in group "
                    f"{stored.name!r} but missing "
                    "from the new schema",
                    source=where(spec.name),
                    hint="features cannot be removed; add the column (nulls allowed) or use a "
                    "new group",
                )
            )
        elif (new.dtype, new.shape, new.dim) != (spec.dtype, spec.shape, spec.dim):
            problems.append(
                InputError(
                    f"feature {spec.name!r} is stored as {spec.describe()}, the new schema has "
                    f"{new.describe()}",
                    source=where(spec.name),
                    hint="cast the column to the stored type, or use a new feature name",
                )
            )
    stored_names = set(stored.feature_names)
    added = [f for f in incoming.features if f.name not in stored_names]
    if added and not allow_new_features:
        names = [f.name for f in added]
        problems.append(
            InputError(
                f"features {names} are not in group {stored.name!r} "
                f"(it has: {', '.join(stored.feature_names)})",
                source=", ".join(where(n) for n in names),
                hint="allow new features (--add-features / allow_new_features=True) or drop "
                "the columns",
            )
        )
    if problems:
        raise InputError.from_problems(problems)
    version = stored.schema_version + (1 if added else 0)
    features = stored.features + tuple(
        FeatureSpec(f.name, f.dtype, f.shape, f.dim, since_version=version) for f in added
    )
    merged = FeatureGroup(
        stored.name, stored.entity_type, stored.entity_id_kind, features, incoming.ttl_s, version
    )
    validate_group(merged)
    return merged, merged != stored


def group_to_json(group: FeatureGroup) -> dict[str, Any]:
    """The versioned JSON document stored for ``group``."""
    return {
        "kind": GROUP_DOCUMENT_KIND,
        "format_version": GROUP_FORMAT_VERSION,
        "name": group.name,
        "entity_type": group.entity_type,
        "entity_id_kind": group.entity_id_kind.value,
        "ttl_s": group.ttl_s,
        "schema_version": group.schema_version,
        "features": [
            {
                "name": f.name,
                "dtype": f.dtype.value,
                "shape": f.shape.value,
                "dim": f.dim,
                "since_version": f.since_version,
            }
            for f in group.features
        ],
    }


def group_from_json(doc: Mapping[str, Any]) -> FeatureGroup:
    """Parse a stored group document.

    Raises:
        ValueError: Not a group document of a supported version, or malformed (the store reports it
            as a corrupt store).
    """
    if doc.get("kind") != GROUP_DOCUMENT_KIND or doc.get("format_version") != GROUP_FORMAT_VERSION:
        raise ValueError(
            f"expected a {GROUP_DOCUMENT_KIND} document of format_version {GROUP_FORMAT_VERSION}, "
            f"found kind {doc.get('kind')!r} version {doc.get('format_version')!r}"
        )
    try:
        features = tuple(
            FeatureSpec(
                f["name"],
                Dtype(f["dtype"]),
                Shape(f["shape"]),
                int(f["dim"]),
                int(f["since_version"]),
            )
            for f in doc["features"]
        )
        ttl = doc["ttl_s"]
        group = FeatureGroup(
            doc["name"],
            doc["entity_type"],
            EntityIdKind(doc["entity_id_kind"]),
            features,
            None if ttl is None else int(ttl),
            int(doc["schema_version"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed group document: {exc!r}") from exc
    try:
        validate_group(group)
    except InputError as exc:
        raise ValueError(f"invalid stored group: {exc}") from exc
    return group


def _numeric_dtype(t: pa.DataType) -> Dtype | None:
    if pa.types.is_boolean(t):
        return Dtype.BOOL
    if pa.types.is_integer(t) or pa.types.is_timestamp(t):
        return Dtype.INT64
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return Dtype.FLOAT32
    if pa.types.is_float64(t):
        return Dtype.FLOAT64
    return None


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def spec_from_arrow_field(field: pa.Field, source: str) -> FeatureSpec:
    """Infer a feature's schema from a parquet/Arrow column.

    Integers (and timestamps, as int64 microseconds) map to int64, float16/32 to float32, float64
    to float64, bool to bool, strings to string; ``fixed_size_list<T>[d]`` to a VECTOR of ``d``,
    ``list<T>``/``large_list<T>`` to a LIST, for numeric or bool T.

    Args:
        field: The column.
        source: File path, for the error.

    Raises:
        InputError: An unsupported type, naming the file and column.
    """
    t = field.type
    dtype = _numeric_dtype(t)
    if dtype is not None:
        return FeatureSpec(field.name, dtype)
    if _is_string(t):
        return FeatureSpec(field.name, Dtype.STRING)
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        vt = t.value_type
        inner = _numeric_dtype(vt)
        if inner is not None and not pa.types.is_timestamp(vt):
            if pa.types.is_fixed_size_list(t):
                return FeatureSpec(field.name, inner, Shape.VECTOR, t.list_size)
            return FeatureSpec(field.name, inner, Shape.LIST)
        hint = (
            "hash string ids to int64 keys first (adrank.hashing.string_id_keys)"
            if _is_string(vt)
            else "cast the elements to int64, float32, float64 or bool"
        )
        raise InputError(
            f"list column {field.name!r} has elements of type {vt}; feature lists hold int64, "
            "float or bool",
            source=f"{source}:{field.name}",
            hint=hint,
        )
    raise InputError(
        f"column {field.name!r} has type {t}, which is not a feature type (int, float, bool, "
        "string, "
        "timestamp, or a list / fixed-size list of numbers)",
        source=f"{source}:{field.name}",
        hint="cast or drop the column before ingesting",
    )


def entity_kind_from_arrow(t: pa.DataType, column: str, source: str) -> EntityIdKind:
    """Entity id kind of an id column: integers are INT, strings STRING.

    Raises:
        InputError: Another type, naming the file and column.
    """
    if pa.types.is_integer(t):
        return EntityIdKind.INT
    if _is_string(t):
        return EntityIdKind.STRING
    raise InputError(
        f"entity column {column!r} has type {t}; entity ids must be integers or strings",
        source=f"{source}:{column}",
        hint="pass another --entity-column, or cast the ids",
    )
