"""Store.wake_if, how a child that ended in one process wakes its parent parked in
another (lifecycle.wake_parent): the look at the parent and the write are one
transaction, on both stores."""
import threading
import time

from engine.store import Store


def waiting(exec_id):
    return {"id": exec_id, "status": "WAITING", "due": None, "waiting_for": ["c1"]}


def waits_for_children(record):
    return record["status"] == "WAITING" and bool(record.get("waiting_for"))


def test_a_waiting_parent_is_made_due_and_nothing_else_is(new_store):
    with Store(new_store("store"), durability="async") as store:
        store.put_execution(waiting("p1"))
        store.put_execution(dict(waiting("p2"), status="RUNNING"))
        before = time.time()
        assert store.wake_if("p1", waits_for_children)
        assert store.get_execution("p1")["due"] >= before
        assert not store.wake_if("p2", waits_for_children)
        assert store.get_execution("p2")["due"] is None
        assert not store.wake_if("missing", waits_for_children)
        assert store.get_execution("missing") is None


def test_a_parent_changed_while_the_wake_waits_is_not_overwritten(new_store):
    """The parent's record changes (its holder ended it) in a transaction that is open
    when the wake begins: the wake sees the ended parent and writes nothing -- a look
    and a write apart would put the stale WAITING record back."""
    with Store(new_store("store"), durability="async") as store:
        store.put_execution(waiting("p1"))
        inside, go = threading.Event(), threading.Event()

        def end(head):
            inside.set()
            assert go.wait(60)
            head.update(status="ENDED_SUCCESS", output=42, waiting_for=None)

        holder = threading.Thread(target=store.update_unless_leased, args=("p1", end))
        holder.start()
        assert inside.wait(30)
        woken = []
        waker = threading.Thread(
            target=lambda: woken.append(store.wake_if("p1", waits_for_children)))
        waker.start()
        waker.join(0.5)                     # it waits for the open transaction
        go.set()
        holder.join(60)
        waker.join(60)
        assert woken == [False]
        record = store.get_execution("p1")
        assert record["status"] == "ENDED_SUCCESS" and record["output"] == 42
