"""eng.send and this.receive: a message stored durably, in order, received once --
waiting parked in memory, unloaded, or across processes, and through a SIGKILL on either
side of the receive's savepoint.  On LMDB and on PostgreSQL (store_path)."""
import os
import signal
import subprocess
import sys
import threading

import pytest

import message_flows as flows
from engine import Engine, ExecutionNotFound, Status
from engine.cli import main as cli
from waiting import wait_for


@pytest.fixture
def eng(store_path):
    with Engine(store_path, durability="async", sleep_max_seconds=0.2) as eng:
        flows.register(eng)
        yield eng


def worker(path, *args):
    return subprocess.Popen([sys.executable, flows.__file__, "work", path, *args])


def test_a_waiting_flow_is_unloaded_and_a_message_from_another_process_ends_it(eng,
                                                                              store_path):
    ex = eng.start(flows.approval)
    eng.run()                               # it waits past sleep_max_seconds: unloaded
    waiting = eng.get(ex.id)
    assert waiting.status == Status.WAITING and eng.counters().parked == 0
    assert eng.savepoints(ex.id)[-1].action == "receive"
    assert subprocess.run([sys.executable, "-m", "engine", "send", "--path", store_path,
                           ex.id, "approval", '{"ok": true, "by": "ann"}']).returncode == 0
    other = worker(store_path)              # a different process resumes it
    assert other.wait(60) == 0
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS and done.output == {"ok": True, "by": "ann"}
    assert done.log[-1][1] == "approved {'ok': True, 'by': 'ann'}"


def test_a_receiver_parked_in_this_process_is_woken_by_send(store_path):
    with Engine(store_path, durability="async", sleep_max_seconds=60) as eng:
        ex = eng.start(flows.approval)
        runner = threading.Thread(target=eng.run, args=("stopped",), daemon=True)
        runner.start()
        try:
            assert wait_for(lambda: eng.counters().parked == 1)
            eng.send(ex.id, "other", 1)         # not its topic: it keeps waiting
            eng.send(ex.id, "approval", "yes")
            assert wait_for(lambda: eng.get(ex.id).status == Status.ENDED_SUCCESS, 10)
            assert eng.get(ex.id).output == "yes"
        finally:
            eng.stop()
            runner.join(30)


def test_messages_are_received_in_order_each_once_by_topic(eng):
    ex = eng.start(flows.receives_many, {"count": 3, "topic": "t"})
    for value in ("a", "b"):
        eng.send(ex.id, "t", value)
    eng.send(ex.id, "u", "elsewhere")
    eng.run()
    assert eng.get(ex.id).status == Status.WAITING     # two of three received
    eng.send(ex.id, "t", "c")
    eng.run()
    assert eng.get(ex.id).output == ["a", "b", "c"]


@pytest.mark.parametrize("timeout", [0, 0.1, 0.5])     # 0.5: past sleep_max_seconds
def test_receive_returns_none_after_its_timeout(eng, timeout):
    ex = eng.execute(flows.receives_with_timeout, {"timeout": timeout})
    if ex.status == Status.WAITING:
        eng.run()
        assert wait_for(lambda: (eng.run(), eng.get(ex.id).status)[1] !=
                        Status.WAITING, 10)
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS and done.output is None


def test_sending_to_an_unknown_or_ended_execution_raises(eng, store_path, capsys):
    with pytest.raises(ExecutionNotFound):
        eng.send("no-such-execution", "t", 1)
    ended = eng.execute(flows.noop, 1)
    with pytest.raises(ValueError, match="cannot send to execution .* it has ended"):
        eng.send(ended.id, "t", 1)
    with pytest.raises(ValueError, match="topic"):
        eng.send(ended.id, "", 1)
    assert cli(["send", "--path", store_path, "--durability", "async", ended.id, "t", "1"]) == 2
    assert "it has ended" in capsys.readouterr().err
    assert cli(["send", "--path", store_path, "--durability", "async", ended.id, "t", "{nope"]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_a_receive_whose_savepoint_is_refused_leaves_the_message_unreceived(eng):
    """The flow catches the SavepointError of a receive (and of a sleep, and of a
    receive that would wait): the message stays for the next receive, and nothing the
    refused calls began (received mark, WAITING) reaches the store."""
    ex = eng.start(flows.refused_receive_and_sleep)
    eng.send(ex.id, "t", "hello")
    eng.run()
    done = eng.get(ex.id)
    assert done.status == Status.ENDED_SUCCESS, done.error
    assert done.output == ["refused"] * 3
    assert done.log[-1][1] == "state after hello"
    assert [sp.action for sp in eng.savepoints(ex.id)] == ["receive", "log"]


def test_messages_go_with_their_execution(eng):
    eng.start(flows.receives_with_timeout, {"timeout": 0}, id="m-1")
    eng.send("m-1", "never", "old")
    eng.delete("m-1")
    ex = eng.start(flows.receives_with_timeout, {"timeout": 0}, id="m-1")
    eng.run()
    assert eng.get(ex.id).output is None


def test_sigkill_right_after_the_receive_savepoint_does_not_receive_twice(eng, store_path,
                                                                          tmp_path):
    marker = str(tmp_path / "hung")
    ex = eng.start(flows.receive_then_hang, {"marker": marker})
    eng.send(ex.id, "approval", "once")
    eng.send(ex.id, "approval", "second")   # what a second receive would take
    killed = worker(store_path)
    assert wait_for(lambda: os.path.exists(marker), 60)    # past the receive's savepoint
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert worker(store_path).wait(60) == 0
    # resumed after the first receive: "once" is not received again, "second" is next
    assert eng.get(ex.id).output == ["once", "second"]


def test_sigkill_before_the_receive_savepoint_does_not_lose_the_message(eng, store_path,
                                                                        tmp_path):
    marker = str(tmp_path / "hung")
    ex = eng.start(flows.hang_then_receive, {"marker": marker})
    killed = worker(store_path)
    assert wait_for(lambda: os.path.exists(marker), 60)
    eng.send(ex.id, "approval", "kept")
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert worker(store_path).wait(60) == 0
    assert eng.get(ex.id).output == "kept"
