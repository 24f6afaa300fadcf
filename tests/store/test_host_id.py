"""Host identity (engine.store.leases.this_host): the machine's boot id -- per pid
namespace -- unless $ENGINE_HOST_ID names the host; checked before anything opens."""
import json
import subprocess
import sys
import uuid

import pytest

from engine import Engine
from engine.store import Owner, Store
from engine.store.leases import MACHINE_HOST, machine_host, start_time, this_host

INITIAL = "pid:[4026531836]"
BOOT = "17dba62c-bb6f-4cc2-9edf-e373b1d006be"


def test_the_boot_id_names_the_host_unless_a_pid_namespace_of_its_own_sets_it_apart():
    assert machine_host(BOOT, INITIAL) == BOOT
    container_a = machine_host(BOOT, "pid:[4026532201]")
    container_b = machine_host(BOOT, "pid:[4026532305]")
    assert len({BOOT, container_a, container_b}) == 3
    assert str(uuid.UUID(container_a)) == container_a           # 36 characters
    assert machine_host(BOOT, "pid:[4026532201]") == container_a
    assert machine_host("", "pid:[4026532201]") == ""            # no /proc: no host


@pytest.mark.parametrize("junk", ["has space", "x" * 37, "-leading-dash", "caf\u00e9",
                                  "a/b", "tab\t"])
def test_junk_in_engine_host_id_is_a_clear_value_error(junk, monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_HOST_ID", junk)
    with pytest.raises(ValueError, match="ENGINE_HOST_ID must be 1 to 36 letters, "
                                         "digits.*not " + repr(junk).replace("\\", "\\\\")):
        Engine(tmp_path / "store")
    assert not (tmp_path / "store").exists()                     # refused before opening
    proc = subprocess.run([sys.executable, "-m", "engine", "ls", "--path",
                           str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("engine: ENGINE_HOST_ID must be")


def test_engine_config_shows_the_host_id_and_where_it_comes_from(monkeypatch, tmp_path):
    def shown():
        out = subprocess.run([sys.executable, "-m", "engine", "config", "--json", "--path",
                              str(tmp_path)], capture_output=True, text=True, check=True,
                             timeout=60).stdout
        return json.loads(out)["host_id"]
    monkeypatch.delenv("ENGINE_HOST_ID", raising=False)
    assert shown() == {"value": MACHINE_HOST, "source": "this machine (boot id)"}
    monkeypatch.setenv("ENGINE_HOST_ID", "pod-7f3a.example:1")
    assert shown() == {"value": "pod-7f3a.example:1", "source": "$ENGINE_HOST_ID"}


def test_engine_host_id_replaces_the_boot_id_in_the_leases_held(pg_url, monkeypatch):
    monkeypatch.setenv("ENGINE_HOST_ID", "host-a")
    assert this_host() == "host-a" and Owner.current().host == "host-a"
    proc = subprocess.Popen(["sleep", "60"])
    pid, start = proc.pid, start_time(proc.pid)
    proc.kill()
    proc.wait()
    # the same dead process, once as an owner of this host and once of the boot id's:
    # under its host id, this host looks its pid up; the boot id is another host now
    dead_here, dead_elsewhere = Owner(pid, start, "host-a"), Owner(pid, start, MACHINE_HOST)
    assert not dead_here.alive() and not dead_elsewhere.here()
    with Store(pg_url, durability="async") as store:
        for exec_id in ("here", "elsewhere"):
            store.put_execution({"id": exec_id, "status": "RUNNING", "due": None})
        assert store.claim_one("here", dead_here, lease_seconds=600, now=10.0)
        assert store.claim_one("elsewhere", dead_elsewhere, lease_seconds=600, now=10.0)
        me = Owner.current("me")
        assert store.claim_many(me, 5, now=20.0, lease_seconds=1000) == ["here"]  # at once
        assert store.claim_many(me, 5, now=609.0) == []            # held until it runs out
        assert store.claim_many(me, 5, now=611.0) == ["elsewhere"]
        assert store.lease("elsewhere").owner == me
