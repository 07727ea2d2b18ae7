# The OCPP 1.6J uplink (ocpp.md): a WebSocket to the CSMS, BootNotification first, then
# heartbeats, status notifications, the transaction queue, and an answer to every CALL.
# It runs in its own thread and every call here may block (DNS, connect, TLS), each with a
# timeout; by design neither the control loop nor the worker ever waits for it (the station
# does the local work, ocpp_station.py). One CALL of ours is in flight at a time, as OCPP-J
# requires; a link that stops answering it, or a WebSocket ping, within `ocpp.timeout` is
# dropped and dialled again (door.py). A Reset ends run(): the runner then restarts the
# board.
import gc
import json
import os
import select
import time
import _thread
from binascii import b2a_base64
from api_text import printable
import door
import ocpp_ops
from ocpp_profiles import Invalid
from ocpp_station import Station
import ws_client

PROTOCOL = "ocpp1.6"
VENDOR = "MicroPython-EVSE"
MAX_MESSAGE = 4096  # bytes: a larger incoming message is refused unread (FormationViolation)
_POLL_MS = 50  # how long the loop waits for input before its other work
_READS = 8  # messages handled per turn before the loop sends anything of its own
_BOOT_RETRY_S = 60  # when the CSMS gives no interval for the next BootNotification
_BOOT_RETRY_MAX_S = 86400  # a longer one counts as a day (the tick counter spans 6 days)
_RESET_WAIT_MS = {"Soft": 10000, "Hard": 3000}  # for the vehicle to let go and the Stop to go
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def _ms():
    return time.ticks_ms()


def _since(t):
    return time.ticks_diff(time.ticks_ms(), t)


def quote(text):
    # A path segment: percent-encoded where it is not an unreserved character.
    return "".join(ch if ch in _UNRESERVED else "".join("%%%02X" % b for b in ch.encode())
                   for ch in text)


def salvage_id(head):
    # The message id of a CALL whose body could not be used: '[2, "<id>", ...'.
    h = bytes(head[:64])
    i = h.find(b'"')
    if i < 0 or h[:i].replace(b" ", b"") != b"[2,":
        return None
    j = h.find(b'"', i + 1)
    try:
        uid = h[i + 1:j].decode() if j > 0 else None
    except UnicodeError:
        return None
    return uid if printable(uid, 36) else None


class OcppUplink:
    def __init__(self, cfg, board, agent):
        o = cfg["ocpp"]
        self.cfg = o
        self.url = o["url"].rstrip("/") + "/" + quote(cfg["device_id"])
        self.identity = cfg["device_id"]
        self.timeout_ms = int(o.get("timeout", 30)) * 1000
        self.board = board
        self.agent = agent
        self.station = Station(agent, o)
        agent.duties.append(self.station.service)
        # An update's stages as FirmwareStatusNotifications (updater.py), sent in order.
        self._firmware = []
        self._firmware_lock = _thread.allocate_lock()  # the update's thread adds to it
        self._firmware_status = "Idle"
        if agent.updater:
            agent.updater.listeners.append(self)
        self.ws = None
        self.accepted = False  # the CSMS accepted this power-up's BootNotification
        self.rejected = False  # its last answer to one was Rejected: silence (_booted)
        self.reset = None  # "Soft" / "Hard": asked for, not yet done
        self.quiet = (OSError,)  # the link's and the CSMS's failures: one line each (door)
        self.connects = 0
        self.refused = 0  # incoming messages that were not OCPP at all (no answer possible)
        self._nonce = "%04x" % (int.from_bytes(os.urandom(2), "big"))
        self._ids = 0
        self._awaiting = None  # (message id, action, entry, sent at)
        self._triggers = []  # (action, connector) the CSMS asked for
        self._boot_at = _ms()  # the next BootNotification not before this
        self._boot_wait_ms = 0  # the interval the CSMS gave for it
        self._tx_at = 0  # our last message out
        self._rx_at = 0  # their last frame in
        self._ping_at = None  # a ping waiting for anything back
        self._retry_at = 0  # the queue's head after a CALLERROR
        self._attempts = 0
        self._reset_by = None  # deadline for a reset in progress

    # -- the thread
    def run(self):
        # OSError, a bad answer, a bug: all mean dial again; a Reset (`reset`) returns.
        door.run(self, "ocpp")

    def connect(self):
        self.board.ensure_network()
        o = self.cfg
        headers = []
        if o.get("password"):  # security profiles 1 and 2: HTTP Basic, the identity as user
            cred = b2a_base64(("%s:%s" % (self.identity, o["password"])).encode()).strip()
            headers.append(("Authorization", "Basic " + cred.decode()))
        self.ws = ws_client.connect(self.url, PROTOCOL, headers,
                                    self._tls if o.get("ca_file") else None, MAX_MESSAGE,
                                    self.timeout_ms // 1000 or 1)
        self.connects += 1
        self._awaiting = None
        self._ping_at = None
        self._rx_at = self._tx_at = _ms()
        if time.ticks_diff(self._boot_at, self._rx_at) > self._boot_wait_ms:
            self._boot_at = self._rx_at  # the counter wrapped while offline: the wait is over

    def _tls(self, sock, host):
        # wss://: the CSMS's certificate checked against ocpp.ca_file and the host dialled.
        import trust
        return trust.wrap(trust.context(self.cfg["ca_file"]), sock, host)

    def close(self):
        self.station.online = False
        if self.ws:
            self.ws.close()
        self.ws = None

    def serve(self):
        poller = select.poll()
        poller.register(self.ws.sock, select.POLLIN)
        while True:
            for _, ev in poller.poll(_POLL_MS):
                if ev & (select.POLLHUP | select.POLLERR):
                    raise OSError("socket closed")
                for _ in range(_READS):
                    self._receive()
                    if not poller.poll(0):
                        break
            self._supervise()
            if self._awaiting is None:
                self._send_next()
            if self.reset and self._reset_done():
                return  # the board restarts (door.py)

    # -- in
    def _receive(self):
        data = self.ws.recv()
        self._rx_at = _ms()
        self._ping_at = None  # anything back answers a ping
        if data is None:
            return
        if isinstance(data, ws_client.TooLarge):
            self._error(salvage_id(data.head), "FormationViolation",
                        "message of %d bytes, above %d" % (data.size, MAX_MESSAGE))
            return
        try:
            msg = json.loads(data)
        except Exception:  # not JSON (or not UTF-8)
            self._error(salvage_id(data), "FormationViolation", "not JSON")
            return
        if type(msg) is not list or len(msg) < 3 or msg[0] not in (2, 3, 4) or \
                not printable(msg[1], 36):
            self.refused += 1  # not an OCPP message with an id to answer
            return
        if msg[0] == 2:
            self._call(msg)
        elif self._awaiting and msg[1] == self._awaiting[0]:
            self._answered(msg)

    def _call(self, msg):
        if self.rejected:
            return  # OCPP 1.6 section 4.2: while Rejected, no answer to anything at all
        uid = msg[1]
        if len(msg) != 4 or type(msg[2]) is not str:
            return self._error(uid, "FormationViolation", "a CALL is [2, id, action, payload]")
        now = self.board.now_ms()
        try:
            with self.station.lock:
                result = ocpp_ops.handle(self, msg[2], msg[3], now)
        except Invalid as e:
            return self._error(uid, e.args[0], e.args[1])
        except Exception as e:  # a bug must still be answered, and never end the link
            print("ocpp: %s failed: %r" % (msg[2], e))
            return self._error(uid, "InternalError", "the charge point failed to handle it")
        self._send([3, uid, result])

    def _error(self, uid, code, text):
        if self.rejected:
            return  # as _call: not even a CALLERROR
        if uid is None:
            self.refused += 1
            return
        self._send([4, uid, code, text, {}])

    def _answered(self, msg):
        boot = False
        uid, action, entry, _ = self._awaiting
        self._awaiting = None
        ok = msg[0] == 3 and len(msg) == 3 and type(msg[2]) is dict
        result = msg[2] if ok else None
        st = self.station
        with st.lock:
            if action == "BootNotification":
                self._booted(result)
                boot = self.accepted
            elif action == "Heartbeat" and ok:
                st.learn_time(result.get("currentTime"))
            elif action == "Authorize":  # `entry` holds the idTag
                info = result.get("idTagInfo") if ok else None
                st.authorized(entry, type(info) is dict and info.get("status") == "Accepted")
            elif entry is not None:  # from the station's queue
                if ok:
                    st.sent(entry, result)
                    self._attempts = 0
                else:
                    self._attempts += 1
                    if self._attempts >= st.config.number("TransactionMessageAttempts"):
                        st.refused(entry)
                        self._attempts = 0
                    else:
                        retry = st.config.number("TransactionMessageRetryInterval") * 1000
                        self._retry_at = time.ticks_add(_ms(), retry * self._attempts)
        if boot:  # outside the station's lock: it reports what an update did
            self.agent.uplink_reached("ocpp")

    def _booted(self, result):
        st = self.station
        status = result.get("status") if result else None
        interval = result.get("interval") if result else None
        if type(interval) is not int or interval < 0:
            interval = 0
        if result:
            st.learn_time(result.get("currentTime"))
        self.rejected = status == "Rejected"
        if status == "Accepted":
            self.accepted = True
            if interval:
                st.config.volatile["HeartbeatInterval"] = str(interval)
        else:  # Pending, Rejected, or no sense: ask again later, say nothing else meanwhile
            self._boot_wait_ms = min(interval or _BOOT_RETRY_S, _BOOT_RETRY_MAX_S) * 1000
            self._boot_at = time.ticks_add(_ms(), self._boot_wait_ms)

    # -- out
    def trigger(self, action, connector):
        # TriggerMessage: sent after its CALLRESULT, one CALL at a time.
        for c in ((0, 1) if connector is None and action == "StatusNotification" else
                  (connector,)):
            self._triggers.append((action, c))

    def _send_next(self):
        # What to send is chosen with the station's lock held; it is sent after, so the
        # worker never waits for a socket.
        st = self.station
        with st.lock:
            out = self._next_out(st, self.board.now_ms())
        if out:
            self._call_out(*out)

    def _next_out(self, st, now):
        # (action, payload, entry) of the next CALL of ours, or None.
        if not st.known:
            return None  # just powered up: what the connector holds is not known yet
        if self.rejected and time.ticks_diff(_ms(), self._boot_at) < 0:
            return None  # OCPP 1.6 section 4.2: nothing at all until the interval has passed
        if self._triggers:
            return self._triggered(st, *self._triggers.pop(0))
        if not self.accepted:
            return self._boot() if time.ticks_diff(_ms(), self._boot_at) >= 0 else None
        if not st.online:  # accepted, now or on an earlier connection
            st.online = True
            st.renotify(now)
        if self._firmware:
            with self._firmware_lock:
                status = self._firmware.pop(0)
            return "FirmwareStatusNotification", {"status": status}, None
        if st.authorize:
            tag = st.authorize
            st.authorize = None
            return "Authorize", {"idTag": tag}, tag
        if st.queue and time.ticks_diff(_ms(), self._retry_at) >= 0:
            head = st.head(now)
            if head:
                return head
        every = st.config.number("HeartbeatInterval") * 1000
        if every and _since(self._tx_at) >= every:
            return "Heartbeat", {}, None
        return None

    def _triggered(self, st, action, connector):
        if action == "BootNotification":
            return self._boot()
        if action == "Heartbeat":
            return "Heartbeat", {}, None
        if action == "FirmwareStatusNotification":
            return action, {"status": self._firmware_status}, None
        if action == "StatusNotification":
            status = st.status(connector)
            p = {"connectorId": connector, "status": status[0], "errorCode": status[1]}
            if status[2]:
                p["vendorErrorCode"] = status[2]
            ts = st.stamp()
            if ts:
                p["timestamp"] = ts
            return "StatusNotification", p, None
        st.sample(self.board.now_ms(), "Trigger")  # MeterValues: into the queue, sent in turn
        return None

    def firmware_pending(self):
        # The update's thread, before its restart: a stage not yet answered by the CSMS.
        aw = self._awaiting
        return bool(self._firmware) or (aw is not None and aw[1] == "FirmwareStatusNotification")

    def firmware_stage(self, stage, version):
        # The update's thread, or this one: "download_failed" -> "DownloadFailed". After an
        # end (installed, or failed), a TriggerMessage hears Idle.
        status = "".join(w[0].upper() + w[1:] for w in stage.split("_"))
        with self._firmware_lock:
            self._firmware.append(status)
            self._firmware_status = status if stage in ("downloading", "downloaded",
                                                        "installing") else "Idle"

    def _boot(self):
        return "BootNotification", {"chargePointVendor": VENDOR,
                                    "chargePointModel": self.agent.model[:20],
                                    "chargePointSerialNumber": self.identity[:25],
                                    "firmwareVersion": self.agent.firmware}, None

    def _call_out(self, action, payload, entry=None):
        self._ids += 1
        uid = "%s%x" % (self._nonce, self._ids)
        self._send([2, uid, action, payload])
        self._awaiting = (uid, action, entry, _ms())

    def _send(self, msg):
        try:
            data = json.dumps(msg).encode()
        except MemoryError:  # a fragmented heap: once more after a collection
            gc.collect()
            data = json.dumps(msg).encode()
        self.ws.send_text(data)
        self._tx_at = _ms()

    # -- supervision and reset
    def _supervise(self):
        a = self._awaiting
        if a and _since(a[3]) >= self.timeout_ms:
            raise OSError("no answer to %s within %d s" % (a[1], self.timeout_ms // 1000))
        if self._ping_at is not None:
            if _since(self._ping_at) >= self.timeout_ms:
                raise OSError("no answer to a WebSocket ping")
            return
        every = self.station.config.number("WebSocketPingInterval") * 1000
        if every and _since(self._rx_at) >= every:
            self.ws.ping()
            self._ping_at = _ms()

    def _reset_done(self):
        # Whether the Reset asked for may be carried out now (the first call stops the
        # transaction, and gives the vehicle and the CSMS _RESET_WAIT_MS to let go).
        st = self.station
        now = self.board.now_ms()
        with st.lock:
            if self._reset_by is None:
                self._reset_by = time.ticks_add(_ms(), _RESET_WAIT_MS[self.reset])
                st.stop(self.reset + "Reset", now)
            pending = st.pending_tx() or self._awaiting is not None
            let_go = self.reset == "Hard" or not self.agent.control.contactor_closed
        return (not pending and let_go) or time.ticks_diff(_ms(), self._reset_by) >= 0

