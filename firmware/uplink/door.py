# The dialling loop every uplink runs in its own thread (docs/uplinks.md): connect, serve
# until the link fails, close, wait with bounded exponential backoff and jitter, and dial
# again, for ever. It returns only when the board must restart: serve() returned (an OCPP
# Reset, carried out), or the link was lost while a restart was asked for (the link's
# `reset`). Everything here may block; nothing on the control side or in the worker ever
# waits for it.
from micropython import const
import io
import os
import sys
from nap import nap

# After a lost link: _BACKOFF_MIN_MS, doubled per failure up to _BACKOFF_MAX_MS, each wait
# with up to +50 % jitter, so chargers that lost one broker or CSMS together do not all dial
# it again at once.
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(30000)


def run(link, name):
    # link: connect(), serve(), close(), `reset`, `quiet` and `agent` (docs/uplinks.md);
    # `name` opens its log lines ("uplink: connection lost: ...").
    delay = _BACKOFF_MIN_MS
    while True:
        try:
            link.connect()
            delay = _BACKOFF_MIN_MS
            link.serve()  # raises when the link fails; returns when the board must restart
            link.close()
            return
        except Exception as e:  # OSError, a protocol error, a bug: all mean dial again
            if isinstance(e, link.quiet):  # the network's refusal: it says it all
                print(name + ": connection lost:", repr(e))
            else:  # a MemoryError or a bug: where it was raised, too; a fault of the
                print(name + ": connection lost:", repr(e), _where(e))  # firmware's own
                link.agent.faults += 1
        link.close()
        if link.reset:
            return  # a restart was asked for, then the link went: what it waits for is in flash
        nap(delay + delay * os.urandom(1)[0] // 512)  # up to +50 % jitter
        delay = min(delay * 2, _BACKOFF_MAX_MS)


def _where(e):
    # Where `e` was raised, as one log line's tail: "at agent.py:150 flush < mqtt_uplink.py:128
    # serve" (innermost first, two frames). A MemoryError otherwise names no place.
    try:
        buf = io.StringIO()
        sys.print_exception(e, buf)
        frames = []
        for line in buf.getvalue().split("\n"):
            if line.startswith('  File "'):  # '  File "agent.py", line 150, in flush'
                name, _, rest = line[8:].partition('", line ')
                number, _, func = rest.partition(", in ")
                frames.append("%s:%s %s" % (name.rsplit("/", 1)[-1], number, func))
        return "at " + " < ".join(frames[-1:-3:-1])
    except Exception:  # no room even for that: the line without it
        return ""
