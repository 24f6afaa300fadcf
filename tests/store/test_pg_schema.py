"""The PostgreSQL store's format: a store of format 1 (the tables, without the triggers
that wake idle workers) is brought up to this format when opened -- once, however many
processes open it at once; one of a newer format is refused, with one clear line from the
command."""
import subprocess
import sys
import threading

import psycopg
import pytest

from engine import Engine, SavepointError
from engine.store import pgschema
from engine.store.postgres import PostgresStore
import store_records
from locations import SUPPORT
from waiting import wait_for


TRIGGERS = ["executions", "executions", "leases", "queue"]    # the tables they are on


def format_1(url):
    """Make the store at ``url`` what format 1 was: its triggers and their functions
    gone, and the listing's columns, format 1 in meta (its data stays)."""
    with psycopg.connect(url) as conn:
        conn.execute("DROP TRIGGER work_due ON savepoint_engine.queue; "
                     "DROP TRIGGER work_due ON savepoint_engine.leases; "
                     "DROP FUNCTION savepoint_engine.queue_work_due(); "
                     "DROP FUNCTION savepoint_engine.lease_work_due(); "
                     "DROP TABLE savepoint_engine.messages; "
                     + store_records.PG_WITHOUT_LISTING + "; "
                     "UPDATE savepoint_engine.meta SET value = '1' WHERE name = 'format'")


def format_2(url):
    """Make the store at ``url`` what format 2 was: no messages table, no listing."""
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE savepoint_engine.messages; "
                     + store_records.PG_WITHOUT_LISTING + "; "
                     "UPDATE savepoint_engine.meta SET value = '2' WHERE name = 'format'")


def schema_state(url):
    """(format, the triggers on the store's tables)."""
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT value FROM savepoint_engine.meta WHERE name = "
                             "'format'").fetchone()[0]
        triggers = conn.execute(
            "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN "
            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'savepoint_engine' "
            "AND NOT t.tgisinternal ORDER BY 1").fetchall()
    return int(bytes(found)), [t[0] for t in triggers]


def test_a_new_store_is_of_this_format(pg_url):
    PostgresStore(pg_url).close()
    assert schema_state(pg_url) == (pgschema.FORMAT, TRIGGERS)


def test_a_format_1_store_is_upgraded_when_opened_and_works(pg_url):
    with PostgresStore(pg_url) as store:
        store.put_execution({"id": "old", "status": "QUEUED", "due": 50.0})
    format_1(pg_url)
    assert schema_state(pg_url) == (1, [])
    with PostgresStore(pg_url) as store, PostgresStore(pg_url) as other:
        assert schema_state(pg_url) == (pgschema.FORMAT, TRIGGERS)
        assert store.get_execution("old")["due"] == 50.0
        assert store.status_counts()["QUEUED"] == 1
        told = []
        store.on_work(told.append)
        other.put_execution({"id": "new", "status": "QUEUED", "due": 60.0})
        assert wait_for(lambda: told == [60.0])


def test_a_format_2_store_gets_its_messages_table_when_opened(pg_url):
    with PostgresStore(pg_url) as store:
        store.put_execution({"id": "old", "status": "WAITING", "due": None})
    format_2(pg_url)
    with PostgresStore(pg_url) as store:
        assert schema_state(pg_url)[0] == pgschema.FORMAT
        assert store.add_message("old", "t", "hello", lambda head: False) == "sent"
        assert store.message("old", "t") == (1, "hello")


def test_processes_opening_a_format_1_store_at_once_upgrade_it_once(pg_url):
    PostgresStore(pg_url).close()
    format_1(pg_url)
    failures, opened = [], []

    def open_store():
        try:
            with PostgresStore(pg_url) as store:
                opened.append(store.get_execution("none"))
        except Exception as e:               # pragma: no cover - the test fails on it
            failures.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and opened == [None] * 6
    assert schema_state(pg_url) == (pgschema.FORMAT, TRIGGERS)


@pytest.fixture
def newer(pg_url):
    """A store of format 99, made by some later engine."""
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE savepoint_engine.meta SET value = '99' WHERE name = 'format'")
    return pg_url


def test_a_newer_store_is_refused_by_the_engine(newer):
    with pytest.raises(SavepointError, match=rf"format 99; this engine reads format "
                                             rf"{pgschema.FORMAT} \(it is newer: upgrade "
                                             rf"the engine\)"):
        Engine(newer)
    assert schema_state(newer) == (99, TRIGGERS)        # left as it was


def test_a_newer_store_is_refused_by_the_command_in_one_line(newer):
    done = subprocess.run([sys.executable, "-m", "engine", "ls", "--path", newer],
                          capture_output=True, text=True, cwd=SUPPORT, timeout=60)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "format 99" in lines[0] and "upgrade the engine" in lines[0]
    assert "engine-test" not in lines[0]                            # no password
