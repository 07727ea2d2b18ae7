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
