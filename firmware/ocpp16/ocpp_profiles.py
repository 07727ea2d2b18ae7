# OCPP smart charging (1.6, section 3.13): charging profiles checked, kept and evaluated on
# the charger, so a tariff window switches on time with the CSMS offline. A profile is kept
# compact (its periods in one integer array, limits in tenths of A or W); the charge point's
# own profiles (ChargePointMaxProfile, TxDefaultProfile) are persisted, a TxProfile lives
# and dies with its transaction (which a power cut ends anyway). Times are Unix seconds; a
# schedule without a start (Relative, or Absolute without startSchedule) counts from the
# transaction's start. What the station does with the results: ocpp_station.py.
from array import array
import json
import isotime
import persist as ps
import record

CP_MAX = 0
TX_DEFAULT = 1
TX = 2
PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
_KINDS = ("Absolute", "Relative", "Recurring")
_CYCLES = {"Daily": 86400, "Weekly": 604800}
MAX_STACK = 8  # ChargeProfileMaxStackLevel
MAX_PERIODS = 24  # ChargingScheduleMaxPeriods
MAX_PROFILES = 8  # MaxChargingProfilesInstalled
_MAX_LIMIT = 1000000  # A or W: anything larger is a mistake, not a ceiling
UNKNOWN = -2  # a limit that needs the wall clock while it is unknown


class Invalid(Exception):
    # args: (OCPP-J error code, description)
    pass


def need(d, key, kind, required=True):
    # d[key] checked against `kind` ("int", "num", "str", "obj", "list"); None when absent
    # and not required.
    if key not in d:
        if required:
            raise Invalid("FormationViolation", "missing " + key)
        return None
    v = d[key]
    t = type(v)
    ok = (t is int if kind == "int" else t in (int, float) and v - v == 0 if kind == "num" else
          t is str if kind == "str" else t is dict if kind == "obj" else t is list)
    if not ok:
        raise Invalid("TypeConstraintViolation", key + " has the wrong type")
    return v


def when(d, key):
    v = need(d, key, "str", False)
    if v is None:
        return None
    t = isotime.parse(v)
    if t is None:
        raise Invalid("PropertyConstraintViolation", key + " is not an ISO 8601 date-time")
    return t


def enum(d, key, names, required=True):
    v = need(d, key, "str", required)
    if v is None:
        return None
    if v not in names:
        raise Invalid("PropertyConstraintViolation", key + " has an unknown value")
    return v


def tenths(value):
    # A decimal limit in tenths, rounded down (never up: a limit is a ceiling).
    return int(value * 10 + 0.0001)


class Profile:
    def __init__(self, row):
        (self.id, self.stack, self.purpose, self.kind, self.cycle, self.valid_from,
         self.valid_to, self.start, self.duration, self.watts, periods, self.tx) = row
        self.periods = array("i", periods)  # startPeriod (s), limit (tenths), ...

    def row(self):
        return [self.id, self.stack, self.purpose, self.kind, self.cycle, self.valid_from,
                self.valid_to, self.start, self.duration, self.watts, list(self.periods),
                self.tx]

    def lowest(self):
        p = self.periods
        return min(p[i] for i in range(1, len(p), 2))

    def wall_clock(self):
        # Whether evaluating it needs the date and time.
        return self.start is not None or self.valid_from is not None or \
            self.valid_to is not None

    def at(self, u, r):
        # (limit in tenths or None when not in force or UNKNOWN, seconds until that may
        # change or None) at Unix time u (None: unknown) and r seconds into the
        # transaction (None: no transaction).
        wait = None
        if self.valid_from is not None or self.valid_to is not None:
            if u is None:
                return UNKNOWN, None
            if self.valid_from is not None and u < self.valid_from:
                return None, self.valid_from - u
            if self.valid_to is not None:
                if u >= self.valid_to:
                    return None, None
                wait = self.valid_to - u
        moving = True
        if self.start is not None:
            if u is None:
                return UNKNOWN, None
            if u < self.start:
                return None, _sooner(wait, self.start - u)
            el = u - self.start
            if self.cycle:
                el %= self.cycle
                wait = _sooner(wait, self.cycle - el)
        elif r is not None:
            el = r
        else:  # no transaction: what would apply at its start, unchanging until then
            el = 0
            moving = False
        if self.duration is not None and el >= self.duration:
            return None, wait
        p = self.periods
        i = 0
        while i + 2 < len(p) and p[i + 2] <= el:
            i += 2
        if moving:
            if i + 2 < len(p):
                wait = _sooner(wait, p[i + 2] - el)
            if self.duration is not None:
                wait = _sooner(wait, self.duration - el)
        return p[i + 1], wait


def _sooner(a, b):
    return b if a is None or b < a else a


def parse(cp):
    # A Profile from a csChargingProfiles object (SetChargingProfile, RemoteStart).
    # Raises Invalid for a malformed one; the station decides whether to accept it.
    if type(cp) is not dict:
        raise Invalid("TypeConstraintViolation", "csChargingProfiles must be an object")
    pid = need(cp, "chargingProfileId", "int")
    stack = need(cp, "stackLevel", "int")
    purpose = PURPOSES.index(enum(cp, "chargingProfilePurpose", PURPOSES))
    kind = _KINDS.index(enum(cp, "chargingProfileKind", _KINDS))
    recur = enum(cp, "recurrencyKind", _CYCLES, False)
    tx = need(cp, "transactionId", "int", False)
    valid_from = when(cp, "validFrom")
    valid_to = when(cp, "validTo")
    sch = need(cp, "chargingSchedule", "obj")
    duration = need(sch, "duration", "int", False)
    start = when(sch, "startSchedule")
    unit = enum(sch, "chargingRateUnit", ("A", "W"))
    need(sch, "minChargingRate", "num", False)
    rows = need(sch, "chargingSchedulePeriod", "list")
    if not 0 <= stack <= MAX_STACK:
        raise Invalid("PropertyConstraintViolation", "stackLevel outside 0-%d" % MAX_STACK)
    if not 1 <= len(rows) <= MAX_PERIODS:
        raise Invalid("PropertyConstraintViolation", "1-%d periods" % MAX_PERIODS)
    if duration is not None and duration < 0:
        raise Invalid("PropertyConstraintViolation", "negative duration")
    if kind == 2 and (recur is None or start is None):
        raise Invalid("PropertyConstraintViolation",
                      "a Recurring profile needs recurrencyKind and startSchedule")
    if kind == 1:
        start = None  # Relative: from the transaction's start, whatever startSchedule says
    if tx is not None and purpose != TX:
        raise Invalid("PropertyConstraintViolation", "transactionId only in a TxProfile")
    periods = []
    last = -1
    for row in rows:
        if type(row) is not dict:
            raise Invalid("TypeConstraintViolation", "a period must be an object")
        s = need(row, "startPeriod", "int")
        limit = need(row, "limit", "num")
        need(row, "numberPhases", "int", False)
        if s <= last or (last < 0 and s != 0) or not 0 <= limit <= _MAX_LIMIT:
            raise Invalid("PropertyConstraintViolation",
                          "periods must start at 0, ascend, and have limits from 0")
        last = s
        periods.append(s)
        periods.append(tenths(limit))
    return Profile([pid, stack, purpose, kind, _CYCLES[recur] if kind == 2 else 0, valid_from,
                    valid_to, start, duration, unit == "W", periods, tx])


class Profiles:
    def __init__(self, persist):
        self.persist = persist
        self.items = []
        self.changed = True  # the station re-evaluates when this is set

    def load(self):
        # The persisted profiles. False if the record was corrupt (then there are none).
        body = self.persist.read_blob(ps.OCPP_PROFILES)
        if body is None or body == record.CORRUPT:
            return body is None
        try:
            self.items = [Profile(row) for row in json.loads(body)]
        except (ValueError, TypeError):
            self.items = []
            return False
        return True

    def add(self, p):
        # Install p, replacing one with its id or its purpose and stack level (and, for a
        # TxProfile, its transaction). False if it does not fit or could not be stored.
        keep = [q for q in self.items if q.id != p.id and not (
            q.purpose == p.purpose and q.stack == p.stack and q.tx == p.tx)]
        if len(keep) >= MAX_PROFILES:
            return False
        return self._replace(keep + [p], p.purpose != TX)

    def clear(self, pid, connector, purpose, stack):
        # ClearChargingProfile's match: by id, or by every criterion given. The number
        # removed (None if flash refused it).
        def match(q):
            if pid is not None:
                return q.id == pid
            return (purpose is None or q.purpose == purpose) and \
                (stack is None or q.stack == stack) and \
                (connector is None or connector == (0 if q.purpose == CP_MAX else 1) or
                 (connector == 0 and q.purpose == TX_DEFAULT))
        keep = [q for q in self.items if not match(q)]
        gone = len(self.items) - len(keep)
        if gone and not self._replace(keep, True):
            return None
        return gone

    def end_tx(self):
        # A transaction ended: its TxProfiles go with it.
        keep = [q for q in self.items if q.purpose != TX]
        if len(keep) != len(self.items):
            self.items = keep
            self.changed = True

    def _replace(self, items, persist):
        # In flash before the CSMS hears Accepted (a power cut never brings back an older
        # profile than the last acknowledged), or nothing changes.
        body = json.dumps([q.row() for q in items if q.purpose != TX]).encode()
        if persist and not self.persist.write_blob(ps.OCPP_PROFILES, body):
            return False
        self.items = items
        self.changed = True
        return True

    def evaluate(self, purposes, u, r, tx, to_da):
        # The ceiling of the first purpose in `purposes` that has a profile in force, its
        # highest stack level winning: (dA or None, value, "a" / "kw", seconds until it may
        # change or None). u, r: as Profile.at; tx: the open transaction (its TxProfiles
        # count); to_da(tenths, watts): the conversion to per-phase current. While the clock
        # is unknown, a profile that needs it counts with its lowest limit, and the lowest
        # of the purpose's profiles applies: never more than any of them might allow.
        wait = None
        for purpose in purposes:
            found = None
            unknown = False
            low = None
            for p in self.items:
                if p.purpose != purpose or (purpose == TX and p.tx != tx):
                    continue
                lim, w = p.at(u, r)
                wait = _sooner(wait, w) if w is not None else wait
                if lim == UNKNOWN:
                    unknown = True
                    lim = p.lowest()
                if lim is not None:
                    da = to_da(lim, p.watts)
                    low = da if low is None or da < low else low
                    if found is None or p.stack > found[0].stack:
                        found = (p, lim, da)
            if unknown:
                return low, low / 10, "a", None
            if found:
                p, lim, da = found
                return da, lim / 10000 if p.watts else lim / 10, "kw" if p.watts else "a", wait
        return None, None, None, wait
