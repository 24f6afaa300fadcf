"""A real PostgreSQL server for the tests: a cluster of its own in a temporary directory,
listening on 127.0.0.1 (password auth, so a wrong password can be tested) and on a unix
socket, started and restarted with pg_ctl.

The binaries: $ENGINE_TEST_PG_BIN (e.g. Debian's /usr/lib/postgresql/15/bin), else those
the ``pgserver`` wheel ships (a test dependency: pip alone gives a fresh machine a server).
initdb refuses to run as root, so as root the cluster belongs to a system user made for it.
"""
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager

USER = "savepoint-pg"            # the system user owning the cluster when we are root
PASSWORD = "engine-test"         # of the database superuser "postgres"


def binaries():
    """The directory holding initdb, pg_ctl and postgres."""
    named = os.environ.get("ENGINE_TEST_PG_BIN")
    if named:
        return named
    # found, not imported: importing pgserver starts its own machinery
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the PostgreSQL tests need a server: pip install -e '.[test]' (brings "
            "pgserver) or set ENGINE_TEST_PG_BIN to a directory with initdb and pg_ctl")
    return os.path.join(spec.submodule_search_locations[0], "pginstall", "bin")


def _system_user():
    """As root: the uid/gid of the user the cluster runs as (created once)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True)
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL cluster: ``url(dbname)``, ``create_database()``, ``empty_database()``
    and ``give_back()``, ``restart()``, ``down()``, ``stop()``.  ``fsync``: whether the
    server makes its commits durable -- off for the tests (the machine's durability is not
    under test), on for benchmarks that time synchronous commits."""

    def __init__(self, *, fsync=False):
        self.bin = binaries()
        self.ids = _system_user()
        self.dir = tempfile.mkdtemp(prefix="engine-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.port = _free_port()
        self.free = []              # URLs of emptied databases (empty_database, give_back)
        self.made = 0
        if self.ids:
            os.chown(self.dir, *self.ids)
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as fh:
            fh.write(PASSWORD + "\n")
        if self.ids:
            os.chown(pwfile, *self.ids)
        # local (unix socket) connections trusted for the harness; TCP needs the password
        self._run("initdb", "-D", self.data, "-U", "postgres", "--pwfile", pwfile,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--locale=C")
        os.unlink(pwfile)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as fh:
            # the store's own sync/async setting still decides how each commit is made
            durable = "on" if fsync else "off"
            fh.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                     f"unix_socket_directories = '{self.dir}'\n"
                     f"fsync = {durable}\nfull_page_writes = {durable}\n"
                     "max_connections = 400\nshared_buffers = 64MB\n")
        self.start()

    def _run(self, tool, *args, check=True, timeout=60):
        return subprocess.run([os.path.join(self.bin, tool), *args], check=check,
                              timeout=timeout, capture_output=True, text=True,
                              user=self.ids[0] if self.ids else None,
                              group=self.ids[1] if self.ids else None, cwd=self.dir)

    def _pg_ctl(self, *action):
        try:
            self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", *action)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"pg_ctl {' '.join(action)} failed: {e.stderr}\n"
                               f"{self.log_text()}") from None

    def log_text(self):
        try:
            with open(self.log) as fh:
                return fh.read()[-4000:]
        except OSError:
            return ""

    def start(self):
        self._pg_ctl("start")

    def restart(self):
        """pg_ctl restart -m fast: every connection is cut; back when it accepts again."""
        self._pg_ctl("restart", "-m", "fast")

    @contextmanager
    def down(self):
        """The server stopped (pg_ctl stop -m fast: every connection cut, none accepted)
        for the block; started again after it."""
        self._pg_ctl("stop", "-m", "fast")
        try:
            yield
        finally:
            self.start()

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname="postgres", password=PASSWORD, user="postgres"):
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name):
        """A new empty database; its URL."""
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def empty_database(self):
        """The URL of an empty database for a test: one a test gave back, else a new one.
        (CREATE DATABASE copies template1: 0.1-0.2 s and 10 MB of files each, for each of
        the suite's ~150 stores; emptying one for the next test takes ~30 ms.)"""
        if self.free:
            return self.free.pop()
        self.made += 1
        return self.create_database(f"t{self.made}")

    def give_back(self, url):
        """A test is done with the database at ``url``: drop every schema in it (the
        store's and any other) and keep it for the next test -- unless something still
        holds a lock there after a few seconds (a process the test left running): then it
        is left as it is, and not handed out again."""
        import psycopg
        from psycopg import sql
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                conn.execute("SET lock_timeout = '5s'")
                schemas = [r[0] for r in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                    "AND nspname <> 'information_schema'")]
                with conn.transaction():
                    for schema in schemas:
                        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(
                            sql.Identifier(schema)))
                    conn.execute("CREATE SCHEMA public")
        except psycopg.Error:
            return
        self.free.append(url)

    def wait_ready(self, seconds=30):
        import psycopg
        deadline = time.monotonic() + seconds
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
