"""make unix32: MicroPython v1.28.0, 32-bit, the agent frozen through boards/sim/manifest.py
(which includes firmware/manifest.py, as boards/esp32/manifest.py does); cached; with the
ESP32 image's hashes from the 32-bit mbedTLS, and OCPP running on it at 56K."""
import os
import shutil
import subprocess

import pytest

from tools.bench.sim import parse
from tools.device import unix32 as unix32_build
from tools.measure import ocpp_heap
from tools.paths import UNIX32

VERSION = "import sys; print(sys.implementation.version[:3], sys.maxsize, sys.platform)"


def test_it_is_v1_28_0_32_bit_with_the_agent_frozen(unix32):
    out = subprocess.run([UNIX32, "-c", VERSION + "\nimport agent, mqtt_uplink, updater, "
                          "sim_main\nprint(sim_main.RESTART_EXIT)"],
                         env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True,
                         text=True, timeout=30)
    # only .frozen on the path: the agent, the updater and the sim board are all in it
    assert out.stdout.splitlines() == ["(1, 28, 0) 2147483647 linux", "75"], out


def test_a_second_build_with_the_same_inputs_is_a_no_op(unix32):
    # Nothing is written: not the binary, not its build log (make is not even started).
    # Not timed: under make test's parallel workers it may wait for another image's build.
    log = unix32_build._file("sim", "build.log")
    before = os.stat(UNIX32).st_mtime_ns, os.stat(log).st_mtime_ns
    unix32_build.build(quiet=True)
    assert (os.stat(UNIX32).st_mtime_ns, os.stat(log).st_mtime_ns) == before


def test_without_gcc_multilib_it_says_how_to_get_it(tmp_path, monkeypatch):
    gcc = tmp_path / "gcc"  # a gcc without 32-bit libraries
    gcc.write_text("#!/bin/sh\necho 'fatal error: bits/libc-header-start.h' >&2\nexit 1\n")
    gcc.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    why = unix32_build.gcc_m32()
    assert why == unix32_build.NEED_MULTILIB and "apt-get install gcc-multilib" in why


def needs_sha1():
    why = unix32_build.mbedtls_m32()
    if why:
        pytest.skip(why)


def test_it_carries_the_esp32_images_hashes_but_no_tls(unix32):
    # hashlib.sha1 (OCPP's WebSocket handshake), md5, sha256 and cryptolib from mbedTLS, as
    # the ESP32 image; no tls: over Debian's mbedTLS a context took 38,868 bytes of heap.
    needs_sha1()
    out = subprocess.run([UNIX32, "-c", HASHES], env=dict(os.environ, MICROPYPATH=".frozen"),
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == [
        "a9993e364706816aba3e25717850c26c9cd0d89d", "900150983cd24fb0d6963f7d28e17f72",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "cryptolib",
        "no-tls"], out.stdout + out.stderr


HASHES = """
import binascii, hashlib, cryptolib
for h in (hashlib.sha1, hashlib.md5, hashlib.sha256):
    print(binascii.hexlify(h(b"abc").digest()).decode())
print(cryptolib.__name__)
try:
    import tls
except ImportError:
    print("no-tls")
"""


def test_ocpp_runs_on_it_at_an_esp32s_heap(unix32, tmp_path):
    # make bench's OCPP session (tools/measure/ocpp_heap.py): profiles, every configuration key,
    # a day's composite schedule, a transaction with meter values every second, at 56K.
    needs_sha1()
    got = ocpp_heap.measure(str(tmp_path), build="unix32", heapsize="56K")
    assert got["heap"] == 56000 and got["connects"] == 1 and got["accepted"], got
    assert got["peak_live"] < 40 * 1024, got


def test_make_sim_takes_ocpp_on_it_but_not_wss(unix32, capsys):
    needs_sha1()
    a = parse(["--ocpp", "ws://127.0.0.1:9/ocpp", "--build", "unix32", "--no-page"])
    assert a.ocpp and a.build == "unix32"
    with pytest.raises(SystemExit):
        parse(["--ocpp", "wss://127.0.0.1:9/ocpp", "--build", "unix32"])
    assert "wss:// needs --build wheel" in capsys.readouterr().err


def test_without_32_bit_mbedtls_it_says_how_to_get_it(tmp_path, monkeypatch):
    real = shutil.which("gcc")
    gcc = tmp_path / "gcc"  # a gcc with 32-bit libc but no 32-bit mbedTLS
    gcc.write_text("#!/bin/sh\ncase \"$*\" in *mbedcrypto*) echo 'cannot find -lmbedcrypto' >&2;"
                   " exit 1;; esac\nexec %s \"$@\"\n" % real)
    gcc.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    assert unix32_build.gcc_m32() is None
    why = unix32_build.mbedtls_m32()
    assert why == unix32_build.NEED_MBEDTLS and "libmbedtls-dev:i386" in why
    assert unix32_build.HASHES[0] not in unix32_build.options()
