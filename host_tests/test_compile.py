import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tools.device.compile import board_sources, compile_all, sources
from tools.paths import MPY_LIB, ROOT, THIRD_PARTY, firmware_sources


def test_every_module_compiles_and_imports_under_micropython(tmp_path, mpy_dir):
    assert compile_all(str(tmp_path)) == []
    made = sorted(os.path.relpath(p, tmp_path)
                  for p in glob.glob(str(tmp_path / "**" / "*.mpy"), recursive=True))
    targets = [os.path.splitext(e.target)[0] for e in sources()]
    assert made == sorted(t + ".mpy" for t in targets)
    for t in targets:
        head = (tmp_path / (t + ".mpy")).read_bytes()[:2]
        assert head == b"M\x06", (t, head)  # .mpy v6: loads on MicroPython 1.23 and later
    # Every module loads from its .mpy (entry points would start running: only compiled).
    names = [t.replace("/__init__", "").replace("/", ".") for t in targets]
    modules = [n for n in names if not n.endswith("_main")]
    standins = os.path.join(os.path.dirname(os.path.abspath(__file__)), "esp32_standins")
    env = dict(os.environ, MICROPYPATH=":".join([str(tmp_path), standins, ".frozen"]),
               STANDIN_LOG=str(tmp_path / "standin.log"))
    code = "import sys\nfor n in %r:\n    __import__(n)\nprint('ok', len(sys.modules))" % modules
    out = subprocess.run(["micropython", "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr


def test_the_manifest_names_every_firmware_module_and_the_pinned_libraries():
    ours = sorted(firmware_sources().values())
    listed = [e.source for e in sources()]
    assert len(ours) >= 10 and all(p in listed for p in ours)
    libs = {e.target: e.metadata.version for e in sources() if e.source.startswith(MPY_LIB)}
    assert libs == {"requests/__init__.py": "0.10.2", "ssl.py": "0.2.1",
                    "umqtt/simple.py": "1.7.0"}
    assert all(os.path.basename(p) != "manifest.py" for p in board_sources())


# What the paths of tools/paths.py find among the manifest's files, run in another layout.
_AGREE = """
import json, os
from tools.device.compile import sources
from tools.paths import FIRMWARE, MPY_LIB
found = [e for e in sources()]
print(json.dumps({"firmware": sorted(e.target for e in found
                                     if e.source.startswith(FIRMWARE + os.sep)),
                  "libraries": sorted(e.target for e in found
                                      if e.source.startswith(MPY_LIB + os.sep))}))
"""


@pytest.mark.parametrize("linked", ["shared", "checkout"])
def test_paths_and_the_manifest_agree_through_a_symlink(tmp_path, linked):
    # ../shared as a symlink beside the checkout (or the checkout reached through one): the
    # manifest reader reports resolved paths, so tools/paths.py must give resolved ones too.
    # Before: no pinned library was found when ../shared was a link (make test failed).
    real = tmp_path / "real"
    for part in ("firmware", "boards", "tools"):
        shutil.copytree(os.path.join(ROOT, part), str(real / part),
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "shared").symlink_to(os.path.dirname(os.path.realpath(THIRD_PARTY)))
    checkout = real
    if linked == "checkout":
        checkout = tmp_path / "evse"
        checkout.symlink_to(real)
    out = subprocess.run([sys.executable, "-c", _AGREE], cwd=str(checkout),
                         env=dict(os.environ, PYTHONPATH=str(checkout)), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["libraries"] == ["requests/__init__.py", "ssl.py", "umqtt/simple.py"]
    ours = sorted(os.path.basename(p) for p in firmware_sources().values())
    assert found["firmware"] == ours


def test_mpy_cross_rejects_cpython_only_code(tmp_path):
    # The check has teeth: a construct MicroPython lacks does not compile.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    match x:\n        case 1:\n            pass\n")
    res = subprocess.run(["mpy-cross", "-o", str(tmp_path / "bad.mpy"), str(bad)],
                         capture_output=True)
    assert res.returncode != 0


def test_firmware_core_never_imports_machine():
    for path in firmware_sources().values():
        text = open(path).read()
        assert not re.search(r"^\s*(import|from)\s+(machine|esp32|network)\b", text, re.M), path
