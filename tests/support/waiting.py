"""wait_for: poll a condition until it holds or a deadline passes (tests' one helper for
waiting on other threads and processes)."""
import time


def wait_for(condition, seconds=30):
    """True as soon as ``condition()`` is true; its last value once ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
