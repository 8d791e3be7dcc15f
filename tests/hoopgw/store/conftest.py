"""Fixtures of the store tests: the same contract tests run on SQLite and on PostgreSQL.

``store_url`` is parametrised over both back ends: a SQLite file in ``tmp_path``, and a fresh
PostgreSQL database on the test server (``pg_database`` creates it as user ``postgres`` and
drops it afterwards). ``open_test_store`` opens (and migrates) a store on that URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hoopgw.store import Store, open_store

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    """The URL of an empty store of ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server = request.getfixturevalue("pg_server")
    database = request.getfixturevalue("pg_database")
    return f"postgresql://postgres@{server.host}:{server.port}/{database}"


@pytest.fixture
def open_test_store(store_url: str) -> Iterator[Callable[..., Store]]:
    """Opens migrated stores on ``store_url``, on the chain of ``instance`` (PostgreSQL; ``""``
    by default, whose chain starts as a SQLite store's does); closes them after."""
    opened: list[Store] = []

    def opener(instance: str = "") -> Store:
        store = open_store(store_url, instance=instance)
        opened.append(store)
        store.migrate()
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def any_store(open_test_store: Callable[..., Store]) -> Store:
    """A migrated store of each back end."""
    return open_test_store()
