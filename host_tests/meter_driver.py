# Drives firmware/meters/ against the bench's meter (tools/bench/meter_peer.py) through the
# simulated board's serial port, for host_tests/test_meters.py: under micropython one JSON
# command per line in and one JSON answer per line out; CPython's tests call Driver.handle.
#   {"op": "open", "port": P, "model": M, "address": A[, "baud": B, "de": "pin" | "stuck" |
#    "auto", "max_age_ms": N]}          a bus and one meter on it
#   {"op": "poll", "now": MS}           one reading, at board time MS
#   {"op": "run", "period_ms": N, "ms": N}   the poll thread for a while, in real time
import json
import sys
import time
import _thread
import modbus_rtu as rtu
from meter_poll import Meter, Poller, STATUS_NAMES
from sim_serial import SimPin, SocketPort

_ticks = getattr(time, "ticks_ms", None) or (lambda: int(time.monotonic() * 1000))


def clock():
    return _ticks() & 0x3FFFFFFF  # the board's clock wraps at 2**30 ms


class StuckPin(SimPin):
    # A DE pin that never drives (a broken wire): the requests never reach the line.
    def value(self, v=None):
        return 0 if v is None else None


class Driver:
    def __init__(self):
        self.port = self.master = self.meter = None

    def handle(self, cmd):
        op = cmd["op"]
        if op == "open":
            de = cmd.get("de", "pin")
            pin = SimPin() if de == "pin" else StuckPin() if de == "stuck" else None
            self.port = SocketPort(cmd["port"], cmd.get("baud", 9600), pin)
            self.master = rtu.Master(self.port)
            self.meter = Meter(cmd["model"], cmd["address"], cmd.get("max_age_ms", 3000))
            return {}
        if op == "poll":
            return self.state(self.meter.poll(self.master, cmd["now"]), cmd["now"])
        if op == "run":
            poller = Poller(self.master, [self.meter], clock, cmd["period_ms"])
            done = _thread.allocate_lock()
            done.acquire()

            def thread():
                poller.run()
                done.release()

            _thread.start_new_thread(thread, ())
            time.sleep(cmd["ms"] / 1000)
            poller.stop()
            done.acquire()  # the thread has ended
            out = self.state(rtu.OK, clock())
            out["polls"] = poller.polls
            return out
        raise ValueError(op)

    def state(self, outcome, now):
        m = self.meter
        return {"outcome": rtu.OUTCOMES[outcome], "current_da": list(m.current_da),
                "max_da": m.max_da, "power_w": m.power_w, "energy_wh": m.energy_wh,
                "good": m.good, "fresh": m.fresh(now), "status": STATUS_NAMES[m.status(now)],
                "counts": list(m.counts), "last_exception": m.last_exception,
                "report": m.report(now)}


if __name__ == "__main__":
    driver = Driver()
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        print(json.dumps(driver.handle(json.loads(line))))
