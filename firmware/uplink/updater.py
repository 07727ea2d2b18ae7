# Updates over the air on the charger (docs/ota.md, "On the charger"), what every boot
# needs: what runs (the update record, as the boot layer or the bootloader left it), the
# new version's trial (ota_valid's rule, run by the worker every pass, and the restart of
# a rollback once the contactor is open), what the charger says about it (the device
# read's `update`; update.installed or update.rolled_back once an uplink is reached) and
# the one update in progress. The update itself (the request's checks, the download, the
# switch) is update_job.py, imported by the first request: a board that is not updating
# keeps its heap. Threads: the uplinks' (requests, reports), the worker's (service).
import _thread
from micropython import const
import control as ctl
import ota_boot

_STALL_MS = const(2000)  # a control loop this late is a fault of the firmware's own: longer
# than any stall an ESP32 has by design (a TLS handshake, up to ~1 s: docs/esp32-timing.md),
# shorter than the 5 s watchdog


class Updater:
    def __init__(self, agent, uplinks):
        # uplinks: the names of the configured uplinks (uplink_reached() says which one a
        # version has reached).
        board = agent.board
        cfg = board.config
        o = cfg.get("ota") or {}
        self.agent = agent
        self.board = board
        self.key_texts = o.get("keys") or ()  # config.check refused bad ones at boot
        self.keys = None  # {key id: ota_rsa.Key}, read by the first request
        self.form = o.get("form", ota_boot.BUNDLE)
        # The installation's CA (https:// downloads): the MQTT one, else OCPP's.
        self.ca_file = cfg.get("ca_file") or (cfg.get("ocpp") or {}).get("ca_file")
        self.root = board.ota_root
        self.partition = board.ota_partition if self.form == ota_boot.IMAGE else None
        # What a new version must reach before it is valid (docs/ota.md): every uplink that
        # dials out; the HTTP front, which waits to be asked, only on a charger that has no
        # other (its first authorised request).
        self.uplinks = [n for n in uplinks if n != "http"] or uplinks
        self.reached = []
        # Uplinks that report an update their own way (OCPP): firmware_stage(stage, version)
        # with one of update_job.STAGES, and firmware_pending() while one is unsent.
        self.listeners = []
        self.lock = _thread.allocate_lock()  # the record's writers
        self.job = None  # the update in progress (update_job.Job), one at a time
        self.failure = None  # the last update refused or failed since boot
        self.trial = None  # ota_valid.Trial while the running version is on trial
        self.rec = None  # the record as last read or written
        self.restarting = False  # a restart waits for the contactor to open
        self._told = None  # (event id, state) of the report the uplink is publishing
        self._begun = False  # the trial's clock starts at the worker's first pass
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
                    pass  # the bootloader counts an image's boots, not the record
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
        # An uplink's thread: MQTT connected, OCPP boot accepted. The first one hears how
        # the last update went.
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
        self.stage(stage, rec["version"])

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

    def stage(self, stage, version):
        for up in self.listeners:
            up.firmware_stage(stage, version)

    def reports_pending(self):
        for up in self.listeners:
            if up.firmware_pending():
                return True
        return False

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
            if not self._begun:  # the loops run: the 60 s and the 10 minutes count from now
                self._begun = True
                trial.rule = ota_valid.Validity(now)
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
                    ag.limits.set_updating(True)  # the vehicle lets go first
        # A rollback's restart, once the vehicle has let go (an update's job restarts the
        # board itself, once the uplinks have sent what it said).
        if self.restarting and self.job is None and not c.contactor_closed:
            self.board.restart()

    # -- requests (an uplink's thread): the update itself is update_job.py
    def request(self, req, now):
        # (status, body) for an update request: {url, manifest, signature, duringSession}.
        import update_job
        return update_job.request(self, req, now)

    def request_release(self, location, after_ms, now):
        # OCPP UpdateFirmware: the release file at `location`; False if an update is in
        # progress already.
        import update_job
        return update_job.request_release(self, location, after_ms, now)

    # -- the device read
    def read(self):
        rec = self.rec or {}
        job = self.job
        return {"version": rec.get("version"), "previous": rec.get("previous"),
                "state": rec.get("state"), "reason": rec.get("reason"),
                "job": {"version": job.version, "state": job.state} if job else None,
                "lastFailure": self.failure}
