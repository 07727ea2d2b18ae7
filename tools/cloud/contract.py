"""The HTTP API's envelope and error codes, defined once (docs/cloud.md).

Every response is {success, data, meta} or {success: false, error: {code, message, details},
meta}, as the charger's own replies (docs/protocol.md) and http.md have it; meta is the HTTP
front's: requestId (req_...), timestamp, path, latencyMs. The codes are the charger's (a
charger's reply is relayed with its own code and status) plus the ones only a cloud can give
(an offline or silent charger, a key that may not see it). Runs in the service's event loop.
"""
import datetime
import json
import os
import time

from starlette.responses import Response

# Codes the cloud itself gives, with their HTTP status.
OWN = {
    "INVALID_REQUEST": 400,  # not JSON, not an object, a field of the wrong shape
    "UNAUTHORIZED": 401,  # no key, or not a key of this service
    "NOT_FOUND": 404,  # no such path
    "DEVICE_NOT_FOUND": 404,  # never seen, or not visible to this key
    "ACTION_NOT_FOUND": 404,
    "WEBHOOK_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PAYLOAD_TOO_LARGE": 413,  # above the charger's own bound (api.MAX_PAYLOAD)
    "INTERNAL_ERROR": 500,
    "DEVICE_ERROR": 502,  # the charger's reply could not be read
    "DEVICE_OFFLINE": 503,  # the charger is not connected: nothing is queued
    "BROKER_UNAVAILABLE": 503,  # the service has lost its broker: nothing was sent
    "DATABASE_UNAVAILABLE": 503,  # the service cannot reach its database: try again
    "DEVICE_TIMEOUT": 504,  # sent, no reply in time: the action or an event tells later
}
# Codes a charger answers with (docs/protocol.md, charger-api.md), relayed as they come.
CHARGER = ("INVALID_REQUEST", "CONFLICT", "UNSUPPORTED_SETTING", "READ_ONLY_SETTING",
           "UNSUPPORTED_UNIT", "INVALID_SETTING_VALUE", "SETTING_OUT_OF_RANGE",
           "UNSUPPORTED_MODE", "UNSUPPORTED_PARAMETER", "EXECUTION_NOT_SUPPORTED",
           "STRATEGY_NOT_SUPPORTED", "TOO_MANY_REQUESTS", "STORAGE_FAILED", "INTERNAL_ERROR")
CODES = tuple(OWN) + tuple(c for c in CHARGER if c not in OWN)


class ApiError(Exception):
    """Raised anywhere in a request; answered as the error envelope with its status."""

    def __init__(self, code, message, details=None, status=None):
        super().__init__(message)
        self.code = code
        self.status = status or OWN[code]
        self.message = message
        self.details = details or {}


def new_id(prefix):
    return prefix + os.urandom(10).hex()


def iso(unix_s):
    """ISO 8601 UTC with milliseconds, as the charger writes its timestamps."""
    if unix_s is None:
        return None
    t = datetime.datetime.fromtimestamp(unix_s, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def parse_iso(text):
    """Unix seconds of an ISO 8601 time, or None if it is not one."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


class Meta:
    """One request's meta, started when the request arrives."""

    def __init__(self, path, request_id=None):
        self.path = path
        self.request_id = request_id or new_id("req_")
        self.started = time.perf_counter()

    def body(self):
        return {"requestId": self.request_id, "timestamp": iso(time.time()), "path": self.path,
                "latencyMs": round((time.perf_counter() - self.started) * 1000, 2)}


def _json(obj, status):
    return Response(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode(),
                    status_code=status, media_type="application/json")


def ok(data, meta, status=200):
    return _json({"success": True, "data": data, "meta": meta.body()}, status)


def failure(status, code, message, details, meta):
    return _json({"success": False, "error": {"code": code, "message": message,
                                              "details": details or {}},
                  "meta": meta.body()}, status)


def error(e, meta):
    return failure(e.status, e.code, e.message, e.details, meta)
