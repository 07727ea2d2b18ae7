# The MQTT uplink (docs/protocol.md, docs/uplinks.md): requests in, replies / state / events
# out, availability with a retained last will, keepalive pings; door.py dials it again
# after a lost connection, the next broker of the config's list. It runs in its own thread:
# every call here may block; by design nothing on the control side or in the worker ever
# waits for it.
#
# Requests are handled one at a time in the serve loop, never inside umqtt's callback:
# publish(qos=1) reads incoming messages while it waits for its PUBACK, and a request
# handled there would produce events while an event is being published. The callback only
# queues (at most _QUEUE requests); beyond that a request is answered at once with 429.
import select
import time
from api import MAX_PAYLOAD
from mqtt_client import BoundedClient
from umqtt.simple import MQTTException
import config
import door
import runner
import topics

_POLL_MS = 20  # how long the network loop waits for input before its other work
_QUEUE = 4  # requests read but not yet handled


def _ms():
    return time.ticks_ms()


def _since(t):
    return time.ticks_diff(time.ticks_ms(), t)


def _no_delay(sock):
    # umqtt writes a packet in several small pieces: without TCP_NODELAY, Nagle's algorithm
    # and delayed ACKs hold a reply back ~40 ms. (IPPROTO_TCP = 6, TCP_NODELAY = 1 on
    # Linux and lwIP; `sock` is the TCP socket, under TLS too.)
    try:
        sock.setsockopt(6, 1, 1)
    except (AttributeError, OSError):
        pass


class MqttUplink:
    def __init__(self, cfg, board, agent):
        # [(host, port), ...]: dialled in order, moving on after a refused or lost connection
        # (close()), from the last back to the first; the TLS settings apply to each.
        self.brokers = config.brokers(cfg)
        self.at = 0  # the broker dialled next, or connected to
        self.cfg = cfg
        self.board = board
        self.base = topics.base(cfg.get("topic_prefix"), cfg["device_id"])
        self.keepalive = int(cfg.get("keepalive", 30))
        self.client = None
        self.agent = agent
        self.reset = None  # no restart is ever asked for over MQTT (door.py)
        self.quiet = (OSError, MQTTException)  # the network's refusals: one line each (door)
        # Other users of the same connection (Home Assistant discovery, site balancing):
        # each has topics() to subscribe, on_message(topic, msg) (inside umqtt's callback: it
        # may not publish), on_connect(publish) and service(publish, now) in the serve loop.
        self.extras = []
        if cfg.get("discovery", True):
            from discovery import Discovery
            self.extras.append(Discovery(cfg, self.base, agent.model, agent.firmware))
        site = runner.site_balancer(agent, cfg)
        if site:
            self.extras.append(site)
        self.connects = 0
        self.refused = 0  # requests answered 429 because the queue was full
        self._queue = []
        self._tx = 0
        self._rx = 0

    def run(self):
        # OSError, MQTTException, a cut read: all mean reconnect.
        door.run(self, "uplink")

    def _ssl(self):
        # With a CA configured, TLS only: the broker's certificate is checked against it
        # and against the broker's host name (umqtt.simple passes it as server_hostname).
        ca = self.cfg.get("ca_file")
        if not ca:
            return None
        import trust
        return trust.context(ca)

    def connect(self):
        self.board.ensure_network()  # WiFi up (and the clock set) before DNS and MQTT
        cfg = self.cfg
        user = cfg.get("username")
        host, port = self.brokers[self.at]
        c = BoundedClient(cfg["device_id"], host, port, ssl=self._ssl(),
                          user=user.encode() if user else None,  # bytes: umqtt sends len()
                          password=cfg.get("password", "").encode(), keepalive=self.keepalive)
        c.max_payload = MAX_PAYLOAD
        c.set_callback(self._on_message)
        c.on_oversize = self._on_oversize
        c.set_last_will(self.base + topics.AVAILABILITY, b"offline", retain=True)
        self.client = c
        c.connect()  # bounded by c.io_timeout, and so is every packet after it
        _no_delay(c.tcp)
        self.connects += 1
        for name in topics.REQUESTS:
            c.subscribe(self.base + name)
        for x in self.extras:
            for t in x.topics():
                c.subscribe(t)
        self.publish(topics.AVAILABILITY, b"online", True)
        self.agent.report_again()  # a fresh retained state on every (re)connect
        self.agent.uplink_reached("mqtt")
        for x in self.extras:
            x.on_connect(self.publish_to)
        self._rx = _ms()
        if len(self.brokers) > 1:  # which one, in the log (door.py logs each failure)
            print("uplink: connected to %s:%d" % (host, port))

    def serve(self):
        c = self.client
        poller = select.poll()
        poller.register(c.sock, select.POLLIN)
        while True:
            for _, ev in poller.poll(0 if self._queue else _POLL_MS):
                if ev & (select.POLLHUP | select.POLLERR):
                    raise OSError("socket closed")
                self._rx = _ms()
                c.check_msg()
            if self._queue:
                kind, msg = self._queue.pop(0)
                # One expression: no local holds a sent reply's bytes (2 KB for a read) while
                # the loop goes on to the next request (at 34K its journal found no room).
                self.publish(topics.RESPONSES, self.agent.handle(kind, msg, self.board.now_ms()),
                             False)
            self.agent.flush(self.publish, self.board.now_ms())
            for x in self.extras:
                x.service(self.publish_to, self.board.now_ms())
            if _since(self._tx) >= self.keepalive * 500:
                c.ping()
                self._tx = _ms()
            if _since(self._rx) >= self.keepalive * 1500:
                raise OSError("broker silent for 1.5 keepalives")

    def _on_message(self, topic, msg):
        retained = self.client.retained  # first: a publish below may read another message
        topic = topic.decode()
        if not topic.startswith(self.base):
            for x in self.extras:
                x.on_message(topic, msg)
            return
        kind = topic[len(self.base):]
        if kind not in topics.REQUESTS or not msg:  # empty: a retained message cleared
            return
        if retained:
            self._clear_retained(topic)
        elif len(self._queue) < _QUEUE:
            self._queue.append((kind, msg))
        else:  # a QoS 0 reply: it waits for nothing, so it is safe from inside publish()
            self.refused += 1
            self.publish(topics.RESPONSES, self.agent.busy(kind, msg, self.board.now_ms()), False)

    def _on_oversize(self, topic, size):
        topic = topic.decode()
        kind = topic[len(self.base):]
        if self.client.retained:
            if topic.startswith(self.base) and kind in topics.REQUESTS:
                self._clear_retained(topic)
            return
        self.publish(topics.RESPONSES, self.agent.too_large(kind, self.board.now_ms()), False)

    def _clear_retained(self, topic):
        # A request a broker kept (a client published it with the retain flag) comes again
        # on every (re)connect: it is never executed (spec mqtt.md), nor answered (it was
        # answered when it came live). An empty retained message takes it off the broker;
        # diagnostics.retainedRequests counts them. QoS 0: it waits for nothing.
        self.agent.retained_requests += 1
        self.publish_to(topic, b"", True, 0)

    def publish(self, topic, payload, retain):
        # Events are at-least-once: QoS 1, so one is only dropped from the outbox once
        # the broker has it. Replies and state are current-value data: QoS 0.
        self.publish_to(self.base + topic, payload, retain, 1 if topic == topics.EVENTS else 0)

    def publish_to(self, topic, payload, retain, qos=1):
        self.client.publish(topic, payload, retain, qos)
        self._tx = _ms()

    def close(self):
        # The connection failed (door.py): the next dial goes to the next broker.
        self.at = (self.at + 1) % len(self.brokers)
        if self.client and self.client.sock:
            try:
                self.client.sock.close()
            except OSError:
                pass
        self.client = None
        self._queue = []  # unanswered: the broker is gone, and with it the reply path
