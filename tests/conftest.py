"""Fixtures every test directory shares: the stores a test runs on.

``store_path`` is where a test's engine keeps its store: an LMDB directory, or the URL of
an empty database on the session's PostgreSQL cluster (tests/support/pgcluster.py);
``new_store(name)`` makes more of them.  Tests that take either run once per store.  A
machine without a PostgreSQL server fails those tests loudly -- they are never skipped.
"""
import pathlib

import pytest

STORES = ("lmdb", "postgres")
SECRET = "the test suite's signing key"     # the PostgreSQL stores' key (processes share it)
_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """A test that passed gives back its LMDB stores' space once its fixtures are down:
    a store allocates its whole map (64 MB, posix_fallocate: never a SIGBUS), and the
    suite makes some 800 of them -- over 20 GB were it all kept.  Everything else of its
    tmp dir (screenshots, logs) stays; a failed test keeps its stores too."""
    result = yield
    tmp = (item.funcargs or {}).get("tmp_path")
    if item.stash.get(_PASSED, False) and isinstance(tmp, pathlib.Path):
        for data in tmp.rglob("data.mdb"):
            data.unlink(missing_ok=True)
    return result


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
    """The URL of an empty database (and the signing key its processes share); emptied
    after the test for another one (pgcluster.Cluster.give_back)."""
    monkeypatch.setenv("ENGINE_SECRET_KEY", SECRET)
    url = pg_cluster.empty_database()
    yield url
    pg_cluster.give_back(url)


@pytest.fixture(scope="module", params=STORES)
def module_store(request, tmp_path_factory):
    """store_path for a module's fixture: (an LMDB directory or the URL of an empty
    database, {variable: value} its processes need in their environment)."""
    if request.param == "lmdb":
        yield str(tmp_path_factory.mktemp("store") / "store"), {}
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.empty_database()
    yield url, {"ENGINE_SECRET_KEY": SECRET}
    cluster.give_back(url)


@pytest.fixture(params=STORES)
def store_kind(request):
    return request.param


@pytest.fixture
def store_path(new_store):
    """An LMDB directory or a PostgreSQL URL, as Engine(path) and --path take it."""
    return new_store("store")


@pytest.fixture
def new_store(store_kind, tmp_path, request):
    """Makes more stores of the test's kind: ``new_store(name)`` is a new LMDB directory
    under tmp_path, or the URL of another empty database (for tests that need several;
    the first is pg_url's)."""
    if store_kind == "lmdb":
        given = set()

        def make_dir(name):          # a name asked for again gets a directory of its own
            path, n = name, 1
            while path in given:
                n += 1
                path = f"{name}-{n}"
            given.add(path)
            return str(tmp_path / path)
        return make_dir
    cluster = request.getfixturevalue("pg_cluster")
    unused = [request.getfixturevalue("pg_url")]     # (it sets the shared signing key)

    def make(name):
        if unused:
            return unused.pop()
        url = cluster.empty_database()
        request.addfinalizer(lambda: cluster.give_back(url))
        return url
    return make
