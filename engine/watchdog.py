"""The watchdog: one thread per engine that keeps the leases of the executions it holds
(running or parked), ends them at their timeouts and carries out requests from outside
(cancel, pause, restore, delete) while their flows compute, wait in a connector or are
parked."""
import _thread
import logging
import threading
import time

from engine.errors import StoreUnavailable
from engine.lifecycle import TIMEOUT_ERROR, pending_requests
from engine.types import Status

log = logging.getLogger("engine")

WATCH_SECONDS = 0.05            # how often the watchdog looks for timeouts and requests
IDLE_WATCH_SECONDS = 1.0        # ... when it watches nothing (a new timeout pokes it)


class Watchdog:
    """Renews the runner's leases every third of lease_seconds (so a flow computing
    longer than a lease keeps it; a stopped process stops the thread too, and its leases
    run out), and watches the runner's runs (engine.runner.Run)."""

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
                    runner.renew_all()
                if runner.runs:
                    _watch(runner)
            except StoreUnavailable as e:       # the store gave up waiting for its server
                log.warning("watchdog: %s", e)
            except Exception:                   # closed meanwhile: the next round stops
                if self.stopped.is_set():
                    return
                log.exception("watchdog")


def _watch(runner):
    """End runs at their timeouts; carry out requests from outside -- one look at the
    store for all of them, however many executions are parked here."""
    now = time.time()
    for run in list(runner.deadlines.values()):
        timeout_at = run.record.get("timeout_at")
        if not run.done and timeout_at is not None and now >= timeout_at:
            _ended(runner, run, run.end_elsewhere(
                lambda run=run: run.write_end(Status.ENDED_ERROR, error=TIMEOUT_ERROR)))
    runs = runner.runs
    for exec_id, request in pending_requests(runner.store, runs).items():
        run = runs.get(exec_id)
        if run is not None and not run.done:
            _ended(runner, run, run.take_request(request))


def _ended(runner, run, ended):
    """A parked run ended elsewhere has no thread to finish it: finish it here."""
    if ended and runner.scheduler.discard(run):
        runner.finish(run)
