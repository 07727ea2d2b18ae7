import glob
import os
import re
import subprocess

from tools.device.compile import compile_all, sources
from tools.paths import FIRMWARE



def test_every_module_compiles_with_mpy_cross(tmp_path):
    assert len(sources()) >= 10
    assert compile_all(str(tmp_path)) == []
    assert len(glob.glob(str(tmp_path / "*.mpy"))) == len(sources())


def test_mpy_cross_rejects_cpython_only_code(tmp_path):
    # The check has teeth: a construct MicroPython lacks does not compile.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    match x:\n        case 1:\n            pass\n")
    res = subprocess.run(["mpy-cross", "-o", str(tmp_path / "bad.mpy"), str(bad)],
                         capture_output=True)
    assert res.returncode != 0


def test_firmware_core_never_imports_machine():
    for path in glob.glob(os.path.join(FIRMWARE, "*.py")):
        text = open(path).read()
        assert not re.search(r"^\s*(import|from)\s+(machine|esp32|network)\b", text, re.M), path
