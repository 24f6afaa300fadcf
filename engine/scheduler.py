"""The scheduler: one engine's threads, and its waiting executions parked in memory.

Up to ``concurrency`` executions run at once, each on a thread (flows are plain synchronous
code; a connector waiting on I/O releases the GIL).  The thread that called eng.run() or
eng.execute() works too, so concurrency 1 needs no other thread; more are started as work
appears and stay, idle, until the engine closes.

A waiting execution holds no thread: a sleep or a wait for children leaves its flow with
engine.leaving.Park, whose frames -- as captured for the savepoint already committed --
stay here until a timer (a sleep) or wake() (a child ended) puts it back on the ready
queue, and any thread continues it.  Its lease stays held (the watchdog renews it), so no
other process takes it; if this process dies, another resumes it from that savepoint.

New work is claimed from the store only while a thread is free.  The run queue is also
how another process wakes an execution parked here (a child of it ended there): the
store hands our own parked execution back to our claim, and that wakes it.  Work started
in this process wakes an idle engine at once (notify); work from elsewhere, as the store
allows (Store.poll_seconds, Store.on_work):
  - LMDB cannot signal other processes: an engine with a free thread looks at the queue
    every 20 ms (Store.claim_many: a read-only look, the write lock only when something
    is due);
  - PostgreSQL tells (LISTEN/NOTIFY, notify() from the store's thread, with the time the
    work is due): between those, an idle engine looks only at the queue's next due time
    (Store.next_due) or after the store's slow poll, whichever comes first.
One idle thread, the watcher, keeps that time and the timers; the others sleep until
there is a task.  A store that cannot be reached (StoreUnavailable, once it gave up
waiting for it) ends a session that ends when idle; a worker's logs it and goes on.
"""
import heapq
import itertools
import logging
import threading
import time
from collections import deque

from engine.errors import StoreUnavailable

log = logging.getLogger("engine")

LONGEST_WAIT = 1.0           # an idle thread looks around at least this often


class Session:
    """One eng.run() / eng.execute() call: whether it claims work from the store, whether
    it ends when idle or only once the engine stops, and the error that ends it."""
    __slots__ = ("claims", "until_stopped", "error", "quiet_at")

    def __init__(self, claims, until_stopped):
        self.claims = claims
        self.until_stopped = until_stopped
        self.error = None
        self.quiet_at = -1          # the scheduler's change count when a claim found nothing


class Task:
    """Work for a thread: start (or resume from the store) a claimed execution -- one
    ``asked`` for by id (eng.execute) or one the queue gave -- or continue a parked Run."""
    __slots__ = ("exec_id", "run", "asked", "session")

    def __init__(self, exec_id, run, asked, session):
        self.exec_id, self.run, self.asked, self.session = exec_id, run, asked, session


class Scheduler:
    """The threads, the ready queue, the parked runs and their timers of one Runner."""

    def __init__(self, runner, concurrency):
        self.runner = runner
        self.concurrency = concurrency
        # Threads waiting for a task wait on ``cond``; one idle thread, the watcher, waits
        # on ``watch`` for the next timer or look at the store (and is woken for new
        # work): 32 idle threads all waking every 20 ms cost 8% of a core.  One
        # RLock under both: stop() may run in a signal handler on a thread holding it.
        lock = threading.RLock()
        self.cond = threading.Condition(lock)
        self.watch = threading.Condition(lock)
        self.ready = deque()                  # Tasks
        # exec id -> Run parked in memory: asleep until a time, or waiting for children
        self.sleeping = {}
        self.waiting = {}
        self.timers = []                      # heap of (time, n, Run, Park)
        self.order = itertools.count()
        self.workers = 0          # threads taking tasks: pool threads + sessions' callers
        self.idle = 0             # of them, waiting for a task
        self.busy = 0             # of them, running a task
        self.sessions = []
        self.polling = False      # a thread is claiming from the store (outside the lock)
        self.unloading = 0        # runs and tasks being put back in the store now
        self.watching = False     # an idle thread is the watcher
        self.next_poll = 0.0      # monotonic time of the next claim when nothing was due
        self.told = None          # whether the store tells of new work (on_work); None:
                                  # not asked yet (at the first look)
        self.changes = 0          # counts what may make new work due: tasks ending, notify
        self.notices = 0          # counts notify() calls
        self.closed = False

    # -- from any thread ----------------------------------------------------------------
    def notify(self, due=None):
        """New work may be due from ``due`` (a UNIX time; None: now) -- started in this
        process, or told by the store (Store.on_work): look then."""
        with self.cond:
            self.notices += 1
            wait = 0.0 if due is None else due - time.time()
            if wait <= 0:
                self.changes += 1
                self.next_poll = 0.0
            else:
                self.next_poll = min(self.next_poll, time.monotonic() + wait)
            self.watch.notify()

    def wake_all(self):
        """Every thread looks again (the engine stops)."""
        with self.cond:
            self.changes += 1
            self._wake_everyone()

    def close(self):
        with self.cond:
            self.closed = True
            self._wake_everyone()

    def _wake_everyone(self):
        self.cond.notify_all()
        self.watch.notify_all()

    def park(self, run, park):
        """Keep ``run`` in memory until its wake time (``park.wake_at``), or until wake()
        -- a wait for children: at most sleep_max_seconds, then it is unloaded."""
        with self.cond:
            run.parked = park
            if park.wake_at is not None:
                self.sleeping[run.execution_id] = run
                at = park.wake_at
            else:
                self.waiting[run.execution_id] = run
                at = time.time() + self.runner.sleep_max_seconds
            heapq.heappush(self.timers, (at, next(self.order), run, park))
            self.changes += 1
            self.watch.notify()                  # its timer may come first

    def _take(self, exec_id, run=None):
        """Under the lock: the parked run of that id (if it is ``run``), no longer parked."""
        for parked in (self.sleeping, self.waiting):
            found = parked.get(exec_id)
            if found is not None and (run is None or found is run):
                del parked[exec_id]
                return found
        return None

    def wake(self, exec_id):
        """Continue that execution if it is parked here (on any free thread); whether
        it was."""
        with self.cond:
            run = self._take(exec_id)
            if run is not None:
                self._push(Task(exec_id, run, False, None))
            return run is not None

    def discard(self, run):
        """Forget a parked run (it was ended elsewhere); whether it was parked."""
        with self.cond:
            found = self._take(run.execution_id, run) is not None
            self.changes += 1                # it may be runnable now (a restore)
            self._task_ended()
            return found

    def counts(self):
        """(running, parked) executions now."""
        with self.cond:
            return self.busy, len(self.sleeping) + len(self.waiting)

    # -- sessions -----------------------------------------------------------------------
    def run(self, *, claims=True, until_stopped=False, first=None):
        """Work on this thread with the others until the session ends: when idle (nothing
        running, parked or due), or with ``until_stopped`` once the engine stops.
        ``claims``: take due work from the store; ``first``: a claimed execution id to
        start with.  An error that ended a task of this session is raised here."""
        session = Session(claims, until_stopped)
        with self.cond:
            self.sessions.append(session)
            self.workers += 1
            if first is not None:
                self._push(Task(first, None, True, session))
        try:
            self._work(session)
            error = session.error
        except BaseException as e:                # Ctrl-C on this thread
            error = e
        finally:
            with self.cond:
                self.sessions.remove(session)
                self.workers -= 1
        if error is not None:
            # every flow of this engine leaves at its next Flow-API call, back to the
            # queue, and the parked ones are unloaded, before the error goes on
            stopped = self.runner.stopping.is_set()
            self.runner.stop()
            self._drain()
            if not stopped:
                self.runner.stopping.clear()
            raise error

    def _drain(self):
        with self.cond:
            while self.busy or self.sleeping or self.waiting or self.ready or self.unloading:
                if self.sleeping or self.waiting or self.ready:
                    self._unload_parked()
                else:
                    self.cond.wait(LONGEST_WAIT)

    def _spawn(self):
        self.workers += 1
        threading.Thread(target=self._pool_thread, name="engine-run", daemon=True).start()

    def _pool_thread(self):
        try:
            self._work(None)
        finally:
            with self.cond:
                self.workers -= 1

    # -- the work loop ------------------------------------------------------------------
    def _work(self, session):
        while True:
            task = self._next(session)
            if task is None:
                return
            started = time.monotonic()
            try:
                self.runner.execute(task)
            except Exception as e:
                # what execute raises ends a session (FlowNotFound of the execution
                # eng.execute() runs, a full disk): the one that asked for the task, else
                # any; with none left -- or a worker's, which outlives a store that went
                # away -- it is only logged
                with self.cond:
                    owner = task.session if task.session in self.sessions else \
                        next(iter(self.sessions), None)
                    if owner is None or owner.until_stopped and \
                            isinstance(e, StoreUnavailable):
                        log.error("execution %s: %s: %s", task.exec_id,
                                  type(e).__name__, e)
                    elif owner.error is None:
                        owner.error = e
            except BaseException as e:
                if session is not None:
                    raise                  # this caller's own Ctrl-C, SystemExit
                with self.cond:            # a flow's SystemExit on a pool thread
                    for other in self.sessions:
                        other.error = other.error or e
            finally:
                with self.cond:
                    self.busy -= 1
                    self.changes += 1
                    self.runner.busy += time.monotonic() - started
                    self._task_ended()

    def _task_ended(self):
        """Under the lock: a thread is free (the watcher may claim for it); with nothing
        running or ready, a session may be over."""
        if self.busy or self.ready or not self._may_end():
            self.watch.notify()
        else:
            self._wake_everyone()

    def _may_end(self):
        """Whether a session could end now that nothing runs: one that ends when idle,
        or any once the engine stops (a worker's never ends otherwise: its idle threads
        are left asleep)."""
        return self.runner.stopping.is_set() or \
            any(not s.until_stopped for s in self.sessions)

    def _push(self, task):
        """Under the lock: queue a task, and start a thread for it if none is free."""
        self.ready.append(task)
        if len(self.ready) > self.idle and self.workers < self.concurrency \
                and not self.closed:
            self._spawn()
        self.cond.notify()
        self.watch.notify()                      # it may be the only idle thread

    def _next(self, session):
        """The next task for this thread; None when its session ends (a pool thread's:
        when the engine closes)."""
        with self.cond:
            self.idle += 1
            try:
                while True:
                    if self.runner.stopping.is_set() and \
                            (self.sleeping or self.waiting or self.ready):
                        self._unload_parked()
                        continue
                    if self._due_timers():
                        continue
                    if self.ready and not (session is not None and session.error):
                        self.busy += 1
                        if self.idle == 1 and self._claiming() and \
                                self.workers < self.concurrency and not self.closed:
                            self._spawn()            # a thread stays free to look for work
                        return self.ready.popleft()
                    if session is None and self.closed:
                        return None
                    if session is not None and self._over(session):
                        if not self.waiting or session.error is not None:
                            return None
                        # what could wake a parent waiting for its children -- a child
                        # running or asleep here -- is over: it waits in the store
                        waiting = list(self.waiting.values())
                        self.waiting.clear()
                        self._unload(waiting)
                        continue
                    if self._claiming() and not self.polling and \
                            time.monotonic() >= self.next_poll:
                        self._poll()
                        continue
                    if self.watching:            # another idle thread keeps time
                        self.cond.wait(LONGEST_WAIT)
                        continue
                    self.watching = True
                    try:
                        self.watch.wait(self._timeout())
                    finally:
                        self.watching = False
            finally:
                self.idle -= 1

    def _over(self, session):
        """Whether the session ends: an error; the engine stopped and everything is back
        in the store; or (when idle) nothing runs, sleeps here or is due."""
        if session.error is not None:
            return True
        if self.runner.stopping.is_set():
            return not (self.busy or self.sleeping or self.waiting or self.ready or
                        self.unloading)
        if session.until_stopped:
            return False
        if self.busy or self.sleeping or self.ready or self.polling or self.unloading:
            return False
        return not session.claims or session.quiet_at == self.changes

    def _claiming(self):
        """Whether a thread should look for new work now."""
        if self.runner.stopping.is_set() or not any(s.claims for s in self.sessions) or \
                any(s.error is not None for s in self.sessions):
            return False
        return self.busy + len(self.ready) < self.concurrency

    def _poll(self):
        """Claim due work for the free threads (outside the lock: store I/O)."""
        changes, notices = self.changes, self.notices
        free = self.concurrency - self.busy - len(self.ready)
        self.polling = True
        self.cond.release()
        failed = None
        try:
            claimed, wait = self._look(free)
        except StoreUnavailable as e:
            claimed, wait, failed = [], self.runner.store.poll_seconds, e
        finally:
            self.cond.acquire()
            self.polling = False
        if failed is not None:
            self._unavailable(failed)
        for exec_id in claimed:
            claimer = next((s for s in self.sessions if s.claims), None)
            self._push(Task(exec_id, None, False, claimer))
        if not claimed:
            later = time.monotonic() + wait
            # a store that tells: what it told during the look (notify) stands
            told_meanwhile = self.told and self.notices != notices
            self.next_poll = min(self.next_poll, later) if told_meanwhile else later
            if self.changes == changes:          # nothing new came meanwhile
                for s in self.sessions:
                    s.quiet_at = changes
                if not self.busy and self._may_end():    # it may end on this look
                    self._wake_everyone()

    def _look(self, free):
        """Outside the lock: (the ids claimed for up to ``free`` threads, and -- if none --
        how long until the next look).  A store that tells of new work is asked to at
        the first look (before it, so nothing said after it is missed); then only its
        next due time is read until something is due."""
        store = self.runner.store
        if self.told is None:
            self.told = store.on_work(self.notify)
        if not self.told:
            return self.runner.claim(free), store.poll_seconds
        due, now = self.runner.next_due(), time.time()
        if due is None or due > now:
            return [], store.poll_seconds if due is None else \
                min(store.poll_seconds, due - now)
        return self.runner.claim(free), store.poll_seconds

    def _unavailable(self, error):
        """Under the lock: a look at the store gave up waiting for it.  Sessions that end
        when idle end with the error; a worker's logs it and looks again later."""
        for session in self.sessions:
            if session.until_stopped:
                log.error("%s", error)
            elif session.error is None:
                session.error = error
        self._wake_everyone()

    def _due_timers(self):
        """Under the lock: sleepers whose wake time has come go to the ready queue;
        parents that waited sleep_max_seconds for their children are unloaded.  Whether
        the lock was released meanwhile."""
        now = time.time()
        timers = self.timers
        unload = []
        while timers and timers[0][0] <= now:
            _, _, run, park = heapq.heappop(timers)
            if run.parked is not park:
                continue                       # woken or ended since
            if self.sleeping.get(run.execution_id) is run:
                del self.sleeping[run.execution_id]
                self._push(Task(run.execution_id, run, False, None))
            elif self.waiting.get(run.execution_id) is run:
                del self.waiting[run.execution_id]
                unload.append(run)
        if unload:
            self._unload(unload)
        return bool(unload)

    def _timeout(self):
        """How long the watching thread may wait: until the next timer, or the next look
        at the store."""
        timeout = LONGEST_WAIT
        if self.timers:
            timeout = min(timeout, self.timers[0][0] - time.time())
        if self._claiming() and not self.polling:
            timeout = min(timeout, self.next_poll - time.monotonic())
        return max(timeout, 0.0)

    def _unload_parked(self):
        """Under the lock (released meanwhile): the engine stops -- parked runs, and the
        tasks no thread took yet, go back to the store for any process."""
        runs = [*self.sleeping.values(), *self.waiting.values()]
        self.sleeping.clear()
        self.waiting.clear()
        tasks = list(self.ready)
        self.ready.clear()
        self.timers.clear()
        self._unload(runs, tasks)

    def _unload(self, runs, tasks=()):
        """Under the lock (released meanwhile): these runs (no longer parked) and tasks go
        back to the store."""
        self.unloading += len(runs) + len(tasks)
        self.cond.release()
        try:
            for run in runs:
                self.runner.unload(run)
            for task in tasks:
                self.runner.put_back(task)
        finally:
            self.cond.acquire()
            self.unloading -= len(runs) + len(tasks)
            self.changes += 1
            self._wake_everyone()
