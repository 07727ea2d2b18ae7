# Run as a script under micropython or CPython (test_settings.py), its flash in the folder
# argv[1]: two threads on one Settings, as on a board. The worker writes a raise it had
# deferred; a request lowers the cap while that write is under way. Prints what flash holds
# at the end, what the request was answered, and whether the lower cap reached the ceilings
# while the worker was still writing (a lower value never waits for flash).
import _thread
import json
import sys
import time

from ceiling import Ceiling
import persist as ps
from ring import Ring
import settings as st
from sim_board import FileStore

LOW_W = 1000


def wait(predicate, seconds):
    end = time.time() + seconds
    while not predicate() and time.time() < end:
        time.sleep(0.001)
    return predicate()


persist = ps.Persist(FileStore(sys.argv[1]))
s = st.Settings({"supply_voltage": 230, "phases": 1, "max_current": 32}, persist,
                Ceiling(Ring()))
s.load()


def cap(kw):
    return {st.CAP: {"value": kw, "unit": "kw"}}


now = 0
for i in range(st.BURST_WRITES + 2):  # the budget spent: what follows is a burst
    s.write(cap(2 + i % 2), now)
    now += 10
s.write(cap(7), now)  # a raise in a burst: the worker writes it once it has stood
now += st.SPELL_MS

seen = {"writing": False, "answered": None, "lowered_while_writing": False, "done": False}
real_write_word = persist.write_word
worker = []


def write_word(key, value):
    # The worker's write of the raise pauses on its way to flash: long enough for the
    # request to lower the cap (if nothing holds it back) and, if it can, to finish.
    if worker and _thread.get_ident() == worker[0] and value == 7000:
        seen["writing"] = True
        seen["lowered_while_writing"] = wait(lambda: s.cap_w == LOW_W, 2)
        wait(lambda: seen["answered"] is not None, 0.5)
    return real_write_word(key, value)


persist.write_word = write_word


def run_worker():
    worker.append(_thread.get_ident())
    s.service(now)
    seen["done"] = True


_thread.start_new_thread(run_worker, ())
wait(lambda: seen["writing"], 5)
seen["answered"] = s.write(cap(LOW_W / 1000), now + 1)
wait(lambda: seen["done"], 5)
print(json.dumps({"flash_w": persist.read_word(ps.CAP), "answered": seen["answered"],
                  "writing": seen["writing"],
                  "lowered_while_writing": seen["lowered_while_writing"]}))
