"""Where a store is: an LMDB directory, or a PostgreSQL URL ("postgresql://user:password@
host:port/database").  Telling the two apart, a location as another process finds it, and
a location as messages show it -- a URL without its password, wherever it is quoted."""
import os
import re

URL_SCHEMES = ("postgresql://", "postgres://")
# the password of a URL's user (user:PASSWORD@host) or its ?password= / &password= part
_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*(@)|([?&]password=)[^&\s]*")


def is_url(path):
    """Whether ``path`` (a str or os.PathLike) names a PostgreSQL store."""
    return path is not None and os.fspath(path).startswith(URL_SCHEMES)


def absolute(path):
    """The location as a process in another working directory finds it: a URL as it
    is, a directory made absolute."""
    return os.fspath(path) if is_url(path) else os.path.abspath(path)


def redacted(text):
    """``text`` with the password of every PostgreSQL URL in it replaced by ***."""
    return _PASSWORD.sub(lambda m: (f"{m[1]}***{m[2]}" if m[1] else f"{m[3]}***"), text)


def shown(path):
    """The location as messages show it: a URL without its password."""
    return redacted(os.fspath(path))
