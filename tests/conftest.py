"""Fixtures every test directory shares: the stores a test runs on.

``store_path`` is where a test's engine keeps its store: an LMDB directory, or the URL of a
fresh database on the session's PostgreSQL cluster (tests/support/pgcluster.py).  Tests
that take it run once per store.  A machine without a PostgreSQL server fails those tests
loudly -- they are never skipped.
"""
import itertools

import pytest

STORES = ("lmdb", "postgres")
SECRET = "the test suite's signing key"     # the PostgreSQL stores' key (processes share it)
_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    from pgcluster import Cluster
    try:
        cluster = Cluster()
    except Exception as e:          # say it loudly: these tests must not pass unseen
        pytest.fail(f"NO POSTGRESQL SERVER for the tests: {e}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster, monkeypatch):
    """The URL of a new empty database (and the signing key its processes share)."""
    monkeypatch.setenv("ENGINE_SECRET_KEY", SECRET)
    return pg_cluster.create_database(f"t{next(_databases)}")


@pytest.fixture(params=STORES)
def store_kind(request):
    return request.param


@pytest.fixture
def store_path(store_kind, tmp_path, request):
    """An LMDB directory or a PostgreSQL URL, as Engine(path) and --path take it."""
    if store_kind == "lmdb":
        return str(tmp_path / "store")
    return request.getfixturevalue("pg_url")
