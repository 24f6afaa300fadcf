"""Round trips across real process boundaries at every capture point of the corpus.

A subprocess runs a flow and is SIGKILLed at a capture; a new process restores the
snapshot it left and continues.  The result must equal the uninterrupted run.
"""
import os
import pickle
import signal
import subprocess
import sys

import pytest

import corpus
from engine import _frames
from locations import SUPPORT

RUNNER = os.path.join(SUPPORT, "crashrun.py")


def uninterrupted(flow):
    count = 0

    def hook(snapshot):
        nonlocal count
        count += 1
    corpus.HOOK = hook
    try:
        return _frames.run(corpus.ROOT, getattr(corpus, flow)), count
    finally:
        corpus.HOOK = None


def runner(*args):
    return subprocess.run([sys.executable, RUNNER, *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def load(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


@pytest.mark.parametrize("flow", corpus.FLOWS)
def test_killed_at_each_capture_of_a_restored_chain(flow, tmp_path):
    """Process 0 dies at the first capture; process i restores snapshot i-1 and dies at
    its own first capture -- so every capture after the first is taken inside a restored
    chain -- until a process reaches the end."""
    want, captures = uninterrupted(flow)
    proc = runner("run", flow, 1, tmp_path / "1.snap")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    k = 1
    while True:
        proc = runner("resume", flow, tmp_path / f"{k}.snap", 1, tmp_path / f"{k + 1}.snap")
        if proc.returncode != -signal.SIGKILL:
            break
        k += 1
    assert proc.returncode == 0, proc.stderr
    assert load(tmp_path / f"{k + 1}.snap.result") == want
    assert k == captures


@pytest.mark.parametrize("flow", corpus.FLOWS)
def test_restore_every_fresh_capture_in_another_process(flow, tmp_path):
    """One process saves every capture of a fresh run and is killed; another restores
    each of them and runs it to the end."""
    want, captures = uninterrupted(flow)
    proc = runner("every", flow, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    proc = runner("each", flow, tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [load(tmp_path / f"{k}.result") for k in range(1, captures + 1)]
    assert results == [want] * captures
