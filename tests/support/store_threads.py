"""Threads on one store, for the store tests: run a function on many threads at once, and
hold a write transaction open so that other threads' writes queue up behind it."""
import threading


def run_threads(target, count):
    """target(k) on ``count`` threads started together; the exceptions they raised."""
    errors = []
    start = threading.Barrier(count)

    def body(k):
        try:
            start.wait()
            target(k)
        except BaseException as e:          # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    return errors


class HeldWrite:
    """A write transaction held open by a thread (update_unless_leased whose change
    waits), so that the writes other threads make meanwhile queue up behind it."""

    def __init__(self, store, exec_id):
        store.put_execution({"id": exec_id, "status": "QUEUED", "due": None})
        self.inside, self.go = threading.Event(), threading.Event()

        def change(head):
            self.inside.set()
            assert self.go.wait(60)

        def hold():
            try:
                self.outcome = store.update_unless_leased(exec_id, change)
            except Exception as e:        # noqa: BLE001 - the test looks at it
                self.outcome = e

        self.outcome = None
        self.thread = threading.Thread(target=hold)
        self.thread.start()
        assert self.inside.wait(30)

    def release(self):
        self.go.set()
        self.thread.join(60)
