"""Worker processes: a supervisor keeps N of them running; each claims runnable executions
from the store, runs them, and saves them back.

Workers are stateless: everything is in the store, so a worker may die (even by SIGKILL)
at any moment -- the others see its dead pid at their next claim and resume its executions
from their last savepoints, and the supervisor starts a new worker in its place.  An idle
worker claims the next due execution, so the least busy one takes it; each runs up to
`concurrency` executions at once (engine.scheduler) and claims only while it has a free
thread.  SIGTERM or Ctrl-C
stops the pool cleanly: each worker's running flow leaves at its next Flow-API call, back
to the queue, and nothing stays claimed.

Each worker reports what it does to the store every REPORT_SECONDS, as the setting
"worker:HOST:PID" (HOST: engine.store.leases.this_host); stats() reads them: a worker
on this host is live while its process runs, one on another host while it reports.
"""
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time

from engine import schedules
from engine.errors import StoreUnavailable, WorkerStartError
from engine.store import Owner
from engine.store.leases import this_host

log = logging.getLogger("engine.workers")

REPORT_SECONDS = 1.0
REPORT_PREFIX = "worker:"
SILENT_SECONDS = 5 * REPORT_SECONDS     # a worker on another host that has not reported
                                        # for this long is taken for gone
FORGET_SECONDS = 600.0       # a report this old, of a worker not alive, is deleted
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"   # workers and their CLI
START_ATTEMPTS = 5           # a worker that fails to start that many times in a row:
                             # the pool gives up
RESPAWN_BACKOFF = (0.5, 30.0)   # first and longest wait before starting it again


def refuse_script_rerun():
    """multiprocessing's spawn runs the parent's __main__ script again in each new worker
    before the worker's own code (multiprocessing/spawn.py: _main sets
    current_process()._inheriting meanwhile, which its own _check_not_importing_main
    reads, 3.11).  An Engine made then is the script's top-level code running again: it
    would start its flows once more in every worker the pool starts."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise WorkerStartError(
            "an Engine was made while a worker process started: the script that called "
            "eng.work() runs again in each worker -- put its top-level code under "
            "`if __name__ == \"__main__\":`")


def report_name(host, pid):
    """The setting a worker's reports go to."""
    return f"{REPORT_PREFIX}{host}:{pid}"


def _worker_main(recipe, sys_path, log_level, index, supervisor, started):
    """A worker process: its own Engine on the same store, until told to stop.
    ``started`` (a queue) hears (pid, None) once it is ready, or (pid, why) if it
    cannot start; ``supervisor``: the pid of the pool's supervisor (its reports name
    it, so the pool's metrics show its own workers)."""
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    try:
        eng = recipe.build()
    except Exception as e:
        started.put((os.getpid(), f"{type(e).__name__}: {e}"))
        raise
    started.put((os.getpid(), None))
    signal.signal(signal.SIGTERM, lambda *_: eng.stop())
    signal.signal(signal.SIGINT, lambda *_: eng.stop())
    me = report_name(this_host(), os.getpid())
    log.info("worker %d (pid %d) started, %d executions at once", index, os.getpid(),
             eng.concurrency)
    _forget_old_reports(eng.store)
    reporter = threading.Thread(target=_report, args=(eng, me, index, supervisor),
                                daemon=True, name="engine-report")
    reporter.start()
    ticker = threading.Thread(target=schedules.tick_until_stopped, args=(eng,),
                              daemon=True, name="engine-schedules")
    ticker.start()
    try:
        eng.run(until="stopped")
    finally:
        eng.stop()                  # after an error too: the reporter's loop ends
        reporter.join()
        ticker.join()
        eng.store.delete_setting(me)
        eng.close()
        log.info("worker %d (pid %d) stopped", index, os.getpid())


def _report(eng, me, index, supervisor):
    """Every REPORT_SECONDS, what this worker did (engine stats): its busy fraction --
    of all its threads -- and its rates."""
    owner = Owner.current("worker")
    last_at, last = time.monotonic(), eng.counters()
    while not eng.wait_for_stop(REPORT_SECONDS):
        now, done = time.monotonic(), eng.counters()
        span = now - last_at
        busy = (done.busy_seconds - last.busy_seconds) / eng.concurrency
        report = {
            "pid": owner.pid, "start": owner.start, "host": owner.host,
            "supervisor": supervisor, "index": index, "reported": time.time(),
            "busy_fraction": min(1.0, busy / span),
            "running": done.running, "parked": done.parked,
            "calls_per_s": (done.calls - last.calls) / span,
            "executions_per_s": (done.executions - last.executions) / span,
            "calls": done.calls, "executions": done.executions,
            "commit_counts": list(done.commit_counts), "commit_seconds": done.commit_seconds}
        try:
            eng.store.set_setting(me, report)
        except StoreUnavailable as e:       # the worker outlives its store's outages
            log.warning("worker %d: no report this time: %s", index, e)
        last_at, last = now, done


class Pool:
    """A supervisor and its worker processes."""

    def __init__(self, eng, processes, connectors=None):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a whole number >= 1, not {processes!r}")
        # Workers are fresh interpreters ("spawn"): LMDB environments must not cross a
        # fork.  Connectors reach them by import path -- module-level functions, or a
        # module with register(eng) -- never as closures.
        for name, func in eng.connectors.items():
            try:
                pickle.dumps(func)
            except Exception:
                raise ValueError(
                    f"connector {name!r} ({func!r}) cannot be sent to worker processes; "
                    f"define it at module level, or register it from a module's "
                    f"register(eng) named with eng.work(connectors=...)") from None
        self.processes = processes
        self.store = eng.store
        try:                                # fails here, once, not in every worker
            self.recipe = eng.recipe(connectors)
        except Exception as e:
            module = connectors if isinstance(connectors, str) else connectors.__name__
            raise WorkerStartError(f"the workers cannot start: {module}.register(eng) "
                                   f"failed: {type(e).__name__}: {e}") from None
        self.sys_path = list(sys.path)
        self.log_level = logging.getLogger().level or logging.WARNING
        self.context = multiprocessing.get_context("spawn")
        self.started = self.context.Queue()
        self.children = {}
        self.ready = set()          # pids of workers that started
        self.why = {}               # pid -> why that worker could not start
        self.failures = {}          # index -> failed starts in a row
        self.stopping = False

    def _spawn(self, index):
        proc = self.context.Process(target=_worker_main, name=f"engine-worker-{index}",
                                    args=(self.recipe, self.sys_path, self.log_level,
                                          index, os.getpid(), self.started))
        proc.start()
        self.children[index] = proc
        return proc

    def _heard(self):
        """Drain the start reports of the workers."""
        while True:
            try:
                pid, why = self.started.get_nowait()
            except Exception:                     # queue.Empty
                return
            if why is None:
                self.ready.add(pid)
            else:
                self.why[pid] = why

    def _died(self, index, proc, respawn_at):
        """A worker died: start another -- at once if it had started (killed, crashed),
        after a growing wait if it could not even start; give up after START_ATTEMPTS
        failed starts in a row.  One SIGKILLed from outside while it started (an
        operator, a chaos test, the OOM killer) did not fail: it starts again at once,
        and its failures so far stand -- killing workers never stops the pool."""
        self._heard()
        self.store.delete_setting(report_name(this_host(), proc.pid))   # it cannot
        started = proc.pid in self.ready
        self.ready.discard(proc.pid)
        killed = not started and proc.exitcode == -signal.SIGKILL
        if not killed:
            self.failures[index] = 0 if started else self.failures.get(index, 0) + 1
        why = self.why.pop(proc.pid, None) or f"exit status {proc.exitcode}"
        if not killed and self.failures[index] >= START_ATTEMPTS:
            raise WorkerStartError(f"worker {index} failed to start {self.failures[index]} "
                                   f"times in a row; giving up. Last: {why}")
        first, longest = RESPAWN_BACKOFF
        delay = 0.0 if started or killed else \
            min(longest, first * 2 ** (self.failures[index] - 1))
        log.warning("worker %d (pid %s) died (%s); starting another%s", index, proc.pid,
                    why, f" in {delay:g} s" if delay else "")
        respawn_at[index] = time.monotonic() + delay

    def pids(self):
        return [p.pid for p in self.children.values() if p.is_alive()]

    def run(self):
        def stop(*_):
            self.stopping = True
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        respawn_at = {}             # index -> when to start a dead worker again
        try:
            for index in range(self.processes):
                self._spawn(index)
            while not self.stopping:
                for index, proc in list(self.children.items()):
                    if index not in respawn_at and not proc.is_alive() and \
                            not self.stopping:
                        self._died(index, proc, respawn_at)
                for index, at in list(respawn_at.items()):
                    if time.monotonic() >= at and not self.stopping:
                        del respawn_at[index]
                        self._spawn(index)
                time.sleep(0.05)
        finally:
            for proc in self.children.values():
                if proc.is_alive():
                    proc.terminate()                 # SIGTERM: leave at the next call
            deadline = time.monotonic() + 30
            for proc in self.children.values():
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():                  # stuck outside any Flow-API call
                    proc.kill()
                    proc.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _live(report, now):
    """Whether the worker a report is from still runs: on this host, its process; on
    another, it reported within SILENT_SECONDS."""
    owner = Owner(report["pid"], report["start"], report["host"])
    if owner.here():
        return owner.alive()
    return now - report["reported"] <= SILENT_SECONDS


def _reports(store):
    """{setting name: report} of every worker that reported (of any host; a report of
    an older engine names the host "boot")."""
    return {name: {"host": report.get("boot"), **report}
            for name, report in store.settings(REPORT_PREFIX).items()
            if isinstance(report, dict)}


def _forget_old_reports(store):
    """Delete the reports of workers long gone (a host that died cannot)."""
    now = time.time()
    for name, report in _reports(store).items():
        if now - report["reported"] > FORGET_SECONDS and not _live(report, now):
            store.delete_setting(name)


def stats(store, *, supervisor=None):
    """Per live worker -- of every host, or only those of the pool whose supervisor is
    this host's process ``supervisor`` -- its host, busy fraction, executions running
    and parked, Flow-API calls and executions per second (over its last report); and
    the queue depth."""
    now, here = time.time(), this_host()
    workers = []
    for name, report in sorted(_reports(store).items()):
        if supervisor is not None and (report["host"] != here or
                                       report.get("supervisor") != supervisor):
            continue
        if not _live(report, now):
            continue
        workers.append({key: report.get(key) for key in (
            "host", "pid", "index", "busy_fraction", "running", "parked", "calls_per_s",
            "executions_per_s", "calls", "executions", "reported", "commit_counts",
            "commit_seconds")})
    return {"workers": workers, "queue_depth": store.queue_depth(),
            "calls_per_s": sum(w["calls_per_s"] for w in workers),
            "executions_per_s": sum(w["executions_per_s"] for w in workers)}
