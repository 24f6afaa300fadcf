"""Hypothesis strategies for every value type the codec round-trips, and a comparison that
checks equal values *and* the same sharing structure (which objects are one object)."""
import collections
import dataclasses
import datetime
import decimal
import enum
import math
import pathlib
import types

from hypothesis import strategies as st


class Colour(enum.Enum):
    RED = 1
    GREEN = "g"


class Perm(enum.Flag):
    R = 4
    W = 2


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Item:
    name: str
    tags: list


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a=None, b=None):
        self.a = a
        self.b = b

    def __eq__(self, other):
        return type(other) is Slotted and (self.a, self.b) == (other.a, other.b)


class Problem(Exception):
    pass


def module_function(x):
    return x


def make_closure(value):
    def inner():
        return value
    return inner


# --- leaves ------------------------------------------------------------------------------

timezones = st.one_of(
    st.none(), st.just(datetime.timezone.utc),
    st.builds(datetime.timezone,
              st.timedeltas(min_value=datetime.timedelta(hours=-23),
                            max_value=datetime.timedelta(hours=23))
              .map(lambda d: datetime.timedelta(minutes=d // datetime.timedelta(minutes=1)))),
    st.builds(datetime.timezone, st.just(datetime.timedelta(hours=2)), st.text(max_size=5)))

hashable_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**200, max_value=2**200),
    st.floats(allow_nan=False), st.text(), st.binary(), st.complex_numbers(allow_nan=False),
    st.decimals(allow_nan=False), st.fractions(), st.uuids(),
    st.dates(), st.times(timezones=timezones), st.datetimes(timezones=timezones),
    st.timedeltas(), timezones.filter(lambda tz: tz is not None),
    st.text().map(pathlib.PurePosixPath), st.text().map(pathlib.PureWindowsPath),
    st.sampled_from([Colour.RED, Colour.GREEN, Perm.R, Perm.R | Perm.W]),
    st.builds(Point, st.integers(), st.text()),
    st.builds(range, st.integers(-5, 5), st.integers(-5, 50), st.integers(1, 3)),
    st.sampled_from([len, abs, math.sqrt, module_function, int, Colour, Point, math,
                     collections, list.append, dict.fromkeys, str.join]),
)

leaves = st.one_of(
    hashable_leaves, st.floats(), st.binary().map(bytearray),
    st.builds(slice, st.none() | st.integers(), st.none() | st.integers(),
              st.none() | st.integers()),
    st.builds(ValueError, st.text(), st.integers()),
    st.builds(Problem, st.text()),
    st.text().map(pathlib.Path),
)

hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(tuple),
                            st.frozensets(inner, max_size=4)),
    max_leaves=8)


def containers(inner):
    return st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
        st.dictionaries(hashables, inner, max_size=4).map(collections.OrderedDict),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=4)
        .map(collections.Counter),
        st.dictionaries(hashables, inner, max_size=4)
        .map(lambda d: collections.defaultdict(list, d)),
        st.tuples(st.lists(inner, max_size=5), st.none() | st.integers(0, 6))
        .map(lambda a: collections.deque(*a)),
        st.builds(Item, st.text(), st.lists(inner, max_size=3)),
        st.builds(Slotted, inner, inner),
        inner.map(types.CellType),
        st.builds(types.CellType),            # an empty cell
        inner.map(make_closure),
        st.lists(inner, max_size=4).map(iter),
        st.lists(inner, max_size=4).map(lambda xs: enumerate(xs, 3)),
        st.lists(inner, max_size=4).map(lambda xs: zip(xs, reversed(xs))),
        st.lists(inner, max_size=4).map(reversed),
        st.lists(st.integers(), max_size=4).map(lambda xs: map(abs, xs)),
        st.builds(ValueError, inner),
        # sharing: the same object twice in one value
        inner.map(lambda v: [v, v]),
        st.lists(inner, max_size=3).map(lambda xs: {"a": xs, "b": (xs, xs)}),
    )


values = st.recursive(leaves, containers, max_leaves=25)


# --- comparison ---------------------------------------------------------------------------

_ITERATORS = (type(iter([])), type(iter(())), enumerate, zip, reversed, map, filter,
              type(reversed([])), type(iter(range(1))), type(iter("")))


def same(a, b, seen=None):
    """Equal values with the same sharing: every object met twice on one side is met
    twice, as one object, at the same places on the other side."""
    if seen is None:
        seen = {}
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, dict, set, bytearray, collections.deque, types.CellType,
                      Item, Slotted, BaseException, types.FunctionType, tuple, frozenset)) \
            or type(a) in _ITERATORS:
        if id(a) in seen:
            return seen[id(a)][1] is b
        seen[id(a)] = (a, b)      # holding `a` keeps its id from being reused
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
        return len(a) == len(b) and all(same(x, y, seen) for x, y in zip(a, b))
    if isinstance(a, dict):
        if list(a) != list(b):
            return False
        if isinstance(a, collections.defaultdict) and a.default_factory is not b.default_factory:
            return False
        return all(same(a[k], b[k], seen) for k in a)
    if isinstance(a, collections.deque):
        return a.maxlen == b.maxlen and same(list(a), list(b), seen)
    if isinstance(a, types.CellType):
        try:
            inside = a.cell_contents
        except ValueError:
            try:
                b.cell_contents
            except ValueError:
                return True
            return False
        return same(inside, b.cell_contents, seen)
    if isinstance(a, types.FunctionType) and a.__closure__ is not None:
        return a.__code__ == b.__code__ and same(a.__closure__, b.__closure__, seen)
    if isinstance(a, Item):
        return a.name == b.name and same(a.tags, b.tags, seen)
    if isinstance(a, Slotted):
        return same(a.a, b.a, seen) and same(a.b, b.b, seen)
    if isinstance(a, BaseException):
        return same(a.args, b.args, seen)
    if type(a) in _ITERATORS:
        return same(list(a), list(b), seen)
    return a == b
