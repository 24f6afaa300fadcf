"""Engine: the public facade (../shared/SPEC.md).  It opens the store and hands the work
to the others: engine.lifecycle (new executions, requests from outside), engine.runner
(running them here), engine.lookup (naming), engine.inspect (reading savepoints),
engine.edit (changing their locals), engine.workers."""
import dataclasses
import importlib
import os
import sys
import time
from types import MappingProxyType
from typing import Any, Callable, Mapping, TypeVar

from engine import config
from engine.edit import edited_savepoint
from engine.errors import CorruptSavepoint, EngineError, ExecutionNotFound
from engine.inspect import changes, frame_views
from engine.lifecycle import (apply_request, ask_runner, carry_out, check_transition,
                              drop_request, new_execution, receiver_waits, refuse_if_lost)
from engine.lookup import execution_record, find_seq, resolve_execution, savepoint_record
from engine.runner import Counters, Runner
from engine.schedules import PREFIX as SCHEDULE_PREFIX
from engine.schedules import Schedule, new_schedule
from engine.schedules import check_name as check_schedule_name
from engine.schedules import from_setting as schedule_of
from engine.schedules import to_setting as schedule_setting
from engine.store import CheckReport, Store, StoreProtocol, listing
from engine.store.location import absolute
from engine.types import (Change, Execution, ExecutionPage, FrameView, Savepoint,
                          SavepointPage, Status, parse_status)

_F = TypeVar("_F", bound=Callable[..., Any])
PREFIX_MATCHES = 1000     # executions_page(id_prefix=...) looks at the first this many


@dataclasses.dataclass(frozen=True)
class EngineRecipe:
    """What builds an engine again in another process (a worker): its settings, its
    connectors and trusted classes, and the module whose register(eng) adds more
    connectors there.  Picklable: connectors travel by import path."""
    settings: dict[str, Any]
    connectors: dict[str, Callable[..., Any]]
    trust: Any                                      # an engine._codec.Trust
    connector_module: str | None = None
    connector_retries: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)

    def build(self) -> "Engine":
        eng = Engine(**self.settings)
        eng._runner.connectors.update(self.connectors)
        eng._runner.connector_retries.update(self.connector_retries)
        _register(eng, self.connector_module)
        # the recipe's trust holds what register(eng) added where the recipe was made
        eng._runner.replace_trust(self.trust.copy())
        return eng


def _register(eng, module):
    """Call ``module``.register(eng): a module, its name, or None (nothing to do)."""
    if module is None:
        return
    if isinstance(module, str):
        module = importlib.import_module(module)
    register = getattr(module, "register", None)
    if register is None:
        raise ValueError(f"connector module {module.__name__} has no register(eng)")
    register(eng)


class Engine:
    """Durable executions of plain Python functions, kept in one store: an LMDB directory
    at ``path``, or a PostgreSQL database when ``path`` is a "postgresql://" URL.

    ``concurrency``: how many executions it runs at once, each on a thread; a waiting
    one (a sleep, a wait for children) holds no thread, it is parked in memory.

    Every keyword also comes from the environment (ENGINE_PATH, ENGINE_DURABILITY,
    ENGINE_SAVEPOINT_RETENTION, ENGINE_SLEEP_MAX_SECONDS, ENGINE_LEASE_SECONDS,
    ENGINE_CONCURRENCY); an explicit argument wins.  Invalid values raise ValueError
    naming the setting; a PostgreSQL server that cannot be reached (or refuses the user)
    raises StoreUnavailable.  ENGINE_HOST_ID (no keyword: one per process) names this host
    in the leases it holds, for stores shared by several hosts (engine.config.host_id)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 durability: str | None = None, savepoint_retention: str | None = None,
                 sleep_max_seconds: float | None = None,
                 lease_seconds: float | None = None,
                 concurrency: int | None = None) -> None:
        if "multiprocessing" in sys.modules:   # so in any spawned worker: see there
            from engine import workers
            workers.refuse_script_rerun()
        self.path = config.value("path", path)
        self.durability = config.value("durability", durability)
        self.savepoint_retention = config.value("savepoint_retention", savepoint_retention)
        self.sleep_max_seconds = config.value("sleep_max_seconds", sleep_max_seconds)
        self.lease_seconds = config.value("lease_seconds", lease_seconds)
        self.concurrency = config.value("concurrency", concurrency)
        config.host_id()            # a bad $ENGINE_HOST_ID fails here, not at a claim
        self._store = Store(self.path, durability=self.durability)
        self._runner = Runner(self._store, lease_seconds=self.lease_seconds,
                              sleep_max_seconds=self.sleep_max_seconds,
                              savepoint_retention=self.savepoint_retention,
                              concurrency=self.concurrency)

    # -- lifecycle --
    def close(self) -> None:
        self._runner.close()
        self._store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> StoreProtocol:
        """The store this engine opened (a process opens a store once): for what is
        kept beside the executions, such as the workers' reports."""
        return self._store

    # -- registration --
    def add_connector(self, name: str, func: _F, *, retries: int = 0,
                      backoff: float = 1.0) -> _F:
        """this.connect(name, **kw) calls func(**kw).  ``retries``: how many times a
        call that raised is tried again, after backoff * 2**n seconds (n = 0, 1, ...:
        a durable sleep -- a worker that dies meanwhile leaves the retry to another);
        each failed attempt is logged on the execution, and after the last the
        exception reaches the flow."""
        if not callable(func):
            raise TypeError(f"connector {name!r} must be callable")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"connector {name!r}: retries must be an int >= 0, "
                             f"not {retries!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or \
                not 0 <= backoff < float("inf"):
            raise ValueError(f"connector {name!r}: backoff must be a number of seconds "
                             f">= 0, not {backoff!r}")
        self._runner.connectors[name] = func
        if retries:
            self._runner.connector_retries[name] = (retries, float(backoff))
        else:
            self._runner.connector_retries.pop(name, None)
        return func

    def connector(self, name: str, *, retries: int = 0,
                  backoff: float = 1.0) -> Callable[[_F], _F]:
        def register(func: _F) -> _F:
            return self.add_connector(name, func, retries=retries, backoff=backoff)
        return register

    @property
    def connectors(self) -> Mapping[str, Callable[..., Any]]:
        """The connectors added so far, by name (read-only)."""
        return MappingProxyType(self._runner.connectors)

    def trust(self, cls_or_module: Any) -> Any:
        """Allow instances of these user classes inside savepoints."""
        return self._runner.add_trust(cls_or_module)

    def recipe(self, connectors: Any = None) -> EngineRecipe:
        """What builds this engine again in a worker process.  ``connectors``: a module
        (or its name) whose register(eng) each rebuilt engine calls; it is called here
        first, so that a failing one fails once, here (the connectors it adds are not
        kept here, what it trusts is)."""
        own = dict(self._runner.connectors)
        if connectors is not None:
            try:
                _register(self, connectors)
            finally:
                self._runner.connectors.clear()
                self._runner.connectors.update(own)
        settings = {"path": absolute(self.path), "durability": self.durability,
                    "savepoint_retention": self.savepoint_retention,
                    "sleep_max_seconds": self.sleep_max_seconds,
                    "lease_seconds": self.lease_seconds, "concurrency": self.concurrency}
        module = connectors if connectors is None or isinstance(connectors, str) \
            else connectors.__name__
        return EngineRecipe(settings, own, self._runner.trust.copy(), module,
                            dict(self._runner.connector_retries))

    # -- executions --
    def start(self, flow: Callable[..., Any] | str, inputs: Any = None, *,
              id: str | None = None, name: str | None = None,
              savepoint_retention: str | None = None,
              parent: str | None = None) -> Execution:
        """A new QUEUED execution of ``flow``: a module-level function, or
        "package.module:function".  A function of the script being run (__main__) is
        recorded by the module name other processes import it by, or refused.
        ``id``: the caller's id for it (letters, digits, ``. _ : @ -``); if an
        execution has that id already, that one is returned and nothing is started --
        also when processes race to start it (idempotent start)."""
        record, created = new_execution(self._store, flow, inputs, name=name,
                                        savepoint_retention=savepoint_retention,
                                        parent=parent, exec_id=id)
        if created:
            self._runner.notify()           # a run() of this engine takes it at once
        return Execution.from_record(record)

    def run(self, until: str = "idle", *, execution_id: str | None = None) -> None:
        """Run runnable executions in this process, up to ``concurrency`` at once, until
        none is runnable and none it holds waits (until="idle"), or until stop() is
        called (until="stopped": a worker).  An execution whose flow module this process
        cannot import is logged and left QUEUED (tried again later).  ``execution_id``:
        run only that one (and the children it runs); then FlowNotFound is raised."""
        if until not in ("idle", "stopped"):
            raise ValueError(f"run(until=...) takes 'idle' or 'stopped', not {until!r}")
        if execution_id is not None:
            self._runner.run_one(self._resolve(execution_id))
        elif until == "idle":
            self._runner.run_until_idle()
        else:
            self._runner.serve()

    def execute(self, flow: Callable[..., Any] | str, inputs: Any = None,
                **options: Any) -> Execution:
        """Start ``flow`` and run that execution here until it ends or goes idle."""
        execution = self.start(flow, inputs, **options)
        self._runner.run_one(execution.id)
        return self.get(execution.id)

    def work(self, processes: int = 2, *, connectors: Any = None) -> None:
        """Run a pool of worker processes until interrupted: SIGTERM or Ctrl-C stops it
        cleanly (running executions go back to the queue).  ``connectors``: a module
        (or its name) whose register(eng) adds connectors in each worker, besides the
        ones this engine has."""
        from engine import workers     # here: multiprocessing costs every import ~10 ms
        return workers.Pool(self, processes, connectors=connectors).run()

    def stop(self) -> None:
        """Ask this engine's runs to stop: running flows leave at their next Flow-API
        call (a sleeping one at once), back to the queue."""
        self._runner.stop()

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._runner.stopping.is_set()

    def wait_for_stop(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for stop(); whether it was called."""
        return self._runner.stopping.wait(timeout)

    def counters(self) -> Counters:
        """What this engine ran so far: Flow-API calls, executions, busy seconds (summed
        over its threads), and the executions running and parked now."""
        return self._runner.counters()

    def stats(self) -> dict[str, Any]:
        """What a scaler watches: per live worker, of every host sharing the store, its
        busy fraction and executions and Flow-API calls per second (over its last
        report), and the queue depth."""
        from engine import workers     # here: multiprocessing costs every import ~10 ms
        return workers.stats(self._store)

    def check(self, repair: bool = False) -> CheckReport:
        """Verify every record of the store (`engine doctor`): {"checked": {database:
        entries}, "problems": [{"db", "key", "execution", "problem", "repair",
        "repaired"}, ...]}.  ``repair``: also fix what can be fixed without losing
        anything (run-queue entries out of step, dangling names, unused code and chunks,
        ...; engine.store.check lists them); damaged executions, savepoints and settings
        are only reported -- delete them, or restore to an intact savepoint."""
        return self._store.check(repair=repair)

    def _resolve(self, execution_id):
        return resolve_execution(self._store, execution_id)

    def get(self, execution_id: str) -> Execution:
        """The execution, fresh from the store (a unique id prefix is accepted)."""
        return Execution.from_record(execution_record(self._store,
                                                      self._resolve(execution_id)))

    def executions(self, status: Status | str | None = None) -> list[Execution]:
        wanted = None if status is None else parse_status(status)
        return [Execution.from_record(r) for r in self._store.executions()
                if wanted is None or r["status"] == wanted.value]

    def savepoints(self, execution_id: str) -> list[Savepoint]:
        execution_id = self._resolve(execution_id)
        return [Savepoint.from_meta(execution_id, m)
                for m in self._store.savepoints(execution_id)]

    # -- a page at a time (the Savepoints page: engine ui) --
    def executions_page(self, status: Status | str | None = None, flow: str | None = None,
                        *, id_prefix: str | None = None, offset: int = 0,
                        limit: int = 50) -> ExecutionPage:
        """One page of executions, newest first: of ``status`` only, of ``flow`` only
        (the flow, its function name or a prefix of it, as `engine ls --flow`), whose
        id starts with ``id_prefix`` (the first PREFIX_MATCHES such ids), skipping
        ``offset``, at most ``limit``; with how many match in all.  A page costs about
        the same with 100,000 executions as with 100."""
        wanted = None if status is None else parse_status(status).value
        if id_prefix:
            ids = self._store.ids_with_prefix(id_prefix, limit=PREFIX_MATCHES)
            found = [h for h in map(self._store.get_execution, ids) if h is not None]
            heads, total = listing.scan_page(found, wanted, flow or None, offset, limit)
        else:
            heads, total = self._store.list_executions(wanted, flow or None, offset,
                                                       limit)
        return ExecutionPage([Execution.from_record(h) for h in heads], total, offset,
                             limit)

    def status_counts(self) -> dict[Status, int]:
        """How many executions there are in each status (every status, zeros too)."""
        return {Status(name): n for name, n in self._store.status_counts().items()}

    def children(self, execution_id: str) -> list[str]:
        """The ids of the executions this one started (this.flow), oldest first."""
        return self._store.children(self._resolve(execution_id))

    def savepoints_page(self, execution_id: str, *, offset: int = 0, limit: int = 100,
                        newest_first: bool = True) -> SavepointPage:
        """One page of the execution's savepoints, newest first (or oldest first), with
        how many it has; only the page's savepoints are read."""
        execution_id = self._resolve(execution_id)
        metas, total = self._store.savepoint_page(execution_id, offset, limit, newest_first)
        return SavepointPage([Savepoint.from_meta(execution_id, m) for m in metas], total,
                             offset, limit)

    def _locate(self, execution_id, savepoint, by):
        """(execution id, seq) of the savepoint named."""
        execution_id = self._resolve(execution_id)
        return execution_id, find_seq(self._store, execution_id, savepoint, by)

    def savepoint(self, execution_id: str, savepoint: int | str,
                  by: str = "id") -> Savepoint:
        """One savepoint, named by id or seq (or by name with by="name")."""
        execution_id, seq = self._locate(execution_id, savepoint, by)
        meta, _ = savepoint_record(self._store, execution_id, seq)
        return Savepoint.from_meta(execution_id, meta)

    def inspect(self, execution_id: str, savepoint: int | str,
                by: str = "id") -> list[FrameView]:
        """Every frame of a savepoint, outermost first, with its locals -- decoded
        without running any flow code, building any instance or importing any module."""
        execution_id, seq = self._locate(execution_id, savepoint, by)
        return self._frame_views(execution_id, seq)

    def _frame_views(self, execution_id, seq):
        _, record = savepoint_record(self._store, execution_id, seq)
        trust = self._runner.trust_for(execution_record(self._store, execution_id))
        return frame_views(self._store, record, trust)

    def diff(self, execution_id: str, savepoint_a: int | str | None,
             savepoint_b: int | str, by: str = "id") -> list[Change]:
        """What the flow's frames did from savepoint ``savepoint_a`` to ``savepoint_b``:
        locals changed, added (bound) and removed, frames entered and left -- decoded as
        inspect() decodes, running nothing.  ``savepoint_a`` None: from before the first
        savepoint (every frame entered); see previous_savepoint()."""
        execution_id, seq_b = self._locate(execution_id, savepoint_b, by)
        before = [] if savepoint_a is None else \
            self._frame_views(execution_id, find_seq(self._store, execution_id,
                                                     savepoint_a, by))
        return changes(before, self._frame_views(execution_id, seq_b))

    def previous_savepoint(self, execution_id: str, savepoint: int | str,
                           by: str = "id") -> Savepoint | None:
        """The newest savepoint before this one that can be read (retention and damage
        leave gaps in the seqs), or None for the first."""
        execution_id, seq = self._locate(execution_id, savepoint, by)
        try:
            found = self._store.savepoint(execution_id, seq - 1) if seq > 1 else None
        except CorruptSavepoint:
            found = None
        if found is not None:
            return Savepoint.from_meta(execution_id, found[0])
        earlier = [m for m in self._store.savepoints(execution_id)
                   if m["seq"] < seq and m["kind"] != "damaged"]
        return Savepoint.from_meta(execution_id, earlier[-1]) if earlier else None

    def _edited(self, execution_id, seq, set_locals):
        trust = self._runner.trust_for(execution_record(self._store, execution_id))
        return edited_savepoint(self._store, execution_id, seq, set_locals, trust)

    def restore(self, execution_id: str, savepoint: int | str, by: str = "id", *,
                set_locals: dict[str, Any] | None = None) -> Execution:
        """Revert the execution to that savepoint; it is QUEUED to go on from there.

        ``set_locals`` ({"name": value} for the innermost flow frame, {"function.name":
        value} for the innermost frame of that function; engine.edit says how names and
        shared values behave): the savepoint with these locals changed is kept first as
        a new explicit savepoint named "edit of <seq>" (the original stays as it was),
        and the execution goes on from that one.  ValueError naming the problem, and
        nothing saved, for a name that is not a local there, an unknown or ambiguous
        function, a value that cannot be saved; InvalidTransition while a process runs
        the execution (pause it first)."""
        execution_id, seq = self._locate(execution_id, savepoint, by)
        if set_locals is None:
            return self._request(execution_id, ["restore", seq])
        edit = self._edited(execution_id, seq, set_locals)
        with self._runner.hold(execution_id, "restore with set_locals") as record:
            if record is None:
                raise ExecutionNotFound(f"no execution {execution_id!r}")
            check_transition("restore", record)
            drop_request(self._store, execution_id)    # as a restore from outside does
            edited = self._store.commit_savepoint(record, edit.meta, edit.record,
                                                  edit.codes, edit.chunks)
            apply_request(record, ["restore", edited])
        self._runner.notify()
        return self.get(execution_id)

    def fork(self, execution_id: str, savepoint: int | str, by: str = "id", *,
             set_locals: dict[str, Any] | None = None) -> Execution:
        """A new QUEUED execution that goes on from that savepoint.  ``set_locals`` (as
        for restore): its first savepoint is the edited one, "edit of <seq>"; the
        execution forked from is not changed at all."""
        execution_id, seq = self._locate(execution_id, savepoint, by)
        meta, record = savepoint_record(self._store, execution_id, seq)
        source = execution_record(self._store, execution_id)
        refuse_if_lost("fork", source)
        if set_locals is not None:
            edit = self._edited(execution_id, seq, set_locals)
            meta, record, codes, chunks = edit.meta, edit.record, edit.codes, edit.chunks
        else:
            codes = list(self._store.codes_for(record).values())
            chunks = {}
            for digest in meta.get("chunks") or ():
                chunk = self._store.chunk(digest)
                if chunk is None:
                    raise CorruptSavepoint(f"savepoint {seq} of execution {execution_id} "
                                           f"needs chunk {digest.hex()}, which is gone")
                chunks[digest] = chunk
        new, _ = new_execution(self._store, source["flow"], source.get("inputs"),
                               name=source.get("name"),
                               savepoint_retention=source.get("retention"), queued=False)
        self._store.commit_savepoint(new, {k: meta[k] for k in
                                           ("kind", "name", "created_at", "line", "action",
                                            "command")}, record, codes, chunks)
        new.update(status=Status.QUEUED.value, due=time.time(), resume_from=new["last_seq"])
        self._store.put_execution(new)            # on the run queue only now
        self._runner.notify()
        return self.get(new["id"])

    def send(self, execution_id: str, topic: str, value: Any) -> None:
        """A message to an execution, stored durably after the ones sent before it;
        this.receive(topic) there returns it.  A receiver waiting for it is woken --
        here, or made due for the process that holds it.  ExecutionNotFound for an
        unknown execution, InvalidTransition (a ValueError) for one that has ended."""
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"send takes a topic that is a non-empty str, not {topic!r}")
        execution_id = self._resolve(execution_id)
        outcome = self._store.add_message(execution_id, topic, value,
                                          lambda head: receiver_waits(head, topic))
        if outcome == "missing":
            raise ExecutionNotFound(f"no execution {execution_id}")
        if outcome == "woke" and not self._runner.scheduler.wake(execution_id):
            self._runner.notify()

    # -- schedules (engine.schedules) --
    def schedule(self, name: str, flow: Callable[..., Any] | str, *,
                 every: float | None = None, cron: str | None = None,
                 inputs: Any = None) -> Schedule:
        """Start ``flow`` with ``inputs`` at each tick -- ``every`` seconds (>= 1), or
        at the times of ``cron``, a 5-field cron expression in UTC -- once per tick
        across every process and machine: a worker pool (eng.work, `engine worker`)
        starts them.  The same name again replaces that schedule."""
        schedule = new_schedule(name, flow, every, cron, inputs)
        self._store.set_setting(*schedule_setting(schedule))
        return schedule

    def schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        found = self._store.settings(SCHEDULE_PREFIX)
        return [schedule_of(name, value) for name, value in sorted(found.items())]

    def unschedule(self, name: str) -> None:
        """Delete the schedule (the executions it started stay); KeyError if there is
        none of that name."""
        check_schedule_name(name)
        key = SCHEDULE_PREFIX + name
        if self._store.get_setting(key) is None:
            raise KeyError(f"no schedule named {name!r}")
        self._store.delete_setting(key)

    def delete(self, execution_id: str, *, wait: float | None = None) -> None:
        """Delete the execution and all its savepoints.  A running one is stopped first
        by the process running it; nothing brings it back.  ``wait``: how long to wait
        for that process (default: two leases, so a hung one's lease runs out)."""
        execution_id = self._resolve(execution_id)
        deadline = time.monotonic() + (2 * self.lease_seconds + 5 if wait is None else wait)
        asked = False
        while True:
            outcome = self._store.delete_unless_leased(execution_id)
            if outcome != "leased":
                return
            if not asked:
                ask_runner(self._store, execution_id, ["delete"])
                asked = True
            if time.monotonic() > deadline:
                raise EngineError(f"execution {execution_id} is running in a worker that "
                                  f"did not stop it in time; it was asked to delete it")
            time.sleep(0.02)

    def _request(self, execution_id, request):
        carry_out(self._store, execution_id, request, self.lease_seconds)
        return Execution.from_record(execution_record(self._store, execution_id))

    def cancel(self, execution_id: str) -> Execution:
        """End the execution ENDED_CANCELLED, and its unfinished children."""
        return self._request(self._resolve(execution_id), ["cancel"])

    def pause(self, execution_id: str) -> Execution:
        """PAUSED until resume(); a sleeper keeps its wake time."""
        return self._request(self._resolve(execution_id), ["pause"])

    def resume(self, execution_id: str) -> Execution:
        """A PAUSED execution goes on (a sleeper at its wake time)."""
        return self._request(self._resolve(execution_id), ["resume"])
