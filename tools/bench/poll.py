"""Polling for a condition that nothing signals (another thread's state, a process, a server's
log): the bench's tools and the tests wait with this. Runs on the caller's thread."""
import time


def wait_for(predicate, timeout=10.0, every=0.02):
    """predicate()'s first true value, polled every `every` s; TimeoutError after `timeout`
    s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met within %.1f s" % timeout)
        time.sleep(every)
