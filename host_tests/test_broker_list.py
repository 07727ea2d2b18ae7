"""A charger given several brokers (`"broker": [...]`, docs/uplinks.md, "Several brokers")
survives the death of the one it is on: it dials the next with its usual backoff, and
answers, reports and announces itself there as after any reconnect. Two real Mosquitto
brokers, the agent under both micropython builds (agent_build: the 64-bit wheel, and the
32-bit frozen build at an ESP32's 56K). The config's refusal of a malformed entry is
test_config.py's (CPython) and test_esp32_board.py's (the board's boot, under micropython)."""
import os
import signal
import socket
import threading
import time

import pytest

from e2e import Charger, InProcessSim, online, started, wait_for
from tools.bench.broker import Broker, free_port

pytestmark = pytest.mark.brokers("mosquitto")



def make_sim(tmp_path, *argv):
    return InProcessSim(["--state-dir", str(tmp_path / "flash"), "--device-id", "f-1", *argv])


def bench_set(sim, **ev):
    with sim.sim.lock:
        sim.bench.set_ev(ev)


def kill(broker):
    """The broker's process dies (SIGKILL): no goodbye to anyone, its retained messages gone
    (persistence false)."""
    os.kill(broker.proc.pid, signal.SIGKILL)
    broker.proc.wait(5)


def uplink_lines(capfd):
    return [line for line in capfd.readouterr().out.splitlines() if line.startswith("uplink")]


def test_the_first_broker_dies_mid_session_and_the_charger_goes_on_on_the_second(
        broker, tmp_path, agent_build, capfd):
    second = started("mosquitto")
    sim = make_sim(tmp_path, "--broker", "%s,%s" % (broker.address, second.address),
                   *agent_build)
    first_c, second_c = Charger(broker.address, "f-1"), Charger(second.address, "f-1")
    try:
        online(first_c)
        assert second_c.availability is None and not second_c.states  # all on the first
        assert first_c.cap(3.68)["success"]
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor and sim.bench.current > 1, 10)
        first_c.wait(lambda: "session.started" in [e["type"] for e in first_c.events], 10)
        seq = first_c.states[-1]["meta"]["seq"]
        opened = len(sim.bench.contactor_log)
        mark = len(sim.bench.duty_log)
        t0 = time.monotonic()
        kill(broker)
        online(second_c, timeout=20)  # availability "online" (retained) and a fresh state
        moved_s = time.monotonic() - t0
        assert second_c.states[-1]["meta"]["seq"] > seq
        # It answers there, and acts on what it is asked there.
        read = second_c.read()
        assert read["state"]["status"] == "charging", read
        assert second_c.cap(1.38)["success"]  # 6 A
        wait_for(lambda: sim.bench.duty_counts == 1000, 5)
        duties = [d for _, d in sim.bench.duty_log[mark:] if 0 < d < sim.bench.pwm_full]
        assert duties == [1000], duties  # 16 A held through the move, then the new cap
        assert len(sim.bench.contactor_log) == opened  # the session never broke
        # Its events go there: the bench's own client followed it too, and unplugs.
        wait_for(lambda: sim.sim.client.port == second.port and sim.sim.client.is_connected(),
                 20)
        second_c.ev(connected=False)
        second_c.wait(lambda: "session.ended" in [e["type"] for e in second_c.events], 10)
        # A client that comes later finds the retained state and availability there.
        late = Charger(second.address, "f-1")
        try:
            online(late, timeout=5)
        finally:
            late.close()
        assert sim.sim.agent.proc.poll() is None
        # Its last will went with its connection to the second: a power cut shows there.
        second_c.power(False)
        second_c.wait(lambda: second_c.availability == "offline", 10)
    finally:
        first_c.close()
        second_c.close()
        sim.close()
        second.stop()
    lines = uplink_lines(capfd)
    print("moved to the second broker in %.2f s (%s)" % (moved_s, agent_build))
    # One lost connection, then the very next dial was the second broker's (after the first
    # backoff, 0.5-0.75 s).
    assert lines == ["uplink: connected to %s" % broker.address,
                     lines[1], "uplink: connected to %s" % second.address], lines
    assert lines[1].startswith("uplink: connection lost: "), lines


def test_a_first_broker_dead_from_the_start_is_passed_over(broker, tmp_path, agent_build,
                                                           capfd):
    dead = "127.0.0.1:%d" % free_port()  # nothing listens there
    sim = make_sim(tmp_path, "--broker", "%s,%s" % (dead, broker.address), *agent_build)
    c = Charger(broker.address, "f-1")
    try:
        assert sim.sim.address == broker.address  # the bench's own client passed it over too
        online(c)
        assert c.read()["state"]["status"] == "disconnected"
        assert c.cap(3.68)["success"]
        bench_set(sim, connected=True, request=True)
        c.wait(lambda: "session.started" in [e["type"] for e in c.events], 10)
    finally:
        c.close()
        sim.close()
    lines = uplink_lines(capfd)
    assert lines[0].startswith("uplink: connection lost: OSError("), lines  # refused
    assert lines[1:] == ["uplink: connected to %s" % broker.address], lines


class Refuser:
    """A broker address that takes the connection and closes it at once, noting when."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.dials = []  # monotonic time of each connection
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.dials.append(time.monotonic())
            conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # ends the accept() (close() alone does not)
        except OSError:
            pass
        self.sock.close()


def test_every_broker_dead_the_backoff_holds_and_the_charger_is_safe(
        broker, tmp_path, agent_build):
    a, b = Refuser(), Refuser()
    sim = make_sim(tmp_path, "--broker", broker.address, "--agent-broker",
                   "%s,%s" % (a.address, b.address), *agent_build)
    revived = None
    try:
        # The control loop never waits for the dialling: unplug opens within 100 ms.
        latencies = []
        while len(a.dials) + len(b.dials) < 4:
            bench_set(sim, connected=True, request=True)
            wait_for(lambda: sim.bench.contactor and sim.bench.current > 1, 10)
            t0 = sim.bench.t
            bench_set(sim, connected=False)
            wait_for(lambda: not sim.bench.contactor, 5)
            latencies.append(sim.bench.contactor_log[-1][0] - t0)
        assert max(latencies) <= 100, latencies
        dials = sorted([(t, "a") for t in a.dials] + [(t, "b") for t in b.dials])[:4]
        assert [who for _, who in dials] == ["a", "b", "a", "b"], dials  # in order, round
        gaps_ms = [(t1 - t0) * 1000 for (t0, _), (t1, _) in zip(dials, dials[1:])]
        for k, gap in enumerate(gaps_ms):  # 0.5 s doubling, up to +50 %, whichever broker
            assert 500 * 2 ** k <= gap <= 750 * 2 ** k + 2000, gaps_ms
        assert sim.sim.agent.proc.poll() is None  # no crash
        # The fifth dial (to a, 4-6 s after the fourth) finds a broker there at last.
        a.close()
        revived = Broker("mosquitto", port=a.port).start()
        c = Charger(revived.address, "f-1")
        try:
            online(c, timeout=30)
            assert c.read()["state"]["status"] == "disconnected"
        finally:
            c.close()
        assert len(a.dials) == 2 and len(b.dials) == 2  # no dial beyond the backoff's
    finally:
        sim.close()
        a.close()
        b.close()
        if revived:
            revived.stop()
