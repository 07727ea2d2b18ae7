"""Updates over the air (docs/ota.md): the firmware's OTA core under CPython and micropython.

host_tests/ota_cases.py holds the cases (trust, both install forms, power cuts at every
step, rollbacks); they run in this process and under both micropython builds, over
releases that the host tool (tools/ota.py) signs here. The bundle form's boot layer is also
booted for real under micropython, with new versions that fail to import, crash, never
reach their uplink, or work.
"""
import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding as pkcs1, rsa
from esptool.bin_image import ELFSection, ESP32FirmwareImage

import ota_cases
from tools import ota
from tools.bench.flash_model import make_image
from tools.paths import ROOT, micropython

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(ROOT, "tools", "bench")
RUNNING = ota_cases.RUNNING


def key(bits=3072):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def tar(members):
    """A ustar archive of (name, bytes, or a tarfile type: DIRTYPE, SYMTYPE) members, as
    the tool writes one."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data not in (tarfile.DIRTYPE, tarfile.SYMTYPE):
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                info.type = data
                info.linkname = "agent.mpy" if data == tarfile.SYMTYPE else ""
                t.addfile(info)
    return out.getvalue()


def bundle_files(main):
    return {"app_main.mpy": main, "agent.mpy": bytes(range(256)) * 6,
            "umqtt/simple.mpy": b"new mqtt " * 70}


def raw_sign(priv, em):
    """Textbook RSA with the private key: a signature over any encoding at all."""
    n = priv.public_key().public_numbers().n
    d = priv.private_numbers().d
    return pow(int.from_bytes(em, "big"), d, n).to_bytes(len(em), "big")


def b64(data):
    return base64.b64encode(data).decode()


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    """Keys, payloads and releases in a folder ota_cases.py loads (fixtures.json)."""
    d = tmp_path_factory.mktemp("ota")
    a, b, c, d4096 = key(), key(), key(), key(4096)
    trusted = [ota.public_text(k) for k in (a, b, d4096)]
    payloads = {}

    def put(name, data):
        path = d / name
        path.write_bytes(data)
        payloads[name] = str(path)
        return str(path)

    app = bundle_files(b"new main")
    members = [("umqtt/", tarfile.DIRTYPE)] + sorted(app.items())
    put("bundle.tar", tar(members))
    put("bundle_040.tar", tar(sorted(bundle_files(b"new main 0.4").items())))
    for what in ("import error", "crash", "no uplink"):
        put("bundle_%s.tar" % what.replace(" ", "_"), tar(sorted(bundle_files(what.encode())
                                                                 .items())))
    put("bad_member.tar", tar([("app_main.mpy", b"x"), ("../evil.mpy", b"y")]))
    put("symlink.tar", tar([("agent.mpy", b"x"), ("link.mpy", tarfile.SYMTYPE)]))
    put("py_file.tar", tar([("main.py", b"import agent")]))
    for what in ("good", "import_error", "crash", "no_uplink"):
        put("image_%s.bin" % what, make_image(("0.3.0 " + what).encode()))
    put("too_large.bin", make_image(b"\0" * ota_cases.APP_SIZE))
    put("not_bootable.bin", b"\x55" * 3000)

    releases = {}

    def signed(name, file, kind="bundle", version="0.3.0", downgrade=False, by=a):
        releases[name] = dict(ota.release(by, payloads[file], version, kind, downgrade),
                              payload=os.path.basename(payloads[file]))
        return releases[name]

    good = signed("bundle", "bundle.tar")
    signed("bundle_040", "bundle_040.tar", version="0.4.0")
    signed("bundle_key_b", "bundle.tar", by=b)
    signed("bundle_4096", "bundle.tar", by=d4096)
    signed("bundle_downgrade", "bundle.tar", downgrade=True)
    for what in ("import_error", "crash", "no_uplink"):
        signed("bundle_" + what, "bundle_%s.tar" % what)
        signed("image_" + what, "image_%s.bin" % what, "image")
    signed("bundle_bad_member", "bad_member.tar")
    signed("bundle_symlink", "symlink.tar")
    signed("bundle_py_file", "py_file.tar")
    signed("image", "image_good.bin", "image")
    signed("image_too_large", "too_large.bin", "image")
    signed("image_not_bootable", "not_bootable.bin", "image")

    # Refused before a byte is written: name -> the reason the charger gives.
    refusals = {}

    def refuse(name, reason, manifest=None, signature=None, base=good):
        releases[name] = dict(base, **{k: v for k, v in (("manifest", manifest),
                                                          ("signature", signature)) if v})
        refusals[name] = reason

    def sign_text(priv, text):
        return b64(priv.sign(text.encode(), pkcs1.PKCS1v15(), hashes.SHA256()))

    m = good["manifest"]
    sig = base64.b64decode(good["signature"])
    refuse("tampered_manifest", "bad_signature", m.replace('"0.3.0"', '"0.3.1"'))
    refuse("tampered_signature", "bad_signature",
           signature=b64(sig[:100] + bytes((sig[100] ^ 4,)) + sig[101:]))
    c_id = ota.ota_rsa.Key(ota.public_text(c)).id
    a_id = json.loads(m)["key"]
    refuse("unknown_key", "unknown_key", signed("_c", "bundle.tar", by=c)["manifest"],
           releases["_c"]["signature"])
    assert c_id in releases["unknown_key"]["manifest"]
    refuse("key_swap", "bad_signature", signature=sign_text(c, m))  # names A, signed by C
    refuse("image_given_a_bundle", "wrong_kind")
    refuse("bundle_given_an_image", "wrong_kind", base=releases["image"])
    refuse("downgrade", "downgrade", base=signed("_old", "bundle.tar", version="0.1.0"))
    refuse("same_version", "downgrade", base=signed("_same", "bundle.tar", version=RUNNING))
    fields = json.loads(m)
    for name, text in (
            ("extra_field", json.dumps(dict(fields, note="x"))),
            ("missing_field", json.dumps({k: v for k, v in fields.items() if k != "size"})),
            ("nested", json.dumps(dict(fields, downgrade=[False]))),
            ("too_long", json.dumps(dict(fields, version="0.3.0" + " " * 600))),
            ("not_json", m[:-1]),
            ("leading_zero", m.replace('"0.3.0"', '"0.03.0"')),
            ("size_is_a_bool", json.dumps(dict(fields, size=True))),
            ("uppercase_hash", json.dumps(dict(fields, sha256=fields["sha256"].upper()))),
            ("short_key_id", json.dumps(dict(fields, key=a_id[:8])))):
        refuse("bad_manifest_" + name, "bad_manifest", text, sign_text(a, text))
    refuse("manifest_not_text", "bad_manifest", 12345)
    refuse("signature_short", "bad_signature", signature=b64(sig[:-1]))
    refuse("signature_not_base64", "bad_signature", signature="***")
    refuse("signature_not_text", "bad_signature", signature=12345)
    n = a.public_key().public_numbers().n
    refuse("signature_above_modulus", "bad_signature",
           signature=b64((n + 1).to_bytes(384, "big")))
    refuse("signature_zero", "bad_signature", signature=b64(bytes(384)))
    for name in ("_c", "_old", "_same"):
        del releases[name]

    # Encodings other than the one PKCS#1 v1.5 SHA-256 encoding, each signed with key A.
    h = hashlib.sha256(m.encode()).digest()
    info = bytes.fromhex("3031300d060960864801650304020105000420")
    sha1_info = bytes.fromhex("3021300906052b0e03021a05000414")
    ff = b"\xff" * (384 - 54)
    padding_cases = {
        "control": b"\x00\x01" + ff + b"\x00" + info + h,
        "block_type_2": b"\x00\x02" + ff + b"\x00" + info + h,
        "leading_byte": b"\x01\x01" + ff + b"\x00" + info + h,
        "zero_in_padding": b"\x00\x01" + ff[:100] + b"\x00" + ff[101:] + b"\x00" + info + h,
        "short_padding_then_garbage": b"\x00\x01" + b"\xff" * 8 + b"\x00" + info + h
                                      + b"\xab" * (384 - 54 - 8),
        "no_separator": b"\x00\x01" + ff + b"\x01" + info + h,
        "digestinfo_without_null": b"\x00\x01" + ff + b"\xff\xff\x00"
                                   + bytes.fromhex("302f300b0609608648016503040201")
                                   + b"\x04\x20" + h,
        "sha1_digestinfo": b"\x00\x01" + ff + b"\xff" * 4 + b"\x00" + sha1_info + h[:20]
                           + b"\xff" * 12,
        "other_hash": b"\x00\x01" + ff + b"\x00" + info + hashlib.sha256(b"other").digest(),
    }
    padding = {}
    for name, em in padding_cases.items():
        assert len(em) == 384, name
        padding[name] = {"manifest": m, "signature": b64(raw_sign(a, em))}
    # The control is exactly what `cryptography` makes (PKCS#1 v1.5 is deterministic).
    assert padding["control"]["signature"] == good["signature"]

    bad_keys = [ota.public_text(key(2048)), "not base64!",
                b64((n - 1).to_bytes(384, "big")),  # even: no RSA modulus
                b64(b"\0" + n.to_bytes(384, "big"))]  # a leading zero byte
    files = {k: list(v) for k, v in sorted(app.items())}
    (d / "fixtures.json").write_text(json.dumps({
        "trusted": trusted, "releases": releases, "refusals": refusals, "padding": padding,
        "bad_keys": bad_keys, "bundle_files": files}))
    ota_cases.load(str(d))
    return d


def run_micropython(build, args, heap="8M", timeout=300, cwd=None):
    exe, env = micropython(build, [BENCH, HERE])
    return subprocess.run(exe + ["-X", "heapsize=" + heap] + args, env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(params=["cpython", "wheel", "unix32"])
def interpreter(request):
    if request.param != "cpython":
        request.getfixturevalue("mpy_dir" if request.param == "wheel" else "unix32")
    return request.param


@pytest.mark.parametrize("name", sorted(ota_cases.CASES))
def test_ota_core(name, interpreter, fixtures):
    if interpreter == "cpython":
        ota_cases.CASES[name]()
        return
    out = run_micropython(interpreter, [os.path.join(HERE, "ota_cases.py"), str(fixtures),
                                        name])
    assert out.returncode == 0 and out.stdout.strip() == "ok " + name, out.stdout + out.stderr


def test_verifying_a_manifest_fits_an_esp32_heap(mpy_dir, unix32):
    # The probe make bench runs (tools/measure/ota.py): on the 32-bit build with the agent
    # frozen, as on an ESP32 image, one RSA-3072 verification passes far inside the 56 KB
    # an ESP32 heap starts with.
    from tools.measure import ota as ota_cost
    cost = ota_cost.verify_cost()
    assert cost["wheel"] and cost["unix32"], cost
    assert cost["unix32"]["smallest_heap_kb"] <= 28 and cost["unix32"]["verify_alloc"] < 16384
    assert "32-bit frozen" in ota_cost.row(cost)[1]


def test_a_whole_update_fits_an_esp32_heap_and_its_wear_is_counted(mpy_dir, unix32):
    # make bench's other two rows: a whole update through the wired charger (the request,
    # the download, the verification, the switch) on the 32-bit frozen build at 56K, and
    # what one update writes to flash, on the flash models.
    from tools.measure import ota as ota_cost
    cost = ota_cost.update_cost((56,))
    assert cost[56] and cost[56]["accepted"] and cost[56]["restarted"], cost
    assert cost[56]["requested"] < 32 * 1024, cost
    assert "switched at 56K" in ota_cost.update_row(cost)[1]
    wear = ota_cost.update_wear(256 * 1024)
    # each sector of the image once, and one of otadata's two (set_boot's entry)
    assert wear["image"]["sectors_erased"] == -(-wear["image"]["size"] // 4096) + 1, wear
    assert wear["bundle"]["fs_units"] > 2 * wear["bundle"]["size"] * 0.8, wear  # staged, unpacked
    assert "sectors of 4 KB erased" in ota_cost.wear_row(wear)[1]


def test_no_single_c_call_does_the_whole_exponentiation(monkeypatch):
    # On the ESP32 (a GIL port) one pow() of 3072 bits holds the control thread for all of
    # it: the verification squares 16 times instead, one short C call each.
    import ota_rsa
    exponents = []
    monkeypatch.setattr(ota_rsa, "pow", lambda b, e, m: exponents.append(e) or pow(b, e, m),
                        raising=False)
    n = key().public_key().public_numbers().n
    s = n // 3
    assert ota_rsa.public_power(s, n) == pow(s, 65537, n)
    assert exponents == [2] * 16


# -- The host tool


def test_the_tool_signs_bundles_that_verify_and_refuses_what_is_not_one(tmp_path, fixtures):
    pem = str(tmp_path / "release.pem")
    assert ota.main(["keygen", "--out", pem]) == 0
    assert oct(os.stat(pem).st_mode & 0o777) == "0o600"
    assert ota.main(["keygen", "--out", pem]) == 2  # never overwritten
    bundle = str(tmp_path / "app.tar")
    with open(bundle, "wb") as f:
        f.write(tar(sorted(bundle_files(b"tool").items())))
    assert ota.main(["sign", "--key", pem, "--version", "0.3.0", "--kind", "bundle",
                     bundle]) == 0
    release = json.load(open(bundle + ".ota.json"))
    trusted = ota.ota_manifest.keys([ota.public_text(ota.load_key(pem))])
    m = ota.ota_manifest.check(release["manifest"], release["signature"], trusted, "bundle",
                               RUNNING)
    assert (m.size, m.sha256) == (os.path.getsize(bundle),
                                  hashlib.sha256(open(bundle, "rb").read()).digest())
    for args, message in (
            (["--version", "0.3", "--kind", "bundle", bundle], "MAJOR.MINOR.PATCH"),
            (["--version", "0.3.0", "--kind", "image", bundle], "not an ESP32 firmware image"),
            (["--version", "0.3.0", "--kind", "bundle", fixtures / "bad_member.tar"],
             "only .mpy files"),
            (["--version", "0.3.0", "--kind", "bundle", fixtures / "image_good.bin"],
             "not a bundle")):
        assert ota.main(["sign", "--key", pem] + [str(x) for x in args]) == 2


def test_the_tool_signs_an_application_image_not_a_full_firmware(tmp_path, capsys):
    pem = str(tmp_path / "k.pem")
    ota.keygen(pem, 3072)
    for name, addr, ok in (("app.bin", 0x400D0020, True), ("full.bin", 0x3FFF0000, False)):
        img = ESP32FirmwareImage()
        img.segments = [ELFSection(b".text", addr, b"\0" * 64, 0)]
        img.entrypoint = 0x40080400
        img.save(str(tmp_path / name))
        code = ota.main(["sign", "--key", pem, "--version", "1.0.0", "--kind", "image",
                         str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == (0 if ok else 2), err
        assert ok or "a full firmware" in err


def test_the_bundle_is_make_deploys_tree_and_the_firmware_reads_it(tmp_path):
    out = str(tmp_path / "app.tar")
    assert ota.main(["bundle", "--out", out]) == 0
    names = [n for n, _ in ota.check_bundle(out)]
    assert "agent.mpy" in names and "umqtt/simple.mpy" in names and "ota_boot.mpy" in names
    assert "esp32_main.mpy" in names and not [n for n in names if not n.endswith(".mpy")]
    first = open(out, "rb").read()
    assert ota.main(["bundle", "--out", out]) == 0
    assert open(out, "rb").read() == first  # the same sources give the same bytes


# -- The bundle form's boot layer, booted for real under micropython

APP = """\
import sys
import ota_boot
import ota_valid
import app_helper

VERSION = %r
DOES = %r


def run(root):
    print("running", VERSION, app_helper.NAME)
    if DOES == "crash":
        raise RuntimeError("crashed at boot")
    rec = ota_boot.read(ota_boot.FS, root)
    if type(rec) is not dict or rec["state"] != "trial":
        return
    trial = ota_valid.Trial(rec, 0, root)
    for s in range(700):
        verdict = trial.step(s * 1000, False, DOES == "good" and s >= 5)
        if verdict == ota_valid.VALID:
            print("valid")
            return
        if verdict == ota_valid.ROLL_BACK:
            print("rolling back")
            sys.exit(75)
"""
BOARD = """\
import sys
import ota_boot
root = sys.argv[1]
path = ota_boot.app_path(root)
if path:
    sys.path.insert(0, path)
try:
    import app_main
    app_main.run(root)
except Exception as e:
    print("crashed:", repr(e))
    sys.exit(1)
"""
INSTALL = """\
import sys, json
import ota_boot, ota_bundle, ota_manifest
root, release, file = sys.argv[1:4]
r = json.load(open(release))
m = ota_manifest.check(r["manifest"], r["signature"], ota_manifest.keys(r["keys"]), "bundle",
                       "0.2.0")
inst = ota_bundle.BundleInstall(m, root)
with open(file, "rb") as f:
    inst.receive(f, bytearray(1000))
inst.finish()
inst.activate("0.2.0")
print("installed", inst.slot)
"""


def compiled(tmp_path, name, files):
    """{name: .mpy bytes} of the sources, compiled by mpy-cross."""
    out = {}
    for module, source in files.items():
        src = tmp_path / ("%s_%s.py" % (name, module))
        src.write_text(source)
        mpy = tmp_path / ("%s_%s.mpy" % (name, module))
        subprocess.run(["mpy-cross", "-o", str(mpy), "-s", module + ".py", str(src)],
                       check=True)
        out[module + ".mpy"] = mpy.read_bytes()
    return out


def app(tmp_path, version, does):
    main = APP % (version, does)
    if does == "import_error":
        main = "import no_such_module\n" + main
    return compiled(tmp_path, "%s_%s" % (version, does),
                    {"app_main": main, "app_helper": "NAME = %r\n" % ("helper " + version)})


@pytest.fixture(params=["wheel", "unix32"])
def mp(request):
    request.getfixturevalue("mpy_dir" if request.param == "wheel" else "unix32")
    return request.param


@pytest.mark.parametrize("does,boots,reason", [
    ("good", 1, None), ("import_error", 3, "crashed"), ("crash", 3, "crashed"),
    ("no_uplink", 1, "uplink_not_reached")])
def test_a_real_bundle_boots_and_is_kept_or_rolled_back(tmp_path, mp, does, boots, reason):
    root = tmp_path / "board"
    lib = root / "lib"  # the version make deploy put there, 0.2.0
    lib.mkdir(parents=True)
    for name, data in app(tmp_path, "0.2.0", "good").items():
        (lib / name).write_bytes(data)
    pem = str(tmp_path / "k.pem")
    key_ = ota.keygen(pem, 3072)
    archive = tmp_path / "new.tar"
    archive.write_bytes(tar(sorted(app(tmp_path, "0.3.0", does).items())))
    release = dict(ota.sign(key_, str(archive), "0.3.0", "bundle"),
                   keys=[ota.public_text(key_)])
    (tmp_path / "release.json").write_text(json.dumps(release))
    for script, text in (("board.py", BOARD), ("install.py", INSTALL)):
        (tmp_path / script).write_text(text)
    exe, env = micropython(mp, [str(lib)])

    def run(*args):
        out = subprocess.run(exe + [str(tmp_path / args[0])] + [str(a) for a in args[1:]],
                             env=env, capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout + out.stderr

    code, out = run("install.py", root, tmp_path / "release.json", archive)
    assert code == 0 and "installed app_a" in out, out
    seen = [run("board.py", root) for _ in range(boots)]
    record = json.loads((root / "ota.json").read_text())
    if does == "good":
        assert seen[0][0] == 0 and "running 0.3.0 helper 0.3.0" in seen[0][1], seen
        assert "valid" in seen[0][1] and record["state"] == "valid"
        code, out = run("board.py", root)
        assert code == 0 and "running 0.3.0" in out and "valid" not in out
        return
    exits = {"import_error": 1, "crash": 1, "no_uplink": 75}[does]
    assert [c for c, _ in seen] == [exits] * boots, seen
    code, out = run("board.py", root)  # back on the deployed version
    assert code == 0 and out.strip() == "running 0.2.0 helper 0.2.0", out
    record = json.loads((root / "ota.json").read_text())
    assert (record["state"], record["reason"], record["boots"]) == ("rolled_back", reason,
                                                                    boots)
