# Commands as actions (docs/protocol.md): ids, states, the conflict rules, the journal that
# carries them across a power cut, and the events a terminal state produces. Network side
# only: the control loop sees just the Slot.
#
# The journal (flash) holds the last two actions and every action whose terminal event is
# not yet known to be published (at most _UNSENT: beyond that a new command gets 429 until
# the uplink has caught up, so a burst of replacements cannot push an event out of flash).
# An action is written before its 202 goes out, and again when it ends, before its terminal
# event is built: two writes per command (flash erases stall an ESP32, so no more). After a
# restart an action still in flight is taken up again (its pause re-applied, then judged),
# and a terminal event not known to be published is sent again under the id reserved for
# it: every acknowledged action ends with one terminal event (at least once, always the same
# id; whether it was published is only written with the next write). Retransmitted ids are
# recognised among the last 16 actions while running and the last 2 after a restart.
import json
from api_text import error, json_bytes
import control as ctl
import persist as ps
import record
import slot as sl

STRATEGY = "cancel_and_replace"
_REMEMBERED = 16
_JOURNALED = 2
_UNSENT = 3  # terminal events not yet published, at most
_ERRORS = {sl.VEHICLE_NOT_CONNECTED: ("VEHICLE_NOT_CONNECTED", "no vehicle is connected"),
           sl.TIMEOUT: ("TIMEOUT", "the vehicle did not follow within the pilot timings")}
# An action as journaled; the last four are internal: the terminal event's id, whether it
# was published, the pause before the command, and the terminal event's message.
_FIELDS = ("id", "command", "state", "createdAt", "updatedAt", "errorCode", "errorMessage",
           "evt", "pub", "prior", "msg")
_INTERNAL = _FIELDS[-4:]
_LAST = _FIELDS[:6]


class Actions:
    def __init__(self, agent, slot, persist):
        self.agent = agent
        self.slot = slot
        self.persist = persist
        self.recent = []  # action dicts, newest last
        self.current = None  # the action the slot holds while it is acknowledged

    @staticmethod
    def public(a):
        return {k: a[k] for k in a if k not in _INTERNAL}

    def last(self):
        # The device read's lastAction.
        if not self.recent:
            return None
        a = self.recent[-1]
        return {k: a[k] for k in _LAST if k in a}

    # -- boot
    def load(self, now):
        # Take up the actions from before the restart. False if the journal was corrupt.
        body = self.persist.read_blob(ps.ACTIONS)
        if body is None or body == record.CORRUPT:
            return body is None
        try:
            for row in json.loads(body):
                a = {k: row[i] for i, k in enumerate(_FIELDS) if row[i] is not None}
                # A board without a clock stamps nothing: the times are null, as they were.
                a.update(deviceId=self.agent.device_id, deviceType="ev_charger", parameters=None,
                         createdAt=a.get("createdAt"), updatedAt=a.get("updatedAt"))
                sl.COMMANDS.index(a["command"])  # a command this firmware knows
                self.recent.append(a)
        except (ValueError, TypeError, IndexError, KeyError):
            self.recent = []
            return False
        for a in self.recent:
            if a["state"] == "acknowledged":
                self.current = a
                self.slot.start(sl.COMMANDS.index(a["command"]), now, a.get("prior", False))
            elif not a.get("pub"):
                self._emit_terminal(a)
        return True

    # -- requests
    def find(self, action_id):
        for a in self.recent:
            if a["id"] == action_id:
                return a
        return None

    def get(self, action_id):
        # The action as it stands (public fields), or None: GET /actions/{id}. Under the
        # slot's lock, which the worker holds while it ends an action.
        with self.slot.lock:
            a = self.find(action_id)
            return None if a is None else self.public(a)

    def submit(self, command, action_id, strategy, now):
        # (status, action) or (status, error) per the one-slot rules. The action is in
        # flash before this returns 202; if flash refuses it, nothing changes.
        s = self.slot
        ag = self.agent
        with s.lock:
            self._sync()  # a finished action reports before the next one replaces it
            cur = self.current
            if cur is not None and strategy is None:
                return 409, error("CONFLICT", "an action is in flight",
                                  {"reason": "no_strategy_supplied",
                                   "conflictingActionIds": [cur["id"]], "strategies": [STRATEGY]})
            unsent = sum(1 for a in self.recent if self._unsent(a)) + (cur is not None)
            if unsent > _UNSENT:
                return 429, error("TOO_MANY_REQUESTS", "earlier actions' events are still being "
                                  "delivered; nothing was changed")
            stamp = ag.stamp(now)
            action = {"id": action_id or ag.new_id("act_"), "deviceId": ag.device_id,
                      "deviceType": "ev_charger", "command": sl.COMMANDS[command],
                      "parameters": None, "state": "acknowledged", "createdAt": stamp,
                      "updatedAt": stamp, "evt": ag.new_id("evt_"), "prior": s.control.paused}
            if cur is not None:
                cur["state"] = "cancelled"
                cur["updatedAt"] = stamp
            if not self._write_journal(self._journal(self.recent + [action])):
                if cur is not None:
                    cur["state"] = "acknowledged"
                return 500, ag.storage_error()
            if cur is not None:
                s.cancel(now)
                self._emit_terminal(cur)
            s.start(command, now, s.control.paused)
            self.current = action
            # Still under the lock: a command from another uplink (OCPP's remote start
            # beside an MQTT or HTTP command) journals this one with its own.
            self.recent.append(action)
            if len(self.recent) > _REMEMBERED:
                self.recent.pop(0)
            reply = self.public(action)
        ag.persist_pause()  # the journal already holds the pause; this is the quick copy
        return 202, reply

    # -- the worker
    def sync(self):
        with self.slot.lock:
            self._sync()

    def _sync(self):
        # Copy a terminal slot state into the current action and emit its event.
        a = self.current
        s = self.slot
        if a is None or s.state == sl.ACKNOWLEDGED:
            return
        self.current = None
        a["state"] = sl.STATES[s.state]
        a["updatedAt"] = self.agent.stamp(s.done)
        if s.state == sl.FAILED:
            a["errorCode"], a["errorMessage"] = self._error(s.error)
        a["msg"] = self._message(a)
        # The pause as the end left it (a failure restores it) is in flash before the
        # journal says the action ended: after a restart nothing re-applies it then.
        self.agent.persist_pause()
        self._write_journal(self._journal(self.recent))  # if it fails: reported, re-judged later
        self._emit_terminal(a)

    def published(self, action_id):
        # The uplink has the terminal event's PUBACK (or the bench link took it); flash
        # learns it with the next write.
        for a in self.recent:
            if a["id"] == action_id and a["state"] != "acknowledged":
                a["pub"] = True

    @staticmethod
    def _unsent(a):
        return a["state"] != "acknowledged" and not a.get("pub")

    def _journal(self, actions):
        # The last two, and every one still in flight or with an unpublished end, in order.
        last = actions[-_JOURNALED:]
        return [a for a in actions if a in last or a["state"] == "acknowledged" or
                self._unsent(a)]

    def _write_journal(self, rows):
        # False if it is not in flash (flash refused it, or the heap had no room to build it):
        # submit() then changes nothing, _sync() still sends the terminal event.
        try:
            body = json_bytes([[a.get(k) for k in _FIELDS] for a in rows])
        except MemoryError as e:
            return self.persist.refused(ps.ACTIONS, e)
        return self.persist.write_blob(ps.ACTIONS, body)

    def _emit_terminal(self, a):
        ag = self.agent
        if a["state"] == "cancelled":
            ag.emit("action.cancelled", {"actionId": a["id"], "deviceId": ag.device_id,
                                         "command": a["command"],
                                         "cancelledAt": a["updatedAt"]}, a["evt"], a["id"])
            return
        ok = a["state"] == "completed"
        body = {"actionId": a["id"], "deviceId": ag.device_id, "deviceType": "ev_charger",
                "command": a["command"], "parameters": None,
                "result": {"success": ok, "message": a.get("msg")},
                "completedAt": a["updatedAt"]}
        if not ok:
            body["errorCode"] = a.get("errorCode")
            body["errorMessage"] = a.get("errorMessage")
        ag.emit("push.completed" if ok else "push.failed", body, a["evt"], a["id"])

    def _message(self, a):
        c = self.agent.control
        if a["state"] != "completed":
            return a["command"] + " failed"
        if a["command"] == "idle":
            return "paused; contactor opened under load after 6 s" if c.forced_open else "paused"
        if c.status != ctl.SUSPENDED:
            return "current offered"
        return "held for a switch of phases" if c.phases.holding else "held by the power limit"

    def _error(self, error):
        if error >= sl.FAULT_BASE:
            code = ctl.FAULT_NAMES[error - sl.FAULT_BASE] or "FAULT"
            return code, "charger fault: " + code
        return _ERRORS[error]
