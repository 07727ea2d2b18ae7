# The charger agent: wires the control core to the settings, the command slot, storage
# and the API, and turns what happened into state reports and events for the uplink.
# tick() is the control loop's; service() is the worker's; handle() and flush() are the
# uplink's (runner.py says which thread runs which).
import os
import _thread
from micropython import const
import config
import control as ctl
import persist as ps
import pilot
import record
import ceiling as cl
import limits as lim
import phases as ph
from ring import Ring, Trace
from settings import Settings, mode_name
import slot as sl
from actions import Actions, STRATEGY
from energy import Energy
from api import Api
from api_text import JsonBody, error, json_bytes
from outbox import Outbox
from isotime import iso
import topics

VERSION = "0.2.0"
_HEARTBEAT_MS = const(60000)
_DEADBAND_W = const(200)
_CMDS = dict.fromkeys(sl.COMMANDS[1:], {"parameters": {}, "execution": ["immediate"]})


class Agent:
    def __init__(self, board):
        cfg = board.config
        self.board = board
        self.device_id = cfg["device_id"]
        self.model = cfg.get("model", "micropython-evse")
        self.ring = Ring()
        self.trace = Trace()
        self.ceiling = cl.Ceiling(self.ring)
        self.phases = ph.Phases(board, self.ring, self.ceiling)
        self.control = ctl.Control(board, self.ring, self.trace, self.ceiling, self.phases)
        self.slot = sl.Slot(self.control, _thread.allocate_lock())
        self.persist = ps.Persist(board.store)
        self.persist.on_failure = self._storage_failed
        self.settings = Settings(cfg, self.persist, self.ceiling)
        self.limits = lim.Limits(self.settings, self.ceiling, self.persist, self)
        self.settings.on_change = self._settings_changed
        self.actions = Actions(self, self.slot, self.persist)
        self.energy = Energy(self.persist, self.control)
        self.api = Api(self)
        self.outbox = Outbox()
        # Without an uplink that publishes events (a charger on HTTP or OCPP alone) none is
        # queued: an action's end, never published, held the slot's gate shut (429 for
        # every command after the fourth, for good).
        self.carried = config.carries_events(cfg)
        self.meters = None  # the Modbus meters (meter_watch.py), where the config has them
        if cfg.get("meters"):
            from meter_watch import MeterWatch
            self.meters = MeterWatch(self, board)
        self.site = None  # what carries site balancing, where configured (runner.site_balancer)
        self.on_event = None  # f(event dict): the webhook queue, where one is configured
        self.duties = []  # f(now): an uplink's local work, run by the worker after ours
        self.firmware = VERSION  # the version running (the updater knows an update's)
        self.updater = None  # updates over the air (updater.py), once wired (runner.py)
        self.faults = 0  # bugs a thread caught (a new version on trial must have none)
        self.seq = 0
        self.retained_requests = 0  # requests a broker replayed retained: cleared, never run
        self._nonce = "%08x" % int.from_bytes(os.urandom(4), "big")
        self._ids = 0
        self._reported = None
        self._reported_at = 0
        self._reported_w = 0
        self._load(board.now_ms())  # before the first tick: nothing is offered until now

    def _load(self, now):
        reason = self.settings.load()
        if reason:
            self.settings_reverted(reason)
        if not self.limits.load():
            self.storage_corrupt(ps.IN_CHARGE)
        paused = self.persist.read_word(ps.PAUSE, 0)
        if paused == record.CORRUPT:
            self.storage_corrupt(ps.PAUSE)
        self.control.paused = paused != 0  # corrupt: paused, the safe side
        if not self.actions.load(now):
            self.storage_corrupt(ps.ACTIONS)
        ok, interrupted = self.energy.load()
        if not ok:
            self.storage_corrupt(ps.ENERGY)
        if interrupted:  # a session a power cut ended: closed now, with the energy it had
            self.emit("session.ended", {"deviceId": self.device_id, "sessionId": interrupted[0],
                                        "energy": interrupted[1] / 1000, "unit": "kwh",
                                        "endedAt": self.stamp(now), "interrupted": True})

    def _settings_changed(self):
        # A setting changed (or was loaded): the ceilings and the phases' mode follow.
        self.limits.refresh()
        self.phases.mode = self.settings.phases_mode

    # -- control loop
    def tick(self, now):
        self.control.tick(now)
        self.slot.track(now)
        self.board.show_status(ctl.STATUS_NAMES[self.control.status])

    # -- worker: local duties, whether or not a broker is reachable
    def service(self, now):
        if self.board.factory_reset_requested():
            self.factory_reset(now)
        self.persist_pause()  # before any terminal event: a completed idle is in flash
        while True:
            rec = self.ring.pop()
            if rec is None:
                break
            self._record_event(rec)
        self.actions.sync()
        self.settings.service(now)
        self.energy.service()
        if self.meters:
            self.meters.service(now)
        for duty in self.duties:
            duty(now)

    def persist_pause(self):
        return self.persist.write_word(ps.PAUSE, 1 if self.control.paused else 0)

    # -- uplink
    def handle(self, kind, payload, now):
        return self.api.handle(kind, payload, now)

    def request(self, kind, body, rid, now):
        return self.api.request(kind, body, rid, now)

    def action(self, action_id):
        return self.api.action(action_id)

    def too_large(self, kind, now):
        return self.api.too_large(kind, now)

    def busy(self, kind, payload, now):
        return self.api.busy(kind, payload, now)

    def update(self, req, now):
        # An update request (docs/ota.md): (status, body).
        if self.updater is None:
            return 503, error("UNAVAILABLE", "this board takes no updates")
        return self.updater.request(req, now)

    def uplink_reached(self, name):
        # An uplink reached its peer (MQTT connected, OCPP boot accepted): a new version
        # counts it towards being valid, and the last update's outcome can be told.
        if self.updater is not None:
            self.updater.uplink_reached(name)

    def flush(self, publish, now):
        # Publish what the agent has to say; stops at the first failure (publish raises)
        # and keeps the rest for the next connection.
        while True:
            item = self.outbox.first()
            if item is None:
                break
            publish(topics.EVENTS, item[0], False)
            self.outbox.done(item)
            if item[1]:
                self.actions.published(item[1])
                if self.updater is not None:
                    self.updater.published(item[1])
        if self.state_due(now):
            try:
                report = self.state_report(now)
            except MemoryError:  # no room for the read's objects now: due again next turn
                self._reported = None
                return
            publish(topics.STATE, report, True)

    def state_due(self, now):
        c = self.control
        g = self.ceiling
        p = self.phases
        key = (c.status, c.pilot, c.contactor_closed, c.offered_da, c.fault,
               self.settings.cap_w, self.settings.failsafe_w, p.mode, p.in_use, p.wanted,
               p.holding, g.limit_da, g.limited_by,
               g.failsafe, self.limits.value, self.limits.expires_at, self.slot.state,
               len(self.actions.recent), self.persist.failed,
               self.meters and tuple(self.meters.seen))
        w = self.board.power_w
        moved = abs(w - self._reported_w) >= max(_DEADBAND_W, self._reported_w // 20)
        if key != self._reported or moved or ctl.elapsed(now, self._reported_at) >= _HEARTBEAT_MS:
            self._reported = key
            self._reported_at = now
            self._reported_w = w
            return True
        return False

    def report_again(self):
        self._reported = None

    def state_report(self, now):
        # A JsonBody: the uplink writes its text as it is produced, never whole.
        self.seq += 1
        return JsonBody({"success": True, "data": self.device_read(now),
                         "meta": {"timestamp": self.stamp(now), "seq": self.seq}})

    # -- events
    def settings_reverted(self, reason):
        self.emit("settings.reverted", {"deviceId": self.device_id, "reason": reason,
                                        "settings": self.settings.read()})

    def storage_corrupt(self, key):
        self.emit("storage.corrupt", {"deviceId": self.device_id, "key": key})

    def _storage_failed(self, key, error):
        print("storage: writing %s failed: %r" % (key, error))
        self.emit("storage.failed", {"deviceId": self.device_id, "key": key,
                                     "error": str(error)})

    def storage_error(self, message="flash write failed; nothing was changed"):
        return error("STORAGE_FAILED", message, {"key": self.persist.failed})

    def factory_reset(self, now):
        self.settings.factory_reset()
        self.settings_reverted("factory_reset")

    def _record_event(self, rec):
        kind, t, arg = rec
        at = self.stamp(t)
        if kind == ctl.EV_SESSION_STARTED:
            sid = self.new_id("ses_")
            self.energy.started(sid)
            self.emit("session.started", {"deviceId": self.device_id, "sessionId": sid,
                                          "startedAt": at})
        elif kind == ctl.EV_SESSION_ENDED:
            sid = self.energy.session["id"] if self.energy.session else None
            self.energy.ended()
            self.emit("session.ended", {"deviceId": self.device_id, "sessionId": sid,
                                        "energy": arg / 1000, "unit": "kwh", "endedAt": at})
        elif kind == cl.EV_LIMIT_EXPIRED:
            self.limits.expired(at)
        elif kind == ph.EV_PHASES_SWITCHED:
            self.emit("phases.switched", {"deviceId": self.device_id, "phases": arg,
                                          "switchedAt": at})
        else:
            name = "fault.raised" if kind == ctl.EV_FAULT_RAISED else "fault.cleared"
            self.emit(name, {"deviceId": self.device_id, "fault": ctl.FAULT_NAMES[arg], "at": at})

    def emit(self, kind, data, event_id=None, action_id=None):
        evt = {"id": event_id or self.new_id("evt_"), "type": kind,
               "timestamp": self.stamp(self.board.now_ms()), "data": data}
        if self.carried:
            self.outbox.put(json_bytes(evt), action_id)
        elif action_id:  # its end has no one to wait for
            self.actions.published(action_id)
        if self.on_event:
            self.on_event(evt)

    def new_id(self, prefix):
        self._ids += 1
        return "%s%s%x" % (prefix, self._nonce, self._ids)

    def stamp(self, ms):
        # ISO time of board time `ms` (now or earlier); None while the clock is unknown.
        unix = self.board.unix_ms()
        if unix is None:
            return None
        return iso(unix - ctl.elapsed(self.board.now_ms(), ms))

    def stamp_after(self, ms, later):
        # ISO time `later` ms after board time `ms`.
        unix = self.board.unix_ms()
        if unix is None:
            return None
        return iso(unix - ctl.elapsed(self.board.now_ms(), ms) + later)

    # -- the device read
    def device_read(self, now, diagnostics=False):
        c = self.control
        s = self.settings
        lowest = self.ceiling.lowest(now)  # agrees with a setting written a moment ago
        out = {
            "id": self.device_id, "deviceType": "ev_charger",
            "metadata": {"model": self.model, "firmware": self.firmware,
                         "source": "projection" if self.board.SIMULATED else "live"},
            "state": {"status": ctl.STATUS_NAMES[c.status], "isConnected": c.session_active,
                      "isCharging": c.status == ctl.CHARGING,
                      "currentPower": self.board.power_w / 1000,
                      "powerRateLimit": s.offered_kw(pilot.offer(lowest >> 4)),
                      "maxCurrent": s.max_current, "offeredCurrent": c.offered_da / 10,
                      "pilot": pilot.NAMES[c.pilot],
                      "contactor": "closed" if c.contactor_closed else "open",
                      "limitedBy": cl.NAMES[lowest & 15],
                      "limits": self.limits.read(lowest >> 4),
                      "sessionEnergy": c.session_energy() / 1000,
                      "lifetimeEnergy": self.energy.saved_wh() / 1000,
                      "fault": ctl.FAULT_NAMES[c.fault],
                      "phasesInUse": self.phases.in_use, "phaseSwitch": self._phase_switch(),
                      "storage": "failed" if self.persist.failed else "ok",
                      "resetCause": self.board.reset_cause},
            "commands": _CMDS, "conflictStrategies": [STRATEGY],
            "settings": s.read(), "lastAction": self.actions.last(),
            "update": self.updater.read() if self.updater else None}
        if self.meters:
            out["meters"] = self.meters.read(now)
        if diagnostics:
            out["diagnostics"] = self.diagnostics(now)
        return out

    def _phase_switch(self):
        # state.phaseSwitch: null where the installation cannot switch (docs/protocol.md).
        p = self.phases
        if not p.switchable:
            return None
        return {"mode": mode_name(p.mode), "wanted": p.wanted,
                "switching": p.holding}

    def diagnostics(self, now):
        # The control loop's recent history, for the field: mode transitions, newest last.
        rows = []
        for t, frm, to, cause in self.trace.records():
            rows.append({"at": self.stamp(t), "from": ctl.MODE_NAMES[frm] if frm >= 0 else None,
                         "to": ctl.MODE_NAMES[to], "cause": _cause(cause)})
        return {"mode": ctl.MODE_NAMES[self.control.mode], "transitions": rows,
                "maxTickGapMs": self.control.max_gap_ms,
                "eventsDropped": self.outbox.dropped + self.ring.dropped,
                "retainedRequests": self.retained_requests,
                "flashWrites": self.persist.writes, "phaseSwitches": self.phases.switches,
                "flashWritesByKey": dict(self.persist.by_key)}  # a copy: a snapshot


def _cause(code):
    if code >= ctl.CAUSE_FAULT:
        return (ctl.FAULT_NAMES[code - ctl.CAUSE_FAULT] or "fault").lower()
    return ctl.CAUSE_NAMES[code]
