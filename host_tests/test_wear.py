"""Flash wear on the ESP32's NVS layout (tools/bench/nvs_model.py, tools/measure/wear.py).

Deterministic: the firmware's real storage path in virtual time, erase cycles counted the
way ESP-IDF's page manager causes them."""
from tools.bench.nvs_model import ENTRIES, NvsModel, entries_for
from tools.measure import wear


def test_the_model_erases_as_esp_idf_reclaims():
    m = NvsModel(pages=6)
    for _ in range(5 * ENTRIES):  # five pages fill; two are still free until the fifth is full
        m.write("cap", 4)
    assert sum(m.erases) == 0
    for _ in range(10 * ENTRIES):
        m.write("cap", 4)
    # From the 631st write on, every 126th needs a new page with only one free: a reclaim.
    assert sum(m.erases) == 10 and max(m.erases) - min(m.erases) <= 2
    assert entries_for(4) == 1 and entries_for(200) == 1 + 7 + 1


def test_live_data_is_copied_not_lost_and_a_full_partition_says_so():
    m = NvsModel(pages=3)
    m.write("journal", 300)  # 1 + 10 + 1 entries that stay live
    for _ in range(3 * ENTRIES):
        m.write("cap", 4)
    assert set(m.where) == {"journal", "cap"} and sum(m.erases) >= 1
    big = NvsModel(pages=2)
    try:
        for i in range(3 * ENTRIES):
            big.write("k%d" % i, 4)  # all live: nothing to reclaim
    except RuntimeError as e:
        assert "NOT_ENOUGH_SPACE" in str(e)
    else:
        raise AssertionError("a full NVS must refuse")


def test_one_distinct_cap_every_10_s_lasts_ten_years():
    r = wear.caps_every(10000, days=0.5)
    assert r["years"] >= 10, r


def test_one_distinct_cap_every_5_s_the_dearest_steady_pace_lasts_ten_years():
    # Each value stands the 5 s spell, so each is written (before its reply).
    r = wear.caps_every(5000, days=0.25)
    assert r["writes"] == 0.25 * 86400 / 5 and r["years"] >= 10, r


def test_a_balancer_stepping_the_cap_down_each_second_lasts_ten_years():
    # Before: each step down more than a second after the last was written exactly, 81,000
    # entries a day (2.6 years); now steps within 5 s of the last write 1/8 below.
    r = wear.caps_falling(period_ms=1000, step_w=10, days=0.25)
    assert r["years"] >= 10, r


def test_a_minute_of_flood_costs_less_than_a_day():
    day = wear.caps_every(10000, days=0.25)["entries"] * 4
    for monotone in (False, True):
        f = wear.flood(monotone=monotone)
        assert f["entries"] < day, (monotone, f, day)


def test_a_minute_of_failsafe_flood_costs_less_than_a_day():
    # Before: every failsafe_charge_rate write went to flash, 18,000 entries, two days' wear.
    day = wear.caps_every(10000, days=0.25)["entries"] * 4
    f = wear.flood(key="failsafe_charge_rate")
    assert f["entries"] < day, (f, day)


def test_renewals_never_write():
    assert wear.renewals(n=200) == 0


def test_commands_cost_two_journal_writes_each():
    # 10 idle/charge commands, each replacing the last; the uplink publishes their events,
    # so none is refused (the run asserts every reply succeeded).
    r = wear.commands(per_day=20, days=0.5)
    assert r["writes"] == 2 * 10, r
