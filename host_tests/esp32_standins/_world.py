# Shared state of the ESP32 stand-ins: a log of pin activity and a tiny pilot/vehicle model.
import os
import time
import _thread

LOG = open(os.getenv("STANDIN_LOG") or "standin.log", "a")
EV = os.getenv("STANDIN_EV") or "A"  # what the vehicle shows: A, B or C (C only under PWM)
ADC_FAIL_AFTER = int(os.getenv("STANDIN_ADC_FAIL_AFTER") or "0")
PHASE_WELDED = os.getenv("STANDIN_PHASE_WELDED") == "1"  # the second contactor stuck closed
pins = {}  # GPIO -> level driven
pwm = {}  # GPIO -> duty_u16 while PWM runs
seq = [0]
stopped = [False]  # machine.reset() was called: the chip does nothing more
_lock = _thread.allocate_lock()  # the unix port has no GIL: threads log truly at once


def log(*items, last=False):
    # One line of the log; `last`: the chip stops with it (machine.reset()), so another
    # thread's line in the instant before the process ends is not written after it.
    with _lock:
        if stopped[0]:
            return
        stopped[0] = last
        seq[0] += 1
        LOG.write("%d %d %s\n" % (seq[0], time.ticks_ms(), " ".join(str(i) for i in items)))
        LOG.flush()
