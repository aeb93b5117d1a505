import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from adrank.errors import InputError
from adrank.timecols import epoch_seconds

T0 = dt.datetime(2026, 1, 5, 12, 0, 0, 900_000, tzinfo=dt.UTC)  # .9 s floors to the second
S0 = int(T0.timestamp())


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_timestamps_floor_to_seconds_in_every_unit(unit: str) -> None:
    arr = pa.array([T0, None, T0 - dt.timedelta(seconds=1)], pa.timestamp(unit, tz="UTC"))
    values, nulls = epoch_seconds(arr, source="f.parquet:ts")
    expected_first = S0 if unit != "s" else int(T0.replace(microsecond=0).timestamp())
    assert values.dtype == np.int64
    assert values[0] == expected_first and values[2] == expected_first - 1
    assert nulls is not None and nulls.tolist() == [False, True, False]
    values[1] = -1  # writeable: callers fill null rows with their own sentinel


def test_dates_and_integer_seconds() -> None:
    days, nulls = epoch_seconds(pa.array([dt.date(1970, 1, 2)], pa.date32()), source="x")
    assert days.tolist() == [86_400] and nulls is None
    ints, _ = epoch_seconds(pa.chunked_array([pa.array([5, 7], pa.int32())]), source="x")
    assert ints.tolist() == [5, 7]
    d64, _ = epoch_seconds(pa.array([dt.date(1970, 1, 2)], pa.date64()), source="x")
    assert d64.tolist() == [86_400]


def test_non_time_type_names_the_column() -> None:
    with pytest.raises(InputError) as info:
        epoch_seconds(pa.array([1.5]), source="logs.parquet:when")
    assert info.value.source == "logs.parquet:when"
    assert "double" in str(info.value)
