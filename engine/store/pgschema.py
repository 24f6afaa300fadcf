"""The PostgreSQL store's schema: its tables, its format, and the migrations that bring a
store of an older format up to this one.

    format 1   the tables (TABLES; engine/store/postgres.py says what each holds)
    format 2   the triggers that wake idle workers (WORK_DUE): an execution put on the run
               queue, or freed of its lease while queued, NOTIFYs the store's channel
               with the time it is due from (engine/store/pglisten.py listens)
    format 3   messages: what eng.send stored for an execution (MESSAGES), numbered
               in the order sent
    format 4   the listing's columns of executions (LISTING): status, flow, created_at,
               parent -- plain copies of what the sealed record and the newest savepoint
               say, written with them -- the indexes the Savepoints page lists by, and
               status_counts, kept by a trigger on executions' status (in shards: not
               every status change waits for one row's lock).  A row the migration
               added the columns to has status NULL until the store, which holds the key
               to read its head, fills them in (PostgresStore at open)

prepare() opens a store at FORMAT: it makes a new one (the tables, then every migration:
a new store is exactly a migrated one), brings an older one up to FORMAT, and refuses a
newer one -- in one transaction under an advisory lock per schema, so that processes
opening the store at once, on any host, neither make it nor migrate it twice.  A store at
FORMAT already is only looked at: no DDL (even CREATE INDEX IF NOT EXISTS locks its table,
and would wait for -- and deadlock with -- workers writing to it).
"""
import hashlib

from psycopg import sql

from engine.errors import SavepointError
from engine.store import pgconnect

FORMAT = 4                   # of the PostgreSQL schema; a newer one is refused

TABLES = """
CREATE TABLE IF NOT EXISTS meta (name text COLLATE "C" PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE IF NOT EXISTS executions (id text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL);
CREATE TABLE IF NOT EXISTS savepoints (exec_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL, value bytea NOT NULL, PRIMARY KEY (exec_id, seq));
CREATE TABLE IF NOT EXISTS names (exec_id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL, seq bigint NOT NULL, PRIMARY KEY (exec_id, name));
CREATE TABLE IF NOT EXISTS code (digest bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE IF NOT EXISTS code_users (exec_id text COLLATE "C" NOT NULL,
    digest bytea NOT NULL, PRIMARY KEY (exec_id, digest));
CREATE INDEX IF NOT EXISTS code_users_digest ON code_users (digest);
CREATE TABLE IF NOT EXISTS chunks (digest bytea PRIMARY KEY, value bytea NOT NULL,
    refs bigint NOT NULL);
CREATE TABLE IF NOT EXISTS queue (exec_id text COLLATE "C" PRIMARY KEY,
    due double precision NOT NULL);
CREATE INDEX IF NOT EXISTS queue_due ON queue (due, exec_id);
CREATE TABLE IF NOT EXISTS leases (exec_id text COLLATE "C" PRIMARY KEY,
    pid integer NOT NULL, start bigint NOT NULL, boot text NOT NULL,
    label text NOT NULL, expires double precision NOT NULL);
CREATE INDEX IF NOT EXISTS leases_owner ON leases (boot, pid, start);
CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires);
CREATE TABLE IF NOT EXISTS settings (name text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL);
"""

# Names are written out (not looked up on the search_path): the triggers fire for whoever
# writes, whatever its search_path.  A leased execution due later is its owner's business
# (parked in its memory): no one else is told.
WORK_DUE = """
CREATE OR REPLACE FUNCTION {schema}.queue_work_due() RETURNS trigger LANGUAGE plpgsql
AS $body$
BEGIN
    IF NEW.due <= extract(epoch FROM clock_timestamp()) OR NOT EXISTS (
            SELECT 1 FROM {schema}.leases l WHERE l.exec_id = NEW.exec_id) THEN
        PERFORM pg_notify({channel}, NEW.due::text);
    END IF;
    RETURN NULL;
END $body$;
CREATE OR REPLACE FUNCTION {schema}.lease_work_due() RETURNS trigger LANGUAGE plpgsql
AS $body$
BEGIN
    PERFORM pg_notify({channel}, q.due::text) FROM {schema}.queue q
        WHERE q.exec_id = OLD.exec_id;
    RETURN NULL;
END $body$;
DROP TRIGGER IF EXISTS work_due ON {schema}.queue;
CREATE TRIGGER work_due AFTER INSERT OR UPDATE OF due ON {schema}.queue
    FOR EACH ROW EXECUTE FUNCTION {schema}.queue_work_due();
DROP TRIGGER IF EXISTS work_due ON {schema}.leases;
CREATE TRIGGER work_due AFTER DELETE ON {schema}.leases
    FOR EACH ROW EXECUTE FUNCTION {schema}.lease_work_due();
"""


MESSAGES = """
CREATE TABLE IF NOT EXISTS {table} (exec_id text COLLATE "C" NOT NULL, n bigint NOT NULL,
    topic text COLLATE "C" NOT NULL, value bytea NOT NULL, PRIMARY KEY (exec_id, n));
"""


def channel(schema):
    """The NOTIFY channel of the store in ``schema`` (at most 63 bytes, as PostgreSQL's
    names are)."""
    name = f"savepoint_engine.{schema}"
    if len(name.encode()) > 63:
        name = "savepoint_engine." + hashlib.blake2b(schema.encode(),
                                                     digest_size=16).hexdigest()
    return name


def _work_due(conn, schema):
    conn.execute(sql.SQL(WORK_DUE).format(schema=sql.Identifier(schema),
                                          channel=sql.Literal(channel(schema))))


def _messages(conn, schema):
    conn.execute(sql.SQL(MESSAGES).format(table=sql.Identifier(schema, "messages")))



# status '' is a record without a status (listed, not counted); NULL: not listed yet.
# created_at 0 is a record that lost it (listing.newest_first: the oldest)
LISTING = """
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS status text COLLATE "C",
    ADD COLUMN IF NOT EXISTS flow text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS created_at double precision NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS parent text COLLATE "C";
CREATE INDEX IF NOT EXISTS executions_newest ON {table} (created_at, id);
CREATE INDEX IF NOT EXISTS executions_by_status ON {table} (status, created_at, id);
CREATE INDEX IF NOT EXISTS executions_children ON {table} (parent, created_at, id)
    WHERE parent IS NOT NULL;
CREATE TABLE IF NOT EXISTS {counts} (status text COLLATE "C" NOT NULL,
    shard integer NOT NULL, n bigint NOT NULL, PRIMARY KEY (status, shard));
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    -- both rows in one statement, in status order: two changes never wait on each other
    INSERT INTO {counts} AS c
        SELECT d.status, pg_backend_pid() % 16, sum(d.step) FROM (
            SELECT OLD.status, -1 WHERE TG_OP <> 'INSERT'
            UNION ALL SELECT NEW.status, 1 WHERE TG_OP <> 'DELETE') AS d(status, step)
        WHERE d.status <> '' GROUP BY d.status ORDER BY d.status
        ON CONFLICT (status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $body$;
DROP TRIGGER IF EXISTS count_status ON {table};
CREATE TRIGGER count_status AFTER INSERT OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {function}();
DROP TRIGGER IF EXISTS count_status_change ON {table};
CREATE TRIGGER count_status_change AFTER UPDATE OF status ON {table}
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION {function}();
"""


def _listing_columns(conn, schema):
    conn.execute(sql.SQL(LISTING).format(table=sql.Identifier(schema, "executions"),
                                         counts=sql.Identifier(schema, "status_counts"),
                                         function=sql.Identifier(schema, "count_status")))


# format N -> N + 1, run in the transaction that then writes format N + 1
MIGRATIONS = {1: _work_due, 2: _messages, 3: _listing_columns}


def prepare(url, schema, shown):
    """Make the store in ``schema`` at ``url`` if there is none, or bring it up to FORMAT;
    SavepointError (naming ``shown``) if it is of a newer format."""
    table = sql.Identifier(schema, "meta")
    with pgconnect.connect(url, autocommit=True) as conn:
        if _format(conn, table) == FORMAT:
            return
        with conn.transaction():
            # one opener at a time: two hosts must not both make or migrate the store
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
            found = _format(conn, table)
            if found == FORMAT:
                return
            if found is not None and found > FORMAT:
                raise SavepointError(f"{shown} holds a savepoint-engine store of format "
                                     f"{found}; this engine reads format {FORMAT} (it is "
                                     f"newer: upgrade the engine)")
            if found is not None and found not in MIGRATIONS:
                raise SavepointError(f"{shown} holds a savepoint-engine store of format "
                                     f"{found}, which this engine cannot read")
            if found is None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
                conn.execute(sql.SQL("SET LOCAL search_path = {}").format(
                    sql.Identifier(schema)))
                conn.execute(TABLES)
                found = 1
            for step in range(found, FORMAT):
                MIGRATIONS[step](conn, schema)
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('format', %s) ON CONFLICT (name) "
                                 "DO UPDATE SET value = excluded.value").format(table),
                         (str(FORMAT).encode(),))


def _format(conn, table):
    """The store's format, or None if no store was made there (yet)."""
    if conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()[0] is None:
        return None
    row = conn.execute(sql.SQL("SELECT value FROM {} WHERE name = 'format'").format(
        table)).fetchone()
    return None if row is None else int(bytes(row[0]))
