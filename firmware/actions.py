# Commands as actions (charger-api.md): ids, states, the conflict rules, and the events
# a terminal state produces. Network side only: the control loop sees just the Slot.
import control as ctl
import slot as sl

STRATEGY = "cancel_and_replace"
_REMEMBERED = 8  # recent actions kept for retransmitted ids
_ERRORS = {sl.VEHICLE_NOT_CONNECTED: ("VEHICLE_NOT_CONNECTED", "no vehicle is connected"),
           sl.TIMEOUT: ("TIMEOUT", "the vehicle did not follow within the pilot timings")}


class Actions:
    def __init__(self, agent, slot):
        self.agent = agent
        self.slot = slot
        self.recent = []  # action dicts, newest last
        self.current = None  # the action the slot holds while it is acknowledged

    def find(self, action_id):
        for a in self.recent:
            if a["id"] == action_id:
                return a
        return None

    def submit(self, command, action_id, strategy, now):
        # Returns (status, action) or (status, error dict) per the one-slot rules.
        s = self.slot
        with s.lock:
            self._sync()  # a finished action reports before the next one replaces it
            cur = self.current
            if cur is not None:
                if strategy is None:
                    return 409, {"code": "CONFLICT", "message": "an action is in flight",
                                 "details": {"reason": "no_strategy_supplied",
                                             "conflictingActionIds": [cur["id"]],
                                             "strategies": [STRATEGY]}}
                s.cancel(now)
                self._finish(cur, sl.CANCELLED, 0, now)
            c = self.agent.control
            if c.session_active:
                c.paused = command == sl.IDLE
            s.start(command, now)
            stamp = self.agent.stamp(now)
            action = {"id": action_id or self.agent.new_id("act_"),
                      "deviceId": self.agent.device_id, "deviceType": "ev_charger",
                      "command": sl.COMMANDS[command], "parameters": None,
                      "state": "acknowledged", "createdAt": stamp, "updatedAt": stamp}
            self.current = action
        self.recent.append(action)
        if len(self.recent) > _REMEMBERED:
            self.recent.pop(0)
        return 202, action

    def sync(self):
        with self.slot.lock:
            self._sync()

    def _sync(self):
        # Copy a terminal slot state into the current action and emit its events.
        a = self.current
        s = self.slot
        if a is None or s.state == sl.ACKNOWLEDGED:
            return
        self._finish(a, s.state, s.error, s.done)
        self.current = None

    def _finish(self, a, state, error, done):
        ag = self.agent
        a["state"] = sl.STATES[state]
        a["updatedAt"] = ag.stamp(done)
        if state == sl.CANCELLED:
            ag.emit("action.cancelled", {"actionId": a["id"], "deviceId": ag.device_id,
                                         "command": a["command"], "cancelledAt": a["updatedAt"]})
            return
        ok = state == sl.COMPLETED
        body = {"actionId": a["id"], "deviceId": ag.device_id, "deviceType": "ev_charger",
                "command": a["command"], "parameters": None,
                "result": {"success": ok, "message": self._message(a, ok)},
                "completedAt": a["updatedAt"]}
        if not ok:
            code, text = self._error(error)
            a["errorCode"] = body["errorCode"] = code
            a["errorMessage"] = body["errorMessage"] = text
        ag.emit("push.completed" if ok else "push.failed", body)

    def _message(self, a, ok):
        c = self.agent.control
        if not ok:
            return a["command"] + " failed"
        if a["command"] == "idle":
            return "paused; contactor opened under load after 6 s" if c.forced_open else "paused"
        return "held by the power limit" if c.status == ctl.SUSPENDED else "current offered"

    def _error(self, error):
        if error >= sl.FAULT_BASE:
            code = ctl.FAULT_NAMES[error - sl.FAULT_BASE] or "FAULT"
            return code, "charger fault: " + code
        return _ERRORS[error]
