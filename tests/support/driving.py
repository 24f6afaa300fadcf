"""Functions a flow hands a generator to, which go on driving it: generators passed between
helpers, for the flows of both crash harnesses (corpus.py, rt_flows.py)."""


def first_two(gen):
    return [next(gen), next(gen)]


def the_rest(gen):
    return [item for item in gen]


def send_counts(gen):
    """Drive ``gen`` with next(), then send() it how many items it gave so far, until it
    returns: the items, and what it returned."""
    items = []
    item = next(gen)
    while True:
        items.append(item)
        try:
            item = gen.send(len(items))
        except StopIteration as stop:
            return items, stop.value
