"""Why a serial port cannot be the board's, in words a person can act on (deploy and flash).

mpremote says "failed to access PORT (it may be in use)" for a port that does not exist,
and esptool says "the port is busy or doesn't exist": both send people looking for the
wrong thing, so the tools check the two common cases themselves first.
"""
import os

from serial.tools.list_ports import comports


def port_problem(port):
    """A sentence for a local device path that is missing or not ours to open; else None.

    Anything else (mpremote's "auto", "u0" / "a0" shortcuts, rfc2217:// or socket:// URLs)
    is left to the tool that understands it.
    """
    if not port.startswith("/"):
        return None
    if not os.path.exists(port):
        found = ", ".join(sorted(p.device for p in comports())) or "none"
        return ("%s does not exist: is the board plugged in, with a data cable? (serial "
                "ports here: %s)" % (port, found))
    if not os.access(port, os.R_OK | os.W_OK):
        return ("no permission to open %s: add yourself to its group (usually dialout: "
                "sudo usermod -aG dialout $USER), then log in again" % port)
    return None
