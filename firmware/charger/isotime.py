# ISO 8601 UTC timestamps from Unix milliseconds, without relying on a port's epoch.


def iso(unix_ms):
    if unix_ms is None:
        return None
    secs, ms = divmod(int(unix_ms), 1000)
    days, secs = divmod(secs, 86400)
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        year, month, day, secs // 3600, secs // 60 % 60, secs % 60, ms)


def _days(year, month, day):
    # Days since 1970-01-01 of a civil date (the inverse of the algorithm above).
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse(text):
    # Unix seconds (an int, fractions dropped) of an ISO 8601 date-time as OCPP sends it:
    # YYYY-MM-DDTHH:MM:SS, optional fraction, then Z, +HH:MM or -HH:MM (none: UTC).
    # None for anything else.
    if type(text) is not str or len(text) < 19 or len(text) > 35:
        return None
    try:
        if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":" or \
                text[16] != ":":
            return None
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hh, mm, ss = int(text[11:13]), int(text[14:16]), int(text[17:19])
        rest = text[19:]
        if rest[:1] == ".":
            i = 1
            while i < len(rest) and "0" <= rest[i] <= "9":
                i += 1
            if i == 1:
                return None
            rest = rest[i:]
        offset = 0
        if rest in ("", "Z", "z"):
            pass
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
            if rest[0] == "-":
                offset = -offset
        else:
            return None
    except ValueError:
        return None
    if not (1 <= month <= 12 and 1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
        return None
    return _days(year, month, day) * 86400 + hh * 3600 + mm * 60 + ss - offset
