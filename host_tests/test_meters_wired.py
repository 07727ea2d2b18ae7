"""The Modbus meters wired into the charger (docs/meters.md): the EV meter drives power,
energy and the per-phase over-current check, a silent one makes the current unknown; the
mains meter balances the site with no network at all; every fault is counted, reported in
the device read and as events, never raised. On the bench's pymodbus meters, with the
firmware under CPython and under micropython (make_rig)."""
import pytest

from conftest import plug
from e2e import Broker, Charger, launch, stop
from tools.bench.bench import EV_METER_BASE_WH

SITE = {"id": "home", "fuse_current": 25, "phases": [1], "meter_timeout_s": 10,
        "fallback_current": 0, "margin_current": 1}


def meter_energy(rig):
    """What the bench's EV meter has counted since the bench started, Wh (its register)."""
    return rig.bench.peers["ev"].energy_wh - EV_METER_BASE_WH


def test_the_ev_meter_drives_power_energy_and_the_read(make_rig):
    rig = make_rig(phases=3, meters={"ev": "SDM630"})
    plug(rig, 4000, maxCurrent=16)
    rig.run(60000)
    read = rig.read()
    s = read["state"]
    assert (s["status"], s["currentPower"]) == ("charging", 11.04)  # 3 x 16 A x 230 V
    ev = read["meters"]["ev"]
    assert (ev["model"], ev["address"], ev["status"], ev["currents"]) == (
        "SDM630", 11, "ok", [16.0, 16.0, 16.0])
    assert ev["counts"]["ok"] >= 3 * 60 and sum(ev["counts"].values()) == ev["counts"]["ok"]
    assert ev["energyWh"] >= EV_METER_BASE_WH  # the meter's own register, from anywhere
    # The session counts the register's increments (a reading a second: within 2 s of
    # charging of the bench's own integral) and nothing of the register's value before.
    assert abs(s["sessionEnergy"] * 1000 - meter_energy(rig)) <= 2 * 11040 / 3600 + 1
    rig.ev(connected=False)
    rig.run(1000)
    ended = rig.events("session.ended")[0]["data"]["energy"]
    assert 0.17 < ended < 0.2  # 11.04 kW for about a minute
    lifetime = rig.read()["state"]["lifetimeEnergy"]
    assert lifetime == pytest.approx(ended, abs=0.011)  # 10 Wh steps: not 1234.5 kWh


def test_over_current_is_judged_on_each_phase(make_rig):
    # A three-phase vehicle offered 16 A that draws 20 A on L2 alone: its average (17.3 A)
    # is within the offer's 10 % + 0.5 A, its L2 is not.
    rig = make_rig(phases=3, meters={"ev": "SDM630"})
    rig.settings(max_charge_rate=11.04)  # 16 A on three phases
    plug(rig, 4000)
    rig.bench.phase_offset = [0.0, 1.5, 0.0]  # 17.5 A: within the margin
    rig.run(15000)
    assert rig.bench.contactor and rig.read()["state"]["fault"] is None
    rig.bench.phase_offset = [0.0, 4.0, 0.0]
    t0 = rig.bench.t
    rig.run_until(lambda: not rig.bench.contactor, 10000)
    assert 7000 <= rig.bench.t - t0 <= 9000  # 7 s over, after the next reading
    rig.run(50)
    assert rig.read()["state"]["fault"] == "OVERCURRENT"


def test_a_silent_ev_meter_makes_the_current_unknown_and_is_reported(make_rig):
    rig = make_rig(phases=3, meters={"ev": "SDM630"})
    rig.settings(max_charge_rate=11.04)  # 16 A on three phases
    plug(rig, 4000)
    rig.run(2000)
    peer = rig.bench.peers["ev"]
    peer.fault = "silent"
    rig.bench.phase_offset = [0.0, 8.0, 0.0]  # over the offer on L2, unseen
    rig.run(15000)
    read = rig.read()
    ev = read["meters"]["ev"]
    assert (ev["status"], ev["lastError"]) == ("lost", "timeout") and ev["counts"]["timeout"]
    assert "currents" not in ev and "ageMs" not in ev  # no reading to show
    # Unknown current, counted as load: still charging (the contactor is closed), nothing
    # judged against the offer, no power claimed.
    s = read["state"]
    assert (s["status"], s["fault"], s["currentPower"]) == ("charging", None, 0.0)
    lost = rig.events("meter.lost")
    assert len(lost) == 1 and lost[0]["data"]["meter"] == "ev"
    assert (lost[0]["data"]["model"], lost[0]["data"]["lastError"]) == ("SDM630", "timeout")
    stale_wh = rig.read()["state"]["sessionEnergy"]
    # Every other fault is counted too, never raised; then the meter is back.
    for fault, outcome in (("crc", "crc"), ("exception", "exception"), ("address", "wrong")):
        peer.fault = fault
        rig.run(2000)
        ev = rig.read()["meters"]["ev"]
        assert ev["lastError"] == outcome and ev["counts"][outcome] >= 1, fault
    assert ev["lastException"] == 6
    assert rig.read()["state"]["sessionEnergy"] == stale_wh  # nothing counted while stale
    peer.fault = None
    rig.run(2000)
    restored = rig.events("meter.restored")
    assert len(restored) == 1 and len(rig.events("meter.lost")) == 1
    # Back: the energy of the gap is counted at once (the register's increment), and the
    # over-current on L2 is judged again.
    assert rig.read()["state"]["sessionEnergy"] * 1000 == pytest.approx(meter_energy(rig),
                                                                        abs=4)
    rig.run_until(lambda: not rig.bench.contactor, 10000)
    rig.run(50)
    assert rig.read()["state"]["fault"] == "OVERCURRENT"


def test_a_pause_waits_for_a_reading_taken_after_it(make_rig):
    # The vehicle begins to draw just after the last reading (0 A, still fresh) and the
    # charger is told to pause at once: that reading says nothing of the vehicle now. The
    # contactor stays closed until a reading taken after the pause shows it let go.
    rig = make_rig(meters={"ev": "SDM630"})
    rig.ev(connected=True, request=True)
    rig.run_until(lambda: rig.bench.current >= 1.0, 10000)
    ev = rig.read()["meters"]["ev"]
    assert (ev["status"], ev["currents"][0]) == ("ok", 0.0)  # fresh, and from before
    assert rig.command("idle")["meta"]["status"] == 202
    before = rig.bench.current
    while rig.bench.contactor:
        before = rig.bench.current
        rig.step()
    assert before < 1.0, "opened with %.1f A flowing" % before
    assert rig.events("meter.lost") == []


def test_a_meter_that_answers_late_counts_from_its_first_reading(make_rig):
    # A meter that refuses every read from boot (a busy one: exception 06), through the
    # session's start, and answers later: the charger was unmetered meanwhile, and its
    # energies count from the first reading on, not from the 0 before it (the register
    # already holds 1234.5 kWh).
    rig = make_rig(meters={"ev": "SDM630"})
    peer = rig.bench.peers["ev"]
    peer.fault = "exception"
    plug(rig, 5000)
    read = rig.read()
    assert (read["meters"]["ev"]["status"], read["meters"]["ev"]["lastException"]) == (
        "lost", 6)
    assert read["state"]["status"] == "charging"  # the contactor closed: counted as load
    assert [e["data"]["lastError"] for e in rig.events("meter.lost")] == ["exception"]
    peer.fault = None
    counted_from = meter_energy(rig)
    rig.run(60000)
    rig.ev(connected=False)
    rig.run(1000)
    ended = rig.events("session.ended")[0]["data"]["energy"]
    assert ended * 1000 == pytest.approx(meter_energy(rig) - counted_from, abs=4)
    assert 0.1 < ended < 0.13  # 7.36 kW for about a minute
    assert rig.read()["state"]["lifetimeEnergy"] == pytest.approx(ended, abs=0.011)


def test_the_mains_meter_holds_the_fuse_with_no_network(make_rig):
    # One charger, its own mains meter, and no network at all: no site message reaches it
    # (the rig delivers none). A 13 A household step: the share falls on the next reading.
    rig = make_rig(site=SITE, meters={"ev": "SDM630", "mains": "SDM630"})
    rig.household = [3.0, 0.0, 0.0]
    plug(rig, 3000)
    rig.run(12000)  # the first reading announces, the next raises from the fallback
    assert rig.bench.current == pytest.approx(21.0, abs=0.2)  # 25 - 1 margin - 3 household
    assert rig.read()["state"]["limitedBy"] == "site"
    rig.household = [16.0, 0.0, 0.0]
    t0 = rig.bench.t
    rig.run_until(lambda: rig.bench.current + 16.0 <= 25.0, 5000)
    # The next reading (1 s), the worker's pass (100 ms), the vehicle (1 s), and a tick.
    assert rig.bench.t - t0 <= 1000 + 100 + 1000 + 10
    rig.run(5000)
    assert rig.bench.current == pytest.approx(8.0, abs=0.2)
    # It publishes the site's meter itself, and its record, for the site's other chargers.
    readings = [p for t, p, _ in rig.published if t == "site/home/meter"]
    assert readings[-1]["currents"] == [24.0, 0.0, 0.0] and type(readings[-1]["ts"]) is int
    assert any(t == "site/home/chargers/charger-1" for t, _, _ in rig.published)
    # The site's meter topic is not this charger's: a reading there changes nothing.
    rig.deliver("site/home/meter", b'{"currents": [0]}')
    rig.run(3000)
    assert rig.bench.current == pytest.approx(8.0, abs=0.2)
    # The mains meter silent: a lost reading, so the fallback (0 A) after meter_timeout_s.
    rig.bench.peers["mains"].fault = "silent"
    t0 = rig.bench.t
    rig.run_until(lambda: not rig.bench.pwm_on, 15000)
    assert 9000 <= rig.bench.t - t0 <= 11100
    assert rig.read()["state"]["limits"]["site"]["fallback"] is True
    assert [e["data"]["meter"] for e in rig.events("meter.lost")] == ["mains"]


# -- make sim as a user starts it: the fuse through a network outage, in real time

@pytest.mark.parametrize("network", ["cut", "none"])
def test_the_fuse_holds_through_a_network_outage(network, broker, tmp_path, agent_build):
    # One charger with its own mains meter (a site of one: it needs no broker), charging
    # behind a 25 A fuse; its broker dies mid-session ("cut"), or it has no network at all
    # ("none"); then the household steps up by 13 A and the meter falls silent. The bench's
    # own topics stay on the bench's broker.
    from test_site_sim import Site
    if network == "cut" and agent_build[1] != "wheel":
        pytest.skip("the cut on the 32-bit build: the none case covers it")  # (time)
    extra = ["--chargers", "1", "--site-fuse", "25", "--meter-timeout", "3",
             "--mains-meter", "SDM630", "--ev-meter", "SDM630", "--no-page"] + agent_build
    agent_broker = None
    if network == "cut":
        agent_broker = Broker(Broker.preferred()).start()
        extra += ["--agent-broker", agent_broker.address]
    else:
        extra += ["--uplink", "none"]
    proc = launch(broker, tmp_path / "flash", *extra)
    site = Site(broker.address)
    bench = Charger(broker.address, "charger-1")
    try:
        site.wait(lambda: site.readings, 30)  # the site bench is up
        site.publish("bench/site/home/household", {"currents": [3]})
        site.wait(lambda: site.readings[-1]["household"] == [3.0])
        bench.ev(connected=True, request=True)
        # 25 - 1 (margin) - 3 (household) = 21 A, with the meter read over Modbus.
        site.wait(lambda: abs(site.offers()["charger-1"] - 21) <= 0.3 and abs(
            site.readings[-1]["currents"][0] - 24) <= 0.5, 40)
        if agent_broker:
            # Its meter's reading on site/home/meter, for the site's other chargers.
            heard = Site(agent_broker.address)
            heard.wait(lambda: heard.meter and heard.meter[-1]["currents"][0] == 24.0)
            heard.close()
            agent_broker.stop()  # the network is gone for good
            agent_broker = None
        site.publish("bench/site/home/household", {"currents": [16]})  # an oven
        site.wait(lambda: site.readings[-1]["household"] == [16.0])
        t0 = len(site.readings)
        # The next reading, the worker, the vehicle's second: 8 A within a few readings.
        site.wait(lambda: abs(site.offers()["charger-1"] - 8) <= 0.3 and
                  site.readings[-1]["currents"][0] <= 25.0, 10)
        assert len(site.readings) - t0 <= 5
        site.publish("bench/site/home/meter", {"on": False})  # the mains meter silent
        site.wait(lambda: site.readings[-1]["meter"] is False and
                  site.offers()["charger-1"] == 0, 10)  # fallback_current 0 after 3 s
        site.publish("bench/site/home/meter", {"on": True})
        site.wait(lambda: abs(site.offers()["charger-1"] - 8) <= 0.3, 15)
    finally:
        bench.close()
        site.close()
        if agent_broker:
            agent_broker.stop()
        code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out


def test_the_http_front_reads_the_meters_and_their_faults(broker, tmp_path, agent_build):
    # The device read through the HTTP front is the MQTT read (one agent.read): the meter's
    # reading, its counts and its loss come through it as they do over MQTT.
    from e2e import HttpApi, InProcessSim, online, wait_for
    from tools.bench.broker import free_port
    token = "meters-test-token-0123456789"
    sim = InProcessSim(["--broker", broker.address, "--state-dir", str(tmp_path / "flash"),
                        "--device-id", "m-1", "--no-page", "--http-port", str(free_port()),
                        "--api-token", token, "--phases", "3", "--ev-meter", "B23",
                        *agent_build])
    api = HttpApi(sim.sim.http_port, token, "m-1")
    c = Charger(broker.address, "m-1")

    def ev_meter(status, currents=None):
        ev = api.read()["meters"]["ev"]
        return ev if ev["status"] == status and ev.get("currents") == currents else None

    try:
        online(c)
        with sim.sim.lock:
            sim.bench.set_ev({"connected": True, "request": True, "maxCurrent": 10})
        ev = wait_for(lambda: ev_meter("ok", [10.0, 10.0, 10.0]), 30)
        assert (ev["model"], ev["address"]) == ("B23", 11)
        assert c.read()["meters"]["ev"]["model"] == "B23"  # the same read over MQTT
        with sim.sim.lock:
            sim.bench.set_meter_fault("ev", "silent")
        ev = wait_for(lambda: ev_meter("lost"), 15)
        assert ev["lastError"] == "timeout" and ev["counts"]["timeout"] >= 1
    finally:
        c.close()
        sim.close()
