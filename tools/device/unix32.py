"""make unix32: MicroPython v1.28.0's unix port, 32-bit, with the agent frozen in.

The ESP32's memory model on this machine: 32-bit objects and the agent's bytecode in the
image, not in the heap. Two images (IMAGES), built the same way from the same source:
"sim" (build/unix32/micropython, the bench's) freezes boards/sim/manifest.py:
firmware/manifest.py (the agent and its micropython-lib packages, as an ESP32 image freezes
them) and the simulated board; "esp32" (build/unix32/micropython-esp32) freezes exactly what
boards/esp32/manifest.py gives an ESP32 image of the project (without the port's own
modules), so that its boot test runs esp32_main from what an image would carry. The source
is ../shared/third_party/micropython-1.28.0, copied into build/unix32/mp (the build writes
into its tree). Cached: nothing is rebuilt while an image's inputs (manifests, the files
they name, the build options) are unchanged.

The ESP32 image's mbedTLS hashes and cipher (`hashlib.sha1` for OCPP's WebSocket handshake,
`hashlib.md5`, `cryptolib`; `hashlib.sha256` from mbedTLS too): MicroPython's own modules
over Debian's 32-bit libmbedcrypto (libmbedtls-dev:i386), because the pinned source has no
lib/mbedtls. Their contexts are small fixed structs, the same in any mbedTLS config. Not TLS:
a `tls.SSLContext` holds mbedTLS's entropy context, 37.5 KB in Debian's config (HAVEGE on)
against well under 1 KB in the ESP32's, so over Debian's library one context took 38,868
bytes of the Python heap and no TLS connection fitted in 56K: it would measure Debian, not
the board. Without the library the build has no hashlib.sha1, and says how to get it.
Usage: python -m tools.device.unix32 [sim|esp32]   (make unix32 [ARGS=esp32])
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

from tools.device import manifest
from tools.device.lock import build_lock
from tools.paths import (AGENT_MANIFEST, MICROPYTHON_SRC, MPY_LIB, SIM_MANIFEST, UNIX32,
                         UNIX32_DIR, UNIX32_ESP32, board_manifest, third_party)

TREE = os.path.join(UNIX32_DIR, "mp")
# Per image: (manifest, its options, the binary).
IMAGES = {"sim": (SIM_MANIFEST, {}, UNIX32),
          "esp32": (board_manifest("esp32"), {"port": False}, UNIX32_ESP32)}
# The recipe of ../shared/third_party/README.md: no FFI, TLS or btree (not in this extract).
OPTIONS = ["VARIANT=standard", "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0", "MICROPY_PY_SSL=0",
           "MICROPY_PY_BTREE=0", "MPY_LIB_DIR=" + MPY_LIB]
# The hashes over the system's libmbedcrypto: the make variables leave TLS and the in-tree
# lib/mbedtls out (not in the extract); the C defines turn on what the ESP32's
# MICROPY_PY_SSL brings besides TLS, from mbedTLS; the linker takes Debian's library.
MBEDCRYPTO = ["-lmbedcrypto"]
HASHES = ["CFLAGS_EXTRA=-DMICROPY_SSL_MBEDTLS=1 -DMICROPY_PY_HASHLIB_SHA1=1 "
          "-DMICROPY_PY_HASHLIB_MD5=1 -DMICROPY_PY_CRYPTOLIB=1",
          "LDFLAGS_EXTRA=" + " ".join(MBEDCRYPTO)]
NEED_MULTILIB = ("gcc cannot build 32-bit programs here: install gcc-multilib "
                 "(sudo apt-get install gcc-multilib), then make unix32")
NEED_MBEDTLS = ("no 32-bit mbedTLS here, so make unix32 has no hashlib.sha1 (OCPP's WebSocket "
                "handshake): sudo dpkg --add-architecture i386 && sudo apt-get update && "
                "sudo apt-get install libmbedtls-dev:i386, then make unix32")


class Unavailable(Exception):
    """A tool this build needs is missing (the message says which and how to get it)."""


class BuildError(Exception):
    pass


def gcc_m32():
    """None if gcc builds 32-bit programs here, else why not."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        return "gcc and make are needed: install build-essential and gcc-multilib"
    return None if _links("#include <stdio.h>\nint main(void) { return 0; }\n") else \
        NEED_MULTILIB


def mbedtls_m32():
    """None if gcc links 32-bit programs against mbedTLS's crypto here, else why not."""
    return None if _links("#include <mbedtls/sha1.h>\nint main(void) { mbedtls_sha1_context c; "
                          "mbedtls_sha1_init(&c); return 0; }\n", MBEDCRYPTO) else \
        NEED_MBEDTLS


def _links(source, libs=()):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write(source)
        res = subprocess.run(["gcc", "-m32", src, "-o", os.path.join(tmp, "t")] + list(libs),
                             capture_output=True)
    return res.returncode == 0


def _file(image, what):
    """build/unix32/<image>.<what>: an image's stamp, log, options and frozen manifest."""
    return os.path.join(UNIX32_DIR, "%s.%s" % (image, what))


def _frozen_manifest(image):
    """`image`'s FROZEN_MANIFEST: one line including its manifest with its options."""
    path, options, _ = IMAGES[image]
    text = "include(%r%s)\n" % (path, "".join(", %s=%r" % kv for kv in sorted(options.items())))
    out = _file(image, "manifest.py")
    with open(out, "w") as f:
        f.write(text)
    return out


def options():
    """The make options: OPTIONS, with HASHES where the 32-bit mbedTLS is there."""
    return OPTIONS + ([] if mbedtls_m32() else HASHES)


def has_sha1(binary=UNIX32):
    """Whether the built binary has hashlib.sha1: False where it is not built."""
    if not os.path.exists(binary):
        return False
    res = subprocess.run([binary, "-c", "import hashlib; hashlib.sha1"],
                         env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True)
    return res.returncode == 0


def inputs_digest(opts, image="sim"):
    path, manifest_options, _ = IMAGES[image]
    h = hashlib.sha256()
    h.update(MICROPYTHON_SRC.encode() + b"\0" + " ".join(opts).encode() + b"\0" +
             repr(sorted(manifest_options.items())).encode())
    names = [path, AGENT_MANIFEST] + [e.source for e in manifest.files(path, **manifest_options)]
    for root, _, files in os.walk(MPY_LIB):  # library manifests and sources: small
        names += [os.path.join(root, f) for f in files]
    for name in sorted(set(names)):
        with open(name, "rb") as f:
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _run(cmd, log, log_path):
    log.write(("\n$ %s\n" % " ".join(cmd)).encode())
    log.flush()
    # The copy sits inside this project's git work tree: name the version, or the build
    # would take this project's `git describe` for MicroPython's.
    env = dict(os.environ, MICROPY_GIT_TAG="v1.28.0", MICROPY_GIT_HASH="pinned")
    res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if res.returncode:
        log.flush()
        with open(log_path, "rb") as f:
            tail = f.read().decode(errors="replace").strip().splitlines()[-1:]
        raise BuildError("%s failed (log: %s): %s" % (" ".join(cmd[:3]), log_path,
                                                       tail[0] if tail else res.returncode))


def build(quiet=False, image="sim"):
    """The path of `image`'s binary (IMAGES), built if its inputs changed."""
    third_party()
    # Up to date: no lock needed (the stamp is written after the binary is renamed into
    # place), so a bench never waits for another image's build.
    why, opts, digest = _inputs(image)
    if _built(image, digest):
        return IMAGES[image][2]
    with build_lock():
        return _build(quiet, image, why, opts, digest)


def _inputs(image):
    why = gcc_m32()
    opts = OPTIONS if why else options()
    return why, opts, inputs_digest(opts, image)


def _built(image, digest):
    return os.path.exists(IMAGES[image][2]) and _read(_file(image, "inputs.sha256")) == \
        digest + "\n"


def _build(quiet, image, why, opts, digest):
    binary = IMAGES[image][2]
    stamp, log_path = _file(image, "inputs.sha256"), _file(image, "build.log")
    if _built(image, digest):  # built by another process while this one waited for the lock
        return binary
    if why:
        raise Unavailable(why)
    t0 = time.monotonic()
    os.makedirs(UNIX32_DIR, exist_ok=True)
    if not os.path.isdir(TREE):
        tmp = tempfile.mkdtemp(dir=UNIX32_DIR)
        shutil.copytree(MICROPYTHON_SRC, os.path.join(tmp, "mp"))
        for root, dirs, files in os.walk(tmp):  # the pinned tree is read-only; ours is not
            for name in dirs + files:
                path = os.path.join(root, name)
                os.chmod(path, os.stat(path).st_mode | 0o200)
        os.rename(os.path.join(tmp, "mp"), TREE)
        os.rmdir(tmp)
    if not quiet:
        print("unix32: building MicroPython v1.28.0 (32-bit, %s image frozen%s); log in %s"
              % (image, ", mbedTLS hashes" if HASHES[0] in opts else "",
                 os.path.relpath(log_path)), flush=True)
        if HASHES[0] not in opts:
            print("unix32: " + NEED_MBEDTLS, flush=True)
    jobs = "-j%d" % max(1, min(4, os.cpu_count() or 1))
    port = os.path.join(TREE, "ports", "unix")
    build_dir = "build-" + image  # each image its own objects: building one keeps the other's
    objects = os.path.join(port, build_dir)
    said = " ".join(opts)
    built_with = _file(image, "options.txt")  # the make options of the objects in build_dir
    if os.path.isdir(objects) and _read(built_with) != said:
        shutil.rmtree(objects)  # make does not rebuild what other options compiled
    with open(built_with, "w") as f:
        f.write(said)
    # The inputs changed: the frozen modules are made again. makemanifest.py remakes them only
    # when a file is newer than its output, so a module taken out of a manifest stayed frozen.
    frozen = os.path.join(objects, "frozen_content.c")
    if os.path.exists(frozen):
        os.remove(frozen)
    with open(log_path, "wb") as log:
        _run(["make", "-C", os.path.join(TREE, "mpy-cross"), jobs], log, log_path)
        _run(["make", "-C", port, jobs, "BUILD=" + build_dir,
              "FROZEN_MANIFEST=" + _frozen_manifest(image)] + opts, log, log_path)
    # A rename, not a copy over it: the old binary may still be running (a bench, a test).
    shutil.copy(os.path.join(port, build_dir, "micropython"), binary + ".new")
    os.replace(binary + ".new", binary)
    with open(stamp, "w") as f:
        f.write(digest + "\n")
    if not quiet:
        print("unix32: built %s in %.0f s" % (os.path.relpath(binary), time.monotonic() - t0))
    return binary


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    image = args[0] if args else "sim"
    if len(args) > 1 or image not in IMAGES:
        print("unix32: error: give one image of %s, or none for sim" % ", ".join(IMAGES),
              file=sys.stderr)
        return 2
    try:
        path = build(image=image)
    except (Unavailable, BuildError) as e:
        print("unix32: error: %s" % e, file=sys.stderr)
        return 2
    version = subprocess.run([path, "-c", "import sys; print(sys.version, sys.maxsize)"],
                             capture_output=True, text=True).stdout.strip()
    print("unix32: %s (%s; %s)" % (os.path.relpath(path), version,
                                    "hashlib.sha1" if has_sha1(path) else "no hashlib.sha1"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
