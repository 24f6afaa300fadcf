"""Where the signing key of a PostgreSQL store made without $ENGINE_SECRET_KEY goes: a file
of the user's, one per store, named by the server, database and schema -- wherever
$ENGINE_PATH points (it may be the URL itself) -- and what a host without it is told."""
import os
import stat

import psycopg
import pytest

from engine import Engine

NO_KEY = ("ENGINE_SECRET_KEY", "ENGINE_SECRET_KEY_FILE")


@pytest.fixture
def keyless(pg_url, tmp_path, monkeypatch):
    """No key in the environment; the user's configuration under tmp_path/config; the
    store's URL as $ENGINE_PATH; the working directory empty."""
    for name in NO_KEY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("ENGINE_PATH", pg_url)
    monkeypatch.chdir(tmp_path)
    return pg_url


def key_files(config):
    found = []
    for where, _, files in os.walk(config):
        found += [os.path.join(where, name) for name in files]
    return found


def test_the_key_goes_to_the_users_configuration_one_file_per_store(keyless, tmp_path):
    with Engine() as eng:                              # $ENGINE_PATH: the URL
        started = eng.start("pg_flows:stamp").id
    keys = key_files(tmp_path / "config")
    assert len(keys) == 1
    assert keys[0].startswith(str(tmp_path / "config" / "savepoint-engine" / "postgres"))
    assert stat.S_IMODE(os.stat(keys[0]).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["config"]  # nothing made where $ENGINE_PATH is
    # the same store named another way (the password a parameter) finds it
    info = psycopg.conninfo.conninfo_to_dict(keyless)
    other_spelling = (f"postgresql://{info['user']}@{info['host']}:{info['port']}/"
                      f"{info['dbname']}?password={info['password']}")
    with Engine(other_spelling) as eng:
        assert eng.get(started).flow == "pg_flows:stamp"
    # another database gets a key of its own
    with Engine(keyless.rsplit("/", 1)[0] + "/postgres"):
        pass
    assert len(key_files(tmp_path / "config")) == 2


def test_a_host_without_the_key_is_told_to_set_it(keyless, tmp_path, monkeypatch):
    Engine().close()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-host"))
    with pytest.raises(ValueError, match=r"this host has no key for it: set "
                                         r"\$ENGINE_SECRET_KEY or \$ENGINE_SECRET_KEY_FILE"):
        Engine()
    assert key_files(tmp_path / "another-host") == []
