"""The bundled tiered ranker (small/medium/large), its router, request-centric scoring and the
end-to-end server that drives embed_store and feature_service.

Filled in by the ranker issue; the package exists so the dependency direction is fixed early.
"""

__all__: list[str] = []
