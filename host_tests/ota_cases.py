# The OTA core's cases, run in the same words by CPython (test_ota.py imports this module)
# and by micropython (test_ota.py runs it: micropython ota_cases.py FIXTURES CASE). The
# releases, keys and payloads were made by the host tool (tools/ota.py) into FIXTURES; the
# flash is the bench's model (tools/bench/flash_model.py), cut at every step.
import json
import sys

import ota_boot
import ota_bundle
import ota_image
import ota_manifest
import ota_valid
import persist
from ota_manifest import Refused
from sim_board import FileStore

try:
    from tools.bench.flash_model import (CuttableFlash, EspFlash, MemoryMedium, PowerCut,
                                         make_image, partition_class)
except ImportError:  # micropython: tools/bench is on MICROPYPATH
    from flash_model import (CuttableFlash, EspFlash, MemoryMedium, PowerCut, make_image,
                             partition_class)

ROOT = "/flash"
RUNNING = "0.2.0"
APP_SIZE = 16384  # the model's app partitions (MicroPython's OTA table has 0x180000)
CASES = {}
F = {}  # the fixtures: F["releases"][name] = {"manifest", "signature", "payload"}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def load(folder):
    with open(folder + "/fixtures.json") as f:
        F.update(json.load(f))
    F["folder"] = folder


def payload(name):
    with open(F["folder"] + "/" + F["releases"][name]["payload"], "rb") as f:
        return f.read()


def trusted():
    return ota_manifest.keys(F["trusted"])


def check(name, kind="bundle", running=RUNNING):
    r = F["releases"][name]
    return ota_manifest.check(r["manifest"], r["signature"], trusted(), kind, running)


def refused(fn, *args):
    try:
        fn(*args)
    except Refused as e:
        return e.reason
    return None


# -- Trust: the manifest and its signature


@case
def tool_signed_releases_verify_with_every_trusted_key():
    for name, kind in (("bundle", "bundle"), ("bundle_key_b", "bundle"), ("image", "image"),
                       ("bundle_4096", "bundle")):
        m = check(name, kind)
        assert m.version == "0.3.0" and m.kind == kind and m.size == len(payload(name)), name


@case
def tampered_or_foreign_releases_are_refused_with_the_reason():
    expected = F["refusals"]
    for name in sorted(expected):
        kind = "image" if name.startswith("image") else "bundle"
        got = refused(check, name, kind)
        assert got == expected[name], (name, got, expected[name])


@case
def every_malformed_signature_encoding_is_refused():
    # Signatures made with the private key over encodings that are not the one PKCS#1 v1.5
    # SHA-256 encoding of the manifest (F["padding"]): each is refused; the control passes.
    for name, r in sorted(F["padding"].items()):
        got = refused(ota_manifest.check, r["manifest"], r["signature"], trusted(), "bundle",
                      RUNNING)
        assert got == (None if name == "control" else ota_manifest.BAD_SIGNATURE), (name, got)


@case
def downgrades_only_where_the_signed_manifest_allows_them():
    assert check("bundle", running="0.2.9").version == "0.3.0"
    for running in ("0.3.0", "0.3.1", "1.0.0"):
        assert refused(check, "bundle", "bundle", running) == ota_manifest.DOWNGRADE
        assert check("bundle_downgrade", running=running).downgrade is True
    assert ota_manifest.version("0.10.0") > ota_manifest.version("0.9.9")


@case
def public_keys_are_checked_when_read():
    assert len(trusted()) == 3
    for bad in F["bad_keys"]:
        try:
            ota_manifest.keys([bad])
        except ValueError as e:
            assert "ota.keys[0]" in str(e)
        else:
            raise AssertionError("accepted %r" % bad[:20])


# -- The bundle form on the flash model

OLD_FILES = {"app_main.mpy": b"old main", "umqtt/simple.mpy": b"old mqtt", "agent.mpy": b"x" * 700}
KEYS = {persist.CAP: 7400, persist.PAUSE: 1}
JOURNAL = b'[{"actionId": "a1", "state": "completed"}]'


def write_keys(fs):
    p = persist.Persist(FileStore(ROOT, opener=fs.open, rename=fs.rename))
    for key, value in KEYS.items():
        assert p.write_word(key, value)
    assert p.write_blob(persist.ACTIONS, JOURNAL)


def keys_survived(fs):
    p = persist.Persist(FileStore(ROOT, opener=fs.open, rename=fs.rename))
    for key, value in KEYS.items():
        assert p.read_word(key) == value, key
    assert p.read_blob(persist.ACTIONS) == JOURNAL


class BundleBoard:
    # A bundle board: the old version valid in app_a, cap, pause and journal in flash.
    def __init__(self, capacity=None):
        self.flash = CuttableFlash(ROOT, capacity)
        fs = self.fs = self.flash
        fs.mkdir(ROOT + "/app_a")
        fs.mkdir(ROOT + "/app_a/umqtt")
        for name, data in OLD_FILES.items():
            with fs.open(ROOT + "/app_a/" + name, "wb") as f:
                f.write(data)
        ota_boot.write(fs, ROOT, {"form": "bundle", "state": "valid", "version": RUNNING,
                                  "previous": "0.1.0", "slot": "app_a", "good": None,
                                  "boots": 1, "reason": None})
        write_keys(fs)
        self.flash.spent = 0
        self.flash.log = None

    def keys_survived(self):
        keys_survived(self.fs)

    def update(self, name, chunk=700, data=None):
        m = check(name)
        inst = ota_bundle.BundleInstall(m, ROOT, self.fs)
        data = payload(name) if data is None else data
        try:
            for i in range(0, len(data), chunk):
                inst.write(data[i:i + chunk])
            inst.finish()
        except Refused:
            inst.abort()
            raise
        inst.activate(RUNNING)

    def booted(self):
        # What the boot layer would boot now, without counting: (folder, its files).
        folder = ota_boot.bundle_boot(ota_boot.read(self.fs, ROOT))[0]
        return folder, self.flash.tree(ROOT + "/" + folder) if folder else None

    def boot_and_run(self, now_step=1000):
        # A power-on: the boot layer, then the app; its behaviour is its app_main.mpy.
        path = ota_boot.app_path(ROOT, self.fs)
        files = self.flash.tree(path)
        rec = ota_boot.read(self.fs, ROOT)
        return run_app(files.get("app_main.mpy"), rec, self.fs)


def run_app(main, rec, fs, partition=None):
    # The new version's life on the bench, by what its main module says it does.
    if main in (b"import error", b"crash"):
        return "reset"  # it raised at import or in its start: the board resets
    if type(rec) is not dict or rec["state"] != ota_boot.TRIAL:
        return "running"
    trial = ota_valid.Trial(rec, 0, ROOT, fs, partition)
    for s in range(0, 3600):
        verdict = trial.step(s * 1000, False, main != b"no uplink" and s >= 5)
        if verdict == ota_valid.VALID:
            return "valid"
        if verdict == ota_valid.ROLL_BACK:
            return "restart"
    raise AssertionError("no verdict in an hour")


def new_files():
    return F["bundle_files"]


def as_files(tree):
    return {k: list(v) for k, v in sorted(tree.items())}


@case
def a_bundle_installs_into_the_other_folder_and_is_marked_valid():
    b = BundleBoard()
    b.update("bundle")
    assert b.flash.tree(ROOT + "/app_a") == OLD_FILES  # the running version untouched
    rec = ota_boot.read(b.fs, ROOT)
    assert (rec["state"], rec["slot"], rec["good"], rec["boots"]) == ("trial", "app_b", "app_a", 0)
    assert ROOT + "/" + ota_bundle.STAGING not in b.flash.files
    assert as_files(b.booted()[1]) == new_files()
    assert b.boot_and_run() == "valid"
    rec = ota_boot.read(b.fs, ROOT)
    assert (rec["state"], rec["boots"], rec["version"]) == ("valid", 1, "0.3.0")
    assert b.boot_and_run() == "running" and ota_boot.read(b.fs, ROOT)["boots"] == 1
    # The next update goes into app_a; app_b, now running, is its fallback.
    b.update("bundle_040")
    rec = ota_boot.read(b.fs, ROOT)
    assert (rec["slot"], rec["good"], rec["previous"]) == ("app_a", "app_b", RUNNING)
    b.keys_survived()


@case
def refused_bundles_leave_the_running_version_untouched():
    cases = [("bundle_bad_member", None, ota_manifest.BAD_BUNDLE),
             ("bundle_symlink", None, ota_manifest.BAD_BUNDLE),
             ("bundle_py_file", None, ota_manifest.BAD_BUNDLE),
             ("bundle", "flip", ota_manifest.HASH_MISMATCH),
             ("bundle", "short", ota_manifest.SIZE_MISMATCH),
             ("bundle", "long", ota_manifest.SIZE_MISMATCH)]
    for name, change, reason in cases:
        b = BundleBoard()
        before = ota_boot.read(b.fs, ROOT)
        data = payload(name)
        if change == "flip":
            data = data[:600] + bytes((data[600] ^ 1,)) + data[601:]
        elif change == "short":
            data = data[:-1]
        elif change == "long":
            data = data + b"\0"
        assert refused(b.update, name, 700, data) == reason, (name, change)
        assert ota_boot.read(b.fs, ROOT) == before
        assert b.flash.tree(ROOT + "/app_a") == OLD_FILES
        assert ROOT + "/app_b" not in b.flash.dirs, sorted(b.flash.dirs)
        assert ROOT + "/" + ota_bundle.STAGING not in b.flash.files
        assert b.boot_and_run() == "running"
        b.keys_survived()


@case
def flash_that_writes_wrong_is_caught_by_the_read_back():
    for worn, what in ((ROOT + "/" + ota_bundle.STAGING, "the staged bundle"),
                       (ROOT + "/app_b/agent.mpy", "agent.mpy")):
        b = BundleBoard()
        b.flash.worn = worn
        try:
            b.update("bundle")
            raise AssertionError("installed from worn flash")
        except Refused as e:
            assert e.reason == ota_manifest.HASH_MISMATCH and what in e.detail, e.detail
        assert ota_boot.read(b.fs, ROOT)["slot"] == "app_a"
        assert ROOT + "/app_b" not in b.flash.dirs
    b = ImageBoard()
    b.esp.medium.worn = b.esp.parts["ota_1"][0] + 10  # inside the image
    assert refused(b.update, "image") == ota_manifest.HASH_MISMATCH
    assert ota_boot.read(b.fs, ROOT) is None and b.esp.active() < 0


@case
def no_room_and_a_trial_in_progress_refuse_a_bundle():
    b = BundleBoard(capacity=len(payload("bundle")) + 4096)
    assert refused(b.update, "bundle") == ota_manifest.NO_SPACE
    assert b.flash.tree(ROOT + "/app_a") == OLD_FILES
    b = BundleBoard()
    b.update("bundle")
    assert refused(b.update, "bundle_040") == ota_manifest.NOT_VALID_YET
    assert as_files(b.booted()[1]) == new_files()


@case
def a_new_bundle_that_fails_is_rolled_back():
    # Fails to import, crashes at boot: 3 boots, then the fourth boots the old version.
    # Never reaches its uplink: it rolls itself back after 10 minutes.
    for name, boots, reason in (("bundle_import_error", 3, ota_boot.CRASHED),
                                ("bundle_crash", 3, ota_boot.CRASHED),
                                ("bundle_no_uplink", 1, ota_valid.UPLINK_NOT_REACHED)):
        b = BundleBoard()
        b.update(name)
        outcomes = [b.boot_and_run() for _ in range(boots)]
        assert outcomes == ["restart" if boots == 1 else "reset"] * boots, (name, outcomes)
        assert b.boot_and_run() == "running", name
        assert b.booted() == ("app_a", OLD_FILES), name
        rec = ota_boot.read(b.fs, ROOT)
        assert (rec["state"], rec["reason"], rec["boots"]) == ("rolled_back", reason, boots), rec
        b.keys_survived()
        b.update("bundle")  # and the next update may go where the failed one was
        assert b.boot_and_run() == "valid"


def cut_points(log):
    # Every step the flash saw: before it, after its first unit, in its middle, before its
    # last unit. A step is one write, one erased sector or one file-system operation.
    points = set()
    for start, n in log:
        points.update((start, start + 1, start + n // 2, start + n - 1))
    return sorted(p for p in points if p >= 0)


def sweep(make, everything, check_cut):
    b = make()
    b.flash.log = []
    everything(b)
    points = cut_points(b.flash.log)
    total = b.flash.spent
    assert total > 0
    for point in points + [total]:
        b = make()
        b.flash.budget = point
        try:
            everything(b)
            cut = False
        except PowerCut:
            cut = True
        b.flash.budget = None
        assert cut == (point < total), point
        check_cut(b, point)
    return len(points)


@case
def a_power_cut_at_every_step_of_a_bundle_update_boots_old_or_new():
    old = as_files(OLD_FILES)

    def everything(b):
        b.update("bundle")
        assert b.boot_and_run() == "valid"  # the first boot counts, then marks it valid

    def check_cut(b, point):
        folder, files = b.booted()
        assert as_files(files) in (old, new_files()), (point, folder)
        b.keys_survived()
        # Then the power stays on: it settles on the old version (and the update, sent
        # again, installs) or on the new one, valid.
        if folder == "app_a":
            assert b.boot_and_run() == "running", point
            everything(b)
        else:
            assert b.boot_and_run() in ("valid", "running"), point
        assert ota_boot.read(b.fs, ROOT)["state"] == "valid", point
        assert as_files(b.booted()[1]) == new_files(), point
        b.keys_survived()

    n = sweep(BundleBoard, everything, check_cut)
    assert n > 100, n


# -- The image form on the flash model


class ImageBoard:
    # An ESP32 flashed by esptool with the old image in ota_0 (otadata blank).
    def __init__(self):
        self.flash = CuttableFlash(ROOT)
        self.fs = self.flash
        self.esp = EspFlash(MemoryMedium(EspFlash.size_for(APP_SIZE), self.flash), APP_SIZE)
        self.esp.program(self.esp.parts["ota_0"][0], make_image(b"0.2.0 good"))
        self.partition = partition_class(self.esp)
        write_keys(self.fs)  # NVS on a board, which no update touches; here beside the record
        assert self.esp.boot() == "ota_0"
        self.flash.spent = 0
        self.flash.log = None

    def update(self, name, data=None, chunk=500):
        m = check(name, "image")
        inst = ota_image.ImageInstall(self.partition, m, ROOT, self.fs)
        data = payload(name) if data is None else data
        for i in range(0, len(data), chunk):
            inst.write(data[i:i + chunk])
        inst.finish()
        inst.activate(RUNNING)

    def power_on(self):
        label = self.esp.boot()
        assert label is not None, "nothing bootable"
        return label

    def boot_and_run(self):
        label = self.power_on()
        trial, new = ota_boot.image_boot(ota_boot.read(self.fs, ROOT), label)
        if new is not None:
            ota_boot.write(self.fs, ROOT, new)
        main = self.esp.image(label).split(b" ")[1]
        main = {b"good": None, b"import_error": b"import error", b"crash": b"crash",
                b"no_uplink": b"no uplink"}[main]
        return run_app(main, new if trial else None, self.fs, self.partition)

    def running(self):
        return self.esp.image(self.esp.running)

    def keys_survived(self):
        keys_survived(self.fs)


@case
def an_image_is_written_verified_booted_once_and_marked_valid():
    b = ImageBoard()
    b.update("image")
    assert b.esp.image("ota_1") == b"0.3.0 good" and b.esp.image("ota_0") == b"0.2.0 good"
    assert b.boot_and_run() == "valid"
    assert b.esp.entry(b.esp.active())[1] == 2  # ESP_OTA_IMG_VALID
    assert ota_boot.read(b.fs, ROOT)["state"] == "valid"
    assert b.boot_and_run() == "running" and b.running() == b"0.3.0 good"
    b.keys_survived()


@case
def refused_images_leave_the_running_version_untouched():
    b = ImageBoard()
    assert refused(b.update, "image_too_large") == ota_manifest.TOO_LARGE
    good = payload("image")
    bad = good[:40] + bytes((good[40] ^ 1,)) + good[41:]
    assert refused(b.update, "image", bad) == ota_manifest.HASH_MISMATCH
    assert refused(b.update, "image", good[:-1]) == ota_manifest.SIZE_MISMATCH
    # Signed, but not an image the bootloader takes (ESP-IDF's check in set_boot).
    assert refused(b.update, "image_not_bootable") == ota_manifest.NOT_BOOTABLE
    assert ota_boot.read(b.fs, ROOT) is None
    assert b.esp.active() < 0  # otadata never written
    assert b.boot_and_run() == "running" and b.running() == b"0.2.0 good"
    b.keys_survived()


@case
def a_new_image_that_fails_is_rolled_back_by_the_bootloader():
    for name, outcome, reason in (("image_import_error", "reset", ota_boot.CRASHED),
                                  ("image_crash", "reset", ota_boot.CRASHED),
                                  ("image_no_uplink", "restart", ota_valid.UPLINK_NOT_REACHED)):
        b = ImageBoard()
        b.update(name)
        assert b.boot_and_run() == outcome, name
        assert b.boot_and_run() == "running" and b.running() == b"0.2.0 good", name
        rec = ota_boot.read(b.fs, ROOT)
        assert (rec["state"], rec["reason"]) == ("rolled_back", reason), (name, rec)
        b.update("image")  # the bootloader takes a new one into the same partition
        assert b.boot_and_run() == "valid" and b.running() == b"0.3.0 good"


@case
def a_power_cut_at_every_step_of_an_image_update_boots_old_or_new():
    def everything(b):
        b.update("image")
        assert b.boot_and_run() == "valid"

    def check_cut(b, point):
        outcome = b.boot_and_run()  # bootable (power_on checks), and running old or new
        assert b.running() in (b"0.2.0 good", b"0.3.0 good"), point
        if b.running() == b"0.2.0 good":
            assert outcome == "running", point
            everything(b)
        else:
            assert outcome in ("valid", "running"), (point, outcome)
        assert b.boot_and_run() == "running" and b.running() == b"0.3.0 good", point
        assert ota_boot.read(b.fs, ROOT)["state"] == "valid", point
        b.keys_survived()

    n = sweep(ImageBoard, everything, check_cut)
    assert n > 30, n


def main():
    load(sys.argv[1])
    names = sys.argv[2:] or sorted(CASES)
    for name in names:
        CASES[name]()
        print("ok", name)


if __name__ == "__main__":
    main()
