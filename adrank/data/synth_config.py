"""Configuration of the synthetic log generator: sizes, vocabularies, Zipf exponents, churn.

:class:`SynthConfig` holds what ``adrank synth`` flags set; :data:`FEATURE_SPECS` holds the fixed
per-feature vocabulary sizes and Zipf exponents (recorded in ``manifest.json``). Validation is a
separate function (:func:`validate_synth_config`) called at the boundary, so constructing a config
stays cheap; it reports every problem at once and names the flag that sets each field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from adrank.errors import InputError

__all__ = [
    "ADS_PER_CAMPAIGN",
    "CAMPAIGNS_PER_ADVERTISER",
    "DEFAULT_START_TS_S",
    "FEATURE_SPECS",
    "SECONDS_PER_DAY",
    "FeatureSpec",
    "SynthConfig",
    "candidate_range",
    "feature_spec",
    "format_start",
    "parse_start",
    "validate_synth_config",
    "zipf_exponent",
]

DEFAULT_START_TS_S = 1_767_571_200
"""2026-01-05T00:00:00Z, the default first second of the logs (a Monday)."""

SECONDS_PER_DAY = 86_400
_MAX_VOCAB = 1 << 31  # keeps a * rank (affine rank permutation) inside int64
_MAX_DAYS = 3650  # (ad index << 12 | day) hash keys stay inside int64


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """Vocabulary and Zipf popularity of one generated feature.

    Args:
        name: Column name.
        vocab: Number of distinct values live at any time (``None``: set by a flag).
        zipf_exponent: ``s`` in ``P(rank r) ~ (r + 1) ** -s``; ``None`` when the popularity is
            derived from another feature (e.g. campaign from ad).
        note: How values arise.
    """

    name: str
    vocab: int | None
    zipf_exponent: float | None
    note: str


FEATURE_SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("ad_id", None, 0.95, "vocab --ad-vocab; ids churn --ad-churn per day"),
    FeatureSpec("user_id", None, 0.85, "vocab --user-vocab; ids churn --user-churn per day"),
    FeatureSpec("device", 5, 1.6, "per request: the user's primary device 85% of the time"),
    FeatureSpec("geo", 200, 1.2, "per user"),
    FeatureSpec("creative_type", 10, 1.4, "per ad"),
    FeatureSpec("category", None, 1.0, "per ad: rank slot mod --categories; user preferences Zipf"),
    FeatureSpec("ad_in_category", None, 1.1, "rank within a category (history and retrieval)"),
    FeatureSpec("campaign_id", None, None, "ad index // 4, hashed"),
    FeatureSpec("advertiser_id", None, None, "campaign index // 8, hashed"),
    FeatureSpec("segment", 20, 1.1, "per user (snapshots)"),
    FeatureSpec("age_bucket", 7, 0.5, "per user (snapshots)"),
    FeatureSpec("gender", 3, 0.3, "per user (snapshots)"),
)
"""Fixed per-feature vocabularies and Zipf exponents (distinct on purpose: a planner must tell them
apart). ``hour`` (24) and ``position`` follow from time and candidate order."""

ADS_PER_CAMPAIGN = 4
CAMPAIGNS_PER_ADVERTISER = 8


def feature_spec(name: str) -> FeatureSpec:
    """The :data:`FEATURE_SPECS` entry called ``name``."""
    for spec in FEATURE_SPECS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def zipf_exponent(name: str) -> float:
    """The Zipf exponent of feature ``name`` (a KeyError/ValueError is a programming error)."""
    s = feature_spec(name).zipf_exponent
    if s is None:
        raise ValueError(f"feature {name} has no Zipf exponent of its own")
    return s


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """What to generate. Every field has a CLI flag (named in validation errors).

    Args:
        num_rows: Impression rows to write, exactly (``--rows``); the last request may get fewer
            candidates so the total matches.
        seed: Generation seed (``--seed``); same seed and config, same files.
        num_days: Days the logs span (``--days``).
        start_ts_s: First second of the logs, Unix seconds UTC (``--start``).
        candidates_mean: Mean ad candidates per request (``--candidates``); counts are uniform on
            ``candidate_range(candidates_mean)``.
        seq_len: Longest behaviour sequence kept per request (``--seq-len``).
        ad_vocab: Ads live at any time (``--ad-vocab``).
        user_vocab: Users live at any time (``--user-vocab``).
        ad_churn_per_day: Share of the live ads replaced by new ones each day (``--ad-churn``).
        user_churn_per_day: Share of the live users replaced each day (``--user-churn``).
        num_categories: Ad categories (``--categories``).
        row_group_rows: Target impression rows per parquet row group (``--row-group-rows``); it
            bounds memory and does not change the content.
    """

    num_rows: int = 100_000
    seed: int = 0
    num_days: int = 14
    start_ts_s: int = DEFAULT_START_TS_S
    candidates_mean: int = 20
    seq_len: int = 100
    ad_vocab: int = 10_000_000
    user_vocab: int = 2_000_000
    ad_churn_per_day: float = 0.03
    user_churn_per_day: float = 0.01
    num_categories: int = 1000
    row_group_rows: int = 65_536

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON object (field names as keys, plus the ISO start time)."""
        body = dataclasses.asdict(self)
        body["start"] = format_start(self.start_ts_s)
        return body


_FLAGS = {
    "num_rows": "--rows",
    "seed": "--seed",
    "num_days": "--days",
    "start_ts_s": "--start",
    "candidates_mean": "--candidates",
    "seq_len": "--seq-len",
    "ad_vocab": "--ad-vocab",
    "user_vocab": "--user-vocab",
    "ad_churn_per_day": "--ad-churn",
    "user_churn_per_day": "--user-churn",
    "num_categories": "--categories",
    "row_group_rows": "--row-group-rows",
}


def candidate_range(candidates_mean: int) -> tuple[int, int]:
    """Inclusive ``(low, high)`` candidates per request: uniform with mean ``candidates_mean``.

    ``low = max(1, mean // 4)`` and ``high = 2 * mean - low``, e.g. 5..35 for the default 20.
    """
    low = max(1, candidates_mean // 4)
    return low, 2 * candidates_mean - low


def parse_start(text: str) -> int:
    """Parse an ISO-8601 time (``2026-01-05``, ``2026-01-05T06:00:00Z``) to Unix seconds.

    A time without a zone is UTC.

    Raises:
        InputError: Not an ISO-8601 date or time.
    """
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"expected an ISO-8601 date or time, found {text!r}",
            source="--start",
            hint="e.g. --start 2026-01-05 or --start 2026-01-05T00:00:00Z",
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def format_start(ts_s: int) -> str:
    """Unix seconds as ISO-8601 UTC, e.g. ``2026-01-05T00:00:00Z``."""
    return dt.datetime.fromtimestamp(ts_s, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(field: str, message: str, hint: str) -> InputError:
    return InputError(message, source=f"{_FLAGS[field]} (SynthConfig.{field})", hint=hint)


def validate_synth_config(config: SynthConfig) -> None:
    """Check every field; report all problems in one error.

    Raises:
        InputError: Some field is out of range; ``source`` names the flag (``--rows`` etc.).
    """
    problems: list[InputError] = []

    def need_int(field: str, low: int, high: int, what: str) -> bool:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(
                _problem(field, f"expected {what} in [{low:,}, {high:,}], found {value!r}",
                         f"pass {_FLAGS[field]} with a value in that range")
            )
            return False
        return True

    need_int("num_rows", 1, 10**11, "a positive number of impression rows")
    need_int("seed", 0, 2**63 - 1, "a non-negative integer seed")
    need_int("num_days", 1, _MAX_DAYS, "a positive number of days")
    need_int("start_ts_s", 0, 2**40, "a start time after 1970")
    ok_mean = need_int("candidates_mean", 1, 1000, "a mean number of candidates per request")
    need_int("seq_len", 1, 10_000, "a behaviour-sequence length")
    ok_ads = need_int("ad_vocab", 1, _MAX_VOCAB, "an ad vocabulary size")
    need_int("user_vocab", 1, _MAX_VOCAB, "a user vocabulary size")
    ok_cats = need_int("num_categories", 1, 1_000_000, "a number of ad categories")
    need_int("row_group_rows", 1024, 1 << 24, "a row-group size in rows")
    for field in ("ad_churn_per_day", "user_churn_per_day"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            problems.append(
                _problem(field, f"expected a daily churn share in [0, 1], found {value!r}",
                         f"pass {_FLAGS[field]} as a fraction, e.g. 0.03 for 3% per day")
            )
    if ok_ads and ok_mean:
        _low, high = candidate_range(config.candidates_mean)
        # Candidates of one request are distinct ads; a vocabulary this much larger than a request
        # keeps the de-duplication of Zipf draws quick.
        if config.ad_vocab < 4 * high:
            problems.append(
                _problem("ad_vocab", f"expected at least {4 * high:,} ads (4x the largest request "
                         f"of {high} candidates), found {config.ad_vocab:,}",
                         "raise --ad-vocab or lower --candidates")
            )
    if ok_ads and ok_cats and config.num_categories > config.ad_vocab:
        problems.append(
            _problem("num_categories", f"expected at most --ad-vocab ({config.ad_vocab:,}) "
                     f"categories, found {config.num_categories:,}",
                     "lower --categories or raise --ad-vocab")
        )
    if problems:
        raise InputError.from_problems(problems)
