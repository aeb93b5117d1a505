"""Sharded embedding tables: checkpoint format, plan loading, the multi-process lookup runtime on
TorchRec/FBGEMM over torch.distributed, and the gRPC Lookup service.

Filled in by the embed_store issue; the package exists so the dependency direction is fixed early.
"""

__all__: list[str] = []
