"""The watchdog: one thread per engine that keeps the leases of the executions it runs,
ends them at their timeouts and carries out requests from outside (cancel, pause,
restore, delete) while their flows compute, sleep or wait in a connector."""
import _thread
import logging
import threading
import time

from engine.lifecycle import TIMEOUT_ERROR, pending_request
from engine.types import Status

log = logging.getLogger("engine")

WATCH_SECONDS = 0.05            # how often the watchdog looks for timeouts and requests
IDLE_WATCH_SECONDS = 1.0        # ... when it watches nothing (a new timeout pokes it)


class Watchdog:
    """Renews the runner's leases every third of lease_seconds (so a flow computing
    longer than a lease keeps it; a stopped process stops the thread too, and its leases
    run out), and watches each of the runner's runs (engine.runner.Run)."""

    def __init__(self, runner):
        self.runner = runner
        self.stopped = threading.Event()
        self.poke = threading.Event()        # a new execution to watch
        # _thread: unlike Thread.start(), does not wait for the thread to be scheduled --
        # this runs before an execution resumes, where every 100 us shows
        _thread.start_new_thread(self._loop, ())

    def stop(self) -> None:
        self.stopped.set()
        self.poke.set()

    def _loop(self):
        runner = self.runner
        renew_every = runner.lease_seconds / 3
        next_renewal = time.monotonic() + renew_every
        while True:
            self.poke.wait(WATCH_SECONDS if runner.runs else
                           min(renew_every, IDLE_WATCH_SECONDS))
            self.poke.clear()
            if self.stopped.is_set():
                return
            try:
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + renew_every
                    for exec_id in list(runner.running):
                        runner.renew(exec_id)
                for run in list(runner.runs.values()):
                    _watch(run)
            except Exception:                   # closed meanwhile: the next round stops
                if self.stopped.is_set():
                    return
                log.exception("watchdog")


def _watch(run):
    """End the run at its timeout; carry out a request from outside."""
    if run.done:
        return
    timeout_at = run.record.get("timeout_at")
    if timeout_at is not None and time.time() >= timeout_at:
        run.end_elsewhere(lambda: run.write_end(Status.ENDED_ERROR, error=TIMEOUT_ERROR))
        return
    request = pending_request(run.store, run.execution_id)
    if request is not None:
        run.take_request(request)
