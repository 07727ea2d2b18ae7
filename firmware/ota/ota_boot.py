# The update record and the decisions taken from it at boot (docs/ota.md, "The record"):
# which app folder a bundle board boots and when it counts a boot; whether an image is on
# trial or was rolled back by the bootloader. The decisions are pure functions of the
# record. Runs at boot, before the agent; the install and the validity rule write the
# record from the network and worker threads. This is also the bundle form's boot layer,
# imported from /lib before any app folder is on the path: so it imports nothing of the
# agent, and its record format never changes (a new version must boot under every older
# boot layer; unknown members are ignored).
import json
import os

RECORD = "ota.json"
FOLDERS = ("app_a", "app_b")  # the bundle form's two app folders
MAX_BOOTS = 3  # ota.md: back to the old version after at most 3 failed boots
CORRUPT = "corrupt"
IMAGE = "image"
BUNDLE = "bundle"
TRIAL = "trial"  # the new version runs until it proves valid or is rolled back
VALID = "valid"
ROLLED_BACK = "rolled_back"
STATES = (TRIAL, VALID, ROLLED_BACK)
# Why a trial was rolled back without saying so itself (ota_valid gives the other reasons).
CRASHED = "crashed"  # it reset before it was valid: a crash, a watchdog, a power cut
NEVER_STARTED = "never_started"  # the bootloader never ran it (image form)


class LocalFs:
    # The board's file system, as the OTA modules use it (the bench gives its flash model).
    def open(self, path, mode):
        return open(path, mode)

    def rename(self, src, dst):
        os.rename(src, dst)  # atomic on littlefs and POSIX: the target is never deleted first

    def remove(self, path):
        os.remove(path)

    def mkdir(self, path):
        os.mkdir(path)

    def rmdir(self, path):
        os.rmdir(path)

    def listdir(self, path):
        return os.listdir(path)

    def stat(self, path):
        return os.stat(path)

    def statvfs(self, path):
        return os.statvfs(path)


FS = LocalFs()
booted = None  # the app folder app_path() put first on sys.path at this boot (None: /lib)


def join(root, name):
    return root.rstrip("/") + "/" + name


def read(fs, root):
    # The record; None when there is none; CORRUPT when it fails its checks.
    try:
        with fs.open(join(root, RECORD), "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        rec = json.loads(data)
        ok = (rec["form"] in (IMAGE, BUNDLE) and rec["state"] in STATES
              and type(rec["slot"]) is str and type(rec["boots"]) is int and rec["boots"] >= 0)
        if ok and rec["form"] == BUNDLE:
            ok = rec["slot"] in FOLDERS and (rec["good"] is None or rec["good"] in FOLDERS)
    except (ValueError, TypeError, KeyError):
        return CORRUPT
    return rec if ok else CORRUPT


def write(fs, root, rec):
    # One atomic write: the record as it was, or as it is now, never half of one.
    path = join(root, RECORD)
    with fs.open(path + ".tmp", "wb") as f:
        f.write(json.dumps(rec).encode())
    fs.rename(path + ".tmp", path)


def restore(fs, root, rec):
    # Put back the record as read before an update (None or CORRUPT: there was none).
    if type(rec) is dict:
        write(fs, root, rec)
    else:
        fs.remove(join(root, RECORD))


def bundle_boot(rec):
    # (the app folder to boot, or None for the deployed /lib; the record to write first).
    if type(rec) is not dict or rec["form"] != BUNDLE:
        return None, None
    state = rec["state"]
    if state == TRIAL:
        if rec["boots"] >= MAX_BOOTS:
            return rec["good"], dict(rec, state=ROLLED_BACK, reason=CRASHED)
        return rec["slot"], dict(rec, boots=rec["boots"] + 1)
    if state == VALID:
        return rec["slot"], None
    return rec["good"], None


def image_boot(rec, running):
    # (the running image is on trial; the record to write). `running`: the label of the
    # partition the bootloader started. The bootloader boots a new image once: if it is
    # not the one running, it was rolled back (or never started).
    if type(rec) is not dict or rec["form"] != IMAGE or rec["state"] != TRIAL:
        return False, None
    if rec["slot"] == running:
        return True, dict(rec, boots=rec["boots"] + 1)
    why = rec.get("reason") or (NEVER_STARTED if rec["boots"] == 0 else CRASHED)
    return False, dict(rec, state=ROLLED_BACK, reason=why)


def app_path(root, fs=FS):
    # A bundle board's boot: the folder to put first on sys.path (None: /lib as deployed),
    # with the boot counted in flash before the app runs. If the count cannot be written,
    # the trial is not run uncounted: the good version boots.
    global booted
    rec = read(fs, root)
    folder, new = bundle_boot(rec)
    if new is not None:
        try:
            write(fs, root, new)
        except OSError:
            folder = rec["good"]
    booted = folder
    return join(root, folder) if folder else None
