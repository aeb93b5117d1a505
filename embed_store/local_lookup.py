"""Lookups computed in this process: one device, or every rank's part of a sharded layout in turn.

:meth:`LocalLookup.single_device` is the parity reference and the one-device side of
``adrank bench parity``: every table whole, split into kernel groups over ``threads`` cores. Given
a sharded layout it computes each rank's partial output here, which checks the sharded
decomposition (routing, partial sums, column slices) without processes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from adrank.types import ShardPlan
from embed_store.batch import LookupBatch, LookupResult
from embed_store.frontend import LookupFrontend
from embed_store.layout import LookupLayout
from embed_store.rank_compute import BlockReader, RankCompute

__all__ = ["LocalLookup"]


class LocalLookup:
    """Pooled lookups over a layout, all computed in this process.

    Args:
        plan: The plan.
        layout: The layout to compute (any world size).
        read: Reads float32 weight blocks (a checkpoint's ``read_block``).
        remaps: Table -> pruning remap for pruned tables.
    """

    def __init__(
        self,
        plan: ShardPlan,
        layout: LookupLayout,
        read: BlockReader,
        remaps: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.plan = plan
        self.layout = layout
        self.frontend = LookupFrontend(plan, layout, remaps or {})
        self._ranks = [RankCompute(r, len(layout.features), read) for r in layout.ranks]

    @classmethod
    def single_device(
        cls,
        plan: ShardPlan,
        read: BlockReader,
        remaps: Mapping[str, np.ndarray] | None = None,
        *,
        threads: int = 1,
    ) -> LocalLookup:
        """Every table whole on this device, computed on ``threads`` cores."""
        return cls(plan, LookupLayout.single_device(plan, threads=threads), read, remaps)

    def lookup(self, batch: LookupBatch) -> LookupResult:
        """Pooled embeddings of ``batch``.

        Raises:
            InputError: A malformed batch (see :meth:`LookupFrontend.encode`).
        """
        wire = self.frontend.encode(batch)
        partials = [r.compute_groups(wire.rows, wire.lengths, wire.batch) for r in self._ranks]
        sequences = (
            [r.compute_sequences(wire.rows, wire.lengths, wire.batch) for r in self._ranks]
            if any(self.layout.sequence)
            else None
        )
        return self.frontend.combine(wire, partials, sequences)

    def close(self) -> None:
        """Release the kernel threads."""
        for r in self._ranks:
            r.close()

    def __enter__(self) -> LocalLookup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
