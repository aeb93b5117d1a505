"""Precision per table: from measured errors when given, otherwise a configured default.

Measured errors come from a precision-errors file (:func:`adrank.planfile.read_precision_errors`,
written by embed_store's calibration): name (table or feature) -> precision -> relative error.
The chosen precision is the one with the fewest bits whose measured error is at most
``max_precision_error``; fp32 is exact by definition. Training plans use fp32 or fp16 only (the
optimizer updates need them). A table's entry wins over its features'; for a table without one,
its features' entries are combined by taking, per precision, the largest error (every feature must
stay within the threshold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adrank.errors import InputError
from adrank.types import PlanMode, Precision
from sharding_planner.types import PlannerConfig, PrecisionDecision

__all__ = ["allowed_precisions", "choose_precision", "validate_precision_config"]


def allowed_precisions(mode: PlanMode, dim: int) -> tuple[Precision, ...]:
    """Precisions a table of ``dim`` may use in ``mode``, fewest bits first."""
    if mode is PlanMode.TRAINING:
        return (Precision.FP16, Precision.FP32)
    candidates = (Precision.INT4, Precision.INT8, Precision.FP16, Precision.FP32)
    return tuple(p for p in candidates if p.supports_dim(dim))


def validate_precision_config(config: PlannerConfig) -> None:
    """Reject a default precision the mode cannot use.

    Raises:
        InputError: An int default precision in training mode, or a negative error threshold.
    """
    problems = []
    if config.mode is PlanMode.TRAINING and config.effective_default_precision.is_quantized:
        problems.append(
            InputError(
                f"training plans store fp32 or fp16 tables, found default precision "
                f"{config.effective_default_precision.value}",
                source="--default-precision",
                hint="use fp16 or fp32 with --mode training",
            )
        )
    if not config.max_precision_error >= 0:
        problems.append(
            InputError(
                f"the error threshold must be >= 0, found {config.max_precision_error}",
                source="--max-precision-error",
            )
        )
    if problems:
        raise InputError.from_problems(problems)


def choose_precision(
    table: str,
    features: Sequence[str],
    dim: int,
    errors: Mapping[str, Mapping[Precision, float]] | None,
    config: PlannerConfig,
) -> PrecisionDecision:
    """Choose one table's precision.

    Args:
        table: Table name (looked up first in ``errors``).
        features: Its features (looked up when the table has no entry).
        dim: Its dim (int8 needs a multiple of 2, int4 of 4).
        errors: Measured errors, or None.
        config: Mode, default precision and threshold.

    Returns:
        The decision with its reason.
    """
    allowed = allowed_precisions(config.mode, dim)
    measured: dict[Precision, float] | None = None
    basis = ""
    if errors and table in errors:
        measured, basis = dict(errors[table]), f"measured errors of table {table!r}"
    elif errors and features and all(f in errors for f in features):
        measured = {}
        for f in features:
            for p, e in errors[f].items():
                measured[p] = max(measured.get(p, 0.0), e)
        # A precision measured for some features only is not known for the table.
        measured = {p: e for p, e in measured.items() if all(p in errors[f] for f in features)}
        basis = "measured errors of " + (
            f"feature {features[0]!r}"
            if len(features) == 1
            else f"its {len(features)} features (worst per precision)"
        )
    if measured is None:
        default = config.effective_default_precision
        if default not in allowed:  # e.g. int4 at dim 6: the next wider precision
            wider = min((p for p in allowed if p.bits > default.bits), key=lambda p: p.bits)
            return PrecisionDecision(
                table,
                wider,
                None,
                f"{wider.value}: the default {default.value} needs a dim that is a multiple of "
                f"{default.dim_multiple}, found {dim}",
            )
        return PrecisionDecision(
            table, default, None, f"default {default.value} (no measured errors for it)"
        )
    limit = config.max_precision_error
    for p in allowed:
        err = 0.0 if p is Precision.FP32 else measured.get(p)
        if err is not None and err <= limit:
            rejected = [
                f"{q.value} {measured[q]:.2g}" for q in allowed if q.bits < p.bits and q in measured
            ]
            why = f"{p.value}: fewest bits with error <= {limit:g} ({basis}"
            why += f"; rejected {', '.join(rejected)})" if rejected else ")"
            return PrecisionDecision(table, p, err, why)
    raise AssertionError("fp32 always qualifies")  # pragma: no cover
