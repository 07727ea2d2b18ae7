"""build/ to one process at a time: `make test` runs its tests in parallel worker processes
(pytest-xdist), and two `make sim`s may start at once; each would otherwise compile or build
into the same files together."""
import contextlib
import fcntl
import os

from tools.paths import BUILD


@contextlib.contextmanager
def build_lock():
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when f closes, and when the process dies
        yield
