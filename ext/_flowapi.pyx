# cython: language_level=3
"""The Flow-API objects a flow receives: ``this`` and ``system``.

Their methods are C-level so that, at each call, the innermost Python frame is the flow's
own frame making the call: the frame core captures the flow from there (engine._frames).
Every method does the call's work through ``_ctx`` (engine.flowapi.FlowAPI, Python),
then takes the savepoint with the call's result, then returns it.  A method that leaves
the flow (load_dump, a sleep, a wait for an unfinished child) first strips the flow's
handlers, so no `finally` runs on the way out, and carries an engine.leaving event (Park,
Idle, Load, ...) out to the driver.
"""
from engine._frames cimport Root, capture
from engine.leaving import Idle


cdef class This:
    """The running execution, as its flow sees it."""
    cdef readonly object _ctx
    cdef Root _root

    def __cinit__(self, ctx, Root root):
        self._ctx = ctx
        self._root = root

    @property
    def id(self):
        return self._ctx.execution_id

    @property
    def inputs(self):
        return self._ctx.inputs

    @property
    def restore_count(self):
        return self._ctx.restore_count

    cdef _save(self, action, result, kind="implicit", name=None):
        self._ctx.savepoint(capture(self._root, self), action, result, kind, name)

    cdef _leave(self, event):
        self._ctx.leave(event)

    def connect(self, name, **kwargs):
        self._ctx.check()
        try:
            result = self._ctx.connect(name, kwargs)
        except Exception as error:
            retry = self._ctx.retry_after(name, kwargs, error, 1)
            if retry is None:                  # no retries (left): the flow gets it
                raise
            # the backoff is a durable sleep: its savepoint says which attempt is next
            frames = capture(self._root, self)
            self._ctx.savepoint(frames, "connect", retry)
            result, throw = self._ctx.finish_retry(frames, retry)
            if throw:
                raise result
            return result                      # finish_retry saved it
        self._save("connect", result)
        return result

    cdef _dump(self, name, action):
        self._ctx.check()
        if name is not None and not isinstance(name, str):     # this.save_dump(123)
            raise ValueError(f"{action} takes a name that is a str or None, not {name!r}")
        savepoint_id = self._ctx.next_savepoint_id()
        self._save(action, savepoint_id, "explicit", name)
        return savepoint_id

    def save_dump(self, name=None):
        return self._dump(name, "save_dump")

    def create_dump(self, name=None):
        return self._dump(name, "create_dump")

    def create_savepoint(self, name=None):
        return self._dump(name, "create_savepoint")

    def load_dump(self, name_or_id, by="name"):
        self._leave(self._ctx.load_dump(name_or_id, by))

    def load_savepoint(self, name_or_id, by="name"):
        self._leave(self._ctx.load_dump(name_or_id, by))

    cdef _wait(self, wake_at, action):
        self._ctx.check()
        unload = self._ctx.begin_sleep(wake_at)
        frames = capture(self._root, self)
        self._ctx.savepoint(frames, action, None)
        if unload:
            self._leave(Idle())
        self._ctx.finish_sleep(wake_at, frames, action)     # parks the flow until then

    def sleep(self, seconds):
        self._wait(self._ctx.wake_time(seconds=seconds), "sleep")

    def sleep_until(self, when):
        self._wait(self._ctx.wake_time(until=when), "sleep_until")

    def receive(self, topic, timeout=None):
        self._ctx.check()
        found = self._ctx.take_message(topic, timeout)
        if found is not None:             # its savepoint records it received
            self._save("receive", found[0])
            return found[0]
        waiting = self._ctx.begin_receive(topic, timeout)
        frames = capture(self._root, self)
        self._ctx.savepoint(frames, "receive", waiting)
        self._ctx.wait_for_message(frames, waiting)     # parks or unloads the flow

    def flow(self, flow, inputs=None, wait=True, **more_inputs):
        self._ctx.check()
        child = self._ctx.start_child(flow, inputs, more_inputs)
        if not wait:
            self._save("flow", child)
            return child
        return self._await("flow", [child], True)

    def wait_for(self, *children):
        self._ctx.check()
        return self._await("wait_for", list(children), False)

    cdef _await(self, action, children, bint single):
        ids = [self._ctx.child_id(c) for c in children]
        awaiting = self._ctx.awaiting(ids, single)
        frames = capture(self._root, self)
        self._ctx.savepoint(frames, action, awaiting)
        outcome = self._ctx.run_children(ids)
        if outcome is None:                    # a child is still going: park until it ends
            self._ctx.wait_for_children(ids, frames, action, awaiting)
        return self._ctx.children_result(ids, single)

    def log(self, *args):
        self._ctx.check()
        self._ctx.log(args)
        self._save("log", None)

    def set_output(self, key, value):
        self._ctx.check()
        self._ctx.set_output(key, value)
        self._save("set_output", None)

    def set_timeout(self, seconds):
        self._ctx.check()
        self._ctx.set_timeout(seconds)
        self._save("set_timeout", None)

    def clear_timeout(self):
        self._ctx.check()
        self._ctx.set_timeout(None)
        self._save("clear_timeout", None)

    def success(self, value=None):
        self._ctx.check()
        marker = self._ctx.success(value)
        self._save("success", marker)
        return marker

    def error(self, message):
        self._ctx.check()
        self._save("error", None)
        self._ctx.fail(message)

    def __repr__(self):
        return f"<this: execution {self._ctx.execution_id}>"


cdef class Setting:
    """A key-value setting kept in the store, shared by all executions."""
    cdef readonly str name
    cdef This _this

    def __cinit__(self, This this, str name):
        self._this = this
        self.name = name

    def get(self):
        self._this._ctx.check()
        value = self._this._ctx.get_setting(self.name)
        self._this._ctx.savepoint(capture(self._this._root, self), "setting.get", value,
                                  "implicit", None)
        return value

    def __reduce__(self):          # a savepoint keeps it as (this, name)
        return (Setting, (self._this, self.name))

    def set(self, value):
        self._this._ctx.check()
        self._this._ctx.set_setting(self.name, value)
        self._this._ctx.savepoint(capture(self._this._root, self), "setting.set", None,
                                  "implicit", None)


cdef class System:
    """The engine around the execution."""
    cdef This _this

    def __cinit__(self, This this):
        self._this = this

    def setting(self, name):
        self._this._ctx.check()
        result = Setting(self._this, name)
        self._this._ctx.savepoint(capture(self._this._root, self), "setting", result,
                                  "implicit", None)
        return result

    def __repr__(self):
        return "<system>"
