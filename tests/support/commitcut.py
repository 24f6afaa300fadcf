"""A TCP proxy in front of the test PostgreSQL server that can cut a connection at the next
COMMIT a client sends (or the next message holding other given bytes: a statement that is
a transaction of its own, say) -- the two ways a COMMIT goes unanswered:

    "before"  the COMMIT never reaches the server (which rolls the transaction back)
    "after"   the server gets it and commits; its answer never reaches the client

Either way the client sees its connection lost, and cannot tell which happened.
"""
import socket
import threading

COMMIT = b"COMMIT\x00"          # the query text of a COMMIT message, as psycopg sends it


class CommitCutter:
    """Forwards every connection made to ``port`` to the server at ``target`` (host,
    port); ``cut_next_commit(when)`` arms one cut and returns an Event set once made
    (``cut_next(marker, when)``: at the next message holding ``marker``)."""

    def __init__(self, target):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed = None                  # (when, Event) of the next cut
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url, real_port):
        """``url`` (of the server at ``real_port``) through this proxy."""
        return url.replace(f":{real_port}/", f":{self.port}/")

    def cut_next_commit(self, when):
        return self.cut_next(COMMIT, when)

    def cut_next(self, marker, when):
        assert when in ("before", "after")
        done = threading.Event()
        with self._lock:
            self._armed = (when, done, marker)
        return done

    def close(self):
        self._closed = True
        self._listener.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            link = {"cut_answer": None}
            threading.Thread(target=self._up, args=(client, server, link),
                             daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, link),
                             daemon=True).start()

    def _take(self, data):
        """The armed cut, if ``data`` holds a COMMIT (and disarm it)."""
        with self._lock:
            if self._armed is None or self._armed[2] not in data:
                return None
            armed, self._armed = self._armed, None
            return armed

    def _up(self, client, server, link):
        """Client to server."""
        try:
            while data := client.recv(65536):
                armed = self._take(data)
                if armed is not None and armed[0] == "before":
                    armed[1].set()               # before the client can see the cut
                    _close(client, server)
                    return
                if armed is not None:
                    link["cut_answer"] = armed[1]      # before the server can answer
                server.sendall(data)
        except OSError:
            pass
        _close(client, server)

    @staticmethod
    def _down(server, client, link):
        """Server to client."""
        try:
            while data := server.recv(65536):
                if link["cut_answer"] is not None:
                    link["cut_answer"].set()     # before the client can see the cut
                    _close(client, server)
                    return
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*sockets):
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
