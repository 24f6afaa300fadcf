"""What the seeds' example (rt_flows.seed_example) works with, for real: the SQLite
database it reads (rt_flows.db_reader), and the remote API it uploads to
(rt_flows.uploader) -- an HTTP server on 127.0.0.1 whose first upload fails with HTTP
500 and whose later uploads are kept (or, for the example with a wrong path,
edit_flows.seed_wrong_path, one that answers 404 to any path but its own)."""
import http.server
import json
import sqlite3
import threading

ROWS = [(1, "a"), (2, "b"), (3, "c")]


def make_database(path):
    """A SQLite database at ``path`` with the table ``data`` holding ROWS."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE data (id INTEGER, name TEXT)")
    con.executemany("INSERT INTO data VALUES (?, ?)", ROWS)
    con.commit()
    con.close()


class UploadServer:
    """Serving from construction until shutdown(); ``url``, ``attempts``, ``received``
    (the JSON bodies of the uploads that succeeded).  ``fail_first``: the first upload
    fails with HTTP 500; ``path``: uploads to any other path fail with HTTP 404."""

    def __init__(self, fail_first=True, path=None):
        self.attempts, self.received = 0, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                owner.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"] or 0))
                failure = 500 if fail_first and owner.attempts == 1 else \
                    404 if path is not None and self.path != path else None
                if failure is not None:
                    self.send_response(failure)
                    self.end_headers()
                    return
                owner.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def shutdown(self):
        self.httpd.shutdown()
        self.httpd.server_close()
