"""The tier factory: :class:`~ranker.base.TierName` -> a freshly initialised tier.

=========  =====================================  ==========================================
tier       model                                  per-candidate work
=========  =====================================  ==========================================
small      two towers, dot product                ad tower, one dot product
medium     DLRM: dot interactions + top MLP       ad vectors, user-ad/ad-ad dots, top MLP
large      DCNv2 + target attention over the      ad tower, attention over L items, cross
           behaviour sequence                     layers, deep network
=========  =====================================  ==========================================
"""

from __future__ import annotations

from typing import Any

from ranker.base import RankerTier, TierDims, TierName
from ranker.large import DcnAttentionTier
from ranker.medium import DlrmTier
from ranker.small import TwoTowerTier

__all__ = ["TIER_CLASSES", "build_tier"]

TIER_CLASSES: dict[TierName, type[RankerTier[Any]]] = {
    TierName.SMALL: TwoTowerTier,
    TierName.MEDIUM: DlrmTier,
    TierName.LARGE: DcnAttentionTier,
}
"""The model class of each tier."""


def build_tier(name: TierName, dims: TierDims) -> RankerTier[Any]:
    """A new tier with fresh weights (seed ``torch.manual_seed`` first for reproducible ones).

    Args:
        name: Which tier.
        dims: Input widths and layer sizes.

    Returns:
        The tier, in training mode, float32.

    Raises:
        InputError: Bad ``dims``.
    """
    return TIER_CLASSES[name](dims)
