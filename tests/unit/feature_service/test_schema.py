"""Group schemas: validation, the registry's compatibility rules, JSON form and Arrow mapping."""

import pyarrow as pa
import pytest

from adrank.errors import InputError
from feature_service.schema import (
    entity_kind_from_arrow,
    group_from_json,
    group_to_json,
    merge_group,
    spec_from_arrow_field,
    validate_group,
)
from feature_service.types import Dtype, EntityIdKind, FeatureGroup, FeatureSpec, Shape

CTR = FeatureSpec("ctr", Dtype.FLOAT32)
EMB = FeatureSpec("emb", Dtype.FLOAT32, Shape.VECTOR, dim=8)
HIST = FeatureSpec("hist", Dtype.INT64, Shape.LIST)


def ads(*features: FeatureSpec, ttl_s: int | None = None) -> FeatureGroup:
    return FeatureGroup("ads", "ad", EntityIdKind.INT, features, ttl_s)


def test_valid_group_passes() -> None:
    validate_group(ads(CTR, EMB, HIST, ttl_s=3600))


def test_validation_reports_every_problem_naming_features() -> None:
    bad = FeatureGroup(
        "bad name",
        "ad",
        EntityIdKind.INT,
        (
            CTR,
            CTR,
            FeatureSpec("found", Dtype.BOOL),
            FeatureSpec("v", Dtype.FLOAT32, Shape.VECTOR, 0),
            FeatureSpec("sl", Dtype.STRING, Shape.LIST),
        ),
        ttl_s=-5,
    )
    with pytest.raises(InputError) as ei:
        validate_group(bad)
    msg = str(ei.value)
    assert "6 problems" in msg
    for culprit in (
        "'bad name'",
        "'ctr' is declared twice",
        "'found' is reserved",
        "'v'",
        "'sl'",
        "ttl_s",
    ):
        assert culprit in msg


def test_reregistering_the_same_schema_changes_nothing() -> None:
    stored = ads(CTR, EMB)
    merged, changed = merge_group(stored, ads(EMB, CTR))  # order does not matter
    assert not changed
    assert merged == stored


def test_new_ttl_is_taken() -> None:
    merged, changed = merge_group(ads(CTR), ads(CTR, ttl_s=60))
    assert changed and merged.ttl_s == 60 and merged.schema_version == 1


def test_added_features_need_permission_and_get_a_new_schema_version() -> None:
    with pytest.raises(InputError, match="hist"):
        merge_group(ads(CTR), ads(CTR, HIST))
    merged, changed = merge_group(ads(CTR), ads(HIST, CTR), allow_new_features=True)
    assert changed
    assert merged.schema_version == 2
    assert merged.feature_names == ("ctr", "hist")  # appended, stored order kept
    assert merged.feature("hist").since_version == 2
    assert merged.features_at(1) == (CTR,)


def test_changed_or_removed_features_are_refused_by_name() -> None:
    stored = ads(CTR, EMB, HIST)
    incoming = ads(
        FeatureSpec("ctr", Dtype.FLOAT64), FeatureSpec("emb", Dtype.FLOAT32, Shape.VECTOR, dim=4)
    )
    with pytest.raises(InputError) as ei:
        merge_group(stored, incoming, allow_new_features=True, source="snap.parquet")
    msg = str(ei.value)
    assert "snap.parquet:ctr" in msg and "float32" in msg and "float64" in msg
    assert "snap.parquet:emb" in msg and "float32[8]" in msg and "float32[4]" in msg
    assert "snap.parquet:hist" in msg and "missing" in msg


def test_entity_type_and_id_kind_cannot_change() -> None:
    other = FeatureGroup("ads", "user", EntityIdKind.STRING, (CTR,))
    with pytest.raises(InputError) as ei:
        merge_group(ads(CTR), other)
    assert "'user'" in str(ei.value) and "string" in str(ei.value)


def test_json_round_trip_and_corruption() -> None:
    merged, _ = merge_group(
        ads(CTR, ttl_s=86_400), ads(CTR, EMB, HIST, ttl_s=86_400), allow_new_features=True
    )
    doc = group_to_json(merged)
    assert doc["kind"] == "adrank.feature_group" and doc["format_version"] == 1
    assert group_from_json(doc) == merged
    with pytest.raises(ValueError, match="format_version"):
        group_from_json({**doc, "format_version": 99})
    with pytest.raises(ValueError, match="malformed"):
        group_from_json({k: v for k, v in doc.items() if k != "features"})
    with pytest.raises(ValueError, match="invalid"):
        group_from_json({**doc, "ttl_s": -1})


@pytest.mark.parametrize(
    ("arrow_type", "expected"),
    [
        (pa.int8(), FeatureSpec("c", Dtype.INT64)),
        (pa.uint32(), FeatureSpec("c", Dtype.INT64)),
        (pa.timestamp("ms", tz="UTC"), FeatureSpec("c", Dtype.INT64)),
        (pa.float16(), FeatureSpec("c", Dtype.FLOAT32)),
        (pa.float32(), FeatureSpec("c", Dtype.FLOAT32)),
        (pa.float64(), FeatureSpec("c", Dtype.FLOAT64)),
        (pa.bool_(), FeatureSpec("c", Dtype.BOOL)),
        (pa.string(), FeatureSpec("c", Dtype.STRING)),
        (pa.large_string(), FeatureSpec("c", Dtype.STRING)),
        (pa.dictionary(pa.int32(), pa.string()), FeatureSpec("c", Dtype.STRING)),
        (pa.list_(pa.int32()), FeatureSpec("c", Dtype.INT64, Shape.LIST)),
        (pa.large_list(pa.float64()), FeatureSpec("c", Dtype.FLOAT64, Shape.LIST)),
        (pa.list_(pa.float32(), 16), FeatureSpec("c", Dtype.FLOAT32, Shape.VECTOR, 16)),
    ],
)
def test_arrow_types_map_to_feature_specs(arrow_type: pa.DataType, expected: FeatureSpec) -> None:
    assert spec_from_arrow_field(pa.field("c", arrow_type), "f.parquet") == expected


@pytest.mark.parametrize(
    ("arrow_type", "hint"),
    [
        (pa.list_(pa.string()), "string_id_keys"),
        (pa.struct([("x", pa.int64())]), "cast or drop"),
        (pa.decimal128(10, 2), "cast or drop"),
        (pa.list_(pa.list_(pa.int64())), "cast the elements"),
    ],
)
def test_unsupported_arrow_types_name_file_and_column(arrow_type: pa.DataType, hint: str) -> None:
    with pytest.raises(InputError) as ei:
        spec_from_arrow_field(pa.field("weird", arrow_type), "f.parquet")
    assert ei.value.source == "f.parquet:weird"
    assert hint in (ei.value.hint or "")


def test_entity_kinds() -> None:
    assert entity_kind_from_arrow(pa.int32(), "id", "f") is EntityIdKind.INT
    assert entity_kind_from_arrow(pa.string(), "id", "f") is EntityIdKind.STRING
    with pytest.raises(InputError) as ei:
        entity_kind_from_arrow(pa.float64(), "id", "f.parquet")
    assert ei.value.source == "f.parquet:id"
