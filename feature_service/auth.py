"""Who may talk to the feature server: the loopback/TLS rule and the shared-token check.

The implementation is shared by every adrank server and lives in :mod:`adrank.rpc`; this module
re-exports it so existing imports keep working.
"""

from adrank.rpc import (
    AUTHORIZATION_METADATA_KEY,
    UNAUTHENTICATED_EXEMPT_PREFIXES,
    TokenAuthInterceptor,
    bearer_metadata,
    is_loopback_host,
    load_token,
)

__all__ = [
    "AUTHORIZATION_METADATA_KEY",
    "UNAUTHENTICATED_EXEMPT_PREFIXES",
    "TokenAuthInterceptor",
    "is_loopback_host",
    "load_token",
    "bearer_metadata",
]
