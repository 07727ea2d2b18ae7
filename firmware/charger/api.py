# Requests from the network, answered in the {success, data, meta} envelope. Everything
# here is hostile input: it is checked completely before anything changes, and nothing it
# holds is echoed back unless it is plain printable text (a reply is always valid UTF-8).
import json
import _thread
import pilot
import settings as st
import topics
import slot as sl
from actions import STRATEGY
from api_text import (TOO_NESTED, JsonBody, envelope, error, invalid, json_fault,
                      refused_settings, text)

MAX_PAYLOAD = 2048  # bytes; larger requests are refused unparsed
# The fields each request kind takes, in the order of topics.REQUESTS (a tuple of constants:
# in flash when frozen).
_REQUEST_KEYS = (("requestId", "action", "onConflict", "actionId"), ("requestId", "settings"),
                 ("requestId",), ("requestId", "limit", "ttl", "source"),
                 ("requestId", "url", "manifest", "signature", "duringSession"))
_ACTION_KEYS = ("command", "parameters", "start", "end", "execution")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:"
_SETTINGS = len(st.WRITABLE) + len(st.READ_ONLY)  # keys a settings write may name, at most


def _echo(value, depth=2):
    # A request value made safe to put in a reply: text as text(), containers small and
    # shallow, anything else None.
    if value is None or type(value) in (bool, int, float):
        return value
    if type(value) is str:
        return text(value)
    if depth and type(value) is list and len(value) <= 8:
        return [_echo(v, depth - 1) for v in value]
    if depth and type(value) is dict and len(value) <= 8:
        out = {}
        for k in value:
            if text(k, 32):
                out[k] = _echo(value[k], depth - 1)
        return out
    return None


def _id_ok(value):
    if type(value) is not str or not 0 < len(value) <= 64:
        return False
    for ch in value:
        if ch not in _ID_CHARS:
            return False
    return True


def _position(payload, key, start):
    at = payload.find(b'"' + key.encode() + b'"', start)
    return at if at >= 0 else len(payload)


def _field(kind):
    # The request field an HTTP body fills for `kind` (topics.ROUTES), or None.
    for route in topics.ROUTES:
        if route[2] == kind:
            return route[3]
    return None


def _not_an_object(payload):
    return invalid("payload holds more than 32 objects and arrays, or nests them more than "
                   "8 deep" if json_fault(payload) == TOO_NESTED else
                   "payload must be a JSON object")


def _parse(payload):
    # The request, or None if it is not JSON (json_fault's grammar, so that both interpreters
    # refuse the same bodies) or would take a heap's worth of objects.
    if json_fault(payload):
        return None
    try:
        return json.loads(payload)
    except Exception:  # any parser complaint: not JSON
        return None


class Api:
    def __init__(self, agent):
        self.agent = agent
        # One request at a time, whichever front it came through (MQTT, HTTP): one command
        # slot, one cap, one journal. Held while a request is judged and applied (flash
        # included), never while a reply is sent.
        self.lock = _thread.allocate_lock()

    def handle(self, kind, payload, now):
        # One reply (a JsonBody) for one request on topic `kind` (MQTT, the bench link): the
        # request is JSON with its requestId, the reply's meta carries its status.
        if len(payload) > MAX_PAYLOAD:
            return self.too_large(kind, now)
        rid = None
        req = _parse(payload)
        if type(req) is not dict:
            status, body = 400, _not_an_object(payload)
        elif "requestId" not in req:
            status, body = 400, invalid("requestId is required")
        else:
            rid = text(req["requestId"], 128)
            if rid is None:
                status, body = 400, invalid("requestId must be 1-128 printable ASCII characters")
            else:
                status, body = self._run(kind, req, payload, payload.find(b'"settings"'), now)
        return self.reply(kind, rid, status, body, now)

    def request(self, kind, body, rid, now):
        # One request of `kind` through the HTTP front: `body` as the API page sends it
        # (b"" for none), `rid` the requestId the front made for it. (status, reply body).
        if kind == "read":
            req = {}
        else:
            req = _parse(body)
            if type(req) is not dict:
                return 400, _not_an_object(body)
            if "requestId" in req:
                return 400, invalid("unknown field: requestId (the charger sets it)")
            field = _field(kind)
            if field:  # the body is that field's value: a settings write's sparse map
                req = {field: req}
        req["requestId"] = rid
        return self._run(kind, req, body, 0, now)

    def action(self, action_id):
        # GET /actions/{id}: (status, the action as it stands or the refusal).
        found = self.agent.actions.get(action_id) if _id_ok(action_id) else None
        if found is None:
            return 404, error("ACTION_NOT_FOUND", "no action %s is remembered by this charger "
                              "(the last 16, or the last 2 after a restart)"
                              % (text(action_id) or "(not printable)"))
        return 200, found

    def _run(self, kind, req, payload, after, now):
        # `after`: where in `payload` the settings map starts (its keys' order is read there)
        with self.lock:
            try:
                return self._route(kind, req, payload, after, now)
            except Exception as e:  # a bug must not take the agent down with it
                print("api: request failed:", repr(e))
                self.agent.faults += 1  # and it is a fault of the firmware's (ota_valid)
                return 500, error("INTERNAL_ERROR", "request not processed")

    def too_large(self, kind, now):
        return self.reply(kind, None, 400, error("INVALID_REQUEST", "payload too large",
                                                 {"maxBytes": MAX_PAYLOAD}), now)

    def busy(self, kind, payload, now):
        # Too many requests at once: refused without acting on them, so the sender can
        # try again; the requestId is read so the refusal can be matched to the request.
        req = _parse(payload)
        rid = text(req.get("requestId"), 128) if type(req) is dict else None
        return self.reply(kind, rid, 429, error("TOO_MANY_REQUESTS", "requests arrive faster "
                                                "than they are handled; nothing was changed"),
                          now)

    def reply(self, kind, rid, status, body, now):
        meta = {"requestId": rid, "status": status,
                "path": topics.path(self.agent.device_id, kind),
                "timestamp": self.agent.stamp(now)}
        return JsonBody(envelope(status, body, meta))

    def _route(self, kind, req, payload, after, now):
        if kind not in topics.REQUESTS:
            return 400, invalid("unknown request topic")
        allowed = _REQUEST_KEYS[topics.REQUESTS.index(kind)]
        for key in req:
            if key not in allowed:
                return 400, invalid("unknown field: " + (text(key, 32) or "(not printable)"))
        if kind == "read":
            return 200, self.agent.device_read(now, diagnostics=True)
        if kind == "settings":
            return self._settings(req.get("settings"), payload, after, now)
        if kind == "limit":
            return self.agent.limits.request(req, now)
        if kind == "update":
            return self.agent.update(req, now)
        return self._command(req, now)

    def _settings(self, changes, payload, after, now):
        if type(changes) is not dict or not changes:
            return 400, invalid("settings must be a non-empty object")
        if len(changes) > _SETTINGS:
            # Some must be unknown; one error record for each of a 2 KB map's ~290 keys
            # ran a 56 KB heap dry (a MemoryError, 500, under the other threads).
            return 400, invalid("settings names more keys than the charger has settings (%d)"
                                % _SETTINGS)
        errors = []  # (status, setting_error)
        for key in changes:
            bad = st.check(key, changes[key], self.agent.settings.switchable)
            if bad:
                e = bad[1]
                e["setting"] = text(key, 64) or "(not printable)"
                if "providedUnit" in e["details"]:
                    e["details"]["providedUnit"] = _echo(e["details"]["providedUnit"])
                errors.append(bad)
        if errors:
            # MicroPython's dicts forget the request's key order: recover it from the text,
            # so "the first failing key" means the same on every interpreter.
            errors.sort(key=lambda b: (_position(payload, b[1]["setting"], after),
                                       b[1]["setting"]))
            return errors[0][0], refused_settings([b[1] for b in errors])
        if not self.agent.settings.write(changes, now):
            return 500, self.agent.storage_error(
                "flash refused the write: a lower value applies until the next restart, "
                "anything else is unchanged")
        data = {"deviceId": self.agent.device_id,
                "updated": [k for k in st.WRITABLE if k in changes]}
        s = self.agent.settings
        if st.CAP in changes and s.per_phase_da(s.cap_w) < pilot.MIN_CURRENT:
            # Accepted, but a person would wonder why nothing charges: say so.
            data["note"] = ("max_charge_rate is below the 6 A the pilot can signal: the session "
                            "is held suspended until it rises")
        return 200, data

    def _command(self, req, now):
        action = req.get("action")
        if type(action) is not dict:
            return 400, invalid("action must be an object")
        for key in action:
            if key not in _ACTION_KEYS:
                return 400, invalid("unknown action field: " + (text(key, 32) or "(not printable)"))
        name = action.get("command")
        if type(name) is not str:
            return 400, invalid("action.command must be a string")
        if name not in sl.COMMANDS:
            return 422, error("UNSUPPORTED_MODE", "unknown command",
                              {"requested": text(name), "supported": list(sl.COMMANDS[1:])})
        command = sl.COMMANDS.index(name)
        params = action.get("parameters")
        if params is not None and params != {}:
            return 422, error("UNSUPPORTED_PARAMETER", "commands take no parameters",
                              {"parameters": _echo(params) if type(params) is dict else None})
        execution = action.get("execution", "immediate")
        if action.get("start") is not None or action.get("end") is not None or \
                execution not in ("immediate", ["immediate"]):
            return 422, error("EXECUTION_NOT_SUPPORTED", "commands run immediately",
                              {"supported": ["immediate"]})
        action_id = req.get("actionId")
        if action_id is not None and not _id_ok(action_id):
            return 400, invalid("actionId must be 1-64 letters, digits or _-.:")
        strategy = req.get("onConflict")
        if strategy is not None and strategy != STRATEGY:
            return 422, error("STRATEGY_NOT_SUPPORTED", "unsupported conflict strategy",
                              {"requested": _echo(strategy), "supported": [STRATEGY]})
        actions = self.agent.actions
        if action_id is not None:
            actions.sync()
            known = actions.get(action_id)
            if known is not None:
                return 202, known
        return actions.submit(command, action_id, strategy, now)
