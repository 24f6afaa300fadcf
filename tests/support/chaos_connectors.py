"""Connectors for the worker tests, registered in each worker process."""
import rt_flows


def register(eng):
    rt_flows.register_chaos(eng)
