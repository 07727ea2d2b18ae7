"""Every request's start and bounds: an ASGI middleware that starts the request's meta (its
latencyMs counts from here) and refuses a body above MAX_BODY with 413 in the API's envelope
before the app reads it (docs/cloud.md, "Hostile input"). The charger takes at most
api.MAX_PAYLOAD (2 KB) per request, and so does the service: it never holds more of a body.
Headers and connection counts are uvicorn's (h11 / httptools bound the header size;
--limit-concurrency bounds connections). Runs in the
service's event loop.
"""
from tools.cloud.contract import Meta, failure
from tools.paths import cpython_paths

cpython_paths()
from api import MAX_PAYLOAD as MAX_BODY  # noqa: E402  (the charger's bound, bytes)

META = "cloud.meta"  # the scope key of the request's contract.Meta


class BodyLimit:
    def __init__(self, app, max_body=MAX_BODY):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope[META] = Meta(scope["path"])
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            return await self._refuse(scope, send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._refuse(scope, send)
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        sent = False
        # The body is JSON whatever Content-Type says (curl -d sends a form's type), as on
        # the charger: what is not JSON gets 400 INVALID_REQUEST.
        scope = dict(scope, headers=[(k, v) for k, v in scope["headers"]
                                     if k != b"content-type"] +
                     [(b"content-type", b"application/json")])

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send):
        r = failure(413, "PAYLOAD_TOO_LARGE", "the body is larger than the service takes",
                    {"maxBytes": self.max_body}, scope[META])
        await r(scope, None, send)
