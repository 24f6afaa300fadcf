"""Chains the frame core cannot save are refused with engine.SavepointError, naming the
function, file, line and the reason."""
import asyncio
import functools
import os
import threading

import pytest

from engine import SavepointError, _frames

root = _frames.Root()
HERE = os.path.basename(__file__)


def sp():
    return _frames.capture(root)


def refused(flow, *words):
    with pytest.raises(SavepointError) as info:
        _frames.run(root, flow)
    message = str(info.value)
    assert HERE in message, message
    for word in words:
        assert word in message, message
    return message


def line_of(func, text):
    import inspect
    lines, start = inspect.getsourcelines(func)
    for offset, line in enumerate(lines):
        if text in line:
            return start + offset
    raise AssertionError(text)


def flow_sorted():
    return sorted([2, 1], key=lambda v: sp() and v)


def test_sorted_key_callback():
    message = refused(flow_sorted, "flow_sorted", "C code", "builtin_function_or_method")
    assert f"{HERE}:{line_of(flow_sorted, 'return sorted(')}" in message


def flow_map():
    return list(map(lambda v: sp() and v, [1]))


def test_map_function():
    refused(flow_map, "flow_map", "C code", "map")


def helper_for_partial(x):
    sp()
    return x


def flow_partial():
    return functools.partial(helper_for_partial, 1)()


def test_functools_partial_between_frames():
    refused(flow_partial, "flow_partial", "functools.partial", "helper_for_partial")


def flow_partial_api():
    return functools.partial(_frames.capture, root)()


def test_flow_api_called_through_a_wrapper():
    refused(flow_partial_api, "flow_partial_api", "indirectly")


class Indexed:
    def __getitem__(self, key):
        sp()
        return key


def flow_getitem():
    box = Indexed()
    return [box[i] for i in range(60)]   # specialises into BINARY_SUBSCR_GETITEM


def test_getitem_inlined_by_the_interpreter():
    refused(flow_getitem, "__getitem__")


def flow_getitem_once():
    return Indexed()[1]


def test_getitem_first_call():
    refused(flow_getitem_once, "flow_getitem_once")


class WithProperty:
    @property
    def value(self):
        sp()
        return 1


def flow_property():
    return WithProperty().value


def test_property():
    refused(flow_property, "flow_property", "C code")


class Adds:
    def __add__(self, other):
        sp()
        return 1


def flow_operator():
    return Adds() + 1


def test_operator_dunder():
    refused(flow_operator, "flow_operator", "C code")


class Built:
    def __init__(self):
        sp()


def flow_class_call():
    return Built()


def test_init_through_a_class_call():
    refused(flow_class_call, "flow_class_call", "C code", "type")


def generator():
    yield sp()


def flow_list_of_generator():
    return list(generator())


def flow_sum_of_generator():
    return sum(generator())


def flow_sorted_generator():
    return sorted(generator())


def flow_enumerate_generator():
    return [item for item in enumerate(generator())]


@pytest.mark.parametrize("flow, driver", [(flow_list_of_generator, "list"),
                                          (flow_sum_of_generator, "sum"),
                                          (flow_sorted_generator, "sorted"),
                                          (flow_enumerate_generator, "enumerate")])
def test_a_generator_that_c_code_drives(flow, driver):
    # named: the frame whose C call drives it, the C function, the generator, the way out
    message = refused(flow, flow.__name__, f"C code ({driver}) drives the generator generator",
                      "for loop")
    assert f"{HERE}:{line_of(flow, 'return')}" in message



def throw_into_delegation():
    inner = inner_catching()
    outer = delegate_to(inner)
    next(outer)
    return outer.throw(KeyError("k"))


def inner_catching():
    try:
        yield 1
    except KeyError:
        yield sp()


def delegate_to(inner):
    yield from inner


def test_throw_passed_through_yield_from():
    refused(throw_into_delegation, "delegate_to", "yield from")


async def coroutine():
    return sp()


def flow_coroutine():
    return asyncio.run(coroutine())


def test_coroutine_frame():
    refused(flow_coroutine, "coroutine", "coroutines", "not yet")


async def async_generator():
    yield sp()


async def consume_async():
    return [item async for item in async_generator()]


def flow_async_generator():
    return asyncio.run(consume_async())


def test_async_generator_frame():
    refused(flow_async_generator, "async_generator", "async generators", "not yet")


def flow_generator_is_the_flow():
    yield sp()


def test_a_generator_function_as_the_flow_runs_nothing():
    # calling it makes a generator and runs none of it: nothing to save
    gen = _frames.run(root, flow_generator_is_the_flow)
    assert gen.gi_frame.f_lasti == 0


def flow_module_code():
    code = compile("capture(root)", os.path.join(os.path.dirname(__file__), HERE), "exec")
    exec(code, {"capture": _frames.capture, "root": root})


def test_module_level_code():
    refused(flow_module_code, "<module>", "module-level")


def flow_class_body():
    class Body:
        sp()
    return Body


def test_class_body():
    refused(flow_class_body, "Body", "class-body")


def flow_other_thread():
    errors = []

    def worker():
        try:
            sp()
        except SavepointError as e:
            errors.append(e)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    raise errors[0]


def test_capture_from_another_thread():
    refused(flow_other_thread, "thread other than the flow's", "in sp (")


def test_capture_outside_a_running_flow():
    with pytest.raises(SavepointError, match="not running"):
        sp()


def test_capture_while_the_root_is_running_but_not_below_it():
    other = _frames.Root()

    def flow():
        return _frames.capture(other)
    with pytest.raises(SavepointError, match="not running"):
        _frames.run(root, flow)
