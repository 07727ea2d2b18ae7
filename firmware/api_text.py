# What may be echoed from a request into a reply: printable ASCII only, so a reply is valid
# UTF-8 whatever came in (MicroPython keeps a lone "\ud800" escape as invalid bytes).


def printable(value, limit=64):
    # True for a str of 1..limit printable ASCII characters.
    if type(value) is not str or not 0 < len(value) <= limit:
        return False
    for ch in value:
        if not " " <= ch <= "~":
            return False
    return True


def text(value, limit=64):
    # `value` if printable(value, limit), else None.
    return value if printable(value, limit) else None
