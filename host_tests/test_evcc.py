"""docs/evcc.md's evcc recipes (MQTT, and HTTP for a charger with no broker), played as
written: evcc's side (host_tests/clients/evcc.py, emulated from evcc's source) reads the YAML
from the page, renders its payloads the way evcc does and runs its jq in a real jq, against
the agent.

- every status of the agent's real state reports maps as homeassistant.md says (the rig);
- a whole session against make sim's launcher on a broker: a vehicle plugs in, evcc throttles
  it to 8 A with the dynamic limit and renews it, pauses, resumes, dies, and the charger falls
  back to the failsafe within one tick of the ttl; the same over the charger's HTTP front
  with the http recipe;
- the `phases1p3p` keys: evcc's phase requests, as written, make the charger switch (never
  under load, judged by tools/bench/phase_invariants.py) on both interpreters in bench time,
  and in real time against the launcher with evcc's loop running.
"""
import json
import os
import re
from datetime import datetime, timezone

import pytest

from clients.evcc import ConfigError, Evcc, go_duration, read_once, read_recipe, write_once
from conftest import plug
from e2e import launched, reported_duty as duty, wait_for
from tools.bench import phase_invariants as pi
from tools.bench.broker import free_port
from tools.paths import ROOT

DOC = os.path.join(ROOT, "docs", "evcc.md")
DEVICE = "charger-1"  # the recipe's topics name make sim's default device
BASE = "ev-charger/%s/" % DEVICE
TIME_FACTOR = 0.1  # evcc's interval, watchdog and ttl run ten times faster; ratios kept
HEARTBEAT_S = 60  # protocol.md: the state is published at least every 60 s
FAILSAFE_KW = 1.38  # 6 A at 230 V


@pytest.fixture(scope="module")
def recipe():
    return read_recipe(DOC)


def charger_config(recipe):
    return recipe["chargers"][0]


def scaled(recipe):
    """The recipe with its limit's ttl scaled like evcc's own durations (the ratio kept)."""
    config = json.loads(json.dumps(recipe))
    maxcurrent = charger_config(config)["maxcurrent"]
    limit = maxcurrent.get("set", maxcurrent)  # the write, inside its watchdog
    key = "payload" if "payload" in limit else "body"  # mqtt's, http's
    found = re.findall(r'"ttl": *(\d+)', limit[key])
    assert len(found) == 1, limit[key]
    ttl = int(found[0]) * TIME_FACTOR
    limit[key] = re.sub(r'("ttl": *)\d+', r"\g<1>%g" % ttl, limit[key])
    return config, ttl


def test_the_recipe_is_complete_and_its_timings_fit_the_agent(recipe):
    c = charger_config(recipe)
    assert c["type"] == "custom" and recipe["loadpoints"][0]["charger"] == c["name"]
    reads = [c[k] for k in ("status", "enabled", "power", "energy")]
    for r in reads:
        assert r["source"] == "mqtt" and r["topic"] == BASE + "state", r
        # An outdated value must mean the charger is gone, not a quiet minute.
        assert go_duration(r["timeout"]) > HEARTBEAT_S, r
    assert c["enable"]["topic"] == BASE + "commands"
    wd = c["maxcurrent"]
    assert wd["source"] == "watchdog" and wd["set"]["topic"] == BASE + "limit"
    renew = go_duration(wd["timeout"]) / 2
    assert renew <= go_duration(recipe["interval"])  # renewed at least once per evcc loop
    ttl = int(re.search(r'"ttl": *(\d+)', wd["set"]["payload"]).group(1))
    assert ttl >= 3 * renew  # two lost renewals are not a dead evcc


def test_every_status_of_the_agent_maps_as_the_contract_says(rig, recipe):
    # homeassistant.md's evcc table, on the agent's real state reports; `enabled` is false
    # while idle and while no vehicle is there (docs/evcc.md says why).
    def view():
        rig.pump()
        state = rig.last_state()
        return state["data"]["state"], read_once(charger_config(recipe), state)

    s, v = view()
    assert s["status"] == "disconnected" and v[:2] == ("A", False)
    rig.ev(connected=True, request=False)
    rig.run(2000)
    s, v = view()
    assert s["status"] == "connected" and v[:2] == ("B", True)
    rig.ev(request=True)
    rig.run(120000)  # two minutes at 32 A: past the first 0.1 kWh the register keeps
    s, v = view()
    assert s["status"] == "charging" and v[:2] == ("C", True)
    assert v[2] == s["currentPower"] * 1000 and 7000 < v[2] < 7400  # W
    assert v[3] == s["lifetimeEnergy"] >= 0.1 and s["lifetimeEnergy"] != s["sessionEnergy"]
    rig.settings(max_charge_rate=1.0)  # below 6 A: held
    rig.run(8000)
    s, v = view()
    assert s["status"] == "suspended" and v[:2] == ("B", True)
    rig.settings(max_charge_rate=50)
    rig.command("idle")
    rig.run(8000)
    s, v = view()
    assert s["status"] == "idle" and v[:2] == ("B", False) and v[2] == 0
    rig.fault("pilot_short")
    rig.run(1000)
    s, v = view()
    assert s["status"] == "fault" and v[0] == "error: invalid status: F"  # evcc: an error


# -- the session, against make sim's launcher

@pytest.fixture
def charger(broker, tmp_path, mpy_dir):
    # On the broker make sim starts: Mosquitto, what evcc installations run, where it is
    # installed; amqtt otherwise.
    with launched(broker, tmp_path / "flash", device_id=DEVICE) as c:
        yield c


def iso_ms(stamp):
    t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return t.timestamp() * 1000


def replies_to(c, sent):
    """The agent's reply to each request evcc published (by requestId and path)."""
    out = []
    for _, topic, payload in sent:
        rid = json.loads(payload)["requestId"]
        path = "/" + topic.rsplit("/", 1)[0] + ("/limit" if topic.endswith("/limit") else "")
        with c.cond:
            mine = [r for r in c.replies.get(rid, []) if r["meta"]["path"] == path]
        out.append(mine)
    return out


def test_evcc_runs_a_session_and_a_dead_evcc_leaves_the_failsafe(broker, charger, recipe):
    c = charger
    config, ttl = scaled(recipe)
    evcc = Evcc(config, broker.address, TIME_FACTOR)
    lp = evcc.loadpoint
    period = go_duration(recipe["interval"]) * TIME_FACTOR  # evcc's loop

    def wait_seen(status, enabled, updates=1, timeout=20):
        # `updates` consecutive evcc loops that read this status and enabled
        wait_for(lambda: lp.seen[-updates:] == [(status, enabled)] * updates, timeout)

    assert c.request("settings", {"settings": {"failsafe_charge_rate": {
        "value": FAILSAFE_KW, "unit": "kw"}}})["meta"]["status"] == 200
    lp.target = 8  # what evcc's PV logic wants whenever a vehicle is there
    evcc.start()
    try:
        # No vehicle: evcc reads A and disabled, and sends nothing at all.
        wait_seen("A", False, updates=3)
        assert evcc.sent == []

        # The vehicle plugs in, not asking yet: B. evcc takes the charger's word that it is
        # enabled and sets its current: 8 A, as the dynamic limit.
        c.ev(connected=True, request=False)
        wait_seen("B", True)
        wait_for(lambda: any(t.endswith("/limit") for _, t, _ in evcc.sent), 10)
        wait_for(lambda: c.read()["state"]["limitedBy"] == "dynamic_limit", 10)
        # It asks: C, drawing 8 A (13.33 % duty).
        c.ev(request=True)
        wait_seen("C", True)
        c.wait(lambda: duty(c) == 13.33 and c.readings["current"] == 8.0, 10)
        state = c.read()
        s = state["state"]
        assert s["offeredCurrent"] == 8.0 and s["limitedBy"] == "dynamic_limit"
        dyn = s["limits"]["dynamic"]
        assert (dyn["value"], dyn["unit"], dyn["source"]) == (8, "a", "evcc")
        # evcc's meter: the charger's power in W (8 A at 230 V) and its lifetime register.
        wait_for(lambda: lp.readings and abs(lp.readings[-1][0] - 1840) <= 200, 15)
        with c.cond:
            powers = {st["data"]["state"]["currentPower"] * 1000 for st in c.states}
            energies = {st["data"]["state"]["lifetimeEnergy"] for st in c.states}
        assert {p for p, _ in lp.readings} <= powers and {e for _, e in lp.readings} <= energies

        # Renewals keep it, and write nothing to flash (a session's own records aside).
        def flash_writes():
            by_key = c.read()["diagnostics"]["flashWritesByKey"]
            return {k: n for k, n in by_key.items() if k not in ("session", "energy")}

        before, renewals = flash_writes(), len(evcc.sent)
        wait_for(lambda: len(evcc.sent) >= renewals + 2, 4 * period)
        assert flash_writes() == before

        # evcc pauses: the idle command; the charger reads idle, B and disabled to evcc.
        lp.target = 0
        wait_seen("B", False, timeout=15)
        c.wait(lambda: c.readings["contactor"] == "open" and duty(c) == 100.0, 10)
        assert c.read()["state"]["status"] == "idle"
        wait_for(lambda: lp.readings[-1][0] == 0, 15)
        # ... and resumes: the charge command, at the same 8 A.
        lp.target = 8
        wait_seen("C", True, timeout=20)
        c.wait(lambda: duty(c) == 13.33 and c.readings["contactor"] == "closed", 10)

        # What evcc saw, loop by loop, and what it sent: every request answered with success.
        seen = [st for i, (st, _) in enumerate(lp.seen) if i == 0 or lp.seen[i - 1][0] != st]
        assert seen == ["A", "B", "C", "B", "C"], lp.seen
        commands = [json.loads(p)["action"]["command"] for _, t, p in evcc.sent
                    if t.endswith("/commands")]
        assert commands == ["idle", "charge"]
        sent = list(evcc.sent)
        c.wait(lambda: all(replies_to(c, sent)), 5)  # a renewal may be on its way
        answers = replies_to(c, sent)
        assert all(len(r) == 1 and r[0]["success"] for r in answers), list(zip(sent, answers))
        print("evcc's log:", evcc.messages)
        assert not [m for m in evcc.messages if m[0] in ("ERROR", "FATAL")], evcc.messages
        renewed = [t for t, topic, _ in evcc.sent if topic.endswith("/limit")]
        gaps = [b - a for a, b in zip(renewed, renewed[1:])]
        print("evcc renewals: %d, gaps %s s" % (len(gaps) + 1, ["%.2f" % g for g in gaps]))
        assert len(gaps) >= 5 and min(gaps) > period / 2 and max(gaps) < ttl
        assert not any(e["type"] == "limit.expired" for e in c.events)  # alive: never expired
    finally:
        evcc.die()

    # evcc is dead. The last renewal the charger accepted sets the deadline; within one
    # 10 ms tick of it the failsafe applies: 1.38 kW is 6 A, 10 % duty.
    limit_sent = [x for x in evcc.sent if x[1].endswith("/limit")]
    c.wait(lambda: all(replies_to(c, limit_sent)), 5)  # the last one's reply is in
    deadline = max(iso_ms(r[0]["data"]["expiresAt"]) for r in replies_to(c, limit_sent))
    c.wait(lambda: any(e["type"] == "limit.expired" for e in c.events), ttl + 5)
    expired = [e for e in c.events if e["type"] == "limit.expired"]
    assert len(expired) == 1
    data = expired[0]["data"]
    assert data["source"] == "evcc" and data["failsafe"] == {"value": FAILSAFE_KW, "unit": "kw"}
    lag = iso_ms(data["expiredAt"]) - deadline
    print("failsafe %.0f ms after the ttl ran out (board time)" % lag)
    assert 0 <= lag <= 10
    c.wait(lambda: duty(c) == 10.0 and c.readings["current"] == 6.0, 10)
    s = c.read()["state"]
    assert s["limitedBy"] == "failsafe" and s["limits"]["failsafe"] is True
    assert s["limits"]["dynamic"] is None and s["status"] == "charging"


# -- the http recipe: a charger with no broker, against the same launcher's HTTP front

TOKEN = "evcc-http-token-0123456789"


@pytest.fixture(scope="module")
def http_recipe():
    return read_recipe(DOC, "http")


def test_the_http_recipe_uses_the_charger_api_paths_and_its_token(http_recipe):
    c = charger_config(http_recipe)
    assert c["type"] == "custom" and http_recipe["loadpoints"][0]["charger"] == c["name"]
    assert "mqtt" not in http_recipe  # no broker anywhere
    read = "http://192.168.1.20:80/ev-charger/%s" % DEVICE
    plugins = [c[k] for k in ("status", "enabled", "power", "energy", "enable")] + [
        c["maxcurrent"]["set"]]
    for p in plugins:  # every request carries the token, the same one (the YAML anchor)
        assert p["source"] == "http" and p["headers"] == plugins[0]["headers"], p
    assert plugins[0]["headers"]["Authorization"].startswith("Bearer ")
    assert all(p["uri"] == read and "method" not in p for p in plugins[:4])
    assert (c["enable"]["uri"], c["enable"]["method"]) == (read, "POST")
    assert c["maxcurrent"]["source"] == "watchdog"
    assert (plugins[5]["uri"], plugins[5]["method"]) == (read + "/limit", "POST")
    assert "requestId" not in c["enable"]["body"] + plugins[5]["body"]  # the charger's own


@pytest.fixture
def http_charger(broker, tmp_path, mpy_dir):
    # make sim's launcher with its HTTP front; evcc reaches it only over HTTP (the broker is
    # the test's own window on the charger).
    port = free_port()
    with launched(broker, tmp_path / "flash", "--http-port", str(port), "--api-token", TOKEN,
                  device_id=DEVICE) as c:
        yield c, port


def test_evcc_over_http_runs_a_session_and_a_dead_evcc_leaves_the_failsafe(
        http_recipe, http_charger):
    c, port = http_charger
    config, ttl = scaled(http_recipe)
    page_token = charger_config(http_recipe)["status"]["headers"]["Authorization"][7:]
    for p in [charger_config(config)[k] for k in ("status", "enabled", "power", "energy",
                                                  "enable")] + [
            charger_config(config)["maxcurrent"]["set"]]:
        p["headers"] = {"Authorization": "Bearer " + TOKEN}  # the launcher's, for the page's
    assert page_token != TOKEN
    evcc = Evcc(config, None, TIME_FACTOR, rewrite=lambda uri: uri.replace(
        "http://192.168.1.20:80", "http://127.0.0.1:%d" % port))
    lp = evcc.loadpoint

    def wait_seen(status, enabled, updates=1, timeout=20):
        wait_for(lambda: lp.seen[-updates:] == [(status, enabled)] * updates, timeout)

    def posted(tail):
        return [x for x in list(evcc.sent) if x[2] and x[1].endswith(tail)]

    assert c.request("settings", {"settings": {"failsafe_charge_rate": {
        "value": FAILSAFE_KW, "unit": "kw"}}})["meta"]["status"] == 200
    lp.target = 8
    evcc.start()
    try:
        wait_seen("A", False, updates=3)  # no vehicle: evcc reads A, disabled, sends nothing
        assert not [x for x in evcc.sent if x[1].endswith("/limit") or x[2]]
        c.ev(connected=True, request=False)
        wait_seen("B", True)
        wait_for(lambda: posted("/limit"), 10)
        wait_for(lambda: c.read()["state"]["limitedBy"] == "dynamic_limit", 10)
        c.ev(request=True)
        wait_seen("C", True)
        c.wait(lambda: duty(c) == 13.33 and c.readings["current"] == 8.0, 10)
        dyn = c.read()["state"]["limits"]["dynamic"]
        assert (dyn["value"], dyn["unit"], dyn["source"]) == (8, "a", "evcc")
        wait_for(lambda: lp.readings and abs(lp.readings[-1][0] - 1840) <= 200, 15)
        # evcc pauses (idle), then resumes (charge), both as the API page's commands.
        lp.target = 0
        wait_seen("B", False, timeout=15)
        c.wait(lambda: c.readings["contactor"] == "open" and duty(c) == 100.0, 10)
        lp.target = 8
        wait_seen("C", True, timeout=20)
        c.wait(lambda: duty(c) == 13.33 and c.readings["contactor"] == "closed", 10)
        seen = [st for i, (st, _) in enumerate(lp.seen) if i == 0 or lp.seen[i - 1][0] != st]
        assert seen == ["A", "B", "C", "B", "C"], lp.seen
        commands = [json.loads(x[2])["action"]["command"] for x in posted("/charger-1")]
        assert commands == ["idle", "charge"]
        assert [x[3] for x in posted("/charger-1")] == [202, 202]
        # Every request evcc sent (reads, commands, limits and their renewals) answered 2xx.
        assert all(200 <= x[3] < 300 for x in evcc.sent if x[3] is not None), evcc.sent
        assert not [m for m in evcc.messages if m[0] in ("ERROR", "FATAL")], evcc.messages
        renewed = [x[0] for x in posted("/limit")]
        gaps = [b - a for a, b in zip(renewed, renewed[1:])]
        print("evcc over http: %d requests, %d limit renewals" % (len(evcc.sent), len(gaps)))
        assert len(gaps) >= 3 and max(gaps) < ttl
    finally:
        evcc.die()
    # The last limit the charger took (its 200's expiresAt) sets the deadline; the failsafe
    # follows within one 10 ms tick of it.
    deadline = max(iso_ms(json.loads(x[4])["data"]["expiresAt"]) for x in posted("/limit"))
    c.wait(lambda: any(e["type"] == "limit.expired" for e in c.events), ttl + 5)
    data = [e for e in c.events if e["type"] == "limit.expired"][0]["data"]
    assert data["source"] == "evcc" and data["failsafe"] == {"value": FAILSAFE_KW, "unit": "kw"}
    lag = iso_ms(data["expiredAt"]) - deadline
    print("failsafe %.0f ms after the ttl ran out (board time)" % lag)
    assert 0 <= lag <= 10
    c.wait(lambda: duty(c) == 10.0 and c.readings["current"] == 6.0, 10)


# -- one phase or three: the phases1p3p keys

@pytest.fixture(scope="module")
def phases_recipe():
    return read_recipe(DOC, phase_switch=True)


def test_the_phases_keys_are_what_evcc_takes(phases_recipe):
    c = charger_config(phases_recipe)
    assert c["tos"] is True and c["phases1p3p"]["topic"] == BASE + "settings"
    without_tos = dict(c)
    del without_tos["tos"]
    with pytest.raises(ConfigError, match="tos: true"):  # evcc refuses phases1p3p without it
        read_once(without_tos, "{}")


def test_evcc_switches_the_phases_never_under_load(make_rig, phases_recipe):
    # In bench time on both interpreters: evcc's two requests, rendered from the page, each
    # answered 200 and followed by a whole switch under the bench-side checker.
    checker = pi.PhaseChecker(230)
    rig = make_rig(phases=3, phase_switch=True)
    step = rig.step
    rig.step = lambda: (step(), checker.observe(rig.bench, rig.powered))
    c = charger_config(phases_recipe)
    plug(rig, pi.SETTLE_MS + 2000)  # the first position after boot: three phases (auto)
    assert rig.read()["state"]["phasesInUse"] == 3
    for phases in (1, 3):
        rig.run(pi.MIN_INTERVAL_MS)
        topic, payload = write_once(c, "phases1p3p", phases)
        assert topic == BASE + "settings"
        reply = rig.request("settings", payload.encode())
        assert reply["meta"]["status"] == 200, reply
        assert reply["meta"]["requestId"].startswith("evcc-phases-")
        rig.run_until(lambda: rig.bench.phases_in_use == phases, pi.SETTLE_MS + 8000)
        rig.run_until(lambda: rig.bench.contactor, 5000)
        rig.run(3000)
        s = rig.read()
        assert s["settings"]["phases_mode"]["value"] == phases
        assert s["state"]["phasesInUse"] == phases and s["state"]["status"] == "charging"
    assert [e["data"]["phases"] for e in rig.events("phases.switched")] == [3, 1, 3]
    assert [closed for _, closed in checker.switches] == [True, False, True]


@pytest.fixture
def switching_charger(broker, tmp_path, mpy_dir):
    # A 3 kW cap to begin with: auto keeps one phase at boot (three cannot carry 6 A), so the
    # first switch is evcc's.
    with launched(broker, tmp_path / "flash", "--phases", "3", "--phase-switch",
                  "--default-kw", "3", device_id=DEVICE) as c:
        yield c


def test_evcc_drops_to_one_phase_and_back_to_three(broker, switching_charger, phases_recipe):
    c = switching_charger
    evcc = Evcc(phases_recipe, broker.address, TIME_FACTOR)
    lp = evcc.loadpoint
    lp.target, lp.target_phases = 16, 1
    evcc.start()
    try:
        c.ev(connected=True, request=False)
        c.wait(lambda: c.read()["settings"]["phases_mode"]["value"] == 1, 20)
        assert c.request("settings", {"settings": {"max_charge_rate": {
            "value": 50, "unit": "kw"}}})["meta"]["status"] == 200  # the owner's cap
        c.ev(request=True)
        c.wait(lambda: c.readings["contactor"] == "closed" and c.readings["current"] == 16.0, 15)
        assert c.read()["state"]["phasesInUse"] == 1 and c.readings["phases"] == 1
        assert not [e for e in c.events if e["type"] == "phases.switched"]

        lp.target_phases = 3  # the sun came out
        c.wait(lambda: any(e["type"] == "phases.switched" for e in c.events), 30)
        c.wait(lambda: c.readings["contactor"] == "closed" and c.readings["phases"] == 3, 15)
        s = c.read()["state"]
        assert s["phasesInUse"] == 3 and s["offeredCurrent"] == 16.0
        switched = [e["data"]["phases"] for e in c.events if e["type"] == "phases.switched"]
        assert switched == [3]
        sent = [x for x in evcc.sent if x[1].endswith("/settings")]
        assert [json.loads(p)["settings"]["phases_mode"]["value"] for _, _, p in sent] == [1, 3]
        ids = [json.loads(p)["requestId"] for _, _, p in sent]
        c.wait(lambda: all(c.replies.get(i) for i in ids), 5)
        assert [c.replies[i][0]["meta"]["status"] for i in ids] == [200, 200]
        assert ("DEBUG", "switched phases: 3p") in evcc.messages
        assert not [m for m in evcc.messages if m[0] in ("ERROR", "FATAL")], evcc.messages
    finally:
        evcc.die()
