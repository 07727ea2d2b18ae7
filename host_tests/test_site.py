"""Site balancing (docs/site.md): the allocation, and one charger's share as a ceiling, with the
fallback applied by the control loop itself when the meter goes silent. The several-charger
bench and the site day are in test_site_bench.py and make bench."""
import json

import pytest

import site_share as ss
from conftest import plug
from tools.bench.rig import InProcessRig, UNIX_BASE_MS


# -- the allocation: every charger computes the same shares from the same data

def test_equal_shares_capped_at_what_each_wants():
    ch = [("a", [1], 50, 320, True), ("b", [1], 50, 320, True), ("c", [1], 50, 160, True)]
    # fuse 25 A, margin 1 A, meter 24 A of which 15 A are the chargers: household 9 A.
    assert ss.shares(250, 10, [240], ch, 0) == {"a": 75, "b": 75, "c": 0}
    ch = [("a", [1], 0, 320, True), ("b", [1], 0, 60, True)]
    assert ss.shares(250, 10, [0], ch, 0) == {"a": 180, "b": 60}  # b wants 6 A, a takes the rest


def test_not_enough_for_all_at_6_a_rotates_every_15_minutes():
    ch = [("a", [1], 0, 320, True), ("b", [1], 0, 320, True), ("c", [1], 0, 320, True)]
    first = ss.shares(250, 10, [80], ch, 0)  # 16 A for three: two at 8 A
    assert sorted(first.values()) == [0, 80, 80]
    later = ss.shares(250, 10, [80], ch, 15 * 60000)
    assert sorted(later.values()) == [0, 80, 80] and later != first
    assert ss.shares(250, 10, [200], ch, 0) == {"a": 0, "b": 0, "c": 0}  # 4 A: nobody


def test_phases_limit_those_on_them():
    ch = [("a", [1, 2, 3], 0, 160, True), ("b", [2], 0, 320, True), ("c", [3], 0, 320, True)]
    got = ss.shares(250, 10, [0, 100, 0], ch, 0)  # L2 has 10 A of household
    assert got["a"] == got["b"] == 70  # L2's 14 A shared by a and b
    assert got["c"] == 240 - 70  # L3: what a leaves


def test_a_stale_record_counts_as_household():
    fresh = [("a", [1], 100, 320, True), ("b", [1], 100, 320, True)]
    stale = [("a", [1], 100, 320, True), ("b", [1], 100, 320, False)]
    assert ss.household([300], fresh) == [100]
    assert ss.household([300], stale) == [200]  # b's 10 A is not subtracted: the safe side
    assert ss.shares(250, 10, [250], stale, 0) == {"a": 90}  # 24 A - 15 A of household


def test_a_claim_the_meter_contradicts_counts_as_household():
    # Issue 22 item 1: a record claiming 40 A on a phase the meter shows 24 A on made the
    # household -37 A. Claims count, smallest first, only as far as the meter shows them.
    ch = [("a", [1], 105, 320, True), ("b", [1], 105, 320, True), ("x", [1], 400, 0, True)]
    assert ss.household([240], ch) == [30]  # x's claim is not subtracted
    assert ss.shares(250, 10, [240], ch, 0) == {"a": 105, "b": 105}
    # A claim the meter can hold is subtracted (it cannot be refuted), never below 0.
    ch[2] = ("x", [1], 20, 320, True)
    assert ss.household([240], ch) == [10]
    assert ss.household([100], ch) == [80]  # 20 fits; a's and b's 10.5 A each do not
    assert ss.household([105], ch[:1]) == [0]
    # ... and only as far as its charger says it wants current: one not asking (wantsA 0)
    # draws nothing for long, so its claimed draw is household.
    assert ss.household([240], ch[:2] + [("x", [1], 20, 0, True)]) == [30]
    assert ss.household([240], ch[:2] + [("x", [1], 20, 6, True)]) == [30 - 6]
    # Per phase: 6 A on each of three phases, where the meter shows 0, 5 and 0 A.
    assert ss.household([0, 50, 0], [("a", [1, 2, 3], 60, 320, True)]) == [0, 50, 0]


def test_above_the_limit_each_lowers_by_its_part_of_the_excess():
    # Whatever the records say: a forged 12 A claim the meter cannot refute hides 12 A of
    # household (the shares fall too little), but the meter is 12 A above the limit, and
    # each charger takes its part of that off its draw, in proportion to its draw.
    ch = [("a", [1], 105, 320, True), ("b", [1], 105, 320, True), ("x", [1], 120, 120, True)]
    meter = [360]  # household 15 A, the chargers 21 A: 12 A above 24 A
    assert ss.shares(250, 10, meter, ch, 0) == {"a": 70, "b": 70, "x": 70}  # fooled by 5 A
    cuts = [ss.cut(240, meter, ch, c) for c in ("a", "b")]
    assert cuts == [105 - 39, 105 - 39]  # 12 A x 10.5 / 33 each, rounded up: 3.9 A
    assert [ss.cut(240, meter, ch, c, whole=True) for c in ("a", "b")] == [0, 0]
    assert ss.cut(240, [240], ch, "a") is None  # at the limit: nothing to take off
    # Alone (the others stale or unheard), a charger takes off all of the excess.
    alone = [("a", [1], 105, 320, True), ("b", [1], 105, 320, False)]
    assert ss.cut(240, [300], alone, "a") == 105 - 60
    assert ss.cut(240, [400], alone, "a") == 0


def test_two_chargers_that_see_each_other_as_stale_do_not_take_what_is_free():
    # Issue 22 item 2: each took all of the free current (each saw only itself asking). A
    # stale peer that asked for more may have risen since, unheard: what it asked for is
    # kept for it (site_balance forgets it a timeout later, and then rises by halves).
    a = [("a", [1], 0, 320, True, 0, 0), ("b", [1], 0, 320, False, 0, 0)]
    b = [("a", [1], 0, 320, False, 0, 0), ("b", [1], 0, 320, True, 0, 0)]
    meter = [30]  # 21 A free below 24 A
    up_a = ss.room(240, meter, a, ss.shares(250, 10, meter, a, 0), "a", 0)
    up_b = ss.room(240, meter, b, ss.shares(250, 10, meter, b, 0), "b", 0)
    assert up_a + up_b <= 210 and up_a == up_b == 0
    b = [("a", [1], 0, 60, False, 0, 0), ("b", [1], 0, 320, True, 0, 0)]  # a asked 6 A
    assert ss.room(240, meter, b, ss.shares(250, 10, meter, b, 0), "b", 0) == 150
    # A stale record the meter refutes (a charger gone while drawing 10 A, its current no
    # longer on the meter) keeps nothing back.
    gone = [("a", [1], 0, 320, True, 0, 0), ("b", [1], 100, 320, False, 100, 100)]
    assert ss.room(240, meter, gone, ss.shares(250, 10, meter, gone, 0), "a", 0) == 210


def test_a_split_too_thin_to_offer_goes_to_one_charger_at_a_time():
    # Shares that promise more than is free (a record the meter cannot refute) would split
    # 9 A free into two 4.5 A rises, neither of which can be offered: one takes it, in the
    # rotation's order, so that neither starves.
    ch = [("a", [1], 0, 320, True, 0, 0), ("b", [1], 0, 320, True, 0, 0)]
    share = {"a": 70, "b": 70}
    rooms = [ss.room(240, [150], ch, share, c, 0) for c in ("a", "b")]
    assert sorted(rooms) == [0, 70]
    later = [ss.room(240, [150], ch, share, c, ss.ROTATE_MS) for c in ("a", "b")]
    assert later == rooms[::-1]


# -- one charger with a site: the share as a ceiling

SITE = {"id": "home", "fuse_current": 25, "phases": [1], "meter_timeout_s": 10,
        "fallback_current": 6, "margin_current": 1}


class Published(list):
    def __call__(self, topic, payload, retain, qos=1):
        self.append((topic, json.loads(payload) if payload else payload, retain))


@pytest.fixture
def site_rig(tmp_path):
    from site_balance import SiteBalancer
    rig = InProcessRig(str(tmp_path))
    rig.agent.board.config["site"] = SITE
    balancer = SiteBalancer(dict(rig.agent.board.config), rig.agent)
    rig.agent.limits.site = balancer
    rig.balancer = balancer
    rig.out = Published()
    return rig


def meter(rig, others):
    # The site meter: everything else on the phase plus what this charger draws now.
    body = {"ts": UNIX_BASE_MS + rig.bench.t,
            "currents": [others[0] + rig.bench.current]}
    rig.balancer.on_message("site/home/meter", json.dumps(body).encode())
    rig.balancer.service(rig.out, rig.bench.t)


def readings(rig, others):
    # After a boot the first reading only announces the charger (its record goes out; the
    # share stays at the fallback); the share rises on the next one, a second later.
    meter(rig, others)
    rig.run(1000)
    meter(rig, others)


def test_the_share_binds_and_follows_the_household(site_rig):
    rig = site_rig
    plug(rig, 1000)
    meter(rig, [9.0])  # household 9 A: 15 A for this charger, but not yet
    s = rig.read()["state"]
    assert s["limits"]["site"]["share"] == 6.0 and rig.out[-1][1]["wantsA"] == 32.0
    rig.run(1000)
    meter(rig, [9.0])
    rig.run(6000)  # from the 6 A fallback up: a raise, at the pilot's 5 s pace
    s = rig.read()["state"]
    assert s["limitedBy"] == "site" and s["offeredCurrent"] == 15.0
    assert s["limits"]["site"]["share"] == 15.0 and s["limits"]["site"]["fallback"] is False
    record = rig.out[-1]
    assert record[0] == "site/home/chargers/charger-1" and record[2] is True
    assert record[1]["phases"] == [1] and record[1]["wantsA"] == 32.0
    # A kettle: the meter jumps; the share falls at once.
    meter(rig, [9.0 + 9.0])
    rig.run(100)
    assert rig.read()["state"]["offeredCurrent"] == 6.0  # 24 - 18 A of household


def test_no_fresh_reading_means_the_fallback_within_the_timeout(site_rig):
    rig = site_rig
    plug(rig, 1000)
    readings(rig, [0.0])
    rig.run(6000)
    assert rig.read()["state"]["offeredCurrent"] == 24.0
    t_last = rig.bench.t - 6000  # when the reading arrived
    rig.run_until(lambda: rig.bench.duty_counts == 1000, 12000)  # 6 A: the fallback
    assert 10000 <= rig.bench.t - t_last <= 10000 + 20  # applied by the control loop
    s = rig.read()["state"]
    assert s["limitedBy"] == "site" and s["limits"]["site"]["fallback"] is True


@pytest.mark.parametrize("payload", [
    b"not json", b"[]", b'{"currents": "x"}', b'{"currents": [null]}', b'{"currents": [-1]}',
    b'{"currents": [1e999]}', b'{"currents": [99999]}', b'{"currents": []}', b'{"ts": 1}',
    b'{"currents": [1, 2]}', b"x" * 600])
def test_a_malformed_meter_reading_is_ignored_and_counted(site_rig, payload):
    rig = site_rig
    plug(rig, 1000)
    meter(rig, [20.0])  # 4 A: suspended
    rig.run(1000)
    rig.balancer.on_message("site/home/meter", payload)
    rig.balancer.service(rig.out, rig.bench.t)
    rig.run(500)
    s = rig.read()["state"]
    assert s["offeredCurrent"] == 0 and s["limits"]["site"]["ignored"] == 1


@pytest.mark.parametrize("record", [
    {"ts": 1, "phases": [4], "drawA": 1, "wantsA": 1, "offeredA": 1},
    {"ts": 1, "phases": [1], "drawA": -3, "wantsA": 1, "offeredA": 1},
    {"ts": 1, "phases": [1], "drawA": "3", "wantsA": 1, "offeredA": 1},
    {"ts": "now", "phases": [1], "drawA": 3, "wantsA": 1, "offeredA": 1},
    {"phases": [1], "drawA": 3, "wantsA": 1, "offeredA": 1},
    {"ts": 1, "phases": [], "drawA": 3, "wantsA": 1, "offeredA": 1},
])
def test_a_peer_sending_garbage_is_ignored(site_rig, record):
    rig = site_rig
    plug(rig, 1000)
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(record).encode())
    readings(rig, [9.0])
    rig.run(6000)
    s = rig.read()["state"]
    assert s["offeredCurrent"] == 15.0 and s["limits"]["site"]["ignored"] == 1


def test_a_fresh_peer_shares_and_a_stale_one_stops_counting(site_rig):
    rig = site_rig
    plug(rig, 1000)
    now = UNIX_BASE_MS + rig.bench.t
    peer = {"ts": now, "phases": [1], "drawA": 10.0, "wantsA": 32.0, "offeredA": 12.0}
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(peer).encode())
    readings(rig, [19.0])  # household 9 A + the peer's 10 A
    rig.run(1000)
    # 15 A shared by two: 7.5 A each; but the peer still draws 10 A and was offered 12 A,
    # so only 3 A are free now: a rise does not take current another charger has yet to
    # release, nor what it was offered and its vehicle may still take.
    assert rig.read()["state"]["offeredCurrent"] == 0
    assert rig.read()["state"]["limits"]["site"]["share"] == 3.0
    now = UNIX_BASE_MS + rig.bench.t
    peer = dict(peer, ts=now, drawA=7.5, offeredA=7.5)  # it lowered to its share
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(peer).encode())
    meter(rig, [16.5])
    rig.run(100)
    # Its vehicle may yet take the 12 A it was offered, for 6 s after that offer: not free.
    assert rig.read()["state"]["limits"]["site"]["share"] == 3.0
    rig.run(6000)
    peer = dict(peer, ts=UNIX_BASE_MS + rig.bench.t)
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(peer).encode())
    meter(rig, [16.5])
    rig.run(6000)
    assert rig.read()["state"]["offeredCurrent"] == 7.5
    rig.run(12000)  # the peer's record goes stale: its 7.5 A count as household now
    meter(rig, [19.0])
    rig.run(100)
    # 19 A besides this charger's own draw, the stale peer's included: 24 - 19 = 5 A for
    # this charger alone, under 6 A, so nothing is offered (the safe side for a peer that
    # vanished while still drawing).
    assert rig.read()["state"]["offeredCurrent"] == 0


def test_a_rise_takes_only_the_current_that_is_free_now():
    # a's share fell from 15 A to 9 A, but its vehicle still draws 15 A (it has 5 s to
    # follow); b, just plugged in, may not take the 6 A a has yet to release.
    ch = [("a", [1], 150, 320, True, 90, 150), ("b", [1], 0, 320, True, 0, 0)]
    meter = [150 + 60]  # a's 15 A and 6 A of household: 3 A free below 24 A
    share = ss.shares(250, 10, meter, ch, 0)
    assert share == {"a": 90, "b": 90}
    assert ss.room(240, meter, ch, share, "b", 0) == 30  # b: only the free 3 A
    assert ss.room(240, meter, ch, share, "a", 0) == 90  # a: no rise, it keeps its offer
    # Two rising on one phase split what is free in proportion to what each still needs.
    ch = [("a", [1], 30, 320, True, 30, 30), ("b", [1], 0, 320, True, 0, 0)]
    share = {"a": 90, "b": 90}  # a needs 6 A more, b 9 A: 15 A, but only 10 A are free
    assert ss.room(240, [140], ch, share, "a", 0) == 30 + 40
    assert ss.room(240, [140], ch, share, "b", 0) == 60
    # Current offered and not drawn yet is not free: a vehicle follows an offer up to 5 s
    # after it, lowered since or not. Here a draws 3 A, offers 3 A and offered 9 A a moment
    # ago: its vehicle may yet take 9 A, so of the 10 A free b may take 4 A.
    ch = [("a", [1], 30, 320, True, 30, 90), ("b", [1], 0, 320, True, 0, 0)]
    assert ss.room(240, [140], ch, {"a": 30, "b": 90}, "b", 0) == 40


def test_a_peer_on_a_phase_the_meter_lacks_is_not_one_of_ours(site_rig):
    rig = site_rig  # a single-phase site: the meter has L1 only
    plug(rig, 1000)
    peer = {"ts": UNIX_BASE_MS + rig.bench.t, "phases": [3], "drawA": 5.0, "wantsA": 32.0,
            "offeredA": 5.0}
    rig.balancer.on_message("site/home/chargers/charger-9", json.dumps(peer).encode())
    readings(rig, [9.0])  # must not raise (it did: an index past the meter's phases)
    rig.run(6000)
    assert rig.read()["state"]["offeredCurrent"] == 15.0


def test_a_rise_smaller_than_half_an_amp_waits(site_rig):
    rig = site_rig
    plug(rig, 1000)
    readings(rig, [9.0])
    rig.run(6000)
    assert rig.read()["state"]["limits"]["site"]["share"] == 15.0
    meter(rig, [8.7])  # 0.3 A more headroom: reading noise, not worth a change
    rig.run(1000)
    assert rig.read()["state"]["limits"]["site"]["share"] == 15.0
    meter(rig, [8.4])  # 0.6 A more
    rig.run(100)
    assert rig.read()["state"]["limits"]["site"]["share"] == 15.6
    meter(rig, [8.5])  # a fall is taken at once, however small
    rig.run(100)
    assert rig.read()["state"]["limits"]["site"]["share"] == 15.5


def test_back_from_a_silent_meter_the_first_reading_only_announces(site_rig):
    rig = site_rig
    plug(rig, 1000)
    readings(rig, [9.0])
    rig.run(20000)  # silent: the fallback, 6 A
    assert rig.read()["state"]["offeredCurrent"] == 6.0
    meter(rig, [9.0])  # back: the peers may have gone stale meanwhile
    rig.run(100)
    s = rig.read()["state"]
    assert s["offeredCurrent"] == 6.0 and s["limits"]["site"]["share"] == 6.0
    assert rig.out[-1][0] == "site/home/chargers/charger-1"  # announced
    rig.run(900)
    meter(rig, [9.0])
    rig.run(6000)
    assert rig.read()["state"]["offeredCurrent"] == 15.0


def test_a_record_goes_out_when_the_draw_moves_between_readings(site_rig):
    rig = site_rig
    plug(rig, 1000)
    readings(rig, [9.0])
    sent = len(rig.out)
    for _ in range(500):  # 5 s without a reading: the pilot rises to 15 A, the car follows
        rig.run(10)
        rig.balancer.service(rig.out, rig.bench.t)
    moved = [r[1] for r in rig.out[sent:]]
    assert moved and moved[-1]["drawA"] == 15.0 and moved[-1]["offeredA"] == 15.0
    assert len(moved) <= 4  # on a change only, at most every 250 ms
    n = len(rig.out)
    for _ in range(300):  # nothing moves: nothing is sent
        rig.run(10)
        rig.balancer.service(rig.out, rig.bench.t)
    assert len(rig.out) == n


@pytest.mark.parametrize("ts", [0, UNIX_BASE_MS - 60000, UNIX_BASE_MS + 3600000],
                         ids=["clock never set", "60 s behind", "an hour ahead"])
def test_a_peer_is_fresh_by_its_arrival_not_by_its_clock(site_rig, ts):
    # Issue 22 item 2: a peer whose clock differs from this board's was stale from the
    # start, so its draw counted as household and its need was not shared.
    rig = site_rig
    plug(rig, 1000)
    peer = {"ts": ts, "phases": [1], "drawA": 7.5, "wantsA": 32.0, "offeredA": 7.5}

    def reading(household):
        rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(peer).encode())
        meter(rig, [household + 7.5])

    for _ in range(10):
        reading(3.0)
        rig.run(1000)
    # Fresh, the peer shares: 21 A for two, 10.5 A each. Stale (as it was), its 7.5 A
    # counted as household and this charger took 24 - 3 - 7.5 = 13.5 A.
    s = rig.read()["state"]
    assert s["limits"]["site"]["share"] <= 10.5, s["limits"]["site"]


def test_a_record_older_than_the_one_kept_is_a_replay(site_rig):
    rig = site_rig
    plug(rig, 1000)
    new = {"ts": UNIX_BASE_MS + 5000, "phases": [1], "drawA": 0.0, "wantsA": 32.0,
           "offeredA": 0.0}
    old = dict(new, ts=UNIX_BASE_MS + 4000, drawA=20.0)
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(new).encode())
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(old).encode())
    assert rig.balancer._peers["charger-2"][1] == 0  # the newer record is kept
    assert rig.balancer.ignored == 1
    # A record without a time (ts 0: a clock never set, or a charger restarted without NTP)
    # cannot be ordered: it is taken once the record kept has gone stale, not before (else
    # anyone could reset the order with one).
    zero = dict(new, ts=0, drawA=3.0)
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(zero).encode())
    assert rig.balancer._peers["charger-2"][1] == 0 and rig.balancer.ignored == 2
    rig.run(10000)
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(zero).encode())
    assert rig.balancer._peers["charger-2"][1] == 30
    rig.balancer.on_message("site/home/chargers/charger-2", json.dumps(zero).encode())
    assert rig.balancer.ignored == 2  # and then each of its records is
