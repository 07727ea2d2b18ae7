# The charger agent: wires the control core to the settings, the command slot and the
# API, and turns what happened into state reports and events for the uplink.
# tick() is the safety path (control loop); handle() and service() are the network side.
import json
import os
import _thread
from micropython import const
import control as ctl
import pilot
from ring import Ring
from settings import Settings, LIMIT_NAMES
from slot import Slot, ACKNOWLEDGED
from actions import Actions
from api import Api
from isotime import iso

VERSION = "0.1.0"
_HEARTBEAT_MS = const(60000)
_OUTBOX = const(16)  # events kept while the uplink is away; the oldest go first
_DEADBAND_W = const(200)
_CMDS = {"charge": {"parameters": {}, "execution": ["immediate"]},
         "idle": {"parameters": {}, "execution": ["immediate"]}}


class Agent:
    def __init__(self, board):
        cfg = board.config
        self.board = board
        self.device_id = cfg["device_id"]
        self.model = cfg.get("model", "micropython-evse")
        self.lock = _thread.allocate_lock()
        self.ring = Ring()
        self.control = ctl.Control(board, self.ring)
        self.slot = Slot(self.control, self.lock)
        self.settings = Settings(cfg, board.store, self.control)
        self.actions = Actions(self, self.slot)
        self.api = Api(self)
        self.outbox = []  # event payloads (bytes) not yet published
        self.on_event = None  # f(event dict): the webhook queue, where one is configured
        self.dropped_events = 0
        self.seq = 0
        self._nonce = "%08x" % int.from_bytes(os.urandom(4), "big")
        self._ids = 0
        self._session_id = None
        self._reported = None
        self._reported_at = 0
        self._reported_w = 0
        reason = self.settings.load()  # before the first tick: nothing is offered until now
        if reason:
            self.settings_reverted(reason)

    # -- control side
    def tick(self, now):
        self.control.tick(now)
        self.slot.track(now)
        self.board.indicate(self.control.status)

    # -- network side
    def handle(self, kind, payload, now):
        try:
            return self.api.handle(kind, payload, now)
        except Exception as e:  # a bug must not take the agent down with it
            print("agent: request failed:", repr(e))
            return self.api._reply(kind, None, 400, {"code": "INVALID_REQUEST",
                                                     "message": "request not processed",
                                                     "details": {}}, now)

    def service(self, now):
        # Turn control-loop records into events and keep flash in step with a cleared pause.
        if self.board.factory_reset_requested():
            self.factory_reset(now)
        while True:
            rec = self.ring.pop()
            if rec is None:
                break
            self._record_event(rec)
        self.actions.sync()
        if self.slot.state != ACKNOWLEDGED:  # no command in flight: the pause is settled
            self.settings.persist(self.control.paused)

    def state_due(self, now):
        c = self.control
        key = (c.status, c.pilot, c.contactor_closed, c.offered_da, c.fault,
               self.settings.cap_w, self.slot.state, len(self.actions.recent))
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
        self.seq += 1
        return json.dumps({"success": True, "data": self.device_read(now),
                           "meta": {"timestamp": self.stamp(now), "seq": self.seq}}).encode()

    def settings_reverted(self, reason):
        self.emit("settings.reverted", {"deviceId": self.device_id, "reason": reason,
                                        "settings": self.settings.read()})

    def factory_reset(self, now):
        self.settings.factory_reset()
        self.settings_reverted("factory_reset")

    def _record_event(self, rec):
        kind, t, arg = rec
        at = self.stamp(t)
        if kind == ctl.EV_SESSION_STARTED:
            self._session_id = self.new_id("ses_")
            self.emit("session.started", {"deviceId": self.device_id,
                                          "sessionId": self._session_id, "startedAt": at})
        elif kind == ctl.EV_SESSION_ENDED:
            self.emit("session.ended", {"deviceId": self.device_id, "sessionId": self._session_id,
                                        "energy": arg / 1000, "unit": "kwh", "endedAt": at})
        else:
            name = "fault.raised" if kind == ctl.EV_FAULT_RAISED else "fault.cleared"
            self.emit(name, {"deviceId": self.device_id, "fault": ctl.FAULT_NAMES[arg], "at": at})

    def emit(self, kind, data):
        evt = {"id": self.new_id("evt_"), "type": kind,
               "timestamp": self.stamp(self.board.now_ms()), "data": data}
        self.outbox.append(json.dumps(evt).encode())
        if self.on_event:
            self.on_event(evt)
        if len(self.outbox) > _OUTBOX:
            self.outbox.pop(0)
            self.dropped_events += 1

    def new_id(self, prefix):
        self._ids += 1
        return "%s%s%x" % (prefix, self._nonce, self._ids)

    def stamp(self, ms):
        unix = self.board.unix_ms()
        if unix is None:
            return None
        return iso(unix - ctl.elapsed(self.board.now_ms(), ms))

    def device_read(self, now):
        c = self.control
        s = self.settings
        last = self.actions.recent[-1] if self.actions.recent else None
        if last is not None:
            last = {k: last[k] for k in ("id", "command", "state", "createdAt", "updatedAt",
                                         "errorCode") if k in last}
        return {
            "id": self.device_id, "deviceType": "ev_charger",
            "metadata": {"model": self.model, "firmware": VERSION,
                         "source": "projection" if self.board.SIMULATED else "live"},
            "state": {"status": ctl.STATUS_NAMES[c.status], "isConnected": c.session_active,
                      "isCharging": c.status == ctl.CHARGING,
                      "currentPower": self.board.power_w / 1000,
                      "powerRateLimit": s.offered_kw(pilot.offer(c.limit_da)),
                      "maxCurrent": s.max_current, "offeredCurrent": c.offered_da / 10,
                      "pilot": pilot.NAMES[c.pilot],
                      "contactor": "closed" if c.contactor_closed else "open",
                      "limitedBy": LIMIT_NAMES[s.limited_by],
                      "sessionEnergy": c.session_energy() / 1000,
                      "fault": ctl.FAULT_NAMES[c.fault],
                      "resetCause": self.board.reset_cause},
            "commands": _CMDS, "conflictStrategies": ["cancel_and_replace"],
            "settings": s.read(), "lastAction": last}
