# The value format's vocabulary, shared by the encoder and the decoder: the nesting
# limit, the ext types that carry a payload and the markers heading composite arrays.

MAX_DEPTH = 1000

# ext types with a payload
DEF EXT_REF = 1
DEF EXT_BIGINT = 2
DEF EXT_COMPLEX = 3
DEF EXT_EMPTY = 4
DEF EXT_BYTEARRAY = 5
DEF EXT_CHUNK = 6           # payload: the 16-byte content hash of a chunk stored apart
# markers: ext types heading an array
DEF M_FIRST = 16
DEF M_TUPLE = 16
DEF M_SET = 17
DEF M_FROZENSET = 18
DEF M_RANGE = 19
DEF M_SLICE = 20
DEF M_DATETIME = 21
DEF M_DATE = 22
DEF M_TIME = 23
DEF M_TIMEDELTA = 24
DEF M_TIMEZONE = 25
DEF M_DECIMAL = 26
DEF M_FRACTION = 27
DEF M_UUID = 28
DEF M_PATH = 29
DEF M_ENUM = 30
DEF M_NAMEDTUPLE = 31
DEF M_ORDEREDDICT = 32
DEF M_DEFAULTDICT = 33
DEF M_COUNTER = 34
DEF M_DEQUE = 35
DEF M_GLOBAL = 36
DEF M_MODULE = 37
DEF M_FUNCTION = 38
DEF M_CELL = 39
DEF M_METHOD = 40
DEF M_BUILTIN_METHOD = 41
DEF M_ITER = 42
DEF M_EXCEPTION = 43
DEF M_EXTERNAL = 44
DEF M_INSTANCE = 45
DEF M_GENERATOR = 46
DEF M_LAST = 46
# a generator's state (M_GENERATOR; codec/generators.pxi)
DEF GEN_CREATED = 0
DEF GEN_SUSPENDED = 1
DEF GEN_FINISHED = 2
DEF GEN_IN_CHAIN = 3
