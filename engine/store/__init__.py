"""The store: where executions, their savepoints and everything around them are kept.

    base.py       StoreProtocol: what the runtime asks of a store, method by method
    records.py    the record layout: an execution's fields, a savepoint's meta and state
    leases.py     Owner and Lease: which process holds an execution, until when
    lmdb.py       LmdbStore, the LMDB backend (Store: the backend Engine opens)
    lmdbtables.py its named databases: keys, signed values, records inside a transaction
    lmdbclaims.py its claims: lease recovery per owner, claim_many, renew_many, next_due
    lmdbfile.py   its data file: checked before LMDB maps it, allocated before it writes
    check.py      engine doctor: verify every record of an LMDB store, repair indexes
"""
from engine.store.base import CheckReport, Problem, StoreProtocol, retention_error
from engine.store.leases import Lease, Owner
from engine.store.lmdb import FORMAT, LmdbStore

Store = LmdbStore             # the backend Engine, the workers and the command open

__all__ = ["Store", "LmdbStore", "StoreProtocol", "CheckReport", "Problem", "Owner",
           "Lease", "FORMAT", "retention_error"]
