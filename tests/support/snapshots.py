"""Snapshots in the frame core's tests: a flow calls take(saved) where it would call the
Flow-API; each snapshot is kept as bytes, as it stood at that moment (a snapshot refers to
the live objects), and rebuilt for resuming."""
import carrier
from engine import _frames

root = _frames.Root()


def take(saved):
    """Capture here (as a flow calling the Flow-API directly would) and keep the snapshot
    in ``saved``; returns "fresh", or what a restore sends in."""
    got = _frames.capture(root)
    if type(got) is tuple:
        saved.append(carrier.dumps(got))
        return "fresh"
    return got


def taken(flow, *args):
    """Run ``flow(saved, *args)``: what it returned, and the snapshots it took, rebuilt."""
    saved = []
    result = _frames.run(root, flow, saved, *args)
    return result, [carrier.loads(data) for data in saved]
