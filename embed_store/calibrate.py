"""Measure each table's error at each serving precision on sampled lookups: the planner's input.

For every table of a plan, :func:`calibrate` samples bags the way the table is looked up (bag
lengths ~ Poisson(pooling_factor) of its features, at least one id per bag, features mixed by
their traffic share), looks them up with FBGEMM's quantized inference kernel at fp32 and at each
precision, and records the relative error ``||pooled_p - pooled_fp32||_F / ||pooled_fp32||_F`` over
all sampled bags (MEAN tables divide each bag by its length first; sequence (NONE) tables compare
the per-id embeddings). :func:`write_calibration` writes the errors file that ``adrank plan
--precision-errors`` reads.

Rows are sampled uniformly from ``[0, num_rows)``: the checkpoint carries no access counts, and
uniform rows estimate the error of the average stored row, which is what the planner trades
against memory. (Traffic-weighted rows would need the logs; hot rows of a trained table tend to
have larger norms, which the row-wise quantizer handles with the same relative step.)

Only the sampled rows are read from the checkpoint: the unique sampled rows are gathered, the ids
re-indexed onto them, and small kernels built over those rows. Quantization is row-wise (one
scale and bias per row), so a row's stored values do not depend on the other rows and the pooled
results equal those of kernels over the whole table.

The kernel time per precision (median of a few forward calls over all sampled bags, in ms) is
recorded for information; it is measured on the small gathered tables, so it omits the cache
misses of a full-size table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from adrank.errors import InputError
from adrank.planfile import write_precision_errors
from adrank.types import PoolingType, Precision, ShardPlan, TablePlan
from embed_store.checkpoint import Checkpoint
from embed_store.quantize import TbeTable, build_tbe

__all__ = [
    "DEFAULT_CALIBRATION_PRECISIONS",
    "CalibrationResult",
    "calibrate",
    "write_calibration",
]

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION_PRECISIONS: tuple[Precision, ...] = (
    Precision.FP16,
    Precision.INT8,
    Precision.INT4,
)
"""Precisions measured by default (fp32 is the reference, exact by definition)."""

_TIMING_RUNS = 5
"""Timed forward calls per precision (after one warm-up call); the median is reported."""


@dataclasses.dataclass(frozen=True, slots=True)
class CalibrationResult:
    """Measured errors and kernel times per table and precision.

    Example (one table, default precisions)::

        errors     == {"t_ad_id": {FP16: 2.1e-4, INT8: 4.0e-3, INT4: 6.9e-2}}
        timings_ms == {"t_ad_id": {FP32: 0.41, FP16: 0.38, INT8: 0.35, INT4: 0.52}}

    Attributes:
        errors: Table -> precision -> relative L2 error of the pooled sampled bags. A precision
            FBGEMM cannot store the table's dim at is absent (int8 needs an even dim, int4 a dim
            divisible by 4).
        feature_errors: Feature -> precision -> relative error over that feature's bags only (a
            feature with no sampled bag gets its table's errors). Written beside the table
            entries so the planner can use them when it names or merges tables differently.
        timings_ms: Table -> precision -> median kernel time of one forward over all sampled bags,
            in ms (fp32, the reference, included). Informational.
        num_bags: Bags sampled per table.
        seed: Seed of the sampling.
        plan_fingerprint: ``inputs_fingerprint`` of the plan calibrated against.
    """

    errors: Mapping[str, Mapping[Precision, float]]
    feature_errors: Mapping[str, Mapping[Precision, float]]
    timings_ms: Mapping[str, Mapping[Precision, float]]
    num_bags: int
    seed: int
    plan_fingerprint: str


def calibrate(
    checkpoint: Checkpoint,
    plan: ShardPlan,
    *,
    precisions: Sequence[Precision] = DEFAULT_CALIBRATION_PRECISIONS,
    num_bags: int = 2048,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> CalibrationResult:
    """Measure every table's relative error at each precision on sampled bags.

    Args:
        checkpoint: The weights; must have been written for ``plan``.
        plan: Gives each table's rows, dim, pooling and features (pooling factor, traffic share).
        precisions: Precisions to measure (fp32 measures exactly 0).
        num_bags: Bags sampled per table (>= 1).
        seed: Sampling seed (>= 0); equal seeds give equal results.
        progress: Called with 1 after each table.

    Returns:
        The errors and kernel times.

    Raises:
        InputError: ``num_bags`` < 1, a negative seed or no precisions.
        PlanError: ``kind=PLAN_MISMATCH`` when the checkpoint was written for another plan.
    """
    problems = []
    if isinstance(num_bags, bool) or not isinstance(num_bags, int) or num_bags < 1:
        problems.append(InputError(f"num_bags must be >= 1, found {num_bags!r}", source="num_bags"))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(InputError(f"seed must be an integer >= 0, found {seed!r}", source="seed"))
    wanted = tuple(dict.fromkeys(precisions))
    if not wanted:
        problems.append(InputError("no precisions to measure", source="precisions"))
    if problems:
        raise InputError.from_problems(problems)
    checkpoint.check_plan(plan)

    start = time.perf_counter()
    errors: dict[str, dict[Precision, float]] = {}
    feature_errors: dict[str, dict[Precision, float]] = {}
    timings: dict[str, dict[Precision, float]] = {}
    for t in plan.tables:
        errors[t.name], per_feature, timings[t.name] = _calibrate_table(
            checkpoint, t, wanted, num_bags, seed
        )
        feature_errors.update(per_feature)
        if progress is not None:
            progress(1)
        logger.debug("calibrated %s: %s", t.name, {p.value: e for p, e in errors[t.name].items()})
    logger.info(
        "calibrated %d tables at %s on %d bags each in %.1f s",
        len(plan.tables),
        ", ".join(p.value for p in wanted),
        num_bags,
        time.perf_counter() - start,
    )
    return CalibrationResult(
        errors=errors,
        feature_errors=feature_errors,
        timings_ms=timings,
        num_bags=num_bags,
        seed=seed,
        plan_fingerprint=plan.inputs_fingerprint,
    )


def write_calibration(result: CalibrationResult, path: str | os.PathLike[str]) -> None:
    """Write the errors as a precision-errors file for ``adrank plan --precision-errors``.

    Table entries and feature entries go into one mapping (the planner looks a table up by name
    first, then its features); on a name clash the table's entry wins.

    Args:
        result: From :func:`calibrate`.
        path: Destination (written atomically).
    """
    merged: dict[str, Mapping[Precision, float]] = dict(result.feature_errors)
    clashes = sorted(set(merged) & set(result.errors))
    if clashes:
        logger.warning("features named like tables keep the tables' errors: %s", clashes)
    merged.update(result.errors)
    write_precision_errors(merged, path)


def _calibrate_table(
    checkpoint: Checkpoint,
    t: TablePlan,
    precisions: tuple[Precision, ...],
    num_bags: int,
    seed: int,
) -> tuple[dict[Precision, float], dict[str, dict[Precision, float]], dict[Precision, float]]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, *_name_key(t.name)]))
    shares = np.array([f.traffic_share for f in t.features], dtype=np.float64)
    weights = shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1 / len(shares))
    bag_feature = rng.choice(len(t.features), size=num_bags, p=weights)
    factors = np.array([f.pooling_factor for f in t.features], dtype=np.float64)
    lengths = np.maximum(rng.poisson(factors[bag_feature]), 1).astype(np.int64)
    ids = rng.integers(0, t.num_rows, size=int(lengths.sum()), dtype=np.int64)
    rows, local = np.unique(ids, return_inverse=True)
    sampled = checkpoint.read_rows(t.name, rows)
    indices = torch.from_numpy(local.astype(np.int64).reshape(-1))
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    pooled = t.pooling is not PoolingType.NONE
    # The group of each output row: one per bag when pooled, one per id in a sequence table.
    groups = bag_feature if pooled else np.repeat(bag_feature, lengths)

    outputs: dict[Precision, np.ndarray] = {}
    timings: dict[Precision, float] = {}
    for p in (Precision.FP32, *precisions):
        if p in outputs:
            continue
        if not _kernel_builds(p, t.dim):
            logger.warning(
                "table %s: FBGEMM cannot store dim %d at %s (its row-wise quantizer needs an even "
                "number of packed bytes per row); %s skipped",
                t.name,
                t.dim,
                p.value,
                p.value,
            )
            continue
        tbe = build_tbe([TbeTable(t.name, len(rows), t.dim, p)], [sampled], pooled=pooled)
        with torch.inference_mode():
            out = tbe(indices, offsets)
            runs = []
            for _ in range(_TIMING_RUNS):
                t0 = time.perf_counter()
                tbe(indices, offsets)
                runs.append((time.perf_counter() - t0) * 1e3)
        values = out.numpy().astype(np.float64)
        if t.pooling is PoolingType.MEAN:
            values /= lengths[:, None]
        outputs[p] = values
        timings[p] = statistics.median(runs)

    ref = outputs[Precision.FP32]
    errors = {p: _relative_error(outputs[p], ref) for p in precisions if p in outputs}
    per_feature: dict[str, dict[Precision, float]] = {}
    for k, f in enumerate(t.features):
        mask = groups == k
        per_feature[f.name] = (
            {p: _relative_error(outputs[p][mask], ref[mask]) for p in errors}
            if mask.any()
            else dict(errors)
        )
    return errors, per_feature, timings


def _kernel_builds(precision: Precision, dim: int) -> bool:
    """Whether FBGEMM's quantized TBE can hold rows of ``dim`` at ``precision``.

    FBGEMM 1.8's row-wise quantizer (``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf``) needs the
    packed values of a row to fill an even number of bytes (the fp16 scale and bias that follow
    must be 2-byte aligned): int8 needs an even dim, int4 a dim divisible by 4.
    """
    if not precision.is_quantized:
        return True
    bits = dim * precision.bits
    return bits % 16 == 0


def _relative_error(values: np.ndarray, ref: np.ndarray) -> float:
    """``||values - ref||_F / ||ref||_F``; an all-zero reference counts as exact when matched and
    as 100% off otherwise (a ratio with a zero denominator has no finite value)."""
    num = float(np.linalg.norm(values - ref))
    den = float(np.linalg.norm(ref))
    if den == 0.0:
        return 0.0 if num == 0.0 else 1.0
    return num / den


def _name_key(name: str) -> tuple[int, int]:
    """Two stable uint32 words from a table name (Python's ``hash`` varies between processes)."""
    d = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(d[:4], "little"), int.from_bytes(d[4:8], "little")
