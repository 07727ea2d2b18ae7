"""Pilot facts: duty for a current, and states from voltages at the band edges."""
import pytest

import pilot
import sim_board
from conftest import plug

FULL = sim_board.Board.PWM_FULL


@pytest.mark.parametrize("amps,percent", [
    (6, 10.0), (16, 26.66), (32, 53.33), (48, 80.0), (51, 85.0), (52, 85.0), (52.5, 85.0),
    (60, 88.0), (80, 96.0), (100, 96.0)])
def test_duty_table(amps, percent):
    offered = pilot.offer(int(amps * 10))
    assert pilot.duty(offered, FULL) / 100 == percent


def test_below_six_amps_offers_nothing():
    assert pilot.offer(59) == 0
    assert pilot.duty(pilot.offer(59), FULL) == FULL  # steady +12 V, no PWM


def test_duty_rounds_down_at_16_bit_resolution():
    # 16 A is 26.666...%: never rounded up, so the vehicle never reads more than offered.
    counts = pilot.duty(160, 65535)
    assert counts == 17476 and counts / 65535 * 0.6 * 100 <= 16.0


@pytest.mark.parametrize("mv,state", [
    (12600, pilot.A), (11400, pilot.A), (12601, pilot.INVALID), (11399, pilot.INVALID),
    (9560, pilot.B), (8360, pilot.B), (9561, pilot.INVALID), (8359, pilot.INVALID),
    (6490, pilot.C), (5480, pilot.C), (6491, pilot.INVALID), (5479, pilot.INVALID),
    (3250, pilot.D), (2620, pilot.D), (3251, pilot.INVALID), (2619, pilot.INVALID),
    (0, pilot.E), (1000, pilot.E), (-1000, pilot.E), (1001, pilot.INVALID),
    (-12600, pilot.F), (-11400, pilot.F), (-11399, pilot.INVALID), (-12601, pilot.INVALID)])
def test_bands(mv, state):
    assert pilot.classify(mv) == state


def test_reader_debounces_b_c_d_but_not_a_e_f():
    r = pilot.Reader()
    assert r.sample(9000, -12000, True) == pilot.UNKNOWN  # one B sample is not enough
    assert r.sample(9000, -12000, True) == pilot.B
    assert r.sample(6000, -12000, True) == pilot.B
    assert r.sample(6000, -12000, True) == pilot.C
    assert r.sample(0, 0, True) == pilot.E  # a short counts at once
    assert r.sample(12000, -12000, True) == pilot.A  # so does an unplug


def test_reader_diode_fault_needs_pwm():
    r = pilot.Reader()
    for _ in range(3):
        r.sample(9000, 9000, False)  # x1: no low phase, nothing to judge
    assert not r.diode_fault
    for _ in range(2):
        r.sample(9000, -8800, True)
    assert r.diode_fault


# On the bench, from the voltages the ADC sees (both interpreters).
@pytest.mark.parametrize("high,low,expect_pilot,expect_fault", [
    (11.40, 11.40, "A", None), (12.60, 12.60, "A", None),
    (8.36, -12.0, "B", None), (9.56, -12.60, "B", None),
    (5.48, -11.40, "C", None), (6.49, -12.0, "C", None),
    (2.62, -12.0, "D", "VENTILATION_REQUIRED"), (3.25, -12.0, "D", "VENTILATION_REQUIRED"),
    (0.0, 0.0, "E", "PILOT_SHORT"), (9.0, -8.8, "B", "DIODE_FAULT"),
    (10.0, -12.0, "invalid", "PILOT_ERROR"), (-12.0, -12.0, "F", "PILOT_ERROR")])
def test_states_at_band_edges_on_the_bench(rig, high, low, expect_pilot, expect_fault):
    plug(rig, 3000)  # charging, PWM on: the low level is judged
    assert rig.bench.drive
    rig.bench.pilot_override = (high, low)
    rig.run(100)
    state = rig.read()["state"]
    assert state["fault"] == expect_fault
    if expect_fault is None:
        assert state["pilot"] == expect_pilot
        assert rig.bench.drive == (expect_pilot == "C")  # A, B: open at once; C: go on
    else:  # a fault: contactor open within the 100 ms, pilot F
        assert not rig.bench.drive and rig.bench.f


def test_a_full_event_ring_keeps_the_oldest_and_counts_the_rest():
    from ring import Ring
    r = Ring(4)  # holds 3: one slot tells full from empty
    for i in range(6):
        r.push(1, i, i * 10)
    assert r.dropped == 3
    assert [r.pop() for _ in range(4)] == [(1, 0, 0), (1, 1, 10), (1, 2, 20), None]
    r.push(2, 7, 70)  # room again once read
    assert r.pop() == (2, 7, 70)


def test_the_transition_trace_keeps_the_newest():
    from ring import Trace
    t = Trace(3)
    assert t.records() == []
    for i in range(5):
        t.push(i, i, i + 1, 0)
    assert [rec[0] for rec in t.records()] == [2, 3, 4]
