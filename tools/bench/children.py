"""What this process started must not outlive it: brokers, simulators, their temporary files.

Each is adopted with the call that stops (or removes) it; whatever is still adopted at exit is stopped
then, also after Ctrl-C. exit_on_hangup() makes SIGTERM and SIGHUP (the terminal closed)
end the process the way Ctrl-C does, so that still happens. Brokers run in their own
session (a Ctrl-C at the terminal must not stop them before their clients), so nothing
else would stop them.
"""
import atexit
import signal

_stops = {}


def adopt(key, stop):
    _stops.pop(key, None)
    _stops[key] = stop


def release(key):
    _stops.pop(key, None)


@atexit.register
def stop_all():
    for key, stop in reversed(list(_stops.items())):  # the last adopted first
        try:
            stop()
        except Exception:  # one that fails must not keep the others running
            pass
        _stops.pop(key, None)


def exit_on_hangup():
    def interrupt(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
