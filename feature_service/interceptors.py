"""The feature server's interceptor: :class:`adrank.rpc.ErrorMappingInterceptor`, re-exported.

It turns errors into gRPC status codes and enforces deadlines for every adrank server; see
:mod:`adrank.rpc`. Kept so existing imports of this module keep working.
"""

from adrank.rpc import (
    HINT_METADATA_KEY,
    SOURCE_METADATA_KEY,
    ErrorMappingInterceptor,
    status_code_of,
)

__all__ = ["ErrorMappingInterceptor", "SOURCE_METADATA_KEY", "HINT_METADATA_KEY", "status_code_of"]
