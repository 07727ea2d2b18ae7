# CPython stand-in for MicroPython's built-in module, so the firmware imports unchanged
# in the fast in-process tests. Only what the firmware uses.


def const(value):
    return value
