# The worker writing a deferred raise (Settings.service) against the uplink lowering the cap
# (Settings.write_cap) at the same moment, interleaved on purpose: the worker is held just
# before its flash write while the uplink's write runs. Flash must end at the lower cap,
# the last one acknowledged (docs/storage.md: never above it). Runs under CPython
# (test_settings.py imports it) and as a script under micropython (argv: the flash
# folder), where it prints "ok".
import sys
import time
import _thread

import persist as ps
from settings import Settings
from sim_board import FileStore

RAISED_W = 11000
LOWER_W = 3000
STORED_W = 7000


def wait_for(flag, timeout_s):
    deadline = time.time() + timeout_s
    while not flag and time.time() < deadline:
        time.sleep(0.005)
    return bool(flag)


def race(flash_dir):
    store = FileStore(flash_dir)
    persist = ps.Persist(store)
    persist.write_word(ps.CAP, STORED_W)
    s = Settings({"supply_voltage": 230, "phases": 1, "max_current": 32}, persist)
    s.load()
    s.write_cap(RAISED_W, 0)  # acknowledged, left to the worker (a raise)
    assert persist.read_word(ps.CAP) == STORED_W
    in_write, go, worker_done, uplink_done = [], [], [], []
    real = persist.write_word

    def held_write(key, value):  # the worker, paused between choosing a value and writing it
        if not in_write:
            in_write.append(value)
            wait_for(go, 2)
        return real(key, value)

    persist.write_word = held_write

    def worker():
        s.service(10000)  # the raise has held 10 s: written now
        worker_done.append(1)

    def uplink():
        s.write_cap(LOWER_W, 10000)
        uplink_done.append(1)

    _thread.start_new_thread(worker, ())
    assert wait_for(in_write, 2) and in_write[0] == RAISED_W
    _thread.start_new_thread(uplink, ())
    wait_for(uplink_done, 0.3)  # unguarded, the lower cap is in flash by now
    go.append(1)
    assert wait_for(worker_done, 2) and wait_for(uplink_done, 2)
    persist.write_word = real
    stored = ps.Persist(store).read_word(ps.CAP)
    assert stored == LOWER_W, "flash holds %r W, the last acknowledged cap is %d W" % (
        stored, LOWER_W)
    s.service(20000)  # and the settings know what flash holds: nothing more to write
    assert ps.Persist(store).read_word(ps.CAP) == LOWER_W and s.cap_w == LOWER_W


if __name__ == "__main__":
    race(sys.argv[1])
    print("ok")
    sys.exit(0)
