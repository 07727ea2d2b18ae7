"""TLS end to end, with the pinned umqtt.simple 1.7.0 under micropython and Mosquitto with a
TLS listener: the CA, the certificates and the credentials are made here (pki.py). The agent
connects with a CA file, PEM or DER, and username/password, as boards/esp32/config.example.json
configures a board; a certificate from another CA, one for another host name and a plain-TCP
broker are refused with one log line while the charger goes on enforcing its cap; an HTTPS
webhook receiver is checked against the same CA."""
import re
import shutil
import signal
import ssl
import threading
import time
from http.server import HTTPServer

import pytest

from e2e import WEBHOOK_SECRET, Broker, Charger, InProcessSim, launch, online, stop
from e2e import WebhookReceiver as Receiver
from pki import Pki
from tools.bench.rig import InProcessRig, sim_board

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None,
    reason="mosquitto (with mosquitto_passwd) is not installed here")

AGENT = ("garage-1", "agent pass: 7")
BENCH = ("bench", "bench-pass")


@pytest.fixture(scope="module")
def pki():
    p = Pki(users=dict([AGENT, BENCH]))
    yield p
    p.close()


@pytest.fixture
def tls_broker(pki):
    b = Broker("mosquitto", tls=pki.server("ca"), password_file=pki.password_file).start()
    yield b
    b.stop()


def agent_args(pki, ca="ca.der"):
    return ["--ca", pki.path(ca), "--username", AGENT[0], "--password", AGENT[1]]


def broker_log(broker):
    with open(broker.dir + "/broker.log") as f:
        return f.read()


@pytest.mark.parametrize("ca", ["ca.pem", "ca.der"])
def test_agent_works_over_tls_with_username_and_password(pki, tls_broker, tmp_path, mpy_dir,
                                                         ca):
    # make sim --ca ca.pem, the form openssl and Mosquitto's docs hand out: before, the agent
    # retried for ever ("ca_file ... is not a DER certificate") and never came online.
    proc = launch(tls_broker, tmp_path / "flash", "--device-id", "tls-1", *agent_args(pki, ca))
    c = Charger(tls_broker.address, "tls-1", ca=pki.path("ca.der"), username=BENCH[0],
                password=BENCH[1])
    try:
        online(c)
        assert c.read()["state"]["status"] == "disconnected"
        assert c.cap(3.68)["meta"]["status"] == 200
        c.ev(connected=True, request=True)
        c.wait(lambda: c.readings and c.readings["contactor"] == "closed", 10)
        c.wait(lambda: c.readings["pilot"]["dutyPercent"] == 26.66, 5)
        reply = c.command("idle", actionId="act_tls")
        assert reply["meta"]["status"] == 202
        c.wait(lambda: any(e["type"] == "push.completed" for e in c.events), 10)
    finally:
        c.close()
        code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out
    assert "uplink:" not in out, out  # connected once, never lost
    # The broker saw the agent log in with its user name, over the TLS listener only.
    assert re.search(r"New client connected from 127\.0\.0\.1:\d+ as tls-1 .*u'garage-1'",
                     broker_log(tls_broker))


def test_wrong_password_is_refused_by_the_broker(pki, tls_broker, tmp_path, mpy_dir):
    proc = launch(tls_broker, tmp_path / "flash", "--device-id", "tls-2", "--ca",
                  pki.path("ca.der"), "--username", AGENT[0], "--password", "wrong")
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any(line.startswith("uplink") for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        reader.join(5)
    assert "not authorised" in broker_log(tls_broker)
    refusals = [line for line in lines if line.startswith("uplink")]
    assert refusals[0] == "uplink: connection lost: MQTTException(5,)\n", lines  # CONNACK 5


def _held_cap_while_refused(pki, tmp_path, capfd, agent_broker):
    # The cap was set before (persisted); the broker the agent is given must be refused.
    flash = tmp_path / "flash"
    flash.mkdir()
    assert InProcessRig(str(flash)).settings(max_charge_rate=3.68)["success"]
    bench_broker = Broker("mosquitto").start()
    sim = InProcessSim(["--broker", bench_broker.address, "--agent-broker", agent_broker,
                        "--state-dir", str(flash), "--device-id", "tls-r", *agent_args(pki)])
    try:
        with sim.sim.lock:
            sim.bench.set_ev({"connected": True, "request": True})
        deadline = time.monotonic() + 15
        while not (sim.bench.contactor and sim.bench.current > 1):
            assert time.monotonic() < deadline, "no charging without the broker"
            time.sleep(0.05)
        time.sleep(2)  # a few connection attempts
        duties = [d for _, d in sim.bench.duty_log if 0 < d < sim_board.Board.PWM_FULL]
        assert duties and max(duties) == 2666  # 16 A: the persisted 3.68 kW cap holds
        assert sim.sim.agent.proc.poll() is None
    finally:
        sim.close()
        bench_broker.stop()
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("uplink")]
    assert lines, "no log line about the refusal"
    assert len(set(lines)) == 1, lines  # one clear line, the same at every attempt
    return lines[0]


@pytest.mark.parametrize("server,reason", [
    ("rogue", "certificate of 127.0.0.1 refused: The certificate is not correctly signed by "
              "the trusted CA"),
    ("misnamed", "certificate of 127.0.0.1 refused: The certificate Common Name (CN) does not "
                 "match with the expected CN"),
])
def test_broker_certificate_that_fails_the_check_is_refused(pki, tmp_path, capfd, mpy_dir,
                                                            server, reason):
    broker = Broker("mosquitto", tls=pki.server(server),
                    password_file=pki.password_file).start()
    try:
        line = _held_cap_while_refused(pki, tmp_path, capfd, broker.address)
        log = broker_log(broker)
    finally:
        broker.stop()
    assert line == "uplink: connection lost: OSError('TLS: %s',)" % reason, line
    assert "New client connected" not in log  # no MQTT session, no credentials sent


def test_plain_tcp_broker_is_refused_when_tls_is_configured(pki, tmp_path, capfd, mpy_dir):
    broker = Broker("mosquitto").start()  # anonymous, no TLS
    try:
        line = _held_cap_while_refused(pki, tmp_path, capfd, broker.address)
        log = broker_log(broker)
    finally:
        broker.stop()
    assert "TLS: no handshake with 127.0.0.1" in line and "is it a TLS port?" in line, line
    assert "New client connected" not in log


def https_receiver(pki, label):
    http = HTTPServer(("127.0.0.1", 0), Receiver)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki.server(label)[1:])
    http.socket = ctx.wrap_socket(http.socket, server_side=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return http, "https://127.0.0.1:%d/hook" % http.server_address[1]


@pytest.mark.parametrize("label", ["ca", "rogue"])
def test_https_webhook_is_checked_against_the_ca(pki, tls_broker, tmp_path, capfd, mpy_dir,
                                                 label):
    Receiver.reset()
    http, url = https_receiver(pki, label)
    sim = InProcessSim(["--broker", tls_broker.address, "--state-dir", str(tmp_path / "flash"),
                        "--device-id", "tls-w", "--webhook-url", url, "--webhook-secret",
                        "whsec_" + WEBHOOK_SECRET, *agent_args(pki)])
    c = Charger(tls_broker.address, "tls-w", ca=pki.path("ca.der"), username=BENCH[0],
                password=BENCH[1])
    try:
        online(c)
        with sim.sim.lock:
            sim.bench.set_ev({"connected": True, "request": True})
        c.wait(lambda: sim.bench.contactor, 10)
        action = c.command("idle", actionId="act_https")["data"]
        c.wait(lambda: any(e["type"] == "push.completed" for e in c.events), 10)
        if label == "ca":
            c.wait(lambda: Receiver.accepted, 15)
            assert Receiver.accepted[0]["data"]["actionId"] == action["id"]
        else:
            time.sleep(3)  # the first attempt and a retry
            assert Receiver.accepted == []
    finally:
        c.close()
        sim.close()
        http.shutdown()
    if label == "rogue":
        out = capfd.readouterr().out
        assert ("webhook: OSError('TLS: certificate of 127.0.0.1 refused: The certificate is "
                "not correctly signed by the trusted CA',)") in out, out
