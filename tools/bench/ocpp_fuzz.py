"""OCPP in the scenario fuzzer (fuzz.py): the charge point's own invariants, on the in-process
rig, through every scenario's plug-ins, faults, commands and power cuts, with the central
system going away and coming back.

The station is the firmware's own (firmware/ocpp16/ocpp_station.py), attached to each boot's agent
as runner.serve attaches it, with plug and charge. The central system here is a model of the
uplink's side of the queue: while it is up it takes the station's oldest message each tick,
as the OCPP thread does, and answers it (a StartTransaction gets the next transaction id);
while it is down it takes nothing. While up it also sets and clears charging profiles
(firmware/ocpp_ops.py, as the OCPP thread calls it): a ChargePointMaxProfile is
max_charge_rate, a TxDefaultProfile the dynamic limit, and the checker learns each as a
ceiling the station must apply within a worker pass (docs/ocpp.md). The WebSocket, the
framing and a real central system are proven in host_tests/test_ocpp.py; this is about what
the queue, the transactions and the profiles do under everything else the fuzzer throws at
the charger.
"""
import datetime
import random

from .invariants import PWM, Violation, cap_amps, duty_class, limit_amps
from .rig import TICK_MS, UNIX_BASE_MS

PAIRS = "every StartTransaction gets exactly one StopTransaction, across power cuts"
ORDER = "a transaction's messages reach the CSMS in the order they happened"
NO_TX = "no current is offered outside a transaction"
_TX = ("StartTransaction", "StopTransaction", "MeterValues")


def outages(seed, length):
    """When the central system is unreachable: [(from ms, to ms)], from the seed alone (the
    scenario's other steps do not move)."""
    r = random.Random(seed * 7919 + 17)
    if r.random() < 0.3:
        return []
    spans = []
    t = r.uniform(0, length / 2)
    while t < length:
        down = r.uniform(500, 60000)
        spans.append((int(t), int(t + down)))
        t += down + r.uniform(1000, 60000)
    return spans


# A profile's change reaches the ceilings at the station's next pass (the worker's, every
# 100 ms, runner.SERVICE_TICKS), and the pilot within two ticks of that; after a boot the
# station's first pass waits for the control loop's first reading of the board.
APPLY_MS = 100 + 3 * TICK_MS
BOOT_APPLY_MS = 300
QUIET_MS = 300  # no other write of the same ceiling this near a profile's (the order is known)
TX_DEFAULT, CP_MAX = "TxDefaultProfile", "ChargePointMaxProfile"


def profile_calls(seed, length, busy):
    """[(bench ms, purpose, value or None to clear)]: from the seed alone; never within
    QUIET_MS of a write of a cap, a limit, the failsafe or a factory reset (`busy`)."""
    r = random.Random(seed * 7919 + 20)
    if r.random() < 0.3:
        return []
    out = []
    t = r.uniform(0, length / 3)
    while t < length:
        if not any(abs(t - b) < QUIET_MS for b in busy):
            purpose = r.choice((TX_DEFAULT, TX_DEFAULT, CP_MAX))
            if r.random() < 0.25:
                value = None
            elif purpose == CP_MAX:
                value = ("W", r.randrange(0, 30000, 10))
            elif r.random() < 0.6:
                value = ("A", round(r.uniform(0, 40), 1))
            else:
                value = ("W", r.randrange(0, 25000, 10))
            out.append((int(t) // TICK_MS * TICK_MS, purpose, value))
        t += r.expovariate(1 / 8000)
    return out


def profile_payload(purpose, value):
    pid = 1 if purpose == TX_DEFAULT else 2
    if value is None:
        return "ClearChargingProfile", {"id": pid}
    unit, limit = value
    return "SetChargingProfile", {"connectorId": 1 if purpose == TX_DEFAULT else 0,
                                  "csChargingProfiles": {
        "chargingProfileId": pid, "stackLevel": 0, "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute", "chargingSchedule": {
            "startSchedule": "2026-11-23T00:00:00Z", "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}}


class _Uplink:
    """What ocpp_ops reaches of the OCPP uplink."""

    def __init__(self, station):
        self.station = station
        self.reset = None


def bench_ms(iso):
    """An OCPP timestamp as bench time (the rig's clock is UNIX_BASE_MS at bench time 0)."""
    t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000) - UNIX_BASE_MS


class OcppFuzz:
    def __init__(self, seed, length, checker=None, busy=()):
        self.down = outages(seed, length)
        self.interval = random.Random(seed * 7919 + 18).choice((1, 2, 5, 30))
        self.checker = checker
        self.calls = profile_calls(seed, length, busy) if checker else []
        # The profiles in force (persisted by the station) and what the station has applied
        # of them since its boot (its caches: a change reaches a ceiling only when the
        # profile's value changes, so a write by MQTT in between stands).
        self.profiles = {TX_DEFAULT: None, CP_MAX: None}
        self.applied = {TX_DEFAULT: None, CP_MAX: None}
        self.station = None
        self.log = []  # (action, payload, the station's transaction number, id given)
        self.pwm = []  # [first, last] bench ms of each run of ticks with current offered
        self._next_id = 101
        self._first_boot = True

    def attach(self, rig):
        from ocpp_station import Station
        self.station = Station(rig.agent, {"id_tag": "FUZZ"})
        rig.agent.duties.append(self.station.service)
        if self._first_boot:  # persisted: later boots find it
            self._first_boot = False
            self.station.config.change("MeterValueSampleInterval", str(self.interval))
        self.applied = {TX_DEFAULT: None, CP_MAX: None}
        self._apply(rig.bench.t, BOOT_APPLY_MS)

    def power_cut(self):
        self.station = None

    def up(self, t):
        return not any(a <= t < b for a, b in self.down)

    def tick(self, o):
        # After every tick: the wire as the checker sees it, then the central system's turn.
        if o.powered and duty_class(o.counts, o.full) == PWM:
            if self.pwm and self.pwm[-1][1] == o.t - 10:
                self.pwm[-1][1] = o.t
            else:
                self.pwm.append([o.t, o.t])
        if self.station is not None and self.up(o.t):
            self.serve(o.t)
            while self.calls and self.calls[0][0] <= o.t:
                self.profile(o.t, *self.calls.pop(0)[1:])

    def profile(self, t, purpose, value):
        """The CSMS sets (or clears) a profile; the checker learns what the station will do."""
        import ocpp_ops
        from ocpp_profiles import Invalid
        action, payload = profile_payload(purpose, value)
        with self.station.lock:
            try:
                status = ocpp_ops.handle(_Uplink(self.station), action, payload, t)["status"]
            except Invalid as e:
                status = e.args[0]
        self.checker.note(t, "CSMS %s %s %r -> %s" % (action, purpose, value, status))
        if status == "Accepted":
            self.profiles[purpose] = value
            self._apply(t, APPLY_MS)
        elif action == "ClearChargingProfile" and status == "Unknown":
            self.profiles[purpose] = None  # there was none to clear

    def _apply(self, t, grace_ms):
        # The station's _apply, as docs/ocpp.md says it: TxDefaultProfile -> the dynamic
        # limit (amps above max_current clipped), ChargePointMaxProfile -> max_charge_rate
        # (cleared: back to the installation's default).
        c = self.checker
        if c is None:
            return
        want = self.profiles[TX_DEFAULT]
        if want != self.applied[TX_DEFAULT]:
            if want is not None:
                c.controller(t, self._amps(*want), grace_ms)
            elif self.applied[TX_DEFAULT] is not None:
                c.controller(t, None, grace_ms)
            self.applied[TX_DEFAULT] = want
        want = self.profiles[CP_MAX]
        if want != self.applied[CP_MAX]:
            if want is not None:
                c.cap_set(t, self._amps(*want), grace_ms)
            elif self.applied[CP_MAX] is not None:
                c.cap_set(t, cap_amps(c.default_kw, c.voltage, c.phases), grace_ms)
            self.applied[CP_MAX] = want

    def _amps(self, unit, limit):
        c = self.checker
        if unit == "A":
            return limit_amps(min(limit, c.max_current), "a", c.voltage, c.phases)
        return limit_amps(min(limit / 1000, 50), "kw", c.voltage, c.phases)

    def serve(self, t):
        st = self.station
        with st.lock:
            st.online = True
            head = st.head(t)
            if head is None:
                return False
            action, payload, entry = head
            result = {}
            if action == "StartTransaction":
                result = {"transactionId": self._next_id, "idTagInfo": {"status": "Accepted"}}
                self._next_id += 1
            self.log.append((action, payload, entry[1], result.get("transactionId")))
            st.sent(entry, result)
            return True

    def finish(self, t_end):
        """The central system back for good: it takes everything queued, then the rules."""
        while self.station is not None and self.serve(t_end):
            pass
        st = self.station
        open_id = st.ids.get(st.tx[0]) if st is not None and st.tx else None
        starts, stops, numbers, last = {}, {}, {}, None
        for action, p, n, given in self.log:
            if action not in _TX and action != "StatusNotification":
                continue
            ts = p["meterValue"][0]["timestamp"] if action == "MeterValues" else p["timestamp"]
            if last is not None and ts < last:
                raise Violation(ORDER, bench_ms(ts), "%s at %s arrived after a message of %s"
                                % (action, ts, last))
            last = ts
            if action == "StartTransaction":
                starts[given] = p
                numbers[n] = given
            elif action == "StopTransaction":
                tid = p["transactionId"]
                if tid in stops or tid not in starts:
                    raise Violation(PAIRS, bench_ms(ts), "StopTransaction %s %s" % (
                        tid, "again" if tid in stops else "without a StartTransaction"))
                if p["meterStop"] < starts[tid]["meterStart"]:
                    raise Violation(ORDER, bench_ms(ts), "transaction %s: meterStop %s below "
                                    "meterStart %s" % (tid, p["meterStop"],
                                                       starts[tid]["meterStart"]))
                stops[tid] = p
        for tid, p in starts.items():
            if tid not in stops and tid != open_id:
                raise Violation(PAIRS, bench_ms(p["timestamp"]), "transaction %s started at "
                                "%s never stopped" % (tid, p["timestamp"]))
        # Each transaction's span, by the station's numbers (consecutive, in time order). A
        # number the CSMS never heard of was dropped whole by the bounded queue (a long
        # outage): current then may only flow between its neighbours' spans.
        spans = {}
        for n, tid in numbers.items():
            stop = stops.get(tid)
            spans[n] = (bench_ms(starts[tid]["timestamp"]),
                        bench_ms(stop["timestamp"]) if stop else t_end)
        top = st.next_n - 1 if st is not None else max(spans, default=0)
        for n in range(1, top + 1):
            if n not in spans:
                before = max((spans[k][1] for k in spans if k < n), default=0)
                after = min((spans[k][0] for k in spans if k > n), default=t_end)
                spans[n] = (before, after)
        # Current may flow only while one transaction or another is open. (A replug between
        # two worker passes stops the first and starts the second in the same pass: the
        # vehicle sees PWM a tick or two before its own StartTransaction's time.)
        merged = []
        for a, b in sorted(spans.values()):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for first, last_t in self.pwm:
            if not any(a <= first and last_t <= b for a, b in merged):
                raise Violation(NO_TX, first, "current offered from t=%d to t=%d; "
                                "transactions: %s" % (first, last_t, sorted(spans.items())))
