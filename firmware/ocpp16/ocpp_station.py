# The charge point behind OCPP: transactions, their message queue, meter values, the
# connector's status, availability and the clock; its charging profiles are ocpp_smart.py.
# It never touches the network: the worker runs service() every 100 ms whether or not a
# CSMS is reachable (so a profile's period boundary, a transaction's start at plug-in and
# its meter values happen offline too), and the OCPP thread (ocpp_uplink.py, ocpp_ops.py)
# takes what is to be sent and hands in what the CSMS asked. Both hold `lock` while they
# touch this state; the control loop never does.
#
# No current is offered without an open transaction (the `authorization` ceiling):
# a session starts one with the configured id tag (plug and charge) or on a
# RemoteStartTransaction. Start/StopTransaction are persisted before they are sent and
# leave the queue only when the CSMS has answered, so none is lost to an outage or a power
# cut; MeterValues wait in RAM (the newest few) while the CSMS is away.
import json
import _thread
from micropython import const
import control as ctl
import isotime
import persist as ps
import pilot
import record
import slot as sl
from actions import STRATEGY
from ocpp_config import Config
from ocpp_smart import Smart

_FAULT_CODES = {ctl.RCD_TRIP: "GroundFailure", ctl.CONTACTOR_WELDED: "PowerSwitchFailure",
                ctl.CONTACTOR_STUCK_OPEN: "PowerSwitchFailure",
                ctl.PHASE_WELDED: "PowerSwitchFailure", ctl.PHASE_STUCK_OPEN: "PowerSwitchFailure",
                ctl.OVERCURRENT: "OverCurrentFailure"}
_MAX_TX_MESSAGES = const(12)  # Start/StopTransaction kept through an outage (6 sessions)
_MAX_METER_VALUES = const(8)  # MeterValues kept in RAM through an outage (the newest)
_WRITES = const(10)  # changes from the CSMS that write flash: a burst of this many,
_WRITE_EVERY_MS = const(10000)  # then one per this (a flood is refused, not deferred)
# Queue entries are lists (persisted as JSON): kind, transaction number, board ms (None
# after a restart), ISO time (None if the clock was unknown), then the kind's fields.
START = "S"  # ..., idTag, meterStart
METER = "M"  # ..., Wh, W, current dA, offered dA, context
STOP = "E"  # ..., meterStop, reason
STATUS = "N"  # (number: the connector), ..., status, errorCode, vendorErrorCode
_PERSISTED = (START, STOP)
_NAMES = {START: "StartTransaction", METER: "MeterValues", STOP: "StopTransaction"}
_SETTLE_MS = const(5000)  # a closed contactor without current this long: SuspendedEV
_KNOWN_MS = const(1000)  # after boot, a pilot not steady by then counts as no vehicle


class Station:
    def __init__(self, agent, cfg):
        self.agent = agent
        self.board = agent.board
        self.control = agent.control
        self.id_tag = cfg.get("id_tag") or None  # None: only RemoteStartTransaction starts
        self.config = Config(agent.persist)
        self.lock = _thread.allocate_lock()
        self.online = False  # the uplink: connected and accepted by the CSMS
        self.known = False  # whether a vehicle is on the cable is known (service())
        self._first_ms = None  # the first worker pass with the board read
        self.tx = None  # the open transaction: [number, idTag, meterStart, board ms]
        self.ids = {}  # transaction number -> the CSMS's transactionId
        self.queue = []
        self.next_n = 1
        self.finishing = False  # the session goes on after its transaction ended
        self.charged = False  # the open transaction has been Charging
        # An accepted RemoteStartTransaction: [idTag, deadline (board ms), TxProfile or None,
        # authorized]; it starts a transaction once authorized and a vehicle is connected.
        self.remote = None
        self.authorize = None  # an idTag to send in Authorize (AuthorizeRemoteTxRequests)
        self.inoperative = False
        self.scheduled = None  # an availability change waiting for the transaction's end
        self._learned = None  # (Unix ms, board ms) from the CSMS, while the board has no clock
        self._session = None
        self._notified = [None, None]  # per connector, the status last queued
        self._closed_at = None  # board ms the contactor closed in the open transaction
        self._interrupted = False  # a transaction was open when the board restarted
        self._sampled = 0
        self._aligned = None
        self._writes = _WRITES  # the flash budget for the CSMS's changes (spend())
        self._refilled = None
        self.smart = Smart(self)  # the charging profiles
        agent.limits.set_authorized(False)  # before the first tick: nothing without a transaction
        self._load()

    # -- boot
    def _load(self):
        ag = self.agent
        for ok, key in ((self.config.load(), ps.OCPP_CONFIG),
                        (self.smart.profiles.load(), ps.OCPP_PROFILES)):
            if not ok:
                ag.storage_corrupt(key)
        word = ag.persist.read_word(ps.OCPP_AVAILABILITY, 0)
        self.inoperative = word != 0  # corrupt: out of service, the safe side
        ag.limits.set_available(not self.inoperative)
        body = ag.persist.read_blob(ps.OCPP_TX)
        if body is None or body == record.CORRUPT:
            if body is not None:
                ag.storage_corrupt(ps.OCPP_TX)
            return
        try:
            saved = json.loads(body)
            self.next_n = int(saved["n"])
            self.ids = {int(k): v for k, v in saved["ids"].items()}
            self.queue = saved["q"]
            for e in self.queue:
                e[2] = None  # board ms of another boot: the entry's time is its ISO time
            open_tx = saved["open"]
        except (ValueError, TypeError, KeyError, AttributeError):
            ag.storage_corrupt(ps.OCPP_TX)
            return
        if open_tx:  # the charger restarted under a transaction: it ended then (stopped
            self.tx = open_tx  # by the first service(), once the board's clock runs)
            self._interrupted = True

    def _save(self):
        keep = [e for e in self.queue if e[0] in _PERSISTED]
        body = {"n": self.next_n, "ids": self.ids, "q": keep,
                "open": self.tx[:3] + [None] if self.tx else None}
        return self.agent.persist.write_blob(ps.OCPP_TX, json.dumps(body).encode())

    # -- the clock: the board's, else what the CSMS said
    def unix_ms(self):
        u = self.board.unix_ms()
        if u is None and self._learned:
            u = self._learned[0] + ctl.elapsed(self.board.now_ms(), self._learned[1])
        return u

    def learn_time(self, text):
        if self.board.unix_ms() is None:
            t = isotime.parse(text)
            if t is not None:
                self._learned = (t * 1000, self.board.now_ms())

    def stamp(self, t_ms=None):
        u = self.unix_ms()
        if u is None:
            return None
        return isotime.iso(u - (ctl.elapsed(self.board.now_ms(), t_ms) if t_ms is not None else 0))

    # -- the worker
    def service(self, now):
        # Statuses are queued with the transaction messages, so the CSMS sees them in the
        # order they happened: Preparing, StartTransaction, Charging; StopTransaction,
        # Available. A status is taken before this pass starts or stops anything: the
        # control loop has not seen that yet.
        if not self.known:
            if not self._settled(now):
                return
            self.known = True
        with self.lock:
            cut = self._interrupted
            if cut:
                self._interrupted = False
                self.tx[3] = now
                self._stop("PowerLoss" if self.board.reset_cause == "power_on" else "Reboot", now)
            s = self.agent.energy.session
            if s is not self._session:
                if self._session is not None:
                    self._session_ended(now)
                self._session = s
                if s is not None:  # a pause that outlived a restart; or a restart ended the
                    # transaction under the vehicle: with plug and charge a new one starts
                    # below, else the CSMS starts the next one (docs/ocpp.md: power cuts)
                    self.finishing = self.control.paused or (cut and not self.id_tag)
            if self.tx:
                self._track(now)
            self._notify(now)
            r = self.remote
            if r and ctl.passed(now, r[1]):
                self.remote = None  # ConnectionTimeOut: no vehicle came
            elif s is not None and self.tx is None and not self.inoperative:
                if r and r[3]:
                    self._remote_start(now)
                elif self.id_tag and not self.finishing and not self.control.paused and \
                        (self.online or self.config.flag("LocalAuthorizeOffline")):
                    self.start(self.id_tag, now)
            self._meter(now)
            self.smart.service(now)

    def _settled(self, now):
        # Whether the station may judge the connector after boot: the control loop has read
        # the board (meter and clock) and a steady pilot, and the worker has taken the
        # session it began (the control loop runs in its own thread on a board). Before
        # that a vehicle on the cable would read as Available.
        c = self.control
        if c.energy_wh < 0:
            return False
        if self._first_ms is None:
            self._first_ms = now
        return ctl.elapsed(now, self._first_ms) >= _KNOWN_MS or (
            c.pilot != pilot.UNKNOWN and
            c.session_active == (self.agent.energy.session is not None))

    def _track(self, now):
        # Whether the open transaction has charged (or held the contactor closed a while).
        closed = self.control.contactor_closed
        if not closed:
            self._closed_at = None
        elif self._closed_at is None:
            self._closed_at = now
        if self.control.status == ctl.CHARGING or \
                (closed and ctl.elapsed(now, self._closed_at) >= _SETTLE_MS):
            self.charged = True

    def _session_ended(self, now):
        if self.tx:
            self._stop("EVDisconnected", now)
        self.finishing = False

    # -- transactions
    def start(self, tag, now):
        n = self.next_n
        self.next_n += 1
        meter = self.agent.energy.lifetime_wh()
        self.tx = [n, tag, meter, now]
        self.finishing = False
        self.charged = False
        self._closed_at = None
        self.remote = None
        self._sampled = now
        self._enqueue([START, n, now, self.stamp(), tag, meter])
        self.agent.limits.set_authorized(True)
        self.smart.profiles.changed = True  # Relative schedules start now
        return n

    def stop(self, reason, now):
        # Remote, DeAuthorized, a reset: the charger stops offering current and the
        # vehicle stays plugged (Finishing); the pause is the command slot's, as an idle
        # command's would be, so it holds across a restart.
        if self.tx is None:
            return False
        self._stop(reason, now)
        self.finishing = True
        if self.control.session_active:
            self.agent.actions.submit(sl.IDLE, None, STRATEGY, now)
        return True

    def _stop(self, reason, now):
        n, tag, meter, t0 = self.tx
        wh = max(meter, self.agent.energy.lifetime_wh())  # a restart may know less than the start
        self.tx = None
        self.agent.limits.set_authorized(False)
        self.smart.profiles.end_tx()
        self._enqueue([STOP, n, now, self.stamp(), wh, reason])
        if self.scheduled is not None:
            self.set_available(self.scheduled)

    def _remote_start(self, now):
        # An authorized RemoteStartTransaction with a vehicle connected: a new transaction,
        # charging (a pause left by an earlier stop is lifted through the command slot).
        tag, _, profile, _ = self.remote
        n = self.start(tag, now)
        if profile:
            profile.tx = n
            self.smart.profiles.add(profile)
        if self.control.paused:
            self.agent.actions.submit(sl.CHARGE, None, STRATEGY, now)

    def remote_start(self, tag, profile, now):
        timeout = self.config.number("ConnectionTimeOut") * 1000
        authorized = not self.config.flag("AuthorizeRemoteTxRequests")
        self.remote = [tag, ctl.later(now, timeout), profile, authorized]
        if not authorized:
            self.authorize = tag

    def authorized(self, tag, accepted):
        # The CSMS's answer to Authorize for a RemoteStartTransaction's idTag.
        r = self.remote
        if r and r[0] == tag:
            if accepted:
                r[3] = True
            else:
                self.remote = None

    def _notify(self, now, again=False):
        # Queue a StatusNotification for each connector whose status changed. One still
        # waiting with no transaction message after it is replaced: only the newest counts.
        q = self.queue
        for c in (0, 1):
            st = self.status(c)
            if st == self._notified[c] and (
                    not again or any(e[0] == STATUS and e[1] == c for e in q)):
                continue  # unchanged (and, online again, it is still queued to go out)
            self._notified[c] = st
            for i in range(len(q) - 1, -1, -1):
                if q[i][0] in _PERSISTED:
                    break
                if q[i][0] == STATUS and q[i][1] == c:
                    q.pop(i)
                    break
            q.append([STATUS, c, now, self.stamp(), st[0], st[1], st[2]])

    def renotify(self, now):
        # Online again (after a BootNotification or a new connection): the CSMS hears the
        # current statuses whether or not they changed (once: not again after one queued).
        self._notify(now, True)

    def _enqueue(self, entry):
        q = self.queue
        q.append(entry)
        if entry[0] == METER:
            if sum(1 for e in q if e[0] == METER) > _MAX_METER_VALUES:
                self._drop(next(e for e in q if e[0] == METER))
            return
        if sum(1 for e in q if e[0] in _PERSISTED) > _MAX_TX_MESSAGES:
            # The oldest transaction the CSMS has not heard of goes whole; the Stop of one
            # it has (its Start answered) only if there is nothing else.
            gone = next((e[1] for e in q if e[0] == START), None)
            if gone is None:
                gone = next(e for e in q if e[0] in _PERSISTED)[1]
            for e in [e for e in q if e[1] == gone and e[0] != STATUS]:
                self._drop(e)
        self._save()

    def _drop(self, entry):
        # Queue full, or refused by the CSMS: said on the console (make logs), not silent.
        self.queue.remove(entry)
        if entry[0] != STATUS:
            print("ocpp: dropped %s of transaction %s" % (_NAMES[entry[0]], entry[1]))

    def _meter(self, now):
        tx = self.tx
        every = self.config.number("MeterValueSampleInterval") * 1000
        if tx and every and ctl.elapsed(now, self._sampled) >= every:
            self._sampled = now
            self.sample(now, "Sample.Periodic")
        aligned = self.config.number("ClockAlignedDataInterval")
        u = self.unix_ms()
        if aligned and u is not None:
            slot = u // 1000 // aligned
            if self._aligned is not None and slot != self._aligned:
                self.sample(now, "Sample.Clock")
            self._aligned = slot

    def sample(self, now, context):
        c = self.control
        b = self.board
        self._enqueue([METER, self.tx[0] if self.tx else None, now, self.stamp(),
                       self.agent.energy.lifetime_wh(), b.power_w, b.current_da, c.offered_da,
                       context])

    # -- what goes out (the OCPP thread, holding the lock)
    def head(self, now):
        # (action, payload, entry) for the oldest queued message that can go, or None.
        while self.queue:
            e = self.queue[0]
            kind, n, t, ts = e[0], e[1], e[2], e[3]
            ts = ts or self.stamp(t) or self.stamp()
            if kind == START:
                return "StartTransaction", {"connectorId": 1, "idTag": e[4], "meterStart": e[5],
                                            "timestamp": ts}, e
            if kind == STATUS:
                p = {"connectorId": n, "status": e[4], "errorCode": e[5], "timestamp": ts}
                if e[6]:
                    p["vendorErrorCode"] = e[6]
                return "StatusNotification", p, e
            tid = self.ids.get(n) if n is not None else None  # a METER or STOP entry
            if n is not None and tid is None:  # its StartTransaction was dropped
                self._drop(e)
                continue
            if kind == STOP:
                return "StopTransaction", {"transactionId": tid, "meterStop": e[4],
                                           "timestamp": ts, "reason": e[5]}, e
            p = {"connectorId": 1, "meterValue": [{"timestamp": ts,
                                                   "sampledValue": self._values(e)}]}
            if tid is not None:
                p["transactionId"] = tid
            return "MeterValues", p, e
        return None

    def _values(self, e):
        # The sampled values of a METER entry, as MeterValuesSampledData (or, clock-aligned,
        # MeterValuesAlignedData) lists them.
        ctx = e[8]
        names = self.config.items("MeterValuesAlignedData" if ctx == "Sample.Clock" else
                                  "MeterValuesSampledData")
        out = []
        for name, value, unit in (("Energy.Active.Import.Register", str(e[4]), "Wh"),
                                  ("Power.Active.Import", str(e[5]), "W"),
                                  ("Current.Import", "%.1f" % (e[6] / 10), "A"),
                                  ("Current.Offered", "%.1f" % (e[7] / 10), "A")):
            if name in names:
                out.append({"value": value, "context": ctx, "measurand": name, "unit": unit})
        return out

    def sent(self, entry, result):
        # The CSMS answered `entry` with CALLRESULT `result` (a dict).
        if entry not in self.queue:
            return
        self.queue.remove(entry)
        if entry[0] == START:
            tid = result.get("transactionId")
            info = result.get("idTagInfo")
            status = info.get("status") if type(info) is dict else None
            self.ids[entry[1]] = tid if type(tid) is int else None
            if self.tx and self.tx[0] == entry[1] and type(status) is str and \
                    status != "Accepted":  # Blocked, Expired, Invalid, ConcurrentTx
                self.stop("DeAuthorized", self.board.now_ms())
        elif entry[0] == STOP:
            self.ids.pop(entry[1], None)
        if entry[0] in _PERSISTED:
            self._save()

    def pending_tx(self):
        # Whether a Start/StopTransaction still waits for the CSMS.
        return any(e[0] in _PERSISTED for e in self.queue)

    def refused(self, entry):
        # The CSMS answered `entry` with a CALLERROR (or nonsense) too often: it goes.
        if entry in self.queue:
            self._drop(entry)
            if entry[0] in _PERSISTED:
                self._save()

    # -- status
    def status(self, connector=1):
        # (status, errorCode, vendorErrorCode or None); connector 0 is the charge point.
        c = self.control
        if c.status == ctl.FAULT:
            code = _FAULT_CODES.get(c.fault)
            return "Faulted", code or "OtherError", None if code else ctl.FAULT_NAMES[c.fault]
        if self.inoperative:
            return "Unavailable", "NoError", None
        if connector == 0:
            return "Available", "NoError", None
        if self._session is None:  # the station's view: it ends with the transaction
            return ("Preparing" if self.remote else "Available"), "NoError", None
        if self.tx is None:
            return ("Finishing" if self.finishing else "Preparing"), "NoError", None
        if c.status == ctl.CHARGING:
            return "Charging", "NoError", None
        if c.status in (ctl.SUSPENDED, ctl.IDLE):
            return "SuspendedEVSE", "NoError", None
        # Connected, not drawing: the vehicle's choice once it has charged (or held the
        # contactor closed for a while without drawing); before that, still getting ready.
        return ("SuspendedEV" if self.charged else "Preparing"), "NoError", None

    # -- availability
    def change_availability(self, operative):
        if self.tx is not None and operative == self.inoperative:
            self.scheduled = operative
            return "Scheduled"
        self.scheduled = None
        return "Accepted" if self.set_available(operative) else "Rejected"

    def set_available(self, operative):
        self.scheduled = None
        if not self.agent.persist.write_word(ps.OCPP_AVAILABILITY, 0 if operative else 1):
            return False
        self.inoperative = not operative
        self.agent.limits.set_available(operative)
        return True

    def spend(self, now):
        # Whether the CSMS may change something persisted now: a burst of _WRITES, then one
        # per _WRITE_EVERY_MS. A flood of changes is refused (the CSMS hears Rejected and
        # nothing changes) rather than written at any rate or acknowledged and deferred.
        if self._refilled is None:
            self._refilled = now
        gained = ctl.elapsed(now, self._refilled) // _WRITE_EVERY_MS
        if gained:
            self._writes = min(_WRITES, self._writes + gained)
            self._refilled = now
        if self._writes <= 0:
            return False
        self._writes -= 1
        return True
