"""The store: where executions, their savepoints and everything around them are kept.

    base.py       StoreProtocol: what the runtime asks of a store, method by method
    records.py    the record layout: an execution's fields, a savepoint's meta and state
    leases.py     Owner and Lease: which process holds an execution, until when
    lmdb.py       LmdbStore, the LMDB backend
    postgres.py   PostgresStore, the PostgreSQL backend (Store opens it for a URL)
    pgconnect.py  its connections: a server that cannot be reached, one clear line
    location.py   where a store is: a directory or a URL, shown without a password
    lmdbtables.py its named databases: keys, signed values, records inside a transaction
    lmdbclaims.py its claims: lease recovery per owner, claim_many, renew_many, next_due
    lmdbfile.py   its data file: checked before LMDB maps it, allocated before it writes
    check.py      engine doctor: verify every record of an LMDB store, repair indexes
"""
import os

from engine.store.base import CheckReport, Problem, StoreProtocol, retention_error
from engine.store.leases import Lease, Owner
from engine.store.lmdb import FORMAT, LmdbStore
from engine.store.location import is_url


def Store(path=None, *, durability="sync", **options) -> StoreProtocol:
    """The store Engine, the workers and the command open: PostgresStore for a
    "postgresql://" URL, else LmdbStore at the path.  (Imported only when asked for:
    psycopg is needed for PostgreSQL only.)"""
    if is_url(path):
        from engine.store.postgres import PostgresStore
        return PostgresStore(os.fspath(path), durability=durability, **options)
    return LmdbStore(path, durability=durability, **options)


def missing_store(path) -> str | None:
    """None if a store is at ``path`` (a directory or a URL); else what is missing there,
    in a few words.  Opens nothing and creates nothing; StoreUnavailable if the server
    of a URL cannot be asked."""
    if is_url(path):
        from engine.store.pgconnect import missing_schema
        return missing_schema(os.fspath(path))
    if os.path.exists(os.path.join(path, "data.mdb")):
        return None
    return "no data.mdb there"


__all__ = ["Store", "missing_store", "is_url", "LmdbStore", "StoreProtocol", "CheckReport",
           "Problem", "Owner", "Lease", "FORMAT", "retention_error"]
