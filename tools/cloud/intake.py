"""What a charger publishes, checked before anything is stored or served (docs/cloud.md,
"Hostile input"). Pure functions, no I/O.

A charger is trusted no more than an HTTP caller: a payload that is too large, not JSON
(NaN and Infinity included: they are not JSON and could not be served again), not the shape
docs/protocol.md gives, or about another charger (a device id that is not the topic's) is
refused here, counted by the bridge, and changes nothing.
"""
import json
import math

MAX_STATE = 65536  # bytes: a device read is about 1.5 KB, with diagnostics about 4 KB
MAX_EVENT = 16384
STATUSES = ("acknowledged", "completed", "failed", "cancelled")
COMMANDS = ("charge", "idle")
_ACTION_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def _constant(name):
    raise ValueError("%s is not JSON" % name)


def parse(payload, limit):
    """A JSON object from bytes, or None."""
    if len(payload) > limit:
        return None
    try:
        obj = json.loads(payload, parse_constant=_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def printable(value, limit):
    return isinstance(value, str) and 0 < len(value) <= limit and all(
        " " <= ch <= "~" for ch in value)


def device_id_ok(value):
    return printable(value, 128) and not any(ch in value for ch in "/+#")


def action_id_ok(value):
    return isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= _ACTION_ID


def _finite(obj, depth=0):
    # json.loads took no NaN, but 1e999 is float("inf"): refuse it too.
    if isinstance(obj, float):
        return math.isfinite(obj)
    if depth > 12:
        return False
    if isinstance(obj, dict):
        return all(_finite(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v, depth + 1) for v in obj)
    return True


def device_read(device_id, data):
    """The device read if `data` is one for this charger, else None."""
    if not (isinstance(data, dict) and data.get("id") == device_id and
            data.get("deviceType") == "ev_charger" and isinstance(data.get("state"), dict) and
            isinstance(data.get("metadata"), dict) and isinstance(data.get("settings"), dict)
            and isinstance(data["state"].get("status"), str) and _finite(data)):
        return None
    return data


def state(device_id, obj):
    """The device read of a state report ({success, data, meta}), or None."""
    if obj is None or obj.get("success") is not True:
        return None
    return device_read(device_id, obj.get("data"))


def event(device_id, obj):
    """The event ({id, type, timestamp, data}) if it is one of this charger's, else None."""
    if obj is None or not printable(obj.get("id"), 128) or not printable(obj.get("type"), 64):
        return None
    data = obj.get("data")
    if not isinstance(data, dict) or data.get("deviceId", device_id) != device_id:
        return None
    if not _finite(obj):
        return None
    if obj["type"] in ("push.completed", "push.failed", "action.cancelled"):
        if not action_id_ok(data.get("actionId")) or data.get("command") not in COMMANDS:
            return None
    return obj


def action(device_id, data):
    """An action as a charger reports it (a 202 reply's data, lastAction), or None."""
    if not (isinstance(data, dict) and action_id_ok(data.get("id")) and
            data.get("command") in COMMANDS and data.get("state") in STATUSES and
            data.get("deviceId", device_id) == device_id):
        return None
    out = {"id": data["id"], "deviceId": device_id, "deviceType": "ev_charger",
           "command": data["command"], "parameters": None, "state": data["state"]}
    for key in ("createdAt", "updatedAt", "errorCode", "errorMessage"):
        if printable(data.get(key), 256):
            out[key] = data[key]
    out.setdefault("createdAt", None)
    return out


def ended(device_id, evt, known):
    """The action after its terminal event: `known` (the stored action, or None) moved on."""
    d = evt["data"]
    state = {"push.completed": "completed", "push.failed": "failed",
             "action.cancelled": "cancelled"}[evt["type"]]
    base = dict(known) if known else {"id": d["actionId"], "deviceId": device_id,
                                      "deviceType": "ev_charger", "command": d["command"],
                                      "parameters": None, "createdAt": None}
    base["state"] = state
    at = d.get("completedAt") or d.get("cancelledAt")
    if printable(at, 64):
        base["updatedAt"] = at
    if state == "failed":
        for key in ("errorCode", "errorMessage"):
            if printable(d.get(key), 256):
                base[key] = d[key]
    return base


def reply(obj):
    """(requestId, status, success, body) of a reply on responses, or None."""
    if obj is None or not isinstance(obj.get("meta"), dict):
        return None
    meta = obj["meta"]
    rid, status = meta.get("requestId"), meta.get("status")
    if not printable(rid, 128) or type(status) is not int or not 200 <= status <= 599:
        return None
    ok = obj.get("success")
    body = obj.get("data") if ok is True else obj.get("error")
    if ok is not (status < 300) or not _finite(obj):
        return None
    if not ok and not (isinstance(body, dict) and printable(body.get("code"), 64)):
        return None
    return rid, status, ok, body
