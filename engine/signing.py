"""The store's secret key: every value the store writes is signed with it
(engine._codec.Signer: SipHash-2-4, 128-bit tags), so someone who can write the store's
files but cannot read the key cannot make the engine accept -- and run -- a record.

Where the key comes from, first found:
    ENGINE_SECRET_KEY        the secret itself (any text)
    ENGINE_SECRET_KEY_FILE   a file holding it
    <store>/secret.key       for an LMDB store: created with the store, mode 0600
    a file of the user's     for a PostgreSQL store (engine/store/pgkey.py)

The key file protects against someone who can write data.mdb but not read secret.key
(another user given write access to the data file, a tampered backup or copy of it, a
shared volume).  It does not protect against someone who can read the key file -- the
store's owner, root: keep the secret elsewhere (ENGINE_SECRET_KEY_FILE on a secrets
mount) when that matters.  A signature binds a record's bytes, not where it is kept:
someone who can write the store can still delete records, or put back an older signed
record (roll an execution back to an earlier savepoint) -- only ever code and data the
engine itself wrote.
"""
import hashlib
import os

KEY_FILE = "secret.key"
_PERSON = b"savepoint-sig"          # domain separation for the derived key


def derive(secret: bytes) -> bytes:
    """The 16-byte signing key for a secret of any length."""
    return hashlib.blake2b(secret, digest_size=16, person=_PERSON).digest()


def _read(path, what):
    try:
        with open(path, "rb") as fh:
            secret = fh.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    if not secret:
        raise ValueError(f"{what} {path} is empty")
    return secret


def store_key(store_dir: str, *, create: bool, missing: str | None = None) -> bytes:
    """The signing key of the store in ``store_dir``: from the environment, else its key
    file -- created (mode 0600) when ``create`` (a new store), else it must exist
    (``missing``: what the ValueError says when it does not)."""
    text = os.environ.get("ENGINE_SECRET_KEY")
    if text:
        return derive(text.encode())
    named = os.environ.get("ENGINE_SECRET_KEY_FILE")
    if named:
        return derive(_read(named, "$ENGINE_SECRET_KEY_FILE"))
    path = os.path.join(store_dir, KEY_FILE)
    if create and not os.path.exists(path):
        os.makedirs(store_dir, exist_ok=True)      # (made only when a key file is)
        # written whole under another name, then linked into place: a process opening
        # the store at the same moment sees no file or the whole key, never half of it
        partial = f"{path}.{os.getpid()}.new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32).hex().encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.link(partial, path)
        except FileExistsError:
            pass                                   # another process made it first
        finally:
            os.unlink(partial)
    elif not os.path.exists(path):
        if missing is not None:
            raise ValueError(missing)
        raise ValueError(f"the store {store_dir} was signed with a key that is not here: "
                         f"no {KEY_FILE} beside it and neither $ENGINE_SECRET_KEY nor "
                         f"$ENGINE_SECRET_KEY_FILE is set")
    return derive(_read(path, "key file"))
