"""OCPP in the scenario fuzzer (fuzz.py): the charge point's own invariants, on the in-process
rig, through every scenario's plug-ins, faults, commands and power cuts, with the central
system going away and coming back.

The station is the firmware's own (firmware/ocpp16/ocpp_station.py), attached to each boot's agent
as runner.serve attaches it, with plug and charge. The central system here is a model of the
uplink's side of the queue: while it is up it takes the station's oldest message each tick,
as the OCPP thread does, and answers it (a StartTransaction gets the next transaction id);
while it is down it takes nothing. The WebSocket, the framing and a real central system are
proven in host_tests/test_ocpp.py; this is about what the queue and the transactions do
under everything else the fuzzer throws at the charger.
"""
import datetime
import random

from .invariants import PWM, Violation, duty_class
from .rig import UNIX_BASE_MS

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


def bench_ms(iso):
    """An OCPP timestamp as bench time (the rig's clock is UNIX_BASE_MS at bench time 0)."""
    t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000) - UNIX_BASE_MS


class OcppFuzz:
    def __init__(self, seed, length):
        self.down = outages(seed, length)
        self.interval = random.Random(seed * 7919 + 18).choice((1, 2, 5, 30))
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
