"""The micropython-lib modules the agent imports are the pinned ones (what MicroPython
v1.28.0 freezes into the ESP32 image), not the copies frozen into the pip wheel."""
import json
import os
import shutil
import subprocess
import sys

from tools.paths import MPY_DIR, ROOT, micropython

PROBE = ("import json, requests, umqtt.simple\n"
         "print(json.dumps({m.__name__: [m.__file__, getattr(m, '__version__', None)]\n"
         "                  for m in (requests, umqtt.simple)}))\n")


def imported(build):
    exe, env = micropython(build)
    out = subprocess.run(exe + ["-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_wheel_imports_the_pinned_mpy_not_its_own_frozen_copies(mpy_dir):
    found = imported(mpy_dir)
    assert found["requests"] == [MPY_DIR + "/requests/__init__.mpy", "0.10.2"]
    assert found["umqtt.simple"] == [MPY_DIR + "/umqtt/simple.mpy", "1.7.0"]


def test_unix32_has_the_pinned_versions_frozen(unix32):
    found = imported(unix32)
    assert found["requests"] == ["requests/__init__.py", "0.10.2"]  # frozen: no directory
    assert found["umqtt.simple"] == ["umqtt/simple.py", "1.7.0"]


def test_without_shared_beside_the_project_tools_say_so_in_one_line(tmp_path):
    # A copy of the project with no ../shared next to it.
    project = tmp_path / "project"
    for d in ("tools", "firmware", "boards"):
        shutil.copytree(os.path.join(ROOT, d), project / d,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for tool in (["tools.device.compile", str(tmp_path / "out")], ["tools.device.unix32"]):
        out = subprocess.run([sys.executable, "-m", *tool], cwd=str(project),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and out.stdout == "", out
        assert out.stderr.count("\n") == 1 and "shared/third_party" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
