"""Several chargers behind one supply, end to end in bench time (docs/site.md, "What works
means"): every agent runs the real firmware (in-process, and under micropython from the
compiled .mpy), one per charger, on one bench clock with the site meter and the site's MQTT
traffic simulated (tools/bench/site_rig.py). Each scenario is a few bench minutes; the long
scripted day is make bench's (tools/measure/site_day.py)."""
import json

import pytest

from tools.bench.rig import TICK_MS, UNIX_BASE_MS
from tools.bench.site import METER_PERIOD_MS
from tools.bench.site_rig import LATENCY_MS, build

S = 1000
SITE = {"id": "home", "fuse_current": 25, "meter_timeout_s": 10, "fallback_current": 0,
        "margin_current": 1}
TIMEOUT_MS = SITE["meter_timeout_s"] * S
# After a household step the next reading, its trip through the broker and the tick that
# applies it: the chargers' part of an overload (the rest is how fast the vehicles follow).
REACT_MS = METER_PERIOD_MS + LATENCY_MS + 2 * TICK_MS


def chargers(*follow_ms, ev_max=32):
    """Single-phase chargers on L1, charger-1 ... charger-N, vehicles following after these."""
    return {"charger-%d" % (k + 1): {"phases": 1, "lines": [1], "ev_max": ev_max,
                                     "follow_ms": ms} for k, ms in enumerate(follow_ms)}


@pytest.fixture(params=["cpython", "micropython"])
def make_site(request, tmp_path, mpy_dir):
    made = []

    def make(chargers, site=SITE, household=(3.0,)):
        sr = build(str(tmp_path / ("site%d" % len(made))), site, chargers, 1, request.param)
        made.append(sr)
        sr.site.set_household(list(household))
        sr.over = []  # (t, A) of every tick above the fuse
        sr.peak = 0.0
        sr.observers.append(lambda r: _watch(r, site["fuse_current"]))
        return sr

    yield make
    for sr in made:
        sr.close()


def _watch(sr, fuse):
    amps = max(sr.currents())
    sr.peak = max(sr.peak, amps)
    if amps > fuse + 0.01:
        sr.over.append((sr.t, amps))


def plug_all(sr, ms=40 * S):
    for cid in sr.rigs:
        sr.ev(cid, connected=True, request=True)
    sr.run(ms)


def near(value, target, tol=0.3):
    return abs(value - target) <= tol


def last_reading_before(sr, t):
    return max(r for r in sr.readings if r <= t)


def test_meter_loss_every_charger_at_its_fallback_within_the_timeout(make_site):
    site = dict(SITE, fallback_current=6)  # 2 x 6 A + a 13 A oven cannot trip 25 A
    sr = make_site(chargers(1000, 5000), site)
    plug_all(sr)
    # (24 - 3) / 2; within 0.4 A: a record a moment behind its charger's draw can leave one
    # 0.3 A lower, which a rise of less than 0.5 A does not undo.
    assert all(near(o, 10.5, 0.4) for o in sr.offers().values()), sr.offers()
    sr.site.meter_on = False  # the bridge dies
    off = sr.t
    sr.run_until(lambda: all(o <= 6.0 for o in sr.offers().values()), 15 * S)
    last = last_reading_before(sr, off)
    assert TIMEOUT_MS <= sr.t - last <= TIMEOUT_MS + S  # not before its time, and in time
    state = sr.rigs["charger-1"].read()["state"]
    assert state["limitedBy"] == "site" and state["offeredCurrent"] == 6.0
    assert state["limits"]["site"]["fallback"] is True
    assert state["limits"]["site"]["meterAgeMs"] >= TIMEOUT_MS
    sr.run(20 * S)  # still silent: the fallback holds, it never rises by itself
    assert all(o <= 6.0 for o in sr.offers().values())
    sr.site.meter_on = True  # back: the chargers recover by themselves
    sr.run(15 * S)
    assert all(near(o, 10.5) for o in sr.offers().values())
    assert not sr.over


def test_a_power_cut_the_others_take_its_share_and_it_comes_back(make_site):
    sr = make_site(chargers(1000, 2500, 5000))
    plug_all(sr)
    offers = sr.offers()
    assert all(near(o, 7.0) for o in offers.values())  # (24 - 3) / 3: fair within 1 A
    assert max(offers.values()) - min(offers.values()) <= 1.0
    sr.power_cut("charger-2")
    cut = sr.t
    others = ("charger-1", "charger-3")
    took = sr.run_until(lambda: all(sr.offers()[c] >= 10.0 for c in others),
                        TIMEOUT_MS + 10 * S)
    # Not before its record went stale (its share is held for it until then: the safe
    # side), and within meter_timeout_s + 5 s.
    assert TIMEOUT_MS - 2 * S <= took <= TIMEOUT_MS + 5 * S
    sr.run(10 * S)
    offers = sr.offers()
    assert near(offers["charger-1"], 10.5) and near(offers["charger-3"], 10.5)
    sr.power_on("charger-2")  # boots, announces itself, and gets its share back
    sr.run(30 * S)
    assert all(near(o, 7.0) for o in sr.offers().values())
    assert not sr.over and sr.t - cut > 40 * S


GARBAGE = [
    ("chargers/evil", b"not json"),
    ("chargers/evil", b'{"ts": 1, "phases": [1], "drawA": NaN, "wantsA": 1, "offeredA": 1}'),
    ("chargers/evil", b'{"ts": 1, "phases": [1], "drawA": -4, "wantsA": 32, "offeredA": 1}'),
    ("chargers/evil", b'{"ts": 1, "phases": [1], "drawA": 1e308, "wantsA": 32, "offeredA": 1}'),
    ("chargers/evil", b'{"ts": 1, "drawA": 0, "wantsA": 32, "offeredA": 0}'),
    ("chargers/evil", b'{"ts": 1, "phases": [1, 1], "drawA": 0, "wantsA": 32, "offeredA": 0}'),
    ("chargers/evil", b'{"ts": "1", "phases": [1], "drawA": 0, "wantsA": 32, "offeredA": 0}'),
    ("chargers/evil", b'[1, 2, 3]'),
    ("meter", b'{"currents": [NaN]}'),
    ("meter", b'{"currents": [-20]}'),
    ("meter", b'{"currents": [1e308]}'),
    ("meter", b'{"currents": []}'),
    ("meter", b'{"currents": "3"}'),
    ("meter", b'{"ts": 1}'),
    ("meter", b"\xff\xfe"),
    ("meter", b'{"currents": [3]}' + b" " * 600),
]


def test_a_peer_sending_garbage_is_ignored_and_counted(make_site):
    sr = make_site(chargers(1000, 2500))
    plug_all(sr)
    before = sr.offers()
    assert all(near(o, 10.5) for o in before.values())
    t0 = sr.t
    for name, payload in GARBAGE:
        sr.publish("site/home/" + name, payload)
        sr.run(300)
    # Another site's traffic is not this site's business: not trusted, not counted.
    sr.publish("site/other/meter", json.dumps({"currents": [0.0]}).encode())
    sr.run(10 * S)
    for cid, rig in sr.rigs.items():
        assert [t for t, _ in rig.bench.duty_log if t > t0] == []  # not one change
        assert rig.read()["state"]["limits"]["site"]["ignored"] == len(GARBAGE), cid
    assert not sr.over


def test_an_oven_step_on_two_chargers_and_back(make_site):
    # margin 2 A: the site runs at 23 A, so a 13 A step peaks at 36 A, under the 36.25 A
    # (1.45 x 25 A) at which a breaker may trip (docs/site.md: choosing margin_current).
    site = dict(SITE, margin_current=2)
    # charger-1's vehicle takes 3 s to follow a lower offer, charger-2's 1 s; charger-1 is
    # first in the rotation, so it is the one that keeps current and has to come down. (A
    # vehicle taking the full 5 s IEC 61851-1 allows keeps the site over for up to 6 s
    # after a step: the vehicle's time, which no charger-side rule shortens; docs/site.md,
    # "Measured". The chargers' part is asserted on its own: REACT_MS.)
    sr = make_site(chargers(3000, 1000), site, household=(2.0,))
    plug_all(sr)
    offers = sr.offers()
    assert all(near(o, 10.5) for o in offers.values())  # (23 - 2) / 2
    sr.run_until(lambda: sr.t % METER_PERIOD_MS == sr.meter_at_ms + TICK_MS, 2 * S)
    step = sr.t  # just after a reading: the chargers learn of it a whole period later
    sr.site.set_household([15.0])  # the oven
    sr.run_until(lambda: sr.offers()["charger-1"] <= 8.0 and sr.offers()["charger-2"] == 0,
                 REACT_MS + TICK_MS)
    assert sr.t - step <= REACT_MS  # 23 - 15 = 8 A: one charger at 8 A, the other held
    sr.run(30 * S)
    assert sr.over, "the step itself must show: the chargers cannot foresee it"
    assert sr.over[0][0] == step + TICK_MS and sr.over[-1][0] - step <= 5 * S
    assert sr.peak <= 1.45 * site["fuse_current"]
    assert max(sr.currents()) <= site["fuse_current"] - site["margin_current"] + 0.1
    n_over = len(sr.over)
    # The oven off: 13 A back, 90 % of it taken within 15 s, shared fairly again.
    drawn = sum(sr.draws().values())
    off = sr.t
    sr.site.set_household([2.0])
    gain = 21.0 - drawn
    sr.run_until(lambda: sum(sr.draws().values()) - drawn >= 0.9 * gain, 15 * S)
    sr.run(30 * S)
    offers = sr.offers()
    assert all(near(o, 10.5) for o in offers.values()), offers
    assert len(sr.over) == n_over and sr.t - off >= 30 * S  # no overload from the rise


def test_rotation_when_not_all_can_have_6_a(make_site):
    # 24 - 9 = 15 A for three: two at 7.5 A, the third held, in an order that turns every
    # 15 minutes of the meter's clock, so none waits for ever. The meter's clock runs 14
    # minutes ahead of the chargers' here, so the turn comes after a bench minute.
    sr = make_site(chargers(1000, 1000, 1000), household=(9.0,))
    sr.meter_clock_ms = 14 * 60 * S
    plug_all(sr)
    first = {c for c, o in sr.offers().items() if o > 0}
    assert len(first) == 2 and all(near(o, 7.5) for o in sr.offers().values() if o > 0)
    turn = 15 * 60 * S - (UNIX_BASE_MS + sr.meter_clock_ms + sr.t) % (15 * 60 * S)
    assert turn < 30 * S
    sr.run(turn + 20 * S)
    second = {c for c, o in sr.offers().items() if o > 0}
    assert len(second) == 2 and second != first
    assert not sr.over


# -- peers are not trusted (docs/site.md, "Peers are not trusted"; issue 22)

def forging(sr, draw, wants, every_ms=S):
    """A client on the broker publishing one charger record of its own every second (a
    forged one, or a buggy charger's), with the site's time in it."""
    def publish(r):
        if r.t % every_ms == 0:
            r.publish("site/home/chargers/x", json.dumps({
                "ts": UNIX_BASE_MS + r.t, "phases": [1], "drawA": draw, "wantsA": wants,
                "offeredA": 0}).encode())
    sr.observers.append(publish)


@pytest.mark.parametrize("draw,wants", [(40, 0), (12, 0), (2, 0), (5, 32)])
def test_a_forged_record_cannot_blind_the_chargers_to_the_household(make_site, draw, wants):
    # Issue 22 item 1: one record claiming 40 A made the household look 40 A smaller, and a
    # 12 A step of it held the site at 36 A on the 25 A fuse for as long as it was watched.
    # A claim the meter contradicts is household; one it cannot refute (12 A, 2 A) is
    # caught by the excess rule: whatever the records say, a site above the limit comes down.
    sr = make_site(chargers(1000, 2500))
    forging(sr, draw, wants)
    plug_all(sr, 60 * S)
    assert not sr.over, "steady state above the fuse: %s" % sr.over[:3]
    sr.run_until(lambda: sr.t % METER_PERIOD_MS == sr.meter_at_ms + TICK_MS, 2 * S)
    step = sr.t
    sr.site.set_household([15.0])
    sr.run(60 * S)
    assert sr.over and sr.over[-1][0] - step <= 5 * S, "above the fuse until t=%d (step %d)" % (
        sr.over[-1][0], step)
    assert sr.peak <= 1.45 * SITE["fuse_current"]
    assert max(sr.currents()) <= SITE["fuse_current"] - SITE["margin_current"] + 0.1
    assert max(sr.offers().values()) >= 6.0, "a charger that follows the rules starves"


@pytest.mark.parametrize("clock_ms", [UNIX_BASE_MS + 60 * S, UNIX_BASE_MS - 60 * S, None],
                         ids=["60 s ahead", "60 s behind", "never set"])
def test_a_charger_with_a_skewed_or_unset_clock_keeps_the_site_under_the_fuse(
        make_site, clock_ms):
    # Issue 22 item 2: freshness judged by the peer's ts on the local clock made the two
    # chargers see each other as stale, and each took all of the headroom in turn: 45 A
    # on the 25 A fuse, 28.9 s above it in 120 s, 17 episodes. Freshness is by arrival now.
    ch = chargers(1000, 1000)
    ch["charger-2"]["clock_ms"] = clock_ms
    sr = make_site(ch)
    plug_all(sr, 120 * S)
    assert not sr.over, "above the fuse %d ticks, peak %.1f A" % (len(sr.over), sr.peak)
    assert all(near(o, 10.5) for o in sr.offers().values()), sr.offers()  # (24 - 3) / 2


def test_chargers_that_stop_hearing_each_other_do_not_both_take_what_frees_up(make_site):
    # The broker stops passing the chargers' records (a full queue, an ACL): each sees the
    # other's record go stale. When the household then drops, each must not take all of
    # the current that frees up (they did: 30 A for 8.4 s, in 5 episodes).
    sr = make_site(chargers(1000, 1000), household=(9.0,))
    plug_all(sr)
    assert all(near(o, 7.5) for o in sr.offers().values())  # (24 - 9) / 2
    sr.lost = lambda topic: "/chargers/" in topic
    sr.run(15 * S)  # both records stale now
    sr.site.set_household([3.0])
    sr.run(30 * S)
    assert not sr.over, "above the fuse %d ticks, peak %.1f A" % (len(sr.over), sr.peak)
    assert sum(sr.offers().values()) >= 18.0  # the freed current is used, not wasted
