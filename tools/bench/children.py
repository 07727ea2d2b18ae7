"""What this process started must not outlive it: brokers, simulators, their temporary files.

Each is adopted with the call that stops (or removes) it; whatever is still adopted at exit
is stopped then, also after Ctrl-C. A process killed by SIGTERM or SIGHUP (the terminal
closed) runs no exit handlers: exit_on_hangup() stops everything adopted first. Brokers run
in their own session (a Ctrl-C at the terminal must not stop them before their clients), so
nothing else would stop them.
"""
import atexit
import os
import signal
import subprocess

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


def interrupt(proc, wait_s=10):
    """Stop a child process as Ctrl-C would (SIGINT), and kill it if it is still there after
    wait_s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exit_on_hangup():
    """On SIGTERM or SIGHUP: stop what was adopted, then die of the signal as usual."""
    def stop_then_die(signum, frame):
        stop_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_then_die)
