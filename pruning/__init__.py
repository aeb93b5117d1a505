"""Dead-row pruning: row liveness from access counts and recency, remap arrays (hashed_id -> row)
that FBGEMM's pruned lookups take, and compaction of trained tables. numpy + numba, never torch.

Filled in by the planner issue; the package exists so the dependency direction is fixed early.
"""

__all__: list[str] = []
