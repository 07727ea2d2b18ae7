"""make unix32: MicroPython v1.28.0, 32-bit, the agent frozen through boards/sim/manifest.py
(which includes firmware/manifest.py, as boards/esp32/manifest.py does); cached."""
import os
import subprocess

from tools.device import unix32 as unix32_build
from tools.paths import UNIX32

VERSION = "import sys; print(sys.implementation.version[:3], sys.maxsize, sys.platform)"


def test_it_is_v1_28_0_32_bit_with_the_agent_frozen(unix32):
    out = subprocess.run([UNIX32, "-c", VERSION + "\nimport agent, mqtt_uplink, sim_main"],
                         env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.splitlines()[0] == "(1, 28, 0) 2147483647 linux"
    # only .frozen on the path; sim_main is there too and stops at its missing argument
    assert 'File "sim_main.py"' in out.stdout and "IndexError" in out.stdout, out.stdout


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
