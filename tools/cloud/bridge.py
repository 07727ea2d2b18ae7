"""The service's one MQTT connection: every charger's state, availability, events and replies
in; requests out, each matched to its reply (docs/cloud.md, "The bridge").

paho-mqtt's network thread receives; everything else runs in the service's event loop: the
callback only hands a message over (call_soon_threadsafe). The session is persistent
(clean_session false, a stable client id) and QoS 1 messages are acknowledged by hand only
once what they say is committed, so an event published while the service is down or dying is
delivered again when it reconnects; while the database is unreachable nothing is
acknowledged and the batch is tried again until it is back. A batch of messages is one
database transaction, its writes in charger order so that replicas writing the same batch
take their row locks in the same order, and a state row another replica is writing at that
moment is left to it (docs/cloud.md, "How it scales").

Several brokers (a cluster's nodes, "h1:1883,h2:1883"): it connects to one and moves to the
next whenever the connection drops or cannot be made (docs/deployment.md). State reports are
subscribed at QoS 0: current-value data, never queued for the service while it is away (a
queued one would look live when it is not); availability, events and replies at QoS 1.

A charger is online by its `availability`, and also by any state report it publishes live.
A broker node that dies publishes no last will for its clients (RabbitMQ 3.x:
docs/deployment.md): so a charger the service has heard nothing from for `stale_s` (2.5
heartbeats of mqtt.md's 60 s) while it claims to be online is taken offline by the sweep,
as its will would have.
"""
import asyncio
import json
import logging
import socket
import time

import paho.mqtt.client as mqtt

from tools.cloud import intake
from tools.cloud.contract import ApiError, iso, new_id, parse_iso
from tools.cloud.store import unavailable as store_unavailable
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402  (the firmware's: a charger's topics, defined once)

log = logging.getLogger("cloud.bridge")
KINDS = (topics.STATE, topics.AVAILABILITY, topics.EVENTS, topics.RESPONSES)
QUEUE_MAX = 20000  # messages waiting for the database; beyond it QoS 0 ones are not stored
BATCH = 200  # messages per transaction: short enough that other replicas seldom wait on it
WEBHOOK_EVENTS = ("push.completed", "push.failed", "device.connected", "device.disconnected")
TERMINAL_EVENTS = ("push.completed", "push.failed", "action.cancelled")
EVENTS_PER_S = 20  # a charger sends a few events a minute; a flood is cut here
EVENT_BURST = 200
HEARTBEAT_S = 60  # mqtt.md: a state report at least this often (firmware/agent.py)
STALE_S = 2.5 * HEARTBEAT_S
RETRY_MAX_S = 5.0  # between tries of a batch while the database is away
POISON_TRIES = 5  # a batch failing this often for another reason is dropped (and logged)


def addresses(text):
    """[(host, port), ...] of "host:port[,host:port ...]"; ValueError if one is not."""
    out = []
    for part in text.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("%r is not HOST:PORT" % part.strip())
        out.append((host, int(port)))
    return out


class Bucket:
    """Per charger, how many events it may still send (a token bucket)."""

    def __init__(self):
        self.tokens = {}

    def take(self, device_id, now):
        tokens, at = self.tokens.get(device_id, (EVENT_BURST, now))
        tokens = min(EVENT_BURST, tokens + (now - at) * EVENTS_PER_S)
        ok = tokens >= 1
        self.tokens[device_id] = (tokens - 1 if ok else tokens, now)
        return ok


class Bridge:
    def __init__(self, broker, prefix, client_id, store, cache, on_enqueued=None,
                 username=None, password=None, tls=None, stale_s=STALE_S):
        self.brokers = addresses(broker)
        self.at = 0  # the index of the broker in use
        self.stale_s = stale_s
        self.prefix = prefix
        self.store = store
        self.cache = cache
        self.on_enqueued = on_enqueued or (lambda: None)
        self.connected = False
        self.connected_since = None  # time.monotonic() of the connection now up
        self.connects = 0
        self.attempts = 0  # connection attempts made
        self.pending = {}  # requestId -> (device id, future)
        self.counts = {"rejected": 0, "flooded": 0, "dropped": 0, "stored": 0, "stale": 0,
                       "retried": 0}
        self.bucket = Bucket()
        self.loop = None
        self.queue = None
        self.task = None
        self.sweeper = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_pre_connect = self._next_broker
        self.client.reconnect_delay_set(0.2, 5)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set_context(tls)

    # -- paho's thread
    def _on_connect(self, client, userdata, flags, reason, props):
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        sock = client.socket()
        if sock is not None:  # a request goes out at once, not behind a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([("%s/+/%s" % (self.prefix, k), 0 if k == topics.STATE else 1)
                          for k in KINDS])
        self.loop.call_soon_threadsafe(self._set_connected, True)

    def _on_disconnect(self, client, userdata, flags, reason, props):
        self.loop.call_soon_threadsafe(self._set_connected, False)

    def _next_broker(self, client, userdata):
        """Before each connection attempt but the first: the next broker of the list (the
        last one was lost or could not be reached). paho's own reconnect loop goes back to
        the same address, and its public `host` refuses a change while it is reconnecting;
        the old socket is closed here and the new one is made from _host and _port next
        (paho-mqtt 2.x, requirements.txt), so those are set."""
        if self.attempts and len(self.brokers) > 1:
            self.at = (self.at + 1) % len(self.brokers)
            client._host, client._port = self.brokers[self.at]
        self.attempts += 1

    def _on_message(self, client, userdata, msg):
        self.loop.call_soon_threadsafe(self._put, msg)

    # -- the event loop
    def _set_connected(self, up):
        if up != self.connected:
            log.info("broker %s %s", self.broker if up else "connection", "connected" if up
                     else "lost")
            self.connected_since = time.monotonic() if up else None
            self.connects += up
        self.connected = up

    @property
    def broker(self):
        """host:port of the broker in use (or being tried)."""
        return "%s:%d" % self.brokers[self.at]

    def _put(self, msg):
        """A message, in the loop: what it says goes into this replica's memory at once (the
        cache, a waiting request's reply: these never wait for the database), and what is to
        be stored into the queue, with every QoS 1 message, acknowledged once stored."""
        now = time.time()
        reads, ops = {}, []
        where = self._topic(msg.topic)
        if where is None or not getattr(self, "_" + where[1])(where[0], msg, now, reads, ops):
            self.counts["rejected"] += 1
        if not (reads or ops or msg.qos):
            return
        if not msg.qos and self.queue.qsize() >= QUEUE_MAX:
            self.counts["dropped"] += 1  # memory has it; the next report will be stored
            return
        self.queue.put_nowait((msg, reads, ops, self.connects))

    def keep_action(self, device_id, act):
        """An acknowledged action the request could not store (the database away): stored
        with the next batch, tried until the database is back."""
        self.queue.put_nowait((None, {}, [("action", device_id, act, time.time())],
                               self.connects))

    def _ack(self, batch):
        """PUBACK, in order, for the QoS 1 messages of this connection; one that came on an
        earlier connection is delivered again by the broker (a persistent session), and its
        id may now be another message's."""
        for msg, _, _, connection in batch:
            if msg and msg.qos and connection == self.connects and self.connected:
                self.client.ack(msg.mid, msg.qos)

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()  # QoS 1 ones are few: the broker's in-flight window
        self.client.connect_async(*self.brokers[self.at], keepalive=30)
        self.client.loop_start()
        self.task = asyncio.create_task(self._consume())
        self.sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self):
        for task in (self.task, self.sweeper):
            if task:
                task.cancel()
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    async def wait_connected(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.connected:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def request(self, device_id, kind, body, timeout_s):
        """Publish a request and wait for its reply: (status, success, body), or None when
        none came in timeout_s. ApiError BROKER_UNAVAILABLE if it could not be sent."""
        if not self.connected:
            raise ApiError("BROKER_UNAVAILABLE", "the service is not connected to its broker; "
                           "nothing was sent")
        rid = body["requestId"]
        fut = self.loop.create_future()
        self.pending[rid] = (device_id, fut)
        try:
            info = self.client.publish("%s/%s/%s" % (self.prefix, device_id, kind),
                                       json.dumps(body, separators=(",", ":")), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ApiError("BROKER_UNAVAILABLE", "the broker connection is down; nothing "
                               "was sent")
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self.pending.pop(rid, None)

    def _topic(self, topic):
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        device_id, _, kind = topic[len(head):].rpartition("/")
        if kind not in KINDS or not intake.device_id_ok(device_id):
            return None
        return device_id, kind

    async def _consume(self):
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            reads, ops = {}, []
            for _, r, o, _ in batch:
                reads.update(r)
                ops.extend(o)
            if reads or ops:
                await self._store_batch(reads, ops)
            self._ack(batch)

    async def _store_batch(self, reads, ops):
        """Until the batch is stored: tried again for as long as the database is unreachable
        (nothing is acknowledged meanwhile, so the broker keeps the QoS 1 messages); a batch
        that fails POISON_TRIES times for another reason (a bug) is logged and given up."""
        failures, wait_s = 0, 0.1
        while True:
            try:
                await self.commit(reads, ops)
                if failures:
                    log.warning("stored %d broker messages after %d failed tries",
                                len(reads) + len(ops), failures)
                return
            except Exception as e:
                failures += 1
                self.counts["retried"] += 1
                if not store_unavailable(e):
                    log.exception("storing %d broker messages failed (try %d)",
                                  len(reads) + len(ops), failures)
                    if failures >= POISON_TRIES:
                        return
                elif failures == 1:
                    log.warning("the database is unreachable (%s: %s); holding broker "
                                "messages until it is back", type(e).__name__, e)
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, RETRY_MAX_S)

    async def commit(self, reads, ops):
        """reads {device id: (read, pulled_at)} and ops [(op, device id, value, when)] in one
        transaction: the ops charger by charger in id order (each charger's in their order),
        so that replicas writing the same messages wait on each other's row locks in the
        same order, then the reads, which wait on no one (Store.save_states): a read taking
        its rows first would hold them out of that order, and two replicas would deadlock."""
        by_device = {}
        for op in ops:
            by_device.setdefault(op[1], []).append(op)
        queued = False
        async with self.store.begin() as conn:
            for device_id in sorted(by_device):
                for op, _, value, when in by_device[device_id]:
                    queued |= await getattr(self, "_store_" + op)(conn, device_id, value, when)
            await self.store.save_states(conn, reads)
        self.counts["stored"] += len(ops) + len(reads)
        if queued:
            self.on_enqueued()

    async def _sweep_forever(self):
        while True:
            await asyncio.sleep(min(5.0, self.stale_s / 4))
            try:
                await self.sweep()
            except Exception as e:  # the database away: the next sweep tries again
                log.warning("the stale-charger sweep failed: %s: %s", type(e).__name__, e)

    async def sweep(self):
        """Take offline every charger said to be online (by the database, or by this
        replica's cache: another replica may have swept the database already) that this
        replica has heard nothing from for stale_s, counted from when its connection came up
        (a replica cut off from the broker judges no one)."""
        if not self.connected or time.monotonic() - self.connected_since < self.stale_s:
            return
        now_mono, now = time.monotonic(), time.time()
        since = self.connected_since
        claimed = set(await self.store.online_ids())
        claimed.update(d for d, e in self.cache.entries.items() if e.online)
        ops = []
        for device_id in sorted(claimed):
            e = self.cache.get(device_id)
            heard = max(since, e.heard_at or since) if e is not None else since
            if now_mono - heard >= self.stale_s:
                self.cache.put_online(device_id, False)
                ops.append(("online", device_id, False, now))
        if ops:
            self.counts["stale"] += len(ops)
            log.info("%d chargers silent for %g s taken offline", len(ops), self.stale_s)
            await self.commit({}, ops)

    # Each kind: True if the message was taken (memory now, `reads` / `ops` for the database).
    def _availability(self, device_id, msg, now, reads, ops):
        if msg.payload not in (b"online", b"offline"):
            return False
        online = msg.payload == b"online"
        self.cache.put_online(device_id, online)
        if online and not msg.retain:
            self.cache.heard(device_id)
        ops.append(("online", device_id, online, now))
        return True

    def _state(self, device_id, msg, now, reads, ops):
        obj = intake.parse(msg.payload, intake.MAX_STATE)
        read = intake.state(device_id, obj)
        if read is None:
            return False
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        stamp = (meta.get("timestamp"), meta.get("seq"))
        pulled = now
        if msg.retain:  # a broker's copy: as old as the charger says, never newer than now
            pulled = min(now, parse_iso(meta.get("timestamp")) or now)
        self.cache.put_read(device_id, read, pulled, not msg.retain, stamp)
        reads[device_id] = (read, pulled)
        if not msg.retain:  # published now: the charger is connected, whatever was said
            self.cache.heard(device_id)
            if not self.cache.get(device_id).online:
                self.cache.put_online(device_id, True)
                ops.append(("online", device_id, True, now))
        last = intake.action(device_id, read.get("lastAction"))
        if last is not None:
            ops.append(("action", device_id, last, now))
        return True

    def _events(self, device_id, msg, now, reads, ops):
        if not self.bucket.take(device_id, time.monotonic()):
            self.counts["flooded"] += 1
            return True  # taken, and dropped: counted apart from garbage
        evt = intake.event(device_id, intake.parse(msg.payload, intake.MAX_EVENT))
        if evt is None:
            return False
        self.cache.heard(device_id)
        ops.append(("event", device_id, evt, now))
        return True

    def _responses(self, device_id, msg, now, reads, ops):
        got = intake.reply(intake.parse(msg.payload, intake.MAX_STATE))
        if got is None:
            return False
        rid, status, ok, body = got
        self.cache.heard(device_id)
        waiting = self.pending.get(rid)
        if ok:
            read = intake.device_read(device_id, body)
            if read is not None:  # a read's reply: the freshest state there is, for the
                # cache; the database has it from the state report the charger publishes
                # on every change anyway, so a live read costs no write.
                self.cache.put_read(device_id, read, now, True)
            elif status == 202 and not (waiting and waiting[0] == device_id):
                # An accepted command this replica is not waiting for (another replica's,
                # or one whose sender gave up): stored here. One it is waiting for is
                # stored by the request itself, before its 202 (app._relay), and not twice
                # from here, where it would wait on that request's row lock.
                act = intake.action(device_id, body)
                if act is not None:
                    ops.append(("action", device_id, act, now))
        if waiting is not None and waiting[0] == device_id and not waiting[1].done():
            waiting[1].set_result((status, ok, body))
        return True

    # Each op in the transaction: True if it queued a webhook delivery.
    async def _store_online(self, conn, device_id, online, now):
        if not await self.store.set_online(conn, device_id, online, now):
            return False
        kind, field = (("device.connected", "connectedAt") if online else
                       ("device.disconnected", "disconnectedAt"))
        evt = {"id": new_id("evt_"), "type": kind, "timestamp": iso(now),
               "data": {"deviceId": device_id, field: iso(now)}}
        return await self._store_event(conn, device_id, evt, now)

    async def _store_event(self, conn, device_id, evt, now):
        if not await self.store.add_event(conn, device_id, evt, now):
            return False  # seen before: a redelivery, or another replica's copy
        if evt["type"] in TERMINAL_EVENTS:
            known = await self.store.action_row(conn, device_id, evt["data"]["actionId"])
            await self.store.save_action(conn, device_id, intake.ended(device_id, evt, known))
        if evt["type"] not in WEBHOOK_EVENTS:
            return False
        hooks = await self.store.webhooks_for(conn, device_id, evt["type"])
        body = json.dumps(evt, separators=(",", ":"))
        await self.store.enqueue(conn, hooks, evt["id"], body, now)
        return bool(hooks)

    async def _store_action(self, conn, device_id, act, now):
        await self.store.save_action(conn, device_id, act)
        return False
