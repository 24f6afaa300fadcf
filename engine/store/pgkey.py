"""Where this host keeps the signing key of a PostgreSQL store when the environment names
none.  Hosts sharing a store must share its key: they set $ENGINE_SECRET_KEY or
$ENGINE_SECRET_KEY_FILE (engine.signing).  Without them, the key of a store a process
makes goes to a file of the user's own, one per store:

    $XDG_CONFIG_HOME/savepoint-engine/postgres/<hash>/secret.key   (~/.config when unset)

<hash> names the store by its server, database and schema -- not by the user or password
in the URL, which may change while the store stays the same.
"""
import hashlib
import os

import psycopg


def key_dir(url, schema):
    """The directory of the key file of the store in ``schema`` at ``url``."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    where = "\0".join(str(info.get(name) or "") for name in ("host", "hostaddr", "port",
                                                             "dbname"))
    name = hashlib.blake2b(f"{where}\0{schema}".encode(), digest_size=16).hexdigest()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                               ".config")
    return os.path.join(config, "savepoint-engine", "postgres", name)
