# Webhook delivery of push.completed / push.failed, signed the Standard Webhooks way:
# webhook-signature = v1,base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")).
# At least once: a bounded queue, retried with exponential backoff, delivered from a thread
# of its own (runner.threaded), so a slow or dead receiver holds up neither the pilot nor
# the MQTT API nor the worker. http:// goes through micropython-lib requests; https:// needs
# the installation's CA (ca_file) and is posted here, because requests 0.10.2 never checks
# a server certificate (it sets CERT_NONE).
import hashlib
import json
import _thread
from nap import nap
from binascii import a2b_base64, b2a_base64

_QUEUE = 8
_BACKOFF_MIN_MS = 1000
_BACKOFF_MAX_MS = 300000
_BLOCK = 64


def hmac_sha256(key, msg):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(k ^ 0x5C for k in key))
    outer.update(inner.digest())
    return outer.digest()


def secret_key(secret):
    # "whsec_<base64>" is the Standard Webhooks form; anything else is used as raw bytes.
    if secret.startswith("whsec_"):
        return a2b_base64(secret[6:])
    return secret.encode()


def sign(key, msg_id, timestamp, body):
    mac = hmac_sha256(key, b"%s.%d.%s" % (msg_id.encode(), timestamp, body))
    return "v1," + b2a_base64(mac).decode().strip()


class Webhooks:
    def __init__(self, url, secret, clock_ms, post=None, ca_file=None):
        self.url = url
        self.key = secret_key(secret)
        self.clock_ms = clock_ms  # Unix ms, or None while the clock is unknown
        self._post = post
        self.ca_file = ca_file
        self.queue = []  # [event id, body bytes, attempts, next try (Unix ms)]
        self.dropped = 0
        self.delivered = 0
        self._lock = _thread.allocate_lock()  # offer() runs in other threads

    def offer(self, event):
        if event.get("type") not in ("push.completed", "push.failed"):
            return
        with self._lock:
            self.queue.append([event["id"], json.dumps(event).encode(), 0, 0])
            if len(self.queue) > _QUEUE:
                self.queue.pop(0)
                self.dropped += 1

    def run(self):
        while True:
            self.service()
            nap(100)

    def service(self):
        # One delivery attempt at most per call.
        now = self.clock_ms()
        with self._lock:
            if not self.queue or now is None or now < self.queue[0][3]:
                return
            item = self.queue[0]
        ts = now // 1000
        headers = {"content-type": "application/json", "webhook-id": item[0],
                   "webhook-timestamp": str(ts),
                   "webhook-signature": sign(self.key, item[0], ts, item[1])}
        try:
            ok = self._send(item[1], headers)
        except Exception as e:  # refused, reset, timed out: all mean "try again later"
            print("webhook:", repr(e))
            ok = False
        if ok:
            with self._lock:
                if self.queue and self.queue[0] is item:
                    self.queue.pop(0)
            self.delivered += 1
        else:
            item[2] += 1
            item[3] = now + min(_BACKOFF_MIN_MS << min(item[2], 12), _BACKOFF_MAX_MS)

    def _send(self, body, headers):
        if self._post:
            return self._post(self.url, body, headers)
        if self.url.startswith("https://"):
            return self._send_tls(body, headers)
        import requests
        r = requests.post(self.url, data=body, headers=headers, timeout=10)
        try:
            return 200 <= r.status_code < 300
        finally:
            r.close()

    def _send_tls(self, body, headers):
        # One HTTP/1.0 POST over TLS, the certificate checked as the MQTT broker's is.
        import trust
        if not self.ca_file:
            raise OSError("an https:// webhook needs ca_file to check the receiver")
        host, _, path = self.url[8:].partition("/")
        host, _, port = host.partition(":")
        s = trust.dial(host, int(port or 443), self.ca_file, 10)
        try:
            head = "POST /%s HTTP/1.0\r\nHost: %s\r\nContent-Length: %d\r\n" % (
                path, host, len(body))
            for k in headers:
                head += "%s: %s\r\n" % (k, headers[k])
            s.write((head + "\r\n").encode())
            s.write(body)
            status = s.readline().split(None, 2)
            return len(status) > 1 and 200 <= int(status[1]) < 300
        finally:
            s.close()
