"""Audit and key stores, chosen by URL.

``sqlite:///PATH`` opens the embedded SQLite store (``sqlite:///./hoopgw.db`` is relative,
``sqlite:////var/lib/hoopgw/hoopgw.db`` absolute); ``postgresql://...`` (or ``postgres://``)
the PostgreSQL store that several gateway instances share (:mod:`hoopgw.store.postgres`).
"""

from __future__ import annotations

import os
import stat

from hoopgw.errors import ConfigError, StoreError
from hoopgw.store.base import ApiKeyRecord, Store
from hoopgw.store.sqlite import SQLiteStore

__all__ = [
    "POSTGRESQL_SCHEMES",
    "ApiKeyRecord",
    "SQLiteStore",
    "Store",
    "check_store_private",
    "open_store",
]

_SQLITE_PREFIX = "sqlite:///"

POSTGRESQL_SCHEMES = ("postgresql", "postgres")
"""URL schemes of the PostgreSQL store (libpq's)."""

STORE_URL_FORMS = "store URL must look like sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"


def open_store(url: str, *, instance: str = "") -> Store:
    """Open the store that ``url`` names; call :meth:`Store.migrate` before using it.

    The store belongs to the calling thread.

    :param instance: the gateway instance whose chain the store's audit methods use (a
        PostgreSQL store; a SQLite store has the one chain ``""``).
    :raises ConfigError: for a URL this gateway cannot open (the message names only the scheme,
        since a database URL may hold a password).
    :raises StoreError: if the store exists but cannot be opened.
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        raise ConfigError(STORE_URL_FORMS, key="gateway.store")
    if scheme in POSTGRESQL_SCHEMES:
        try:
            from hoopgw.store.postgres import PostgresStore
        except ImportError as exc:  # psycopg_pool or psycopg missing
            raise ConfigError(
                f"a PostgreSQL store needs psycopg and psycopg_pool ({exc}); install"
                " hoopgw[postgresql-store]",
                key="gateway.store",
            ) from exc
        return PostgresStore(url, instance=instance)
    if scheme != "sqlite":
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r} (supported: sqlite, postgresql)",
            key="gateway.store",
        )
    if not url.startswith(_SQLITE_PREFIX) or len(url) == len(_SQLITE_PREFIX):
        raise ConfigError("SQLite store URL must look like sqlite:///PATH", key="gateway.store")
    if instance:
        raise ConfigError(
            "a SQLite store serves one gateway: [gateway] instance needs a postgresql:// store",
            key="gateway.instance",
        )
    return SQLiteStore(url[len(_SQLITE_PREFIX) :])


_STORE_FILES = ("", "-wal", "-shm", "-journal", ".audit-journal")
"""Suffixes of the files that hold a SQLite store's records: the database, SQLite's WAL,
shared memory and rollback journal, and the gateway's audit journal."""


def check_store_private(url: str) -> None:
    """Refuse a SQLite store that other users could read or change.

    Each file that holds its records (:data:`_STORE_FILES`, those that exist) must have no
    permission for group or others, and its folder must not be writable by them (whoever may
    write the folder can replace the files, or plant a ``-wal`` file before the gateway makes
    its own). A store not made yet, or in memory, passes: the gateway makes its files private.

    :raises StoreError: naming the file or folder, its mode, and the ``chmod`` that fixes it.
    """
    if not url.startswith(_SQLITE_PREFIX):
        return
    path = url[len(_SQLITE_PREFIX) :]
    if path == ":memory:" or not path:
        return
    # SQLite keeps its WAL, and the writer its journal, beside the file a link points to: check
    # there, and both folders (whoever may write the link's folder can replace the link).
    real = os.path.realpath(path)
    for suffix in _STORE_FILES:
        name = real + suffix
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot check the store file {name!r}: {exc.strerror}") from exc
        if mode & 0o077:
            raise StoreError(
                f"the store file {name} has mode {mode:o}: group or others may read or change"
                f" audit records and keys; make it private with: chmod 600 {name}"
            )
    for folder in dict.fromkeys([os.path.dirname(os.path.abspath(path)), os.path.dirname(real)]):
        _check_folder_private(folder)


def _check_folder_private(folder: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(folder).st_mode)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            return
        raise StoreError(f"cannot check the store folder {folder!r}: {exc.strerror}") from exc
    if mode & 0o022:
        raise StoreError(
            f"the store folder {folder} has mode {mode:o}: group or others may replace the"
            f" store's files; make it private with: chmod 700 {folder} (or move the store to a"
            " folder of its own)"
        )
