# An update, from its request to the restart (docs/ota.md, "On the charger"): the request
# checked in the uplink's thread (its fields, then the signed manifest, before anything
# else), then a thread of the update's own that waits until no session draws current,
# holds the offer at 0 A (ceiling.UPDATE: an ESP32 flash erase stalls both cores,
# docs/esp32-timing.md), downloads the file over HTTP(S) straight to flash through
# firmware/ota/ (never whole in RAM), verifies it, switches to it and restarts. Imported by
# the first update request (updater.py); its state is the Updater's.
import _thread
from micropython import const
import control as ctl
import ota_boot
import ota_manifest as om
from ota_manifest import Refused
from api_text import error, invalid, printable
from nap import nap

_CHUNK = const(1024)  # bytes of a download read at a time
_TIMEOUT_S = const(20)  # each connect and read of a download
_LINE = const(256)  # an HTTP status or header line read at a time
_WAIT_MS = const(1000)  # a waiting update looks at the session this often
_SETTLE_MS = const(100)  # after the 0 A hold: the control loop has seen it
_DRAIN_MS = const(10000)  # before a restart, at most this long for the uplink to publish
_RELEASE_BYTES = const(4096)  # a release file (OCPP's location) is about 1 KB
_MAX_DELAY_MS = const(432000000)  # retrieveDate: 5 days at most (board time spans 6)
DURING = ("wait", "refuse")  # a request's duringSession: wait for the session, or 409
# A job's state, as the device read shows it.
WAITING = "waiting"  # for the session to stop drawing current (or OCPP's retrieveDate)
DOWNLOADING = "downloading"
INSTALLING = "installing"  # verified: switching, then restarting
# What the update is doing, for uplinks that report it their own way (OCPP's
# FirmwareStatusNotification): Updater.listeners get one of these.
STAGES = ("downloading", "downloaded", "download_failed", "installing", "installation_failed",
          "installed")


class Job:
    def __init__(self, url, manifest=None, release=None, after=None):
        self.url = url  # the file
        self.manifest = manifest  # checked already (a request), or None: read `release`
        self.release = release  # OCPP: the release file's URL
        self.after = after  # OCPP's retrieveDate, board ms
        self.version = manifest.version if manifest else None
        self.state = WAITING


def request(u, req, now):
    # (status, body) for an update request: {url, manifest, signature, duringSession}.
    url = req.get("url")
    during = req.get("duringSession", "wait")
    if not url_ok(url):
        return 400, invalid("url must be the file's http:// or https:// URL, at most 512 "
                            "printable characters without spaces")
    if url.startswith("https://") and not u.ca_file:
        return 400, invalid("an https:// url needs ca_file in the charger's config (the "
                            "server is checked against it)")
    for key in ("manifest", "signature"):
        if type(req.get(key)) is not str:
            return 400, invalid(key + " must be the release file's " + key + " (text)")
    if during not in DURING:
        return 400, invalid("duringSession must be wait or refuse")
    busy = _busy(u)
    if busy:
        return busy
    try:
        m = check(u, req["manifest"], req["signature"])
    except Refused as e:
        u.failure = failure(_version(req["manifest"]), e.reason, e.detail)
        return 422, error("UPDATE_REFUSED", e.detail, {"reason": e.reason})
    closed = u.agent.control.contactor_closed
    if during == "refuse" and closed:
        return 409, error("SESSION_ACTIVE", "a session draws current; nothing was changed",
                          {"version": m.version})
    if not _start(u, Job(url, m)):
        return 503, error("INTERNAL_ERROR", "no room for the update's thread; try again")
    return 202, {"deviceId": u.agent.device_id, "version": m.version,
                 "state": WAITING if closed else DOWNLOADING}


def request_release(u, location, after_ms, now):
    # OCPP UpdateFirmware: `location` is the release file's URL, the file beside it without
    # ".ota.json"; its manifest is checked once it is read. False if one is in progress.
    url = location[:-9] if location.endswith(".ota.json") else location
    delay = min(max(after_ms, 0), _MAX_DELAY_MS)
    return _busy(u) is None and _start(u, Job(url, None, location, ctl.later(now, delay)))


def check(u, manifest, signature):
    # The Manifest this charger may install now, or Refused.
    if u.trial is not None:
        raise Refused(om.NOT_VALID_YET, "the running %s is still on trial" % u.agent.firmware)
    if not u.key_texts:
        raise Refused(om.UNKNOWN_KEY, "this charger holds no update keys (ota.keys)")
    if u.keys is None:
        u.keys = om.keys(u.key_texts)
    return om.check(manifest, signature, u.keys, u.form, u.agent.firmware)


def _version(manifest):
    # The version a manifest names, for the record of a refusal (None if it names none).
    try:
        return om.parse(manifest.encode()).version
    except (Refused, AttributeError):
        return None


def _busy(u):
    job = u.job
    if job is None and not u.restarting:
        return None
    return 409, error("CONFLICT", "an update is in progress",
                      {"version": job.version if job else None,
                       "state": job.state if job else "restarting"})


def _start(u, job):
    u.job = job
    u.failure = None
    try:
        _thread.start_new_thread(_run, (u, job))
    except (OSError, MemoryError, RuntimeError):
        u.job = None
        return False
    return True


# -- the update's own thread


def _run(u, job):
    ag = u.agent
    inst = None
    held = False
    try:
        m = job.manifest or _release(u, job)
        job.version = m.version
        _wait(u, job)
        held = True
        job.state = DOWNLOADING
        _event(u, "update.downloading", m.version)
        u.stage("downloading", m.version)
        inst = _install(u, m)
        body = fetch(job.url, u.ca_file)
        try:
            inst.receive(body, bytearray(_CHUNK))
        finally:
            body.close()
        inst.finish()
        job.state = INSTALLING
        _event(u, "update.verified", m.version)
        u.stage("downloaded", m.version)
        u.stage("installing", m.version)
        with u.lock:
            inst.activate(ag.firmware)  # the switch
        u.restarting = True
        _drain(u)
        print("update: %s installed, restarting" % m.version)
        u.board.restart()
        return
    except Refused as e:
        reason, detail = e.reason, e.detail
    except Exception as e:  # the network's failure; anything else is a bug, and a fault
        if not isinstance(e, OSError):
            ag.faults += 1
        reason, detail = om.DOWNLOAD_FAILED, repr(e)
    finally:
        if held and not u.restarting:
            ag.limits.set_updating(False)
    if inst is not None:
        inst.abort()
    print("update: %s failed: %s (%s)" % (job.version, reason, detail))
    u.failure = failure(job.version, reason, detail)
    _event(u, "update.failed", job.version, reason, detail)
    u.stage("installation_failed" if job.state == INSTALLING else "download_failed",
            job.version)
    u.job = None


def _release(u, job):
    # The manifest of the release file at job.release (OCPP), checked.
    import json
    body = fetch(job.release, u.ca_file)
    try:
        data = b""
        while len(data) <= _RELEASE_BYTES:
            chunk = body.read(512)
            if not chunk:
                break
            data += chunk
    finally:
        body.close()
    try:
        r = json.loads(data) if len(data) <= _RELEASE_BYTES else None
        manifest, signature = r["manifest"], r["signature"]
    except (ValueError, TypeError, KeyError):
        raise Refused(om.BAD_MANIFEST, "%s is not a release file" % job.release)
    if type(manifest) is not str or type(signature) is not str:
        raise Refused(om.BAD_MANIFEST, "%s is not a release file" % job.release)
    return check(u, manifest, signature)


def _wait(u, job):
    # Until OCPP's retrieveDate, then until no session draws current: then the offer is
    # held at 0 A, so that none starts to while flash is written.
    ag = u.agent
    while True:
        if job.after is None or ctl.passed(u.board.now_ms(), job.after):
            if not ag.control.contactor_closed:
                ag.limits.set_updating(True)
                nap(_SETTLE_MS)
                if not ag.control.contactor_closed:
                    return
                ag.limits.set_updating(False)  # it closed in between: its session first
        nap(_WAIT_MS)


def _install(u, m):
    if u.form == ota_boot.IMAGE:
        if u.partition is None:
            raise Refused(om.STORAGE, "this board has no OTA partitions")
        from ota_image import ImageInstall
        return ImageInstall(u.partition, m, u.root)
    from ota_bundle import BundleInstall
    return BundleInstall(m, u.root)


def _drain(u):
    # The events the uplinks have yet to publish, and their own reports of the update
    # (OCPP's FirmwareStatusNotifications), before the restart loses them.
    waited = 0
    while (len(u.agent.outbox) or u.reports_pending()) and waited < _DRAIN_MS:
        nap(100)
        waited += 100


def _event(u, kind, version, reason=None, detail=None):
    data = {"deviceId": u.agent.device_id, "version": version}
    if reason:
        data["reason"] = reason
        data["detail"] = detail
    u.agent.emit(kind, data)


def failure(version, reason, detail):
    return {"version": version, "reason": reason, "detail": detail}


def url_ok(url):
    if not printable(url, 512) or " " in url:
        return False
    for scheme in ("http://", "https://"):
        if url.startswith(scheme) and len(url) > len(scheme) and url[len(scheme)] not in "/:":
            return True
    return False


# -- HTTP(S)


class _Body:
    # A response's body: readinto() or read() until nothing comes, then close().
    def __init__(self, sock, stream):
        self.sock = sock
        self.stream = stream

    def readinto(self, buf):
        return self.stream.readinto(buf)

    def read(self, n):
        return self.stream.read(n)

    def close(self):
        if self.stream is not self.sock:
            self.stream.close()
        self.sock.close()


def fetch(url, ca_file):
    # The body of a GET of `url` (http://, or https:// checked against ca_file), or OSError
    # when the server does not answer 200. HTTP/1.0: the body ends where the connection does.
    import trust
    https = url.startswith("https://")
    if https and not ca_file:
        raise OSError("an https:// URL needs the installation's ca_file to check the server")
    where, _, path = url[8 if https else 7:].partition("/")
    host, _, port = where.partition(":")
    sock = trust.dial(host, int(port) if port else (443 if https else 80),
                      ca_file if https else None, _TIMEOUT_S)
    try:
        # CPython (the bench's in-process tests) reads its sockets through a file object;
        # MicroPython's are streams (makefile() is the socket itself; TLS has no makefile).
        f = sock.makefile("rwb", 0) if hasattr(sock, "makefile") else sock
        out = ("GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, where)).encode()
        while out:
            out = out[f.write(out):]
        status = f.readline(_LINE).split(None, 2)
        if len(status) < 2 or status[1] != b"200":
            raise OSError("%s answered %s" % (where, b" ".join(status[1:]).decode().strip()
                                              if len(status) > 1 else "nothing"))
        for _ in range(64):
            line = f.readline(_LINE).lower()
            if not line:
                raise OSError("%s closed the connection in the headers" % where)
            if line in (b"\r\n", b"\n"):
                return _Body(sock, f)
            if line.startswith(b"transfer-encoding:") and b"chunked" in line:
                raise OSError("%s sent a chunked body to HTTP/1.0" % where)
        raise OSError("%s sent more than 64 header lines" % where)
    except BaseException:
        sock.close()
        raise
