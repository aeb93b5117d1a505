"""Per-table precision in FBGEMM's quantized inference kernel (IntNBit TBE).

One TBE (table-batched embedding) module holds several tables, each at its own precision
(fp32 / fp16 / int8 / int4). Rows are stored the way the kernel reads them:

* fp32, fp16: the values, viewed as bytes.
* int8, int4: the values quantized per row (``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf``:
  an fp16 scale and an fp16 bias per row), with the 4 scale/bias bytes kept in a separate view.

:func:`build_tbe` makes such a module from float32 weights (from a checkpoint shard: read through a
memory map, copied once into the kernel's buffer); :func:`dequantize` gives back what the kernel
will read, for error measurement. Pitfalls checked on this machine (FBGEMM 1.8, CPU):

* The kernel skips index ``-1`` (a pruned id) but ``MEAN`` pooling still divides by the full bag
  length, and row-sharded bags are partial: the runtime always asks for ``SUM`` and divides itself.
* ``PoolingMode.NONE`` (sequence lookups) needs every table of the module to have the same dim.
* The CPU kernel runs one thread per module call whatever ``torch.get_num_threads()`` says: the
  runtime splits a rank's tables into several modules to use several cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from fbgemm_gpu.split_embedding_configs import SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
    IntNBitTableBatchedEmbeddingBagsCodegen,
)

from adrank.types import Precision

__all__ = [
    "TbeTable",
    "build_tbe",
    "dequantize",
    "quantize",
    "sparse_type",
]

_SPARSE_TYPES = {
    Precision.FP32: SparseType.FP32,
    Precision.FP16: SparseType.FP16,
    Precision.INT8: SparseType.INT8,
    Precision.INT4: SparseType.INT4,
}

_SCALE_BIAS_BYTES = 4
"""fp16 scale + fp16 bias at the end of every fused int8/int4 row."""


def sparse_type(precision: Precision) -> SparseType:
    """FBGEMM's ``SparseType`` for an adrank precision."""
    return _SPARSE_TYPES[precision]


def quantize(
    weights: torch.Tensor, precision: Precision
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode float32 rows the way the quantized TBE kernel stores them.

    Args:
        weights: float32 ``[rows, dim]`` (int4 needs an even dim).
        precision: Target precision.

    Returns:
        ``(row_bytes, scale_bias)``: uint8 ``[rows, dim * bits / 8]`` and, for int8/int4, uint8
        ``[rows, 4]`` (fp16 scale, fp16 bias); None for fp32/fp16.

    Raises:
        ValueError: ``weights`` is not 2-D float32, or an odd dim with int4.
    """
    if weights.dim() != 2 or weights.dtype != torch.float32:
        raise ValueError(
            f"expected float32 [rows, dim] weights, got {weights.dtype} {tuple(weights.shape)}"
        )
    if precision is Precision.INT4 and weights.shape[1] % 2:
        raise ValueError(f"int4 needs an even dim (two values per byte), got {weights.shape[1]}")
    w = weights.contiguous()
    if precision is Precision.FP32:
        return w.view(torch.uint8), None
    if precision is Precision.FP16:
        return w.half().view(torch.uint8), None
    if w.shape[0] == 0:
        return (
            torch.empty((0, w.shape[1] * precision.bits // 8), dtype=torch.uint8),
            torch.empty((0, _SCALE_BIAS_BYTES), dtype=torch.uint8),
        )
    fused = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, precision.bits)
    return fused[:, :-_SCALE_BIAS_BYTES].contiguous(), fused[:, -_SCALE_BIAS_BYTES:].contiguous()


def dequantize(weights: torch.Tensor, precision: Precision) -> torch.Tensor:
    """The float32 values the kernel reads for ``weights`` stored at ``precision``.

    Args:
        weights: float32 ``[rows, dim]``.
        precision: Storage precision.

    Returns:
        float32 ``[rows, dim]``: ``weights`` itself for fp32, rounded through fp16 for fp16, the
        row-wise quantized values for int8/int4.
    """
    if precision is Precision.FP32:
        return weights.float()
    if precision is Precision.FP16:
        return weights.half().float()
    row_bytes, scale_bias = quantize(weights, precision)
    assert scale_bias is not None
    if row_bytes.shape[0] == 0:
        return torch.empty(weights.shape, dtype=torch.float32)
    fused = torch.cat([row_bytes, scale_bias], dim=1).contiguous()
    return torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(fused, precision.bits)[
        :, : weights.shape[1]
    ].contiguous()


@dataclasses.dataclass(frozen=True, slots=True)
class TbeTable:
    """One table of a TBE module.

    Attributes:
        name: Label (unique in the module), e.g. ``"ads@r1c0"`` for a shard.
        num_rows: Rows (>= 1; an empty shard is never built).
        dim: Values per row.
        precision: Storage precision.
    """

    name: str
    num_rows: int
    dim: int
    precision: Precision


def build_tbe(
    tables: Sequence[TbeTable],
    weights: Sequence[torch.Tensor | np.ndarray],
    *,
    feature_table_map: Sequence[int] | None = None,
    pooled: bool = True,
) -> IntNBitTableBatchedEmbeddingBagsCodegen:
    """Make an FBGEMM quantized-inference TBE holding ``tables`` with the given float32 weights.

    Args:
        tables: The tables, in the module's order.
        weights: float32 ``[num_rows, dim]`` per table (a memory-mapped array is read once).
        feature_table_map: Table index of each feature (input bag group); default one per table.
        pooled: ``SUM``-pooled bags (True) or one embedding per id (sequence lookups; every table
            must then have the same dim).

    Returns:
        The module on CPU, in eval mode; call it with int64 ``indices`` and ``offsets`` laid out
        feature-major (``offsets`` has ``num_features * batch + 1`` entries).

    Raises:
        ValueError: Shape mismatches, an empty table, or mixed dims with ``pooled=False``.
    """
    if len(tables) != len(weights) or not tables:
        raise ValueError(
            f"need one weight array per table, got {len(tables)} tables and {len(weights)}"
        )
    for t, w in zip(tables, weights, strict=True):
        if t.num_rows < 1:
            raise ValueError(f"table {t.name!r} has no rows")
        if tuple(w.shape) != (t.num_rows, t.dim):
            raise ValueError(
                f"table {t.name!r}: weights {tuple(w.shape)} != ({t.num_rows}, {t.dim})"
            )
    if not pooled and len({t.dim for t in tables}) > 1:
        raise ValueError("sequence (unpooled) TBE modules need one dim for every table")
    specs = [
        (t.name, t.num_rows, t.dim, sparse_type(t.precision), EmbeddingLocation.HOST)
        for t in tables
    ]
    tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=specs,
        feature_table_map=list(feature_table_map) if feature_table_map is not None else None,
        device="cpu",
        pooling_mode=PoolingMode.SUM if pooled else PoolingMode.NONE,
        output_dtype=SparseType.FP32,
        # FBGEMM's CPU kernel reads unaligned rows; 1 keeps host memory equal to the data.
        row_alignment=1,
    )
    tbe.initialize_weights()
    for (dest, dest_sb), t, w in zip(tbe.split_embedding_weights(), tables, weights, strict=True):
        src = (
            torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            if isinstance(w, np.ndarray)
            else w
        )
        row_bytes, scale_bias = quantize(src.float(), t.precision)
        dest.copy_(row_bytes)
        if scale_bias is not None:
            assert dest_sb is not None
            dest_sb.copy_(scale_bias)
    tbe.eval()
    return tbe
