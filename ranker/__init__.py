"""The bundled tiered ranker: small/medium/large tiers over the sharded embeddings, a router per
request, request-centric scoring, training on logs joined with the feature store on the fly, and
serving (features + sharded lookups + routed tier) behind gRPC.

Training: :func:`ranker.train.train` (``adrank train``). Serving: :class:`ranker.serving.Ranker`
and :func:`ranker.server.build_server` (``adrank serve``; these import grpc, so they are not
re-exported here).
"""

from ranker.base import RankerTier, RequestState, TierDims, TierName
from ranker.data import FeatureRoles, RequestBatch, iter_request_batches, time_split
from ranker.embeddings import FeatureHasher, PlanEmbeddings
from ranker.inputs import CandidateInputs, RequestInputs, inputs_from_lookup
from ranker.metrics import auc, logloss
from ranker.router import RouterLog, TierRouter
from ranker.tiers import build_tier
from ranker.train import TrainConfig, TrainResult, train

__all__ = [
    "CandidateInputs",
    "FeatureHasher",
    "FeatureRoles",
    "PlanEmbeddings",
    "RankerTier",
    "RequestBatch",
    "RequestInputs",
    "RequestState",
    "RouterLog",
    "TierDims",
    "TierName",
    "TierRouter",
    "TrainConfig",
    "TrainResult",
    "auc",
    "build_tier",
    "inputs_from_lookup",
    "iter_request_batches",
    "logloss",
    "time_split",
    "train",
]
