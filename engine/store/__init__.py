"""The store: where executions, their savepoints and everything around them are kept.

    base.py       StoreProtocol: what the runtime asks of a store, method by method
    records.py    the record layout: an execution's fields, a savepoint's meta and state
    leases.py     Owner and Lease: which process holds an execution, until when
    lmdb.py       LmdbStore, the LMDB backend
    postgres.py   PostgresStore, the PostgreSQL backend (Store opens it for a URL)
    lmdbtables.py its named databases: keys, signed values, records inside a transaction
    lmdbclaims.py its claims: lease recovery per owner, claim_many, renew_many, next_due
    lmdbfile.py   its data file: checked before LMDB maps it, allocated before it writes
    check.py      engine doctor: verify every record of an LMDB store, repair indexes
"""
from engine.store.base import CheckReport, Problem, StoreProtocol, retention_error
from engine.store.leases import Lease, Owner
from engine.store.lmdb import FORMAT, LmdbStore

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(path):
    """Whether ``path`` names a PostgreSQL database (a URL), not an LMDB directory."""
    return path is not None and str(path).startswith(_URL_SCHEMES)


def Store(path=None, *, durability="sync", **options) -> StoreProtocol:
    """The store Engine, the workers and the command open: PostgresStore for a
    "postgresql://" URL, else LmdbStore at the path.  (Imported only when asked for:
    psycopg is needed for PostgreSQL only.)"""
    if is_url(path):
        from engine.store.postgres import PostgresStore
        return PostgresStore(str(path), durability=durability, **options)
    return LmdbStore(path, durability=durability, **options)

__all__ = ["Store", "is_url", "LmdbStore", "StoreProtocol", "CheckReport", "Problem", "Owner",
           "Lease", "FORMAT", "retention_error"]
