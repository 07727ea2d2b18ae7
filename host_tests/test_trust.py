"""A CA file as a person has it: firmware/uplink/trust.py loads PEM (one certificate or several) or
DER under both interpreters, and refuses anything else with one line; tools/ca.py refuses
it once, at start, in make sim, evctl and make deploy (test_device_tools.py for deploy).
Before, a PEM CA failed on every connection attempt, for ever, under MicroPython (whose
mbedTLS parses no PEM: "not a DER certificate")."""
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import trust
from pki import Pki
from tools.paths import ROOT, micropython

ACCEPTED = ("ca.pem", "ca.der", "bundle.pem")
REFUSED = ("key.pem", "notes.txt", "broken.pem", "empty.der")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pki = Pki()
    d = tmp_path_factory.mktemp("cas")
    for name in ("ca.pem", "ca.der"):
        (d / name).write_bytes(open(pki.path(name), "rb").read())
    # What a browser or a CA's download gives: text around the blocks, two certificates.
    (d / "bundle.pem").write_bytes(b"Bag Attributes\n  friendlyName: root\n" +
                                   open(pki.path("rogue.pem"), "rb").read() + b"\n" +
                                   open(pki.path("ca.pem"), "rb").read())
    key = ec.generate_private_key(ec.SECP256R1())
    (d / "key.pem").write_bytes(key.private_bytes(  # the server's key, given by mistake
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (d / "notes.txt").write_bytes(b"ask the installer for the CA\n")
    pem = open(pki.path("ca.pem"), "rb").read()
    (d / "broken.pem").write_bytes(pem[:40] + b"!" + pem[41:200] + pem[-30:])
    (d / "empty.der").write_bytes(b"")
    pki.close()
    return d


def _load_under_cpython(path):
    try:
        trust.context(path)
        return "ok"
    except OSError as e:
        return str(e)


def _load_under_micropython(paths):
    exe, env = micropython("wheel")
    code = ("import sys, trust\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        trust.context(p)\n"
            "        print('ok')\n"
            "    except OSError as e:\n"
            "        print(e)\n")
    script = os.path.join(os.path.dirname(paths[0]), "load.py")
    with open(script, "w") as f:
        f.write(code)
    out = subprocess.run(exe + [script] + list(paths), env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("interp", ["cpython", "micropython"])
def test_the_agent_takes_a_ca_as_pem_or_der_and_refuses_anything_else(files, interp, mpy_dir):
    names = ACCEPTED + REFUSED + ("missing.der",)
    paths = [str(files / n) for n in names]
    got = ([_load_under_cpython(p) for p in paths] if interp == "cpython"
           else _load_under_micropython(paths))
    assert got[:len(ACCEPTED)] == ["ok"] * len(ACCEPTED), got
    for path, line in zip(paths[len(ACCEPTED):-1], got[len(ACCEPTED):-1]):
        assert line == "ca_file %s is not a certificate (PEM or DER)" % path
    assert got[-1] == "ca_file %s cannot be read" % paths[-1]


def test_pem_certificates_are_the_der_ones(files):
    der = open(str(files / "ca.der"), "rb").read()
    assert trust.certificates(open(str(files / "ca.pem"), "rb").read()) == [der]
    assert trust.certificates(der) == [der]
    bundle = trust.certificates(open(str(files / "bundle.pem"), "rb").read())
    assert len(bundle) == 2 and bundle[1] == der


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.parametrize("name", REFUSED)
def test_make_sim_and_evctl_refuse_what_is_no_certificate_once_at_start(files, name):
    path = str(files / name)
    why = "CA file %s holds no certificate (PEM: BEGIN CERTIFICATE, or DER)" % path
    for flag in ("--ca", "--ocpp-ca"):
        r = _run("tools.bench.sim", "--broker", "127.0.0.1:1", flag, path)
        assert r.returncode == 2 and r.stderr.strip().endswith("error: " + why), r
        assert "Traceback" not in r.stderr and r.stdout == ""
    r = _run("tools.evctl", "--broker", "127.0.0.1:1", "--ca", path, "read")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "evctl: error: argument --ca: %s (evctl --help)" % why], r


def test_evctl_takes_a_pem_bundle(files):
    # Past the check: the next thing it does is dial the broker (none at port 1).
    r = _run("tools.evctl", "--broker", "127.0.0.1:1", "--ca", str(files / "bundle.pem"), "read")
    assert r.returncode == 3 and "cannot reach the broker" in r.stderr, r
