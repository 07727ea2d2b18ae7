"""make deploy and make flash: nothing is written, here or on a board, until the input is
known good; no user file is ever deleted or overwritten; every failure is one clear line."""
import json
import os
import subprocess
import sys

import pytest
from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage

from pki import Pki
from tools.device import flash_firmware, manifest
from tools.device.deploy import MAIN, MARKER, build_tree
from tools.paths import BOARDS, ROOT, board_manifest

TEMPLATE = os.path.join(BOARDS, "esp32", "config.example.json")


def run(module, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


def one_error(r, prefix):
    """The failure is a single line starting with the tool's name, and no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r
    assert len(lines) == 1 and lines[0].startswith(prefix), r.stderr
    return lines[0]


def snapshot(d):
    return {os.path.relpath(os.path.join(p, f), d): open(os.path.join(p, f), "rb").read()
            for p, _, files in os.walk(d) for f in files}


@pytest.fixture(scope="module")
def pki():
    p = Pki()
    yield p
    p.close()


@pytest.fixture
def good(tmp_path, pki):
    """The template filled in, with its CA file beside it: a config deploy accepts."""
    cfg = json.load(open(TEMPLATE))
    cfg["password"] = "s3cret"
    cfg["wifi"] = {"ssid": "garage", "password": "wifi-s3cret"}
    (tmp_path / "ca.der").write_bytes(open(pki.path("ca.der"), "rb").read())
    path = tmp_path / "garage.local.json"
    path.write_text(json.dumps(cfg))
    return path, cfg


def write(tmp_path, cfg, name="install.json"):
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return str(path)


# -- deploy: the dry-run directory


def test_dry_run_refuses_a_directory_it_did_not_make(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my notes")
    before = snapshot(d)
    line = one_error(run("tools.device.deploy", "--dry-run", str(d)), "deploy: error:")
    assert "not empty and was not made by deploy" in line
    assert snapshot(d) == before
    # `--dry-run .` from a checkout is the same case.
    line = one_error(run("tools.device.deploy", "--dry-run", ".", cwd=str(d)), "deploy: error:")
    assert snapshot(d) == before


def test_dry_run_replaces_only_what_it_wrote_before(tmp_path, good):
    config, _ = good
    d = tmp_path / "tree"
    r = run("tools.device.deploy", "--dry-run", str(d), "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert (d / MARKER).exists() and (d / "lib" / "agent.mpy").exists()
    (d / "notes.txt").write_text("mine")
    (d / "lib" / "gone.mpy").write_text("from an older tree")  # listed as deploy's own
    with open(d / MARKER, "a") as f:
        f.write("lib/gone.mpy\n")
    r = run("tools.device.deploy", "--dry-run", str(d), "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert (d / "notes.txt").read_text() == "mine"
    assert not (d / "lib" / "gone.mpy").exists()
    assert (d / "config.json").read_bytes() == config.read_bytes()


def test_force_writes_beside_other_files_and_never_over_them(tmp_path):
    d = tmp_path / "project"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    r = run("tools.device.deploy", "--dry-run", str(d), "--force")
    assert r.returncode == 0, r.stderr
    assert (d / "notes.txt").read_text() == "mine" and (d / "main.py").exists()
    e = tmp_path / "other"
    e.mkdir()
    (e / "main.py").write_text("my own main.py")
    before = snapshot(e)
    line = one_error(run("tools.device.deploy", "--dry-run", str(e), "--force"),
                     "deploy: error:")
    assert "already has main.py" in line and snapshot(e) == before


# -- deploy: the config, checked before anything is written


def _bad(cfg, change):
    cfg = json.loads(json.dumps(cfg))
    change(cfg)
    return cfg


BAD_CONFIGS = [
    ("truncated", None, "is not valid JSON"),
    ("nested too deep", "[" * 4000, "is not valid JSON"),  # before: a RecursionError traceback
    ("adc2", lambda c: c["pins"].update(pilot_adc=4), "pins.pilot_adc must be on ADC1"),
    ("placeholder", lambda c: c["wifi"].update(password="CHANGE-ME"),
     "wifi.password is still CHANGE-ME"),
    ("phases", lambda c: c.update(phases=2), "phases must be 1 or 3"),  # firmware/charger/config.py
    ("input-only", lambda c: c["pins"].update(contactor=35), "pins.contactor must be an output"),
    ("same pin", lambda c: c["pins"].update(led=26), "are both GPIO26"),
    ("no ca file", lambda c: c.update(ca_file="missing.der"), "not beside the config"),
    ("ca outside", lambda c: c.update(ca_file="../ca.der"), "must be a file name on the board"),
    ("no ocpp ca file", lambda c: c.update(uplink="both", ocpp={
        "url": "wss://csms.example/ocpp", "ca_file": "csms.der"}), "ocpp.ca_file names csms.der"),
    # The HTTP front (docs/http.md): never served open, nor on a port that cannot be.
    ("http without its block", lambda c: c.update(uplinks=["mqtt", "http"]),
     "http must be an object with at least token"),
    ("http token short", lambda c: c.update(uplinks=["mqtt", "http"], http={
        "token": "fifteen-chars-x"}), "http.token must be 16-128 printable characters"),
    ("http token spaces", lambda c: c.update(uplinks=["http"], http={
        "token": "a token with spaces in it"}), "http.token must be 16-128 printable"),
    ("http port", lambda c: c.update(uplinks=["mqtt", "http"], http={
        "token": "a-long-random-secret-0123", "port": 70000}), "http.port must be 1-65535"),
    ("http port text", lambda c: c.update(uplinks=["http"], http={
        "token": "a-long-random-secret-0123", "port": "80"}), "http.port must be 1-65535"),
    ("http token placeholder", lambda c: c.update(uplinks=["http"], http={
        "token": "CHANGE-ME-CHANGE-ME"}), "http.token is still CHANGE-ME"),
    ("broker list", lambda c: c.update(broker=["mqtt-a.example.net:8883", "mqtt-b"]),
     'broker entry 2 must be HOST:PORT (a port 1-65535), not "mqtt-b"'),
]


@pytest.mark.parametrize("name,change,message", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_a_bad_config_is_refused_before_anything_is_written(tmp_path, good, name, change,
                                                            message):
    path, cfg = good
    if change is None:
        bad = write(tmp_path, path.read_text()[:150])
    elif isinstance(change, str):
        bad = write(tmp_path, change)
    else:
        bad = write(tmp_path, _bad(cfg, change))
    out = tmp_path / "tree"
    line = one_error(run("tools.device.deploy", "--dry-run", str(out), "--config", bad),
                     "deploy: error:")
    assert message in line
    assert not out.exists()
    # Before the board too: the config's error comes first, not the (missing) port's.
    line = one_error(run("tools.device.deploy", "--port", "/dev/ttyNOBOARD", "--config", bad),
                     "deploy: error:")
    assert message in line and "ttyNOBOARD" not in line


@pytest.mark.parametrize("key", ["ca_file", "ocpp.ca_file"])
def test_a_ca_file_that_holds_no_certificate_is_refused_before_anything_is_written(
        tmp_path, good, pki, key):
    # The broker's private key given for its CA: before, it went to the board, whose agent
    # then failed every connection attempt with the same line, for ever.
    path, cfg = good
    (tmp_path / "broker.key").write_bytes(open(pki.server()[2], "rb").read())
    if key == "ca_file":
        cfg["ca_file"] = "broker.key"
    else:
        cfg.update(uplink="both", ocpp={"url": "wss://csms.example/ocpp",
                                        "ca_file": "broker.key"})
    out = tmp_path / "tree"
    line = one_error(run("tools.device.deploy", "--dry-run", str(out), "--config",
                         write(tmp_path, cfg)), "deploy: error:")
    assert line == "deploy: error: %s: CA file %s holds no certificate (PEM: BEGIN " \
        "CERTIFICATE, or DER)" % (key, tmp_path / "broker.key"), line
    assert not out.exists()


@pytest.mark.parametrize("fronts,said", [
    (["http"], "device garage-1, HTTP port 8080, TLS with ca.der"),
    (["mqtt", "http"], "device garage-1, broker mqtt.example.net:8883, HTTP port 8080, "
                       "TLS with ca.der")])
def test_a_config_with_the_http_front_goes_into_the_tree(tmp_path, good, fronts, said):
    # A charger with no broker (uplinks ["http"]) and one with both: the tree carries the
    # HTTP front's modules, and deploy names the front.
    path, cfg = good
    cfg.update(uplinks=fronts, http={"token": "a-long-random-secret-0123", "port": 8080})
    if "mqtt" not in fronts:
        del cfg["broker"]
    config = write(tmp_path, cfg)
    out = tmp_path / "tree"
    r = run("tools.device.deploy", "--dry-run", str(out), "--config", config)
    assert r.returncode == 0, r.stderr
    assert "deploy: config %s: %s\n" % (config, said) in r.stdout
    assert (out / "config.json").read_bytes() == open(config, "rb").read()
    assert {"http_uplink.mpy", "http_request.mpy", "http_page.mpy"} <= set(
        os.listdir(out / "lib"))


def test_the_template_itself_is_refused_for_its_placeholders(tmp_path):
    line = one_error(run("tools.device.deploy", "--dry-run", str(tmp_path / "t"), "--config",
                         TEMPLATE), "deploy: error:")
    assert "password is still CHANGE-ME" in line and "wifi.ssid is still CHANGE-ME" in line


def test_the_tree_has_the_config_and_every_file_it_names(tmp_path, good, pki):
    path, cfg = good
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "client.der").write_bytes(b"client certificate")
    cfg["cert_file"] = "certs/client.der"
    pem = open(pki.path("ca.pem"), "rb").read()  # a CA as PEM goes as it is: the agent reads it
    (tmp_path / "csms.pem").write_bytes(pem)
    cfg.update(uplink="both", ocpp={"url": "wss://csms.example/ocpp", "ca_file": "csms.pem"})
    config = write(tmp_path, cfg)
    out = tmp_path / "tree"
    r = run("tools.device.deploy", "--dry-run", str(out), "--config", config)
    assert r.returncode == 0, r.stderr
    assert (out / "config.json").read_bytes() == open(config, "rb").read()
    assert (out / "ca.der").read_bytes() == (tmp_path / "ca.der").read_bytes()
    assert (out / "certs" / "client.der").read_bytes() == b"client certificate"
    assert (out / "csms.pem").read_bytes() == pem  # a block's file too (ocpp)
    assert "ca.der <- " in r.stdout and "certs/client.der <- " in r.stdout


def test_the_config_line_names_each_broker_or_the_csms(tmp_path, good):
    # Before, a config without MQTT (no "broker") stopped deploy with KeyError: 'broker'.
    path, cfg = good
    nodes = ["mqtt-a.example.net:8883", "mqtt-b.example.net:8883"]
    listed = write(tmp_path, dict(cfg, broker=nodes), "listed.json")
    ocpp = {k: v for k, v in cfg.items() if k != "broker"}
    ocpp.update(uplinks=["ocpp", "http"], ocpp={"url": "ws://csms.example:8180/ocpp"},
                http={"token": "0123456789abcdef", "port": 8080})
    for config, named in ((listed, "broker mqtt-a.example.net:8883, mqtt-b.example.net:8883, "
                                    "TLS with ca.der"),
                          (write(tmp_path, ocpp, "ocpp.json"),
                           "OCPP ws://csms.example:8180/ocpp, HTTP port 8080, TLS with ca.der")):
        out = tmp_path / ("tree-" + os.path.basename(config))
        r = run("tools.device.deploy", "--dry-run", str(out), "--config", config)
        assert r.returncode == 0, r.stderr
        assert "device garage-1, %s\n" % named in r.stdout, r.stdout
        assert (out / "config.json").read_bytes() == open(config, "rb").read()


def test_the_tree_compiles_for_xtensawin(tmp_path):
    tree = str(tmp_path / "t")
    written = build_tree(tree, "esp32", None, "xtensawin")
    lib = os.path.join(tree, "lib")
    libs = sorted(os.path.relpath(os.path.join(d, f), lib).replace(os.sep, "/")
                  for d, _, files in os.walk(lib) for f in files)  # packages: umqtt/, requests/
    assert sorted("lib/" + f for f in libs) == sorted(p for p in written if p.startswith("lib/"))
    assert {"esp32_board.mpy", "esp32_main.mpy", "esp32_pins.mpy", "agent.mpy"} <= set(libs)
    # One list: lib/ is what the board's image manifest freezes, without the port's own.
    frozen = manifest.files(board_manifest("esp32"), port=False)
    assert libs == sorted(os.path.splitext(e.target)[0] + ".mpy" for e in frozen)
    assert not [f for f in libs if f.startswith("sim")]
    assert open(os.path.join(tree, "main.py"), "rb").read() == MAIN


def test_no_config_is_warned_about(tmp_path):
    r = run("tools.device.deploy", "--dry-run", str(tmp_path / "t"))
    assert r.returncode == 0 and "warning: no CONFIG given" in r.stderr


def test_deploy_and_flash_name_a_missing_port_and_what_is_wrong(tmp_path, good):
    path, _ = good
    line = one_error(run("tools.device.deploy", "--port", "/dev/ttyNOBOARD", "--config",
                         str(path)), "deploy: error:")
    assert "/dev/ttyNOBOARD does not exist" in line and "it may be in use" not in line
    one_error(run("tools.device.deploy"), "deploy: error: no PORT given")
    one_error(run("tools.device.flash_firmware"), "flash: error: give both PORT and IMAGE")
    line = one_error(run("tools.device.flash_firmware", "--port", "/dev/ttyNOBOARD", "--image",
                         str(image(tmp_path, "boot.bin"))), "flash: error:")
    assert "/dev/ttyNOBOARD does not exist" in line
    for tool in ("tools.device.deploy", "tools.device.flash_firmware"):
        r = run(tool, "--help")
        assert r.returncode == 0 and "usage: make" in r.stdout


# -- flash: the image is checked before esptool may erase anything


def image(tmp_path, name, cls=ESP32FirmwareImage, addr=0x3FFF0000):
    """An image esptool's own classes build: a bootloader-like segment in RAM by default."""
    img = cls()
    img.segments = [ELFSection(b".dram0.data", addr, b"\0" * 64, 0)]
    img.entrypoint = 0x40080400
    path = tmp_path / name
    img.save(str(path))
    return path


def test_a_bad_image_is_refused_before_esptool_runs(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(flash_firmware, "esptool", lambda args: calls.append(args) or (0, ""))
    (tmp_path / "zero.bin").write_bytes(b"\0" * 4096)
    (tmp_path / "short.bin").write_bytes(b"\xe9\x03")
    cases = [
        (tmp_path / "zero.bin", "not an ESP32 firmware image"),
        (tmp_path / "short.bin", "damaged or truncated"),
        (image(tmp_path, "s3.bin", ESP32S3FirmwareImage, 0x3FCE3810), "built for esp32s3"),
        (image(tmp_path, "app.bin", addr=0x400D0020), "an application image"),
    ]
    for path, message in cases:
        assert flash_firmware.main(["--port", "/dev/null", "--image", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert calls == []  # esptool never ran: nothing was erased
    assert flash_firmware.main(["--port", "/dev/null", "--image",
                                str(image(tmp_path, "good.bin"))]) == 0
    assert calls == [["--chip", "esp32", "--port", "/dev/null", "write-flash", "--erase-all",
                      "-z", "0x1000", str(tmp_path / "good.bin")]]


def test_esptool_takes_our_command_and_its_own_error_is_reported(tmp_path):
    # The installed esptool parses write-flash --erase-all (no usage error), fails on the
    # port, and the person sees esptool's own sentence, not a cut last line.
    line = one_error(run("tools.device.flash_firmware", "--port", "socket://127.0.0.1:1",
                         "--image", str(image(tmp_path, "boot.bin"))), "flash: error:")
    assert "Could not open socket://127.0.0.1:1" in line, line
