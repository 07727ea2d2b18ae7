"""The HTTP API: http.md's paths for every charger on the broker, plus GET /ev-charger and the
webhook endpoints (docs/cloud.md). FastAPI routes; each answers in contract.py's envelope.

A request is checked in this order, so that nothing leaks: the path (404 NOT_FOUND, 405), the
key (401), whether the key may see the charger (404 DEVICE_NOT_FOUND, the same as one never
seen), the body (413, 400), then the charger (503 offline, its own answer, or 504). A write
is sent to the charger as the MQTT request docs/protocol.md gives, with the request's
requestId, and its reply relayed with the charger's own status and code. Runs in the
service's event loop.
"""
import json
import logging
import time
from typing import Optional

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException

from tools.cloud import intake, models
from tools.cloud.contract import ApiError, Meta, error, failure, iso, new_id, ok
from tools.cloud.keys import Caller
from tools.cloud.limits import MAX_BODY, META, BodyLimit
from tools.cloud.store import unavailable
from tools.cloud.tiers import not_found

log = logging.getLogger("cloud.api")
WRITE_WAIT_S = 5.0
MAX_WEBHOOKS = 20  # per key
ERRORS = {"model": models.ErrorEnvelope}
BEARER = {"type": "http", "scheme": "bearer",
          "description": "an API key (python -m tools.cloud keys add)"}


def _errors(*statuses):
    return {s: ERRORS for s in statuses}


def create(service, lifespan=None):
    """The FastAPI app over a service (tools/cloud/service.py), started by `lifespan`."""
    app = FastAPI(title="EV charger cloud API", version="1",
                  description="The API page's HTTP API for every charger on a broker "
                              "(docs/cloud.md).", openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit)
    _handlers(app)
    app.openapi = lambda: _openapi(app)

    # One level of dependencies each (a cached read's cost is mostly FastAPI's solving of
    # them); the bearer scheme is declared in the document by _openapi().
    async def caller(request: Request) -> Caller:
        return await service.keys.caller(request.headers.get("authorization"))

    async def device(request: Request,
                     deviceId: str = Path(max_length=128, examples=["charger-1"])) -> str:
        who = await service.keys.caller(request.headers.get("authorization"))
        if not who.sees(deviceId):
            raise not_found(deviceId)
        return deviceId

    @app.get("/ev-charger", response_model=models.ListEnvelope,
             responses=_errors(400, 401, 503), summary="The chargers this key may see")
    async def list_chargers(request: Request, who: Caller = Depends(caller),
                            after: Optional[str] = Query(None, max_length=128,
                                                         description="the last id of the "
                                                         "previous page"),
                            limit: int = Query(100, ge=1, le=1000)):
        rows = await service.store.device_list(who.scope, after, limit)
        out = []
        for r in rows:
            e = service.cache.get(r.id)
            online = e.online if e is not None and e.online is not None else r.online
            status = (r.state.get("state") or {}).get("status") if isinstance(r.state, dict) \
                else None
            out.append({"id": r.id, "deviceType": "ev_charger", "online": bool(online),
                        "status": status if isinstance(status, str) else None,
                        "lastPulledAt": iso(r.pulled_at)})
        return ok(out, _meta(request))

    @app.get("/ev-charger/{deviceId}", response_model=models.ReadEnvelope,
             responses=_errors(400, 401, 404, 503),
             summary="Read a charger (cache, live or fallback)")
    async def read(request: Request, deviceId: str = Depends(device),
                   expedite: bool = Query(False, description="a cache of at most 1 min")):
        return ok(await service.tiers.read(deviceId, expedite), _meta(request))

    @app.post("/ev-charger/{deviceId}/settings", response_model=models.SettingsEnvelope,
              responses=_errors(400, 401, 404, 413, 422, 429, 500, 502, 503, 504),
              summary="Write settings (a sparse map, all or nothing)")
    async def settings(request: Request, body: models.SettingsBody,
                       deviceId: str = Depends(device)):
        raw = await _raw(request)
        return await _relay(request, deviceId, "settings", {"settings": raw})

    @app.post("/ev-charger/{deviceId}", status_code=202, response_model=models.ActionEnvelope,
              responses=_errors(400, 401, 404, 409, 413, 422, 429, 500, 502, 503, 504),
              summary="Send a command (charge, idle); the action is stored")
    async def command(request: Request, body: models.CommandBody,
                      deviceId: str = Depends(device)):
        raw = await _raw(request)
        raw.setdefault("actionId", None)
        if raw["actionId"] is None:
            raw["actionId"] = new_id("act_")
        return await _relay(request, deviceId, "commands", raw)

    @app.post("/ev-charger/{deviceId}/limit", response_model=models.LimitEnvelope,
              responses=_errors(400, 401, 404, 413, 422, 429, 500, 502, 503, 504),
              summary="Set or clear the dynamic limit (limits.md)")
    async def limit(request: Request, body: models.LimitBody, deviceId: str = Depends(device)):
        return await _relay(request, deviceId, "limit", await _raw(request))

    @app.get("/actions/{actionId}", response_model=models.ActionEnvelope,
             responses=_errors(401, 404, 503), summary="An action as it stands")
    async def action(request: Request, actionId: str = Path(examples=["act_1"]),
                     who: Caller = Depends(caller)):
        body = await service.store.action(actionId, who.scope) \
            if intake.action_id_ok(actionId) else None
        if body is None:
            raise ApiError("ACTION_NOT_FOUND", "no action %s is known to this key"
                           % actionId[:64])
        return ok(body, _meta(request))

    @app.post("/webhooks", status_code=201, response_model=models.WebhookEnvelope,
              responses=_errors(400, 401, 413, 503), summary="Register a webhook endpoint")
    async def add_webhook(request: Request, body: models.WebhookBody,
                          who: Caller = Depends(caller)):
        wanted = body.events
        if not wanted or any(e not in models.WEBHOOK_EVENTS for e in wanted):
            raise ApiError("INVALID_REQUEST", "events must be a non-empty list of known events",
                           {"supported": list(models.WEBHOOK_EVENTS)})
        if not body.url.startswith(("http://", "https://")) or \
                not intake.printable(body.url, 1000):
            raise ApiError("INVALID_REQUEST", "url must be an http:// or https:// URL of at "
                           "most 1000 characters")
        if len(await service.store.webhook_list(who.key_id)) >= MAX_WEBHOOKS:
            raise ApiError("INVALID_REQUEST", "at most %d endpoints per key" % MAX_WEBHOOKS)
        row = {"id": new_id("wh_"), "key_id": who.key_id, "url": body.url,
               "events": list(dict.fromkeys(wanted)), "secret": service.new_secret(),
               "created_at": time.time()}
        await service.store.add_webhook(row)
        return ok(dict(_webhook(row), secret=row["secret"]), _meta(request), 201)

    @app.get("/webhooks", response_model=models.WebhookListEnvelope,
             responses=_errors(401, 503),
             summary="This key's webhook endpoints")
    async def webhooks(request: Request, who: Caller = Depends(caller)):
        rows = await service.store.webhook_list(who.key_id)
        return ok([_webhook(r._mapping) for r in rows], _meta(request))

    @app.delete("/webhooks/{webhookId}", response_model=models.DeletedEnvelope,
                responses=_errors(401, 404, 503),
                summary="Remove an endpoint (and its undelivered events)")
    async def delete_webhook(request: Request, webhookId: str, who: Caller = Depends(caller)):
        if not await service.store.delete_webhook(who.key_id, webhookId):
            raise ApiError("WEBHOOK_NOT_FOUND", "no webhook %s for this key" % webhookId[:64])
        return ok({"id": webhookId, "deleted": True}, _meta(request))

    @app.get("/health", response_model=models.HealthEnvelope, summary="For load balancers: "
             "up, and whether the broker is connected (no key needed)")
    async def health(request: Request):
        return ok({"broker": service.bridge.connected, "brokerAddress": service.bridge.broker},
                  _meta(request))

    async def _relay(request, device_id, kind, payload):
        """Send one request to the charger and answer with its reply."""
        meta = _meta(request)
        if "requestId" in payload:
            raise ApiError("INVALID_REQUEST", "unknown field: requestId (the service sets it)")
        e = await service.tiers.entry(device_id)
        if not service.bridge.connected:
            raise ApiError("BROKER_UNAVAILABLE", "the service is not connected to its broker; "
                           "nothing was sent")
        if not e.online:
            raise ApiError("DEVICE_OFFLINE", "charger %s is offline; nothing was sent or "
                           "queued" % device_id, {"deviceId": device_id})
        body = dict(payload, requestId=meta.request_id)
        size = len(json.dumps(body, separators=(",", ":")).encode())
        if size > MAX_BODY:
            raise ApiError("PAYLOAD_TOO_LARGE", "the request is larger than a charger takes",
                           {"maxBytes": MAX_BODY, "bytes": size})
        reply = await service.bridge.request(device_id, kind, body, service.write_wait_s)
        if reply is None:
            details = {"requestId": meta.request_id, "deviceId": device_id}
            if kind == "commands":
                details["actionId"] = payload["actionId"]
            raise ApiError("DEVICE_TIMEOUT", "the charger did not answer within %g s; its "
                           "outcome is reported later (GET /actions/{id} for a command, or "
                           "the events)" % service.write_wait_s, details)
        status, success, data = reply
        if success:
            if kind == "commands" and status == 202:
                act = intake.action(device_id, data)
                if act is None:
                    raise ApiError("DEVICE_ERROR", "the charger accepted the command with a "
                                   "reply that is not an action")
                try:
                    async with service.store.begin() as conn:
                        await service.store.save_action(conn, device_id, act)
                except Exception as e:  # the charger has it: so will the database, once
                    if not unavailable(e):  # it is back (the bridge's queue tries until then)
                        raise
                    service.bridge.keep_action(device_id, act)
                data = act
            return ok(data, meta, status)
        details = data.get("details") if isinstance(data.get("details"), dict) else {}
        message = data.get("message") if isinstance(data.get("message"), str) else data["code"]
        return failure(status, data["code"], message, details, meta)

    return app


def _meta(request):
    """The request's meta, started by limits.BodyLimit when the request arrived."""
    meta = request.scope.get(META)
    if meta is None:  # not through the middleware (no such request today)
        meta = request.scope[META] = Meta(request.url.path)
    return meta


async def _raw(request):
    """The body as the caller wrote it (FastAPI has checked its shape), key order kept: the
    charger names the first failing key in request order."""
    return json.loads(await request.body())


def _webhook(row):
    return {"id": row["id"], "url": row["url"], "events": list(row["events"]),
            "createdAt": iso(row["created_at"])}


def _handlers(app):
    @app.exception_handler(ApiError)
    async def api_error(request, e):
        return error(e, _meta(request))

    @app.exception_handler(HTTPException)
    async def http_error(request, e):
        # Starlette's own: no route (404), wrong method (405), a body it cannot decode (400).
        if e.status_code == 405:
            return failure(405, "METHOD_NOT_ALLOWED", "method not allowed on this path", {},
                           _meta(request))
        if e.status_code == 404:
            return failure(404, "NOT_FOUND", "no such path", {}, _meta(request))
        return failure(400, "INVALID_REQUEST", "the body cannot be read as JSON", {},
                       _meta(request))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e):
        problems = []
        for err in e.errors()[:8]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            problems.append({"field": where[:128], "problem": str(err.get("msg"))[:200]})
        message = "body is not JSON" if any(
            err.get("type") == "json_invalid" for err in e.errors()) else "malformed request"
        return failure(400, "INVALID_REQUEST", message, {"errors": problems}, _meta(request))

    @app.exception_handler(Exception)
    async def bug(request, e):
        if unavailable(e):
            return failure(503, "DATABASE_UNAVAILABLE", "the service cannot reach its "
                           "database; try again shortly", {}, _meta(request))
        log.exception("request %s failed", request.url.path)
        return failure(500, "INTERNAL_ERROR", "request not processed", {}, _meta(request))


def _openapi(app):
    """FastAPI's document, with our 400 in place of its 422 for malformed requests (a 422 is
    the charger's judgement of a value, and is listed where a charger can give one)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = BEARER
    for name, path in doc["paths"].items():
        for op in path.values():
            if name != "/health":
                op["security"] = [{"bearer": []}]
            r = op.get("responses", {})
            ref = json.dumps(r.get("422", {}))
            if "HTTPValidationError" in ref:
                del r["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        doc.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = doc
    return doc
