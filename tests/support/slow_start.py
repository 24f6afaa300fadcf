"""A --flows module whose register(eng) takes a long while in the worker processes (not in
the pool's own process): a test kills workers while they start."""
import multiprocessing
import time


def register(eng):
    if multiprocessing.parent_process() is not None:
        time.sleep(60)
