# The dialling loop every uplink runs in its own thread (docs/uplinks.md): connect, serve
# until the link fails, close, wait with bounded exponential backoff and jitter, and dial
# again, for ever. It returns only when the board must restart: serve() raised Restart, or
# the link was lost while a restart was asked for (the link's `reset`). Everything here may
# block; nothing on the control side or in the worker ever waits for it.
import os
from nap import nap

# After a lost link: BACKOFF_MIN_MS, doubled per failure up to BACKOFF_MAX_MS, each wait with
# up to +50 % jitter, so chargers that lost one broker or CSMS together do not all dial it
# again at once.
BACKOFF_MIN_MS = 500
BACKOFF_MAX_MS = 30000


class Restart(Exception):
    # From a link's serve(): the board must restart now (an OCPP Reset, carried out).
    pass


def run(link, name):
    # link: connect(), serve(), close() and `reset` (docs/uplinks.md); `name` opens its log
    # lines ("uplink: connection lost: ...").
    delay = BACKOFF_MIN_MS
    while True:
        try:
            link.connect()
            delay = BACKOFF_MIN_MS
            link.serve()
        except Restart:
            link.close()
            return
        except Exception as e:  # OSError, a protocol error, a bug: all mean dial again
            print(name + ": connection lost:", repr(e))
        link.close()
        if link.reset:
            return  # a restart was asked for, then the link went: what it waits for is in flash
        nap(delay + delay * os.urandom(1)[0] // 512)  # up to +50 % jitter
        delay = min(delay * 2, BACKOFF_MAX_MS)
