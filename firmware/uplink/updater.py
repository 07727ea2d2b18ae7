# Updates over the air on the charger (docs/ota.md, "On the charger"): the update request,
# checked in the uplink's thread (the signed manifest before anything else); the update in
# a thread of its own (downloaded straight to flash by firmware/ota/, verified, switched,
# restarted); the new version's trial (ota_valid's rule, run by the worker every pass); and
# what the charger says about all of it (update.* events, the device read's `update`, the
# outcome of the last update once an uplink is reached). An update writes flash and
# restarts only while no session draws current, holding the offer at 0 A meanwhile
# (ceiling.UPDATE): an ESP32 flash erase stalls both cores (docs/esp32-timing.md).
import _thread
from micropython import const
import control as ctl
import ota_boot
from api_text import error, invalid, printable
from nap import nap

_CHUNK = const(1024)  # bytes of a download read at a time (never the whole file in RAM)
_TIMEOUT_S = const(20)  # each connect and read of a download
_LINE = const(256)  # an HTTP status or header line read at a time
_STALL_MS = const(2000)  # a control loop this late is a fault of the firmware's own: longer
# than any stall an ESP32 has by design (a TLS handshake, up to ~1 s: docs/esp32-timing.md),
# shorter than the 5 s watchdog
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
# What the update is doing, for the uplinks that report it their own way (OCPP's
# FirmwareStatusNotification): listeners get one of these.
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


class Updater:
    def __init__(self, agent, uplinks):
        # uplinks: the names of the configured uplinks, each of which a new version must
        # reach before it is valid (uplink_reached()).
        board = agent.board
        cfg = board.config
        o = cfg.get("ota") or {}
        self.agent = agent
        self.board = board
        self.keys = None  # {key id: key}, read at the first request (config.check has
        self._key_texts = o.get("keys") or ()  # refused bad ones at boot)
        self.form = o.get("form", ota_boot.BUNDLE)
        # The installation's CA (https:// downloads): the MQTT one, else OCPP's.
        self.ca_file = cfg.get("ca_file") or (cfg.get("ocpp") or {}).get("ca_file")
        self.root = board.ota_root
        self.partition = board.ota_partition if self.form == ota_boot.IMAGE else None
        self.uplinks = uplinks
        self.reached = []
        self.listeners = []  # f(stage, version): an uplink's own report (OCPP)
        self.lock = _thread.allocate_lock()  # the record's writers
        self.job = None  # the update in progress (one at a time)
        self.failure = None  # the last update refused or failed since boot
        self.trial = None  # ota_valid.Trial while the running version is on trial
        self.rec = None  # the record as last read or written
        self.restarting = False  # a rollback waits for the contactor to open
        self._told = None  # (event id, state) of the report the uplink is publishing
        self._faults = agent.faults
        self._boot(board.now_ms())
        agent.updater = self
        agent.duties.append(self.service)

    # -- boot: what runs, and whether it is on trial
    def _boot(self, now):
        fs = ota_boot.FS
        rec = ota_boot.read(fs, self.root)
        rec = rec if type(rec) is dict else None
        trial = mine = False
        if self.partition is not None:
            from ota_image import running_label
            running = running_label(self.partition)
            trial, new = ota_boot.image_boot(rec, running)
            if new is not None:
                try:
                    ota_boot.write(fs, self.root, new)
                except OSError:
                    pass  # a trial goes on uncounted (the bootloader counts for an image)
                rec = new
            mine = rec is not None and rec["form"] == ota_boot.IMAGE and rec["slot"] == running
        elif rec is not None and rec["form"] == ota_boot.BUNDLE:
            mine = ota_boot.booted == rec["slot"]  # what the boot layer booted (app_path)
            trial = mine and rec["state"] == ota_boot.TRIAL
        self.rec = rec
        if rec is None:
            return
        if rec["state"] == ota_boot.ROLLED_BACK:
            self.agent.firmware = rec["previous"]
        elif mine:
            self.agent.firmware = rec["version"]
        if trial:
            import ota_valid
            self.trial = ota_valid.Trial(rec, now, self.root, fs, self.partition)

    # -- the uplinks
    def uplink_reached(self, name):
        # An uplink's thread: MQTT connected, OCPP boot accepted, a first authorised HTTP
        # request. The first tells how the last update went.
        if name in self.reached:
            return
        self.reached.append(name)
        if len(self.reached) == 1:
            self._report()

    def _report(self):
        rec = self.rec
        if rec is None or rec.get("told") == rec["state"]:
            return
        data = {"deviceId": self.agent.device_id, "version": rec["version"],
                "previous": rec["previous"]}
        if rec["state"] == ota_boot.ROLLED_BACK:
            kind, stage = "update.rolled_back", "installation_failed"
            data["reason"] = rec["reason"]
        elif self.trial is not None:
            kind, stage = "update.installed", "installed"
        else:
            return
        eid = self.agent.new_id("evt_")
        self._told = (eid, rec["state"])
        self.agent.emit(kind, data, eid, eid)  # kept before other events while offline
        self._stage(stage, rec["version"])

    def published(self, item_id):
        # The uplink's thread: an event is the broker's. The report's: the record says it
        # was told, so no later boot tells it again.
        told = self._told
        if told is None or told[0] != item_id:
            return
        self._told = None
        with self.lock:
            try:
                rec = ota_boot.read(ota_boot.FS, self.root)
                if type(rec) is dict and rec["state"] == told[1] and \
                        rec["version"] == self.rec["version"]:
                    rec["told"] = told[1]
                    ota_boot.write(ota_boot.FS, self.root, rec)
                    self.rec = rec
                    if self.trial is not None:
                        self.trial.rec = rec
            except OSError:
                pass  # told again after the next boot

    def _uplinks_reached(self):
        for name in self.uplinks:
            if name not in self.reached:
                return False
        return True

    # -- the worker, every pass
    def service(self, now):
        ag = self.agent
        c = ag.control
        fault = c.last_tick < 0 or ctl.elapsed(now, c.last_tick) > _STALL_MS or \
            ag.faults != self._faults
        self._faults = ag.faults
        trial = self.trial
        if trial is not None:
            import ota_valid
            with self.lock:
                try:
                    verdict = trial.step(now, fault, self._uplinks_reached())
                except OSError as e:  # flash: the verdict is written again next pass
                    print("update: writing the record:", repr(e))
                    verdict = ota_valid.WAIT
                if verdict == ota_valid.VALID:
                    self.trial = None
                    self.rec = dict(trial.rec, state=ota_boot.VALID)
                elif verdict == ota_valid.ROLL_BACK:
                    self.trial = None
                    self.rec = dict(trial.rec, state=ota_boot.ROLLED_BACK,
                                    reason=trial.rule.reason())
                    print("update: %s rolled back (%s)" % (trial.rec["version"],
                                                          self.rec["reason"]))
                    self.restarting = True
                    ag.limits.set_updating(True)  # let the vehicle go first
        if self.restarting and not c.contactor_closed:
            self.board.restart()

    # -- a request (the uplink's thread)
    def request(self, req, now):
        # (status, body) for an update request: {url, manifest, signature, duringSession}.
        url = req.get("url")
        during = req.get("duringSession", "wait")
        if not url_ok(url):
            return 400, invalid("url must be the file's http:// or https:// URL, at most 512 "
                                "printable characters without spaces")
        if url.startswith("https://") and not self.ca_file:
            return 400, invalid("an https:// url needs ca_file in the charger's config "
                                "(the server is checked against it)")
        for key in ("manifest", "signature"):
            if type(req.get(key)) is not str:
                return 400, invalid(key + " must be the release file's " + key + " (text)")
        if during not in DURING:
            return 400, invalid("duringSession must be wait or refuse")
        busy = self._busy()
        if busy:
            return busy
        from ota_manifest import Refused
        try:
            m = self.check(req["manifest"], req["signature"])
        except Refused as e:
            self.failure = failure(None, e.reason, e.detail)
            return 422, error("UPDATE_REFUSED", e.detail, {"reason": e.reason})
        closed = self.agent.control.contactor_closed
        if during == "refuse" and closed:
            return 409, error("SESSION_ACTIVE", "a session draws current; nothing was changed",
                              {"version": m.version})
        if not self._start(Job(url, m)):
            return 503, error("INTERNAL_ERROR", "no room for the update's thread; try again")
        return 202, {"deviceId": self.agent.device_id, "version": m.version,
                     "state": WAITING if closed else DOWNLOADING}

    def request_release(self, location, after_ms, now):
        # OCPP UpdateFirmware: `location` is the release file's URL (the file's beside it,
        # without ".ota.json"); its manifest is checked once it is read. False if one is in
        # progress already.
        url = location[:-9] if location.endswith(".ota.json") else location
        delay = min(max(after_ms, 0), _MAX_DELAY_MS)
        return self._busy() is None and self._start(Job(url, None, location,
                                                         ctl.later(now, delay)))

    def check(self, manifest, signature):
        # The Manifest this charger may install now, or Refused.
        import ota_manifest as om
        if self.trial is not None:
            raise om.Refused(om.NOT_VALID_YET, "the running %s is still on trial"
                             % self.agent.firmware)
        if not self._key_texts:
            raise om.Refused(om.UNKNOWN_KEY, "this charger holds no update keys (ota.keys)")
        if self.keys is None:
            self.keys = om.keys(self._key_texts)
        return om.check(manifest, signature, self.keys, self.form, self.agent.firmware)

    def _busy(self):
        job = self.job
        if job is None and not self.restarting:
            return None
        return 409, error("CONFLICT", "an update is in progress",
                          {"version": job.version if job else None,
                           "state": job.state if job else "restarting"})

    def _start(self, job):
        self.job = job
        self.failure = None
        try:
            _thread.start_new_thread(self._run, (job,))
        except (OSError, MemoryError, RuntimeError):
            self.job = None
            return False
        return True

    # -- the update's own thread
    def _run(self, job):
        import ota_manifest as om
        from ota_manifest import Refused
        inst = None
        held = False
        try:
            m = job.manifest or self._release(job)
            job.version = m.version
            self._wait(job)
            held = True
            job.state = DOWNLOADING
            self._event("update.downloading", m.version)
            self._stage("downloading", m.version)
            inst = self._install(m)
            body = fetch(job.url, self.ca_file)
            try:
                inst.receive(body, bytearray(_CHUNK))
            finally:
                body.close()
            inst.finish()
            job.state = INSTALLING
            self._event("update.verified", m.version)
            self._stage("downloaded", m.version)
            self._stage("installing", m.version)
            with self.lock:
                inst.activate(self.agent.firmware)  # the switch
            self.restarting = True
            self._drain()
            print("update: %s installed, restarting" % m.version)
            self.board.restart()
            return
        except Refused as e:
            reason, detail = e.reason, e.detail
        except Exception as e:  # the network's failure; anything else is a bug, and a fault
            if not isinstance(e, OSError):
                self.agent.faults += 1
            reason, detail = om.DOWNLOAD_FAILED, repr(e)
        finally:
            if held and not self.restarting:
                self.agent.limits.set_updating(False)
        if inst is not None:
            inst.abort()
        print("update: %s failed: %s (%s)" % (job.version, reason, detail))
        self.failure = failure(job.version, reason, detail)
        self._event("update.failed", job.version, reason, detail)
        self._stage("installation_failed" if job.state == INSTALLING else "download_failed",
                    job.version)
        self.job = None

    def _release(self, job):
        # The manifest of the release file at job.release (OCPP), checked.
        import json
        import ota_manifest as om
        body = fetch(job.release, self.ca_file)
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
            raise om.Refused(om.BAD_MANIFEST, "%s is not a release file" % job.release)
        if type(manifest) is not str or type(signature) is not str:
            raise om.Refused(om.BAD_MANIFEST, "%s is not a release file" % job.release)
        return self.check(manifest, signature)

    def _wait(self, job):
        # Until OCPP's retrieveDate, then until no session draws current: then the offer is
        # held at 0 A, so none starts to while flash is written.
        ag = self.agent
        while True:
            if job.after is None or ctl.passed(self.board.now_ms(), job.after):
                if not ag.control.contactor_closed:
                    ag.limits.set_updating(True)
                    nap(_SETTLE_MS)
                    if not ag.control.contactor_closed:
                        return
                    ag.limits.set_updating(False)  # it closed in between: its session first
            nap(_WAIT_MS)

    def _install(self, m):
        if self.form == ota_boot.IMAGE:
            if self.partition is None:
                import ota_manifest as om
                raise om.Refused(om.STORAGE, "this board has no OTA partitions")
            from ota_image import ImageInstall
            return ImageInstall(self.partition, m, self.root)
        from ota_bundle import BundleInstall
        return BundleInstall(m, self.root)

    def _drain(self):
        # The events the uplink has yet to publish, before the restart loses them.
        waited = 0
        while len(self.agent.outbox) and waited < _DRAIN_MS:
            nap(100)
            waited += 100

    def _event(self, kind, version, reason=None, detail=None):
        data = {"deviceId": self.agent.device_id, "version": version}
        if reason:
            data["reason"] = reason
            data["detail"] = detail
        self.agent.emit(kind, data)

    def _stage(self, stage, version):
        for f in self.listeners:
            f(stage, version)

    # -- the device read
    def read(self):
        rec = self.rec or {}
        job = self.job
        return {"version": rec.get("version"), "previous": rec.get("previous"),
                "state": rec.get("state"), "reason": rec.get("reason"),
                "job": {"version": job.version, "state": job.state} if job else None,
                "lastFailure": self.failure}


def failure(version, reason, detail):
    return {"version": version, "reason": reason, "detail": detail}


def url_ok(url):
    if not printable(url, 512) or " " in url:
        return False
    for scheme in ("http://", "https://"):
        if url.startswith(scheme) and len(url) > len(scheme) and url[len(scheme)] not in "/:":
            return True
    return False


class _Body:
    # A response's body: readinto() until it returns 0, then close().
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
        # CPython (the bench's in-process tests): its sockets read through a file object;
        # MicroPython's are streams already (makefile() gives the socket itself; TLS has none).
        f = sock.makefile("rwb", 0) if hasattr(sock, "makefile") else sock
        request = ("GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, where)).encode()
        while request:
            request = request[f.write(request):]
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
