"""A central system for the OCPP tests and the bench, built on PyPI `ocpp` the way its own
examples are: an `ocpp.v16.ChargePoint` subclass with `@on` handlers, served by `websockets`
with the `ocpp1.6` subprotocol. It runs in an asyncio loop of its own thread; the caller
talks to it synchronously: `call()` sends a CALL (validated by the library's schemas both
ways), `send_raw()` sends any text, and `log` holds every CALL the charge point sent, in
order."""
import asyncio
import datetime
import itertools
import json
import threading

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import basic_auth, serve

from tools.bench.broker import free_port
from tools.bench.poll import wait_for as wait  # (Csms.wait, and the OCPP tests' name)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class CentralSystem(ChargePoint):
    """One connected charge point, as the CSMS sees it."""

    csms = None  # the Csms that accepted the connection

    async def route_message(self, raw):
        c = self.csms
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        ok = isinstance(msg, list) and len(msg) >= 3
        if ok and msg[0] == 2:
            c.log.append((msg[2], msg[3]))
        elif ok and msg[1] in c.raw_sent:  # the answer to a frame the test sent raw
            c.raw_answers[msg[1]] = msg
            return
        await super().route_message(raw)

    @on(Action.boot_notification)
    def on_boot(self, **kw):
        c = self.csms
        return call_result.BootNotification(current_time=now_iso(), interval=c.interval,
                                            status=c.boot_status)

    @on(Action.heartbeat)
    def on_heartbeat(self):
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **kw):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": self.csms.tag_status})

    @on(Action.start_transaction)
    def on_start(self, **kw):
        c = self.csms
        return call_result.StartTransaction(transaction_id=next(c.tx_ids),
                                            id_tag_info={"status": c.tag_status})

    @on(Action.stop_transaction)
    def on_stop(self, **kw):
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **kw):
        return call_result.MeterValues()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **kw):
        return call_result.FirmwareStatusNotification()


class Csms:
    def __init__(self, port=None, password=None, tls=None, interval=300):
        self.port = port or free_port()
        self.password = password  # HTTP Basic for the charge point id (security profile 1/2)
        self.tls = tls  # an ssl.SSLContext: wss:// (security profile 2)
        self.interval = interval
        self.boot_status = "Accepted"
        self.tag_status = "Accepted"
        self.tx_ids = itertools.count(101)
        self.answer = True  # False: a CSMS that stops answering (and reading)
        self.log = []  # (action, payload) of every CALL from the charge point
        self.raw_sent = set()
        self.raw_answers = {}
        self.connections = []  # charge point ids, one per accepted connection
        self.paths = []
        self.cp = None
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return "%s://%s:%d/ocpp" % ("wss" if self.tls else "ws",
                                    "localhost" if self.tls else "127.0.0.1", self.port)

    def _run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self):
        async def go():
            auth = basic_auth(realm="csms", check_credentials=self._check) \
                if self.password else None
            self._server = await serve(self._on_connect, "127.0.0.1", self.port,
                                       subprotocols=["ocpp1.6"], ssl=self.tls,
                                       process_request=auth)
        self._run(go())
        return self

    def _check(self, user, password):
        return password == self.password

    async def _on_connect(self, ws):
        self.paths.append(ws.request.path)
        if ws.subprotocol != "ocpp1.6":
            await ws.close()
            return
        cp = CentralSystem(ws.request.path.rsplit("/", 1)[-1], ws, response_timeout=15)
        cp.csms = self
        self.cp = cp
        self.connections.append(cp.id)
        try:
            while True:
                raw = await ws.recv()
                while not self.answer:
                    await asyncio.sleep(0.05)
                await cp.route_message(raw)
        except Exception:  # the connection closed: the charge point is gone
            if self.cp is cp:
                self.cp = None

    def stop(self):
        async def go():
            self._server.close()
            await self._server.wait_closed()
        self._run(go())
        self.cp = None

    def close(self):
        if self._server:
            try:
                self.stop()
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    # -- talking to the charge point
    def call(self, payload, timeout=20):
        """Send a CALL (an ocpp.v16.call dataclass); the charge point's answer as the
        library's call_result, None for a CALLERROR."""
        cp = self.wait(lambda: self.cp, 20)
        return self._run(cp.call(payload), timeout)

    def call_error(self, payload, timeout=20):
        """Send a CALL expecting a CALLERROR: the library's exception for it."""
        cp = self.wait(lambda: self.cp, 20)
        try:
            self._run(cp.call(payload, suppress=False), timeout)
        except Exception as e:  # an OCPPError for the CALLERROR
            return e
        raise AssertionError("no CALLERROR for %r" % (payload,))

    def send_raw(self, text, uid=None):
        """Send any text; answers to `uid` land in raw_answers instead of the library."""
        cp = self.wait(lambda: self.cp, 20)
        if uid is not None:
            self.raw_sent.add(uid)
        self._run(cp._connection.send(text))

    wait = staticmethod(wait)

    def actions(self, name):
        return [p for a, p in list(self.log) if a == name]

    def statuses(self, connector=1):
        return [p["status"] for p in self.actions("StatusNotification")
                if p["connectorId"] == connector]
