"""Audit and key stores, chosen by URL.

``sqlite:///PATH`` opens the embedded SQLite store (``sqlite:///./hoopgw.db`` is relative,
``sqlite:////var/lib/hoopgw/hoopgw.db`` absolute). A PostgreSQL store, for several gateway
instances sharing one audit trail, will implement the same :class:`Store` interface.
"""

from __future__ import annotations

from hoopgw.errors import ConfigError
from hoopgw.store.base import ApiKeyRecord, Store
from hoopgw.store.sqlite import SQLiteStore

__all__ = ["ApiKeyRecord", "SQLiteStore", "Store", "open_store"]

_SQLITE_PREFIX = "sqlite:///"


def open_store(url: str) -> Store:
    """Open the store that ``url`` names; call :meth:`Store.migrate` before using it.

    The store belongs to the calling thread.

    :raises ConfigError: for a URL this gateway cannot open (the message names only the scheme,
        since a database URL may hold a password).
    :raises StoreError: if the store exists but cannot be opened.
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        raise ConfigError("store URL must look like sqlite:///PATH", key="gateway.store")
    if scheme != "sqlite":
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r} (supported: sqlite)", key="gateway.store"
        )
    if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
        raise ConfigError("SQLite store URL must look like sqlite:///PATH", key="gateway.store")
    return SQLiteStore(url[len(_SQLITE_PREFIX) :])
