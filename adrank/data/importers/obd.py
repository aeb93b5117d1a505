"""Open Bandit Dataset (ZOZOTOWN) logged bandit feedback -> canonical columns.

Source: ``{policy}/{campaign}/{campaign}.csv`` (policy ``bts`` or ``random``, campaign ``all``,
``men`` or ``women``), comma-separated with a header: an unnamed row-index column, ``timestamp``
(``2019-11-24 00:00:17.004101+00:00``), ``item_id``, ``position`` (1..3), ``click``,
``propensity_score``, ``user_feature_0..3`` (hashed strings) and ``user-item_affinity_0..N`` (one
per item of the campaign). ``item_context.csv`` files are item tables, not logs, and are skipped
when a directory is read.

Output: ``policy`` string (KEY; the directory two levels up when it is ``bts`` or ``random``,
else null), ``campaign`` string (SPARSE; the file's stem: item ids are per campaign), ``row_id``
int64 (KEY; the unnamed index), ``ts`` timestamp[s, UTC] (floored to the second), ``item_id`` and
``position`` int64 (SPARSE), ``label`` int8 (from ``click``), ``propensity_score`` float64 (DENSE;
the logging policy's probability, kept at full precision for off-policy estimators),
``user_feature_*`` strings (SPARSE) and ``user-item_affinity_*`` float32 (DENSE). Reading a
directory unions the affinity columns of all campaigns; a campaign lacking one has nulls there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from adrank.data.importers._delimited import (
    ColumnSpec,
    DelimitedLayout,
    finish_label,
    finish_required_ts_seconds,
    read_delimited,
)
from adrank.data.importers._plan import ImportPlan, format_hint
from adrank.data.importers._rows import BadRowLog
from adrank.data.importers._text import read_head_lines
from adrank.data.importers.types import SourceFormat
from adrank.errors import InputError
from adrank.types import ColumnRole

__all__ = ["plan_obd", "OBD_POLICIES"]

OBD_POLICIES = frozenset({"bts", "random"})
"""Logging-policy directory names of the published dataset."""

_HINT = (
    "Open Bandit CSVs have a header: ,timestamp,item_id,position,click,propensity_score,"
    "user_feature_0..,user-item_affinity_0..; pass a {policy}/{campaign}/{campaign}.csv file "
    "or a directory of them"
)
_INDEX = "(unnamed index)"
_REQUIRED = ("timestamp", "item_id", "position", "click", "propensity_score")
_USER_FEATURE = re.compile(r"user_feature_([0-9]+)")
_AFFINITY = re.compile(r"user-item_affinity_([0-9]+)")
_DATA_FILE = re.compile(r".+\.csv(\.gz)?")
_TS = pa.timestamp("s", tz="UTC")

_FIXED_SPECS = {
    _INDEX: ColumnSpec(
        _INDEX, "row_id", pa.int64(), pa.int64(), ColumnRole.KEY, "an integer or nothing"
    ),
    "timestamp": ColumnSpec(
        "timestamp",
        "ts",
        pa.timestamp("us", tz="UTC"),
        _TS,
        ColumnRole.TIMESTAMP,
        "a time with a zone offset, e.g. 2019-11-24 00:00:17.004101+00:00",
        finish_required_ts_seconds,
    ),
    "item_id": ColumnSpec(
        "item_id", "item_id", pa.int64(), pa.int64(), ColumnRole.SPARSE, "an integer or nothing"
    ),
    "position": ColumnSpec(
        "position", "position", pa.int64(), pa.int64(), ColumnRole.SPARSE, "an integer or nothing"
    ),
    "click": ColumnSpec(
        "click", "label", pa.int64(), pa.int8(), ColumnRole.LABEL, "0 or 1", finish_label
    ),
    "propensity_score": ColumnSpec(
        "propensity_score",
        "propensity_score",
        pa.float64(),
        pa.float64(),
        ColumnRole.DENSE,
        "a number or nothing",
    ),
}
_CONSTANTS = (("policy", ColumnRole.KEY), ("campaign", ColumnRole.SPARSE))


def _spec(name: str) -> ColumnSpec | None:
    if name in _FIXED_SPECS:
        return _FIXED_SPECS[name]
    if _USER_FEATURE.fullmatch(name):
        return ColumnSpec(name, name, pa.string(), pa.string(), ColumnRole.SPARSE, "UTF-8 text")
    if _AFFINITY.fullmatch(name):
        return ColumnSpec(
            name, name, pa.float32(), pa.float32(), ColumnRole.DENSE, "a number or nothing"
        )
    return None


def _campaign(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return name.removesuffix(".csv")


def _policy(path: Path) -> str | None:
    name = path.parent.parent.name
    return name if name in OBD_POLICIES else None


@dataclass(frozen=True, slots=True)
class _ObdPart:
    path: Path
    layout: DelimitedLayout
    policy: str | None
    campaign: str

    def tables(
        self, bad_rows: BadRowLog, progress: Callable[[int], None] | None
    ) -> Iterator[pa.Table]:
        policy = pa.array([self.policy], pa.string())
        campaign = pa.array([self.campaign], pa.string())
        for table in read_delimited(self.path, self.layout, bad_rows, progress):
            zeros = np.zeros(table.num_rows, dtype=np.int32)
            yield table.append_column("policy", policy.take(zeros)).append_column(
                "campaign", campaign.take(zeros)
            )


def _data_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and _DATA_FILE.fullmatch(p.name) and not p.name.startswith("item_context")
    )
    if not files:
        raise InputError(
            "no Open Bandit log files (*.csv, *.csv.gz other than item_context) in the directory",
            source=str(path),
            hint=_HINT,
        )
    return files


def _layout(path: Path) -> DelimitedLayout:
    head = read_head_lines(path)
    if not head:
        raise InputError("file is empty: no header, no data rows", source=str(path), hint=_HINT)
    names = head[0].decode("utf-8", errors="replace").split(",")
    if names and names[0] == "":
        names[0] = _INDEX
    specs = [_spec(n) for n in names]
    problems = []
    unknown = [n for n, s in zip(names, specs, strict=True) if s is None]
    if unknown:
        problems.append(f"unknown columns {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        problems.append(f"missing columns {missing}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"repeated columns {dupes}")
    if problems:
        default = _HINT
        if names[:2] == [_INDEX, "item_id"]:
            default = (
                "this is an item_context.csv (item features), not a log: pass the campaign's log"
            )
        raise InputError(
            "the header is not an Open Bandit log header: " + "; ".join(problems),
            source=f"{path}:1",
            hint=format_hint(SourceFormat.OBD, head[0], default),
        )
    return DelimitedLayout(
        ",", tuple(s for s in specs if s is not None), 1, f"the {len(names)} columns of the header"
    )


def _numbered(pattern: re.Pattern[str], names: set[str]) -> list[str]:
    matched = [(int(m.group(1)), n) for n in names if (m := pattern.fullmatch(n))]
    return [n for _k, n in sorted(matched)]


def plan_obd(path: Path) -> ImportPlan:
    """Check the headers of one Open Bandit CSV or of every one under a directory; plan the import.

    Args:
        path: A ``{campaign}.csv[.gz]`` file or a directory searched recursively.

    Returns:
        The plan; its schema is the union of the files' columns.

    Raises:
        InputError: No log files found, or any file's header is not an OBD header (all such
            files are listed in one error).
    """
    parts: list[_ObdPart] = []
    problems: list[InputError] = []
    for file in _data_files(path):
        try:
            layout = _layout(file)
        except InputError as exc:
            problems.append(exc)
            continue
        parts.append(_ObdPart(file, layout, _policy(file), _campaign(file)))
    if problems:
        raise InputError.from_problems(problems)
    source_names = {c.source_name for part in parts for c in part.layout.columns}
    ordered = [_FIXED_SPECS[n] for n in (_INDEX, *_REQUIRED) if n in source_names]
    ordered += [s for n in _numbered(_USER_FEATURE, source_names) if (s := _spec(n)) is not None]
    ordered += [s for n in _numbered(_AFFINITY, source_names) if (s := _spec(n)) is not None]
    fields = [(name, pa.string()) for name, _role in _CONSTANTS]
    fields += [(c.name, c.out_type) for c in ordered]
    roles = dict(_CONSTANTS) | {c.name: c.role for c in ordered}
    return ImportPlan(schema=pa.schema(fields), roles=roles, parts=tuple(parts), hint=_HINT)
