# Whether a new version on trial keeps its place (ota.md, "Validity and rollback"): valid
# once its control loop has run 60 s without a fault of its own and its uplink has been
# reached; rolled back if that has not happened 10 minutes after its boot. What each
# outcome writes: the record (and, for an image, the bootloader's mark). The worker thread
# calls Trial.step() every pass; the board restarts on ROLL_BACK.
from micropython import const
from control import elapsed
import ota_boot

HOLD_MS = const(60000)  # ota.md: 60 s of control loop without a fault of its own
DEADLINE_MS = const(600000)  # ota.md: back to the old version within 10 minutes
WAIT = const(0)
VALID = const(1)
ROLL_BACK = const(2)
# Why a trial rolled itself back (the record's and update.rolled_back's `reason`).
UPLINK_NOT_REACHED = "uplink_not_reached"
FAULTED = "faulted"  # the uplink was reached, but never 60 s without a fault of its own


class Validity:
    # The rule alone, over board milliseconds.
    def __init__(self, now):
        self.start = now
        self.clean_since = now
        self.uplink = False

    def step(self, now, fault, uplink):
        # fault: a fault of the agent's own since the last step (its control loop did not
        # advance, a thread of its raised); uplink: the configured uplink is reached (MQTT
        # connected, OCPP boot accepted, a first authorised HTTP request).
        if fault:
            self.clean_since = now
        if uplink:
            self.uplink = True
        if self.uplink and elapsed(now, self.clean_since) >= HOLD_MS:
            return VALID
        if elapsed(now, self.start) >= DEADLINE_MS:
            return ROLL_BACK
        return WAIT

    def reason(self):
        return FAULTED if self.uplink else UPLINK_NOT_REACHED


class Trial:
    # A version on trial, as the record names it; `partition`: the board's ota_partition
    # for an image (its mark ends the bootloader's rollback), None for a bundle.
    def __init__(self, rec, now, root, fs=ota_boot.FS, partition=None):
        self.rec = rec
        self.root = root
        self.fs = fs
        self.partition = partition
        self.rule = Validity(now)

    def step(self, now, fault, uplink):
        verdict = self.rule.step(now, fault, uplink)
        if verdict == VALID:
            if self.partition is not None:
                # First the bootloader's mark, then the record: cut between them, the
                # next boot finds the trial again and marks it again (a no-op).
                self.partition.mark_app_valid_cancel_rollback()
            ota_boot.write(self.fs, self.root, dict(self.rec, state=ota_boot.VALID))
        elif verdict == ROLL_BACK:
            # A bundle boots its good folder by this record; an image is rolled back by
            # the bootloader at the restart that follows, whatever the record says.
            ota_boot.write(self.fs, self.root, dict(self.rec, state=ota_boot.ROLLED_BACK,
                                                    reason=self.rule.reason()))
        return verdict
