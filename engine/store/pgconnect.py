"""Connecting to a store's PostgreSQL server, and the two questions asked before anything is
stored: can it be reached (connect), and was a store made in that database
(missing_schema).  What libpq says about a server that cannot be reached or refuses us
becomes StoreUnavailable, a URL it cannot read ValueError: one line each, naming the
server -- never the password."""
import psycopg
from psycopg import sql

from engine.errors import StoreUnavailable
from engine.store.location import redacted, shown

SCHEMA = "savepoint_engine"      # where PostgresStore keeps its tables unless told
CONNECT_TIMEOUT = 10             # seconds; libpq's default waits for TCP to give up


def _one_line(error, url):
    text = redacted(str(error))
    try:
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(password, "***")
    return " ".join(text.split())


def connect(url, **options):
    """psycopg.connect(url, **options), giving up after CONNECT_TIMEOUT seconds unless
    the URL says otherwise."""
    if "connect_timeout" not in url:
        options.setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        return psycopg.connect(url, **options)
    except psycopg.OperationalError as e:
        raise StoreUnavailable(f"cannot connect to the store at {shown(url)}: "
                               f"{_one_line(e, url)}") from None
    except psycopg.ProgrammingError as e:
        raise ValueError(f"{shown(url)} is not a PostgreSQL URL libpq can read: "
                         f"{_one_line(e, url)}") from None


def missing_schema(url, schema=SCHEMA):
    """None if a store was made in the database at ``url`` (in ``schema``); else what is
    missing there, in a few words.  Creates nothing."""
    with connect(url, autocommit=True) as conn:
        return missing_in(conn, schema)


def missing_in(conn, schema=SCHEMA):
    """missing_schema on an open connection: reads the catalog and the format row, takes
    no lock that could wait for a writer."""
    meta = conn.execute("SELECT to_regclass(format('%%I.meta', %s::text))",
                        (schema,)).fetchone()[0]
    if meta is None:
        return f"no {schema} schema in that database"
    made = conn.execute(sql.SQL("SELECT 1 FROM {}.meta WHERE name = 'format'").format(
        sql.Identifier(schema))).fetchone()
    return None if made else f"the {schema} schema holds no store"
