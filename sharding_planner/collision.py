"""The collision model the allocation and merging stages optimise.

A lookup *collides* when the row it reads is shared with at least one other live id (of the same
feature, or of another feature in a salted shared range). With ``m`` other ids hashed uniformly
into ``H`` rows, a given id's row is shared with probability ``1 - (1 - 1/H) ** m``; this does not
depend on how often the id is looked up, so a feature's expected collision rate on its traffic is::

    rate(H, d) = tail_share(d) * (1 - (1 - 1/H) ** (n_tail(d) - 1))

where ``d`` heavy hitters have dedicated collision-free rows, ``tail_share(d)`` is the share of the
feature's lookups that go to the other ids, and ``n_tail(d) = live_ids - d`` ids share the ``H``
hashed rows. Frequency enters through the heavy hitters: dedicating the most frequent ids removes
their (large) traffic from the colliding tail at one row each. ``bench/plan_allocation.py``
measures the same quantity on logs by hashing every id with the plan's mapping.
"""

from __future__ import annotations

import math

from sharding_planner.types import FeatureSpec

__all__ = ["feature_collision_rate", "shared_row_probability", "tail_traffic_share"]


def shared_row_probability(num_other_ids: float, hash_size: int) -> float:
    """Probability that an id's row also holds at least one of ``num_other_ids`` other ids.

    Args:
        num_other_ids: Other ids hashed into the same range (>= 0; may be fractional).
        hash_size: Rows in the range (>= 1).

    Returns:
        ``1 - (1 - 1/hash_size) ** num_other_ids`` in [0, 1].
    """
    if num_other_ids <= 0:
        return 0.0
    if hash_size <= 1:
        return 1.0
    return -math.expm1(num_other_ids * math.log1p(-1.0 / hash_size))


def tail_traffic_share(spec: FeatureSpec, num_dedicated: int) -> float:
    """Share of a feature's lookups not served by its first ``num_dedicated`` heavy hitters."""
    served = sum(share for _, share in spec.heavy_hitters[:num_dedicated])
    return max(0.0, 1.0 - served)


def feature_collision_rate(spec: FeatureSpec, hash_size: int, num_dedicated: int = 0) -> float:
    """Expected share of a feature's lookups that read a shared row (see the module docstring).

    Args:
        spec: The feature.
        hash_size: Rows of its hashed range.
        num_dedicated: Heavy hitters with dedicated rows (its first ones).

    Returns:
        The rate in [0, 1].
    """
    n_tail = max(0, spec.live_ids - num_dedicated)
    return tail_traffic_share(spec, num_dedicated) * shared_row_probability(n_tail - 1, hash_size)
